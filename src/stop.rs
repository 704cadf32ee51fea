//! Why a cell stopped, and the handle devices and threads use to stop it.

use crate::sync;
use std::sync::{Arc, Condvar, Mutex};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Why a cell stopped. The first reason reported wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The guest wrote this byte to the debug-exit device.
    DebugExit(u8),
    /// The guest asked for a reset (i8042 reset line, KVM system event reset).
    GuestReset,
    /// The guest powered off (KVM system event shutdown).
    GuestPowerOff,
    /// The guest crashed: triple fault, failed VM entry, KVM internal error.
    GuestCrash(String),
    /// cellvm received this signal (SIGINT, SIGTERM).
    Signal(i32),
    /// `cellvm destroy` (the control API's `destroy`).
    Destroyed,
    /// cellvm itself failed while the cell ran.
    Error(String),
    /// The guest kernel panicked (it told the pvpanic device).
    GuestPanic,
    /// A console line matched a `--fail-on` pattern.
    ConsoleFailure {
        /// The pattern, as given.
        pattern: String,
        /// The line (cut to a few hundred bytes).
        line: String,
    },
    /// A console line matched the `--expect` pattern: the test passed.
    ConsoleExpected {
        /// The pattern, as given.
        pattern: String,
    },
    /// `--expect` was given and the guest stopped (this reason, which would
    /// otherwise have been a success) before it matched.
    ExpectNotSeen {
        /// The pattern, as given.
        pattern: String,
        /// How the guest stopped.
        stopped: Box<StopReason>,
    },
    /// `--timeout` expired.
    Timeout(std::time::Duration),
    /// `--hotplug`: an attach or detach of this cycle failed.
    HotplugFailed {
        /// The cycle (from 1).
        cycle: u32,
        /// Cycles asked for.
        cycles: u32,
        /// `attach` or `detach`.
        step: &'static str,
        /// Why.
        error: String,
    },
    /// `--hotplug`: every cycle passed (and no `--expect` to wait for).
    HotplugDone {
        /// Cycles run.
        cycles: u32,
    },
}

/// Exit status: the guest kernel panicked (pvpanic).
pub const EXIT_GUEST_PANIC: u8 = 5;
/// Exit status: the console matched a `--fail-on` pattern.
pub const EXIT_CONSOLE_FAILURE: u8 = 6;
/// Exit status: the guest stopped before `--expect` matched.
pub const EXIT_EXPECT_NOT_SEEN: u8 = 7;
/// Exit status: a `--hotplug` cycle's attach or detach failed.
pub const EXIT_HOTPLUG_FAILED: u8 = 8;
/// Exit status: `--timeout` expired (as timeout(1)).
pub const EXIT_TIMEOUT: u8 = 124;

impl StopReason {
    /// Whether this stop is a success a CI should count as a pass.
    pub fn passed(&self) -> bool {
        self.exit_code() == 0
    }

    /// cellvm's process exit status for this reason (documented in docs/cli.md).
    pub fn exit_code(&self) -> u8 {
        match self {
            StopReason::DebugExit(code) => *code,
            StopReason::GuestReset | StopReason::GuestPowerOff => 0,
            StopReason::Error(_) => 1,
            StopReason::GuestCrash(_) => 3,
            StopReason::Destroyed => 4,
            StopReason::GuestPanic => EXIT_GUEST_PANIC,
            StopReason::ConsoleFailure { .. } => EXIT_CONSOLE_FAILURE,
            StopReason::ConsoleExpected { .. } => 0,
            StopReason::ExpectNotSeen { .. } => EXIT_EXPECT_NOT_SEEN,
            StopReason::Timeout(_) => EXIT_TIMEOUT,
            StopReason::HotplugFailed { .. } => EXIT_HOTPLUG_FAILED,
            StopReason::HotplugDone { .. } => 0,
            StopReason::Signal(sig) => 128u8.saturating_add((*sig).clamp(0, 127) as u8),
        }
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::DebugExit(code) => write!(f, "guest requested exit with code {code}"),
            StopReason::GuestReset => write!(f, "guest reset"),
            StopReason::GuestPowerOff => write!(f, "guest powered off"),
            StopReason::GuestCrash(why) => write!(f, "guest crashed: {why}"),
            StopReason::Signal(sig) => write!(f, "stopped by signal {sig}"),
            StopReason::Destroyed => write!(f, "destroyed (cellvm destroy)"),
            StopReason::Error(why) => write!(f, "cellvm error: {why}"),
            StopReason::GuestPanic => write!(f, "guest kernel panic (pvpanic)"),
            StopReason::ConsoleFailure { pattern, line } => {
                write!(f, "console matched --fail-on '{pattern}': {line}")
            }
            StopReason::ConsoleExpected { pattern } => {
                write!(f, "console matched --expect '{pattern}'")
            }
            StopReason::ExpectNotSeen { pattern, stopped } => {
                write!(
                    f,
                    "{stopped} before the console matched --expect '{pattern}'"
                )
            }
            StopReason::Timeout(after) => write!(f, "timed out after {} s", after.as_secs_f64()),
            StopReason::HotplugFailed {
                cycle,
                cycles,
                step,
                error,
            } => write!(
                f,
                "hotplug cycle {cycle} of {cycles}: {step} failed: {error}"
            ),
            StopReason::HotplugDone { cycles } => write!(f, "{cycles} hotplug cycles passed"),
        }
    }
}

struct Inner {
    reason: Mutex<Option<StopReason>>,
    stopped: Condvar,
    event: EventFd,
}

/// Shared by devices, vCPU threads and the control loop. Cloning is cheap.
#[derive(Clone)]
pub struct StopHandle {
    inner: Arc<Inner>,
}

impl StopHandle {
    /// A handle with no stop requested.
    pub fn new() -> std::io::Result<Self> {
        Ok(StopHandle {
            inner: Arc::new(Inner {
                reason: Mutex::new(None),
                stopped: Condvar::new(),
                event: EventFd::new(EFD_NONBLOCK)?,
            }),
        })
    }

    /// Requests a stop. Only the first reason is kept; later ones are logged.
    pub fn stop(&self, reason: StopReason) {
        let mut slot = sync::lock(&self.inner.reason);
        match &*slot {
            None => {
                *slot = Some(reason);
                self.inner.stopped.notify_all();
                if let Err(e) = self.inner.event.write(1) {
                    log::error!("cannot signal stop event: {e}");
                }
            }
            Some(first) => log::debug!("ignoring stop reason '{reason}' after '{first}'"),
        }
    }

    /// Whether a stop was requested.
    pub fn is_stopped(&self) -> bool {
        self.reason().is_some()
    }

    /// The reason, once a stop was requested.
    pub fn reason(&self) -> Option<StopReason> {
        sync::lock(&self.inner.reason).clone()
    }

    /// Waits up to `timeout` for a stop to be requested; whether one was.
    pub fn wait_timeout(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut slot = sync::lock(&self.inner.reason);
        while slot.is_none() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            slot = sync::wait_timeout(&self.inner.stopped, slot, left).0;
        }
        true
    }

    /// An eventfd that becomes readable when a stop is requested.
    pub fn event(&self) -> &EventFd {
        &self.inner.event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_stop_reason_wins() {
        let h = StopHandle::new().unwrap();
        h.stop(StopReason::DebugExit(7));
        h.stop(StopReason::GuestReset);
        assert_eq!(h.reason(), Some(StopReason::DebugExit(7)));
        assert_eq!(h.event().read().unwrap(), 1);
    }

    #[test]
    fn wait_timeout_returns_once_another_thread_stops_and_times_out_otherwise() {
        let stop = StopHandle::new().unwrap();
        assert!(!stop.wait_timeout(std::time::Duration::from_millis(10)));
        let other = stop.clone();
        let t = std::thread::spawn(move || other.stop(StopReason::GuestPowerOff));
        assert!(stop.wait_timeout(std::time::Duration::from_secs(60)));
        t.join().unwrap();
        assert!(matches!(stop.reason(), Some(StopReason::GuestPowerOff)));
    }

    #[test]
    fn exit_codes_follow_the_documented_table() {
        assert_eq!(StopReason::DebugExit(42).exit_code(), 42);
        assert_eq!(StopReason::GuestReset.exit_code(), 0);
        assert_eq!(StopReason::GuestPowerOff.exit_code(), 0);
        assert_eq!(StopReason::Error("x".into()).exit_code(), 1);
        assert_eq!(StopReason::GuestCrash("x".into()).exit_code(), 3);
        assert_eq!(StopReason::Destroyed.exit_code(), 4);
        assert_eq!(StopReason::Signal(libc::SIGINT).exit_code(), 130);
        assert_eq!(StopReason::Signal(libc::SIGTERM).exit_code(), 143);
        assert_eq!(StopReason::GuestPanic.exit_code(), 5);
        let failure = StopReason::ConsoleFailure {
            pattern: "BUG:".into(),
            line: "BUG: x".into(),
        };
        assert_eq!(failure.exit_code(), 6);
        let expected = StopReason::ConsoleExpected {
            pattern: "ok".into(),
        };
        assert_eq!(expected.exit_code(), 0);
        let unseen = StopReason::ExpectNotSeen {
            pattern: "ok".into(),
            stopped: Box::new(StopReason::GuestPowerOff),
        };
        assert_eq!(unseen.exit_code(), 7);
        let t = StopReason::Timeout(std::time::Duration::from_secs(3));
        assert_eq!(t.exit_code(), 124);
        assert_eq!(t.to_string(), "timed out after 3 s");
    }
}
