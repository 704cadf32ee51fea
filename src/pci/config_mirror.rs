//! Config-space mirrors: a function's configuration space readable by the
//! guest without an exit.
//!
//! Specification:
//!
//! - A [`MirrorPage`] is one 4 KiB page of host memory holding a copy of one
//!   function's ECAM configuration space, little-endian, as the guest reads
//!   it: dword `r` of the function's [`ConfigSpace`](super::ConfigSpace) at
//!   byte `4 * r`, every byte beyond the function's registers `0xff` (what
//!   the bridge answers there).
//! - The [`ConfigSpace`](super::ConfigSpace) a page is attached to writes
//!   every change of a register through to the page, from the guest's writes
//!   and from the device side alike (INTx status, reset, the multi-function
//!   bit), so the page never differs from what an exiting read would return
//!   by more than the one dword being stored.
//! - A [`MirrorMapper`] (the VMM: a read-only KVM memory slot) maps a page at
//!   the function's guest-physical ECAM address. Reads of that page are then
//!   memory reads; writes still exit and reach the bridge, which applies them
//!   to the function (and, through the write-through, to the page) before the
//!   vCPU resumes. Dropping the returned [`MirrorMapping`] unmaps the page.
//! - Only functions whose configuration reads have no side effects and are
//!   served from their [`ConfigSpace`](super::ConfigSpace) may be mirrored
//!   ([`PciFunction::mirror_config`](super::PciFunction::mirror_config)); the
//!   bridge mirrors nothing for CAM windows, whose functions are 256 bytes
//!   apart, smaller than a page.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use thiserror::Error;
use vm_memory::{Bytes, MmapRegion, VolatileMemory};

/// Bytes of one function's ECAM configuration space: one page.
pub const MIRROR_PAGE_SIZE: usize = 4096;

/// Errors from creating or mapping a mirror page.
#[derive(Debug, Error)]
pub enum MirrorError {
    /// The host memory for the page could not be mapped.
    #[error("allocating a config-space mirror page: {0}")]
    Allocate(String),
    /// The VMM could not map the page into the guest.
    #[error("mapping the config-space mirror at {gpa:#x}: {reason}")]
    Map {
        /// Guest-physical address of the function's configuration space.
        gpa: u64,
        /// Why.
        reason: String,
    },
}

/// One page of host memory the guest reads as a function's configuration
/// space (see the module documentation).
pub struct MirrorPage {
    region: MmapRegion,
}

impl MirrorPage {
    /// A page of all ones (an absent register everywhere).
    pub fn new() -> Result<Self, MirrorError> {
        let region =
            MmapRegion::new(MIRROR_PAGE_SIZE).map_err(|e| MirrorError::Allocate(e.to_string()))?;
        region
            .as_volatile_slice()
            .write_slice(&[0xff; MIRROR_PAGE_SIZE], 0)
            .map_err(|e| MirrorError::Allocate(e.to_string()))?;
        Ok(MirrorPage { region })
    }

    /// Stores dword `reg` (little-endian at byte `4 * reg`); ignored beyond
    /// the page.
    pub fn store(&self, reg: usize, value: u32) {
        let Some(offset) = reg.checked_mul(4).filter(|o| o + 4 <= MIRROR_PAGE_SIZE) else {
            return;
        };
        // An aligned 32-bit store: a concurrent guest read sees the old or
        // the new dword, never a mix.
        let _ = self
            .region
            .as_volatile_slice()
            .store(value.to_le(), offset, Ordering::Release);
    }

    /// Dword `reg` as the guest reads it (all ones beyond the page).
    pub fn load(&self, reg: usize) -> u32 {
        let Some(offset) = reg.checked_mul(4).filter(|o| o + 4 <= MIRROR_PAGE_SIZE) else {
            return u32::MAX;
        };
        self.region
            .as_volatile_slice()
            .load::<u32>(offset, Ordering::Acquire)
            .map_or(u32::MAX, u32::from_le)
    }

    /// Host address of the page (for the VMM's memory slot).
    pub fn host_addr(&self) -> u64 {
        self.region.as_ptr() as u64
    }
}

/// While it lives, a [`MirrorPage`] is mapped into the guest; dropping it
/// unmaps the page.
pub trait MirrorMapping: Send + Sync {}

/// Maps mirror pages into the guest (the VMM's side of the contract in the
/// module documentation).
pub trait MirrorMapper: Send + Sync {
    /// Maps `page` read-only at guest-physical `gpa` (page-aligned) until
    /// the returned mapping is dropped.
    fn map(&self, gpa: u64, page: Arc<MirrorPage>) -> Result<Box<dyn MirrorMapping>, MirrorError>;
}
