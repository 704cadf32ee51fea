//! Guest RAM: anonymous mappings registered as KVM memory slots, and the
//! static memory a partitioning user asks for: regions faulted in
//! (`prefault`) or locked in host RAM (`lock`) before the first vCPU runs.

use super::error::{KvmContext, VmmError};
use crate::config::{MemoryRegion, Window};
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Maps every RAM window and registers it with KVM, one slot per window.
pub fn create_guest_memory(vm: &VmFd, ram: &[Window]) -> Result<GuestMemoryMmap, VmmError> {
    let mut ranges = Vec::with_capacity(ram.len());
    for w in ram {
        let size = usize::try_from(w.size)
            .map_err(|_| VmmError::Memory(format!("region at {:#x} too large", w.base)))?;
        ranges.push((GuestAddress(w.base), size));
    }
    let mem =
        GuestMemoryMmap::<()>::from_ranges(&ranges).map_err(|e| VmmError::Memory(e.to_string()))?;
    for (slot, region) in mem.iter().enumerate() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| VmmError::Memory(e.to_string()))?;
        let desc = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        advise_huge_pages(host, region.len());
        // SAFETY: the host range is a live mapping owned by `mem`, which the
        // caller keeps alive for as long as the VM exists (it is stored in
        // the same `Cell` as the VmFd and dropped after it).
        unsafe { vm.set_user_memory_region(desc) }.kvm("register guest memory")?;
    }
    Ok(mem)
}

/// Asks for transparent huge pages behind guest RAM (`MADV_HUGEPAGE`), as
/// QEMU does for its RAM blocks. With 2 MiB host pages KVM maps the guest
/// with 2 MiB nested page-table entries: far fewer nested page faults and TLB
/// misses while the guest touches its memory (most of a boot). Under the
/// common `defrag=madvise` THP policy only advised ranges get huge pages
/// when free ones must first be made by compaction, so without the advice a
/// cell falls back to 4 KiB pages as soon as host memory is fragmented. A
/// kernel without THP refuses the advice; that only costs speed (logged).
fn advise_huge_pages(host: *mut u8, len: u64) {
    let Ok(len) = usize::try_from(len) else {
        return;
    };
    // SAFETY: the range is a live anonymous mapping owned by the guest
    // memory object; MADV_HUGEPAGE changes only how the kernel backs it,
    // never its contents or validity.
    let rc = unsafe { libc::madvise(host.cast(), len, libc::MADV_HUGEPAGE) };
    if rc != 0 {
        log::debug!(
            "madvise(MADV_HUGEPAGE) on guest RAM at {host:p}+{len:#x}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Why a region could not be prefaulted or locked.
fn region_error(index: usize, what: &str, len: u64, e: &std::io::Error) -> VmmError {
    let hint = match e.raw_os_error() {
        Some(libc::ENOMEM) | Some(libc::EPERM) | Some(libc::EAGAIN) if what == "lock" => {
            " (raise the locked-memory limit: ulimit -l, LimitMEMLOCK=, or run as root)"
        }
        Some(libc::ENOMEM) => " (the host has not enough free memory)",
        _ => "",
    };
    VmmError::Memory(format!(
        "memory[{index}].{what}: {} of guest RAM: {e}{hint}",
        crate::config::human_size(len)
    ))
}

/// Locks (`lock`) and faults in (`prefault`) the regions of `regions` that
/// ask for it; `regions` are the config's, matched to `mem` by base. Call
/// before any vCPU runs and before the guest image is loaded or after:
/// prefaulting never changes the contents.
pub fn settle_guest_memory(
    mem: &GuestMemoryMmap,
    regions: &[MemoryRegion],
) -> Result<(), VmmError> {
    for (index, r) in regions.iter().enumerate() {
        if !r.prefault && !r.lock {
            continue;
        }
        let Some(region) = mem.iter().find(|m| m.start_addr().0 == r.base) else {
            return Err(VmmError::Memory(format!(
                "memory[{index}] at {:#x} is not mapped",
                r.base
            )));
        };
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| VmmError::Memory(e.to_string()))?;
        let len = usize::try_from(region.len())
            .map_err(|_| VmmError::Memory(format!("memory[{index}] too large")))?;
        if r.lock {
            // SAFETY: the range is a live mapping owned by `mem`; mlock
            // changes residency only, never contents or validity.
            if unsafe { libc::mlock(host.cast(), len) } != 0 {
                let e = std::io::Error::last_os_error();
                return Err(region_error(index, "lock", region.len(), &e));
            }
        }
        if r.prefault {
            prefault(host, len).map_err(|e| region_error(index, "prefault", region.len(), &e))?;
        }
    }
    Ok(())
}

/// Faults in every page of `host..host+len` for writing: one
/// `MADV_POPULATE_WRITE` (Linux 5.14), else a read and write back of one
/// byte per page.
fn prefault(host: *mut u8, len: usize) -> std::io::Result<()> {
    // SAFETY: the range is a live anonymous mapping owned by the guest
    // memory object; MADV_POPULATE_WRITE faults pages in without changing
    // their contents.
    if unsafe { libc::madvise(host.cast(), len, libc::MADV_POPULATE_WRITE) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EINVAL) {
        return Err(e);
    }
    let page = 4096;
    for offset in (0..len).step_by(page) {
        // SAFETY: `offset < len`, so the byte is inside the live, writable
        // mapping; no vCPU runs yet, and writing back the value just read
        // leaves the contents unchanged.
        unsafe {
            let p = host.add(offset);
            std::ptr::write_volatile(p, std::ptr::read_volatile(p));
        }
    }
    Ok(())
}
