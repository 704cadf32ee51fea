//! Nested boot tests: real Linux cells under cellvm on real KVM inside an L1
//! guest (QEMU TCG with SVM). One L1 boot runs every scenario in
//! tests/nested/scenarios/; each test here checks one scenario's output.
//!
//! Needs the rig built by scripts/setup.sh (the README's test command runs
//! it); a missing rig, QEMU or /dev/kvm inside L1 fails loudly.

// Test and benchmark code: a failed step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::checks::{self, api_rcs, line_value, report_value};
use common::handover;
use common::rig::{cell_dtb, repo_root, rig};

fn assert_booted(name: &str, expect_rc: i32) -> Vec<String> {
    checks::assert_booted(rig(), name, expect_rc)
}

#[test]
fn one_vcpu_linux_cell_reaches_userspace_and_sees_one_cpu() {
    let report = assert_booted("boot-1cpu", 0);
    assert_eq!(report_value(&report, "cpus").as_deref(), Some("1"));
    assert_eq!(report_value(&report, "dt").as_deref(), Some("present"));
}

#[test]
fn two_vcpu_linux_cell_brings_up_both_cpus() {
    let report = assert_booted("boot-2cpu", 0);
    assert_eq!(report_value(&report, "cpus").as_deref(), Some("2"));
}

#[test]
fn uncompressed_vmlinux_cell_reaches_userspace() {
    let report = assert_booted("boot-vmlinux", 0);
    assert_eq!(report_value(&report, "cpus").as_deref(), Some("1"));
    assert_eq!(report_value(&report, "dt").as_deref(), Some("present"));
}

#[test]
fn guest_device_tree_carries_every_property_cellvm_generated() {
    for (scenario, cell) in [
        ("boot-1cpu", "cells/test-boot-1cpu.toml"),
        ("boot-2cpu", "cells/test-boot-2cpu.toml"),
        ("boot-vmlinux", "cells/test-vmlinux.toml"),
    ] {
        let report = assert_booted(scenario, 0);
        checks::assert_guest_dt_matches(&report, &cell_dtb(&repo_root().join(cell)), scenario);
    }
}

#[test]
fn console_input_reaches_the_guest_and_comes_back() {
    let s = rig().succeeded("console-echo");
    let sent = s
        .output
        .lines()
        .find_map(|l| l.strip_prefix("scenario: sent '"))
        .and_then(|l| l.strip_suffix('\''))
        .unwrap_or_else(|| panic!("scenario sent nothing:\n{}", s.output));
    assert!(
        s.output.contains(&format!("CELLVM-ECHO:{sent}")),
        "echo of {sent:?} missing:\n{}",
        s.output
    );
}

#[test]
fn guest_debug_exit_code_becomes_cellvm_exit_status() {
    let s = rig().scenario("exit-code");
    assert_eq!(s.rc, 42, "{}", s.output);
    assert!(s
        .output
        .contains("guest requested exit with code 42 (exit status 42)"));
}

#[test]
fn demo_cell_prints_its_summary_and_exits_cleanly() {
    let s = rig().succeeded("demo");
    assert!(
        s.output.contains("Hello from a cellvm cell!"),
        "{}",
        s.output
    );
    assert!(s.output.contains("pci hosts:"), "{}", s.output);
    assert!(
        s.output.contains("plugged sensor-board into linux-demo:j1"),
        "{}",
        s.output
    );
    assert!(s.output.contains("addon=sensor-board"), "{}", s.output);
}

#[test]
fn guest_enumerates_ecam_and_cam_bridges_with_bars_inside_their_windows() {
    let s = rig().succeeded("pci");
    let cfg = cellvm::config::load(
        &repo_root().join("cells/test-pci.toml"),
        &cellvm::config::LoadOptions { check_files: false },
    )
    .unwrap();
    let layout = cellvm::layout::CellLayout::new(&cfg).unwrap();
    // Expected functions: domain = low 32 bits of the config base, the
    // device's bus; PCI-to-PCI bridges (no BAR) listed by their IDs.
    let mut expected = Vec::new();
    for (slot, br) in layout.pci_bridges.iter().zip(&cfg.pci_bridges) {
        for d in &br.devices {
            let ids = match d.kind {
                cellvm::config::PciDeviceKind::PciBridge { .. } => {
                    "vendor=0x1b36 device=0x0001 class=0x060400"
                }
                _ => "vendor=0x1b36 device=0x00ce class=0xff0000",
            };
            expected.push((
                format!(
                    "{:08x}:{:02x}:{:02x}.{}",
                    slot.config.base as u32, d.bus, d.slot, d.function
                ),
                ids,
                slot.mmio32,
            ));
        }
    }
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    let listed: Vec<&str> = s
        .output
        .lines()
        .filter_map(|l| l.strip_prefix("pci:"))
        .collect();
    assert_eq!(listed.len(), expected.len(), "{}", s.output);
    assert!(
        listed.iter().any(|l| l.contains(":01:00.0 ")),
        "no function behind the PCI-to-PCI bridge: {}",
        s.output
    );
    for ((addr, ids, window), line) in expected.iter().zip(&listed) {
        assert!(line.starts_with(&format!("{addr} {ids}")), "{line}");
        if ids.contains("0x060400") {
            continue;
        }
        let bar = line.split("bar0=").nth(1).unwrap();
        let (start, end) = bar.split_once('-').unwrap();
        let start = u64::from_str_radix(start.trim_start_matches("0x"), 16).unwrap();
        let end = u64::from_str_radix(end.trim_start_matches("0x"), 16).unwrap();
        assert!(
            start >= window.base && end < window.end() && end - start + 1 == 0x1000,
            "{addr}: BAR0 {start:#x}..{end:#x} outside {window:?}"
        );
    }
}

#[test]
fn guest_reads_and_writes_test_device_bars_and_receives_intx_and_msix() {
    let s = rig().scenario("pci");
    // Four on the root buses, one behind the PCI-to-PCI bridge (its INTx
    // swizzled through the bridge's slot); MSI-X end to end: the guest's
    // own MSI code programs the table, the device sends both vectors.
    checks::assert_pci_test_functions(&s.output, 5);
}

#[test]
fn two_ivshmem_peer_cells_exchange_data_and_see_each_others_state() {
    let s = rig().succeeded("ivshmem");
    assert!(s
        .output
        .contains("peer0: ivshmem: e0000000:00:01.0 id=0x00000000 max_peers=0x00000002"));
    assert!(s
        .output
        .contains("peer1: ivshmem: e0000000:00:01.0 id=0x00000001"));
    assert!(
        s.output
            .contains("peer1: ivshmem: peer1 marker=0x0C0FFEE0 peer0_state=0x00000001"),
        "{}",
        s.output
    );
    assert!(
        s.output.contains("peer0: ivshmem: peer0 ack=0x00000001"),
        "{}",
        s.output
    );
}

/// The count of the first `PREFIX ... count=N` line of a transcript.
fn count_after(output: &str, prefix: &str) -> Option<u64> {
    output
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|rest| rest.trim().parse().ok())
}

#[test]
fn ivshmem_doorbell_raises_an_interrupt_in_the_peer_guest() {
    let s = rig().succeeded("ivshmem");
    assert!(!s.output.contains("FAIL"), "{}", s.output);
    for peer in ["peer0", "peer1"] {
        assert!(
            s.output.contains(&format!(
                "{peer}: ivshmem: bound uio_pci_generic: /dev/uio0 irq="
            )),
            "{peer} did not bind uio_pci_generic:\n{}",
            s.output
        );
        // Both directions: peer 0 rings peer 1, peer 1 rings back, each
        // guest takes the doorbell as an interrupt through uio_pci_generic
        // (whose handler claims it only if the status bit is set).
        let doorbell = count_after(
            &s.output,
            &format!("{peer}: ivshmem: doorbell interrupt received count="),
        );
        assert!(
            doorbell.is_some_and(|n| n >= 1),
            "{peer}: no doorbell interrupt:\n{}",
            s.output
        );
        // Then a state change of the other peer interrupts it too.
        let state = count_after(
            &s.output,
            &format!("{peer}: ivshmem: state-change interrupt received count="),
        );
        assert!(
            state.is_some_and(|n| Some(n) > doorbell),
            "{peer}: no state-change interrupt after the doorbell:\n{}",
            s.output
        );
        // The guest kernel counted them on the device's IRQ.
        let irq = s
            .output
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{peer}: ivshmem: irq ")))
            .and_then(|rest| rest.split_once(" count="))
            .and_then(|(_, n)| n.trim().parse::<u64>().ok());
        assert!(
            irq.is_some_and(|n| Some(n) >= state),
            "{peer}: /proc/interrupts count {irq:?} below uio's {state:?}:\n{}",
            s.output
        );
    }
    assert!(s
        .output
        .contains("peer1: ivshmem: peer1 peer0_state=0x00000002"));
    assert!(s
        .output
        .contains("peer0: ivshmem: peer0 peer1_state=0x00000002"));
}

/// The output of each `step: NAME` section of the attach scenario.
fn attach_steps() -> std::collections::BTreeMap<String, String> {
    scenario_steps("attach")
}

/// The output of each `step: NAME` section of a scenario that exited with 0.
fn scenario_steps(name: &str) -> std::collections::BTreeMap<String, String> {
    checks::scenario_steps(rig(), name)
}

#[test]
fn guest_agent_says_hello_over_the_channel() {
    let steps = attach_steps();
    let console = &steps["console"];
    assert!(
        console.contains("cellvm: channel: guest agent HELLO: protocol 1"),
        "{console}"
    );
    assert!(console.contains("CELLVM-AGENT-READY"), "{console}");
}

#[test]
fn runtime_attached_pci_bridges_are_enumerated_and_removed_by_the_guest() {
    let steps = attach_steps();
    for step in ["attach-pci", "detach-pci", "attach-cam", "detach-cam"] {
        assert!(steps[step].contains("rc=0"), "{step}: {}", steps[step]);
    }
    assert!(steps["attach-pci"].contains("kind=pci-bridge"));
    let console = &steps["console"];
    for dev in ["e0000000:08:01.0", "e0000000:08:02.0", "e0000000:0c:04.0"] {
        assert!(
            console.contains(&format!("CELLVM-DEV+ {dev}")),
            "{dev} never appeared"
        );
        assert!(
            console.contains(&format!("CELLVM-DEV- {dev}")),
            "{dev} never went"
        );
    }
}

#[test]
fn runtime_attached_virtio_mmio_and_uart_nodes_appear_and_go() {
    let steps = attach_steps();
    for step in [
        "attach-virtio",
        "detach-virtio",
        "attach-uart",
        "detach-uart",
    ] {
        assert!(steps[step].contains("rc=0"), "{step}: {}", steps[step]);
    }
    let console = &steps["console"];
    for dev in ["d0100000.virtio_mmio", "2f8.serial"] {
        assert!(
            console.contains(&format!("CELLVM-DEV+ {dev}")),
            "{dev} never appeared"
        );
        assert!(
            console.contains(&format!("CELLVM-DEV- {dev}")),
            "{dev} never went"
        );
    }
}

#[test]
fn runtime_attached_virtio_pci_functions_bind_their_drivers_and_go() {
    let steps = attach_steps();
    for step in ["attach-virtio-pci", "detach-virtio-pci"] {
        assert!(steps[step].contains("rc=0"), "{step}: {}", steps[step]);
    }
    assert!(steps["attach-virtio-pci"].contains("host: hot.pty present"));
    assert!(steps["detach-virtio-pci"].contains("host: hot.pty gone"));
    let console = &steps["console"];
    for driver in ["virtio_blk", "virtio_console", "virtio_rng"] {
        let bound = console
            .lines()
            .any(|l| l.starts_with("CELLVM-DEV+ virtio") && l.ends_with(&format!(":{driver}")));
        assert!(bound, "{driver} never bound:\n{console}");
    }
    for dev in [":10:01.0", ":10:02.0"] {
        let went = console
            .lines()
            .any(|l| l.starts_with("CELLVM-DEV- ") && l.ends_with(dev));
        assert!(went, "{dev} never went:\n{console}");
    }
}

#[test]
fn colliding_unknown_and_boot_time_requests_are_refused_with_typed_errors() {
    let steps = attach_steps();
    let bad = &steps["bad-requests"];
    assert!(
        bad.contains("conflict: bad0: pci bridge bad0 config space at 0xd0000000..0xd0100000 collides with debug-exit"),
        "{bad}"
    );
    assert!(
        bad.contains("not_found: no attached device has id \"nosuch\""),
        "{bad}"
    );
    assert!(
        bad.contains("invalid_device: debug-exit was configured at boot"),
        "{bad}"
    );
    assert!(
        bad.contains("virtio_mmio[0].path: disk image /nonexistent/disk.img does not exist"),
        "{bad}"
    );
    assert_eq!(bad.matches("rc=1").count(), 4, "{bad}");
}

#[test]
fn hundred_attach_detach_cycles_leave_cell_and_guest_unchanged() {
    let steps = attach_steps();
    let cycles = &steps["cycles"];
    assert!(cycles.contains("cycles: 100 failures: 0"), "{cycles}");
    assert!(cycles.contains("cycles: devices identical"), "{cycles}");
    // The guest saw every device it gained go again.
    let console = &steps["console"];
    let mut balance = std::collections::BTreeMap::<&str, i64>::new();
    for line in console.lines() {
        if let Some(d) = line.strip_prefix("CELLVM-DEV+ ") {
            *balance.entry(d).or_default() += 1;
        } else if let Some(d) = line.strip_prefix("CELLVM-DEV- ") {
            *balance.entry(d).or_default() -= 1;
        }
    }
    assert!(balance.values().all(|b| *b == 0), "{balance:?}");
}

#[test]
fn attach_without_a_guest_agent_fails_and_changes_nothing() {
    let steps = attach_steps();
    let no_agent = &steps["no-agent"];
    assert!(
        no_agent.contains("no_agent: no guest agent on the channel"),
        "{no_agent}"
    );
    // The failed attach left no trace in the device list.
    assert!(!no_agent.contains("state=attached"), "{no_agent}");
    assert!(
        steps["re-attach"].contains("kind=pci-bridge"),
        "{}",
        steps["re-attach"]
    );
}

/// What both virtio transports must show: every driver bound on the right
/// transport, entropy, the disk marker both ways and a line each way over
/// the console's pty.
fn assert_virtio_moves_real_data(scenario: &str, transport: &str) -> String {
    checks::assert_virtio_moves_real_data(rig(), scenario, transport)
}

#[test]
fn virtio_mmio_rng_block_and_console_move_real_data() {
    let o = assert_virtio_moves_real_data("virtio", "mmio");
    assert!(o.contains("virtio: msix_irqs=0"), "{o}");
}

#[test]
fn virtio_pci_rng_block_and_console_move_real_data_with_msix() {
    let o = assert_virtio_moves_real_data("virtio-pci", "pci");
    // rng 1 queue + console 2 + block 1, each with a config vector: the
    // drivers took MSI-X, not INTx.
    let msix = checks::msix_irqs(&o);
    assert!(msix >= 3, "{msix} MSI-X interrupts:\n{o}");
}

#[test]
fn detaching_a_device_after_the_agent_reloaded_never_sends_a_stale_overlay_id() {
    let steps = attach_steps();
    let reload = &steps["reload"];
    assert!(reload.contains("guest_already_dropped=true"), "{reload}");
    // hotcam (attached by the new agent) is untouched by hot0's detach.
    assert!(
        reload.contains("id=hotcam") && reload.contains("state=attached"),
        "{reload}"
    );
    let cleanup = &steps["reload-cleanup"];
    assert!(
        cleanup.contains("guest_already_dropped=false") && cleanup.contains("rc=0"),
        "{cleanup}"
    );
    let console = &steps["console"];
    let count = |prefix: &str| {
        console
            .lines()
            .filter(|l| l.starts_with(prefix) && l.ends_with(":0c:04.0"))
            .count()
    };
    assert_eq!(count("CELLVM-DEV+ "), count("CELLVM-DEV- "), "{console}");
    assert!(count("CELLVM-DEV+ ") >= 2, "{console}");
}

// ---- The rollback scenario: a guest agent that refuses, stays silent or
// unloads mid-attach, and detach --force (tests/nested/scenarios/rollback.sh).

/// The output of each `step: NAME` section of the rollback scenario.
fn rollback_steps() -> std::collections::BTreeMap<String, String> {
    scenario_steps("rollback")
}

/// `cellvm devices --json` as printed by `host_devices TAG` in `step`.
fn host_devices<'a>(
    steps: &'a std::collections::BTreeMap<String, String>,
    step: &str,
    tag: &str,
) -> &'a str {
    line_value(steps, step, &format!("host: devices {tag}:"))
}

/// The guest's device snapshot printed by `guest_sync TAG` in `step`.
fn guest_devices<'a>(
    steps: &'a std::collections::BTreeMap<String, String>,
    step: &str,
    tag: &str,
) -> &'a str {
    line_value(steps, step, &format!("guest: CELLVM-DEVICES {tag}:"))
}

/// Lines of `text` containing `needle`.
fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

/// The number after `key` in `line` (`seq 7 ...` → 7 for key `seq `).
fn number_after(line: &str, key: &str) -> u64 {
    let rest = line
        .split(key)
        .nth(1)
        .unwrap_or_else(|| panic!("no `{key}` in {line}"));
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after `{key}` in {line}"))
}

/// The host and the guest as they were before the failures: boot devices
/// only on the host, and a guest snapshot that lists the channel.
fn rollback_baseline(steps: &std::collections::BTreeMap<String, String>) -> (&str, &str) {
    let host = host_devices(steps, "control", "start");
    let guest = guest_devices(steps, "control", "start");
    assert!(
        host.starts_with('[') && host.contains("\"state\":\"boot\""),
        "{host}"
    );
    assert!(!host.contains("\"attached\""), "{host}");
    assert!(guest.contains("d0010000.channel"), "{guest}");
    (host, guest)
}

#[test]
fn an_attach_the_guest_refuses_leaves_the_cell_its_files_and_the_guest_unchanged() {
    let steps = rollback_steps();
    let (host, guest) = rollback_baseline(&steps);
    // The positive control: a normal attach of the same UART creates its
    // output file, so its absence below is the rollback's doing.
    let control = &steps["control"];
    assert_eq!(api_rcs(control), [0, 0], "{control}");
    assert_eq!(
        lines_with(control, "host: u.out present").len(),
        2,
        "{control}"
    );

    let nak = &steps["nak"];
    assert!(
        nak.contains("guest: CELLVM-AGENT-MODE nak rc=0 test_mode=1"),
        "{nak}"
    );
    assert_eq!(api_rcs(nak), [1, 1], "{nak}");
    assert_eq!(
        lines_with(
            nak,
            "guest_refused: the guest agent refused the request: -16 (EBUSY)"
        )
        .len(),
        2,
        "{nak}"
    );
    assert_eq!(
        host_devices(&steps, "nak", "nak"),
        host,
        "the cell's device list changed"
    );
    assert!(nak.contains("host: u.out absent"), "{nak}");
    // The agent refused both without touching its tree: no device came or went.
    assert_eq!(
        lines_with(nak, "test_mode nak: refusing APPLY_OVERLAY seq").len(),
        2,
        "{nak}"
    );
    for change in ["guest: CELLVM-DEV+", "guest: CELLVM-DEV-"] {
        assert!(!nak.contains(change), "{nak}");
    }
    assert!(!nak.contains("applied overlay"), "{nak}");
    assert_eq!(
        guest_devices(&steps, "nak", "nak"),
        guest,
        "the guest's devices changed"
    );
}

#[test]
fn an_attach_the_guest_never_answers_times_out_and_leaves_everything_unchanged() {
    let steps = rollback_steps();
    let (host, guest) = rollback_baseline(&steps);
    let timeout = &steps["timeout"];
    assert!(
        timeout.contains("guest: CELLVM-AGENT-MODE silent rc=0 test_mode=2"),
        "{timeout}"
    );
    assert_eq!(api_rcs(timeout), [1, 1], "{timeout}");
    assert_eq!(
        lines_with(
            timeout,
            "guest_timeout: the guest agent did not answer in time"
        )
        .len(),
        2,
        "{timeout}"
    );
    assert_eq!(host_devices(&steps, "timeout", "timeout"), host);
    assert!(timeout.contains("host: u.out absent"), "{timeout}");
    // The guest took both requests and sits on them: nothing applied.
    assert_eq!(
        lines_with(timeout, "test_mode silent: holding APPLY_OVERLAY seq").len(),
        2,
        "{timeout}"
    );
    for change in ["guest: CELLVM-DEV+", "guest: CELLVM-DEV-"] {
        assert!(!timeout.contains(change), "{timeout}");
    }
    assert_eq!(guest_devices(&steps, "timeout", "timeout"), guest);
}

/// docs/channel.md, "Sessions, requests, timeouts": a reply to a request the
/// host gave up on is refused with -ETIMEDOUT and never taken for the answer
/// to a newer request; an agent whose ACK of an apply is refused removes
/// that overlay itself.
#[test]
fn late_answers_are_refused_and_never_taken_for_the_answer_to_a_newer_request() {
    let steps = rollback_steps();
    let (host, guest) = rollback_baseline(&steps);
    let held: Vec<u64> = lines_with(&steps["timeout"], "holding APPLY_OVERLAY seq")
        .iter()
        .map(|l| number_after(l, "seq "))
        .collect();
    assert_eq!(held.len(), 2, "{}", steps["timeout"]);
    let late = &steps["late-answers"];

    // The third attach, held too and answered in time, succeeded: with the
    // overlay the guest applied for it, not one of the late ones.
    let rcs = api_rcs(late);
    assert_eq!(rcs.first(), Some(&0), "the in-time attach failed:\n{late}");
    let attached = lines_with(late, "kind=pci-bridge");
    assert_eq!(attached.len(), 1, "{late}");
    let overlay = number_after(attached[0], "overlay=");
    let applied = lines_with(late, "applied overlay ");
    assert_eq!(applied.len(), 1, "{late}");
    assert_eq!(
        number_after(applied[0], "applied overlay "),
        overlay,
        "{late}"
    );
    let third = number_after(
        lines_with(late, "holding APPLY_OVERLAY seq")
            .first()
            .unwrap_or_else(|| panic!("third attach not held:\n{late}")),
        "seq ",
    );

    // All three held requests were answered, in order.
    let answered: Vec<u64> = lines_with(late, "answering held APPLY_OVERLAY seq")
        .iter()
        .map(|l| number_after(l, "seq "))
        .collect();
    assert_eq!(answered, [held[0], held[1], third], "{late}");
    // cellvm refused exactly the two late ACKs, naming their requests...
    let refused: Vec<u64> = lines_with(late, "host-log: ")
        .iter()
        .filter(|l| l.contains("late ACK for APPLY_OVERLAY seq") && l.contains("(timed out)"))
        .map(|l| number_after(l, "late ACK for APPLY_OVERLAY seq "))
        .collect();
    assert_eq!(refused, held, "{late}");
    // ... and the agent removed the two overlays nobody owns.
    let orphans = lines_with(late, "host refused ACK of overlay")
        .iter()
        .filter(|l| l.contains("(-110): removing it"))
        .count();
    assert_eq!(orphans, 2, "{late}");
    // (The guest reuses overlay ids, so the ids cannot tell the answers
    // apart; the sequence numbers above and the guest's tree below do: had
    // cellvm taken a late ACK for the third attach's answer, it would have
    // refused the real one and the agent would have removed the bridge.)
    assert!(
        guest_devices(&steps, "late-answers", "late").contains("e0000000:08:01.0"),
        "{late}"
    );
    assert!(!late.contains("cannot remove orphaned overlay"), "{late}");

    // The host's view: the refusals are counted, the device list had hot0
    // only, and after its detach the cell, its files and the guest are as
    // before the failures.
    let status: serde_json::Value = serde_json::from_str(
        late.lines()
            .find(|l| l.starts_with('{') && l.contains("\"agent\""))
            .unwrap_or_else(|| panic!("no status line:\n{late}")),
    )
    .unwrap();
    let agent = &status["agent"];
    assert_eq!(agent["state"], "ready", "{agent}");
    assert!(agent["rejected_messages"].as_u64().unwrap() >= 2, "{agent}");
    assert!(
        agent["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("-110: late ACK for APPLY_OVERLAY")),
        "{agent}"
    );
    let during = host_devices(&steps, "late-answers", "late");
    assert_eq!(during.matches("\"attached\"").count(), 1, "{during}");
    assert!(during.contains("\"id\":\"hot0\""), "{during}");
    assert!(!during.contains("\"id\":\"ser1\""), "{during}");
    assert_eq!(rcs.last(), Some(&0), "detach of hot0:\n{late}");
    assert!(late.contains("host: u.out absent"), "{late}");
    assert_eq!(host_devices(&steps, "late-answers", "late-done"), host);
    assert_eq!(guest_devices(&steps, "late-answers", "late-done"), guest);
}

#[test]
fn refused_and_timed_out_attaches_leave_nothing_on_the_buses() {
    let steps = rollback_steps();
    let (host, guest) = rollback_baseline(&steps);
    let resync = &steps["resync"];
    // A UART left registered at its port by a rolled-back attach would
    // make this attach a conflict.
    assert_eq!(api_rcs(resync), [0, 0], "{resync}");
    assert!(resync.contains("host: u.out present"), "{resync}");
    assert!(resync.contains("guest: CELLVM-DEV+ 2f8.serial"), "{resync}");
    assert_eq!(host_devices(&steps, "resync", "resync"), host);
    assert_eq!(guest_devices(&steps, "resync", "resync"), guest);
}

#[test]
fn an_agent_that_unloads_mid_attach_fails_the_attach_at_once_with_no_agent() {
    let steps = rollback_steps();
    let (host, guest) = rollback_baseline(&steps);
    let dies = &steps["agent-dies"];
    assert!(dies.contains("holding APPLY_OVERLAY seq"), "{dies}");
    assert_eq!(api_rcs(dies), [1], "{dies}");
    assert!(
        dies.contains(
            "no_agent: the guest agent restarted or left while the request was outstanding"
        ),
        "{dies}"
    );
    // Its timeout was 60 s: the agent's BYE ended it.
    let took = line_value(&steps, "agent-dies", "host: attach returned");
    let secs: u64 = took
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read `{took}`"));
    assert!(secs <= 20, "the attach took {secs} s after rmmod:\n{dies}");
    assert!(dies.contains("guest: CELLVM-AGENT-RMMOD rc=0"), "{dies}");
    assert!(
        dies.contains("unload: dropping 1 held request(s) unanswered"),
        "{dies}"
    );
    assert_eq!(host_devices(&steps, "agent-dies", "dies"), host);
    assert_eq!(guest_devices(&steps, "agent-dies", "dies"), guest);
    // The agent came back.
    assert!(dies.contains("guest: CELLVM-AGENT-INSMOD rc=0"), "{dies}");
    assert!(dies.contains("host: agent ready"), "{dies}");
}

#[test]
fn a_detach_the_guest_refuses_keeps_the_device_and_force_tears_it_down_on_the_host() {
    let steps = rollback_steps();
    let (host, _) = rollback_baseline(&steps);
    let refused = &steps["detach-refused"];
    assert_eq!(api_rcs(refused), [0, 1, 0], "{refused}");
    assert!(
        refused.contains("guest: CELLVM-AGENT-MODE nak rc=0"),
        "{refused}"
    );
    assert!(
        refused.contains("guest_refused: the guest agent refused the request: -16 (EBUSY)"),
        "{refused}"
    );
    assert!(
        refused.contains("test_mode nak: refusing REMOVE_OVERLAY seq"),
        "{refused}"
    );
    let listed = lines_with(refused, "id=hot0");
    assert!(
        listed.iter().any(|l| l.contains("state=attached")),
        "hot0 is not listed after the refused detach:\n{refused}"
    );
    // The guest kept it too.
    assert!(
        guest_devices(&steps, "detach-refused", "refused").contains("e0000000:08:01.0"),
        "{refused}"
    );

    let forced = &steps["detach-forced"];
    assert_eq!(api_rcs(forced), [0, 0], "{forced}");
    assert!(forced.contains("detached=true"), "{forced}");
    assert!(forced.contains("forced=true"), "{forced}");
    assert!(
        forced.contains("guest_error=the guest agent refused the request: -16 (EBUSY)"),
        "{forced}"
    );
    assert!(
        !lines_with(forced, "id=hot0")
            .iter()
            .any(|l| l.contains("state=attached")),
        "hot0 still listed:\n{forced}"
    );
    assert_eq!(host_devices(&steps, "detach-forced", "forced"), host);
}

#[test]
fn after_a_forced_detach_the_guest_runs_on_and_the_same_id_attaches_again() {
    let steps = rollback_steps();
    // The guest answered a console command after the forced detach; its
    // agent refused the removal, so it still has the bridge's nodes.
    let forced = guest_devices(&steps, "detach-forced", "forced");
    assert!(forced.contains("e0000000:08:01.0"), "{forced}");
    let again = &steps["reattach"];
    assert!(
        again.contains("guest: CELLVM-AGENT-MODE normal rc=0 test_mode=0"),
        "{again}"
    );
    assert_eq!(api_rcs(again), [0, 0, 0], "{again}");
    assert!(
        lines_with(again, "id=hot0")
            .iter()
            .any(|l| l.contains("state=attached")),
        "{again}"
    );
    assert!(again.contains("guest: CELLVM-DEVICES reattach:"), "{again}");
}

#[test]
fn the_cell_survives_every_failure_and_exits_cleanly() {
    let s = rig().succeeded("rollback");
    assert!(s.output.contains("scenario: cellvm rc=0"), "{}", s.output);
    let console = &scenario_steps("rollback")["console"];
    assert!(console.contains("(exit status 0)"), "{console}");
    for bad in ["Oops", "BUG:", "Call Trace", "Kernel panic"] {
        assert!(!console.contains(bad), "guest kernel: {bad}:\n{console}");
    }
}

// ---- The lifecycle scenario: shutdown acked, refused, unanswered and
// forced; two cells created paused and resumed together
// (tests/nested/scenarios/lifecycle.sh).

#[test]
fn shutdown_acked_by_the_guest_ends_the_cell_with_its_poweroff() {
    let steps = scenario_steps("lifecycle");
    let ack = &steps["ack"];
    assert_eq!(api_rcs(ack), [0], "{ack}");
    assert!(ack.contains("stopped=guest powered off"), "{ack}");
    assert!(ack.contains("forced=false"), "{ack}");
    assert!(ack.contains("exit=0"), "{ack}");
    assert!(
        ack.contains("cellvm: cell test-agent stopped: guest powered off (exit status 0)"),
        "{ack}"
    );
}

#[test]
fn shutdown_refused_by_the_guest_says_so_and_the_cell_keeps_running() {
    let steps = scenario_steps("lifecycle");
    let nak = &steps["nak"];
    assert!(
        nak.contains("guest: agent-mode nak"),
        "the agent took test_mode nak:\n{nak}"
    );
    assert_eq!(api_rcs(nak), [1, 0], "{nak}");
    assert!(
        nak.contains("guest_refused: shutdown: ") && nak.contains("EBUSY"),
        "{nak}"
    );
    assert!(nak.contains("state=running"), "{nak}");
}

#[test]
fn shutdown_unanswered_times_out_and_force_destroys_the_cell() {
    let steps = scenario_steps("lifecycle");
    let silent = &steps["silent"];
    assert_eq!(api_rcs(silent), [1, 0], "{silent}");
    assert!(silent.contains("guest_timeout: shutdown: "), "{silent}");
    assert!(silent.contains("forced=true"), "{silent}");
    assert!(silent.contains("exit=4"), "{silent}");
    assert!(
        silent.contains("stopped: destroyed (cellvm destroy) (exit status 4)"),
        "{silent}"
    );
}

#[test]
fn two_cells_created_paused_wait_and_run_together_once_resumed() {
    let steps = scenario_steps("lifecycle");
    let paused = &steps["paused"];
    assert!(paused.contains("peer0: state=paused"), "{paused}");
    assert!(paused.contains("peer1: state=paused"), "{paused}");
    assert_eq!(api_rcs(paused), [0, 0], "{paused}");
    assert!(paused.contains("peer0: exit=0"), "{paused}");
    assert!(paused.contains("peer1: exit=0"), "{paused}");
    assert!(
        paused.contains("ivshmem: peer1 marker=0x0C0FFEE0 peer0_state=0x00000001"),
        "{paused}"
    );
}

#[test]
fn a_detached_disk_releases_its_image_claim() {
    let steps = scenario_steps("lifecycle");
    let step = &steps["detach-releases"];
    assert!(step.contains("CELLVM-AGENT-READY"), "{step}");
    assert_eq!(api_rcs(step), [0, 0], "{step}");
    assert!(step.contains("claims while attached: 1"), "{step}");
    assert!(step.contains("claims after detach: 0"), "{step}");
}

// ---- The device-states scenario: enable and disable boot-time disks in a
// running Linux guest (tests/nested/scenarios/device-states.sh).

/// How many virtio block devices with a bound driver the guest listed in
/// its snapshot `tag` of `step`.
fn guest_disks(steps: &std::collections::BTreeMap<String, String>, step: &str, tag: &str) -> usize {
    let line = line_value(steps, step, &format!("guest: CELLVM-DEVICES {tag}:"));
    line.matches(":virtio_blk").count()
}

#[test]
fn a_reserved_disk_enabled_at_run_time_appears_in_the_guest_and_goes_when_disabled() {
    let steps = scenario_steps("device-states");
    let boot = &steps["boot"];
    assert!(boot.contains("CELLVM-AGENT-READY"), "{boot}");
    assert!(
        boot.contains("host: boot: id=flash0=reserved id=boot0=boot"),
        "{boot}"
    );
    assert!(boot.contains("host: boot: claims flash=0 boot=1"), "{boot}");
    assert_eq!(guest_disks(&steps, "boot", "boot"), 1, "{boot}");
    let enable = &steps["enable"];
    assert_eq!(api_rcs(enable), [0], "{enable}");
    assert!(enable.contains("state=okay"), "{enable}");
    assert!(enable.contains("id=flash0=enabled"), "{enable}");
    assert!(enable.contains("claims flash=1 boot=1"), "{enable}");
    assert_eq!(guest_disks(&steps, "enable", "enabled"), 2, "{enable}");
    let disable = &steps["disable"];
    assert_eq!(api_rcs(disable), [0], "{disable}");
    assert!(disable.contains("id=flash0=reserved"), "{disable}");
    assert!(disable.contains("claims flash=0 boot=1"), "{disable}");
    assert_eq!(guest_disks(&steps, "disable", "disabled"), 1, "{disable}");
}

#[test]
fn a_disk_okay_at_boot_is_disabled_and_enabled_again() {
    let steps = scenario_steps("device-states");
    let s = &steps["boot-disk"];
    assert_eq!(api_rcs(s), [0, 0], "{s}");
    assert!(s.contains("host: boot-off: claims flash=0 boot=0"), "{s}");
    assert_eq!(guest_disks(&steps, "boot-disk", "boot-off"), 0, "{s}");
    assert!(s.contains("host: boot-on: claims flash=0 boot=1"), "{s}");
    assert_eq!(guest_disks(&steps, "boot-disk", "boot-on"), 1, "{s}");
}

#[test]
fn an_enable_the_guest_refuses_changes_nothing() {
    let steps = scenario_steps("device-states");
    let nak = &steps["nak"];
    assert_eq!(api_rcs(nak), [1], "{nak}");
    assert!(nak.contains("guest_refused"), "{nak}");
    assert!(nak.contains("host: nak: claims flash=0 boot=1"), "{nak}");
    assert!(nak.contains("id=flash0=reserved"), "{nak}");
    assert_eq!(guest_disks(&steps, "nak", "nak"), 1, "{nak}");
    assert!(steps["end"].contains("exit=0"), "{}", steps["end"]);
}

// ---- The handover scenario: the seeds' shared flash moves between two
// running cells (tests/nested/scenarios/handover.sh).

#[test]
fn the_shared_flash_moves_to_the_bmc_with_its_data_and_back() {
    handover::moves_to_the_bmc_with_its_data_and_back(&scenario_steps("handover"));
}

#[test]
fn a_bmc_that_refuses_leaves_the_flash_with_the_host_and_usable() {
    handover::a_refusing_bmc_leaves_it_with_the_host(&scenario_steps("handover"));
}

#[test]
fn fifty_moves_keep_the_flash_data() {
    handover::fifty_moves_keep_the_data(&scenario_steps("handover"));
}

#[test]
fn a_host_guest_with_the_flash_mounted_refuses_to_let_it_go() {
    handover::a_host_with_it_mounted_refuses(&scenario_steps("handover"));
}

#[test]
fn a_bmc_that_dies_mid_move_leaves_the_flash_with_the_host() {
    handover::a_bmc_dying_mid_move_leaves_it_with_the_host(&scenario_steps("handover"));
}

#[test]
fn a_host_that_dies_mid_move_leaves_the_bmc_a_claim_it_can_enable() {
    handover::a_host_dying_mid_move_leaves_the_bmc_its_claim(&scenario_steps("handover"));
}

#[test]
fn a_reserved_pci_bridge_enabled_at_run_time_is_enumerated_and_goes_when_disabled() {
    let steps = scenario_steps("device-states");
    let s = &steps["bridge"];
    assert_eq!(api_rcs(s), [0, 0], "{s}");
    let on = line_value(&steps, "bridge", "guest: CELLVM-DEVICES bridge-on:");
    assert!(on.contains(".pci ") && on.contains(":00:01.0"), "{on}");
    let off = line_value(&steps, "bridge", "guest: CELLVM-DEVICES bridge-off:");
    assert!(!off.contains(".pci ") && !off.contains(":00:01.0"), "{off}");
}

// ---- cellvm as a CI boot-test runner (tests/nested/scenarios/ci-runner.sh).

#[test]
fn a_config_less_run_of_the_guest_kernel_passes_on_its_expected_line_with_2_vcpus() {
    let steps = scenario_steps("ci-runner");
    let s = &steps["pass"];
    assert!(s.contains("rc=0"), "{s}");
    assert!(
        s.contains("console matched --expect '^CELLVM-REPORT-END' (exit status 0)"),
        "{s}"
    );
    assert!(s.contains("cpus=2"), "{s}");
    assert!(s.contains("tests=\"1\" failures=\"0\""), "{s}");
}

#[test]
fn a_guest_kernel_panic_ends_the_run_with_the_pvpanic_status_even_with_panic_minus_one() {
    let steps = scenario_steps("ci-runner");
    let s = &steps["panic"];
    assert!(s.contains("rc=5"), "{s}");
    assert!(
        s.contains("guest kernel panic (pvpanic) (exit status 5)"),
        "{s}"
    );
    assert!(
        s.contains("Kernel panic - not syncing: Attempted to kill init"),
        "{s}"
    );
}

#[test]
fn a_kernel_warning_on_the_console_fails_a_test_run() {
    let steps = scenario_steps("ci-runner");
    let s = &steps["warning"];
    assert!(s.contains("rc=6"), "{s}");
    assert!(s.contains("console matched --fail-on 'WARNING:'"), "{s}");
}

#[test]
fn a_guest_that_never_prints_the_expected_line_times_out_with_124() {
    let steps = scenario_steps("ci-runner");
    let s = &steps["timeout"];
    assert!(s.contains("rc=124"), "{s}");
    assert!(s.contains("timed out after 3 s (exit status 124)"), "{s}");
}

#[test]
fn a_distribution_kernel_without_a_device_tree_boots_with_2_vcpus_from_the_mp_table() {
    let steps = scenario_steps("ci-runner");
    let s = &steps["distro-kernel"];
    assert!(s.contains("rc=0"), "{s}");
    assert!(s.contains("kernel: found SMP MP-table"), "{s}");
    assert!(s.contains("cpus=2"), "{s}");
    assert!(s.contains("dt=absent"), "{s}");
    assert!(s.contains("kernel=6.12"), "{s}");
}

#[test]
fn the_debian_cloud_kernel_finds_its_2_vcpus_in_the_acpi_tables() {
    let steps = scenario_steps("ci-runner");
    let s = &steps["cloud-kernel"];
    assert!(s.contains("rc=0"), "{s}");
    assert!(s.contains("kernel: ACPI: Using ACPI (MADT) for SMP"), "{s}");
    assert!(s.contains("cpus=2"), "{s}");
    assert!(s.contains("dt=absent"), "{s}");
    assert!(
        !s.contains("ACPI MADT or MP tables are not detected"),
        "{s}"
    );
}

#[test]
fn a_kernel_without_the_agent_powers_off_through_acpi_with_status_0() {
    let steps = scenario_steps("ci-runner");
    let s = &steps["acpi-poweroff"];
    assert!(s.contains("CELLVM-POWEROFF: cpus=2"), "{s}");
    assert!(s.contains("rc=0"), "{s}");
    assert!(s.contains("guest powered off"), "{s}");
}

#[test]
fn twenty_hotplug_torture_cycles_of_a_pci_bridge_pass() {
    let steps = scenario_steps("ci-runner");
    let s = &steps["torture-pass"];
    assert!(s.contains("rc=0"), "{s}");
    assert!(
        s.contains("20 hotplug cycles passed (exit status 0)"),
        "{s}"
    );
}

#[test]
fn a_guest_warning_during_hotplug_torture_fails_the_run_and_names_the_cycle() {
    let steps = scenario_steps("ci-runner");
    let s = &steps["torture-warn"];
    assert!(s.contains("rc=6"), "{s}");
    assert!(
        s.contains("a device went away (during hotplug cycle "),
        "{s}"
    );
    assert!(s.contains(" of 3) (exit status 6)"), "{s}");
}

// ---------------------------------------------------------------------------
// Add-on boards (scenario addon, docs/addons.md)

fn addon_steps() -> std::collections::BTreeMap<String, String> {
    scenario_steps("addon")
}

const ADDON_NODES: &str = "CELLVM-DT-LS /connector-bus@d1000000: clock-24m regulator-sensor \
                           sensor-info serial@d1002000 virtio_mmio@d1000000 virtio_mmio@d1001000 END";
const NO_ADDON_NODES: &str = "CELLVM-DT-LS /connector-bus@d1000000: none END";

#[test]
fn an_add_on_board_is_plugged_as_one_unit_and_its_disk_works() {
    let steps = addon_steps();
    let ready = &steps["ready"];
    let j1 = ready
        .lines()
        .find(|l| l.contains("id=j1 "))
        .unwrap_or_else(|| panic!("no connector j1 listed:\n{ready}"));
    assert!(
        j1.contains("kind=connector") && j1.contains("state=empty"),
        "{j1}"
    );
    assert!(ready.contains(NO_ADDON_NODES), "{ready}");
    let plug = &steps["plug"];
    assert!(
        plug.contains("plugged sensor-board into test-addon:j1"),
        "{plug}"
    );
    assert!(plug.contains("rc=0"), "{plug}");
    for dev in ["id=sensor-disk", "id=sensor-rng"] {
        let line = plug
            .lines()
            .find(|l| l.contains(dev) && l.contains("state=plugged"))
            .unwrap_or_else(|| panic!("{dev} not listed as plugged:\n{plug}"));
        assert!(line.contains("connector=j1"), "{line}");
        assert!(line.contains("addon=sensor-board"), "{line}");
    }
    assert!(plug.contains(ADDON_NODES), "{plug}");
    assert!(plug.contains("CELLVM-BLK-WRITE rc=0"), "{plug}");
    assert!(plug.contains("CELLVM-BLK-READ: sensor-marker-1"), "{plug}");
    assert!(plug.contains("CELLVM-UART-WRITE ttyS"), "{plug}");
    assert!(
        plug.contains("host: sensor-uart.out: hello from the sensor board"),
        "{plug}"
    );
    assert!(
        steps["plug-twice"].contains("connector j1 already has add-on sensor-board plugged in"),
        "{}",
        steps["plug-twice"]
    );
}

#[test]
fn unplugging_a_board_removes_every_node_and_device_and_keeps_its_data() {
    let steps = addon_steps();
    let unplug = &steps["unplug"];
    assert!(unplug.contains("addon=sensor-board"), "{unplug}");
    assert!(unplug.contains("forced=false"), "{unplug}");
    assert!(unplug.contains(NO_ADDON_NODES), "{unplug}");
    assert!(unplug.contains("CELLVM-BLK-READ: no disk"), "{unplug}");
    assert!(!unplug.contains("state=plugged"), "{unplug}");
    // The marker reached the image (od -c of its first bytes).
    assert!(unplug.contains("s   e   n   s   o   r"), "{unplug}");
    assert!(
        steps["replug"].contains("CELLVM-BLK-READ: sensor-marker-1"),
        "{}",
        steps["replug"]
    );
}

#[test]
fn refused_plugs_change_nothing_and_name_the_cause() {
    let steps = addon_steps();
    let r = &steps["refusals"];
    assert!(r.contains("the cell has no connector \"j9\""), "{r}");
    assert!(
        r.contains("/outside.dtso:8:1: &ioapic is not connector j1"),
        "{r}"
    );
    assert!(r.contains("nothing is plugged into connector j1"), "{r}");
    assert!(r.contains("guest_refused"), "{r}");
    assert!(!r.contains("state=plugged"), "{r}");
    assert!(r.contains(NO_ADDON_NODES), "{r}");
}

#[test]
fn a_boards_pci_bridge_is_enumerated_under_its_connector_and_removed() {
    let steps = addon_steps();
    let pci = &steps["pci-board"];
    assert!(
        pci.contains("plugged pci-board into test-addon:j2"),
        "{pci}"
    );
    let bridge = pci
        .lines()
        .find(|l| l.contains("id=board-pci") && l.contains("state=plugged"))
        .unwrap_or_else(|| panic!("board-pci not listed:\n{pci}"));
    assert!(bridge.contains("config=0xd1400000+0x100000"), "{bridge}");
    assert!(bridge.contains("connector=j2"), "{bridge}");
    assert!(
        pci.contains(
            "CELLVM-DT-LS /connector-bus@d1400000: clock-100m pci-board-info pci@d1400000 END"
        ),
        "{pci}"
    );
    let console = &steps["console"];
    assert!(
        console.contains("pci d1400000:20:01.0: [1b36:00ce]"),
        "{console}"
    );
    assert!(console.contains("CELLVM-DEV- d1400000.pci"), "{console}");
    assert!(
        pci.contains("CELLVM-DT-LS /connector-bus@d1400000: none END"),
        "{pci}"
    );
}

#[test]
fn a_surprise_removal_under_reads_fails_them_and_the_guest_takes_a_new_plug() {
    let steps = addon_steps();
    let s = &steps["surprise"];
    assert!(s.contains("CELLVM-BLK-READER: reading"), "{s}");
    assert!(s.contains("forced=true"), "{s}");
    assert!(!s.contains("guest_error"), "{s}");
    // The reads in flight failed instead of hanging, and the disk went.
    assert!(s.contains("CELLVM-BLK-READER: stopped after"), "{s}");
    assert!(s.contains("disk gone from the guest: 1"), "{s}");
    assert!(!s.contains("state=plugged"), "{s}");
    assert!(s.contains(NO_ADDON_NODES), "{s}");
    let replug = &steps["surprise-replug"];
    assert!(
        replug.contains("CELLVM-BLK-READ: sensor-marker-1"),
        "{replug}"
    );
    assert_eq!(replug.matches("rc=0").count(), 2, "{replug}");
    let pci = &steps["surprise-pci"];
    assert_eq!(pci.matches("rc=0").count(), 4, "{pci}");
    assert!(pci.contains("forced=true"), "{pci}");
    assert!(
        pci.contains("CELLVM-DT-LS /connector-bus@d1400000: none END"),
        "{pci}"
    );
    let end = pci
        .lines()
        .find(|l| l.starts_with("CELLVM-DEVICES surprise-end:"))
        .unwrap_or_else(|| panic!("no device snapshot:\n{pci}"));
    for gone in ["d1000000.virtio_mmio", "d1002000.serial", "d1400000.pci"] {
        assert!(!end.contains(gone), "{gone} still there: {end}");
    }
}

#[test]
fn a_connector_attached_at_run_time_takes_a_board_and_goes_with_it_when_forced() {
    let steps = addon_steps();
    let r = &steps["runtime-connector"];
    assert!(
        r.contains("id=j3")
            && r.contains("base=0xd1100000")
            && r.contains("nodes=[\"/connector-bus@d1100000\"]"),
        "{r}"
    );
    assert!(r.contains("d1100000.connector-bus"), "{r}");
    assert!(r.contains("plugged sensor-board into test-addon:j3"), "{r}");
    assert!(
        r.contains("CELLVM-DT-LS /connector-bus@d1100000: clock-24m regulator-sensor sensor-info serial@d1102000 virtio_mmio@d1100000 virtio_mmio@d1101000 END"),
        "{r}"
    );
    assert!(r.contains("CELLVM-BLK-READ: sensor-marker-1"), "{r}");
    assert!(
        r.contains("connector j3 already has add-on sensor-board plugged in"),
        "{r}"
    );
    assert!(
        r.contains("connector j1 is in the cell file and cannot be disconnected"),
        "{r}"
    );
    assert!(r.contains("unplugged=sensor-board"), "{r}");
    let gone = r
        .lines()
        .find(|l| l.starts_with("CELLVM-DEVICES j3-gone:"))
        .unwrap_or_else(|| panic!("no device snapshot:\n{r}"));
    assert!(!gone.contains("d1100000"), "{gone}");
    let after = r
        .split("CELLVM-DEVICES j3-gone:")
        .nth(1)
        .unwrap_or_default();
    assert!(!after.lines().any(|l| l.contains("id=j3 ")), "{r}");
    let again = &steps["reconnect"];
    assert_eq!(again.matches("rc=0").count(), 4, "{again}");
}

#[test]
fn fifty_plug_unplug_cycles_leave_the_cell_as_it_was_without_kernel_complaints() {
    let steps = addon_steps();
    let cycles = &steps["cycles"];
    assert!(cycles.contains("cycles: 50 failures: 0"), "{cycles}");
    assert!(cycles.contains("cycles: devices identical"), "{cycles}");
    assert!(cycles.contains(NO_ADDON_NODES), "{cycles}");
    assert!(
        steps["after-cycles"].contains("CELLVM-BLK-READ: sensor-marker-1"),
        "{}",
        steps["after-cycles"]
    );
    let console = &steps["console"];
    for bad in ["OF: ERROR", "WARNING:", "refcount_t", "BUG:", "Oops"] {
        assert!(!console.contains(bad), "guest said {bad}:\n{console}");
    }
}

/// The numbers of the last whole `CELLVM-SCALE TAG: ... END` line
/// (`key=value` pairs).
fn scale_counts(
    steps: &std::collections::BTreeMap<String, String>,
    step: &str,
    tag: &str,
) -> std::collections::BTreeMap<String, u64> {
    let text = &steps[step];
    let line = text
        .lines()
        .rev()
        .find_map(|l| {
            l.strip_prefix(&format!("CELLVM-SCALE {tag}: "))?
                .strip_suffix(" END")
        })
        .unwrap_or_else(|| panic!("no whole scale-check {tag} line in step {step}:\n{text}"));
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect()
}

fn assert_scale(counts: &std::collections::BTreeMap<String, u64>, want: &[(&str, u64)]) {
    for (key, value) in want {
        assert_eq!(counts.get(*key), Some(value), "{key} in {counts:?}");
    }
}

#[test]
fn a_cell_with_64_devices_on_shared_pins_binds_and_uses_every_one() {
    let steps = scenario_steps("scale");
    // 40 virtio-mmio devices (16 disks) and 24 PCI functions on 18 pins.
    let all = [
        ("virtio", 40),
        ("bound", 40),
        ("disks", 16),
        ("marked", 16),
        ("wrote", 16),
        ("rng_bytes", 16),
        ("pci_test", 24),
        ("pci_ok", 24),
    ];
    let none = [("virtio", 0), ("disks", 0), ("pci_test", 0)];
    // Configured at boot.
    let boot = scale_counts(&steps, "boot", "boot");
    assert_scale(&boot, &all);
    assert!(boot["shared_lines"] > 0, "64 devices share pins: {boot:?}");
    // A function more on a boot-time bridge, bound and interrupting.
    let added = &steps["add-function"];
    assert!(
        added.contains("added test e0000000:00:09.0 to bootp0"),
        "{added}"
    );
    assert!(added.contains("add-function rc=0"), "{added}");
    assert!(added.contains("remove-function rc=0"), "{added}");
    assert_scale(
        &scale_counts(&steps, "add-function", "added"),
        &[("pci_test", 25), ("pci_ok", 25)],
    );
    assert_scale(
        &scale_counts(&steps, "add-function", "removed"),
        &[("pci_test", 24)],
    );
    // Attached at run time, detached, attached again.
    assert_scale(&scale_counts(&steps, "runtime", "empty"), &none);
    for (step, tag, want) in [
        ("attach-all", "full", &all[..]),
        ("detach-all", "detached", &none[..]),
        ("reattach-all", "again", &all[..]),
    ] {
        let verb = if step == "detach-all" {
            "detach"
        } else {
            "attach"
        };
        assert!(
            steps[step].contains(&format!("{verb}-all: failures=0")),
            "{}",
            steps[step]
        );
        assert_scale(&scale_counts(&steps, step, tag), want);
    }
    assert!(
        steps["host-reads"].contains("host-reads: disks=32 guest_lines=32"),
        "{}",
        steps["host-reads"]
    );
    // Both cells exited cleanly; no interrupt storm, no stuck line, no
    // kernel warning in either guest.
    for (step, cell) in [
        ("add-function", "scale-boot"),
        ("stop-runtime", "scale-run"),
    ] {
        let text = &steps[step];
        assert!(text.contains(&format!("{cell}: cellvm rc=0")), "{text}");
        assert!(text.contains(&format!("{cell}: irq-problems: 0")), "{text}");
    }
}

#[test]
fn an_ivshmem_function_attached_at_run_time_exchanges_doorbells_with_a_booted_peer() {
    let steps = scenario_steps("ivshmem-hot");
    assert!(
        steps["attach"].contains("attach rc=0"),
        "{}",
        steps["attach"]
    );
    let exchange = &steps["exchange"];
    assert!(exchange.contains("peer0 rc=0"), "{exchange}");
    let logs = &steps["logs"];
    for line in [
        "peer1: ivshmem: e0000000:04:01.0 id=0x00000001 max_peers=0x00000002",
        // Peer 0's doorbell reached the attached function's receiver.
        "peer1: ivshmem: doorbell interrupt received count=1",
        "peer1: ivshmem: peer1 marker=0x0C0FFEE0 peer0_state=0x00000001",
        "peer0: ivshmem: doorbell interrupt received count=1",
        "peer1: ivshmem: peer1 peer0_state=0x00000002",
        "peer0: ivshmem: peer0 peer1_state=0x00000002",
        "peer1: CELLVM-IVSHMEM rc=0",
        "CELLVM-DEV- e0000000:04:01.0",
    ] {
        assert!(logs.contains(line), "{line}:\n{logs}");
    }
    assert!(
        steps["detach"].contains("detach rc=0"),
        "{}",
        steps["detach"]
    );
}

#[test]
fn functions_are_added_to_and_removed_from_a_running_bridge() {
    let steps = attach_steps();
    let added = &steps["add-function"];
    assert!(
        added.contains("added test e0000000:08:03.0 to hot0"),
        "{added}"
    );
    let virtio = &steps["add-function-virtio"];
    assert!(
        virtio.contains("added virtio e0000000:08:04.0 to hot0"),
        "{virtio}"
    );
    let refused = &steps["add-function-refused"];
    for line in [
        "conflict: bridge hot0: 08:01.0 is taken",
        "not_found: no device nosuch in this cell",
        "not_found: bridge hot0 has no function 08:05.0",
    ] {
        assert!(refused.contains(line), "{line}:\n{refused}");
    }
    assert_eq!(refused.matches("rc=1").count(), 3, "{refused}");
    let removed = &steps["remove-function"];
    assert!(
        removed.contains("removed test e0000000:08:03.0 from hot0"),
        "{removed}"
    );
    assert!(
        removed.contains("removed virtio e0000000:08:04.0 from hot0"),
        "{removed}"
    );
    assert!(steps["remove-function-configured"].contains("removed test e0000000:08:02.0 from hot0"));
    // The guest saw each function come and go (its driver bound and unbound).
    let console = &steps["console"];
    for line in [
        "PCI function e0000000:08:03.0 added",
        "CELLVM-DEV+ e0000000:08:03.0",
        "CELLVM-DEV+ e0000000:08:04.0",
        "PCI function e0000000:08:04.0 removed",
        "CELLVM-DEV- e0000000:08:03.0",
        "CELLVM-DEV- e0000000:08:02.0",
    ] {
        assert!(console.contains(line), "{line}:\n{console}");
    }
}
