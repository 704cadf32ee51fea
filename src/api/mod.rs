//! The control API of a running cell: a Unix stream socket (owner-only)
//! speaking line-delimited JSON ([`protocol`]). Requests are served one at a
//! time, so concurrent changes to one cell are serialised; a connection that
//! sends nothing for [`DEFAULT_IDLE_TIMEOUT`] is closed, so an idle client
//! cannot keep the others waiting.

pub mod client;
pub mod protocol;

use protocol::{parse_request, ApiError, ErrorKind, Reply, Request, Response, MAX_REQUEST};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// How long a connection may wait between requests (or take to send one, or
/// to take an answer) before it is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

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
}

impl ApiServer {
    /// Binds `path` (mode 0600, in a directory created with mode 0700).
    /// A stale socket (nobody listening) is replaced; a live one is an error.
    pub fn bind(path: &Path) -> Result<Self, ApiSetupError> {
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| ApiSetupError::Dir {
                    path: dir.to_path_buf(),
                    source,
                })?;
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(ApiSetupError::InUse(path.to_path_buf()));
            }
            let _ = std::fs::remove_file(path);
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
        })
    }

    /// The same with another idle timeout (see [`DEFAULT_IDLE_TIMEOUT`];
    /// must not be zero).
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves connections on a background thread until the process ends.
    /// The returned guard removes the socket file when dropped.
    pub fn spawn(self, target: Arc<dyn ControlTarget>) -> std::io::Result<SocketGuard> {
        let listener = self.listener.try_clone()?;
        let guard = SocketGuard {
            path: self.path.clone(),
        };
        let idle = Some(self.idle_timeout);
        std::thread::Builder::new()
            .name("api".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    let stream = conn.and_then(|s| {
                        s.set_read_timeout(idle)?;
                        s.set_write_timeout(idle)?;
                        Ok(s)
                    });
                    match stream {
                        Ok(stream) => serve_connection(stream, target.as_ref()),
                        Err(e) => log::warn!("api: accept failed: {e}"),
                    }
                    release_free_heap();
                }
            })?;
        Ok(guard)
    }
}

/// Removes the socket file when dropped.
pub struct SocketGuard {
    path: PathBuf,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
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
/// client closes it, or a read or write fails or times out (the stream's
/// own timeouts).
pub fn serve_connection(stream: UnixStream, target: &dyn ControlTarget) {
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut writer = write_half;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = Vec::new();
        let limited = (&mut reader)
            .take(MAX_REQUEST as u64 + 1)
            .read_until(b'\n', &mut line);
        match limited {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                log::info!("api: closing a connection that sent no request in time");
                return;
            }
            Err(e) => {
                log::debug!("api: read failed: {e}");
                return;
            }
        }
        let response = if line.len() > MAX_REQUEST {
            let r = Response::err(ApiError::new(
                ErrorKind::BadRequest,
                format!("request longer than {MAX_REQUEST} bytes"),
            ));
            let _ = send(&mut writer, &r);
            return;
        } else {
            match std::str::from_utf8(&line) {
                Err(_) => {
                    Response::err(ApiError::new(ErrorKind::BadRequest, "request is not UTF-8"))
                }
                Ok(text) if text.trim().is_empty() => continue,
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
            }
        };
        if send(&mut writer, &response).is_err() {
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
