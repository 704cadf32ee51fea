//! [`IvshmemRegion`]: one peer's attachment to the memory shared by the
//! cells of an ivshmem region.
//!
//! # The region file
//!
//! `<runtime dir>/cellvm-ivshmem-<region>`, mode 0600, owned by the user
//! running cellvm:
//!
//! ```text
//! file offset 0       cellvm header (one page, never visible to guests)
//! file offset 0x1000  shared memory = what BAR2 shows, offset 0:
//!   0                          state table: one u32 per peer (4 KiB)
//!   0x1000                     R/W section (rw_size)
//!   0x1000 + rw_size           output section of peer 0 (output_size)
//!   ...                        output section of peer n - 1
//! ```
//!
//! The header records the layout (magic `CVIVSHM\0`, version, max_peers,
//! state table, R/W and output section sizes, shared size), so a peer asking
//! for a different layout gets [`IvshmemError::LayoutMismatch`].
//!
//! # Membership
//!
//! Peers coordinate with open-file-description (OFD) locks on single bytes
//! of the region file; the kernel drops them when a process dies, so a crash
//! never leaves a lock behind:
//!
//! | byte | lock | held |
//! |---|---|---|
//! | 0 | write | briefly, while a peer joins or leaves |
//! | 1 | read | by every member for its lifetime |
//! | 2 + peer id | write | by that peer for its lifetime (ids are unique) |
//!
//! Joining: open (create if missing), take byte 0, check the path still
//! names the opened file (a leaving last peer may have unlinked it: retry).
//! If a write lock on byte 1 is granted nobody else is a member: the file is
//! new or left over from a crash, and is (re)initialised: truncated to zero,
//! sized, header written. Otherwise the header must match this peer's
//! layout. Then byte 2 + id (else [`IvshmemError::PeerIdInUse`]) and a read
//! lock on byte 1. State-table entries of peers that are not members (crash
//! leftovers), and this peer's own entry, are reset to 0
//! ([`IvshmemRegion::reset_peers`] lists them so the device can notify).
//!
//! Leaving (drop): own state entry to 0, take byte 0, and if the write lock
//! on byte 1 is granted this was the last member: unlink the file. Closing
//! the file releases the locks.
//!
//! # Mappings
//!
//! The shared memory is mapped `MAP_SHARED` twice: a read-write host view
//! used by cellvm itself (state-table updates, BAR2 accesses that exit), and
//! a guest view to register as KVM memory slots, in which the state table
//! and the other peers' output sections are `PROT_READ`
//! ([`IvshmemRegion::guest_slots`]). Shared memory is written concurrently
//! by other processes and guests, so Rust code only touches it through raw
//! pointers with volatile accesses, never through references.

use super::IvshmemError;
use crate::config::IvshmemConfig;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

/// Size of the cellvm header page in front of the shared memory.
pub const HEADER_SIZE: u64 = 0x1000;
/// Size of the state table (one page: room for 1024 peers).
pub const STATE_TABLE_SIZE: u64 = 0x1000;
use crate::config::ivshmem_shape::{peers_error, section_error, BOTH_EMPTY};
pub use crate::config::ivshmem_shape::{
    valid_region_name, MAX_PEERS, MAX_SECTION_SIZE, MIN_PEERS, SECTION_ALIGN,
};
/// Most entries [`IvshmemRegion::guest_slots`] returns (read-only state
/// table, R/W section, read-only outputs below this peer's, this peer's
/// output, read-only outputs above it).
pub const MAX_GUEST_SLOTS: usize = 5;

const MAGIC: [u8; 8] = *b"CVIVSHM\0";
const HEADER_VERSION: u32 = 1;
const HEADER_LEN: usize = 48;
const JOIN_LOCK: u64 = 0;
const MEMBERS_LOCK: u64 = 1;
const PEER_LOCK_BASE: u64 = 2;
const OPEN_ATTEMPTS: usize = 64;

/// File name of region `region`'s shared memory in the runtime directory.
pub fn region_file_name(region: &str) -> String {
    format!("cellvm-ivshmem-{region}")
}

/// The layout of a region's shared memory; identical for all its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionLayout {
    /// Number of peers (and output sections), [`MIN_PEERS`]..=[`MAX_PEERS`].
    pub max_peers: u16,
    /// State table size ([`STATE_TABLE_SIZE`]).
    pub state_table_size: u64,
    /// R/W section size (page multiple, may be 0).
    pub rw_size: u64,
    /// Size of each output section (page multiple, may be 0).
    pub output_size: u64,
}

impl fmt::Display for RegionLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "max_peers {}, rw_size {:#x}, output_size {:#x}",
            self.max_peers, self.rw_size, self.output_size
        )
    }
}

impl RegionLayout {
    /// A layout, checked: 2..=16 peers, sections page multiples of at most
    /// 1 GiB, not both empty.
    pub fn new(max_peers: u16, rw_size: u64, output_size: u64) -> Result<Self, String> {
        if let Some(why) = peers_error(u64::from(max_peers)) {
            return Err(format!("max_peers: {why}"));
        }
        for (what, size) in [("rw_size", rw_size), ("output_size", output_size)] {
            if let Some(why) = section_error(size) {
                return Err(format!("{what}: {why}"));
            }
        }
        if rw_size == 0 && output_size == 0 {
            return Err(BOTH_EMPTY.into());
        }
        Ok(RegionLayout {
            max_peers,
            state_table_size: STATE_TABLE_SIZE,
            rw_size,
            output_size,
        })
    }

    /// Offset of the R/W section in the shared memory.
    pub fn rw_offset(&self) -> u64 {
        self.state_table_size
    }

    /// Offset of `peer`'s output section (for `peer == max_peers`: the end).
    pub fn output_offset(&self, peer: u16) -> u64 {
        self.state_table_size + self.rw_size + u64::from(peer) * self.output_size
    }

    /// Bytes of shared memory (state table + R/W + all output sections).
    pub fn shared_size(&self) -> u64 {
        self.output_offset(self.max_peers)
    }

    /// Size of BAR2: the shared size rounded up to a power of two. Bytes
    /// past [`shared_size`](Self::shared_size) read 0 and ignore writes.
    pub fn bar_size(&self) -> u64 {
        self.shared_size().next_power_of_two()
    }

    /// Size of the region file (header page + shared memory).
    pub fn file_size(&self) -> u64 {
        HEADER_SIZE + self.shared_size()
    }

    /// Whether `peer` may write `[offset, offset + len)`: it lies entirely in
    /// the R/W section or entirely in `peer`'s own output section.
    pub fn writable_by(&self, peer: u16, offset: u64, len: u64) -> bool {
        let Some(end) = offset.checked_add(len) else {
            return false;
        };
        let inside = |start: u64, size: u64| size > 0 && offset >= start && end <= start + size;
        len > 0
            && peer < self.max_peers
            && (inside(self.rw_offset(), self.rw_size)
                || inside(self.output_offset(peer), self.output_size))
    }

    /// The shared memory as `(offset, len, read_only)` runs as `peer`'s
    /// guest sees them: empty sections skipped, neighbours with the same
    /// access merged.
    pub fn guest_runs(&self, peer: u16) -> Vec<(u64, u64, bool)> {
        let mut parts = vec![
            (0, self.state_table_size, true),
            (self.rw_offset(), self.rw_size, false),
        ];
        for p in 0..self.max_peers {
            parts.push((self.output_offset(p), self.output_size, p != peer));
        }
        let mut runs: Vec<(u64, u64, bool)> = Vec::with_capacity(MAX_GUEST_SLOTS);
        for (offset, len, ro) in parts {
            if len == 0 {
                continue;
            }
            match runs.last_mut() {
                Some(last) if last.2 == ro && last.0 + last.1 == offset => last.1 += len,
                _ => runs.push((offset, len, ro)),
            }
        }
        runs
    }

    fn encode_header(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&HEADER_VERSION.to_le_bytes());
        h[12..14].copy_from_slice(&self.max_peers.to_le_bytes());
        h[16..24].copy_from_slice(&self.state_table_size.to_le_bytes());
        h[24..32].copy_from_slice(&self.rw_size.to_le_bytes());
        h[32..40].copy_from_slice(&self.output_size.to_le_bytes());
        h[40..48].copy_from_slice(&self.shared_size().to_le_bytes());
        h
    }

    fn decode_header(h: &[u8; HEADER_LEN]) -> Result<Self, String> {
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[at..at + 8]);
            u64::from_le_bytes(b)
        };
        if h[0..8] != MAGIC {
            return Err("no cellvm ivshmem header".into());
        }
        let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        if version != HEADER_VERSION {
            return Err(format!(
                "header version {version}, this cellvm understands {HEADER_VERSION}"
            ));
        }
        let max_peers = u16::from_le_bytes([h[12], h[13]]);
        let layout = RegionLayout::new(max_peers, u64_at(24), u64_at(32))
            .map_err(|e| format!("header describes an invalid layout: {e}"))?;
        if u64_at(16) != layout.state_table_size || u64_at(40) != layout.shared_size() {
            return Err("header sizes are inconsistent".into());
        }
        Ok(layout)
    }
}

/// A range of the shared memory to register as one KVM memory slot.
///
/// The guest view's protections match `read_only`: a read-only run is
/// mapped `PROT_READ`, so it must be registered with `KVM_MEM_READONLY`
/// (guest writes then exit as MMIO writes to BAR2, which the device drops);
/// registering it writable would make guest writes fail inside `KVM_RUN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestSlot {
    /// Offset in BAR2 (guest-physical address = BAR2 base + offset).
    pub offset: u64,
    /// Length in bytes (page multiple).
    pub len: u64,
    /// Host virtual address of the guest view at `offset`.
    pub host_addr: u64,
    /// Whether the guest may only read it.
    pub read_only: bool,
}

/// A `MAP_SHARED` mapping, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is process-wide memory owned by this value; Rust code
// only accesses it through raw pointers with volatile operations, which is
// as sound from any thread as from the one that created it.
unsafe impl Send for Mapping {}
// SAFETY: see `Send`; `&Mapping` offers no references into the memory.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(file: &File, offset: u64, len: usize) -> io::Result<Self> {
        let off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: asks the kernel for a new shared mapping of `len` bytes of
        // an open file at a page-aligned offset, at an address of its
        // choosing, so no existing memory is affected; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                off,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(ptr.cast::<u8>())
            .map(|ptr| Mapping { ptr, len })
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))
    }

    /// Pointer to `[offset, offset + len)` if it lies inside the mapping.
    fn range(&self, offset: u64, len: usize) -> Option<*mut u8> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(len)?;
        (end <= self.len).then(|| self.ptr.as_ptr().wrapping_add(start))
    }

    fn protect_read_only(&self, offset: u64, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let ptr = self
            .range(offset, len)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: the page-aligned range lies inside this mapping (checked
        // above); making it read-only affects only memory this value owns,
        // which no Rust code writes through this (guest) view.
        let ret = unsafe { libc::mprotect(ptr.cast(), len, libc::PROT_READ) };
        if ret == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn addr_at(&self, offset: u64) -> u64 {
        (self.ptr.as_ptr() as u64).wrapping_add(offset)
    }

    /// Volatile copy out of the mapping; `false` if out of range. Naturally
    /// aligned 2-, 4- and 8-byte accesses are single loads.
    fn read(&self, offset: u64, data: &mut [u8]) -> bool {
        let Some(src) = self.range(offset, data.len()) else {
            return false;
        };
        let aligned = (src as usize).is_multiple_of(data.len().max(1));
        // SAFETY: `src .. src + data.len()` lies inside the live, readable
        // mapping (checked by `range`); the wide loads are naturally aligned.
        unsafe {
            match data.len() {
                2 if aligned => {
                    data.copy_from_slice(&src.cast::<u16>().read_volatile().to_ne_bytes())
                }
                4 if aligned => {
                    data.copy_from_slice(&src.cast::<u32>().read_volatile().to_ne_bytes())
                }
                8 if aligned => {
                    data.copy_from_slice(&src.cast::<u64>().read_volatile().to_ne_bytes())
                }
                _ => {
                    for (i, byte) in data.iter_mut().enumerate() {
                        *byte = src.add(i).read_volatile();
                    }
                }
            }
        }
        true
    }

    /// Volatile copy into the mapping (which must be writable there);
    /// `false` if out of range.
    fn write(&self, offset: u64, data: &[u8]) -> bool {
        let Some(dst) = self.range(offset, data.len()) else {
            return false;
        };
        let aligned = (dst as usize).is_multiple_of(data.len().max(1));
        let mut b8 = [0u8; 8];
        let n = data.len().min(8);
        b8[..n].copy_from_slice(&data[..n]);
        // SAFETY: `dst .. dst + data.len()` lies inside the live mapping
        // (checked by `range`), which callers only write where it is mapped
        // writable (the host view); the wide stores are naturally aligned.
        unsafe {
            match data.len() {
                2 if aligned => dst
                    .cast::<u16>()
                    .write_volatile(u16::from_ne_bytes([b8[0], b8[1]])),
                4 if aligned => dst
                    .cast::<u32>()
                    .write_volatile(u32::from_ne_bytes([b8[0], b8[1], b8[2], b8[3]])),
                8 if aligned => dst.cast::<u64>().write_volatile(u64::from_ne_bytes(b8)),
                _ => {
                    for (i, byte) in data.iter().enumerate() {
                        dst.add(i).write_volatile(*byte);
                    }
                }
            }
        }
        true
    }

    fn read_u32(&self, offset: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        self.read(offset, &mut b).then(|| u32::from_le_bytes(b))
    }

    fn write_u32(&self, offset: u64, value: u32) -> bool {
        self.write(offset, &value.to_le_bytes())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping this value created and
        // owns; nothing refers into it once the owner is dropped (KVM slots
        // over the guest view are removed by the mapper, which keeps the
        // region alive until then).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

#[derive(Clone, Copy)]
enum Lock {
    Read,
    Write,
    Unlock,
}

fn flock_for(kind: Lock, byte: u64) -> libc::flock {
    // SAFETY: `flock` is plain data for which all zeroes is a valid value
    // (OFD locks require `l_pid` to be 0).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = match kind {
        Lock::Read => libc::F_RDLCK,
        Lock::Write => libc::F_WRLCK,
        Lock::Unlock => libc::F_UNLCK,
    } as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = byte as libc::off_t;
    fl.l_len = 1;
    fl
}

/// Sets an OFD lock on one byte. With `wait` false, `Ok(false)` means
/// another open file description holds a conflicting lock.
fn ofd_lock(file: &File, kind: Lock, byte: u64, wait: bool) -> io::Result<bool> {
    let mut fl = flock_for(kind, byte);
    let cmd = if wait {
        libc::F_OFD_SETLKW
    } else {
        libc::F_OFD_SETLK
    };
    loop {
        // SAFETY: `fl` is an initialised flock that outlives the call; the
        // descriptor is open for as long as `file` lives.
        let ret = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut fl as *mut libc::flock) };
        if ret == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::EACCES) if !wait => return Ok(false),
            _ => return Err(err),
        }
    }
}

/// Whether another open file description holds a lock on `byte`.
fn locked_elsewhere(file: &File, byte: u64) -> io::Result<bool> {
    let mut fl = flock_for(Lock::Write, byte);
    // SAFETY: as in `ofd_lock`; F_OFD_GETLK only writes into `fl`.
    let ret = unsafe {
        libc::fcntl(
            file.as_raw_fd(),
            libc::F_OFD_GETLK,
            &mut fl as *mut libc::flock,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

/// Whether `path` still names the file `file` has open.
fn still_linked(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The effective uid of this process.
pub(super) fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// One peer's attachment to a shared ivshmem region. Dropping it resets
/// this peer's state entry and, for the last member, removes the file.
pub struct IvshmemRegion {
    name: String,
    dir: PathBuf,
    path: PathBuf,
    peer_id: u16,
    layout: RegionLayout,
    host: Mapping,
    guest: Mapping,
    reset_peers: Vec<u16>,
    /// Holds the OFD locks; closed (releasing them) after `drop` has run.
    file: File,
}

impl fmt::Debug for IvshmemRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IvshmemRegion")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("peer_id", &self.peer_id)
            .field("layout", &self.layout)
            .finish()
    }
}

impl IvshmemRegion {
    /// Joins (creating if needed) region `cfg.region` in `dir` as peer
    /// `cfg.peer_id`.
    ///
    /// Errors: [`IvshmemError::LayoutMismatch`] if live peers use another
    /// layout, [`IvshmemError::PeerIdInUse`] if a live process already is
    /// this peer, [`IvshmemError::Foreign`] if the file is not ours,
    /// [`IvshmemError::Io`] for system errors.
    pub fn open(dir: &Path, cfg: &IvshmemConfig) -> Result<Self, IvshmemError> {
        let name = cfg.region.clone();
        if !valid_region_name(&name) {
            return Err(IvshmemError::InvalidConfig(format!(
                "region name {name:?} must be 1-32 characters of [A-Za-z0-9_-]"
            )));
        }
        let layout = RegionLayout::new(cfg.max_peers, cfg.rw_size, cfg.output_size)
            .map_err(|e| IvshmemError::InvalidConfig(format!("region {name:?}: {e}")))?;
        if cfg.peer_id >= cfg.max_peers {
            return Err(IvshmemError::InvalidConfig(format!(
                "region {name:?}: peer_id {} is not below max_peers {}",
                cfg.peer_id, cfg.max_peers
            )));
        }
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page != SECTION_ALIGN as libc::c_long {
            return Err(IvshmemError::InvalidConfig(format!(
                "host page size {page} is not supported (ivshmem sections are 4 KiB pages)"
            )));
        }
        // The runtime directory may not exist yet (e.g. no /dev/shm, or a
        // fresh CELLVM_RUNTIME_DIR): create it owner-only.
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| IvshmemError::Io {
                    region: name.clone(),
                    what: "create the runtime directory",
                    path: dir.to_path_buf(),
                    source,
                })?;
        }
        let path = dir.join(region_file_name(&name));
        let len = usize::try_from(layout.shared_size()).map_err(|_| {
            IvshmemError::InvalidConfig(format!("region {name:?} is too large for this host"))
        })?;
        let io_err = |what: &'static str, source: io::Error| IvshmemError::Io {
            region: name.clone(),
            what,
            path: path.clone(),
            source,
        };

        for _ in 0..OPEN_ATTEMPTS {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|e| match e.raw_os_error() {
                    Some(libc::ELOOP) => IvshmemError::Foreign {
                        region: name.clone(),
                        path: path.clone(),
                        reason: "is a symbolic link".into(),
                    },
                    _ => io_err("cannot open", e),
                })?;
            Self::check_ours(&file, &name, &path)?;
            ofd_lock(&file, Lock::Write, JOIN_LOCK, true).map_err(|e| io_err("cannot lock", e))?;
            if !still_linked(&file, &path) {
                // The last peer removed it between our open and our lock.
                continue;
            }
            let alone = ofd_lock(&file, Lock::Write, MEMBERS_LOCK, false)
                .map_err(|e| io_err("cannot lock", e))?;
            if alone {
                file.set_len(0)
                    .and_then(|()| file.set_len(layout.file_size()))
                    .and_then(|()| file.write_all_at(&layout.encode_header(), 0))
                    .map_err(|e| io_err("cannot initialise", e))?;
            } else {
                Self::check_layout(&file, &name, &path, &layout)?;
            }
            let peer_byte = PEER_LOCK_BASE + u64::from(cfg.peer_id);
            if !ofd_lock(&file, Lock::Write, peer_byte, false)
                .map_err(|e| io_err("cannot lock", e))?
            {
                return Err(IvshmemError::PeerIdInUse {
                    region: name.clone(),
                    peer_id: cfg.peer_id,
                    path: path.clone(),
                });
            }
            // Atomically downgrades our write lock if we were alone; other
            // members only ever hold read locks on this byte while we hold
            // the join lock, so this cannot fail.
            if !ofd_lock(&file, Lock::Read, MEMBERS_LOCK, false)
                .map_err(|e| io_err("cannot lock", e))?
            {
                return Err(io_err(
                    "cannot lock",
                    io::Error::from(io::ErrorKind::WouldBlock),
                ));
            }
            let host =
                Mapping::new(&file, HEADER_SIZE, len).map_err(|e| io_err("cannot map", e))?;
            let guest =
                Mapping::new(&file, HEADER_SIZE, len).map_err(|e| io_err("cannot map", e))?;
            for (offset, run, read_only) in layout.guest_runs(cfg.peer_id) {
                if read_only {
                    guest
                        .protect_read_only(offset, run)
                        .map_err(|e| io_err("cannot protect the mapping of", e))?;
                }
            }
            let reset_peers = Self::reset_stale_states(&file, &host, &layout, cfg.peer_id)
                .map_err(|e| io_err("cannot query locks on", e))?;
            ofd_lock(&file, Lock::Unlock, JOIN_LOCK, false)
                .map_err(|e| io_err("cannot unlock", e))?;
            log::debug!(
                "ivshmem region {name:?}: joined {} as peer {} ({layout}){}",
                path.display(),
                cfg.peer_id,
                if alone { ", first member" } else { "" }
            );
            return Ok(IvshmemRegion {
                name,
                dir: dir.to_path_buf(),
                path,
                peer_id: cfg.peer_id,
                layout,
                host,
                guest,
                reset_peers,
                file,
            });
        }
        Err(io_err(
            "kept disappearing while opening",
            io::Error::other("other peers left and removed it repeatedly"),
        ))
    }

    fn check_ours(file: &File, region: &str, path: &Path) -> Result<(), IvshmemError> {
        let foreign = |reason: String| IvshmemError::Foreign {
            region: region.to_string(),
            path: path.to_path_buf(),
            reason,
        };
        let meta = file.metadata().map_err(|e| IvshmemError::Io {
            region: region.to_string(),
            what: "cannot stat",
            path: path.to_path_buf(),
            source: e,
        })?;
        if !meta.file_type().is_file() {
            return Err(foreign("is not a regular file".into()));
        }
        let uid = effective_uid();
        if meta.uid() != uid {
            return Err(foreign(format!(
                "belongs to uid {}, not to this user (uid {uid})",
                meta.uid()
            )));
        }
        if meta.mode() & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| IvshmemError::Io {
                    region: region.to_string(),
                    what: "cannot chmod",
                    path: path.to_path_buf(),
                    source: e,
                })?;
        }
        Ok(())
    }

    fn check_layout(
        file: &File,
        region: &str,
        path: &Path,
        requested: &RegionLayout,
    ) -> Result<(), IvshmemError> {
        let corrupt = |reason: String| IvshmemError::CorruptRegion {
            region: region.to_string(),
            path: path.to_path_buf(),
            reason,
        };
        let mut header = [0u8; HEADER_LEN];
        file.read_exact_at(&mut header, 0)
            .map_err(|e| corrupt(format!("cannot read the header: {e}")))?;
        let existing = RegionLayout::decode_header(&header).map_err(corrupt)?;
        if existing != *requested {
            return Err(IvshmemError::LayoutMismatch {
                region: region.to_string(),
                path: path.to_path_buf(),
                existing,
                requested: *requested,
            });
        }
        let size = file
            .metadata()
            .map_err(|e| corrupt(format!("cannot stat: {e}")))?
            .len();
        if size != existing.file_size() {
            return Err(corrupt(format!(
                "file is {size:#x} bytes, its header says {:#x}",
                existing.file_size()
            )));
        }
        Ok(())
    }

    /// Resets this peer's state entry and those of peers that are not
    /// members (left over from a crash). Returns the peers whose entry
    /// changed.
    fn reset_stale_states(
        file: &File,
        host: &Mapping,
        layout: &RegionLayout,
        me: u16,
    ) -> io::Result<Vec<u16>> {
        let mut reset = Vec::new();
        for peer in 0..layout.max_peers {
            let at = u64::from(peer) * 4;
            if host.read_u32(at).unwrap_or(0) == 0 {
                continue;
            }
            if peer == me || !locked_elsewhere(file, PEER_LOCK_BASE + u64::from(peer))? {
                host.write_u32(at, 0);
                reset.push(peer);
            }
        }
        Ok(reset)
    }

    /// Region name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The runtime directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The region file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This peer's id.
    pub fn peer_id(&self) -> u16 {
        self.peer_id
    }

    /// The layout.
    pub fn layout(&self) -> &RegionLayout {
        &self.layout
    }

    /// Peers whose state entry was reset to 0 when this peer joined (this
    /// peer itself after a crash, peers that died without leaving).
    pub fn reset_peers(&self) -> &[u16] {
        &self.reset_peers
    }

    /// `peer`'s entry in the state table.
    pub fn state(&self, peer: u16) -> Option<u32> {
        if peer >= self.layout.max_peers {
            return None;
        }
        self.host.read_u32(u64::from(peer) * 4)
    }

    /// Sets this peer's entry in the state table (release ordering: shared
    /// memory written before is visible to whoever sees the new state).
    pub(crate) fn set_own_state(&self, value: u32) {
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        self.host.write_u32(u64::from(self.peer_id) * 4, value);
    }

    /// Sets any peer's state entry, bypassing the rules (tests simulate
    /// crashed peers with it).
    #[cfg(test)]
    pub(crate) fn poke_state(&self, peer: u16, value: u32) {
        self.host.write_u32(u64::from(peer) * 4, value);
    }

    /// Reads shared memory at `offset` (BAR2 offset); `false`, with `data`
    /// untouched, if the range is not inside the shared memory.
    pub fn read(&self, offset: u64, data: &mut [u8]) -> bool {
        self.host.read(offset, data)
    }

    /// Writes shared memory at `offset` as this peer's guest may: only
    /// inside the R/W section or this peer's own output section. Returns
    /// `false`, writing nothing, otherwise.
    pub fn write(&self, offset: u64, data: &[u8]) -> bool {
        self.layout
            .writable_by(self.peer_id, offset, data.len() as u64)
            && self.host.write(offset, data)
    }

    /// Host address and length of the whole guest view (what BAR2 shows
    /// from offset 0; the tail of BAR2 past it is not memory).
    pub fn guest_memory(&self) -> (u64, u64) {
        (self.guest.addr_at(0), self.guest.len as u64)
    }

    /// The guest view split into runs of equal access, to register as KVM
    /// memory slots at BAR2 base + [`GuestSlot::offset`]; at most
    /// [`MAX_GUEST_SLOTS`]. The memory stays mapped while this region lives.
    pub fn guest_slots(&self) -> Vec<GuestSlot> {
        self.layout
            .guest_runs(self.peer_id)
            .into_iter()
            .map(|(offset, len, read_only)| GuestSlot {
                offset,
                len,
                host_addr: self.guest.addr_at(offset),
                read_only,
            })
            .collect()
    }
}

impl Drop for IvshmemRegion {
    fn drop(&mut self) {
        self.set_own_state(0);
        let leave = || -> io::Result<bool> {
            ofd_lock(&self.file, Lock::Write, JOIN_LOCK, true)?;
            // Our read lock converts to a write lock only if no other
            // member holds one: then we are the last.
            let last = ofd_lock(&self.file, Lock::Write, MEMBERS_LOCK, false)?;
            if last && still_linked(&self.file, &self.path) {
                std::fs::remove_file(&self.path)?;
            }
            Ok(last)
        };
        match leave() {
            Ok(true) => log::debug!(
                "ivshmem region {:?}: last peer left, removed {}",
                self.name,
                self.path.display()
            ),
            Ok(false) => {}
            Err(e) => log::warn!(
                "ivshmem region {:?}: leaving {}: {e}",
                self.name,
                self.path.display()
            ),
        }
        // `file` closes after this, releasing every lock we hold.
    }
}
