//! cellvm as a CI boot-test runner, on the host's KVM with tiny guests and
//! no cell file (`cellvm run --kernel ELF ...`): the timeout (124),
//! `--expect`, `--fail-on` and its default set, the console log, the JUnit
//! report, the pvpanic device (5) and the documented exit statuses.

// Test code: a failed step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::guest::{write_elf, Asm};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CELLVM: &str = env!("CARGO_BIN_EXE_cellvm");

/// A guest that prints `text` and then waits forever.
fn printing(dir: &Path, name: &str, text: &str) -> PathBuf {
    let mut asm = Asm::new();
    asm.puts(text).halt_forever();
    write_elf(dir, name, &asm)
}

/// `cellvm run --kernel ELF --memory 16M ARGS...` in a private runtime
/// directory.
fn run_cell(dir: &Path, elf: &Path, args: &[&str]) -> (Output, String) {
    let out = Command::new(CELLVM)
        .arg("run")
        .arg("--kernel")
        .arg(elf)
        .args(["--memory", "16M"])
        .args(args)
        .env("CELLVM_RUNTIME_DIR", dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, err)
}

/// [`run_cell`] without the control API.
fn run(dir: &Path, elf: &Path, args: &[&str]) -> (Output, String) {
    run_cell(dir, elf, &[&["--no-api"], args].concat())
}

#[test]
fn a_guest_that_never_ends_is_stopped_by_the_timeout_with_status_124() {
    let dir = tempfile::tempdir().unwrap();
    let elf = printing(dir.path(), "wait.elf", "ready\n");
    let (out, err) = run(dir.path(), &elf, &["--timeout", "0.5"]);
    assert_eq!(out.status.code(), Some(124), "{err}");
    assert!(
        err.contains("stopped: timed out after 0.5 s (exit status 124)"),
        "{err}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ready\n");
}

#[test]
fn a_console_line_matching_expect_passes_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let elf = printing(dir.path(), "pass.elf", "booting\nTEST DONE\n");
    let (out, err) = run(
        dir.path(),
        &elf,
        &["--expect", "^TEST (DONE|OK)$", "--timeout", "30"],
    );
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("console matched --expect '^TEST (DONE|OK)$' (exit status 0)"),
        "{err}"
    );
}

#[test]
fn a_kernel_warning_fails_the_run_by_default_even_before_the_expected_line() {
    let dir = tempfile::tempdir().unwrap();
    let elf = printing(
        dir.path(),
        "warn.elf",
        "WARNING: CPU: 0 at x.c:1\nTEST DONE\n",
    );
    let (out, err) = run(dir.path(), &elf, &["--expect", "TEST DONE"]);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(
        err.contains("console matched --fail-on 'WARNING:': WARNING: CPU: 0 at x.c:1"),
        "{err}"
    );
    // Without the default set the same console passes.
    let (out, err) = run(
        dir.path(),
        &elf,
        &["--expect", "TEST DONE", "--no-default-fail-on"],
    );
    assert_eq!(out.status.code(), Some(0), "{err}");
}

#[test]
fn a_users_fail_on_pattern_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let elf = printing(dir.path(), "fail.elf", "selftest: 3 FAILED\n");
    let (out, err) = run(dir.path(), &elf, &["--fail-on", "[0-9]+ FAILED"]);
    assert_eq!(out.status.code(), Some(6), "{err}");
}

#[test]
fn a_guest_that_exits_cleanly_without_the_expected_line_fails_with_status_7() {
    let dir = tempfile::tempdir().unwrap();
    let mut asm = Asm::new();
    asm.puts("nothing to see\n").exit(0);
    let elf = write_elf(dir.path(), "exit0.elf", &asm);
    let (out, err) = run(dir.path(), &elf, &["--expect", "TEST DONE"]);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(err.contains("before the console matched --expect"), "{err}");
    // Without --expect the same guest passes, and a debug-exit code is kept.
    let (out, _) = run(dir.path(), &elf, &[]);
    assert_eq!(out.status.code(), Some(0));
    let mut asm = Asm::new();
    asm.exit(42);
    let elf = write_elf(dir.path(), "exit42.elf", &asm);
    assert_eq!(
        run(dir.path(), &elf, &["--timeout", "30"]).0.status.code(),
        Some(42)
    );
}

#[test]
fn a_guest_panic_reported_through_pvpanic_ends_the_run_with_status_5() {
    let dir = tempfile::tempdir().unwrap();
    let mut asm = Asm::new();
    // What Linux's pvpanic-mmio driver does on a panic: write "panicked".
    asm.puts("Kernel panic - not syncing: test\n")
        .mov_rbx(0xd000_2000)
        .mov_al(1)
        .store8_rbx_al()
        .halt_forever();
    let elf = write_elf(dir.path(), "panic.elf", &asm);
    // Not a test run: the console is not watched, pvpanic alone stops it.
    let (out, err) = run(dir.path(), &elf, &[]);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("guest kernel panic (pvpanic)"), "{err}");
}

#[test]
fn the_console_log_holds_the_whole_console_and_appends() {
    let dir = tempfile::tempdir().unwrap();
    let elf = printing(dir.path(), "log.elf", "line one\nline two\n");
    let log = dir.path().join("console.log");
    std::fs::write(&log, "earlier run\n").unwrap();
    let log_arg = log.to_str().unwrap();
    let (out, err) = run(
        dir.path(),
        &elf,
        &["--console-log", log_arg, "--expect", "line two"],
    );
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "earlier run\nline one\nline two\n"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "line one\nline two\n");
}

#[test]
fn the_junit_report_names_the_failure_and_carries_the_console_tail() {
    let dir = tempfile::tempdir().unwrap();
    let elf = printing(dir.path(), "hang.elf", "stuck <here>\n");
    let report = dir.path().join("report.xml");
    let report_arg = report.to_str().unwrap();
    let (out, err) = run(
        dir.path(),
        &elf,
        &[
            "--timeout",
            "0.3",
            "--junit",
            report_arg,
            "--name",
            "ci-boot",
        ],
    );
    assert_eq!(out.status.code(), Some(124), "{err}");
    let xml = std::fs::read_to_string(&report).unwrap();
    assert!(
        xml.contains("<testsuite name=\"cellvm.ci-boot\" tests=\"1\" failures=\"1\""),
        "{xml}"
    );
    assert!(
        xml.contains("<failure message=\"timed out after 0.3 s\" type=\"exit status 124\">stuck &lt;here&gt;</failure>"),
        "{xml}"
    );
    // An existing report is never replaced: refused before the boot.
    let (out, err) = run(dir.path(), &elf, &["--junit", report_arg]);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("the file exists"), "{err}");
    assert_eq!(std::fs::read_to_string(&report).unwrap(), xml);
}

#[test]
fn kunit_results_on_the_console_become_junit_test_cases() {
    let dir = tempfile::tempdir().unwrap();
    let ktap = "KTAP version 1\n1..1\n    # Subtest: demo\n    1..2\n    ok 1 first\n    \
                not ok 2 second\nnot ok 1 demo\nALL DONE\n";
    let elf = printing(dir.path(), "ktap.elf", ktap);
    let report = dir.path().join("kunit.xml");
    let (out, err) = run(
        dir.path(),
        &elf,
        &["--expect", "ALL DONE", "--junit", report.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{err}");
    let xml = std::fs::read_to_string(&report).unwrap();
    assert!(xml.contains("tests=\"4\" failures=\"2\""), "{xml}");
    assert!(
        xml.contains("<testcase classname=\"ktap.demo\" name=\"second\"><failure"),
        "{xml}"
    );
}

#[test]
fn bad_runner_flags_are_refused_before_the_boot() {
    let dir = tempfile::tempdir().unwrap();
    let elf = printing(dir.path(), "x.elf", "x\n");
    let (out, err) = run(dir.path(), &elf, &["--expect", "(unclosed"]);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--expect '(unclosed': not a valid regular expression"),
        "{err}"
    );
    let (out, err) = run(dir.path(), &elf, &["--timeout", "0"]);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--timeout 0: give seconds above 0"), "{err}");
    // `run` with neither a file nor --kernel is a usage error.
    let out = Command::new(CELLVM).arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn hotplug_torture_waits_for_a_guest_agent_and_a_guest_without_one_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let elf = printing(dir.path(), "noagent.elf", "no agent here\n");
    let desc = dir.path().join("rng.toml");
    std::fs::write(&desc, "[[virtio_mmio]]\nid = \"hot-rng\"\nkind = \"rng\"\n").unwrap();
    let desc_arg = desc.to_str().unwrap();
    let (out, err) = run_cell(
        dir.path(),
        &elf,
        &["--name", "torture", "--timeout", "1", "--hotplug", desc_arg],
    );
    assert_eq!(out.status.code(), Some(124), "{err}");
    // No cycle ran: the timeout is not reported as during one.
    assert!(!err.contains("during hotplug cycle"), "{err}");
    // --hotplug needs the control API.
    let (out, _) = run(dir.path(), &elf, &["--hotplug", desc_arg]);
    assert_eq!(out.status.code(), Some(2));
}
