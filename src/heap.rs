//! Counting the heap bytes cellvm's own code holds.
//!
//! [`CountingAlloc`] wraps the system allocator and keeps the number of bytes
//! currently allocated through it; the `cellvm` binary installs it as the
//! global allocator. Unlike the C allocator's statistics (`mallinfo2`), which
//! count per-thread caches and fragments as "in use", this is exactly what
//! Rust code has allocated and not freed: if it grows with every attach and
//! detach, something leaks. `cellvm status` reports it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

static LIVE: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting live bytes (see the module docs).
pub struct CountingAlloc;

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees hold; the counter only observes sizes.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is (the caller upholds alloc's contract).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is (ptr was allocated by us with layout).
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

/// Caps glibc's malloc arenas. Call it first thing in `main`, before any
/// thread starts.
///
/// Without a cap, the first time a thread needs a ninth arena glibc asks
/// how many CPUs there are by reading `/sys/devices/system/cpu/online`
/// (`__get_nprocs` in `arena_get2`). On a thread under its seccomp filter
/// that `openat` is forbidden and stops the cell: a cell with dozens of
/// virtio workers did so now and then while devices were detached. With a
/// cap glibc never asks, and fewer arenas also keep less memory resident.
pub fn limit_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a malloc parameter; called before any
    // other thread exists, nothing allocates concurrently.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MAX_ARENAS);
    }
}

/// Arenas glibc may create (one per thread that contends, up to this).
#[cfg(target_env = "gnu")]
const MAX_ARENAS: libc::c_int = 4;

/// Bytes allocated through [`CountingAlloc`] and not yet freed (0 when it
/// is not the global allocator).
pub fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_bytes_follow_allocations_reallocations_and_frees() {
        let before = live_bytes();
        let layout = Layout::from_size_align(1000, 8).expect("layout");
        // SAFETY: a valid non-zero layout; the pointer is freed below with
        // the layout it has at that point.
        unsafe {
            let p = CountingAlloc.alloc(layout);
            assert!(!p.is_null());
            assert_eq!(live_bytes(), before + 1000);
            let q = CountingAlloc.realloc(p, layout, 3000);
            assert!(!q.is_null());
            assert_eq!(live_bytes(), before + 3000);
            let grown = Layout::from_size_align(3000, 8).expect("layout");
            CountingAlloc.dealloc(q, grown);
            let z = CountingAlloc.alloc_zeroed(layout);
            assert!(!z.is_null() && *z == 0);
            CountingAlloc.dealloc(z, layout);
        }
        assert_eq!(live_bytes(), before);
    }
}
