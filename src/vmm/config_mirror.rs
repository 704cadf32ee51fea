//! PCI config-space mirrors as read-only KVM memory slots: the VMM's side of
//! [`crate::pci::config_mirror`]. Each range of a bridge's [`MirrorWindow`]
//! the bridge maps is one slot (a bridge whose functions all allow
//! mirroring: one slot for its whole window); guest reads are memory reads,
//! guest writes fault on the read-only slot and reach the bridge as MMIO
//! exits. The slot is deleted (and its number reused) when the mapping is
//! dropped.

use super::slots::SlotPool;
use crate::pci::{MirrorError, MirrorMapper, MirrorMapping, MirrorWindow};
use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_READONLY};
use kvm_ioctls::VmFd;
use std::sync::Arc;

/// Maps mirror windows with read-only KVM slots taken from the cell's pool.
pub struct KvmMirrorMapper {
    vm: Arc<VmFd>,
    slots: Arc<SlotPool>,
}

impl KvmMirrorMapper {
    /// A mapper for `vm` (which must support read-only slots) taking slot
    /// numbers from `slots`.
    pub fn new(vm: Arc<VmFd>, slots: Arc<SlotPool>) -> Self {
        KvmMirrorMapper { vm, slots }
    }
}

/// One mapped range of a window: deletes its slot when dropped.
struct KvmMirrorMapping {
    vm: Arc<VmFd>,
    slots: Arc<SlotPool>,
    slot: u32,
    gpa: u64,
    host_addr: u64,
    /// Kept mapped in the host for as long as the slot exists.
    window: Arc<MirrorWindow>,
}

impl MirrorMapping for KvmMirrorMapping {}

/// Sets slot `slot` to `size` bytes (0: deletes it) of host memory at
/// `host_addr`, read-only, at `gpa`. The memory must be part of a
/// [`MirrorWindow`] the caller keeps alive while the slot exists.
fn set_slot(
    vm: &VmFd,
    slot: u32,
    gpa: u64,
    host_addr: u64,
    size: u64,
) -> Result<(), kvm_ioctls::Error> {
    let region = kvm_userspace_memory_region {
        slot,
        flags: KVM_MEM_READONLY,
        guest_phys_addr: gpa,
        memory_size: size,
        userspace_addr: host_addr,
    };
    // SAFETY: `host_addr..host_addr + size` lies inside a window that stays
    // mapped (readable, whatever its pages show) while the
    // `Arc<MirrorWindow>` held by the mapping lives; the mapping deletes
    // the slot (size 0) in its `Drop` before releasing it.
    unsafe { vm.set_user_memory_region(region) }
}

impl MirrorMapper for KvmMirrorMapper {
    fn map(
        &self,
        gpa: u64,
        window: &Arc<MirrorWindow>,
        offset: u64,
        len: u64,
    ) -> Result<Box<dyn MirrorMapping>, MirrorError> {
        let inside = offset
            .checked_add(len)
            .is_some_and(|end| len > 0 && end <= window.size());
        if !inside {
            return Err(MirrorError::Map {
                gpa,
                reason: format!(
                    "{len:#x} bytes at offset {offset:#x} of a {:#x}-byte window",
                    window.size()
                ),
            });
        }
        let host_addr = window.host_addr() + offset;
        let slot = self.slots.take();
        if let Err(e) = set_slot(&self.vm, slot, gpa, host_addr, len) {
            self.slots.give_back(slot);
            return Err(MirrorError::Map {
                gpa,
                reason: format!("KVM slot {slot}: {e}"),
            });
        }
        Ok(Box::new(KvmMirrorMapping {
            vm: self.vm.clone(),
            slots: self.slots.clone(),
            slot,
            gpa,
            host_addr,
            window: window.clone(),
        }))
    }
}

impl Drop for KvmMirrorMapping {
    fn drop(&mut self) {
        match set_slot(&self.vm, self.slot, self.gpa, self.host_addr, 0) {
            Ok(()) => self.slots.give_back(self.slot),
            Err(e) => {
                // KVM may still hold the slot: its number stays out of the
                // pool and its window stays mapped in the host for good.
                std::mem::forget(self.window.clone());
                log::warn!(
                    "pci config mirror at {:#x}: deleting KVM slot {}: {e}",
                    self.gpa,
                    self.slot
                );
            }
        }
    }
}
