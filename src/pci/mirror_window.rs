//! A bridge's whole ECAM window as host memory the guest can read without
//! exits.
//!
//! Specification:
//!
//! - A [`MirrorWindow`] is a range of host virtual memory exactly as large as
//!   a bridge's ECAM window, mapped read-only. Every page reads as all ones
//!   (an absent function, what the bridge answers for it) except the pages
//!   where a function's [`MirrorPage`] is placed, which are that page's own
//!   memory: every write-through shows in the window at once.
//! - The all-ones pages are views of one process-wide memfd of
//!   [`ONES_CHUNK`] bytes, mapped chunk after chunk, so a window costs host
//!   memory only for its functions' pages, whatever its size.
//! - [`MirrorWindow::place`] maps a page at a function's offset and
//!   [`MirrorWindow::clear`] maps all ones back. Each replaces the old view
//!   in one `mmap(MAP_FIXED)`, under the kernel's mapping lock: a concurrent
//!   guest read (through KVM, which follows host mapping changes) sees the
//!   old or the new page. A replacement that fails may leave the page
//!   unmapped: the caller must then stop the guest from reading the window
//!   (delete its KVM slots); [`MirrorWindow::is_broken`] says so from then
//!   on.
//! - The window is unmapped when it is dropped; whoever maps it into a guest
//!   keeps it alive ([`MirrorMapper`](super::MirrorMapper)).

use super::config_mirror::{memfd, MirrorError, MirrorPage, MIRROR_PAGE_SIZE};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// Bytes of the all-ones memfd each chunk of a window views.
pub const ONES_CHUNK: usize = 64 * 1024;

/// The process-wide all-ones memfd (created on first use).
fn ones() -> Result<RawFd, MirrorError> {
    static ONES: OnceLock<Result<File, String>> = OnceLock::new();
    let file = ONES.get_or_init(|| {
        let mut file = memfd(c"cellvm-pci-absent", 0).map_err(|e| e.to_string())?;
        file.write_all(&[0xff; ONES_CHUNK])
            .map_err(|e| e.to_string())?;
        Ok(file)
    });
    match file {
        Ok(file) => Ok(file.as_raw_fd()),
        Err(e) => Err(MirrorError::Allocate(format!("the all-ones memfd: {e}"))),
    }
}

/// A bridge's ECAM window in host memory (see the module documentation).
pub struct MirrorWindow {
    base: usize,
    size: usize,
    broken: AtomicBool,
}

impl MirrorWindow {
    /// A window of `size` bytes (a whole number of pages), all ones.
    pub fn new(size: u64) -> Result<Self, MirrorError> {
        let size = usize::try_from(size)
            .ok()
            .filter(|s| *s > 0 && s % MIRROR_PAGE_SIZE == 0)
            .ok_or_else(|| {
                MirrorError::Window(format!("size {size:#x} is not a whole number of pages"))
            })?;
        let ones = ones()?;
        // SAFETY: a new private reservation chosen by the kernel (address
        // hint null); nothing else refers to it. PROT_NONE until the chunks
        // below replace it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(MirrorError::Allocate(format!(
                "reserving {size:#x} bytes: {}",
                std::io::Error::last_os_error()
            )));
        }
        let window = MirrorWindow {
            base: base as usize,
            size,
            broken: AtomicBool::new(false),
        };
        for offset in (0..size).step_by(ONES_CHUNK) {
            let len = ONES_CHUNK.min(size - offset);
            window.map_fixed(offset, len, ones, 0)?;
        }
        Ok(window)
    }

    /// Bytes of the window.
    pub fn size(&self) -> u64 {
        self.size as u64
    }

    /// Host address of the window's first byte (for the VMM's slots).
    pub fn host_addr(&self) -> u64 {
        self.base as u64
    }

    /// Whether a replacement failed (see the module documentation).
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// Shows `page` at byte `offset` (page-aligned, inside the window).
    pub fn place(&self, offset: u64, page: &MirrorPage) -> Result<(), MirrorError> {
        let offset = self.page_offset(offset)?;
        let fd = page
            .fd()
            .ok_or_else(|| MirrorError::Window("the page has no file".into()))?;
        self.map_fixed(offset, MIRROR_PAGE_SIZE, fd, 0)
    }

    /// Shows all ones at byte `offset` again (page-aligned, inside).
    pub fn clear(&self, offset: u64) -> Result<(), MirrorError> {
        let offset = self.page_offset(offset)?;
        self.map_fixed(offset, MIRROR_PAGE_SIZE, ones()?, offset % ONES_CHUNK)
    }

    /// Dword at byte `offset` (4-aligned) as the guest reads it; all ones
    /// outside the window.
    pub fn load(&self, offset: u64) -> u32 {
        let Some(offset) = usize::try_from(offset)
            .ok()
            .filter(|o| o % 4 == 0 && o + 4 <= self.size)
        else {
            return u32::MAX;
        };
        if self.is_broken() {
            return u32::MAX;
        }
        // SAFETY: an aligned dword inside the window, which is mapped
        // readable (every page is a view of a memfd) while `self` lives.
        let value = unsafe { std::ptr::read_volatile((self.base + offset) as *const u32) };
        u32::from_le(value)
    }

    fn page_offset(&self, offset: u64) -> Result<usize, MirrorError> {
        usize::try_from(offset)
            .ok()
            .filter(|o| o % MIRROR_PAGE_SIZE == 0 && o + MIRROR_PAGE_SIZE <= self.size)
            .ok_or_else(|| {
                MirrorError::Window(format!(
                    "page offset {offset:#x} outside a window of {:#x}",
                    self.size
                ))
            })
    }

    /// Maps `len` bytes of `fd` from `file_offset` read-only at `offset`.
    fn map_fixed(
        &self,
        offset: usize,
        len: usize,
        fd: RawFd,
        file_offset: usize,
    ) -> Result<(), MirrorError> {
        let file_offset = libc::off_t::try_from(file_offset)
            .map_err(|_| MirrorError::Window(format!("file offset {file_offset:#x}")))?;
        // SAFETY: `offset..offset + len` lies inside the window's own
        // reservation (callers check it), which no Rust reference points
        // into; replacing its pages changes only what reads of the window
        // (the guest's, through KVM, and `load`) see.
        let at = unsafe {
            libc::mmap(
                (self.base + offset) as *mut libc::c_void,
                len,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd,
                file_offset,
            )
        };
        if at == libc::MAP_FAILED {
            self.broken.store(true, Ordering::Release);
            return Err(MirrorError::Window(format!(
                "mapping {len:#x} bytes at window offset {offset:#x}: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }
}

impl Drop for MirrorWindow {
    fn drop(&mut self) {
        // SAFETY: the window's own reservation, mapped since `new`; nothing
        // refers to it after this (mappings into a guest hold the window).
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.size) };
    }
}
