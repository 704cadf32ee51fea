//! Cross-process notifications: one Unix datagram socket per peer.
//!
//! Peer `p` of region `r` binds `<runtime dir>/cellvm-ivshmem-<r>.<p>.sock`
//! (mode 0600, so only the same user can send to it) and sends from that
//! same socket, so a receiver knows which socket a datagram came from and
//! rejects one whose claimed source peer does not match the sender's socket
//! name. Sockets are non-blocking: a vCPU writing a doorbell never waits.
//!
//! A notification is one 16-byte datagram ([`Message`], little endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `CVDB` |
//! | 4 | 2 | kind: 1 doorbell, 2 state change |
//! | 6 | 2 | source peer id |
//! | 8 | 2 | target peer id |
//! | 10 | 2 | vector (doorbell; 0 for a state change) |
//! | 12 | 4 | new state (state change; 0 for a doorbell) |
//!
//! Anything else (other lengths, magic, kinds, non-zero unused fields,
//! source not another peer of the region, target not the receiver, vector
//! not below [`VECTORS`], sender socket not the source peer's) is rejected,
//! counted and logged (rate-limited); nothing a datagram contains can panic
//! the receiver.
//!
//! The receiving end in the VMM's control loop is
//! [`IvshmemSubscriber`](super::device::IvshmemSubscriber), next to the
//! device it interrupts; this file knows nothing of the device.

use super::region::{effective_uid, IvshmemRegion};
use super::IvshmemError;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use thiserror::Error;

/// Length of every datagram.
pub const MESSAGE_LEN: usize = 16;
/// First four bytes of every datagram.
pub const MESSAGE_MAGIC: [u8; 4] = *b"CVDB";
/// Interrupt vectors a doorbell may name: one (the device interrupts
/// through INTx).
pub const VECTORS: u16 = 1;

/// File name of `peer`'s doorbell socket in region `region`.
pub fn socket_file_name(region: &str, peer: u16) -> String {
    format!("cellvm-ivshmem-{region}.{peer}.sock")
}

/// What a datagram announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum MessageKind {
    /// The source wrote `target << 16 | vector` to its Doorbell register.
    Doorbell = 1,
    /// The source's state changed (the new value is already in the state
    /// table).
    StateChange = 2,
}

/// A notification from one peer to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// Doorbell or state change.
    pub kind: MessageKind,
    /// Sending peer.
    pub source: u16,
    /// Receiving peer.
    pub target: u16,
    /// Interrupt vector (doorbells).
    pub vector: u16,
    /// New state (state changes; informational, the state table is
    /// authoritative).
    pub state: u32,
}

/// Why a datagram was rejected.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MessageError {
    /// Wrong size (longer ones are truncated to 17 bytes when read).
    #[error("{0} bytes, expected {MESSAGE_LEN}")]
    Length(usize),
    /// Not our magic.
    #[error("bad magic")]
    Magic,
    /// Unknown kind.
    #[error("unknown kind {0}")]
    Kind(u16),
    /// A field unused by this kind is not zero.
    #[error("unused field not zero")]
    Reserved,
    /// The source is not another peer of this region.
    #[error("source peer {0} is not another peer of this region")]
    Source(u16),
    /// The target is not the receiver.
    #[error("target peer {0} is not this peer")]
    Target(u16),
    /// No such interrupt vector.
    #[error("vector {0} does not exist (the device has {VECTORS})")]
    Vector(u16),
    /// The datagram did not come from the source peer's socket.
    #[error("claims peer {source_peer} but was sent from {sender}")]
    Sender {
        /// The claimed source.
        source_peer: u16,
        /// The sending socket's name.
        sender: String,
    },
}

impl Message {
    /// A doorbell from `source` ringing `vector` of `target`.
    pub fn doorbell(source: u16, target: u16, vector: u16) -> Self {
        Message {
            kind: MessageKind::Doorbell,
            source,
            target,
            vector,
            state: 0,
        }
    }

    /// `source`'s state changed to `state`; tells `target`.
    pub fn state_change(source: u16, target: u16, state: u32) -> Self {
        Message {
            kind: MessageKind::StateChange,
            source,
            target,
            vector: 0,
            state,
        }
    }

    /// The wire format.
    pub fn encode(&self) -> [u8; MESSAGE_LEN] {
        let mut b = [0u8; MESSAGE_LEN];
        b[0..4].copy_from_slice(&MESSAGE_MAGIC);
        b[4..6].copy_from_slice(&(self.kind as u16).to_le_bytes());
        b[6..8].copy_from_slice(&self.source.to_le_bytes());
        b[8..10].copy_from_slice(&self.target.to_le_bytes());
        b[10..12].copy_from_slice(&self.vector.to_le_bytes());
        b[12..16].copy_from_slice(&self.state.to_le_bytes());
        b
    }

    /// Parses the wire format (structure only; see [`check`](Self::check)).
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let b: &[u8; MESSAGE_LEN] = bytes
            .try_into()
            .map_err(|_| MessageError::Length(bytes.len()))?;
        if b[0..4] != MESSAGE_MAGIC {
            return Err(MessageError::Magic);
        }
        let u16_at = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
        let kind = match u16_at(4) {
            1 => MessageKind::Doorbell,
            2 => MessageKind::StateChange,
            other => return Err(MessageError::Kind(other)),
        };
        let msg = Message {
            kind,
            source: u16_at(6),
            target: u16_at(8),
            vector: u16_at(10),
            state: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        };
        let unused_set = match kind {
            MessageKind::Doorbell => msg.state != 0,
            MessageKind::StateChange => msg.vector != 0,
        };
        if unused_set {
            return Err(MessageError::Reserved);
        }
        Ok(msg)
    }

    /// Checks the message is for peer `me` of a region of `max_peers`, from
    /// another peer, naming an existing vector.
    pub fn check(&self, me: u16, max_peers: u16) -> Result<(), MessageError> {
        if self.source >= max_peers || self.source == me {
            return Err(MessageError::Source(self.source));
        }
        if self.target != me {
            return Err(MessageError::Target(self.target));
        }
        if self.kind == MessageKind::Doorbell && self.vector >= VECTORS {
            return Err(MessageError::Vector(self.vector));
        }
        Ok(())
    }
}

/// What became of a sent notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Queued on the target's socket.
    Sent,
    /// The target is not running (no socket, or a stale one).
    Absent,
    /// The target's queue is full: it has notifications pending, which will
    /// interrupt it after this one would have, so dropping is harmless.
    Busy,
}

/// A peer's bound, non-blocking doorbell socket. Dropping it (or
/// [`unlink`](Self::unlink)) removes the socket file.
pub struct DoorbellSocket {
    socket: UnixDatagram,
    dir: PathBuf,
    region: String,
    peer_id: u16,
    max_peers: u16,
    path: PathBuf,
    /// (device, inode) of the socket file we bound, so we never unlink a
    /// successor's socket.
    identity: (u64, u64),
    unlinked: AtomicBool,
}

impl std::fmt::Debug for DoorbellSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DoorbellSocket")
            .field("path", &self.path)
            .field("peer_id", &self.peer_id)
            .finish()
    }
}

impl AsRawFd for DoorbellSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// Creates a datagram socket bound at `path` whose file is mode 0600 from
/// the start: Linux gives the socket file the socket inode's mode (minus
/// the umask), which `fchmod` before `bind` sets.
fn bind_private(path: &Path) -> io::Result<UnixDatagram> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data for which all zeroes is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let socket = UnixDatagram::unbound()?;
    // SAFETY: fchmod on a descriptor `socket` owns; no memory is passed.
    if unsafe { libc::fchmod(socket.as_raw_fd(), 0o600) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1;
    // SAFETY: `addr` is an initialised sockaddr_un holding a NUL-terminated
    // path (checked to fit above) and `len` does not exceed its size; the
    // descriptor is owned by `socket`.
    let ret = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast::<libc::sockaddr>(),
            len as libc::socklen_t,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

impl DoorbellSocket {
    /// Binds this peer's socket. The caller's [`IvshmemRegion`] holds the
    /// region's lock for this peer id, so a file already at the path is a
    /// leftover of a crashed run of this peer and is removed first (if it
    /// is a socket of ours; anything else is [`IvshmemError::Foreign`]).
    pub fn bind(region: &IvshmemRegion) -> Result<Self, IvshmemError> {
        let name = region.name().to_string();
        let path = region.dir().join(socket_file_name(&name, region.peer_id()));
        if path.as_os_str().len() >= 108 {
            return Err(IvshmemError::PathTooLong(path));
        }
        let io_err = |what: &'static str, source: io::Error| IvshmemError::Io {
            region: name.clone(),
            what,
            path: path.clone(),
            source,
        };
        match std::fs::symlink_metadata(&path) {
            Ok(meta) => {
                let foreign = |reason: String| IvshmemError::Foreign {
                    region: name.clone(),
                    path: path.clone(),
                    reason,
                };
                if !meta.file_type().is_socket() {
                    return Err(foreign("is not a socket".into()));
                }
                if meta.uid() != effective_uid() {
                    return Err(foreign(format!("belongs to uid {}", meta.uid())));
                }
                std::fs::remove_file(&path).map_err(|e| io_err("cannot remove stale socket", e))?;
                log::info!(
                    "ivshmem region {name:?}: removed stale socket {}",
                    path.display()
                );
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("cannot stat", e)),
        }
        let socket = bind_private(&path).map_err(|e| io_err("cannot bind", e))?;
        let finish = || -> io::Result<(u64, u64)> {
            socket.set_nonblocking(true)?;
            let meta = std::fs::symlink_metadata(&path)?;
            if meta.mode() & 0o077 != 0 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            }
            Ok((meta.dev(), meta.ino()))
        };
        let identity = match finish() {
            Ok(identity) => identity,
            Err(e) => {
                // We bound it a moment ago: nobody else's file.
                let _ = std::fs::remove_file(&path);
                return Err(io_err("cannot set up", e));
            }
        };
        Ok(DoorbellSocket {
            socket,
            dir: region.dir().to_path_buf(),
            region: name,
            peer_id: region.peer_id(),
            max_peers: region.layout().max_peers,
            path,
            identity,
            unlinked: AtomicBool::new(false),
        })
    }

    /// The socket file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Name of the region this socket belongs to.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// This peer's id.
    pub fn peer_id(&self) -> u16 {
        self.peer_id
    }

    /// Where `peer`'s socket lives.
    pub fn peer_path(&self, peer: u16) -> PathBuf {
        self.dir.join(socket_file_name(&self.region, peer))
    }

    /// Sends `msg` to `msg.target`'s socket without blocking. An absent or
    /// busy target is an outcome, not an error.
    pub fn send(&self, msg: &Message) -> io::Result<SendOutcome> {
        self.send_raw(msg.target, &msg.encode())
    }

    /// Sends raw bytes to `target`'s socket (tests send malformed ones).
    pub(crate) fn send_raw(&self, target: u16, bytes: &[u8]) -> io::Result<SendOutcome> {
        let to = self.peer_path(target);
        loop {
            match self.socket.send_to(bytes, &to) {
                Ok(_) => return Ok(SendOutcome::Sent),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::ENOENT) | Some(libc::ECONNREFUSED) => {
                        return Ok(SendOutcome::Absent)
                    }
                    Some(libc::EAGAIN) | Some(libc::ENOBUFS) => return Ok(SendOutcome::Busy),
                    _ => return Err(e),
                },
            }
        }
    }

    /// Wakes this socket's own subscriber (an empty datagram), so it notices
    /// that its device is gone and closes the socket.
    pub(crate) fn wake(&self) {
        if !self.unlinked.load(Ordering::SeqCst) {
            let _ = self.socket.send_to(&[], &self.path);
        }
    }

    /// Receives one datagram: `Ok(None)` if none is pending, else the
    /// validated message or why it was rejected.
    pub fn receive(&self) -> io::Result<Option<Result<Message, MessageError>>> {
        let mut buf = [0u8; MESSAGE_LEN + 1];
        loop {
            match self.socket.recv_from(&mut buf) {
                Ok((n, addr)) => {
                    let bytes = buf.get(..n).unwrap_or(&buf);
                    return Ok(Some(self.validate(bytes, addr.as_pathname())));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Validates a datagram received from `sender`.
    pub fn validate(&self, bytes: &[u8], sender: Option<&Path>) -> Result<Message, MessageError> {
        let msg = Message::decode(bytes)?;
        msg.check(self.peer_id, self.max_peers)?;
        let expected = socket_file_name(&self.region, msg.source);
        match sender.and_then(Path::file_name) {
            Some(n) if n == OsStr::new(&expected) => Ok(msg),
            _ => Err(MessageError::Sender {
                source_peer: msg.source,
                sender: sender.map_or_else(
                    || "an unnamed socket".to_string(),
                    |p| p.display().to_string(),
                ),
            }),
        }
    }

    /// Removes the socket file (once; only if it is still ours). Nobody can
    /// send to this socket afterwards.
    pub fn unlink(&self) {
        if self.unlinked.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.identity {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    log::warn!("ivshmem: cannot remove {}: {e}", self.path.display());
                }
            }
        }
    }
}

impl Drop for DoorbellSocket {
    fn drop(&mut self) {
        self.unlink();
    }
}
