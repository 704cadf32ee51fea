//! Hotplug torture (`--hotplug DEVICE.toml`): attaches and detaches one
//! device over and over while the guest runs, for drivers that "don't react
//! well on device removal" (seed 004).
//!
//! - It starts once the guest's agent is ready (it polls `status` until
//!   then, or until the cell stops).
//! - Each cycle is `attach`, a pause, `detach`, a pause; the cycle number
//!   is published ([`Progress`]) so that a console failure (`--fail-on`)
//!   can be reported with the cycle it happened in.
//! - A refused or timed-out attach or detach stops the cell with
//!   [`StopReason::HotplugFailed`] naming the cycle and the step.
//! - After the last cycle the guest gets [`Torture::settle`] to complain
//!   about the last removal (its console is matched meanwhile), then the
//!   cell stops with [`StopReason::HotplugDone`], unless the run waits
//!   for `--expect`.

use crate::api::endpoint::CellEndpoint;
use crate::api::protocol::Request;
use crate::stop::{StopHandle, StopReason};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The cycle in progress (0: not started yet), shared with the reporter.
pub type Progress = Arc<AtomicU32>;

/// What to torture, and how.
#[derive(Debug, Clone)]
pub struct Torture {
    /// The device table (a description file's, as JSON for the API).
    pub device: toml::Value,
    /// The device's id (to detach it).
    pub id: String,
    /// Where the description's relative paths resolve.
    pub base_dir: PathBuf,
    /// Cycles to run.
    pub cycles: u32,
    /// The pause after each attach and each detach.
    pub interval: Duration,
    /// How long the guest may take to answer each change.
    pub guest_timeout: Duration,
    /// How long the run goes on after the last cycle before it passes.
    pub settle: Duration,
    /// Whether the run goes on after the last cycle (it waits for
    /// `--expect`).
    pub keep_running: bool,
}

/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(50);

/// Runs the torture against `cell`; returns when done or the cell stops.
pub fn run(t: &Torture, cell: &dyn CellEndpoint, stop: &StopHandle, progress: &Progress) {
    let within = t.guest_timeout + Duration::from_secs(5);
    // Wait for the agent (the cell's own stop wakes this wait early).
    loop {
        if stop.is_stopped() {
            return;
        }
        let ready = cell
            .call(&Request::Status {}, within)
            .map(|s| s["agent"]["state"] == "ready")
            .unwrap_or(false);
        if ready {
            break;
        }
        stop.wait_timeout(POLL);
    }
    let guest_ms = u64::try_from(t.guest_timeout.as_millis()).unwrap_or(u64::MAX);
    for cycle in 1..=t.cycles {
        progress.store(cycle, Ordering::Relaxed);
        let attach = Request::Attach {
            device: t.device.clone(),
            base_dir: Some(t.base_dir.clone()),
            timeout_ms: Some(guest_ms),
        };
        let detach = Request::Detach {
            id: t.id.clone(),
            force: false,
            timeout_ms: Some(guest_ms),
        };
        for (step, request) in [("attach", attach), ("detach", detach)] {
            if stop.is_stopped() {
                return;
            }
            if let Err(e) = cell.call(&request, within) {
                stop.stop(StopReason::HotplugFailed {
                    cycle,
                    cycles: t.cycles,
                    step,
                    error: format!("{}: {}", e.kind.as_str(), e.message),
                });
                return;
            }
            if stop.wait_timeout(t.interval) {
                return;
            }
        }
    }
    log::info!("hotplug torture: {} cycles of {} done", t.cycles, t.id);
    if stop.wait_timeout(t.settle) {
        return;
    }
    if !t.keep_running {
        stop.stop(StopReason::HotplugDone { cycles: t.cycles });
    }
}

#[cfg(test)]
#[path = "hotplug_tests.rs"]
mod tests;
