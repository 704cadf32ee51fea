//! Nested arm64 tests: real arm64 Linux cells under the static aarch64
//! cellvm on real KVM (VHE) inside an aarch64 L1 guest (qemu-system-aarch64,
//! `-M virt,virtualization=on`). One L1 boot runs every scenario in
//! tests/nested/scenarios-arm64/; each test here checks one scenario's
//! output (docs/rig.md, "The arm64 rig").
//!
//! Needs the rig built by `scripts/setup.sh --arch arm64` (the README's
//! test command runs it) and, for the device-tree check, Debian's
//! qemu-user (`qemu-aarch64`, which the setup installs) to run the aarch64
//! cellvm on the host; anything missing fails loudly.

// Test code: a failed step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::checks::{self, report_value};
use common::handover;
use common::rig::{arm64_rig, repo_root};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

fn assert_booted(name: &str) -> Vec<String> {
    checks::assert_booted(arm64_rig(), name, 0)
}

/// The static aarch64 cellvm (scripts/build-cellvm-static.sh --arch arm64).
fn arm64_cellvm() -> PathBuf {
    let root = repo_root();
    let target = match std::env::var("CARGO_TARGET_DIR") {
        Ok(dir) if PathBuf::from(&dir).is_absolute() => PathBuf::from(dir),
        Ok(dir) => root.join(dir),
        Err(_) => root.join("target"),
    };
    target.join("arm64/aarch64-unknown-linux-gnu/release/cellvm")
}

/// The DTB the aarch64 cellvm builds for `cell`, run under qemu-user.
fn arm64_cell_dtb(cell: &str) -> Vec<u8> {
    let bin = arm64_cellvm();
    assert!(
        bin.exists(),
        "{} is missing: run scripts/setup.sh --arch arm64",
        bin.display()
    );
    let out = tempfile::NamedTempFile::new().unwrap();
    let status = Command::new("qemu-aarch64")
        .arg(&bin)
        .args(["dtb", cell, "-o"])
        .arg(out.path())
        .current_dir(repo_root())
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run qemu-aarch64 (Debian's qemu-user; scripts/setup.sh --arch arm64 installs it): {e}")
        });
    assert!(
        status.success(),
        "cellvm dtb {cell} under qemu-aarch64: {status}"
    );
    std::fs::read(out.path()).unwrap()
}

#[test]
fn arm64_one_vcpu_cell_reaches_userspace_and_sees_its_device_tree() {
    let report = assert_booted("boot-1cpu");
    assert_eq!(report_value(&report, "cpus").as_deref(), Some("1"));
    assert_eq!(report_value(&report, "dt").as_deref(), Some("present"));
}

#[test]
fn arm64_two_vcpu_cell_starts_its_second_vcpu_through_psci() {
    let report = assert_booted("boot-2cpu");
    assert_eq!(report_value(&report, "cpus").as_deref(), Some("2"));
}

#[test]
fn arm64_guest_device_tree_carries_every_property_cellvm_generated() {
    for (scenario, cell) in [
        ("boot-1cpu", "cells/arm64/test-boot-1cpu.toml"),
        ("boot-2cpu", "cells/arm64/test-boot-2cpu.toml"),
    ] {
        let report = assert_booted(scenario);
        let expected = checks::assert_guest_dt_matches(&report, &arm64_cell_dtb(cell), scenario);
        for key in [
            "psci/method",
            "timer/interrupts",
            "interrupt-controller@8000000/reg",
            "interrupt-controller@8000000/msi-controller@8080000/reg",
            "serial@9000000/interrupts",
        ] {
            assert!(
                expected.contains_key(key),
                "{cell}: no {key} in cellvm's DTB"
            );
        }
    }
}

#[test]
fn arm64_guest_drives_test_functions_on_ecam_and_cam_bridges_with_intx_on_gic_spis_and_msix() {
    let s = arm64_rig().succeeded("pci");
    let window = cellvm::platform::aarch64::PCI_MMIO32_POOL;
    let listed: Vec<&str> = s.output.lines().filter(|l| l.starts_with("pci:")).collect();
    assert_eq!(listed.len(), 3, "{}", s.output);
    for line in &listed {
        assert!(line.contains("vendor=0x1b36 device=0x00ce"), "{line}");
        let bar = line.split("bar0=").nth(1).unwrap();
        let start =
            u64::from_str_radix(bar.split('-').next().unwrap().trim_start_matches("0x"), 16)
                .unwrap();
        assert!(
            (window.0..window.1).contains(&start),
            "{line}: BAR0 outside the 32-bit PCI pool {window:x?}"
        );
    }
    // INTx on GIC SPIs; MSI-X end to end through the ITS.
    let results = checks::assert_pci_test_functions(&s.output, 3);
    // Each bridge is the PCI domain cellvm gave it (linux,pci-domain).
    let domains: std::collections::BTreeSet<&str> = results
        .iter()
        .filter_map(|r| r.strip_prefix("pcitest:")?.split(':').next())
        .collect();
    assert_eq!(domains.len(), 2, "{results:?}");
}

/// The output of each `step: NAME` section of the arm64 attach scenario.
fn attach_steps() -> BTreeMap<String, String> {
    scenario_steps("attach")
}

/// The output of each `step: NAME` section of an arm64 scenario that
/// exited with 0.
fn scenario_steps(name: &str) -> BTreeMap<String, String> {
    checks::scenario_steps(arm64_rig(), name)
}

#[test]
fn arm64_pci_bridges_and_their_functions_come_and_go_at_run_time() {
    let steps = attach_steps();
    for step in [
        "attach-pci",
        "add-function",
        "remove-function",
        "detach-pci",
        "attach-cam",
        "detach-cam",
    ] {
        assert!(steps[step].contains("rc=0"), "{step}: {}", steps[step]);
        assert!(!steps[step].contains("rc=1"), "{step}: {}", steps[step]);
    }
    let console = &steps["console"];
    assert!(
        console.contains("cellvm: channel: guest agent HELLO: protocol 1"),
        "{console}"
    );
    for dev in [":08:01.0", ":08:02.0", ":08:03.0", ":0c:04.0"] {
        for sign in ["+", "-"] {
            assert!(
                console
                    .lines()
                    .any(|l| l.starts_with(&format!("CELLVM-DEV{sign} ")) && l.ends_with(dev)),
                "CELLVM-DEV{sign} ...{dev} missing:\n{console}"
            );
        }
    }
}

#[test]
fn arm64_virtio_mmio_and_virtio_pci_devices_bind_at_run_time_and_go() {
    let steps = attach_steps();
    for step in [
        "attach-virtio",
        "detach-virtio",
        "attach-virtio-pci",
        "detach-virtio-pci",
    ] {
        assert!(steps[step].contains("rc=0"), "{step}: {}", steps[step]);
    }
    let console = &steps["console"];
    for dev in ["virtio_mmio", "virtio_rng", "virtio_blk"] {
        for sign in ["+", "-"] {
            assert!(
                console
                    .lines()
                    .any(|l| l.starts_with(&format!("CELLVM-DEV{sign} ")) && l.contains(dev)),
                "CELLVM-DEV{sign} ...{dev} missing:\n{console}"
            );
        }
    }
}

#[test]
fn arm64_attach_detach_cycles_leave_the_cell_unchanged_and_port_uarts_are_refused() {
    let steps = attach_steps();
    assert!(
        steps["cycles"].contains("cycles: 20 failures: 0"),
        "{}",
        steps["cycles"]
    );
    assert!(
        steps["cycles"].contains("cycles: devices identical"),
        "{}",
        steps["cycles"]
    );
    let bad = &steps["bad-requests"];
    assert!(
        bad.contains("ser1 is a UART at an I/O port, but aarch64 has no port I/O"),
        "{bad}"
    );
    assert!(
        bad.contains("no attached device has id \"nosuch\""),
        "{bad}"
    );
}

#[test]
fn arm64_virtio_mmio_rng_block_and_console_move_real_data() {
    checks::assert_virtio_moves_real_data(arm64_rig(), "virtio", "mmio");
}

#[test]
fn arm64_virtio_pci_rng_block_and_console_move_real_data_with_msix_through_the_its() {
    let o = checks::assert_virtio_moves_real_data(arm64_rig(), "virtio-pci", "pci");
    // rng 1 queue + console 2 + block 1, each with a config vector: the
    // drivers took MSI-X (through the GICv3 ITS), not INTx.
    let msix = checks::msix_irqs(&o);
    assert!(msix >= 3, "{msix} MSI-X interrupts:\n{o}");
}

#[test]
fn arm64_ivshmem_peer_cells_share_memory_and_ring_each_others_doorbells() {
    let s = arm64_rig().succeeded("ivshmem");
    let o = &s.output;
    assert!(!o.contains("FAIL"), "{o}");
    assert!(
        o.contains("peer1: ivshmem: peer1 marker=0x0C0FFEE0 peer0_state=0x00000001"),
        "{o}"
    );
    assert!(o.contains("peer0: ivshmem: peer0 ack=0x00000001"), "{o}");
    for peer in ["peer0", "peer1"] {
        let doorbell = o
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "{peer}: ivshmem: doorbell interrupt received count="
                ))
            })
            .and_then(|n| n.trim().parse::<u64>().ok());
        assert!(
            doorbell.is_some_and(|n| n >= 1),
            "{peer}: no doorbell interrupt:\n{o}"
        );
    }
}

#[test]
fn arm64_exit_status_is_the_guests_debug_exit_code_or_0_after_its_psci_poweroff() {
    let steps = scenario_steps("exit-status");
    let exit42 = &steps["exit42"];
    assert!(exit42.contains("exit=42"), "{exit42}");
    assert!(
        exit42.contains("guest requested exit with code 42 (exit status 42)"),
        "{exit42}"
    );
    let shutdown = &steps["shutdown"];
    assert!(shutdown.contains("CELLVM-AGENT-READY"), "{shutdown}");
    assert!(shutdown.contains("rc=0"), "{shutdown}");
    assert!(shutdown.contains("exit=0"), "{shutdown}");
    assert!(
        shutdown.contains("cellvm: cell test-agent stopped: guest powered off (exit status 0)"),
        "{shutdown}"
    );
}

/// The seeds' shared flash on arm64 (the x86 handover scenario, run through
/// shared.list with cells/arm64/host.toml and bmc.toml): every check of the
/// x86_64 tests, in one test (the scenario's steps build on each other).
#[test]
fn arm64_the_shared_flash_moves_between_cells_with_consent_rollback_and_dying_cells() {
    let steps = scenario_steps("handover");
    handover::moves_to_the_bmc_with_its_data_and_back(&steps);
    handover::a_refusing_bmc_leaves_it_with_the_host(&steps);
    handover::fifty_moves_keep_the_data(&steps);
    handover::a_host_with_it_mounted_refuses(&steps);
    handover::a_bmc_dying_mid_move_leaves_it_with_the_host(&steps);
    handover::a_host_dying_mid_move_leaves_the_bmc_its_claim(&steps);
}
