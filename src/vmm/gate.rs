//! The vCPU run gate: pausing and resuming a running cell's vCPUs.
//!
//! Specification:
//! - Every vCPU thread passes the gate before each `KVM_RUN`
//!   ([`RunGate::pass`]). While the gate is paused the thread parks there;
//!   a parked vCPU runs no guest code and makes no exits.
//! - Each vCPU thread registers itself ([`RunGate::register_current`])
//!   before it first passes the gate, under the gate's lock: a pause either
//!   sees it registered (and kicks it) or the thread finds the gate closed.
//! - [`RunGate::pause`] closes the gate, kicks every registered vCPU thread
//!   out of `KVM_RUN` (the kick signal) and returns once all of the cell's
//!   vCPUs (the count the gate was made for) are parked, or fails after its
//!   timeout (the gate stays closed: a vCPU
//!   stuck in a device parks when the device returns).
//! - Kicks are sent under the gate's lock and never after
//!   [`RunGate::release`]: the cell releases the gate before it joins its
//!   vCPU threads, so a kick never names a thread that is gone.
//! - [`RunGate::resume`] opens the gate. [`RunGate::release`] opens it for
//!   good (the cell is stopping): a parked thread returns at once so the
//!   vCPU loop can see the stop.
//! - A cell created with `--paused` starts with the gate closed: its vCPU
//!   threads exist but have never run guest code until the first resume.

use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Why a pause did not complete.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum GateError {
    /// Not every vCPU parked in time.
    #[error("{parked} of {total} vCPUs paused within {waited:?}; the others are busy in a device")]
    NotParked {
        /// vCPUs parked.
        parked: usize,
        /// vCPUs of the cell.
        total: usize,
        /// How long the pause waited.
        waited: Duration,
    },
    /// The cell is stopping.
    #[error("the cell is stopping")]
    Stopping,
}

#[derive(Debug, Default)]
struct State {
    paused: bool,
    released: bool,
    parked: usize,
    /// The cell's vCPUs: a pause completes when this many are parked.
    vcpus: usize,
    threads: Vec<libc::pthread_t>,
}

/// The gate shared by a cell's vCPU threads and its control API.
#[derive(Debug, Default)]
pub struct RunGate {
    state: Mutex<State>,
    changed: Condvar,
    /// `paused && !released`, readable without the lock: [`RunGate::pass`]
    /// runs before every `KVM_RUN`, and an open gate must cost a vCPU no
    /// lock (a closed one is rare). Written under the lock, before kicks.
    closed: AtomicBool,
}

impl RunGate {
    /// A gate for `vcpus` vCPUs, open or (`paused`) closed.
    pub fn new(paused: bool, vcpus: usize) -> RunGate {
        RunGate {
            state: Mutex::new(State {
                paused,
                vcpus,
                ..State::default()
            }),
            changed: Condvar::new(),
            closed: AtomicBool::new(paused),
        }
    }

    /// Registers the calling vCPU thread, for kicks; call it before the
    /// thread first passes the gate.
    pub fn register_current(&self) {
        // SAFETY: pthread_self has no preconditions and cannot fail.
        let me = unsafe { libc::pthread_self() };
        crate::sync::lock(&self.state).threads.push(me);
    }

    /// Whether the gate is closed.
    pub fn is_paused(&self) -> bool {
        let st = crate::sync::lock(&self.state);
        st.paused && !st.released
    }

    /// vCPU side: returns at once when the gate is open, else parks until
    /// it opens or is released.
    pub fn pass(&self) {
        // A pause that closes the gate just after this load kicks this
        // thread out of the KVM_RUN it is about to enter (immediate_exit),
        // and the next pass sees the gate closed.
        if !self.closed.load(AtomicOrdering::Acquire) {
            return;
        }
        let mut st = crate::sync::lock(&self.state);
        if !st.paused || st.released {
            return;
        }
        st.parked += 1;
        self.changed.notify_all();
        while st.paused && !st.released {
            st = crate::sync::wait(&self.changed, st);
        }
        st.parked -= 1;
    }

    /// Closes the gate and waits up to `timeout` until every registered
    /// vCPU thread is parked; `kick` is sent to each thread first.
    pub fn pause(
        &self,
        kick: impl Fn(libc::pthread_t),
        timeout: Duration,
    ) -> Result<(), GateError> {
        let mut st = crate::sync::lock(&self.state);
        if st.released {
            return Err(GateError::Stopping);
        }
        st.paused = true;
        self.closed.store(true, AtomicOrdering::Release);
        // Kicks go out under the lock: once `release` has returned (and the
        // cell joins its vCPU threads) no kick can reach a joined thread.
        for t in &st.threads {
            kick(*t);
        }
        let deadline = Instant::now() + timeout;
        while st.parked < st.vcpus && !st.released {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(GateError::NotParked {
                    parked: st.parked,
                    total: st.vcpus,
                    waited: timeout,
                });
            }
            st = crate::sync::wait_timeout(&self.changed, st, left).0;
        }
        if st.released {
            return Err(GateError::Stopping);
        }
        Ok(())
    }

    /// Opens the gate.
    pub fn resume(&self) -> Result<(), GateError> {
        let mut st = crate::sync::lock(&self.state);
        if st.released {
            return Err(GateError::Stopping);
        }
        st.paused = false;
        self.closed.store(false, AtomicOrdering::Release);
        self.changed.notify_all();
        Ok(())
    }

    /// Opens the gate for good: the cell is stopping.
    pub fn release(&self) {
        let mut st = crate::sync::lock(&self.state);
        st.released = true;
        self.closed.store(false, AtomicOrdering::Release);
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// `n` threads passing the gate in a loop, counting passes, until
    /// released; registered with their pthread ids.
    fn spin(gate: &Arc<RunGate>, n: usize) -> (Vec<std::thread::JoinHandle<()>>, Arc<AtomicUsize>) {
        let passes = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let (gate, passes) = (gate.clone(), passes.clone());
                std::thread::spawn(move || {
                    gate.register_current();
                    loop {
                        gate.pass();
                        if crate::sync::lock(&gate.state).released {
                            return;
                        }
                        passes.fetch_add(1, Ordering::Relaxed);
                        std::thread::yield_now();
                    }
                })
            })
            .collect();
        (threads, passes)
    }

    #[test]
    fn a_pause_returns_once_every_thread_is_parked_and_nothing_runs_until_resume() {
        let gate = Arc::new(RunGate::new(false, 2));
        let (threads, passes) = spin(&gate, 2);
        gate.pause(|_| {}, Duration::from_secs(10)).unwrap();
        assert!(gate.is_paused());
        let before = passes.load(Ordering::Relaxed);
        // Both threads are parked (pause returned): nothing can pass.
        assert_eq!(crate::sync::lock(&gate.state).parked, 2);
        assert_eq!(passes.load(Ordering::Relaxed), before);
        gate.resume().unwrap();
        gate.release();
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn a_gate_created_paused_parks_threads_before_their_first_run() {
        let gate = Arc::new(RunGate::new(true, 2));
        let (threads, passes) = spin(&gate, 2);
        gate.pause(|_| {}, Duration::from_secs(10)).unwrap();
        assert_eq!(passes.load(Ordering::Relaxed), 0);
        gate.release();
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn a_pause_that_cannot_park_every_thread_fails_after_its_timeout() {
        // One vCPU that never reaches the gate.
        let gate = RunGate::new(false, 1);
        let e = gate.pause(|_| {}, Duration::from_millis(20)).unwrap_err();
        assert_eq!(
            e,
            GateError::NotParked {
                parked: 0,
                total: 1,
                waited: Duration::from_millis(20)
            }
        );
    }

    #[test]
    fn a_released_gate_refuses_pause_and_resume_and_lets_threads_through() {
        let gate = RunGate::new(true, 1);
        gate.release();
        gate.pass();
        assert!(!gate.is_paused());
        assert_eq!(gate.pause(|_| {}, Duration::ZERO), Err(GateError::Stopping));
        assert_eq!(gate.resume(), Err(GateError::Stopping));
    }
}
