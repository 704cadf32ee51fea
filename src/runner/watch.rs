//! Console watching: a writer between the 16550 and the console's sink
//! that sees every byte the guest prints.
//!
//! - Every byte goes on to the sink, and to the console log when there is
//!   one (`--console-log`); a failing log is reported once and dropped, the
//!   cell keeps running.
//! - Complete lines (`\n`; a `\r` before it is dropped; a line longer than
//!   [`MAX_LINE`] bytes is matched in pieces of that size) are matched
//!   against the `--fail-on` patterns first, then the `--expect` pattern. A
//!   match stops the cell ([`StopReason::ConsoleFailure`],
//!   [`StopReason::ConsoleExpected`]); the first stop wins.
//! - The last [`TAIL_LINES`] lines and every KTAP line are kept for the
//!   report ([`Transcript`]).
//!
//! Patterns are regular expressions ([`regex`]: linear-time matching, so a
//! pattern cannot make the guest's console slow), compiled with a size
//! limit; a bad pattern is a typed error naming the flag.

use crate::stop::{StopHandle, StopReason};
use regex::{Regex, RegexBuilder};
use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};
use thiserror::Error;

/// Longest line matched whole; longer lines are matched in pieces.
pub const MAX_LINE: usize = 4096;
/// Lines of console tail kept for the report.
pub const TAIL_LINES: usize = 50;
/// KTAP lines kept for the report (more are counted, not kept).
pub const MAX_KTAP_LINES: usize = 20_000;
/// Compiled size limit of one pattern.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// What `--fail-on` catches unless `--no-default-fail-on`: the kernel's
/// own signs of a broken boot.
pub const DEFAULT_FAIL_ON: [&str; 5] = ["Kernel panic", "BUG:", "Oops", "WARNING:", "OF: ERROR"];

/// Errors of console patterns.
#[derive(Debug, Error)]
pub enum WatchError {
    /// A pattern does not compile.
    #[error("{flag} '{pattern}': not a valid regular expression: {why}")]
    BadPattern {
        /// The flag it came from (`--expect`, `--fail-on`).
        flag: &'static str,
        /// The pattern.
        pattern: String,
        /// Why.
        why: String,
    },
}

/// One compiled pattern with its text.
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    regex: Regex,
}

impl Pattern {
    /// Compiles `text`, given with `flag`.
    pub fn new(flag: &'static str, text: &str) -> Result<Self, WatchError> {
        let regex = RegexBuilder::new(text)
            .size_limit(PATTERN_SIZE_LIMIT)
            .build()
            .map_err(|e| WatchError::BadPattern {
                flag,
                pattern: text.to_string(),
                why: e.to_string(),
            })?;
        Ok(Pattern {
            text: text.to_string(),
            regex,
        })
    }

    /// The pattern as given.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// What decides a run from its console.
#[derive(Debug, Clone, Default)]
pub struct Patterns {
    /// `--expect`: a matching line passes the run.
    pub expect: Option<Pattern>,
    /// `--fail-on` (with the defaults unless switched off): a matching line
    /// fails it.
    pub fail_on: Vec<Pattern>,
}

impl Patterns {
    /// Compiles the flags: `expect`, `fail_on`, and the default fail-on
    /// set unless `no_default_fail_on`.
    pub fn new(
        expect: Option<&str>,
        fail_on: &[String],
        no_default_fail_on: bool,
    ) -> Result<Self, WatchError> {
        let defaults = if no_default_fail_on {
            &[][..]
        } else {
            &DEFAULT_FAIL_ON[..]
        };
        let fail_on = defaults
            .iter()
            .copied()
            .chain(fail_on.iter().map(String::as_str))
            .map(|p| Pattern::new("--fail-on", p))
            .collect::<Result<_, _>>()?;
        Ok(Patterns {
            expect: expect.map(|p| Pattern::new("--expect", p)).transpose()?,
            fail_on,
        })
    }

    /// The stop `line` calls for, if any: a failure first.
    pub fn verdict(&self, line: &str) -> Option<StopReason> {
        if let Some(p) = self.fail_on.iter().find(|p| p.regex.is_match(line)) {
            return Some(StopReason::ConsoleFailure {
                pattern: p.text.clone(),
                line: cut(line, 300),
            });
        }
        self.expect
            .as_ref()
            .filter(|p| p.regex.is_match(line))
            .map(|p| StopReason::ConsoleExpected {
                pattern: p.text.clone(),
            })
    }
}

/// `line` cut to at most `max` bytes at a character boundary.
fn cut(line: &str, max: usize) -> String {
    let mut end = line.len().min(max);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_string()
}

/// What the console showed, for the report.
#[derive(Debug, Default, Clone)]
pub struct Transcript {
    /// The last [`TAIL_LINES`] lines.
    pub tail: VecDeque<String>,
    /// KTAP lines (`KTAP version`, `ok`, `not ok`, `1..N`, `# ...`, with
    /// their indentation), up to [`MAX_KTAP_LINES`].
    pub ktap: Vec<String>,
    /// KTAP lines that did not fit.
    pub ktap_dropped: usize,
}

impl Transcript {
    fn push(&mut self, line: &str) {
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_string());
        if super::junit::is_ktap_line(line) {
            if self.ktap.len() < MAX_KTAP_LINES {
                self.ktap.push(line.to_string());
            } else {
                self.ktap_dropped += 1;
            }
        }
    }
}

/// See the module documentation.
pub struct ConsoleWatch {
    sink: Box<dyn Write + Send>,
    log: Option<Box<dyn Write + Send>>,
    patterns: Patterns,
    stop: StopHandle,
    line: Vec<u8>,
    transcript: Arc<Mutex<Transcript>>,
}

impl ConsoleWatch {
    /// Watches what goes to `sink` (copied to `log`), stopping through
    /// `stop` on a pattern's match.
    pub fn new(
        sink: Box<dyn Write + Send>,
        log: Option<Box<dyn Write + Send>>,
        patterns: Patterns,
        stop: StopHandle,
    ) -> Self {
        ConsoleWatch {
            sink,
            log,
            patterns,
            stop,
            line: Vec::new(),
            transcript: Arc::new(Mutex::new(Transcript::default())),
        }
    }

    /// The transcript, readable after the run.
    pub fn transcript(&self) -> Arc<Mutex<Transcript>> {
        self.transcript.clone()
    }

    fn end_line(&mut self) {
        if self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        let line = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        crate::sync::lock(&self.transcript).push(&line);
        if let Some(reason) = self.patterns.verdict(&line) {
            self.stop.stop(reason);
        }
    }
}

impl Write for ConsoleWatch {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(log) = &mut self.log {
            if let Err(e) = log.write_all(buf) {
                log::error!("console log: {e}; no longer writing it");
                self.log = None;
            }
        }
        for &b in buf {
            if b == b'\n' {
                self.end_line();
            } else {
                self.line.push(b);
                if self.line.len() >= MAX_LINE {
                    self.end_line();
                }
            }
        }
        // Whole or not at all: the bytes were logged and matched once.
        self.sink.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if let Some(log) = &mut self.log {
            let _ = log.flush();
        }
        self.sink.flush()
    }
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
