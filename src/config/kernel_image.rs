//! Telling a kernel image's format from its contents: a bzImage, an
//! uncompressed Linux `vmlinux`, or a bare-metal ELF64 image.
//!
//! A bzImage has `HdrS` at 0x202. Both other kinds are ELF64 x86_64; a
//! `vmlinux` is told apart by its ELF notes: Linux's build puts notes owned
//! by `"Linux"` into `.notes` (e.g. the build salt), which bare-metal images
//! do not have. Nothing here trusts the file: every offset and length is
//! checked, reads are bounded, and a malformed ELF is simply "no Linux note".

use super::model::KernelFormat;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Bytes read from the start of an image to recognise it.
pub(super) const KERNEL_HEAD: u64 = 0x1000;
/// At most this many program headers are looked at.
const MAX_PHDRS: u64 = 64;
/// At most this many bytes of one PT_NOTE segment are read.
const MAX_NOTE_BYTES: u64 = 64 * 1024;
const PT_NOTE: u32 = 4;
const ELF64_PHDR_SIZE: u64 = 56;

/// Reads up to `limit` bytes from the start of `path`.
pub(super) fn read_head(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let mut head = Vec::new();
    File::open(path)?.take(limit).read_to_end(&mut head)?;
    Ok(head)
}

fn is_elf64_x86_64(head: &[u8]) -> bool {
    const ELFCLASS64: u8 = 2;
    const EM_X86_64: u16 = 62;
    head.get(0..4) == Some(&b"\x7fELF"[..])
        && head.get(4) == Some(&ELFCLASS64)
        && head.get(18..20) == Some(&EM_X86_64.to_le_bytes()[..])
}

/// Recognises a kernel image by its first bytes: an ELF64 x86_64 image
/// (`\x7fELF`, ELFCLASS64, EM_X86_64; reported as [`KernelFormat::Elf`],
/// since telling a `vmlinux` needs its notes, see [`identify`]), a bzImage
/// (`HdrS` at 0x202) or an arm64 `Image` (`ARM\x64` at 0x38).
pub fn kernel_format_from_header(head: &[u8]) -> Option<KernelFormat> {
    if is_elf64_x86_64(head) {
        Some(KernelFormat::Elf)
    } else if head.get(0x202..0x206) == Some(&b"HdrS"[..]) {
        Some(KernelFormat::BzImage)
    } else if head.get(0x38..0x3c) == Some(&b"ARM\x64"[..]) {
        Some(KernelFormat::Image)
    } else {
        None
    }
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Whether a buffer of ELF notes holds one whose owner is `"Linux"`.
pub(super) fn notes_name_linux(notes: &[u8]) -> bool {
    let align4 = |n: usize| n.checked_add(3).map(|v| v & !3);
    let mut pos = 0usize;
    while let (Some(namesz), Some(descsz)) = (u32_at(notes, pos), u32_at(notes, pos + 4)) {
        let name_start = pos + 12;
        let Some(name_end) = name_start.checked_add(namesz as usize) else {
            return false;
        };
        if notes.get(name_start..name_end) == Some(&b"Linux\0"[..]) {
            return true;
        }
        let next = align4(namesz as usize)
            .and_then(|n| n.checked_add(align4(descsz as usize)?))
            .and_then(|n| name_start.checked_add(n));
        match next {
            Some(n) if n > pos => pos = n,
            _ => return false,
        }
    }
    false
}

/// Whether the ELF64 image (whose first bytes are `head`) carries a note
/// owned by `"Linux"` in one of its PT_NOTE segments. Program headers or
/// notes that cannot be read (offsets beyond the file, ...) count as none.
fn has_linux_note(file: &mut File, head: &[u8]) -> bool {
    linux_note_in_segments(file, head).unwrap_or(false)
}

fn linux_note_in_segments(file: &mut File, head: &[u8]) -> io::Result<bool> {
    let (Some(phoff), Some(phentsize), Some(phnum)) =
        (u64_at(head, 32), u16_at(head, 54), u16_at(head, 56))
    else {
        return Ok(false);
    };
    let (phentsize, phnum) = (u64::from(phentsize), u64::from(phnum).min(MAX_PHDRS));
    if phentsize < ELF64_PHDR_SIZE {
        return Ok(false);
    }
    let mut phdrs = vec![0u8; (phentsize * phnum) as usize];
    file.seek(SeekFrom::Start(phoff))?;
    if file.read_exact(&mut phdrs).is_err() {
        return Ok(false);
    }
    for ph in phdrs.chunks_exact(phentsize as usize) {
        let (Some(p_type), Some(offset), Some(filesz)) =
            (u32_at(ph, 0), u64_at(ph, 8), u64_at(ph, 32))
        else {
            continue;
        };
        if p_type != PT_NOTE {
            continue;
        }
        let mut notes = Vec::new();
        file.seek(SeekFrom::Start(offset))?;
        (&mut *file)
            .take(filesz.min(MAX_NOTE_BYTES))
            .read_to_end(&mut notes)?;
        if notes_name_linux(&notes) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Tells the format of the image at `path`: `Ok(None)` when it is neither a
/// bzImage nor an ELF64 x86_64 image.
pub(super) fn identify(path: &Path) -> io::Result<Option<KernelFormat>> {
    let mut file = File::open(path)?;
    let mut head = Vec::new();
    (&mut file).take(KERNEL_HEAD).read_to_end(&mut head)?;
    Ok(match kernel_format_from_header(&head) {
        Some(KernelFormat::Elf) if has_linux_note(&mut file, &head) => Some(KernelFormat::Vmlinux),
        other => other,
    })
}

/// Why [`detect_kernel_format`] could not tell a kernel image's format.
#[derive(Debug, Error)]
pub enum KernelFileError {
    /// The file does not exist.
    #[error("kernel image {} does not exist", super::error::shown(.0))]
    NotFound(PathBuf),
    /// The file exists but cannot be read.
    #[error("cannot read kernel image {}: {error}", super::error::shown(.path))]
    Unreadable {
        /// The image.
        path: PathBuf,
        /// What went wrong.
        error: io::Error,
    },
    /// Neither a bzImage nor an ELF64 x86_64 image.
    #[error("{} is neither a bzImage (\"HdrS\" at 0x202), an ELF64 x86_64 image nor an arm64 Image (\"ARM\\x64\" at 0x38)", super::error::shown(.0))]
    UnknownFormat(PathBuf),
}

/// Reads the kernel image at `path` and tells its format (for kernels given
/// outside a config file, e.g. on the command line).
pub fn detect_kernel_format(path: &Path) -> Result<KernelFormat, KernelFileError> {
    identify(path)
        .map_err(|error| {
            if error.kind() == io::ErrorKind::NotFound {
                KernelFileError::NotFound(path.to_path_buf())
            } else {
                KernelFileError::Unreadable {
                    path: path.to_path_buf(),
                    error,
                }
            }
        })?
        .ok_or_else(|| KernelFileError::UnknownFormat(path.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(owner: &[u8], desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend_from_slice(&(owner.len() as u32).to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&1u32.to_le_bytes());
        n.extend_from_slice(owner);
        n.resize(n.len().next_multiple_of(4), 0);
        n.extend_from_slice(desc);
        n.resize(n.len().next_multiple_of(4), 0);
        n
    }

    #[test]
    fn finds_a_linux_note_after_other_notes() {
        let mut notes = note(b"GNU\0", &[0xab; 20]);
        notes.extend(note(b"Xen\0", &[1, 2, 3]));
        assert!(!notes_name_linux(&notes));
        notes.extend(note(b"Linux\0", &[0; 4]));
        assert!(notes_name_linux(&notes));
    }

    #[test]
    fn a_name_that_only_starts_with_linux_is_not_linux() {
        assert!(!notes_name_linux(&note(b"Linuxy\0", &[])));
        assert!(!notes_name_linux(&note(b"Linux", &[])));
    }

    #[test]
    fn malformed_notes_are_no_linux_note_and_never_panic() {
        assert!(!notes_name_linux(&[]));
        assert!(!notes_name_linux(&[1, 2, 3]));
        // namesz/descsz far beyond the buffer, or wrapping the offsets.
        let mut huge = Vec::new();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&1u32.to_le_bytes());
        huge.extend_from_slice(b"Linux\0\0\0");
        assert!(!notes_name_linux(&huge));
        // Every prefix of a valid note list, and random bytes.
        let valid = [note(b"GNU\0", &[7; 9]), note(b"Linux\0", &[0; 4])].concat();
        for cut in 0..valid.len() {
            let _ = notes_name_linux(&valid[..cut]);
        }
        let mut x: u32 = 0x1234_5678;
        for _ in 0..2000 {
            let len = (x % 64) as usize;
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (x % 16) as u8
                })
                .collect();
            let _ = notes_name_linux(&buf);
        }
    }

    #[test]
    fn an_elf_with_bogus_program_headers_is_a_plain_elf() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut h = vec![0u8; 64];
        h[0..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[18..20].copy_from_slice(&62u16.to_le_bytes());
        h[32..40].copy_from_slice(&u64::MAX.to_le_bytes()); // e_phoff beyond the file
        h[54..56].copy_from_slice(&56u16.to_le_bytes());
        h[56..58].copy_from_slice(&3u16.to_le_bytes());
        let path = dir.path().join("k");
        std::fs::write(&path, &h).expect("write");
        assert_eq!(identify(&path).ok().flatten(), Some(KernelFormat::Elf));
        h[54..56].copy_from_slice(&8u16.to_le_bytes()); // e_phentsize too small
        std::fs::write(&path, &h).expect("write");
        assert_eq!(identify(&path).ok().flatten(), Some(KernelFormat::Elf));
    }
}
