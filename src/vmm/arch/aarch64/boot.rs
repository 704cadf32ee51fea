//! Loading an arm64 Linux `Image` (Documentation/arch/arm64/booting.rst):
//! the kernel at the start of RAM (2 MiB aligned, plus the header's
//! `text_offset`, by linux-loader's `PE` loader), the device tree in the
//! last 2 MiB of the first RAM region, the initrd just below it. The boot
//! vCPU enters at the kernel's first byte with the DTB's address in x0,
//! MMU off, interrupts masked, at EL1.

use crate::config::{KernelConfig, Window};
use crate::fdt::Node;
use crate::vmm::arch::{mem_err, open};
use crate::vmm::error::VmmError;
use linux_loader::loader::pe::PE;
use linux_loader::loader::KernelLoader;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Largest device tree Linux accepts on arm64, and the space kept for it.
const DTB_MAX: u64 = 0x20_0000;
/// Guest page size.
const PAGE: u64 = 0x1000;

/// Where and how the boot vCPU starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryPoint {
    /// The kernel's first instruction.
    pub pc: u64,
    /// x0 at entry: the device tree.
    pub dtb: u64,
}

/// Where the DTB goes: the last [`DTB_MAX`] bytes of the first RAM region.
pub fn dtb_address(ram: &[Window]) -> Result<u64, VmmError> {
    let low = ram
        .first()
        .ok_or_else(|| VmmError::Boot("the cell has no RAM".into()))?;
    low.end()
        .checked_sub(DTB_MAX)
        .filter(|a| *a >= low.base)
        .ok_or_else(|| VmmError::Boot("the first RAM region is smaller than 2 MiB".into()))
}

/// Loads the kernel and the initrd (recording it in the tree's `/chosen`),
/// then writes the DTB of `tree`. Returns the entry point.
pub fn load(
    mem: &GuestMemoryMmap,
    kernel: &KernelConfig,
    ram: &[Window],
    tree: &mut Node,
) -> Result<EntryPoint, VmmError> {
    let low = ram
        .first()
        .ok_or_else(|| VmmError::Boot("the cell has no RAM".into()))?;
    let mut image = open(&kernel.path)?;
    let loaded = PE::load(mem, Some(GuestAddress(low.base)), &mut image, None)
        .map_err(|e| VmmError::Boot(format!("loading {}: {e}", kernel.path.display())))?;
    let kernel_end = loaded.kernel_end;
    let dtb_addr = dtb_address(ram)?;
    if let Some(path) = &kernel.initrd {
        let mut file = open(path)?;
        let len = file
            .metadata()
            .map_err(|source| VmmError::File {
                path: path.clone(),
                source,
            })?
            .len();
        let too_big = || {
            VmmError::Boot(format!(
                "initrd {} ({len} bytes) does not fit between the kernel end {kernel_end:#x} \
                 and the device tree at {dtb_addr:#x}",
                path.display()
            ))
        };
        let base = dtb_addr
            .checked_sub(len)
            .map(|a| a & !(PAGE - 1))
            .filter(|a| *a >= kernel_end)
            .ok_or_else(too_big)?;
        let count = usize::try_from(len).map_err(|_| too_big())?;
        mem.read_exact_volatile_from(GuestAddress(base), &mut file, count)
            .map_err(mem_err)?;
        crate::fdt::aarch64::set_initrd(tree, base, base + len)?;
    }
    let dtb = crate::fdt::emit::to_dtb(tree)?;
    if dtb.len() as u64 > DTB_MAX {
        return Err(VmmError::Boot(format!(
            "the device tree is {} bytes, more than arm64 Linux takes ({DTB_MAX})",
            dtb.len()
        )));
    }
    mem.write_slice(&dtb, GuestAddress(dtb_addr))
        .map_err(mem_err)?;
    Ok(EntryPoint {
        pc: loaded.kernel_load.0,
        dtb: dtb_addr,
    })
}
