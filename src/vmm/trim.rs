//! Dropping the resident pages of cellvm's own code once a cell runs.
//!
//! Setting a cell up runs a lot of code that a running cell never needs
//! again: the config parser, the device-tree builder, the kernel loader.
//! The kernel maps file pages around every fault (fault-around), so after
//! setup nearly all of cellvm's read-only segments are resident and count
//! in its RSS although nothing will touch most of them again, much as a
//! kernel's `__init` code after boot. [`drop_startup_code`] tells the kernel
//! to unmap them (`MADV_DONTNEED`); the pages stay in the page cache, shared
//! and clean, and whatever the running cell executes is faulted back in (a
//! minor fault per 64 KiB).
//!
//! Only the executable's `PT_LOAD` segments without write permission are
//! touched, shrunk inwards to whole pages: their contents are the file's
//! (never written, not relocated), so dropping and re-reading them changes
//! nothing. Writable segments, RELRO (relocated, hence anonymous copies),
//! the heap and stacks are left alone.

/// A page-aligned range of the executable's read-only segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    start: usize,
    end: usize,
}

/// The inward page-aligned part of a segment at `[start, start + len)`.
fn inner_pages(start: usize, len: usize, page: usize) -> Option<Range> {
    let first = start.checked_add(page - 1)? / page * page;
    let last = start.checked_add(len)? / page * page;
    (last > first).then_some(Range {
        start: first,
        end: last,
    })
}

extern "C" fn collect(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: dl_iterate_phdr passes a valid info for the duration of the
    // call, and `data` is the `&mut Vec<(usize, usize)>` given below.
    let (info, out) = unsafe { (&*info, &mut *data.cast::<Vec<(usize, usize)>>()) };
    let phdrs: &[libc::Elf64_Phdr] = if info.dlpi_phdr.is_null() {
        &[]
    } else {
        // SAFETY: dlpi_phdr points to dlpi_phnum program headers of the
        // loaded object, alive as long as the object (the executable).
        unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) }
    };
    for ph in phdrs {
        if ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_W == 0 {
            let start = (info.dlpi_addr as usize).wrapping_add(ph.p_vaddr as usize);
            out.push((start, ph.p_memsz as usize));
        }
    }
    // The first object is the executable itself: stop there.
    1
}

fn executable_read_only_segments() -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    // SAFETY: `collect` matches the callback signature and only uses `data`
    // as the vector passed here, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(collect), (&mut out as *mut Vec<(usize, usize)>).cast()) };
    out
}

/// Unmaps the resident pages of the executable's read-only segments (see
/// the module docs). Returns the bytes covered; errors are logged.
pub fn drop_startup_code() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p as usize,
        _ => 4096,
    };
    let mut covered = 0;
    for (start, len) in executable_read_only_segments() {
        let Some(r) = inner_pages(start, len, page) else {
            continue;
        };
        // SAFETY: the range lies inside a read-only, file-backed segment of
        // our own executable (page-aligned inwards), whose pages are never
        // written: MADV_DONTNEED only drops PTEs that the next access
        // repopulates from the same file contents. No Rust object lives in
        // this memory as anything but immutable code and constants.
        let rc = unsafe {
            libc::madvise(
                r.start as *mut libc::c_void,
                r.end - r.start,
                libc::MADV_DONTNEED,
            )
        };
        if rc == 0 {
            covered += r.end - r.start;
        } else {
            log::debug!(
                "madvise(DONTNEED) of code at {:#x}+{:#x}: {}",
                r.start,
                r.end - r.start,
                std::io::Error::last_os_error()
            );
        }
    }
    covered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_shrink_inwards_to_whole_pages() {
        assert_eq!(
            inner_pages(0x1000, 0x3000, 0x1000),
            Some(Range {
                start: 0x1000,
                end: 0x4000
            })
        );
        // A segment sharing pages with its neighbours keeps off them.
        assert_eq!(
            inner_pages(0x86ac0, 0x21f3a0, 0x1000),
            Some(Range {
                start: 0x87000,
                end: 0x2a5000
            })
        );
        assert_eq!(inner_pages(0x1800, 0x1000, 0x1000), None);
        assert_eq!(inner_pages(usize::MAX - 10, 100, 0x1000), None);
    }

    #[test]
    fn the_test_binary_has_read_only_segments_and_survives_dropping_them() {
        let segs = executable_read_only_segments();
        assert!(!segs.is_empty(), "no read-only PT_LOAD segments found");
        assert!(drop_startup_code() > 0);
        // Code and constants still work after their pages were dropped.
        let v: Vec<String> = (0..3).map(|i| format!("x{i}")).collect();
        assert_eq!(v.join(","), "x0,x1,x2");
    }
}
