use super::*;
use std::cell::RefCell;
use std::collections::HashMap;

/// A cell that answers from a script: `refuse` maps a request's op to the
/// error it gets; everything it was asked is logged.
struct Fake {
    name: &'static str,
    agent: &'static str,
    refuse: HashMap<&'static str, ErrorKind>,
    /// Refusals that run out: op -> (error, how many more times).
    refuse_times: RefCell<HashMap<&'static str, (ErrorKind, usize)>>,
    log: RefCell<Vec<String>>,
}

impl Fake {
    fn new(name: &'static str) -> Self {
        Fake {
            name,
            agent: "ready",
            refuse: HashMap::new(),
            refuse_times: RefCell::new(HashMap::new()),
            log: RefCell::new(Vec::new()),
        }
    }

    fn refusing(mut self, op: &'static str, kind: ErrorKind) -> Self {
        self.refuse.insert(op, kind);
        self
    }

    fn refusing_times(self, op: &'static str, kind: ErrorKind, times: usize) -> Self {
        self.refuse_times.borrow_mut().insert(op, (kind, times));
        self
    }

    fn asked(&self) -> Vec<String> {
        self.log.borrow().clone()
    }
}

impl CellEndpoint for Fake {
    fn name(&self) -> &str {
        self.name
    }

    fn call(&self, request: &Request, _within: Duration) -> Result<serde_json::Value, ApiError> {
        let op = serde_json::to_value(request).unwrap()["op"]
            .as_str()
            .unwrap()
            .to_string();
        self.log.borrow_mut().push(op.clone());
        if let Some((kind, left)) = self.refuse_times.borrow_mut().get_mut(op.as_str()) {
            if *left > 0 {
                *left -= 1;
                return Err(ApiError::new(
                    *kind,
                    format!("{op} refused by {}", self.name),
                ));
            }
        }
        if let Some(kind) = self.refuse.get(op.as_str()) {
            return Err(ApiError::new(
                *kind,
                format!("{op} refused by {}", self.name),
            ));
        }
        match request {
            Request::Status {} => Ok(serde_json::json!({"agent": {"state": self.agent}})),
            _ => Ok(serde_json::Value::Null),
        }
    }
}

fn steps(r: &MoveReport) -> Vec<String> {
    r.steps
        .iter()
        .map(|s| {
            let failed = if s.error.is_some() { " failed" } else { "" };
            format!("{} {}{failed}", s.step, s.cell)
        })
        .collect()
}

#[test]
fn a_move_claims_then_disables_the_giver_then_enables_the_receiver() {
    let (a, b) = (Fake::new("a"), Fake::new("b"));
    let r = move_device("flash0", &a, &b, 1000).unwrap();
    assert_eq!(r.outcome, MoveOutcome::Moved);
    assert_eq!(steps(&r), ["check a", "claim b", "disable a", "enable b"]);
    assert_eq!(a.asked(), ["status", "disable"]);
    assert_eq!(b.asked(), ["claim", "enable"]);
}

#[test]
fn a_giver_without_a_ready_agent_stops_the_move_before_any_change() {
    let a = Fake {
        agent: "absent",
        ..Fake::new("a")
    };
    let b = Fake::new("b");
    let f = move_device("flash0", &a, &b, 1000).unwrap_err();
    assert_eq!(f.error.kind, ErrorKind::NoAgent);
    assert!(f.error.message.contains("cell a"), "{}", f.error.message);
    assert!(
        f.error.message.ends_with("nothing moved"),
        "{}",
        f.error.message
    );
    assert_eq!(f.report.outcome, MoveOutcome::NothingMoved);
    assert!(b.asked().is_empty());
}

#[test]
fn a_receiver_without_a_ready_agent_refuses_the_claim_and_nothing_moves() {
    // The receiver's claim is its check (its cell refuses it with no_agent).
    let a = Fake::new("a");
    let b = Fake::new("b").refusing("claim", ErrorKind::NoAgent);
    let f = move_device("flash0", &a, &b, 1000).unwrap_err();
    assert_eq!(f.error.kind, ErrorKind::NoAgent);
    assert!(
        f.error.message.ends_with("nothing moved"),
        "{}",
        f.error.message
    );
    assert_eq!(f.report.outcome, MoveOutcome::NothingMoved);
    assert_eq!(a.asked(), ["status"]);
}

#[test]
fn a_refused_claim_moves_nothing_and_drops_any_half_taken_claim() {
    let a = Fake::new("a");
    let b = Fake::new("b").refusing("claim", ErrorKind::Conflict);
    let f = move_device("flash0", &a, &b, 1000).unwrap_err();
    assert_eq!(f.error.kind, ErrorKind::Conflict);
    assert_eq!(f.report.outcome, MoveOutcome::NothingMoved);
    assert_eq!(a.asked(), ["status"]);
    assert_eq!(b.asked(), ["claim", "unclaim"]);
}

#[test]
fn a_giver_that_refuses_keeps_the_device_and_the_receiver_drops_its_claim() {
    let a = Fake::new("a").refusing("disable", ErrorKind::GuestRefused);
    let b = Fake::new("b");
    let f = move_device("flash0", &a, &b, 1000).unwrap_err();
    assert_eq!(f.error.kind, ErrorKind::GuestRefused);
    assert!(
        f.error.message.contains("a did not give it up")
            && f.error.message.contains("nothing moved"),
        "{}",
        f.error.message
    );
    assert_eq!(f.report.outcome, MoveOutcome::NothingMoved);
    assert_eq!(
        steps(&f.report),
        ["check a", "claim b", "disable a failed", "unclaim b"]
    );
}

#[test]
fn a_receiver_that_refuses_gives_the_device_back_to_the_giver() {
    let a = Fake::new("a");
    let b = Fake::new("b").refusing("enable", ErrorKind::GuestTimeout);
    let f = move_device("flash0", &a, &b, 1000).unwrap_err();
    assert_eq!(f.error.kind, ErrorKind::GuestTimeout);
    assert_eq!(f.report.outcome, MoveOutcome::Returned);
    assert!(
        f.error.message.contains("b did not take it") && f.error.message.contains("back with a"),
        "{}",
        f.error.message
    );
    assert_eq!(a.asked(), ["status", "disable", "enable"]);
    assert_eq!(b.asked(), ["claim", "enable", "unclaim"]);
}

#[test]
fn a_failed_return_leaves_the_device_stranded_and_says_how_to_retry() {
    let a = Fake::new("a").refusing("enable", ErrorKind::GuestRefused);
    let b = Fake::new("b").refusing("enable", ErrorKind::GuestRefused);
    let f = move_device("flash0", &a, &b, 1000).unwrap_err();
    assert_eq!(f.report.outcome, MoveOutcome::Stranded);
    assert!(
        f.error.message.contains("`cellvm enable a flash0` retries"),
        "{}",
        f.error.message
    );
}

#[test]
fn a_failed_unclaim_is_reported_with_the_command_that_drops_the_claim() {
    let a = Fake::new("a").refusing("disable", ErrorKind::GuestRefused);
    let b = Fake::new("b").refusing("unclaim", ErrorKind::Internal);
    let f = move_device("flash0", &a, &b, 1000).unwrap_err();
    assert!(
        f.error
            .message
            .contains("`cellvm unclaim b flash0` drops it"),
        "{}",
        f.error.message
    );
}

#[test]
fn a_move_to_the_same_cell_is_a_bad_request() {
    let (a, a2) = (Fake::new("a"), Fake::new("a"));
    let f = move_device("flash0", &a, &a2, 1000).unwrap_err();
    assert_eq!(f.error.kind, ErrorKind::BadRequest);
    assert!(a.asked().is_empty() && a2.asked().is_empty());
}

#[test]
fn a_failure_carries_its_report_as_the_errors_detail() {
    let a = Fake::new("a").refusing("disable", ErrorKind::GuestRefused);
    let b = Fake::new("b");
    let e = move_device("flash0", &a, &b, 1000)
        .unwrap_err()
        .into_api_error();
    let detail: MoveReport = serde_json::from_value(e.detail.unwrap()).unwrap();
    assert_eq!(detail.outcome, MoveOutcome::NothingMoved);
    assert_eq!(
        detail.steps[2].error.as_deref(),
        Some("guest_refused: disable refused by a")
    );
}

#[test]
fn a_receiver_that_died_gets_its_image_lock_waited_for_before_the_device_goes_back() {
    // b's process is gone (its socket closed) but its lock lingers for two
    // attempts: the give-back retries and the device is back with a.
    let a = Fake::new("a").refusing_times("enable", ErrorKind::Conflict, 2);
    let b = Fake::new("b").refusing("enable", ErrorKind::NotFound);
    let f = move_device("flash0", &a, &b, 1000).unwrap_err();
    assert_eq!(f.report.outcome, MoveOutcome::Returned);
    assert_eq!(
        a.asked(),
        ["status", "disable", "enable", "enable", "enable"]
    );
}

#[test]
fn a_conflict_from_a_receiver_that_answered_is_not_waited_out() {
    // b refused (it is alive): a conflict on the give-back is final.
    let a = Fake::new("a").refusing_times("enable", ErrorKind::Conflict, 1);
    let b = Fake::new("b").refusing("enable", ErrorKind::GuestRefused);
    let f = move_device("flash0", &a, &b, 1000).unwrap_err();
    assert_eq!(f.report.outcome, MoveOutcome::Stranded);
    assert_eq!(a.asked(), ["status", "disable", "enable"]);
}

#[test]
fn a_lock_that_never_goes_strands_the_device_after_the_wait() {
    let a = Fake::new("a").refusing("enable", ErrorKind::Conflict);
    let b = Fake::new("b").refusing("enable", ErrorKind::NotFound);
    let started = Instant::now();
    let f = move_device("flash0", &a, &b, 1000).unwrap_err();
    assert_eq!(f.report.outcome, MoveOutcome::Stranded);
    assert!(started.elapsed() <= GIVE_BACK_WAIT + Duration::from_secs(1));
    assert!(a.asked().iter().filter(|op| *op == "enable").count() > 2);
}
