//! Config-space mirrors: a function's configuration space readable by the
//! guest without an exit.
//!
//! Specification:
//!
//! - A [`MirrorPage`] is one 4 KiB page of host memory (a memfd, so that a
//!   bridge's [`MirrorWindow`](super::mirror_window::MirrorWindow) can show
//!   the same memory to the guest) holding a copy of one function's ECAM
//!   configuration space, little-endian, as the guest reads it: dword `r` of
//!   the function's [`ConfigSpace`](super::ConfigSpace) at byte `4 * r`,
//!   every byte beyond the function's registers `0xff` (what the bridge
//!   answers there).
//! - The [`ConfigSpace`](super::ConfigSpace) a page is attached to writes
//!   every change of a register through to the page, from the guest's writes
//!   and from the device side alike (INTx status, reset, the multi-function
//!   bit), so the page never differs from what an exiting read would return
//!   by more than the one dword being stored.
//! - A bridge places its functions' pages in its window, whose every other
//!   page reads as all ones (an absent function). A [`MirrorMapper`] (the
//!   VMM: read-only KVM memory slots) maps ranges of the window at the
//!   bridge's guest-physical config window. Reads there are then memory
//!   reads; writes still exit and reach the bridge, which applies them to
//!   the function (and, through the write-through, to the page) before the
//!   vCPU resumes. Dropping a returned [`MirrorMapping`] unmaps its range.
//! - Only functions whose configuration reads have no side effects and are
//!   served from their [`ConfigSpace`](super::ConfigSpace) may be mirrored
//!   ([`PciFunction::mirror_config`](super::PciFunction::mirror_config)); the
//!   bridge leaves the pages of the others out of every mapped range, so
//!   their reads exit. It mirrors nothing for CAM windows, whose functions
//!   are 256 bytes apart, smaller than a page.

use super::mirror_window::MirrorWindow;
use std::ffi::CStr;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use thiserror::Error;
use vm_memory::{Bytes, FileOffset, MmapRegion, VolatileMemory};

/// Bytes of one function's ECAM configuration space: one page.
pub const MIRROR_PAGE_SIZE: usize = 4096;

/// Errors from creating or mapping a mirror page.
#[derive(Debug, Error)]
pub enum MirrorError {
    /// The host memory for the page could not be mapped.
    #[error("allocating a config-space mirror page: {0}")]
    Allocate(String),
    /// A page could not be shown in (or taken out of) a bridge's window.
    #[error("config-space mirror window: {0}")]
    Window(String),
    /// The VMM could not map a range of the window into the guest.
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
    /// Shared mapping of the page's memfd (which it owns).
    region: MmapRegion,
}

/// A new, empty memfd named `name` (close-on-exec) of `len` bytes.
pub(super) fn memfd(name: &CStr, len: u64) -> std::io::Result<File> {
    // SAFETY: `name` is a valid NUL-terminated string; the call only
    // creates a new file descriptor, whose ownership passes to the `File`
    // below when the call succeeds.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(len)?;
    Ok(file)
}

impl MirrorPage {
    /// A page of all ones (an absent register everywhere).
    pub fn new() -> Result<Self, MirrorError> {
        let file = memfd(c"cellvm-pci-config", MIRROR_PAGE_SIZE as u64)
            .map_err(|e| MirrorError::Allocate(e.to_string()))?;
        let region = MmapRegion::from_file(FileOffset::new(file, 0), MIRROR_PAGE_SIZE)
            .map_err(|e| MirrorError::Allocate(e.to_string()))?;
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

    /// The page's memfd (for a window to map it too).
    pub(super) fn fd(&self) -> Option<RawFd> {
        self.region.file_offset().map(|f| f.file().as_raw_fd())
    }
}

/// While it lives, a range of a [`MirrorWindow`] is mapped into the guest;
/// dropping it unmaps the range.
pub trait MirrorMapping: Send + Sync {}

/// Maps ranges of mirror windows into the guest (the VMM's side of the
/// contract in the module documentation).
pub trait MirrorMapper: Send + Sync {
    /// Maps `len` bytes of `window` from byte `offset` read-only at
    /// guest-physical `gpa` (all page-aligned) until the returned mapping is
    /// dropped; the mapping keeps the window alive.
    fn map(
        &self,
        gpa: u64,
        window: &Arc<MirrorWindow>,
        offset: u64,
        len: u64,
    ) -> Result<Box<dyn MirrorMapping>, MirrorError>;
}
