//! Function descriptions: one `[[pci_bridge.device]]` table for a running
//! bridge, read by the cell file's validator of bridge functions.

use super::*;
use std::path::Path;

const NO_FILES: LoadOptions = LoadOptions { check_files: false };

fn function(text: &str) -> Result<PciDeviceConfig, ConfigError> {
    parse_function(
        text,
        Some(Path::new("fn.toml")),
        Path::new("/cells"),
        &NO_FILES,
    )
    .map(|d| d.function)
}

#[test]
fn a_function_table_reads_as_in_a_cell_file() {
    let f = function("[[pci_bridge.device]]\nslot = 3\nfunction = 1\nkind = \"test\"\n").unwrap();
    assert_eq!((f.bus, f.slot, f.function), (0, 3, 1));
    assert_eq!(f.kind, PciDeviceKind::Test);
    let v = function(
        "[[pci_bridge.device]]\nslot = 4\nkind = \"virtio\"\nvirtio = \"block\"\npath = \"d.img\"\n",
    )
    .unwrap();
    let PciDeviceKind::Virtio(v) = v.kind else {
        panic!("not virtio: {v:?}");
    };
    assert_eq!(v.backend.path.as_deref(), Some(Path::new("/cells/d.img")));
}

#[test]
fn errors_name_the_file_line_column_and_field() {
    let e = function("[[pci_bridge.device]]\nslot = 40\nkind = \"test\"\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "fn.toml:2:8: pci_bridge.device[0].slot: 40 is not a PCI device number (0..=31)"
    );
}

#[test]
fn a_description_holds_exactly_one_function_and_no_bridge_keys() {
    let two = "[[pci_bridge.device]]\nslot = 3\nkind = \"test\"\n[[pci_bridge.device]]\nslot = 4\nkind = \"test\"\n";
    assert!(function(two)
        .unwrap_err()
        .to_string()
        .contains("2 functions; a function description holds exactly one"));
    let keyed = "[pci_bridge]\nid = \"hot0\"\n[[pci_bridge.device]]\nslot = 3\nkind = \"test\"\n";
    let e = function(keyed).unwrap_err();
    assert_eq!(e.field(), "pci_bridge.id");
    assert!(
        e.to_string()
            .contains("the bridge is named on the command line"),
        "{e}"
    );
    assert!(function("").is_err());
}

#[test]
fn a_pci_to_pci_bridge_cannot_be_added_to_a_running_bridge() {
    let e = function("[[pci_bridge.device]]\nslot = 4\nkind = \"pci-bridge\"\nsecondary = 1\n")
        .unwrap_err();
    assert_eq!(e.field(), "pci_bridge.device[0].kind");
}

#[test]
fn the_cell_checks_the_bus_against_the_bridge() {
    let value: toml::Value =
        toml::from_str("[[pci_bridge.device]]\nbus = 9\nslot = 3\nkind = \"test\"\n").unwrap();
    let e = function_from_value(value.clone(), "<request>", None, &NO_FILES, Some(8)).unwrap_err();
    assert!(
        e.to_string()
            .contains("bus 9 is outside the bridge's buses 8..=8"),
        "{e}"
    );
    let f = function_from_value(value, "<request>", None, &NO_FILES, Some(9)).unwrap();
    assert_eq!(f.function.bus, 9);
}
