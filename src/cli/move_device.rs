//! `cellvm move ID --from A --to B`: hands a device from one running cell
//! to another with both guests' consent (docs/partitioning.md, "Moving a
//! device between cells").
//!
//! Steps, each printed with its time: B claims the images from A (locked
//! while A still holds them, so no third process can take them between
//! A's release and B's enable; refused if B's guest has no agent, or the
//! images are not A's alone) → A disables the device (A's guest removes
//! it: driver unbound, writes flushed; A releases the images) → B enables
//! it (B's guest creates it). A refusal by A moves nothing; a refusal by B
//! gives the device back to A (re-enabled there) and says which step
//! failed.

use super::api_call;
use crate::api::protocol::Request;
use std::time::{Duration, Instant};

/// One request of the move, timed and printed.
fn step(label: &str, cell: &str, request: &Request, answer_within: Duration) -> Result<(), String> {
    let started = Instant::now();
    let r = api_call(cell, request, answer_within);
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match &r {
        Ok(_) => println!("  {label:<8} {cell:<16} {ms:8.1} ms"),
        Err(e) => println!("  {label:<8} {cell:<16} {ms:8.1} ms  FAILED: {e}"),
    }
    r.map(|_| ())
}

/// Whether `cell`'s guest agent is ready (`status`).
fn agent_ready(cell: &str) -> Result<bool, String> {
    let status = api_call(cell, &Request::Status {}, Duration::from_secs(5))?;
    Ok(status["agent"]["state"] == "ready")
}

/// Moves device `id` from cell `from` to cell `to`; `timeout_s` bounds each
/// guest's answer.
pub fn move_device(id: &str, from: &str, to: &str, timeout_s: u64) -> Result<u8, String> {
    if from == to {
        return Err(format!("move {id}: --from and --to are both {from}"));
    }
    for cell in [from, to] {
        if !agent_ready(cell)? {
            return Err(format!(
                "move {id}: cell {cell}: no_agent: its guest agent is not ready; nothing moved"
            ));
        }
    }
    let (guest_ms, answer_within) = super::guest_wait(timeout_s);
    let started = Instant::now();
    println!("move {id} from {from} to {to}:");
    let claim = Request::Claim {
        id: id.to_string(),
        from: from.to_string(),
    };
    // The claim may wait for a change B is making (one at a time per
    // cell): give it as long as a guest answer.
    let unclaim = || -> String {
        let r = step(
            "unclaim",
            to,
            &Request::Unclaim { id: id.to_string() },
            answer_within,
        );
        match r {
            Ok(()) => String::new(),
            Err(e) => format!(
                " (and dropping {to}'s claim failed: {e}; `cellvm unclaim {to} {id}` drops it)"
            ),
        }
    };
    if let Err(e) = step("claim", to, &claim, answer_within) {
        // A claim this side gave up on may still be taken there: drop it
        // (refused, harmlessly, when there is none).
        let _ = api_call(to, &Request::Unclaim { id: id.to_string() }, answer_within);
        return Err(format!("move {id}: {e}; nothing moved"));
    }
    let disable = Request::Disable {
        id: id.to_string(),
        force: false,
        timeout_ms: Some(guest_ms),
    };
    if let Err(e) = step("disable", from, &disable, answer_within) {
        let also = unclaim();
        return Err(format!(
            "move {id}: {from} did not give it up ({e}); nothing moved{also}"
        ));
    }
    let enable = Request::Enable {
        id: id.to_string(),
        timeout_ms: Some(guest_ms),
    };
    if let Err(e) = step("enable", to, &enable, answer_within) {
        let also = unclaim();
        return match step("enable", from, &enable, answer_within) {
            Ok(()) => Err(format!(
                "move {id}: {to} did not take it ({e}); the device is back with {from}{also}"
            )),
            Err(back) => Err(format!(
                "move {id}: {to} did not take it ({e}), and giving it back to {from} failed \
                 ({back}){also}: see `cellvm devices {from}` and `cellvm devices {to}`; \
                 `cellvm enable {from} {id}` retries"
            )),
        };
    }
    println!(
        "moved {id} from {from} to {to} in {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(0)
}
