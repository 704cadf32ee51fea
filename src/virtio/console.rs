//! virtio-console (virtio 1.2 5.3) with a single port and no multiport or
//! emergency-write features: queue 0 is receiveq (host → guest), queue 1 is
//! transmitq (guest → host).
//!
//! The host side is one of:
//! - [`ConsoleHost::Stdout`]: output to cellvm's stdout, no input;
//! - [`ConsoleHost::File`]: output appended to a file, no input;
//! - [`ConsoleHost::Socket`]: cellvm listens on a Unix stream socket; one
//!   client at a time gets the output and its input goes to the guest. Output
//!   while no client is connected (or while the client does not read) is
//!   dropped; a client connecting while another is connected waits until
//!   that one disconnects, then replaces it.
//! - [`ConsoleHost::Pty`]: cellvm allocates a pseudo-terminal in raw mode
//!   and points a symlink at its slave side; whatever opens it talks to the
//!   guest. cellvm holds the slave open itself, so output written while no
//!   one reads is kept in the terminal's buffer (up to its size, then
//!   dropped) instead of being lost, and the master never reports hang-up.

use super::{
    complete, gather, next_valid_request, reject, scatter, VirtioBackend, VirtioError,
    VIRTIO_F_VERSION_1,
};
use crate::ratelimit::RateLimiter;
use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

/// Queue size offered to the driver.
pub const QUEUE_SIZE: u16 = 256;
/// Host input buffered while the guest has no receive buffers.
pub const MAX_PENDING_INPUT: usize = 64 * 1024;
const RX: usize = 0;
const TX: usize = 1;

/// Where a console's host side is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleHost {
    /// cellvm's standard output (output only).
    Stdout,
    /// A file, created if missing, appended to (output only).
    File(PathBuf),
    /// A Unix stream socket cellvm listens on (output and input). A stale
    /// socket file at the path is replaced; a live one (something accepts
    /// connections on it) is refused.
    Socket(PathBuf),
    /// A pseudo-terminal whose slave the symlink at this path names (output
    /// and input). An existing symlink at the path is replaced.
    Pty(PathBuf),
}

enum Host {
    Out(Box<dyn Write + Send>),
    Socket {
        listener: UnixListener,
        client: Option<UnixStream>,
        /// The socket file bound (path, device, inode), removed on drop if
        /// it is still this one.
        bound: (PathBuf, u64, u64),
    },
    Pty {
        master: File,
        /// Held open so the master never sees a hang-up.
        _slave: File,
        /// The slave's path (what `link` points at).
        slave_path: PathBuf,
        link: PathBuf,
    },
}

/// Opens a raw-mode pseudo-terminal: (master, slave, slave path).
fn open_pty() -> std::io::Result<(File, File, PathBuf)> {
    use std::os::fd::FromRawFd;
    let last = std::io::Error::last_os_error;
    // SAFETY: posix_openpt has no memory-safety preconditions; the result is
    // checked before use.
    let fd = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK) };
    if fd < 0 {
        return Err(last());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let master = unsafe { File::from_raw_fd(fd) };
    // SAFETY: `fd` is a valid pty master (owned by `master`).
    if unsafe { libc::grantpt(fd) } != 0 || unsafe { libc::unlockpt(fd) } != 0 {
        return Err(last());
    }
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: `name` is a writable buffer of the length passed.
    if unsafe { libc::ptsname_r(fd, name.as_mut_ptr(), name.len()) } != 0 {
        return Err(last());
    }
    // SAFETY: ptsname_r wrote a NUL-terminated string into `name`.
    let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    let path = PathBuf::from(OsStr::from_bytes(path.to_bytes()));
    let slave = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&path)?;
    // SAFETY: termios is plain data; tcgetattr fills it for a valid tty fd.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `slave` is an open terminal; `t` is a valid termios.
    if unsafe { libc::tcgetattr(slave.as_raw_fd(), &mut t) } != 0 {
        return Err(last());
    }
    // SAFETY: `t` is a valid termios obtained above.
    unsafe { libc::cfmakeraw(&mut t) };
    // SAFETY: as above; TCSANOW applies the settings at once.
    if unsafe { libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &t) } != 0 {
        return Err(last());
    }
    Ok((master, slave, path))
}

/// The console device backend.
pub struct ConsoleBackend {
    what: String,
    host: Host,
    pending: VecDeque<u8>,
    queue_sizes: [u16; 2],
    log: RateLimiter,
}

impl ConsoleBackend {
    /// The same with queues of `size` descriptors (a power of two).
    pub fn with_queue_size(mut self, size: u16) -> Self {
        self.queue_sizes = [size; 2];
        self
    }

    /// Sets up the host side.
    pub fn open(host: &ConsoleHost) -> Result<Self, VirtioError> {
        let what = match host {
            ConsoleHost::Stdout => "stdout".to_string(),
            ConsoleHost::File(p) | ConsoleHost::Socket(p) | ConsoleHost::Pty(p) => {
                p.display().to_string()
            }
        };
        let err = |source| VirtioError::ConsoleHost {
            what: what.clone(),
            source,
        };
        let host = match host {
            ConsoleHost::Stdout => Host::Out(Box::new(std::io::stdout())),
            ConsoleHost::File(p) => Host::Out(Box::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(err)?,
            )),
            ConsoleHost::Socket(p) => {
                if let Ok(meta) = std::fs::symlink_metadata(p) {
                    if meta.file_type().is_socket() {
                        // Only a stale socket is replaced, never a live one.
                        if UnixStream::connect(p).is_ok() {
                            return Err(VirtioError::ConsoleSocketInUse(p.clone()));
                        }
                        std::fs::remove_file(p).map_err(err)?;
                    }
                }
                let listener = UnixListener::bind(p).map_err(err)?;
                listener.set_nonblocking(true).map_err(err)?;
                let meta = std::fs::symlink_metadata(p).map_err(err)?;
                Host::Socket {
                    listener,
                    client: None,
                    bound: (p.clone(), meta.dev(), meta.ino()),
                }
            }
            ConsoleHost::Pty(link) => {
                let (master, slave, path) = open_pty().map_err(err)?;
                if let Ok(meta) = std::fs::symlink_metadata(link) {
                    if meta.file_type().is_symlink() {
                        std::fs::remove_file(link).map_err(err)?;
                    }
                }
                std::os::unix::fs::symlink(&path, link).map_err(err)?;
                log::info!("virtio-console: {} -> {}", link.display(), path.display());
                Host::Pty {
                    master,
                    _slave: slave,
                    slave_path: path,
                    link: link.clone(),
                }
            }
        };
        Ok(ConsoleBackend {
            what,
            host,
            pending: VecDeque::new(),
            queue_sizes: [QUEUE_SIZE; 2],
            log: RateLimiter::new(10),
        })
    }

    /// A console whose output goes to `out` and which has no input (for
    /// embedding and tests).
    pub fn with_writer(name: &str, out: Box<dyn Write + Send>) -> Self {
        ConsoleBackend {
            what: name.to_string(),
            host: Host::Out(out),
            pending: VecDeque::new(),
            queue_sizes: [QUEUE_SIZE; 2],
            log: RateLimiter::new(10),
        }
    }

    /// Queues host input for the guest (in addition to the socket's).
    /// Bytes beyond [`MAX_PENDING_INPUT`] are dropped; returns how many were
    /// accepted.
    pub fn push_input(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(MAX_PENDING_INPUT - self.pending.len());
        self.pending.extend(&data[..n]);
        n
    }

    fn warn(&self, msg: std::fmt::Arguments<'_>) {
        if self.log.allow() {
            log::warn!("virtio-console {}: {msg}", self.what);
        }
    }

    /// Accepts a waiting client if none is connected.
    fn accept(&mut self) {
        let Host::Socket {
            listener, client, ..
        } = &mut self.host
        else {
            return;
        };
        if client.is_some() {
            return;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                if stream.set_nonblocking(true).is_ok() {
                    *client = Some(stream);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => {
                if self.log.allow() {
                    log::warn!("virtio-console {}: accept: {e}", self.what);
                }
            }
        }
    }

    /// Reads what the socket client sent, up to the pending limit.
    fn read_host(&mut self) {
        self.accept();
        if let Host::Pty { master, .. } = &mut self.host {
            let mut buf = [0u8; 4096];
            loop {
                let room = MAX_PENDING_INPUT - self.pending.len();
                if room == 0 {
                    break;
                }
                match master.read(&mut buf[..room.min(4096)]) {
                    Ok(0) => break,
                    Ok(n) => self.pending.extend(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            return;
        }
        let Host::Socket { client, .. } = &mut self.host else {
            return;
        };
        let mut buf = [0u8; 4096];
        while let Some(stream) = client.as_mut() {
            let room = MAX_PENDING_INPUT - self.pending.len();
            if room == 0 {
                break;
            }
            match stream.read(&mut buf[..room.min(4096)]) {
                Ok(0) => *client = None,
                Ok(n) => self.pending.extend(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => *client = None,
            }
        }
    }

    fn write_host(&mut self, data: &[u8]) {
        self.accept();
        let result = match &mut self.host {
            Host::Out(out) => out.write_all(data).and_then(|()| out.flush()),
            Host::Pty { master, .. } => master.write_all(data),
            Host::Socket { client, .. } => match client.as_mut() {
                None => Ok(()),
                Some(stream) => match stream.write_all(data) {
                    Err(e) if e.kind() != ErrorKind::WouldBlock => {
                        *client = None;
                        Err(e)
                    }
                    other => other,
                },
            },
        };
        if let Err(e) = result {
            self.warn(format_args!("output of {} bytes dropped: {e}", data.len()));
        }
    }

    fn fill_rx(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, VirtioError> {
        let mut used = false;
        while !self.pending.is_empty() {
            let Some(req) = next_valid_request(RX, queue, mem, &self.log, "console", &mut used)?
            else {
                break;
            };
            used = true;
            if req.readable().next().is_some() {
                reject(
                    RX,
                    queue,
                    mem,
                    req.head,
                    "device-readable buffer on the receive queue",
                    &self.log,
                    "console",
                )?;
                continue;
            }
            let n = (req.writable_len() as usize).min(self.pending.len());
            let data: Vec<u8> = self.pending.iter().take(n).copied().collect();
            let put = scatter(mem, req.writable(), 0, &data);
            self.pending.drain(..put);
            complete(RX, queue, mem, req.head, put as u32)?;
        }
        Ok(used)
    }

    fn drain_tx(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, VirtioError> {
        let mut used = false;
        let mut buf = vec![0u8; 4096];
        while let Some(req) = next_valid_request(TX, queue, mem, &self.log, "console", &mut used)? {
            used = true;
            if req.writable().next().is_some() {
                reject(
                    TX,
                    queue,
                    mem,
                    req.head,
                    "device-writable buffer on the transmit queue",
                    &self.log,
                    "console",
                )?;
                continue;
            }
            let total = req.readable_len();
            let mut done = 0u64;
            while done < total {
                let n = (total - done).min(buf.len() as u64) as usize;
                let got = gather(mem, req.readable(), done, &mut buf[..n]);
                if got == 0 {
                    break;
                }
                let chunk = buf[..got].to_vec();
                self.write_host(&chunk);
                done += got as u64;
            }
            complete(TX, queue, mem, req.head, 0)?;
        }
        Ok(used)
    }
}

impl VirtioBackend for ConsoleBackend {
    fn device_type(&self) -> u32 {
        virtio_bindings::virtio_ids::VIRTIO_ID_CONSOLE
    }

    fn device_features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    /// `struct virtio_console_config`: cols, rows, max_nr_ports, emerg_wr
    /// (only meaningful with features cellvm does not offer).
    fn config_space(&self) -> Vec<u8> {
        let mut c = vec![0u8; 12];
        c[4..8].copy_from_slice(&1u32.to_le_bytes());
        c
    }

    /// The host side (file, socket and its client, pty) is closed; output
    /// is discarded from now on, so a driver writing (hvc spins until its
    /// buffer comes back) is never stuck, and no input arrives.
    fn sever(&mut self) {
        self.host = Host::Out(Box::new(std::io::sink()));
        self.pending.clear();
    }

    fn process_queue(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<bool, VirtioError> {
        match index {
            RX => {
                self.read_host();
                self.fill_rx(queue, mem)
            }
            TX => self.drain_tx(queue, mem),
            _ => Ok(false),
        }
    }

    /// The pty master, the connected socket client or, while no client is
    /// connected, the listening socket.
    fn host_fds(&self) -> Vec<RawFd> {
        // Only fds that `process_host_input` drains: one left readable
        // would make the caller's poll spin. With the input buffer full,
        // input fds stay readable but nothing can be read: leave them out
        // until the guest takes some. While a client is connected, a new
        // one waits in the listener's backlog (it is not accepted), so the
        // listener is left out too until the client leaves.
        let room = self.pending.len() < MAX_PENDING_INPUT;
        match &self.host {
            Host::Out(_) => Vec::new(),
            Host::Pty { master, .. } => {
                if room {
                    vec![master.as_raw_fd()]
                } else {
                    Vec::new()
                }
            }
            Host::Socket {
                client: Some(c), ..
            } => {
                if room {
                    vec![c.as_raw_fd()]
                } else {
                    Vec::new()
                }
            }
            Host::Socket {
                listener,
                client: None,
                ..
            } => vec![listener.as_raw_fd()],
        }
    }

    fn process_host_input(
        &mut self,
        queues: &mut [Queue],
        mem: &GuestMemoryMmap,
    ) -> Result<bool, VirtioError> {
        self.read_host();
        match queues.get_mut(RX) {
            Some(q) if q.ready() => self.fill_rx(q, mem),
            _ => Ok(false),
        }
    }
}

impl Drop for ConsoleBackend {
    /// Removes the pty symlink (the terminal goes with the backend) or the
    /// socket file this backend bound, unless something else has replaced
    /// it since.
    fn drop(&mut self) {
        match &self.host {
            Host::Pty {
                link, slave_path, ..
            } => {
                if std::fs::read_link(link).is_ok_and(|t| &t == slave_path) {
                    let _ = std::fs::remove_file(link);
                }
            }
            Host::Socket {
                bound: (path, dev, ino),
                ..
            } => {
                let ours = std::fs::symlink_metadata(path)
                    .is_ok_and(|m| m.file_type().is_socket() && m.dev() == *dev && m.ino() == *ino);
                if ours {
                    let _ = std::fs::remove_file(path);
                }
            }
            Host::Out(_) => {}
        }
    }
}
