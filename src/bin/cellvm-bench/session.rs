//! One run of one VMM: spawn it, watch its stdout (the guest's console) and
//! stderr line by line, wait for a line, sample its memory, kill it.

use crate::Vmm;
use cellvm::sync;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Lines of a failed VMM's stdout/stderr kept for the error message.
const TAIL_LINES: usize = 12;

type Tail = Arc<Mutex<VecDeque<String>>>;

/// A running VMM. Dropping it kills the process and joins its readers.
pub struct Session {
    child: Child,
    start: Instant,
    stdout: mpsc::Receiver<(Instant, String)>,
    stderr: mpsc::Receiver<String>,
    out_tail: Tail,
    err_tail: Tail,
    readers: Vec<JoinHandle<()>>,
}

impl Session {
    /// Spawns `vmm` with stdin closed and both outputs piped.
    pub fn spawn(vmm: &Vmm) -> Result<Self, String> {
        let start = Instant::now();
        let mut child = Command::new(&vmm.argv[0])
            .args(&vmm.argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", vmm.argv[0]))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let out_tail: Tail = Arc::default();
        let err_tail: Tail = Arc::default();
        let (out_tx, out_rx) = mpsc::channel();
        let (err_tx, err_rx) = mpsc::channel();
        let tail = out_tail.clone();
        let out_reader = std::thread::spawn(move || {
            read_lines(stdout, tail, |line| {
                let _ = out_tx.send((Instant::now(), line.to_string()));
            })
        });
        let tail = err_tail.clone();
        let err_reader = std::thread::spawn(move || {
            read_lines(stderr, tail, |line| {
                let _ = err_tx.send(line.to_string());
            })
        });
        Ok(Session {
            child,
            start,
            stdout: out_rx,
            stderr: err_rx,
            out_tail,
            err_tail,
            readers: vec![out_reader, err_reader],
        })
    }

    /// The VMM's process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (up to `timeout` from the spawn) for a stdout line containing
    /// one of `patterns`; returns the time since the spawn and the line.
    pub fn wait_line(
        &mut self,
        patterns: &[&str],
        timeout: Duration,
    ) -> Result<(Duration, String), String> {
        let deadline = self.start + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok((at, line)) if patterns.iter().any(|p| line.contains(p)) => {
                    return Ok((at.duration_since(self.start), line));
                }
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(self.failure(format!("no {patterns:?} within {timeout:?}")));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map_or("?".into(), |s| s.to_string());
                    return Err(
                        self.failure(format!("exited ({status}) before printing {patterns:?}"))
                    );
                }
            }
        }
    }

    /// The first stderr line for which `f` returns something, waiting at
    /// most `wait` for more lines.
    pub fn find_stderr<T>(
        &self,
        wait: Duration,
        mut f: impl FnMut(&str) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    if let Some(v) = f(&line) {
                        return Some(v);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// `what` plus the last lines of both outputs.
    pub fn failure(&self, what: String) -> String {
        let join = |t: &Tail| {
            let t = sync::lock(t);
            t.iter().map(|l| format!("\n    | {l}")).collect::<String>()
        };
        format!(
            "{what}\n  last stdout lines:{}\n  last stderr lines:{}",
            join(&self.out_tail),
            join(&self.err_tail)
        )
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

fn remember(tail: &Tail, line: &str) {
    let mut t = sync::lock(tail);
    if t.len() == TAIL_LINES {
        t.pop_front();
    }
    t.push_back(line.to_string());
}

/// Reads `r` line by line (lossy UTF-8: consoles print anything), keeping
/// the last lines in `tail` and calling `f` on each.
fn read_lines(r: impl Read, tail: Tail, mut f: impl FnMut(&str)) {
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']);
                remember(&tail, line);
                f(line);
            }
        }
    }
}
