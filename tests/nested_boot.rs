//! Nested boot tests: real Linux cells under cellvm on real KVM inside an L1
//! guest (QEMU TCG with SVM). One L1 boot runs every scenario in
//! tests/nested/scenarios/; each test here checks one scenario's output.
//!
//! Needs the rig built by scripts/setup.sh (the README's test command runs
//! it); a missing rig, QEMU or /dev/kvm inside L1 fails loudly.

// Test and benchmark code: a failed step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::rig::{cell_dtb, flatten_dtb, hex, repo_root, report_lines, rig};

fn report_value(lines: &[String], key: &str) -> Option<String> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
}

fn assert_booted(name: &str, expect_rc: i32) -> Vec<String> {
    let s = rig().scenario(name);
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
        let guest: std::collections::BTreeMap<String, String> = report
            .iter()
            .filter_map(|l| l.strip_prefix("dt:"))
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let expected = flatten_dtb(&cell_dtb(&repo_root().join(cell)));
        assert!(expected.len() > 20, "suspiciously small DT");
        for (path, bytes) in &expected {
            let got = guest
                .get(path)
                .unwrap_or_else(|| panic!("{scenario}: guest DT lacks {path}"));
            assert_eq!(got, &hex(bytes), "{scenario}: {path} differs");
        }
    }
}

#[test]
fn console_input_reaches_the_guest_and_comes_back() {
    let s = rig().scenario("console-echo");
    assert_eq!(s.rc, 0, "{}", s.output);
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
    let s = rig().scenario("demo");
    assert_eq!(s.rc, 0, "{}", s.output);
    assert!(
        s.output.contains("Hello from a cellvm cell!"),
        "{}",
        s.output
    );
    assert!(s.output.contains("pci hosts:"), "{}", s.output);
}

#[test]
fn guest_enumerates_ecam_and_cam_bridges_with_bars_inside_their_windows() {
    let s = rig().scenario("pci");
    assert_eq!(s.rc, 0, "{}", s.output);
    let cfg = cellvm::config::load(
        &repo_root().join("cells/test-pci.toml"),
        &cellvm::config::LoadOptions { check_files: false },
    )
    .unwrap();
    let layout = cellvm::layout::CellLayout::new(&cfg).unwrap();
    // Expected functions: domain = low 32 bits of the config base, bus_start.
    let mut expected = Vec::new();
    for (slot, br) in layout.pci_bridges.iter().zip(&cfg.pci_bridges) {
        for d in &br.devices {
            expected.push((
                format!(
                    "{:08x}:{:02x}:{:02x}.{}",
                    slot.config.base as u32, slot.bus_start, d.slot, d.function
                ),
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
    for ((addr, window), line) in expected.iter().zip(&listed) {
        assert!(
            line.starts_with(&format!(
                "{addr} vendor=0x1b36 device=0x00ce class=0xff0000"
            )),
            "{line}"
        );
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
fn guest_reads_and_writes_test_device_bars_and_receives_intx() {
    let s = rig().scenario("pci");
    let results: Vec<&str> = s
        .output
        .lines()
        .filter(|l| l.starts_with("pcitest:"))
        .collect();
    assert_eq!(results.len(), 4, "{}", s.output);
    for r in results {
        assert!(r.contains("magic=0x44545643"), "{r}");
        assert!(r.contains("scratch=0x12345678"), "{r}");
        assert!(r.contains("irq_events=0->1"), "INTx not delivered: {r}");
    }
}

#[test]
fn two_ivshmem_peer_cells_exchange_data_and_see_each_others_state() {
    let s = rig().scenario("ivshmem");
    assert_eq!(s.rc, 0, "{}", s.output);
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
    let s = rig().scenario("ivshmem");
    assert_eq!(s.rc, 0, "{}", s.output);
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
    let s = rig().scenario("attach");
    assert_eq!(s.rc, 0, "{}", s.output);
    let mut steps = std::collections::BTreeMap::new();
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
    let s = rig().scenario(scenario);
    assert_eq!(s.rc, 0, "{}", s.output);
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
    let msix: usize = o
        .lines()
        .find_map(|l| l.strip_prefix("virtio: msix_irqs="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no msix line:\n{o}"));
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
