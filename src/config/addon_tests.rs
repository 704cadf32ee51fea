//! Add-on board descriptions: accepted files and located errors.

use super::*;
use std::path::Path;

const NO_FILES: LoadOptions = LoadOptions { check_files: false };

/// Writes `board.toml` (and `board.dtso`) into a temporary directory and
/// loads it.
fn load(toml: &str) -> (tempfile::TempDir, Result<AddonDescription, ConfigError>) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("board.dtso"),
        "/dts-v1/;\n/plugin/;\n&j1 { };\n",
    )
    .expect("dtso");
    let path = dir.path().join("board.toml");
    std::fs::write(&path, toml).expect("toml");
    let r = load_addon(&path, &NO_FILES);
    (dir, r)
}

#[track_caller]
fn assert_error(toml: &str, expected: &str) {
    let (dir, r) = load(toml);
    match r {
        Ok(d) => panic!("accepted: {:?}", d.addon),
        Err(e) => {
            let shown = e
                .to_string()
                .replace(&format!("{}/", dir.path().display()), "");
            assert_eq!(shown, expected);
        }
    }
}

#[test]
fn a_board_has_a_name_an_overlay_source_and_its_devices() {
    let (dir, r) = load(
        "name = \"sensor\"\noverlay = \"board.dtso\"\n\
         [[virtio_mmio]]\nid = \"d0\"\nkind = \"rng\"\n",
    );
    let addon = r.expect("valid").addon;
    assert_eq!(addon.name, "sensor");
    assert_eq!(
        Path::new(&addon.overlay_name),
        dir.path().join("board.dtso")
    );
    assert!(addon.overlay_text.starts_with("/dts-v1/;"));
    assert_eq!(addon.devices.len(), 1);
    assert_eq!(addon.devices[0].id(), "d0");
}

#[test]
fn a_board_device_may_not_choose_its_place() {
    assert_error(
        "name = \"s\"\noverlay = \"board.dtso\"\n[[virtio_mmio]]\nid = \"d0\"\nkind = \"rng\"\nbase = 0xd0100000\n",
        "board.toml:6:8: virtio_mmio[0].base: an add-on's devices are placed in the connector's window and pins; leave base and irq out",
    );
    assert_error(
        "name = \"s\"\noverlay = \"board.dtso\"\n[[virtio_mmio]]\nid = \"d0\"\nkind = \"rng\"\nirq = 9\n",
        "board.toml:6:7: virtio_mmio[0].irq: an add-on's devices are placed in the connector's window and pins; leave base and irq out",
    );
}

#[test]
fn a_board_device_is_in_use() {
    assert_error(
        "name = \"s\"\noverlay = \"board.dtso\"\n[[virtio_mmio]]\nid = \"d0\"\nkind = \"rng\"\nstate = \"reserved\"\n",
        "board.toml:6:9: virtio_mmio[0].state: an add-on's devices are in use when it is plugged: leave state out or say \"okay\"",
    );
}

#[test]
fn a_board_uart_has_no_port_or_irq() {
    assert_error(
        "name = \"s\"\noverlay = \"board.dtso\"\n[[uart]]\nid = \"u0\"\nport = 0x2f8\n",
        "board.toml:5:8: uart[0].port: an add-on's UART is memory-mapped in the connector's window on one of its pins; leave port and irq out",
    );
    let (_dir, r) = load("name = \"s\"\noverlay = \"board.dtso\"\n[[uart]]\nid = \"u0\"\n");
    assert!(
        matches!(&r.expect("valid").addon.devices[..], [DeviceConfig::Uart(u)] if u.id == "u0")
    );
}

#[test]
fn a_board_needs_a_name_and_an_overlay_source_that_exists() {
    assert_error(
        "overlay = \"board.dtso\"\n",
        "board.toml:1:1: name: missing required key",
    );
    assert_error(
        "name = \"s\"\n",
        "board.toml:1:1: overlay: missing required key (the board's .dtso file)",
    );
    let (dir, r) = load("name = \"s\"\noverlay = \"nope.dtso\"\n");
    let e = r.expect_err("missing file").to_string();
    assert!(
        e.contains("board.toml:2:11: overlay:")
            && e.contains(&dir.path().join("nope.dtso").display().to_string()),
        "{e}"
    );
}

#[test]
fn unknown_keys_in_a_board_are_refused() {
    let (_dir, r) = load("name = \"s\"\noverlay = \"board.dtso\"\ncolour = 1\n");
    let e = r.expect_err("unknown key").to_string();
    assert!(e.contains(":3:1: colour: unknown key"), "{e}");
}

#[test]
fn a_board_bridge_may_not_fix_its_windows_or_have_a_64_bit_one() {
    assert_error(
        "name = \"s\"\noverlay = \"board.dtso\"\n[[pci_bridge]]\nid = \"b\"\nkind = \"ecam\"\nmmio64 = { size = \"1G\" }\n",
        "board.toml:6:10: pci_bridge[0].mmio64: an add-on's bridge is placed in the connector's window (give mmio32 a size only) and has no 64-bit window",
    );
    assert_error(
        "name = \"s\"\noverlay = \"board.dtso\"\n[[pci_bridge]]\nid = \"b\"\nkind = \"ecam\"\nconfig_base = 0xe0000000\n",
        "board.toml:6:15: pci_bridge[0].config_base: an add-on's bridge is placed in the connector's window (give mmio32 a size only) and has no 64-bit window",
    );
}

#[test]
fn a_board_bridge_is_validated_like_a_cell_files() {
    let (_dir, r) = load(
        "name = \"s\"\noverlay = \"board.dtso\"\n[[pci_bridge]]\nid = \"b\"\nkind = \"ecam\"\nbus_start = 32\nmmio32 = { size = \"2M\" }\n[[pci_bridge.device]]\nslot = 1\nkind = \"test\"\n",
    );
    let addon = r.expect("valid").addon;
    match &addon.devices[..] {
        [DeviceConfig::PciBridge(b)] => {
            assert_eq!(b.bus_start, 32);
            assert_eq!(b.mmio32.map(|w| w.size), Some(2 << 20));
            assert_eq!(b.devices.len(), 1);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_board_sent_over_the_api_may_not_carry_an_overlay_above_the_limit() {
    let value: toml::Value = toml::from_str("name = \"big\"\noverlay = \"big.dtso\"\n").unwrap();
    let text = "/".repeat(MAX_OVERLAY_SOURCE as usize + 1);
    let err = addon_from_value(
        value.clone(),
        ("big.dtso", &text),
        "<request>",
        None,
        &NO_FILES,
    )
    .expect_err("too large");
    assert!(
        err.to_string().contains("big.dtso is 262145 bytes"),
        "{err}"
    );
    let fits = "/dts-v1/;\n/plugin/;\n&j1 { };\n";
    addon_from_value(value, ("big.dtso", fits), "<request>", None, &NO_FILES).expect("fits");
}
