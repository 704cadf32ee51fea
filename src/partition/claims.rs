//! Claims: the resources of [`super::uses`] taken as host-wide locks by a
//! running cell, so that a second cell cannot start (or attach a device)
//! on what the first one holds.
//!
//! Specification:
//! - Claims live in a *claims directory* (the vmm passes
//!   `RUNTIME_DIR/claims`, a private directory). Every lock is an open file
//!   description lock (`F_OFD_SETLK`): it belongs to one open file, is never
//!   inherited, and goes when the file is closed, by drop or by the death of
//!   the process. cellvm never deletes a lock file (a file unlinked while
//!   locked would let a second cell lock a new file of the same name).
//! - Cell name: `name-NAME.lock`, write-locked. Its content is the cell's
//!   *record*: `cell NAME`, `pid PID`, then one line per claim
//!   (`cpu N exclusive|shared`, `image DEV:INO read-write|read-only PATH`),
//!   written as soon as the name is locked and rewritten in place whenever
//!   the claims change. Records are how a refusal names the running cells
//!   that hold a resource (never the cell being refused); a record whose
//!   lock nobody holds is stale and ignored. Images are identified by
//!   device and inode (`fstat` of the opened image), never by resolving
//!   paths: a claim may be taken on the control API's thread.
//! - Pinned host CPU N: `cpu-N.lock`, write-locked when exclusive,
//!   read-locked when `cpus.shared`: shared users coexist, anything else
//!   conflicts.
//! - Disk image: locks on the image file itself, with the bytes and rules
//!   of QEMU's image locking (`block/file-posix.c`), so cellvm and QEMU
//!   also respect each other: every user read-locks byte 100 (consistent
//!   read) and byte 201 (does not share write); a writer also read-locks
//!   byte 101 (write). A reader is refused if another open file holds
//!   byte 101 (a writer); a writer if another holds 101 or 201 (anyone).
//!   The locks are taken first and tested after, so two cells starting at
//!   once may both be refused, never both admitted.
//! - A refusal is a [`ClaimError::Held`] naming the resource and its
//!   holders (`cell a (pid 1234)`); everything claimed before it is
//!   released. Claims of a device attached at run time are released when
//!   it is detached.

use super::{device_uses, Mode, Resource, Use};
use crate::config::{CellConfig, DeviceConfig};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use thiserror::Error;

/// QEMU's lock byte for "holds consistent-read permission".
const BYTE_READ: i64 = 100;
/// QEMU's lock byte for "holds write permission".
const BYTE_WRITE: i64 = 101;
/// QEMU's lock byte for "does not share write permission".
const BYTE_NO_SHARED_WRITE: i64 = 201;

/// Why a claim failed.
#[derive(Debug, Error)]
pub enum ClaimError {
    /// Another cell (or process) holds the resource.
    #[error("{resource} ({field}) is in use by {holders}; {hint}")]
    Held {
        /// What was asked for.
        resource: Resource,
        /// The config field that asks for it.
        field: String,
        /// Who holds it, for the message.
        holders: String,
        /// What the user can do.
        hint: &'static str,
    },
    /// A handover from a cell that does not hold the image.
    #[error("{resource} ({field}) is not held by cell {from}: there is nothing to hand over")]
    NotHeldBy {
        /// The image.
        resource: Resource,
        /// The config field that names it.
        field: String,
        /// The cell that was to give it.
        from: String,
    },
    /// A lock file or image could not be opened, locked or written.
    #[error("claim {resource}: {}: {source}", crate::config::shown(path))]
    Io {
        /// What was being claimed.
        resource: Resource,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// One `struct flock` for an OFD lock of `len` bytes at `start`.
fn flock(kind: i32, start: i64, len: i64) -> libc::flock {
    // SAFETY: flock is plain data; all-zero is a valid value (l_pid must
    // be 0 for OFD locks).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start;
    fl.l_len = len;
    fl
}

/// Takes an OFD lock without waiting: `Ok(false)` when another open file
/// holds a conflicting one.
fn try_lock(file: &File, kind: i32, start: i64, len: i64) -> std::io::Result<bool> {
    let fl = flock(kind, start, len);
    // SAFETY: F_OFD_SETLK reads one valid flock struct; the fd is open.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(e),
    }
}

/// Whether another open file holds a lock that conflicts with a `kind`
/// lock of `len` bytes at `start` (locks of `file` itself never do).
fn held_by_other(file: &File, kind: i32, start: i64, len: i64) -> std::io::Result<bool> {
    let mut fl = flock(kind, start, len);
    // SAFETY: F_OFD_GETLK reads and writes one valid flock struct.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(i32::from(fl.l_type) != libc::F_UNLCK)
}

/// Opens (creating, mode 0600) the lock file `path`.
fn open_lock_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
}

/// A running cell as its record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The cell's name.
    pub cell: String,
    /// Its cellvm process.
    pub pid: u32,
    /// What it claims, one line each (`cpu 1 exclusive`, `image P read-only`).
    pub claims: Vec<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cell {} (pid {})", self.cell, self.pid)
    }
}

/// Parses a record; `None` if it is not one.
fn parse_record(text: &str) -> Option<Holder> {
    let mut lines = text.lines();
    let cell = lines.next()?.strip_prefix("cell ")?.to_string();
    let pid = lines.next()?.strip_prefix("pid ")?.parse().ok()?;
    Some(Holder {
        cell,
        pid,
        claims: lines.map(str::to_string).collect(),
    })
}

/// Every running cell with a record in `dir` (records whose lock is held),
/// sorted by name. Unreadable entries are skipped: this only explains.
pub fn running_cells(dir: &Path) -> Vec<Holder> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<Holder> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("name-") && name.ends_with(".lock")
        })
        .filter_map(|e| {
            let mut file = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(e.path())
                .ok()?;
            if !held_by_other(&file, libc::F_RDLCK, 0, 0).ok()? {
                return None;
            }
            let mut text = String::new();
            file.by_ref()
                .take(64 * 1024)
                .read_to_string(&mut text)
                .ok()?;
            parse_record(&text)
        })
        .collect();
    out.sort_by(|a, b| a.cell.cmp(&b.cell));
    out
}

/// What identifies a claimed resource in the records.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Name(String),
    Cpu(usize),
    /// An image's device and inode.
    Image(u64, u64),
}

impl Key {
    /// Whether a record line claims this resource.
    fn claimed_by(&self, line: &str) -> bool {
        match self {
            Key::Name(_) => false,
            Key::Cpu(c) => line.starts_with(&format!("cpu {c} ")),
            Key::Image(dev, ino) => line.starts_with(&format!("image {dev}:{ino} ")),
        }
    }
}

fn how(mode: Mode, exclusive: &'static str, shared: &'static str) -> &'static str {
    if mode == Mode::Shared {
        shared
    } else {
        exclusive
    }
}

/// Who other than cell `me` holds `key` according to the records in `dir`,
/// for a message about `resource`.
fn holders_of(dir: &Path, me: &str, resource: &Resource, key: &Key) -> String {
    let found: Vec<String> = holders(dir, me, key)
        .iter()
        .map(ToString::to_string)
        .collect();
    if found.is_empty() {
        match resource {
            Resource::Image(_) => "another process (not a cell of this runtime directory: \
                                   QEMU, or a cell run with another CELLVM_RUNTIME_DIR)"
                .to_string(),
            _ => "a cell that is stopping, or whose record is unreadable".to_string(),
        }
    } else {
        found.join(", ")
    }
}

fn hint(resource: &Resource) -> &'static str {
    match resource {
        Resource::Name(_) => "a cell with this name is already running",
        Resource::HostCpu(_) => {
            "pin another host CPU, or say cpus.shared = true in every cell that pins it"
        }
        Resource::Image(_) => {
            "use another image, or say read_only = true in every cell that uses it"
        }
    }
}

/// A disk image claimed by one device: the locks live on `file`.
#[derive(Debug)]
struct ImageClaim {
    line: String,
    file: File,
    /// The use it serves (for messages).
    used: Use,
    key: Key,
    /// Locked but not yet tested: a handover claim taken while the giving
    /// cell still holds the image ([`CellClaims::claim_device_from`]).
    pending: bool,
}

impl ImageClaim {
    /// Whether another open file holds what this claim excludes: a writer
    /// (byte 101) for anyone, anyone (byte 201) for a writer.
    fn others_hold(&self) -> std::io::Result<bool> {
        let mut held = held_by_other(&self.file, libc::F_WRLCK, BYTE_WRITE, 1)?;
        if self.used.mode == Mode::Exclusive {
            held |= held_by_other(&self.file, libc::F_WRLCK, BYTE_NO_SHARED_WRITE, 1)?;
        }
        Ok(held)
    }

    fn io_error(&self, path: &Path, source: std::io::Error) -> ClaimError {
        ClaimError::Io {
            resource: self.used.resource.clone(),
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Opens the image of `u` and takes its lock bytes, untested (pending).
fn lock_image(u: &Use, path: &Path) -> Result<ImageClaim, ClaimError> {
    let io = |source| ClaimError::Io {
        resource: u.resource.clone(),
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    let mut bytes = vec![BYTE_READ, BYTE_NO_SHARED_WRITE];
    if u.mode == Mode::Exclusive {
        bytes.push(BYTE_WRITE);
    }
    // Read locks: taken even while others hold theirs; the test after
    // decides (locks first, then the test: never two admitted at once).
    for b in bytes {
        try_lock(&file, libc::F_RDLCK, b, 1).map_err(io)?;
    }
    Ok(ImageClaim {
        line: format!(
            "image {}:{} {} {}",
            meta.dev(),
            meta.ino(),
            how(u.mode, "read-write", "read-only"),
            crate::config::shown(path)
        ),
        file,
        used: u.clone(),
        key: Key::Image(meta.dev(), meta.ino()),
        pending: true,
    })
}

/// Claims the image of `u` (a [`Resource::Image`] use) for cell `me`;
/// `dir` names holders.
fn claim_image(dir: &Path, me: &str, u: &Use, path: &Path) -> Result<ImageClaim, ClaimError> {
    let mut claim = lock_image(u, path)?;
    if claim.others_hold().map_err(|e| claim.io_error(path, e))? {
        return Err(held(dir, me, u, &claim.key));
    }
    claim.pending = false;
    Ok(claim)
}

/// The names of the running cells other than `me` whose records claim `key`.
fn holder_names(dir: &Path, me: &str, key: &Key) -> Vec<String> {
    holders(dir, me, key).into_iter().map(|h| h.cell).collect()
}

/// The running cells other than `me` whose records hold `key` (a name is
/// held by the cell of that name).
fn holders(dir: &Path, me: &str, key: &Key) -> Vec<Holder> {
    running_cells(dir)
        .into_iter()
        .filter(|h| h.cell != me)
        .filter(|h| match key {
            Key::Name(n) => &h.cell == n,
            _ => h.claims.iter().any(|c| key.claimed_by(c)),
        })
        .collect()
}

fn held(dir: &Path, me: &str, u: &Use, key: &Key) -> ClaimError {
    ClaimError::Held {
        resource: u.resource.clone(),
        field: u.field.clone(),
        holders: holders_of(dir, me, &u.resource, key),
        hint: hint(&u.resource),
    }
}

/// Everything a running cell holds. Dropping it releases every claim.
#[derive(Debug)]
pub struct CellClaims {
    dir: PathBuf,
    name: String,
    record: File,
    cpus: Vec<(String, File)>,
    /// Image claims by device id, in claim order.
    devices: Mutex<BTreeMap<String, Vec<ImageClaim>>>,
}

impl CellClaims {
    /// Claims `cell`'s name, pinned CPUs and its devices' images in `dir`
    /// (which must exist and be private), and writes its record.
    pub fn take(cell: &CellConfig, dir: &Path) -> Result<CellClaims, ClaimError> {
        let name_use = Use {
            resource: Resource::Name(cell.name.clone()),
            mode: Mode::Exclusive,
            field: "name".to_string(),
        };
        let record_path = dir.join(format!("name-{}.lock", cell.name));
        let io = |resource: &Resource, path: &Path| {
            let (resource, path) = (resource.clone(), path.to_path_buf());
            move |source| ClaimError::Io {
                resource,
                path,
                source,
            }
        };
        let record = open_lock_file(&record_path).map_err(io(&name_use.resource, &record_path))?;
        if !try_lock(&record, libc::F_WRLCK, 0, 0).map_err(io(&name_use.resource, &record_path))? {
            return Err(held(dir, "", &name_use, &Key::Name(cell.name.clone())));
        }
        let mut claims = CellClaims {
            dir: dir.to_path_buf(),
            name: cell.name.clone(),
            record,
            cpus: Vec::new(),
            devices: Mutex::new(BTreeMap::new()),
        };
        // The record is this cell's from now on: a refusal below must not
        // show the previous run's.
        claims.write_record()?;
        // The pinned CPUs only: `uses` would also resolve every image path,
        // which the device claims below do by opening the images.
        for u in super::cpu_uses(cell) {
            let Resource::HostCpu(c) = u.resource else {
                continue;
            };
            let path = dir.join(format!("cpu-{c}.lock"));
            let file = open_lock_file(&path).map_err(io(&u.resource, &path))?;
            let kind = if u.mode == Mode::Shared {
                libc::F_RDLCK
            } else {
                libc::F_WRLCK
            };
            if !try_lock(&file, kind, 0, 0).map_err(io(&u.resource, &path))? {
                return Err(held(dir, &cell.name, &u, &Key::Cpu(c)));
            }
            let line = format!("cpu {c} {}", how(u.mode, "exclusive", "shared"));
            claims.cpus.push((line, file));
        }
        // A reserved or disabled device holds no backing resource.
        for dev in cell.devices() {
            if dev.state() == crate::config::DeviceState::Okay {
                claims.claim_device(&dev)?;
            }
        }
        claims.write_record()?;
        Ok(claims)
    }

    /// Claims the images `dev` uses, under its id; on a refusal nothing of
    /// `dev` stays claimed. The record is rewritten.
    pub fn claim_device(&self, dev: &DeviceConfig) -> Result<(), ClaimError> {
        if self.confirm_pending(dev.id())? {
            return Ok(());
        }
        let mut taken = Vec::new();
        for u in device_uses(dev, dev.id()) {
            let Resource::Image(path) = &u.resource else {
                continue;
            };
            taken.push(claim_image(&self.dir, &self.name, &u, path)?);
        }
        if taken.is_empty() {
            return Ok(());
        }
        crate::sync::lock(&self.devices).insert(dev.id().to_string(), taken);
        self.write_record()
    }

    /// Takes the images of `dev` over from the running cell `from`, which
    /// still holds them: the locks are taken now (so no third process can
    /// claim the images once `from` lets go) and confirmed by the next
    /// [`claim_device`](Self::claim_device) of `dev`, which fails while
    /// anyone else still holds them. Refused if an image is held by anyone
    /// but `from`, or not held by `from` at all.
    pub fn claim_device_from(&self, dev: &DeviceConfig, from: &str) -> Result<(), ClaimError> {
        let mut taken = Vec::new();
        for u in device_uses(dev, dev.id()) {
            let Resource::Image(path) = &u.resource else {
                continue;
            };
            let claim = lock_image(&u, path)?;
            let holders = holder_names(&self.dir, &self.name, &claim.key);
            let others = claim.others_hold().map_err(|e| claim.io_error(path, e))?;
            if !others || holders.iter().all(|h| h != from) {
                return Err(ClaimError::NotHeldBy {
                    resource: u.resource.clone(),
                    field: u.field.clone(),
                    from: from.to_string(),
                });
            }
            if holders.len() > 1 {
                return Err(held(&self.dir, &self.name, &u, &claim.key));
            }
            taken.push(claim);
        }
        if taken.is_empty() {
            return Ok(());
        }
        crate::sync::lock(&self.devices).insert(dev.id().to_string(), taken);
        self.write_record()
    }

    /// Confirms the pending claims of device `id` (nobody else holds its
    /// images any more); whether it had any.
    fn confirm_pending(&self, id: &str) -> Result<bool, ClaimError> {
        let mut devices = crate::sync::lock(&self.devices);
        let Some(claims) = devices.get_mut(id).filter(|c| c.iter().any(|c| c.pending)) else {
            return Ok(false);
        };
        for c in claims.iter_mut().filter(|c| c.pending) {
            let path = match &c.used.resource {
                Resource::Image(p) => p.clone(),
                _ => PathBuf::new(),
            };
            if c.others_hold().map_err(|e| c.io_error(&path, e))? {
                return Err(held(&self.dir, &self.name, &c.used, &c.key));
            }
            c.pending = false;
        }
        Ok(true)
    }

    /// Releases the claims of device `id` (detached), and those of its
    /// parts (`id/...`: functions added to a running bridge). The record is
    /// rewritten; a failure to rewrite it is logged (the locks are gone).
    pub fn release_device(&self, id: &str) {
        let released = {
            let mut devices = crate::sync::lock(&self.devices);
            let before = devices.len();
            let part = format!("{id}/");
            devices.retain(|key, _| key != id && !key.starts_with(&part));
            devices.len() != before
        };
        if released {
            if let Err(e) = self.write_record() {
                log::warn!("{e}");
            }
        }
    }

    /// The record's lines after `cell` and `pid`.
    pub fn lines(&self) -> Vec<String> {
        let devices = crate::sync::lock(&self.devices);
        let images = devices.values().flatten().map(|c| c.line.clone());
        self.cpus
            .iter()
            .map(|(l, _)| l.clone())
            .chain(images)
            .collect()
    }

    fn write_record(&self) -> Result<(), ClaimError> {
        let mut text = format!("cell {}\npid {}\n", self.name, std::process::id());
        for line in self.lines() {
            text.push_str(&line);
            text.push('\n');
        }
        let path = self.dir.join(format!("name-{}.lock", self.name));
        let io = |source| ClaimError::Io {
            resource: Resource::Name(self.name.clone()),
            path: path.clone(),
            source,
        };
        self.record.set_len(0).map_err(io)?;
        self.record.write_all_at(text.as_bytes(), 0).map_err(io)
    }
}
