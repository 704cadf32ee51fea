//! Add-on boards on a running cell through the `cellvm` binary on the
//! host's KVM with a tiny guest (which has no agent): a plug the guest
//! cannot take, or whose image another cell holds, changes nothing and
//! keeps nothing claimed; connector and board refusals are typed.

// Test and benchmark code: a failed step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::host_cells::{stop, Rig};

const CONNECTOR: &str = "[[connector]]\nid = \"j1\"\n";

fn disk(state: &str) -> String {
    format!(
        "[[virtio_mmio]]\nid = \"d\"\nkind = \"block\"\npath = \"disk.img\"\nstate = \"{state}\"\n"
    )
}

/// Writes a board with a disk on `disk.img` into the rig's directory.
fn board(rig: &Rig) -> String {
    std::fs::write(
        rig.path("board.dtso"),
        "/dts-v1/;\n/plugin/;\n&connector {\n\tboard-info { compatible = \"cellvm,board-info\"; };\n};\n",
    )
    .unwrap();
    let path = rig.path("board.toml");
    std::fs::write(
        &path,
        "name = \"b\"\noverlay = \"board.dtso\"\n[[virtio_mmio]]\nid = \"bd\"\nkind = \"block\"\npath = \"disk.img\"\n",
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

/// `cellvm ARGS...` fails with status 1; its stderr.
fn fails(rig: &Rig, args: &[&str]) -> String {
    let out = rig.cellvm(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    err
}

/// `cellvm devices CELL --json`.
fn devices(rig: &Rig, cell: &str) -> serde_json::Value {
    let out = rig.cellvm(&["devices", cell, "--json"]);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn device<'a>(list: &'a serde_json::Value, id: &str) -> Option<&'a serde_json::Value> {
    list.as_array().unwrap().iter().find(|d| d["id"] == id)
}

#[test]
fn a_plug_without_an_agent_changes_nothing_and_keeps_no_image_claimed() {
    let rig = Rig::new();
    let a = rig.start(&rig.cell("a", "", CONNECTOR));
    let board = board(&rig);
    let before = devices(&rig, "a");
    assert_eq!(device(&before, "j1").unwrap()["state"], "empty");
    let err = fails(&rig, &["plug", "a", "j1", &board, "--timeout", "1"]);
    assert!(err.contains("no_agent"), "{err}");
    assert_eq!(devices(&rig, "a"), before);
    // The refused plug released the board's image: another cell may write it.
    stop(rig.start(&rig.cell("c", "", &disk("okay"))));
    stop(a);
}

#[test]
fn a_plug_whose_image_another_cell_holds_is_refused_and_changes_nothing() {
    let rig = Rig::new();
    let holder = rig.start(&rig.cell("h", "", &disk("okay")));
    let a = rig.start(&rig.cell("a", "", CONNECTOR));
    let board = board(&rig);
    let before = devices(&rig, "a");
    let err = fails(&rig, &["plug", "a", "j1", &board, "--timeout", "1"]);
    assert!(err.contains("conflict") && err.contains("cell h"), "{err}");
    assert_eq!(devices(&rig, "a"), before);
    stop(a);
    stop(holder);
}

#[test]
fn connector_and_board_refusals_are_typed() {
    let rig = Rig::new();
    let a = rig.start(&rig.cell("a", "", CONNECTOR));
    let board = board(&rig);
    let err = fails(&rig, &["plug", "a", "j9", &board]);
    assert!(
        err.contains("not_found: the cell has no connector \"j9\""),
        "{err}"
    );
    let err = fails(&rig, &["unplug", "a", "j1"]);
    assert!(
        err.contains("not_found: nothing is plugged into connector j1"),
        "{err}"
    );
    let err = fails(&rig, &["disconnect", "a", "j1"]);
    assert!(
        err.contains("connector j1 is in the cell file and cannot be disconnected"),
        "{err}"
    );
    std::fs::write(rig.path("j3.toml"), "[[connector]]\nid = \"j3\"\n").unwrap();
    let j3 = rig.path("j3.toml");
    let err = fails(
        &rig,
        &["connect", "a", j3.to_str().unwrap(), "--timeout", "1"],
    );
    assert!(err.contains("no_agent"), "{err}");
    assert!(device(&devices(&rig, "a"), "j3").is_none());
    std::fs::write(rig.path("bad.toml"), "[[connector]]\nid = \"J-3\"\n").unwrap();
    let bad = rig.path("bad.toml");
    let err = fails(&rig, &["connect", "a", bad.to_str().unwrap()]);
    assert!(err.contains("bad.toml:2:6: connector[0].id"), "{err}");
    stop(a);
}
