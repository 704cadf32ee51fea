//! `cellvm move ID --from A --to B`: asks cell A to hand device ID to cell
//! B (the API's `move`, run by A: [`crate::api::handover`]) and prints
//! each step with its time, on failure too.

use super::socket_for;
use crate::api::handover::MoveReport;
use crate::api::protocol::Request;
use std::time::Duration;

/// Prints the steps of `report`, one line each.
fn print_steps(report: &MoveReport) {
    for s in &report.steps {
        match &s.error {
            None => println!("  {:<8} {:<16} {:8.1} ms", s.step, s.cell, s.ms),
            Some(e) => println!(
                "  {:<8} {:<16} {:8.1} ms  FAILED: {e}",
                s.step, s.cell, s.ms
            ),
        }
    }
}

/// The whole move's answer deadline: five guest answers (check, claim,
/// disable, enable, give back) with five seconds each to spare.
fn move_deadline(timeout_s: u64) -> Duration {
    Duration::from_secs(timeout_s.saturating_add(5).saturating_mul(5))
}

/// Moves device `id` from cell `from` to cell `to` (a cell name: `from`
/// reaches it in the runtime directory); `timeout_s` bounds each guest's
/// answer.
pub fn move_device(id: &str, from: &str, to: &str, timeout_s: u64) -> Result<u8, String> {
    let request = Request::Move {
        id: id.to_string(),
        to: to.to_string(),
        timeout_ms: Some(timeout_s.saturating_mul(1000)),
    };
    let r = crate::api::client::call(&socket_for(from), &request, move_deadline(timeout_s))?;
    println!("move {id} from {from} to {to}:");
    if let Some(report) = r.result.clone() {
        let report: MoveReport = serde_json::from_value(report)
            .map_err(|e| format!("malformed answer from cell {from}: {e}"))?;
        print_steps(&report);
        println!(
            "moved {id} from {from} to {to} in {:.1} ms",
            report.total_ms
        );
        return Ok(0);
    }
    let Some(e) = r.error else {
        return Err(format!("cell {from}: the move failed without a reason"));
    };
    if let Some(report) = e
        .detail
        .and_then(|d| serde_json::from_value::<MoveReport>(d).ok())
    {
        print_steps(&report);
    }
    Err(format!("cell {from}: {}: {}", e.kind.as_str(), e.message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_move_deadline_covers_every_guest_answer() {
        assert_eq!(move_deadline(10), Duration::from_secs(75));
        assert_eq!(move_deadline(u64::MAX), Duration::from_secs(u64::MAX));
    }
}
