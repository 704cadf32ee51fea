//! Client side of the control API, used by the CLI.

use super::line::{LineError, LineReader};
use super::protocol::{Request, Response, MAX_RESPONSE};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Sends one request and reads its response. `timeout` bounds the whole
/// exchange (attach/detach wait for the guest), and a response line longer
/// than [`MAX_RESPONSE`] is refused: a socket that streams without end
/// cannot make the client wait or grow without bound.
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Result<Response, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot connect to {}: {e} (is the cell running? `cellvm cells` lists running cells)",
            socket.display()
        )
    })?;
    let deadline = Instant::now() + timeout;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut line = serde_json::to_string(request).map_err(|e| e.to_string())?;
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(|e| format!("sending to {}: {e}", socket.display()))?;
    let reply = LineReader::default()
        .read_line(&mut stream, MAX_RESPONSE, deadline)
        .map_err(|e| {
            let why = match e {
                LineError::TimedOut => format!("no answer within {} s", timeout.as_secs()),
                LineError::TooLong => format!("answer longer than {MAX_RESPONSE} bytes"),
                LineError::Closed { .. } => "the connection closed without an answer".into(),
                LineError::Io(kind) => format!("read failed: {kind:?}"),
            };
            format!("{}: {why}", socket.display())
        })?;
    serde_json::from_slice(&reply).map_err(|e| format!("malformed answer from cellvm: {e}"))
}
