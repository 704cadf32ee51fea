//! Checks of the handover scenario (tests/nested/scenarios/handover.sh: the
//! seeds' shared flash moving between cells host and bmc), shared by the
//! x86_64 and arm64 nested tests. Each takes the scenario's steps.

use super::checks::{api_rcs, line_value};
use std::collections::BTreeMap;

/// The host writes, the flash moves to the BMC (the host's disk gone, the
/// BMC reads the marker and writes new firmware) and back.
pub fn moves_to_the_bmc_with_its_data_and_back(steps: &BTreeMap<String, String>) {
    let start = &steps["start"];
    assert_eq!(start.matches("CELLVM-AGENT-READY").count(), 2, "{start}");
    assert!(start.contains("the 2 cells can share this host"), "{start}");
    assert!(start.contains("host: CELLVM-BLK-WRITE rc=0"), "{start}");
    assert!(start.contains("bmc: CELLVM-BLK-READ: no disk"), "{start}");
    let to_bmc = &steps["to-bmc"];
    assert_eq!(api_rcs(to_bmc), [0], "{to_bmc}");
    assert!(
        to_bmc.contains("moved flash0 from host to bmc in "),
        "{to_bmc}"
    );
    assert!(
        to_bmc.contains("host: CELLVM-BLK-READ: no disk"),
        "{to_bmc}"
    );
    assert!(
        to_bmc.contains("bmc: CELLVM-BLK-READ: host-marker-1"),
        "{to_bmc}"
    );
    assert!(to_bmc.contains("bmc: CELLVM-BLK-WRITE rc=0"), "{to_bmc}");
    // Only the BMC holds the image now.
    let claims = line_value(steps, "to-bmc", "claims:");
    assert!(claims.starts_with("cell bmc read-write "), "{claims}");
    assert!(!claims.contains("cell host"), "{claims}");
    let to_host = &steps["to-host"];
    assert_eq!(api_rcs(to_host), [0], "{to_host}");
    assert!(
        to_host.contains("host: CELLVM-BLK-READ: new-firmware"),
        "{to_host}"
    );
    assert!(
        to_host.contains("bmc: CELLVM-BLK-READ: no disk"),
        "{to_host}"
    );
}

/// A BMC whose agent NAKs: the flash goes back to the host, usable.
pub fn a_refusing_bmc_leaves_it_with_the_host(steps: &BTreeMap<String, String>) {
    let s = &steps["bmc-refuses"];
    assert_eq!(api_rcs(s), [1], "{s}");
    assert!(
        s.contains("bmc did not take it") && s.contains("the device is back with host"),
        "{s}"
    );
    assert!(s.contains("host: CELLVM-BLK-READ: new-firmware"), "{s}");
}

/// 50 moves back and forth, the data intact.
pub fn fifty_moves_keep_the_data(steps: &BTreeMap<String, String>) {
    let s = &steps["back-and-forth"];
    assert!(s.contains("round trips: 25 of 25"), "{s}");
    assert!(s.contains("host: CELLVM-BLK-READ: new-firmware"), "{s}");
}

/// A host guest with the flash mounted refuses (responder, then hook);
/// once unmounted it moves.
pub fn a_host_with_it_mounted_refuses(steps: &BTreeMap<String, String>) {
    let s = &steps["host-refuses"];
    assert!(s.contains("host: CELLVM-BLK-MOUNT rc=0"), "{s}");
    // Refused by the guest's consent responder, then (responder stopped)
    // by its consent hook; once unmounted it moves.
    assert_eq!(api_rcs(s), [1, 1, 0, 0], "{s}");
    assert!(
        s.contains("host: CELLVM-CONSENT-RESPONDER stopped")
            && s.contains("host: CELLVM-CONSENT-RESPONDER started"),
        "{s}"
    );
    let responder = line_value(steps, "host-refuses", "host: CELLVM-KMSG:");
    assert!(
        responder.contains("consent responder refused to disable")
            && responder.contains("(status 1)"),
        "{responder}"
    );
    assert!(
        s.contains("consent hook /sbin/cellvm-consent refused to disable"),
        "{s}"
    );
    assert!(
        s.contains("guest_refused") && s.contains("host did not give it up"),
        "{s}"
    );
    assert!(s.contains("nothing moved"), "{s}");
    assert!(s.contains("bmc: CELLVM-BLK-READ: after-mount"), "{s}");
}

/// The BMC dies mid-move: the flash is the host's again, claim included.
pub fn a_bmc_dying_mid_move_leaves_it_with_the_host(steps: &BTreeMap<String, String>) {
    let s = &steps["bmc-dies"];
    assert!(s.contains("move rc=1"), "{s}");
    assert!(
        s.contains("bmc did not take it") && s.contains("the device is back with host"),
        "{s}"
    );
    assert!(s.contains("host: CELLVM-BLK-READ: after-mount"), "{s}");
    let claims = line_value(steps, "bmc-dies", "claims:");
    assert!(claims.starts_with("cell host read-write "), "{claims}");
    assert!(!claims.contains("cell bmc"), "{claims}");
}

/// The host dies mid-move: only the BMC holds the image; enabling works.
pub fn a_host_dying_mid_move_leaves_the_bmc_its_claim(steps: &BTreeMap<String, String>) {
    let s = &steps["host-dies"];
    assert!(s.contains("move rc=1"), "{s}");
    // Only the BMC holds the image (its pending claim); enable confirms it.
    let claims = line_value(steps, "host-dies", "claims:");
    assert!(claims.starts_with("cell bmc read-write "), "{claims}");
    assert!(!claims.contains("cell host"), "{claims}");
    assert_eq!(api_rcs(s), [0], "{s}");
    assert!(s.contains("bmc: CELLVM-BLK-READ: after-mount"), "{s}");
    let end = &steps["end"];
    assert!(end.contains("bmc exit=0"), "{end}");
}
