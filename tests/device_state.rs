//! Device states of a running cell through the `cellvm` binary on the
//! host's KVM with a tiny guest (which has no agent): `enable` and
//! `disable` refusals leave the device and its image claim as they were,
//! `disable --force` releases the image to another cell.

// Test and benchmark code: a failed step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::host_cells::{stop, Rig};

fn disk(state: &str) -> String {
    format!(
        "[[virtio_mmio]]\nid = \"d\"\nkind = \"block\"\npath = \"disk.img\"\nstate = \"{state}\"\n"
    )
}

/// `cellvm ARGS...` fails with status 1; its stderr.
fn fails(rig: &Rig, args: &[&str]) -> String {
    let out = rig.cellvm(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    err
}

/// The state `cellvm devices` shows for device `id` of `cell`.
fn state(rig: &Rig, cell: &str, id: &str) -> String {
    let out = rig.cellvm(&["devices", cell, "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = list
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {list}"));
    d["state"].as_str().unwrap().to_string()
}

#[test]
fn enable_without_an_agent_is_refused_and_keeps_nothing_claimed() {
    let rig = Rig::new();
    let a = rig.start(&rig.cell("a", "", &disk("reserved")));
    let err = fails(&rig, &["enable", "a", "d", "--timeout", "1"]);
    assert!(err.contains("no_agent"), "{err}");
    assert_eq!(state(&rig, "a", "d"), "reserved");
    // The refused enable released the image: another cell may write it.
    stop(rig.start(&rig.cell("b", "", &disk("okay"))));
    stop(a);
}

#[test]
fn disable_without_an_agent_is_refused_and_force_releases_the_image() {
    let rig = Rig::new();
    let a = rig.start(&rig.cell("a", "", &disk("okay")));
    let b = rig.cell("b", "", &disk("okay"));
    let err = fails(&rig, &["disable", "a", "d", "--timeout", "1"]);
    assert!(err.contains("no_agent"), "{err}");
    assert_eq!(state(&rig, "a", "d"), "boot");
    assert!(rig.refused(&b).contains("is in use by cell a"));
    let out = rig.cellvm(&["disable", "a", "d", "--timeout", "1", "--force"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("forced=true") && text.contains("state=reserved"),
        "{text}"
    );
    assert_eq!(state(&rig, "a", "d"), "reserved");
    stop(rig.start(&b));
    stop(a);
}

#[test]
fn state_changes_that_make_no_sense_get_typed_errors() {
    let rig = Rig::new();
    let a = rig.start(&rig.cell("a", "", &disk("okay")));
    let err = fails(&rig, &["enable", "a", "d"]);
    assert!(err.contains("conflict: d is already okay"), "{err}");
    let err = fails(&rig, &["disable", "a", "nope"]);
    assert!(
        err.contains("not_found: nope is not a device of the cell file"),
        "{err}"
    );
    stop(a);
}

#[test]
fn a_move_between_cells_without_agents_is_refused_before_anything_changes() {
    let rig = Rig::new();
    let a = rig.start(&rig.cell("a", "", &disk("okay")));
    let b = rig.start(&rig.cell("b", "", &disk("reserved")));
    let err = fails(&rig, &["move", "d", "--from", "a", "--to", "b"]);
    assert!(
        err.contains("no_agent: move d: cell a: its guest agent is not ready; nothing moved"),
        "{err}"
    );
    // The receiving cell is a name, never a path to some other socket.
    let err = fails(&rig, &["move", "d", "--from", "a", "--to", "../elsewhere"]);
    assert!(
        err.contains("bad_request") && err.contains("is not a cell name"),
        "{err}"
    );
    // Every step the move took is printed, the failing one marked.
    let out = rig.cellvm(&["move", "d", "--from", "a", "--to", "b"]);
    let steps = String::from_utf8_lossy(&out.stdout);
    assert!(steps.contains("check    a"), "{steps}");
    assert_eq!(state(&rig, "a", "d"), "boot");
    assert_eq!(state(&rig, "b", "d"), "reserved");
    // a still holds the image.
    assert!(rig
        .refused(&rig.cell("c", "", &disk("okay")))
        .contains("in use by cell a"));
    stop(a);
    stop(b);
}
