//! The cell's control loop (event-manager): wakes on a stop request, on
//! SIGINT/SIGTERM and on the run's timeout (`--timeout`). Later control sources (the API socket, the channel) are
//! more subscribers on the same loop.

use crate::stop::{StopHandle, StopReason};
use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;
use vmm_sys_util::timerfd::TimerFd;

/// Blocks SIGINT and SIGTERM in the calling thread, so that threads spawned
/// afterwards inherit the mask and the signals are only seen via signalfd.
/// Call it first thing in `main`.
pub fn block_termination_signals() -> std::io::Result<()> {
    let set = termination_sigset();
    // SAFETY: `set` is an initialised sigset_t; a null old-set pointer is allowed.
    let ret = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if ret == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(ret))
    }
}

fn termination_sigset() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and modify the local set only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// A signalfd for SIGINT and SIGTERM (which must already be blocked).
pub fn termination_signalfd() -> std::io::Result<OwnedFd> {
    let set = termination_sigset();
    // SAFETY: valid sigset; -1 asks for a new fd; the result is checked.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn read_signal(fd: RawFd) -> Option<i32> {
    // SAFETY: signalfd_siginfo is plain data; we read at most its size into it.
    unsafe {
        let mut info: libc::signalfd_siginfo = std::mem::zeroed();
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        let n = libc::read(fd, (&mut info as *mut libc::signalfd_siginfo).cast(), size);
        (n == size as isize).then_some(info.ssi_signo as i32)
    }
}

/// The run's timeout: a timerfd armed once.
pub struct Deadline {
    timer: TimerFd,
    after: Duration,
}

impl Deadline {
    /// A timer that expires `after` from now.
    pub fn new(after: Duration) -> std::io::Result<Self> {
        let mut timer = TimerFd::new()?;
        // A zero duration would disarm the timer: expire at once instead.
        timer.reset(after.max(Duration::from_nanos(1)), None)?;
        Ok(Deadline { timer, after })
    }
}

/// The control-loop subscriber.
pub struct ControlEvents {
    stop: StopHandle,
    signals: Option<OwnedFd>,
    deadline: Option<Deadline>,
}

impl ControlEvents {
    /// Watches `stop` and, if given, a termination signalfd and the run's
    /// timeout.
    pub fn new(stop: StopHandle, signals: Option<OwnedFd>, deadline: Option<Deadline>) -> Self {
        ControlEvents {
            stop,
            signals,
            deadline,
        }
    }
}

impl MutEventSubscriber for ControlEvents {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(self.stop.event(), EventSet::IN)) {
            log::error!("control loop: cannot watch the stop event: {e:?}");
            self.stop
                .stop(StopReason::Error("control loop setup failed".into()));
        }
        if let Some(fd) = &self.signals {
            if let Err(e) = ops.add(Events::new(fd, EventSet::IN)) {
                log::error!("control loop: cannot watch signals: {e:?}");
            }
        }
        if let Some(d) = &self.deadline {
            if let Err(e) = ops.add(Events::new(&d.timer, EventSet::IN)) {
                log::error!("control loop: cannot watch the run timeout: {e:?}");
                self.stop
                    .stop(StopReason::Error("control loop setup failed".into()));
            }
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.stop.event().as_raw_fd() {
            // Drain; the loop's owner checks StopHandle::is_stopped().
            let _ = self.stop.event().read();
        } else if let Some(d) = self.deadline.as_mut().filter(|d| fd == d.timer.as_raw_fd()) {
            let _ = d.timer.wait();
            self.stop.stop(StopReason::Timeout(d.after));
        } else if let Some(sig_fd) = &self.signals {
            if fd == sig_fd.as_raw_fd() {
                if let Some(sig) = read_signal(fd) {
                    eprintln!("cellvm: received signal {sig}, stopping the cell");
                    self.stop.stop(StopReason::Signal(sig));
                }
            }
        }
    }
}
