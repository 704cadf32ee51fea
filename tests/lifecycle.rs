//! The lifecycle of a running cell through the `cellvm` binary on the
//! host's KVM with a tiny guest: `run --paused`, `pause`, `resume`,
//! `destroy`, `stats` and the state `status` reports.

// Test and benchmark code: a failed step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::host_cells::{stop, wait_ready, Rig};
use std::time::{Duration, Instant};

/// `cellvm CMD CELL --json` parsed.
fn json(rig: &Rig, cmd: &str, cell: &str) -> serde_json::Value {
    let out = rig.cellvm(&[cmd, cell, "--json"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Port I/O exits of every vCPU together.
fn pio_exits(rig: &Rig, cell: &str) -> u64 {
    let stats = json(rig, "stats", cell);
    stats["vcpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["pio"].as_u64().unwrap())
        .sum()
}

/// `cellvm CMD CELL` succeeds and prints `state=STATE`.
fn lifecycle(rig: &Rig, cmd: &str, cell: &str, state: &str) {
    let out = rig.cellvm(&[cmd, cell]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{cmd}: {out:?}");
    assert_eq!(stdout.trim(), format!("state={state}"), "{cmd}");
}

#[test]
fn a_cell_run_paused_runs_no_guest_code_until_resumed() {
    let rig = Rig::new();
    let cell = rig.cell("p", "", "");
    let mut child = rig.spawn(&cell, &["--paused"]);
    // The socket is served before any vCPU could run: wait for it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !rig.path("p.sock").exists() {
        assert!(Instant::now() < deadline, "no control socket");
        std::thread::yield_now();
    }
    let status = loop {
        let out = rig.cellvm(&["status", "p", "--json"]);
        if out.status.success() {
            break serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap();
        }
        assert!(Instant::now() < deadline, "status never answered: {out:?}");
    };
    assert_eq!(status["state"], "paused");
    assert_eq!(pio_exits(&rig, "p"), 0, "a vCPU ran while paused");
    lifecycle(&rig, "resume", "p", "running");
    wait_ready(&mut child);
    assert_eq!(json(&rig, "status", "p")["state"], "running");
    stop(child);
}

#[test]
fn a_paused_cell_makes_no_exits_and_runs_on_after_resume() {
    let rig = Rig::new();
    let child = rig.start(&rig.cell("q", "", ""));
    lifecycle(&rig, "pause", "q", "paused");
    assert_eq!(json(&rig, "status", "q")["state"], "paused");
    let paused_at = pio_exits(&rig, "q");
    assert_eq!(pio_exits(&rig, "q"), paused_at, "exits while paused");
    // Pausing a paused cell is fine.
    lifecycle(&rig, "pause", "q", "paused");
    lifecycle(&rig, "resume", "q", "running");
    let deadline = Instant::now() + Duration::from_secs(30);
    while pio_exits(&rig, "q") == paused_at {
        assert!(Instant::now() < deadline, "no exits after resume");
    }
    stop(child);
}

#[test]
fn stats_count_exits_per_vcpu_and_accesses_per_device() {
    let rig = Rig::new();
    let child = rig.start(&rig.cell("s", "", ""));
    let stats = json(&rig, "stats", "s");
    assert_eq!(stats["name"], "s");
    let vcpus = stats["vcpus"].as_array().unwrap();
    assert_eq!(vcpus.len(), 1);
    // "ready\n" is six console writes, then the guest polls the console.
    assert!(vcpus[0]["pio"].as_u64().unwrap() >= 6, "{stats}");
    let console = stats["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device"] == "console")
        .unwrap_or_else(|| panic!("no console in {stats}"));
    assert_eq!(console["bus"], "pio");
    assert!(console["accesses"].as_u64().unwrap() >= 6, "{stats}");
    let table = rig.cellvm(&["stats", "s"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("vcpu "), "{text}");
    assert!(text.contains("\nconsole "), "{text}");
    stop(child);
}

#[test]
fn destroy_stops_the_cell_with_exit_status_4() {
    let rig = Rig::new();
    let child = rig.start(&rig.cell("d", "", ""));
    lifecycle(&rig, "destroy", "d", "stopping");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cell d stopped: destroyed (cellvm destroy) (exit status 4)"),
        "{err}"
    );
}

#[test]
fn destroy_of_a_paused_cell_stops_it() {
    let rig = Rig::new();
    let child = rig.start(&rig.cell("dp", "", ""));
    lifecycle(&rig, "pause", "dp", "paused");
    lifecycle(&rig, "destroy", "dp", "stopping");
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(4));
}

#[test]
fn shutdown_of_a_guest_without_agent_says_no_agent_and_force_destroys_it() {
    let rig = Rig::new();
    let child = rig.start(&rig.cell("n", "", ""));
    let out = rig.cellvm(&["shutdown", "n", "--timeout", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cell n: no_agent: shutdown: "),
        "the error names the missing agent: {err}"
    );
    assert_eq!(json(&rig, "status", "n")["state"], "running");
    let out = rig.cellvm(&["shutdown", "n", "--timeout", "1", "--force"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("forced=true"), "{text}");
    assert!(
        text.contains("stopped=destroyed (cellvm destroy)"),
        "{text}"
    );
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(4));
}

#[test]
fn a_paused_cell_refuses_changes_that_need_its_guest_and_force_shutdown_destroys_it() {
    let rig = Rig::new();
    let child = rig.start(&rig.cell("pz", "", ""));
    lifecycle(&rig, "pause", "pz", "paused");
    let rng = rig.path("rng.toml");
    std::fs::write(&rng, "[[virtio_mmio]]\nid = \"rng9\"\nkind = \"rng\"\n").unwrap();
    let out = rig.cellvm(&["attach", "pz", rng.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("conflict: attach: the cell is paused and its guest cannot answer"),
        "{err}"
    );
    let out = rig.cellvm(&["shutdown", "pz", "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = rig.cellvm(&["shutdown", "pz", "--timeout", "1", "--force"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(4));
}
