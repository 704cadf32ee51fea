//! The control API of a running cell: a Unix stream socket (owner-only, in
//! an owner-only runtime directory) speaking line-delimited JSON
//! ([`protocol`]).
//!
//! Concurrency: each connection is served on its own thread, at most
//! [`MAX_CONNECTIONS`] at a time (one more is told `busy` and closed).
//! Read-only requests (`status`, `devices`) are answered while a change
//! (`attach`, `detach`) waits for the guest; changes to one cell are
//! serialised by the cell (`vmm::hotplug`). Every request line must arrive
//! whole within [`DEFAULT_IDLE_TIMEOUT`] of the previous answer (a total
//! deadline, not one per read), so a client that trickles bytes cannot hold
//! a connection; a guest wait is bounded by
//! [`protocol::MAX_GUEST_TIMEOUT_MS`].

pub mod client;
pub mod endpoint;
pub mod handover;
pub mod line;
pub mod protocol;

use line::{LineError, LineReader};
use protocol::{parse_request, ApiError, ErrorKind, Response, MAX_REQUEST};
pub use protocol::{Reply, Request};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// How long a connection may wait between requests (or take to send one, or
/// to take an answer) before it is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once; one more is answered `busy` and closed.
pub const MAX_CONNECTIONS: usize = 16;

/// Errors setting up the API socket.
#[derive(Debug, Error)]
pub enum ApiSetupError {
    /// The runtime directory could not be created or secured.
    #[error("control socket directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The runtime directory exists but another user owns it, or others may
    /// write to it: a socket there could be replaced under us.
    #[error("control socket directory {path} is not safe: {why} (cellvm wants a directory owned by this user with mode 0700)")]
    UnsafeDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Something that is not a socket is at the socket path.
    #[error(
        "{0} exists and is not a socket: cellvm only replaces a stale socket, never another file"
    )]
    NotASocket(PathBuf),
    /// Another live cell owns the socket.
    #[error("control socket {0} is in use: is a cell with this name already running?")]
    InUse(PathBuf),
    /// Binding failed.
    #[error("control socket {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The directory holding control sockets: `$CELLVM_RUNTIME_DIR`, else
/// `$XDG_RUNTIME_DIR/cellvm`, else `/run/cellvm` for root and
/// `/tmp/cellvm-<uid>` for others.
pub fn runtime_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CELLVM_RUNTIME_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        return Path::new(&dir).join("cellvm");
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    if uid == 0 {
        PathBuf::from("/run/cellvm")
    } else {
        PathBuf::from(format!("/tmp/cellvm-{uid}"))
    }
}

/// The control socket of the cell named `name`.
pub fn socket_path(name: &str) -> PathBuf {
    runtime_dir().join(format!("{name}.sock"))
}

/// What the API serves; implemented by the VMM.
pub trait ControlTarget: Send + Sync {
    /// Handles one parsed request.
    fn handle(&self, request: Request) -> Result<Reply, ApiError>;
}

/// A bound control socket; the file is removed on drop.
pub struct ApiServer {
    path: PathBuf,
    listener: UnixListener,
    idle_timeout: Duration,
    seccomp: Option<Arc<crate::seccomp::Filters>>,
}

impl ApiServer {
    /// Binds `path` (mode 0600, in a directory created with mode 0700, or
    /// an existing one that this user owns and nobody else may write to).
    /// A stale socket (nobody listening) is replaced; a live one, or a file
    /// that is not a socket, is an error.
    pub fn bind(path: &Path) -> Result<Self, ApiSetupError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            ensure_private_dir(dir)?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(ApiSetupError::NotASocket(path.to_path_buf()));
            }
            Ok(_) => {
                if UnixStream::connect(path).is_ok() {
                    return Err(ApiSetupError::InUse(path.to_path_buf()));
                }
                let _ = std::fs::remove_file(path);
            }
            Err(_) => {}
        }
        let bind_err = |source| ApiSetupError::Bind {
            path: path.to_path_buf(),
            source,
        };
        let listener = UnixListener::bind(path).map_err(bind_err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
        Ok(ApiServer {
            path: path.to_path_buf(),
            listener,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            seccomp: None,
        })
    }

    /// The same with another idle timeout (see [`DEFAULT_IDLE_TIMEOUT`];
    /// must not be zero).
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// The same with the API threads under `filters`' API filter
    /// (docs/security.md): the accept thread installs it before it accepts,
    /// and the connection threads it starts inherit it.
    pub fn with_seccomp(mut self, filters: Arc<crate::seccomp::Filters>) -> Self {
        self.seccomp = Some(filters);
        self
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts connections on a background thread until the process ends,
    /// serving each on a thread of its own (at most [`MAX_CONNECTIONS`]);
    /// returns once that thread's seccomp filter (if any) is in place.
    /// The returned guard removes the socket file when dropped.
    pub fn spawn(self, target: Arc<dyn ControlTarget>) -> std::io::Result<SocketGuard> {
        let listener = self.listener.try_clone()?;
        let inflight = Arc::new(InFlight::default());
        let guard = SocketGuard {
            path: self.path.clone(),
            inflight: inflight.clone(),
        };
        let idle = self.idle_timeout;
        let open = Arc::new(AtomicUsize::new(0));
        let accept_loop = move || {
            for conn in listener.incoming() {
                match conn.and_then(|s| s.set_write_timeout(Some(idle)).map(|()| s)) {
                    Ok(stream) => accept(stream, &target, &open, &inflight, idle),
                    Err(e) => log::warn!("api: accept failed: {e}"),
                }
            }
        };
        crate::seccomp::spawn(
            std::thread::Builder::new().name("api".into()),
            crate::seccomp::ThreadKind::Api,
            self.seccomp.as_ref(),
            accept_loop,
        )
        .map_err(std::io::Error::other)?;
        Ok(guard)
    }
}

/// Serves `stream` on a thread of its own, or tells it `busy` when
/// [`MAX_CONNECTIONS`] are open.
fn accept(
    mut stream: UnixStream,
    target: &Arc<dyn ControlTarget>,
    open: &Arc<AtomicUsize>,
    inflight: &Arc<InFlight>,
    idle: Duration,
) {
    if open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
        open.fetch_sub(1, Ordering::AcqRel);
        let busy = ApiError::new(
            ErrorKind::Busy,
            format!("{MAX_CONNECTIONS} connections are open; try again"),
        );
        let _ = send(&mut stream, &Response::err(busy));
        return;
    }
    let target = target.clone();
    let inflight = inflight.clone();
    let done = open.clone();
    // Started from the accept thread, so under its seccomp filter.
    let spawned = std::thread::Builder::new()
        .name("api-conn".into())
        .spawn(move || {
            serve_tracked(stream, target.as_ref(), idle, &inflight);
            done.fetch_sub(1, Ordering::AcqRel);
            release_free_heap();
        });
    if let Err(e) = spawned {
        open.fetch_sub(1, Ordering::AcqRel);
        log::warn!("api: cannot start a connection thread: {e}");
    }
}

/// Creates `dir` with mode 0700, or accepts an existing one only if this
/// user owns it and neither group nor others may write to it (a directory
/// someone else controls could have its socket swapped).
pub fn ensure_private_dir(dir: &Path) -> Result<(), ApiSetupError> {
    let io = |source| ApiSetupError::Dir {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io)?;
    let meta = std::fs::symlink_metadata(dir).map_err(io)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let unsafe_dir = |why: String| ApiSetupError::UnsafeDir {
        path: dir.to_path_buf(),
        why,
    };
    if !meta.is_dir() {
        return Err(unsafe_dir("it is not a directory".into()));
    }
    if meta.uid() != me {
        return Err(unsafe_dir(format!(
            "it is owned by uid {}, not by this user (uid {me})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "its mode is {:o}: group or others may write to it",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// How long a stopping cell waits for the answers of requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Requests being handled or answered right now.
#[derive(Debug, Default)]
pub struct InFlight {
    count: std::sync::Mutex<usize>,
    idle: std::sync::Condvar,
}

impl InFlight {
    fn enter(&self) {
        *crate::sync::lock(&self.count) += 1;
    }

    fn leave(&self) {
        let mut n = crate::sync::lock(&self.count);
        *n = n.saturating_sub(1);
        self.idle.notify_all();
    }

    /// Waits up to `timeout` until no request is in flight; whether none is.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut n = crate::sync::lock(&self.count);
        while *n > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            n = crate::sync::wait_timeout(&self.idle, n, left).0;
        }
        true
    }
}

/// Removes the socket file when dropped, then gives requests in flight
/// (a `destroy`, a `shutdown` that saw the cell stop) up to 2 s to send
/// their answers before the cell's process goes on to exit.
pub struct SocketGuard {
    path: PathBuf,
    inflight: Arc<InFlight>,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if !self.inflight.wait_idle(DRAIN_TIMEOUT) {
            log::warn!("api: a request was still being answered when the cell stopped");
        }
    }
}

/// Hands the heap's free pages back to the kernel once a connection is done.
/// A request (an attach above all: device models, the overlay, JSON) frees
/// everything it allocated, but the freed chunks stay resident in the
/// allocator's arenas, and with fragmentation the resident high-water mark
/// creeps up over thousands of requests. `malloc_trim` releases free pages
/// anywhere in the arenas (glibc); requests are rare, so its cost (well
/// under a millisecond) does not matter.
fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory to the kernel; it takes
    // the allocator's own locks and touches no memory we hold.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Serves one connection: a response line per request line, until the
/// client closes it, a request line does not arrive whole within `idle` of
/// the previous answer (or is longer than [`MAX_REQUEST`]), or an answer
/// cannot be written within `idle`.
pub fn serve_connection(stream: UnixStream, target: &dyn ControlTarget, idle: Duration) {
    serve_tracked(stream, target, idle, &InFlight::default());
}

/// [`serve_connection`], counting each request in `inflight` from its
/// arrival until its answer is sent.
fn serve_tracked(
    mut stream: UnixStream,
    target: &dyn ControlTarget,
    idle: Duration,
    inflight: &InFlight,
) {
    let mut reader = LineReader::default();
    loop {
        let line = match reader.read_line(&mut stream, MAX_REQUEST, Instant::now() + idle) {
            Ok(line) => line,
            Err(LineError::TooLong) => {
                let r = Response::err(ApiError::new(
                    ErrorKind::BadRequest,
                    format!("request longer than {MAX_REQUEST} bytes"),
                ));
                let _ = send(&mut stream, &r);
                return;
            }
            Err(LineError::TimedOut) => {
                log::info!("api: closing a connection whose request did not arrive in time");
                return;
            }
            Err(LineError::Closed { .. }) => return,
            Err(LineError::Io(kind)) => {
                log::debug!("api: read failed: {kind:?}");
                return;
            }
        };
        inflight.enter();
        let response = match std::str::from_utf8(&line) {
            Err(_) => Response::err(ApiError::new(ErrorKind::BadRequest, "request is not UTF-8")),
            Ok(text) if text.trim().is_empty() => {
                inflight.leave();
                continue;
            }
            Ok(text) => match parse_request(text.trim()) {
                Err(e) => Response::err(e),
                Ok(req) => match target.handle(req).map(|r| serde_json::to_value(&r)) {
                    Ok(Ok(v)) => Response::ok(v),
                    Ok(Err(e)) => Response::err(ApiError::new(
                        ErrorKind::Internal,
                        format!("cannot serialise the result: {e}"),
                    )),
                    Err(e) => Response::err(e),
                },
            },
        };
        let sent = send(&mut stream, &response);
        inflight.leave();
        if sent.is_err() {
            return;
        }
    }
}

fn send(w: &mut UnixStream, r: &Response) -> std::io::Result<()> {
    let mut text = serde_json::to_string(r).map_err(std::io::Error::other)?;
    text.push('\n');
    w.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests;
