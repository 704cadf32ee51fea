use super::*;
use crate::api::protocol::{ApiError, ErrorKind};
use std::sync::Mutex;

/// A cell whose agent is ready after `ready_after` status calls and which
/// refuses the `refuse_at`-th change (counting attach and detach from 1).
struct Fake {
    ready_after: u32,
    refuse_at: Option<u32>,
    log: Mutex<Vec<String>>,
}

impl Fake {
    fn new(ready_after: u32, refuse_at: Option<u32>) -> Self {
        Fake {
            ready_after,
            refuse_at,
            log: Mutex::new(Vec::new()),
        }
    }

    fn asked(&self) -> Vec<String> {
        crate::sync::lock(&self.log).clone()
    }
}

impl CellEndpoint for Fake {
    fn name(&self) -> &str {
        "fake"
    }

    fn call(&self, request: &Request, _within: Duration) -> Result<serde_json::Value, ApiError> {
        let op = serde_json::to_value(request).unwrap()["op"]
            .as_str()
            .unwrap()
            .to_string();
        let mut log = crate::sync::lock(&self.log);
        log.push(op.clone());
        if op == "status" {
            let n = log.iter().filter(|o| *o == "status").count() as u32;
            let state = if n > self.ready_after {
                "ready"
            } else {
                "absent"
            };
            return Ok(serde_json::json!({"agent": {"state": state}}));
        }
        let changes = log.iter().filter(|o| *o != "status").count() as u32;
        if Some(changes) == self.refuse_at {
            return Err(ApiError::new(ErrorKind::GuestRefused, "no"));
        }
        Ok(serde_json::Value::Null)
    }
}

fn torture(cycles: u32, keep_running: bool) -> Torture {
    Torture {
        device: toml::Value::Table(toml::Table::new()),
        id: "hot0".into(),
        base_dir: PathBuf::from("/"),
        cycles,
        interval: Duration::ZERO,
        guest_timeout: Duration::from_secs(1),
        settle: Duration::ZERO,
        keep_running,
    }
}

#[test]
fn cycles_start_once_the_agent_is_ready_and_end_the_run_when_done() {
    let cell = Fake::new(2, None);
    let stop = StopHandle::new().unwrap();
    let progress = Progress::default();
    run(&torture(3, false), &cell, &stop, &progress);
    let asked = cell.asked();
    assert_eq!(&asked[..3], ["status", "status", "status"]);
    assert_eq!(
        &asked[3..],
        ["attach", "detach", "attach", "detach", "attach", "detach"]
    );
    assert_eq!(stop.reason(), Some(StopReason::HotplugDone { cycles: 3 }));
    assert_eq!(progress.load(Ordering::Relaxed), 3);
}

#[test]
fn a_refused_change_stops_the_run_naming_its_cycle_and_step() {
    let cell = Fake::new(0, Some(4)); // the second cycle's detach
    let stop = StopHandle::new().unwrap();
    run(&torture(5, false), &cell, &stop, &Progress::default());
    let reason = stop.reason().unwrap();
    assert_eq!(reason.exit_code(), crate::stop::EXIT_HOTPLUG_FAILED);
    assert_eq!(
        reason.to_string(),
        "hotplug cycle 2 of 5: detach failed: guest_refused: no"
    );
}

#[test]
fn a_run_waiting_for_its_expected_line_goes_on_after_the_last_cycle() {
    let cell = Fake::new(0, None);
    let stop = StopHandle::new().unwrap();
    run(&torture(1, true), &cell, &stop, &Progress::default());
    assert!(!stop.is_stopped());
}

#[test]
fn a_cell_that_stops_before_its_agent_is_ready_ends_the_torture() {
    let cell = Fake::new(u32::MAX, None);
    let stop = StopHandle::new().unwrap();
    stop.stop(StopReason::GuestPowerOff);
    run(&torture(1, false), &cell, &stop, &Progress::default());
    assert!(cell.asked().is_empty());
}
