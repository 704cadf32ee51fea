//! The `cellvm` binary end to end on the host's KVM with tiny guests:
//! exit codes, config errors, `dtb`, and the control API commands.

// Test and benchmark code: a failed step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::guest::{write_elf, Asm};
use common::host_cells::CellProcess;
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
    let mut child = CellProcess::new(
        Command::new(CELLVM)
            .args(["run", cell.to_str().unwrap()])
            .env("CELLVM_RUNTIME_DIR", dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
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

/// `dtc -s` of a DTB: sorted DTS text, for comparing trees.
fn sorted_dts(dtb: &Path) -> String {
    let out = Command::new("dtc")
        .args(["-q", "-s", "-I", "dtb", "-O", "dts"])
        .arg(dtb)
        .output()
        .expect("dtc (apt-get install device-tree-compiler)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn overlay_and_dtb_with_give_what_fdtoverlay_makes_of_the_base_tree() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cell = repo.join("cells/linux-demo.toml");
    let arg = |p: &Path| p.to_str().unwrap().to_string();
    let (base, pci, uart) = (
        dir.path().join("base.dtb"),
        dir.path().join("pci.dtbo"),
        dir.path().join("uart.dtbo"),
    );
    let run = |args: &[String]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = cellvm(dir.path(), &args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["dtb".into(), arg(&cell), "-o".into(), arg(&base)]);
    let pci_desc = repo.join("cells/devices/hot-pci.toml");
    let uart_desc = repo.join("cells/devices/hot-uart.toml");
    run(&[
        "overlay".into(),
        arg(&cell),
        arg(&pci_desc),
        "-o".into(),
        arg(&pci),
    ]);
    let with = dir.path().join("with.dtb");
    run(&[
        "dtb".into(),
        arg(&cell),
        "--with".into(),
        arg(&pci_desc),
        "--with".into(),
        arg(&uart_desc),
        "-o".into(),
        arg(&with),
    ]);
    let pci_only = dir.path().join("pci-only.dtb");
    run(&[
        "dtb".into(),
        arg(&cell),
        "--with".into(),
        arg(&pci_desc),
        "-o".into(),
        arg(&pci_only),
    ]);
    run(&[
        "overlay".into(),
        arg(&cell),
        arg(&uart_desc),
        "-o".into(),
        arg(&uart),
    ]);
    let merged = dir.path().join("merged.dtb");
    let out = Command::new("fdtoverlay")
        .arg("-i")
        .arg(&base)
        .arg("-o")
        .arg(&merged)
        .arg(&pci)
        .arg(&uart)
        .output()
        .expect("fdtoverlay (apt-get install device-tree-compiler)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = sorted_dts(&merged);
    assert_eq!(sorted_dts(&with), expected);
    assert!(expected.contains("pci@e0100000"), "{expected}");
    assert!(expected.contains("serial@2f8"), "{expected}");
    assert!(!sorted_dts(&pci_only).contains("serial@2f8"));
}

#[test]
fn overlay_of_a_colliding_device_fails_with_the_layouts_reason() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let desc = dir.path().join("bad.toml");
    std::fs::write(&desc, "[[uart]]\nid = \"u\"\nport = 0x3f8\n").unwrap();
    let out = cellvm(
        dir.path(),
        &[
            "overlay",
            repo.join("cells/linux-demo.toml").to_str().unwrap(),
            desc.to_str().unwrap(),
            "-o",
            dir.path().join("x.dtbo").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("uart u at ports 0x3f8..0x400 collides with console"),
        "{err}"
    );
    assert!(!dir.path().join("x.dtbo").exists());
}

/// A cell file `NAME.toml` in `dir` pinning vCPU 0 to host CPU `pin`, with
/// an optional extra table; its kernel is a tiny guest in `dir`.
fn write_pinned_cell(dir: &Path, name: &str, pin: usize, table: &str) -> std::path::PathBuf {
    let mut asm = Asm::new();
    asm.exit(0);
    let elf = write_elf(dir, &format!("{name}.elf"), &asm);
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\n[cpus]\ncount = 1\npin = [{pin}]\n[[memory]]\nsize = \"64M\"\n\
             [kernel]\npath = \"{}\"\n{table}",
            elf.display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn check_of_several_cells_that_fit_says_they_can_share_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_pinned_cell(dir.path(), "a", 0, "");
    let b = write_pinned_cell(dir.path(), "b", 1, "");
    let out = cellvm(
        dir.path(),
        &["check", a.to_str().unwrap(), b.to_str().unwrap()],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        stdout.contains("the 2 cells can share this host"),
        "{stdout}"
    );
    assert!(!stdout.contains("address map"), "{stdout}");
}

#[test]
fn check_of_cells_that_conflict_names_both_files_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("disk.img"), [0u8; 512]).unwrap();
    let disk = "[[virtio_mmio]]\nid = \"d\"\nkind = \"block\"\npath = \"disk.img\"\n";
    let a = write_pinned_cell(dir.path(), "a", 1, disk);
    let b = write_pinned_cell(dir.path(), "b", 1, disk);
    let out = cellvm(
        dir.path(),
        &["check", a.to_str().unwrap(), b.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let (a, b) = (a.display(), b.display());
    assert!(
        err.contains(&format!(
            "{b}:4:8: cpus.pin[0]: host CPU 1 is pinned by cells a and b; pin it in one cell \
             only, or say cpus.shared = true in both; cell a ({a}:4:8: cpus.pin[0])"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{b}:12:8: virtio_mmio[0].path: disk image")),
        "{err}"
    );
    assert!(
        err.contains("the 2 cells cannot share this host: 2 conflict(s)"),
        "{err}"
    );
}

#[test]
fn check_of_several_cells_reports_every_invalid_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_pinned_cell(dir.path(), "a", 0, "bogus = 1\n");
    let b = write_pinned_cell(dir.path(), "b", 1, "[oops]\n");
    let out = cellvm(
        dir.path(),
        &["check", a.to_str().unwrap(), b.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:", a.display())), "{err}");
    assert!(err.contains(&format!("{}:", b.display())), "{err}");
    assert!(err.contains("2 of the 2 cells are invalid"), "{err}");
}

/// A cell file with connector j1 (its kernel is never read by `dtb`).
fn write_connector_cell(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("board-host.toml");
    std::fs::write(
        &path,
        "name = \"board-host\"\n[cpus]\ncount = 1\n[[memory]]\nsize = \"64M\"\n\
         [kernel]\npath = \"bzImage\"\n[[connector]]\nid = \"j1\"\n",
    )
    .unwrap();
    path
}

#[test]
fn dtb_with_the_shipped_add_on_plugged_puts_its_nodes_under_the_connector() {
    let dir = tempfile::tempdir().unwrap();
    let cell = write_connector_cell(dir.path());
    let board = Path::new(env!("CARGO_MANIFEST_DIR")).join("cells/addons/sensor-board.toml");
    let dtb = dir.path().join("t.dtb");
    let out = cellvm(
        dir.path(),
        &[
            "dtb",
            cell.to_str().unwrap(),
            "--plug",
            &format!("j1={}", board.display()),
            "-o",
            dtb.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dts = sorted_dts(&dtb);
    let connector = dts
        .split("connector-bus@d1000000 {")
        .nth(1)
        .unwrap_or_else(|| panic!("no connector node:\n{dts}"));
    for node in [
        "\t\tvirtio_mmio@d1000000 {",
        "\t\tvirtio_mmio@d1001000 {",
        "\t\tclock-24m {",
        "\t\tsensor-info {",
    ] {
        assert!(connector.contains(node), "{node} missing:\n{dts}");
    }
}

#[test]
fn dtb_with_a_broken_add_on_names_its_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let cell = write_connector_cell(dir.path());
    std::fs::write(
        dir.path().join("b.dtso"),
        "/dts-v1/;\n/plugin/;\n&j1 {\n\tled { gpios = <&gpio 3 GPIO_ACTIVE_HIGH>; };\n};\n",
    )
    .unwrap();
    let board = dir.path().join("b.toml");
    std::fs::write(&board, "name = \"b\"\noverlay = \"b.dtso\"\n").unwrap();
    let out = cellvm(
        dir.path(),
        &[
            "dtb",
            cell.to_str().unwrap(),
            "--plug",
            &format!("j1={}", board.display()),
            "-o",
            dir.path().join("t.dtb").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "{}:4:25: unexpected 'G', expected a number, '&label' or '>'",
        dir.path().join("b.dtso").display()
    );
    assert!(err.contains(&expected), "{err}");
    assert!(!dir.path().join("t.dtb").exists());
}
