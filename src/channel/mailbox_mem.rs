//! The channel's mailboxes as memory the guest maps directly.
//!
//! Served through MMIO, every 8-byte access of an overlay crossing the
//! host→guest mailbox is a VM exit (hundreds per attach). Backed by memory
//! that the VMM registers as KVM memory slots at the mailboxes' guest
//! addresses, the guest's copies cost no exits; only the register page still
//! traps. The protocol does not change: the host writes the host→guest
//! mailbox only while it owns it (nothing posted), and copies the
//! guest→host mailbox into its own buffer when the doorbell rings, before
//! looking at a byte, so a guest changing it concurrently cannot make the
//! host see two different messages. The host→guest slot is read-only to the
//! guest (its writes exit and are ignored, as the protocol says).
//!
//! Layout of the mapping: the host→guest mailbox
//! ([`H2G_SIZE`](proto::H2G_SIZE) bytes), then the guest→host mailbox
//! ([`G2H_SIZE`](proto::G2H_SIZE) bytes), mirroring the window from
//! [`H2G_OFFSET`](proto::H2G_OFFSET) on.

use super::protocol as proto;
use vm_memory::{MmapRegion, VolatileMemory};

/// Host memory behind both mailboxes (see the module docs).
pub struct MailboxMemory {
    region: MmapRegion<()>,
}

impl std::fmt::Debug for MailboxMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailboxMemory")
            .field("host_addr", &self.region.as_ptr())
            .finish()
    }
}

const H2G_LEN: usize = proto::H2G_SIZE as usize;
const G2H_LEN: usize = proto::G2H_SIZE as usize;

impl MailboxMemory {
    /// Maps zeroed anonymous memory for both mailboxes.
    pub fn new() -> std::io::Result<Self> {
        let region = MmapRegion::new(H2G_LEN + G2H_LEN)
            .map_err(|e| std::io::Error::other(format!("mapping the channel mailboxes: {e}")))?;
        Ok(MailboxMemory { region })
    }

    /// Host address of the host→guest mailbox (the guest sees it at window
    /// offset [`H2G_OFFSET`](proto::H2G_OFFSET), read-only).
    pub fn h2g_host_addr(&self) -> u64 {
        self.region.as_ptr() as u64
    }

    /// Host address of the guest→host mailbox (window offset
    /// [`G2H_OFFSET`](proto::G2H_OFFSET), writable).
    pub fn g2h_host_addr(&self) -> u64 {
        self.h2g_host_addr() + H2G_LEN as u64
    }

    /// Writes `bytes` at `offset` of the host→guest mailbox (clipped to it).
    pub(super) fn write_h2g(&self, offset: usize, bytes: &[u8]) {
        let n = bytes.len().min(H2G_LEN.saturating_sub(offset));
        if let Ok(slice) = self.region.get_slice(offset, n) {
            slice.copy_from(&bytes[..n]);
        }
    }

    /// Copies the guest→host mailbox into `out` (up to its length).
    pub(super) fn read_g2h(&self, out: &mut [u8]) {
        let n = out.len().min(G2H_LEN);
        if let Ok(slice) = self.region.get_slice(H2G_LEN, n) {
            slice.copy_to(&mut out[..n]);
        }
    }

    /// What the guest would read at `offset` of the host→guest mailbox.
    #[cfg(test)]
    pub(super) fn read_h2g(&self, offset: usize, out: &mut [u8]) {
        if let Ok(slice) = self.region.get_slice(offset, out.len()) {
            slice.copy_to(out);
        }
    }

    /// A guest store of `bytes` at `offset` of the guest→host mailbox.
    #[cfg(test)]
    pub(super) fn write_g2h(&self, offset: usize, bytes: &[u8]) {
        if let Ok(slice) = self.region.get_slice(H2G_LEN + offset, bytes.len()) {
            slice.copy_from(bytes);
        }
    }
}
