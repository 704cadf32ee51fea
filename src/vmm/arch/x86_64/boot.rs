//! Loading the kernel and writing what the x86 boot protocol needs:
//! boot_params (zero page) with an e820 map, the command line, the initrd,
//! and the device tree as a `setup_data` entry of type `SETUP_DTB`.

use crate::config::{KernelConfig, KernelFormat, Window};
use crate::vmm::arch::{mem_err, open};
use crate::vmm::error::VmmError;
use linux_loader::loader::bootparam::{boot_params, setup_header, SETUP_DTB};
use linux_loader::loader::{BzImage, Elf, KernelLoader, KernelLoaderResult};
use vm_memory::{Address, ByteValued, Bytes, GuestAddress, GuestMemoryMmap};

/// Guest-physical layout of the boot structures in low memory.
pub mod addrs {
    /// The GDT.
    pub const GDT: u64 = 0x500;
    /// An empty IDT.
    pub const IDT: u64 = 0x520;
    /// boot_params (the "zero page").
    pub const ZERO_PAGE: u64 = 0x7000;
    /// Initial stack top for bare-metal ELF kernels.
    pub const ELF_STACK_TOP: u64 = 0x8ff0;
    /// PML4 of the identity map.
    pub const PML4: u64 = 0x9000;
    /// PDPT of the identity map.
    pub const PDPT: u64 = 0xa000;
    /// Four page directories mapping 0..4 GiB with 2 MiB pages.
    pub const PD: u64 = 0xb000;
    /// Kernel command line (up to `CMDLINE_MAX` bytes).
    pub const CMDLINE: u64 = 0x2_0000;
    /// Largest command line including the terminating NUL.
    pub const CMDLINE_MAX: usize = 0x1000;
    /// setup_data header followed by the DTB.
    pub const SETUP_DATA: u64 = 0x3_0000;
    /// End of the area for setup_data (start of the EBDA).
    pub const SETUP_DATA_END: u64 = 0x9_fc00;
    /// Where high memory (and the kernel) starts.
    pub const HIMEM: u64 = 0x10_0000;
}

/// `struct setup_data` from the x86 boot protocol (header only; the payload
/// follows it in guest memory). linux-loader 0.14 does not define it.
#[repr(C, packed)]
#[derive(Debug, Clone, Copy, Default)]
struct SetupDataHeader {
    next: u64,
    type_: u32,
    len: u32,
}

// SAFETY: plain-old-data with no padding (packed, integer fields only); any
// byte pattern is a valid value.
unsafe impl ByteValued for SetupDataHeader {}

/// Minimum boot protocol version with `setup_data` (2.09).
const MIN_BOOT_PROTOCOL: u16 = 0x0209;
/// Setup header magic "HdrS".
const HDRS_MAGIC: u32 = 0x5372_6448;
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const LOADFLAG_LOADED_HIGH: u8 = 0x01;
const LOADFLAG_CAN_USE_HEAP: u8 = 0x80;
/// The boot protocol version cellvm's hand-made setup header for a
/// `vmlinux` claims (2.15, current kernels).
const VMLINUX_BOOT_PROTOCOL: u16 = 0x020f;
/// Longest command line (without its NUL) an x86_64 kernel takes.
const VMLINUX_CMDLINE_SIZE: u32 = 2047;
/// Highest address an initrd may end at (what x86_64 bzImages report).
const VMLINUX_INITRD_ADDR_MAX: u32 = 0x7fff_ffff;
/// The kernel's physical alignment (CONFIG_PHYSICAL_ALIGN's default).
const VMLINUX_KERNEL_ALIGNMENT: u32 = 0x20_0000;

/// Where and how the boot vCPU starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryPoint {
    /// 64-bit entry address.
    pub rip: u64,
    /// RSI at entry (boot_params for Linux).
    pub rsi: u64,
    /// RDI at entry (the DTB for bare-metal ELF).
    pub rdi: u64,
    /// RSP at entry.
    pub rsp: u64,
}

/// Loads the kernel (and initrd), writes the command line and the DTB, and
/// returns the entry point for vCPU 0.
pub fn load(
    mem: &GuestMemoryMmap,
    kernel: &KernelConfig,
    ram: &[Window],
    dtb: &[u8],
) -> Result<EntryPoint, VmmError> {
    match kernel.format {
        KernelFormat::BzImage => {
            let image = load_bzimage(mem, kernel)?;
            load_linux(mem, kernel, ram, dtb, image)
        }
        KernelFormat::Vmlinux => {
            let image = load_vmlinux(mem, kernel)?;
            load_linux(mem, kernel, ram, dtb, image)
        }
        KernelFormat::Elf => load_elf(mem, kernel, dtb),
        // config::validate refuses it on x86_64.
        KernelFormat::Image => Err(VmmError::Boot(
            "an arm64 Image cannot boot on x86_64".into(),
        )),
    }
}

fn load_elf(
    mem: &GuestMemoryMmap,
    kernel: &KernelConfig,
    dtb: &[u8],
) -> Result<EntryPoint, VmmError> {
    let res = load_elf_segments(mem, kernel)?;
    if !dtb.is_empty() {
        write_dtb_area(dtb)?;
        mem.write_slice(dtb, GuestAddress(addrs::SETUP_DATA))
            .map_err(mem_err)?;
    }
    Ok(EntryPoint {
        rip: res.kernel_load.raw_value(),
        rsi: 0,
        rdi: addrs::SETUP_DATA,
        rsp: addrs::ELF_STACK_TOP,
    })
}

/// Loads an ELF64 image's segments at their physical addresses (at or above
/// 1 MiB); the result's `kernel_load` is the ELF entry point.
fn load_elf_segments(
    mem: &GuestMemoryMmap,
    kernel: &KernelConfig,
) -> Result<KernelLoaderResult, VmmError> {
    let mut file = open(&kernel.path)?;
    Elf::load(mem, None, &mut file, Some(GuestAddress(addrs::HIMEM))).map_err(|source| {
        VmmError::KernelLoad {
            path: kernel.path.clone(),
            source,
        }
    })
}

fn write_dtb_area(dtb: &[u8]) -> Result<(), VmmError> {
    let room =
        addrs::SETUP_DATA_END - addrs::SETUP_DATA - std::mem::size_of::<SetupDataHeader>() as u64;
    if dtb.len() as u64 > room {
        return Err(VmmError::Boot(format!(
            "device tree is {} bytes; at most {room} fit below the EBDA",
            dtb.len()
        )));
    }
    Ok(())
}

/// A Linux kernel in guest memory, before the boot protocol's data is written.
struct LinuxImage {
    /// The setup header to complete and put into boot_params.
    hdr: setup_header,
    /// First guest-physical byte after the kernel (the initrd goes above).
    kernel_end: u64,
    /// The 64-bit entry point.
    entry: u64,
}

fn load_bzimage(mem: &GuestMemoryMmap, kernel: &KernelConfig) -> Result<LinuxImage, VmmError> {
    let mut file = open(&kernel.path)?;
    let res: KernelLoaderResult =
        BzImage::load(mem, None, &mut file, Some(GuestAddress(addrs::HIMEM))).map_err(
            |source| VmmError::KernelLoad {
                path: kernel.path.clone(),
                source,
            },
        )?;
    let hdr = res
        .setup_header
        .ok_or_else(|| VmmError::Boot("bzImage without a setup header".into()))?;
    if hdr.header != HDRS_MAGIC || hdr.version < MIN_BOOT_PROTOCOL {
        let version = hdr.version;
        return Err(VmmError::Boot(format!(
            "{}: boot protocol {}.{:02} is too old; cellvm needs 2.09 or later (setup_data)",
            kernel.path.display(),
            version >> 8,
            version & 0xff
        )));
    }
    Ok(LinuxImage {
        hdr,
        kernel_end: res.kernel_end,
        // The 64-bit entry of the decompressor (boot protocol: startup_64 at
        // 0x200 into the protected-mode code).
        entry: res.kernel_load.raw_value() + 0x200,
    })
}

/// Loads an uncompressed `vmlinux`: its segments go where they are linked
/// (physical addresses from 16 MiB up), and the guest starts at the ELF entry
/// (`startup_64`, the same 64-bit entry contract as a bzImage's: long mode,
/// identity-mapped, RSI = boot_params). There is no setup header in the
/// file, so cellvm writes one claiming boot protocol 2.15 with the limits a
/// current x86_64 kernel has.
fn load_vmlinux(mem: &GuestMemoryMmap, kernel: &KernelConfig) -> Result<LinuxImage, VmmError> {
    let res = load_elf_segments(mem, kernel)?;
    let hdr = setup_header {
        header: HDRS_MAGIC,
        version: VMLINUX_BOOT_PROTOCOL,
        cmdline_size: VMLINUX_CMDLINE_SIZE,
        initrd_addr_max: VMLINUX_INITRD_ADDR_MAX,
        kernel_alignment: VMLINUX_KERNEL_ALIGNMENT,
        ..Default::default()
    };
    Ok(LinuxImage {
        hdr,
        kernel_end: res.kernel_end,
        entry: res.kernel_load.raw_value(),
    })
}

/// Writes what the x86 boot protocol needs around a loaded Linux kernel:
/// command line, initrd, the DTB in setup_data, boot_params with an e820
/// map. Returns the entry point.
fn load_linux(
    mem: &GuestMemoryMmap,
    kernel: &KernelConfig,
    ram: &[Window],
    dtb: &[u8],
    image: LinuxImage,
) -> Result<EntryPoint, VmmError> {
    let LinuxImage {
        mut hdr,
        kernel_end,
        entry,
    } = image;
    let low = ram
        .first()
        .ok_or_else(|| VmmError::Boot("no RAM region at guest physical 0".into()))?;

    // Command line.
    let cmdline = kernel.cmdline.as_bytes();
    let kernel_limit = { hdr.cmdline_size };
    if cmdline.len() + 1 > addrs::CMDLINE_MAX || cmdline.len() as u64 > u64::from(kernel_limit) {
        return Err(VmmError::Boot(format!(
            "command line of {} bytes exceeds the kernel's limit of {kernel_limit}",
            cmdline.len()
        )));
    }
    mem.write_slice(cmdline, GuestAddress(addrs::CMDLINE))
        .map_err(mem_err)?;
    mem.write_obj(0u8, GuestAddress(addrs::CMDLINE + cmdline.len() as u64))
        .map_err(mem_err)?;

    // Initrd: page aligned, as high as allowed in the first RAM region, read
    // from the file straight into guest memory (no copy through the heap).
    if let Some(path) = &kernel.initrd {
        let file_err = |source| VmmError::File {
            path: path.clone(),
            source,
        };
        let mut file = open(path)?;
        let len = file.metadata().map_err(file_err)?.len();
        let initrd_max = { hdr.initrd_addr_max };
        let limit = low.end().min(u64::from(initrd_max) + 1);
        let too_big = || {
            VmmError::Boot(format!(
                "initrd {} ({len} bytes) does not fit between the kernel end {kernel_end:#x} and {limit:#x}",
                path.display(),
            ))
        };
        let base = limit
            .checked_sub(len)
            .map(|a| a & !0xfff)
            .filter(|a| *a >= kernel_end)
            .ok_or_else(too_big)?;
        let count = usize::try_from(len).map_err(|_| too_big())?;
        let size = u32::try_from(len).map_err(|_| too_big())?;
        let image = u32::try_from(base).map_err(|_| too_big())?;
        mem.read_exact_volatile_from(GuestAddress(base), &mut file, count)
            .map_err(mem_err)?;
        hdr.ramdisk_image = image;
        hdr.ramdisk_size = size;
    }

    // Device tree in setup_data.
    write_dtb_area(dtb)?;
    let sd = SetupDataHeader {
        next: 0,
        type_: SETUP_DTB,
        len: dtb.len() as u32,
    };
    let header_len = std::mem::size_of::<SetupDataHeader>() as u64;
    mem.write_obj(sd, GuestAddress(addrs::SETUP_DATA))
        .map_err(mem_err)?;
    mem.write_slice(dtb, GuestAddress(addrs::SETUP_DATA + header_len))
        .map_err(mem_err)?;

    hdr.type_of_loader = 0xff;
    hdr.boot_flag = 0xaa55;
    hdr.cmd_line_ptr = addrs::CMDLINE as u32;
    hdr.loadflags |= LOADFLAG_LOADED_HIGH | LOADFLAG_CAN_USE_HEAP;
    hdr.heap_end_ptr = 0xfe00;
    hdr.setup_data = addrs::SETUP_DATA;

    let mut params = boot_params {
        hdr,
        ..Default::default()
    };
    let mut e820 = Vec::new();
    e820.push((0, 0x9_fc00, E820_RAM));
    e820.push((0x9_fc00, 0x10_0000 - 0x9_fc00, E820_RESERVED));
    for w in ram {
        let base = w.base.max(addrs::HIMEM);
        if w.end() > base {
            e820.push((base, w.end() - base, E820_RAM));
        }
    }
    if e820.len() > params.e820_table.len() {
        return Err(VmmError::Boot(format!(
            "{} memory regions exceed the e820 table",
            ram.len()
        )));
    }
    for (slot, (addr, size, type_)) in params.e820_table.iter_mut().zip(&e820) {
        slot.addr = *addr;
        slot.size = *size;
        slot.r#type = *type_;
    }
    params.e820_entries = e820.len() as u8;
    mem.write_obj(params, GuestAddress(addrs::ZERO_PAGE))
        .map_err(mem_err)?;

    Ok(EntryPoint {
        rip: entry,
        rsi: addrs::ZERO_PAGE,
        rdi: 0,
        rsp: 0,
    })
}
