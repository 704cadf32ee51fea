//! Checks of scenario output shared by the x86_64 and arm64 nested tests.

use super::rig::{flatten_dtb, hex, report_lines, RigRun};
use std::collections::BTreeMap;

/// The value of `key=` in a guest report.
pub fn report_value(lines: &[String], key: &str) -> Option<String> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
}

/// Scenario `name` of `run` ended with `expect_rc`, its guest reached
/// userspace and the boot timer said so; its report lines.
pub fn assert_booted(run: &RigRun, name: &str, expect_rc: i32) -> Vec<String> {
    let s = run.scenario(name);
    assert_eq!(s.rc, expect_rc, "scenario {name} output:\n{}", s.output);
    assert!(
        s.output.contains("CELLVM-READY"),
        "guest never reached userspace:\n{}",
        s.output
    );
    assert!(
        s.output
            .contains("cellvm: boot-timer: guest reached userspace after"),
        "no boot-timer line:\n{}",
        s.output
    );
    report_lines(&s.output)
}

/// The output of each `step: NAME` section of scenario `name` of `run`,
/// which exited with 0.
pub fn scenario_steps(run: &RigRun, name: &str) -> BTreeMap<String, String> {
    let s = run.succeeded(name);
    let mut steps = BTreeMap::new();
    let mut current = String::from("start");
    for line in s.output.lines() {
        if let Some(name) = line.strip_prefix("step: ") {
            current = name.trim().to_string();
            continue;
        }
        let entry: &mut String = steps.entry(current.clone()).or_default();
        entry.push_str(line);
        entry.push('\n');
    }
    steps
}

/// The virtio scenario's checks (tests/nested/scenarios/virtio.sh): every
/// driver bound on `transport`, entropy read, the host's marker read from
/// the disk and the guest's written to it, a line each way over the
/// console's pty, the pty link gone after the cell. The scenario's output.
pub fn assert_virtio_moves_real_data(run: &RigRun, scenario: &str, transport: &str) -> String {
    let s = run.succeeded(scenario);
    let o = &s.output;
    for bound in [
        "device=0x0004 driver=virtio_rng",
        "device=0x0002 driver=virtio_blk",
        "device=0x0003 driver=virtio_console",
    ] {
        let line = format!("{bound} transport={transport}");
        assert!(o.contains(&line), "{line} missing:\n{o}");
    }
    let rng = o
        .lines()
        .find_map(|l| l.split("virtio-rng: current=virtio_rng.0 bytes=").nth(1))
        .unwrap_or_else(|| panic!("no rng line:\n{o}"));
    assert_eq!(rng.trim().len(), 32, "{rng}");
    assert_ne!(rng.trim(), "0".repeat(32));
    assert!(
        o.contains("virtio-blk: size_sectors=2048 read=CELLVM-HOST-MARKER"),
        "{o}"
    );
    assert!(
        o.contains("host: disk sector 1=CELLVM-GUEST-WROTE-THIS"),
        "{o}"
    );
    // Guest to host and host to guest over the pty.
    assert!(o.contains("virtio-console: got=ping-from-host"), "{o}");
    assert!(
        o.contains("host: hvc0.out=hvc0-ready guest-got:ping-from-host"),
        "{o}"
    );
    assert!(o.contains("host: pty link after exit: gone"), "{o}");
    o.clone()
}

/// The `pci` scenario's guest drove `count` test functions (`pcitest:`
/// lines: BAR0 magic and scratch, INTx, a 2-vector MSI-X capability) and
/// cellvm_msitest.ko received both MSI-X vectors of the first, each once.
/// Returns the `pcitest:` lines.
pub fn assert_pci_test_functions(output: &str, count: usize) -> Vec<&str> {
    let results: Vec<&str> = output
        .lines()
        .filter(|l| l.starts_with("pcitest:"))
        .collect();
    assert_eq!(results.len(), count, "{output}");
    for r in &results {
        assert!(r.contains("magic=0x44545643"), "{r}");
        assert!(r.contains("scratch=0x12345678"), "{r}");
        assert!(r.contains("irq_events=0->1"), "INTx not delivered: {r}");
        assert!(r.contains("msix_vectors=2"), "no MSI-X capability: {r}");
    }
    let msi = output
        .lines()
        .find(|l| l.starts_with("msitest:"))
        .unwrap_or_else(|| panic!("no msitest line: {output}"));
    assert!(
        msi.contains("vectors=2 received=2 interrupts=2"),
        "MSI-X not delivered: {msi}"
    );
    results
}

/// The number of MSI-X interrupts the virtio scenario's guest counted.
pub fn msix_irqs(output: &str) -> usize {
    output
        .lines()
        .find_map(|l| l.strip_prefix("virtio: msix_irqs="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no msix line:\n{output}"))
}

/// Every property of `dtb` (the tree cellvm built) is in the guest's
/// `/proc/device-tree` as the report of `scenario` lists it (`dt:PATH=HEX`
/// lines), with the same bytes. Returns the flattened expected tree.
pub fn assert_guest_dt_matches(
    report: &[String],
    dtb: &[u8],
    scenario: &str,
) -> BTreeMap<String, Vec<u8>> {
    let guest: BTreeMap<String, String> = report
        .iter()
        .filter_map(|l| l.strip_prefix("dt:"))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let expected = flatten_dtb(dtb);
    assert!(expected.len() > 20, "suspiciously small DT");
    for (path, bytes) in &expected {
        let got = guest
            .get(path)
            .unwrap_or_else(|| panic!("{scenario}: guest DT lacks {path}"));
        assert_eq!(got, &hex(bytes), "{scenario}: {path} differs");
    }
    expected
}

/// The value of the first line `PREFIX VALUE` of `step`, trimmed.
pub fn line_value<'a>(steps: &'a BTreeMap<String, String>, step: &str, prefix: &str) -> &'a str {
    steps[step]
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(str::trim)
        .unwrap_or_else(|| panic!("step {step}: no line `{prefix} ...`:\n{}", steps[step]))
}

/// Exit statuses of the `cellvm` commands run with `api` in a step, in order.
pub fn api_rcs(step: &str) -> Vec<i32> {
    step.lines()
        .filter_map(|l| l.strip_prefix("rc="))
        .map(|rc| rc.trim().parse().unwrap())
        .collect()
}
