//! Reading one protocol line from a socket with two bounds that a client
//! (or a server) cannot stretch: a size limit and a total deadline for the
//! whole line, however the bytes trickle in.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::Instant;

/// Why no line came.
#[derive(Debug, PartialEq, Eq)]
pub enum LineError {
    /// The peer closed the connection before a newline (`partial` bytes
    /// had come).
    Closed {
        /// Bytes of the unfinished line.
        partial: usize,
    },
    /// The line grew beyond the limit without a newline.
    TooLong,
    /// The deadline passed before the newline came.
    TimedOut,
    /// Reading failed.
    Io(std::io::ErrorKind),
}

/// Line reader for one connection: bytes read past a newline are kept for
/// the next line.
#[derive(Debug, Default)]
pub struct LineReader {
    pending: Vec<u8>,
}

impl LineReader {
    /// The next line (without its newline), at most `max` bytes, all of it
    /// read before `deadline`.
    pub fn read_line(
        &mut self,
        stream: &mut UnixStream,
        max: usize,
        deadline: Instant,
    ) -> Result<Vec<u8>, LineError> {
        let mut scanned = 0;
        loop {
            if let Some(i) = self.pending[scanned..].iter().position(|b| *b == b'\n') {
                let end = scanned + i;
                let line = self.pending[..end].to_vec();
                self.pending.drain(..=end);
                return if line.len() > max {
                    Err(LineError::TooLong)
                } else {
                    Ok(line)
                };
            }
            scanned = self.pending.len();
            if scanned > max {
                return Err(LineError::TooLong);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(LineError::TimedOut);
            }
            stream
                .set_read_timeout(Some(left))
                .map_err(|e| LineError::Io(e.kind()))?;
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(LineError::Closed {
                        partial: self.pending.len(),
                    })
                }
                Ok(n) => self
                    .pending
                    .extend_from_slice(chunk.get(..n).unwrap_or(&[])),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(LineError::TimedOut)
                }
                Err(e) => return Err(LineError::Io(e.kind())),
            }
        }
    }
}
