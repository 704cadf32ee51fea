//! PCI config-space mirrors as read-only KVM memory slots: the VMM's side of
//! [`crate::pci::config_mirror`]. Each mirrored function's 4 KiB of ECAM is
//! one slot over its [`MirrorPage`]; guest reads are memory reads, guest
//! writes fault on the read-only slot and reach the bridge as MMIO exits.
//! The slot is deleted (and its number reused) when the mapping is dropped.

use super::slots::SlotPool;
use crate::pci::config_mirror::MIRROR_PAGE_SIZE;
use crate::pci::{MirrorError, MirrorMapper, MirrorMapping, MirrorPage};
use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_READONLY};
use kvm_ioctls::VmFd;
use std::sync::Arc;

/// Maps mirror pages with read-only KVM slots taken from the cell's pool.
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

/// One mapped mirror page: deletes its slot when dropped.
struct KvmMirrorMapping {
    vm: Arc<VmFd>,
    slots: Arc<SlotPool>,
    slot: u32,
    gpa: u64,
    /// Kept mapped in the host for as long as the slot exists.
    page: Arc<MirrorPage>,
}

impl MirrorMapping for KvmMirrorMapping {}

fn set_slot(
    vm: &VmFd,
    slot: u32,
    gpa: u64,
    page: &MirrorPage,
    size: u64,
) -> Result<(), kvm_ioctls::Error> {
    let region = kvm_userspace_memory_region {
        slot,
        flags: KVM_MEM_READONLY,
        guest_phys_addr: gpa,
        memory_size: size,
        userspace_addr: page.host_addr(),
    };
    // SAFETY: the page is MIRROR_PAGE_SIZE bytes of host memory that stays
    // mapped while the `Arc<MirrorPage>` held by the mapping lives; the
    // mapping deletes the slot (size 0) in its `Drop` before releasing it.
    unsafe { vm.set_user_memory_region(region) }
}

impl MirrorMapper for KvmMirrorMapper {
    fn map(&self, gpa: u64, page: Arc<MirrorPage>) -> Result<Box<dyn MirrorMapping>, MirrorError> {
        let slot = self.slots.take();
        if let Err(e) = set_slot(&self.vm, slot, gpa, &page, MIRROR_PAGE_SIZE as u64) {
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
            page,
        }))
    }
}

impl Drop for KvmMirrorMapping {
    fn drop(&mut self) {
        match set_slot(&self.vm, self.slot, self.gpa, &self.page, 0) {
            Ok(()) => self.slots.give_back(self.slot),
            Err(e) => {
                // KVM may still hold the slot: its number stays out of the
                // pool and its page stays mapped in the host for good.
                std::mem::forget(self.page.clone());
                log::warn!(
                    "pci config mirror at {:#x}: deleting KVM slot {}: {e}",
                    self.gpa,
                    self.slot
                );
            }
        }
    }
}
