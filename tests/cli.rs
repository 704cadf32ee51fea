//! The `cellvm` binary end to end on the host's KVM with tiny guests:
//! exit codes, config errors, `dtb`, and the control API commands.

// Test and benchmark code: a failed step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::guest::{write_elf, Asm};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

const CELLVM: &str = env!("CARGO_BIN_EXE_cellvm");

fn write_cell(dir: &Path, name: &str, kernel: &Path) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\n[cpus]\ncount = 1\n[[memory]]\nsize = \"64M\"\n\
             [kernel]\npath = \"{}\"\n[[pci_bridge]]\nid = \"pci0\"\nkind = \"ecam\"\n",
            kernel.display()
        ),
    )
    .unwrap();
    path
}

fn cellvm(runtime: &Path, args: &[&str]) -> std::process::Output {
    Command::new(CELLVM)
        .args(args)
        .env("CELLVM_RUNTIME_DIR", runtime)
        .output()
        .unwrap()
}

#[test]
fn run_exits_with_the_guests_debug_exit_code_and_prints_the_console() {
    let dir = tempfile::tempdir().unwrap();
    let mut asm = Asm::new();
    asm.puts("hi\n").exit(33);
    let elf = write_elf(dir.path(), "g.elf", &asm);
    let cell = write_cell(dir.path(), "exit33", &elf);
    let out = cellvm(dir.path(), &["run", cell.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(33));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("cell exit33 stopped: guest requested exit with code 33 (exit status 33)"));
}

#[test]
fn bad_config_fails_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cell = dir.path().join("bad.toml");
    std::fs::write(&cell, "name = \"b\"\n[cpus]\ncount = 0\n").unwrap();
    let out = cellvm(dir.path(), &["run", cell.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:3:9: cpus.count: a cell needs at least 1 vCPU, got 0",
            cell.display()
        )),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_with_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = cellvm(dir.path(), &["run"]);
    assert_eq!(out.status.code(), Some(2));
    let out = cellvm(dir.path(), &["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn dtb_of_the_demo_cell_decompiles_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let dtb = dir.path().join("demo.dtb");
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/cells/linux-demo.toml");
    let out = cellvm(dir.path(), &["dtb", demo, "-o", dtb.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dtc = Command::new("dtc")
        .args(["-I", "dtb", "-O", "dts", "-o", "/dev/null"])
        .arg(&dtb)
        .output()
        .expect("dtc is missing: apt-get install device-tree-compiler");
    assert!(dtc.status.success());
    assert_eq!(String::from_utf8_lossy(&dtc.stderr), "", "dtc warnings");
}

#[test]
fn control_api_serves_a_running_cell() {
    let dir = tempfile::tempdir().unwrap();
    let mut asm = Asm::new();
    // Announce, then wait for one console byte and exit with it.
    asm.puts("ready\n").getc().exit_with_al();
    let elf = write_elf(dir.path(), "wait.elf", &asm);
    let cell = write_cell(dir.path(), "api-test", &elf);
    let mut child = Command::new(CELLVM)
        .args(["run", cell.to_str().unwrap()])
        .env("CELLVM_RUNTIME_DIR", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let socket = dir.path().join("api-test.sock");
    assert!(socket.exists());

    let status = cellvm(dir.path(), &["status", "api-test"]);
    assert!(status.status.success());
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("name=api-test") && text.contains("state=running"),
        "{text}"
    );

    let devices = cellvm(dir.path(), &["devices", "api-test", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&devices.stdout).unwrap();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    for id in ["console", "debug-exit", "boot-timer", "channel", "pci0"] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }

    let cells = cellvm(dir.path(), &["cells"]);
    assert!(String::from_utf8_lossy(&cells.stdout).contains("name=api-test"));

    let by_path = cellvm(dir.path(), &["status", socket.to_str().unwrap(), "--json"]);
    assert!(by_path.status.success());

    let missing = cellvm(dir.path(), &["status", "no-such-cell"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("is the cell running?"));

    child.stdin.as_mut().unwrap().write_all(b"X").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(i32::from(b'X')));
    assert!(!socket.exists(), "socket removed when the cell stops");
}

#[test]
fn shipped_device_descriptions_are_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/cells/devices");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let opts = cellvm::config::LoadOptions { check_files: true };
        if let Err(e) = cellvm::config::load_device(&path, &opts) {
            panic!("{}: {e}", path.display());
        }
        seen += 1;
    }
    assert!(seen >= 2);
}
