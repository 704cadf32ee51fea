//! Guest RAM: anonymous mappings registered as KVM memory slots.

use super::error::{KvmContext, VmmError};
use crate::config::Window;
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
