//! `move`: hands a device from one running cell to another with both
//! guests' consent (docs/partitioning.md, "Moving a device between cells").
//!
//! The move is a sequence of ordinary API requests to the two cells, run by
//! the cell giving the device (the API's `move` request) and timed step by
//! step:
//!
//! 1. **check**: the giving guest's agent is ready (else `no_agent`,
//!    nothing changes). A's own status: no round trip to another process.
//! 2. **claim**: the receiving cell B locks the device's images while the
//!    giving cell A still holds them (`claim`), so no third process can
//!    take them between A's release and B's enable. Refused if B's guest
//!    agent is not ready (`no_agent`; the claim is B's check, which saves
//!    a round trip to B), if B does not declare the device reserved with
//!    the same backing, or if the images are not A's alone: nothing moved.
//! 3. **disable** on A: A's guest removes the device (its consent hook may
//!    refuse; docs/channel.md), then A releases the images. A refusal or a
//!    timeout: B's claim is dropped, nothing moved.
//! 4. **enable** on B: B's guest creates the device. A refusal or a
//!    timeout: B's claim is dropped and A re-enables the device (it is back
//!    with A); if that fails too the device is **stranded**: reserved in
//!    both cells, held by nobody, and the error says how to retry.
//!
//! Outcomes are typed ([`MoveOutcome`]) and every step is reported
//! ([`MoveReport`]), on failure too (in the error's `detail`).
//!
//! A cell that dies mid-move: its process's locks die with it (OFD locks).
//! If A dies after the claim, B keeps a pending claim that B's `enable`
//! confirms (`cellvm enable B ID`) or `cellvm unclaim B ID` drops; if B
//! dies, A's re-enable takes the device back. The kernel drops a dying
//! process's locks when it closes its files, which may be after its socket
//! told A that B is gone: A's re-enable then meets B's lock and is retried,
//! with a growing pause, for up to [`GIVE_BACK_WAIT`] (each attempt is a
//! step of the report).

pub use super::endpoint::{CellEndpoint, RemoteCell};
use super::protocol::{ApiError, ErrorKind, Request};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// How a move ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveOutcome {
    /// The receiving cell owns the device.
    Moved,
    /// Nothing changed: the giving cell still owns the device.
    NothingMoved,
    /// The receiving cell did not take it; the giving cell has it again.
    Returned,
    /// Neither cell has it enabled (the giving cell's re-enable failed).
    Stranded,
}

/// One timed step of a move.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoveStep {
    /// `check`, `claim`, `disable`, `enable` or `unclaim`.
    pub step: String,
    /// The cell the step was sent to.
    pub cell: String,
    /// How long the step took.
    pub ms: f64,
    /// Why it failed, when it did (`kind: message`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a move did, step by step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoveReport {
    /// The device id.
    pub id: String,
    /// The giving cell.
    pub from: String,
    /// The receiving cell.
    pub to: String,
    /// How it ended.
    pub outcome: MoveOutcome,
    /// The steps, in order.
    pub steps: Vec<MoveStep>,
    /// From the first step to the last answer.
    pub total_ms: f64,
}

/// A move that did not happen: the error (its kind is the failing step's)
/// and the report.
#[derive(Debug)]
pub struct MoveFailure {
    /// What failed, for people and scripts.
    pub error: ApiError,
    /// What was done.
    pub report: Box<MoveReport>,
}

impl MoveFailure {
    /// The API error, carrying the report as its `detail`.
    pub fn into_api_error(self) -> ApiError {
        let detail = serde_json::to_value(&self.report).ok();
        ApiError {
            detail,
            ..self.error
        }
    }
}

/// How long the give-back waits for a dead receiver's image lock to go.
pub const GIVE_BACK_WAIT: Duration = Duration::from_secs(2);

/// A move in progress: the sides, the report so far, the guest wait.
struct Move<'a> {
    from: &'a dyn CellEndpoint,
    to: &'a dyn CellEndpoint,
    guest_ms: u64,
    started: Instant,
    report: MoveReport,
}

impl Move<'_> {
    /// How long a step may take: the guest's wait plus time to answer.
    fn within(&self) -> Duration {
        Duration::from_millis(self.guest_ms.saturating_add(5000))
    }

    /// Sends `request` to `side` as step `step`, recorded in the report.
    fn step(
        &mut self,
        step: &str,
        side: &dyn CellEndpoint,
        request: &Request,
    ) -> Result<serde_json::Value, ApiError> {
        let t = Instant::now();
        let r = side.call(request, self.within());
        self.report.steps.push(MoveStep {
            step: step.to_string(),
            cell: side.name().to_string(),
            ms: t.elapsed().as_secs_f64() * 1000.0,
            error: r.as_ref().err().map(describe),
        });
        r
    }

    /// Ends the move with `outcome`; `Err` unless it moved.
    fn finish(
        mut self,
        outcome: MoveOutcome,
        error: Option<ApiError>,
    ) -> Result<MoveReport, MoveFailure> {
        self.report.outcome = outcome;
        self.report.total_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        match error {
            None => Ok(self.report),
            Some(error) => Err(MoveFailure {
                error,
                report: Box::new(self.report),
            }),
        }
    }

    /// Drops the receiving cell's claim; a note for the error when that
    /// fails too.
    fn unclaim(&mut self, id: &str) -> String {
        let to = self.to;
        match self.step("unclaim", to, &Request::Unclaim { id: id.into() }) {
            Ok(_) => String::new(),
            Err(e) => format!(
                " (and dropping {}'s claim failed: {}; `cellvm unclaim {} {id}` drops it)",
                to.name(),
                e.message,
                to.name()
            ),
        }
    }

    /// Gives the device back to the giving cell after the receiver failed.
    /// A receiver that died (`receiver_gone`) may still hold the image for
    /// a moment: the kernel drops its lock only when the dying process's
    /// files are closed, possibly after the socket that told us it is gone.
    /// Then a refused claim (`conflict`) is retried, with a growing pause,
    /// for up to [`GIVE_BACK_WAIT`]; every attempt is in the report.
    fn give_back(
        &mut self,
        enable: &Request,
        receiver_gone: bool,
    ) -> Result<serde_json::Value, ApiError> {
        let from = self.from;
        let deadline = Instant::now() + GIVE_BACK_WAIT;
        let mut pause = Duration::from_millis(5);
        loop {
            let r = self.step("enable", from, enable);
            match &r {
                Err(e) if receiver_gone && e.kind == ErrorKind::Conflict => {
                    if Instant::now() + pause > deadline {
                        return r;
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                _ => return r,
            }
        }
    }

    /// Step 1: the giver's agent ready (the receiver's claim checks its own).
    fn check(&mut self) -> Result<(), ApiError> {
        let side = self.from;
        let status = self.step("check", side, &Request::Status {})?;
        if status["agent"]["state"] != "ready" {
            return Err(ApiError::new(
                ErrorKind::NoAgent,
                format!("cell {}: its guest agent is not ready", side.name()),
            ));
        }
        Ok(())
    }
}

/// `kind: message`, as the CLI prints API errors.
fn describe(e: &ApiError) -> String {
    format!("{}: {}", e.kind.as_str(), e.message)
}

/// Moves device `id` from `from` to `to`; each guest gets `guest_ms` to
/// answer. See the module docs for the steps and outcomes.
pub fn move_device(
    id: &str,
    from: &dyn CellEndpoint,
    to: &dyn CellEndpoint,
    guest_ms: u64,
) -> Result<MoveReport, MoveFailure> {
    let mut m = Move {
        from,
        to,
        guest_ms,
        started: Instant::now(),
        report: MoveReport {
            id: id.to_string(),
            from: from.name().to_string(),
            to: to.name().to_string(),
            outcome: MoveOutcome::NothingMoved,
            steps: Vec::new(),
            total_ms: 0.0,
        },
    };
    let (a, b) = (from.name().to_string(), to.name().to_string());
    let failed = |kind: ErrorKind, message: String| Some(ApiError::new(kind, message));
    if a == b {
        let e = failed(
            ErrorKind::BadRequest,
            format!("move {id}: the giving and the receiving cell are both {a}"),
        );
        return m.finish(MoveOutcome::NothingMoved, e);
    }
    if let Err(e) = m.check() {
        let e = failed(e.kind, format!("move {id}: {}; nothing moved", e.message));
        return m.finish(MoveOutcome::NothingMoved, e);
    }
    let claim = Request::Claim {
        id: id.into(),
        from: a.clone(),
    };
    if let Err(e) = m.step("claim", to, &claim) {
        // A claim given up on may still be taken there: drop it (refused,
        // harmlessly, when there is none).
        let _ = to.call(&Request::Unclaim { id: id.into() }, m.within());
        let e = failed(e.kind, format!("move {id}: {}; nothing moved", e.message));
        return m.finish(MoveOutcome::NothingMoved, e);
    }
    let disable = Request::Disable {
        id: id.into(),
        force: false,
        timeout_ms: Some(guest_ms),
    };
    if let Err(e) = m.step("disable", from, &disable) {
        let also = m.unclaim(id);
        let message = format!(
            "move {id}: {a} did not give it up ({}); nothing moved{also}",
            e.message
        );
        return m.finish(MoveOutcome::NothingMoved, failed(e.kind, message));
    }
    let enable = Request::Enable {
        id: id.into(),
        timeout_ms: Some(guest_ms),
    };
    let Err(e) = m.step("enable", to, &enable) else {
        return m.finish(MoveOutcome::Moved, None);
    };
    let also = m.unclaim(id);
    match m.give_back(&enable, e.kind == ErrorKind::NotFound) {
        Ok(_) => {
            let message = format!(
                "move {id}: {b} did not take it ({}); the device is back with {a}{also}",
                e.message
            );
            m.finish(MoveOutcome::Returned, failed(e.kind, message))
        }
        Err(back) => {
            let message = format!(
                "move {id}: {b} did not take it ({}), and giving it back to {a} failed ({}){also}: \
                 it is reserved in both; `cellvm enable {a} {id}` retries",
                e.message, back.message
            );
            m.finish(MoveOutcome::Stranded, failed(e.kind, message))
        }
    }
}

#[cfg(test)]
#[path = "handover_tests.rs"]
mod tests;
