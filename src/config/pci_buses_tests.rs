//! PCI-to-PCI bridges in cell files: which buses devices may name.

use super::tests::bridge_cell;
use super::*;
use std::path::Path;

fn parse_text(text: &str) -> Result<CellConfig, ConfigError> {
    let opts = LoadOptions { check_files: false };
    parse(
        text,
        Some(Path::new("cells/x.toml")),
        Path::new("/cells"),
        &opts,
    )
}

/// A bridge with buses 0..=2 and `devices`.
fn cell(devices: &str) -> String {
    bridge_cell("ecam", &format!("bus_end = 2\n{devices}"))
}

#[track_caller]
fn assert_err(devices: &str, expected: &str) {
    match parse_text(&cell(devices)) {
        Ok(cfg) => panic!("accepted: {cfg:?}"),
        Err(e) => assert_eq!(e.to_string(), expected),
    }
}

const P2P: &str = "[[pci_bridge.device]]\nslot = 2\nkind = \"pci-bridge\"\nsecondary = 1\n";

#[test]
fn a_device_behind_a_pci_to_pci_bridge_names_its_bus() {
    let text = cell(&format!(
        "{P2P}[[pci_bridge.device]]\nbus = 1\nslot = 0\nkind = \"test\"\n\
         [[pci_bridge.device]]\nslot = 0\nkind = \"test\"\n"
    ));
    let cfg = parse_text(&text).expect("accepted");
    let devices = &cfg.pci_bridges[0].devices;
    assert_eq!(devices[0].kind, PciDeviceKind::PciBridge { secondary: 1 });
    assert_eq!((devices[0].bus, devices[0].slot), (0, 2));
    assert_eq!((devices[1].bus, devices[1].slot), (1, 0));
    // The same slot on two buses is two functions.
    assert_eq!((devices[2].bus, devices[2].slot), (0, 0));
}

#[test]
fn a_bus_no_bridge_leads_to_is_refused() {
    assert_err(
        "[[pci_bridge.device]]\nbus = 1\nslot = 0\nkind = \"test\"\n",
        "cells/x.toml:13:7: pci_bridge[0].device[0].bus: no pci-bridge leads to bus 1: add a device with kind = \"pci-bridge\" and secondary = 1",
    );
}

#[test]
fn a_bus_outside_the_host_bridges_buses_is_refused() {
    assert_err(
        "[[pci_bridge.device]]\nbus = 3\nslot = 0\nkind = \"test\"\n",
        "cells/x.toml:13:7: pci_bridge[0].device[0].bus: bus 3 is outside the bridge's buses 0..=2",
    );
}

#[test]
fn a_secondary_bus_must_lie_behind_the_root_bus_and_be_one_bridges() {
    assert_err(
        "[[pci_bridge.device]]\nslot = 2\nkind = \"pci-bridge\"\nsecondary = 3\n",
        "cells/x.toml:15:13: pci_bridge[0].device[0].secondary: bus 3 is not behind the root bus: expected 1..=2 (raise bus_end for more buses)",
    );
    assert_err(
        &format!("{P2P}[[pci_bridge.device]]\nslot = 3\nkind = \"pci-bridge\"\nsecondary = 1\n"),
        "cells/x.toml:19:13: pci_bridge[0].device[1].secondary: bus 1 is already behind pci_bridge[0].device[0]",
    );
}

#[test]
fn pci_to_pci_bridges_sit_on_the_root_bus_only() {
    assert_err(
        &format!("{P2P}[[pci_bridge.device]]\nbus = 1\nslot = 0\nkind = \"pci-bridge\"\nsecondary = 2\n"),
        "cells/x.toml:17:7: pci_bridge[0].device[1].bus: a pci-bridge sits on the root bus 0 (one level of PCI-to-PCI bridges)",
    );
}

#[test]
fn secondary_belongs_to_pci_bridges_and_they_need_one() {
    assert_err(
        "[[pci_bridge.device]]\nslot = 2\nkind = \"test\"\nsecondary = 1\n",
        "cells/x.toml:15:13: pci_bridge[0].device[0].secondary: only pci-bridge devices take this key",
    );
    assert_err(
        "[[pci_bridge.device]]\nslot = 2\nkind = \"pci-bridge\"\n",
        "cells/x.toml:12:1: pci_bridge[0].device[0].secondary: missing required key (the bus behind the PCI-to-PCI bridge)",
    );
}
