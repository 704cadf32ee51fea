//! KVM memory slots for the paravirtual channel's mailboxes
//! ([`MailboxMemory`]): the guest copies messages without VM exits.

use crate::channel::{protocol as proto, MailboxMemory};
use crate::platform::CHANNEL_BASE;
use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_READONLY};
use kvm_ioctls::VmFd;
use std::sync::Arc;

/// KVM slots used: the host→guest mailbox (read-only) and the guest→host one.
pub const SLOTS: u32 = 2;

fn set_slot(
    vm: &VmFd,
    slot: u32,
    gpa: u64,
    size: u64,
    host: u64,
    flags: u32,
) -> Result<(), kvm_ioctls::Error> {
    let desc = kvm_userspace_memory_region {
        slot,
        flags,
        guest_phys_addr: gpa,
        memory_size: size,
        userspace_addr: host,
    };
    // SAFETY: `host..host + size` lies inside the MailboxMemory mapping, which
    // the caller keeps alive as long as the VM (the channel device and the
    // cell hold it); a size of 0 deletes the slot.
    unsafe { vm.set_user_memory_region(desc) }
}

/// Maps the channel's mailboxes into the guest with KVM slots `first_slot`
/// and `first_slot + 1`. `None` (logged) when the host has no read-only
/// slots or KVM refuses: the channel then serves the mailboxes through MMIO
/// exits, which works the same, only slower.
pub fn map_mailboxes(vm: &VmFd, readonly_mem: bool, first_slot: u32) -> Option<Arc<MailboxMemory>> {
    if !readonly_mem {
        log::debug!("channel: no KVM read-only memory slots; mailboxes stay MMIO");
        return None;
    }
    let mem = match MailboxMemory::new() {
        Ok(m) => Arc::new(m),
        Err(e) => {
            log::warn!("channel: {e}; mailboxes stay MMIO");
            return None;
        }
    };
    let h2g_gpa = CHANNEL_BASE + proto::H2G_OFFSET;
    let g2h_gpa = CHANNEL_BASE + proto::G2H_OFFSET;
    if let Err(e) = set_slot(
        vm,
        first_slot,
        h2g_gpa,
        proto::H2G_SIZE,
        mem.h2g_host_addr(),
        KVM_MEM_READONLY,
    ) {
        log::warn!("channel: mapping the host→guest mailbox: {e}; mailboxes stay MMIO");
        return None;
    }
    if let Err(e) = set_slot(
        vm,
        first_slot + 1,
        g2h_gpa,
        proto::G2H_SIZE,
        mem.g2h_host_addr(),
        0,
    ) {
        log::warn!("channel: mapping the guest→host mailbox: {e}; mailboxes stay MMIO");
        if let Err(e) = set_slot(vm, first_slot, h2g_gpa, 0, mem.h2g_host_addr(), 0) {
            log::warn!("channel: removing the host→guest mailbox slot: {e}");
        }
        return None;
    }
    Some(mem)
}
