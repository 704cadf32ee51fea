//! KVM memory slots for an ivshmem region's BAR: the shared sections appear
//! in the guest while the BAR is mapped, read-only where the spec says so.

use crate::ivshmem::{GuestSlot, IvshmemRegion};
use crate::pci::{BarMapError, BarMapper};
use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_READONLY};
use kvm_ioctls::VmFd;
use std::sync::Arc;

/// Registers an ivshmem region's guest view as KVM slots while BAR2 is mapped.
pub struct KvmShmemMapper {
    vm: Arc<VmFd>,
    slots: Vec<GuestSlot>,
    first_slot: u32,
    _region: Arc<IvshmemRegion>,
}

impl KvmShmemMapper {
    /// A mapper using KVM slots `first_slot..first_slot + MAX_GUEST_SLOTS`.
    pub fn new(vm: Arc<VmFd>, region: Arc<IvshmemRegion>, first_slot: u32) -> Self {
        KvmShmemMapper {
            vm,
            slots: region.guest_slots(),
            first_slot,
            _region: region,
        }
    }

    fn set(
        &self,
        index: usize,
        s: &GuestSlot,
        gpa: u64,
        size: u64,
    ) -> Result<(), kvm_ioctls::Error> {
        let desc = kvm_userspace_memory_region {
            slot: self.first_slot + index as u32,
            flags: if s.read_only { KVM_MEM_READONLY } else { 0 },
            guest_phys_addr: gpa + s.offset,
            memory_size: size,
            userspace_addr: s.host_addr,
        };
        // SAFETY: [host_addr, host_addr + len) is the region's guest view,
        // mapped for as long as `_region` (held here) lives; the bridge calls
        // unmap (size 0 deletes the slot) before it drops the mapper.
        unsafe { self.vm.set_user_memory_region(desc) }
    }
}

impl BarMapper for KvmShmemMapper {
    fn map(&self, gpa: u64, _size: u64) -> Result<(), BarMapError> {
        for (i, s) in self.slots.iter().enumerate() {
            if let Err(e) = self.set(i, s, gpa, s.len) {
                for (j, done) in self.slots.iter().enumerate().take(i) {
                    let _ = self.set(j, done, gpa, 0);
                }
                return Err(Box::new(e));
            }
        }
        Ok(())
    }

    /// Deletes every slot, even after one fails (each failure is logged;
    /// the first is returned), so no section stays mapped by accident.
    fn unmap(&self, gpa: u64, _size: u64) -> Result<(), BarMapError> {
        let mut first = None;
        for (i, s) in self.slots.iter().enumerate() {
            if let Err(e) = self.set(i, s, gpa, 0) {
                log::warn!(
                    "ivshmem: deleting KVM slot {} ({:#x}+{:#x}) failed: {e}",
                    self.first_slot + i as u32,
                    gpa + s.offset,
                    s.len
                );
                first.get_or_insert(e);
            }
        }
        match first {
            Some(e) => Err(Box::new(e)),
            None => Ok(()),
        }
    }
}
