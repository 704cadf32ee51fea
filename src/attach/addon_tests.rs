//! Plug and unplug planning for add-on boards.

use super::*;
use crate::config::{AddonConfig, ConnectorConfig, DeviceConfig, VirtioKind, VirtioMmioConfig};
use crate::fdt::emit;
use crate::fdt::overlay::LiveTree;
use crate::fdt::overlay_tests::{
    assert_same_flat, fdtoverlay, flatten, small_config, tree_and_layout, Flat,
};
use crate::fdt::Node;
use crate::layout::{CellLayout, LayoutError};

const SOURCE: &str = "\
/dts-v1/;
/plugin/;

&j1 {
\tosc: clock-24m {
\t\tcompatible = \"fixed-clock\";
\t\t#clock-cells = <0>;
\t\tclock-frequency = <24000000>;
\t};
\tsensor {
\t\tcompatible = \"cellvm,example-sensor\";
\t\tclocks = <&osc>;
\t\tinterrupt-parent = <&ioapic>;
\t\tstorage = <&sensor_disk>;
\t};
};
";

fn rng(id: &str) -> DeviceConfig {
    DeviceConfig::VirtioMmio(VirtioMmioConfig {
        id: id.into(),
        state: crate::config::DeviceState::Okay,
        kind: VirtioKind::Rng,
        base: None,
        irq: None,
        backend: Default::default(),
    })
}

fn addon(source: &str, devices: Vec<DeviceConfig>) -> AddonConfig {
    AddonConfig {
        name: "sensor-board".into(),
        overlay_name: "board.dtso".into(),
        overlay_text: source.into(),
        devices,
    }
}

struct Cell {
    base: Node,
    layout: CellLayout,
    plugged: Vec<PluggedAddon>,
}

impl Cell {
    fn with_connector(irqs: u32) -> Self {
        let mut cfg = small_config();
        cfg.connectors = vec![ConnectorConfig {
            id: "j1".into(),
            size: 1 << 20,
            irqs,
        }];
        let (base, layout) = tree_and_layout(&cfg);
        Cell {
            base,
            layout,
            plugged: Vec::new(),
        }
    }

    fn live(&self) -> LiveTree {
        live_tree(&self.base, &[], &[], &self.plugged).expect("current tree")
    }

    fn plan(&self, a: &AddonConfig, connector: &str) -> Result<PlugPlan, AttachError> {
        plan_plug(a, connector, &self.layout, &self.base, &self.live())
    }

    fn plug(&mut self, a: &AddonConfig) -> PluggedAddon {
        let plan = self.plan(a, "j1").unwrap_or_else(|e| panic!("plug: {e}"));
        let plugged = plan.plugged.clone();
        plan.commit(&mut self.layout, &mut self.plugged)
            .expect("commit");
        plugged
    }
}

const CONNECTOR: &str = "/connector-bus@d1000000";

/// `flat` without phandles, the properties that hold overlay-local
/// phandles, and `__symbols__` (numbers differ between a static tree and
/// an applied overlay; the references are checked on their own).
fn comparable(mut flat: Flat) -> Flat {
    flat.retain(|path, _| !path.starts_with("/__symbols__"));
    for props in flat.values_mut() {
        props.retain(|name, _| !matches!(name.as_str(), "phandle" | "clocks" | "storage"));
    }
    flat
}

fn u32_at(flat: &Flat, path: &str, prop: &str) -> u32 {
    let bytes = flat
        .get(path)
        .and_then(|p| p.get(prop))
        .unwrap_or_else(|| panic!("{path} has no {prop}"));
    u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes"))
}

#[test]
fn a_plugged_board_equals_a_tree_with_its_nodes_under_the_connector_from_the_start() {
    let mut cell = Cell::with_connector(2);
    let a = addon(SOURCE, vec![rng("sensor-disk")]);
    let plan = cell.plan(&a, "j1").expect("plan");
    let base_dtb = emit::to_dtb(&cell.base).expect("base dtb");
    // Applied by dtoolkit and by libfdt alike. (Not through dtc's checks:
    // pass-through nodes without `reg` under a simple-bus are a dtc style
    // warning, docs/addons.md.)
    let mut live = LiveTree::from_dtb(&base_dtb, "base").expect("base");
    live.apply(&plan.plugged.overlay, "add-on")
        .expect("dtoolkit applies it");
    let applied = flatten(&live.to_dtb());
    let libfdt = flatten(&fdtoverlay(&base_dtb, &[&plan.plugged.overlay]));
    assert_same_flat(&applied, &libfdt, "dtoolkit vs fdtoverlay");

    // The same nodes written into the base tree by hand.
    let frags = crate::fdt::dts::parse_overlay_source("board.dtso", SOURCE).expect("source");
    let slot = plan.layout.connector("j1").expect("connector").clone();
    let PlacedDevice::VirtioMmio(disk) = &plan.plugged.slots[0] else {
        panic!("not a virtio slot");
    };
    assert_eq!(disk.window.base, slot.window.base);
    assert_eq!(disk.irq, slot.irqs[0]);
    let mut disk_node = crate::fdt::virtio_mmio_node(disk).expect("node");
    disk_node.set_label(Some("sensor_disk".into()));
    let mut expected = cell.base.clone();
    let conn = expected
        .find_mut(CONNECTOR)
        .expect("connector node in the base tree");
    conn.add_child(disk_node).expect("disk");
    for c in frags[0].body.children() {
        conn.add_child(c.clone()).expect("user node");
    }
    let expected = flatten(&emit::to_dtb(&expected).expect("expected dtb"));
    assert_eq!(comparable(applied.clone()), comparable(expected));

    // References inside the overlay point at the nodes it added.
    let osc = u32_at(&applied, &format!("{CONNECTOR}/clock-24m"), "phandle");
    let disk_phandle = u32_at(
        &applied,
        &format!("{CONNECTOR}/virtio_mmio@d1000000"),
        "phandle",
    );
    assert_eq!(
        u32_at(&applied, &format!("{CONNECTOR}/sensor"), "clocks"),
        osc
    );
    assert_eq!(
        u32_at(&applied, &format!("{CONNECTOR}/sensor"), "storage"),
        disk_phandle
    );
    let ioapic = u32_at(&applied, "/interrupt-controller@fec00000", "phandle");
    assert_eq!(
        u32_at(&applied, &format!("{CONNECTOR}/sensor"), "interrupt-parent"),
        ioapic
    );
    assert_eq!(
        plan.plugged.nodes,
        [
            format!("{CONNECTOR}/virtio_mmio@d1000000"),
            format!("{CONNECTOR}/clock-24m"),
            format!("{CONNECTOR}/sensor"),
        ]
    );
    cell.plug(&a);
    assert_eq!(
        cell.layout.connector("j1").and_then(|c| c.addon.clone()),
        Some("sensor-board".to_string())
    );
}

#[test]
fn unplugging_gives_back_the_layout_from_before_the_plug() {
    let mut cell = Cell::with_connector(2);
    let before = cell.layout.clone();
    cell.plug(&addon(SOURCE, vec![rng("sensor-disk"), rng("rng9")]));
    assert_ne!(cell.layout, before);
    let plan = plan_unplug("j1", &cell.layout, &cell.plugged).expect("unplug plan");
    plan.commit(&mut cell.layout, &mut cell.plugged)
        .expect("commit");
    assert_eq!(cell.layout, before);
    assert!(cell.plugged.is_empty());
    // And the board plugs again, at the same place.
    let again = cell.plug(&addon(SOURCE, vec![rng("sensor-disk")]));
    assert_eq!(again.nodes[0], format!("{CONNECTOR}/virtio_mmio@d1000000"));
}

#[track_caller]
fn assert_refused(cell: &Cell, a: &AddonConfig, connector: &str, expected: &str) {
    match cell.plan(a, connector) {
        Ok(_) => panic!("planned"),
        Err(e) => assert_eq!(e.to_string(), expected),
    }
}

#[test]
fn a_block_aimed_outside_the_connector_is_refused_at_its_place() {
    let cell = Cell::with_connector(2);
    let src = "/dts-v1/;\n/plugin/;\n&j1 { a { }; };\n\n&ioapic {\n\tb { };\n};\n";
    assert_refused(
        &cell,
        &addon(src, vec![]),
        "j1",
        "board.dtso:5:1: &ioapic is not connector j1: an add-on's overlay adds nodes under \
         its connector (&j1 or &{/connector-bus@d1000000})",
    );
    let src = "/dts-v1/;\n/plugin/;\n&{/isa@1} { b { }; };\n";
    assert_refused(
        &cell,
        &addon(src, vec![]),
        "j1",
        "board.dtso:3:1: &{/isa@1} is not connector j1: an add-on's overlay adds nodes under \
         its connector (&j1 or &{/connector-bus@d1000000})",
    );
}

#[test]
fn a_block_setting_a_property_of_the_connector_is_refused() {
    let cell = Cell::with_connector(2);
    let src = "/dts-v1/;\n/plugin/;\n&{/connector-bus@d1000000} {\n\tstatus = \"disabled\";\n};\n";
    assert_refused(
        &cell,
        &addon(src, vec![]),
        "j1",
        "board.dtso:3:1: sets property status of connector j1: an add-on's overlay only adds \
         nodes under it",
    );
}

#[test]
fn source_errors_unknown_labels_and_name_clashes_are_the_users() {
    let cell = Cell::with_connector(2);
    assert_refused(
        &cell,
        &addon("/dts-v1/;\n/plugin/;\n&j1 {\n  x = <1 2;\n};\n", vec![]),
        "j1",
        "board.dtso:4:11: unexpected ';', expected a number, '&label' or '>'",
    );
    let err = cell
        .plan(
            &addon(
                "/dts-v1/;\n/plugin/;\n&j1 { a { c = <&nosuch>; }; };\n",
                vec![],
            ),
            "j1",
        )
        .expect_err("unknown label");
    assert_eq!(err.kind(), AttachErrorKind::Invalid);
    assert!(
        err.to_string().starts_with("board.dtso: ") && err.to_string().contains("&nosuch"),
        "{err}"
    );
    let clash = "/dts-v1/;\n/plugin/;\n&j1 { virtio_mmio@d1000000 { }; };\n";
    let err = cell
        .plan(&addon(clash, vec![rng("d0")]), "j1")
        .expect_err("name clash");
    assert!(err.to_string().contains("virtio_mmio@d1000000"), "{err}");
}

#[test]
fn a_missing_occupied_or_full_connector_is_refused() {
    let mut cell = Cell::with_connector(1);
    assert_refused(
        &cell,
        &addon(SOURCE, vec![rng("sensor-disk")]),
        "j2",
        "the cell has no connector \"j2\"",
    );
    match cell.plan(&addon(SOURCE, vec![rng("sensor-disk"), rng("d1")]), "j1") {
        Err(AttachError::Layout {
            source: LayoutError::ConnectorIrqsExhausted { .. },
            ..
        }) => {}
        other => panic!("expected no free pin, got {other:?}"),
    }
    cell.plug(&addon(SOURCE, vec![rng("sensor-disk")]));
    assert_refused(
        &cell,
        &addon("/dts-v1/;\n/plugin/;\n&j1 { z { }; };\n", vec![]),
        "j1",
        "connector j1 already has add-on sensor-board plugged in; unplug it first",
    );
    assert!(matches!(
        plan_unplug("j2", &cell.layout, &cell.plugged),
        Err(AttachError::NoSuchConnector { .. })
    ));
}

#[test]
fn an_add_on_device_may_not_take_an_id_the_cell_uses() {
    let cell = Cell::with_connector(2);
    let err = cell
        .plan(&addon(SOURCE, vec![rng("j1")]), "j1")
        .expect_err("duplicate id");
    assert_eq!(
        err.to_string(),
        "j1: id \"j1\" is already used by connector j1"
    );
}

#[test]
fn unplugging_an_empty_connector_is_not_found() {
    let cell = Cell::with_connector(2);
    let err = plan_unplug("j1", &cell.layout, &cell.plugged).expect_err("empty");
    assert_eq!(err.to_string(), "nothing is plugged into connector j1");
    assert_eq!(err.kind(), AttachErrorKind::NotFound);
}

fn test_bridge(id: &str, bus_start: u8) -> DeviceConfig {
    DeviceConfig::PciBridge(crate::config::PciBridgeConfig {
        id: id.into(),
        state: crate::config::DeviceState::Okay,
        kind: crate::config::PciHostKind::Ecam,
        config_base: None,
        bus_start,
        bus_end: bus_start,
        mmio32: None,
        mmio64: None,
        devices: vec![crate::config::PciDeviceConfig {
            bus: bus_start,
            slot: 1,
            function: 0,
            kind: crate::config::PciDeviceKind::Test,
        }],
    })
}

fn cell_with(size: u64, irqs: u32) -> Cell {
    let mut cfg = small_config();
    cfg.connectors = vec![ConnectorConfig {
        id: "j1".into(),
        size,
        irqs,
    }];
    let (base, layout) = tree_and_layout(&cfg);
    Cell {
        base,
        layout,
        plugged: Vec::new(),
    }
}

#[test]
fn a_boards_pci_bridge_sits_in_the_connector_window_and_takes_four_of_its_pins() {
    let cell = cell_with(4 << 20, 4);
    let src = "/dts-v1/;\n/plugin/;\n&j1 { info { bridge = <&board_pci>; }; };\n";
    let plan = cell
        .plan(&addon(src, vec![test_bridge("board-pci", 32)]), "j1")
        .expect("plan");
    let conn = plan.layout.connector("j1").expect("connector").clone();
    let PlacedDevice::PciBridge(b) = &plan.plugged.slots[0] else {
        panic!("not a bridge slot");
    };
    let inside =
        |w: crate::config::Window| w.base >= conn.window.base && w.end() <= conn.window.end();
    assert!(
        inside(b.config) && inside(b.mmio32),
        "{b:?} outside {conn:?}"
    );
    assert_eq!(b.config.base, 0xd100_0000);
    assert_eq!(b.mmio32.size, crate::platform::ADDON_MMIO32_SIZE);
    assert_eq!(b.intx.to_vec(), conn.irqs);
    assert_eq!(
        plan.plugged.nodes[0],
        format!("{CONNECTOR}/pci@d1000000"),
        "{:?}",
        plan.plugged.nodes
    );
    // The bridge node is the base tree's builder's, under the connector.
    let base_dtb = emit::to_dtb(&cell.base).expect("base dtb");
    let mut live = LiveTree::from_dtb(&base_dtb, "base").expect("base");
    live.apply(&plan.plugged.overlay, "add-on")
        .expect("applies");
    let applied = flatten(&live.to_dtb());
    let mut expected = cell.base.clone();
    let mut node = crate::fdt::pci_host_node(b).expect("node");
    node.set_label(Some("board_pci".into()));
    let c = expected.find_mut(CONNECTOR).expect("connector");
    c.add_child(node).expect("bridge");
    c.add_child(
        crate::fdt::dts::parse_overlay_source("b", src).expect("src")[0]
            .body
            .children()[0]
            .clone(),
    )
    .expect("info");
    let expected = flatten(&emit::to_dtb(&expected).expect("dtb"));
    let strip = |mut f: Flat| {
        f.retain(|p, _| !p.starts_with("/__symbols__"));
        for props in f.values_mut() {
            props.retain(|n, _| n != "phandle" && n != "bridge");
        }
        f
    };
    assert_eq!(strip(applied), strip(expected));
}

#[test]
fn a_pci_bridge_needs_four_free_pins_on_the_connector() {
    let cell = cell_with(4 << 20, 2);
    match cell.plan(&addon(SOURCE, vec![test_bridge("board-pci", 32)]), "j1") {
        Err(AttachError::Layout {
            source: LayoutError::ConnectorIrqsExhausted { pins: 2, .. },
            ..
        }) => {}
        other => panic!("expected no free pins, got {other:?}"),
    }
}

#[test]
fn a_bridge_that_does_not_fit_the_window_is_refused() {
    // 1 MiB: the config window fits, the 1 MiB 32-bit window does not.
    let cell = cell_with(1 << 20, 4);
    let err = cell
        .plan(&addon(SOURCE, vec![test_bridge("board-pci", 32)]), "j1")
        .expect_err("too small");
    assert!(err.to_string().contains("the connector's window"), "{err}");
}

#[test]
fn a_boards_uart_is_memory_mapped_in_the_connector_window_on_one_of_its_pins() {
    let cell = cell_with(1 << 20, 2);
    let uart = DeviceConfig::Uart(crate::config::UartConfig {
        id: "board-uart".into(),
        state: crate::config::DeviceState::Okay,
        port: None,
        irq: None,
        path: None,
    });
    let plan = cell
        .plan(&addon(SOURCE, vec![rng("sensor-disk"), uart]), "j1")
        .expect("plan");
    let PlacedDevice::Uart(u) = &plan.plugged.slots[1] else {
        panic!("not a uart slot");
    };
    assert_eq!(u.mmio.map(|w| w.base), Some(0xd100_1000));
    assert_eq!(u.irq, plan.layout.connector("j1").expect("j1").irqs[1]);
    assert!(plan
        .plugged
        .nodes
        .contains(&format!("{CONNECTOR}/serial@d1001000")));
    let base_dtb = emit::to_dtb(&cell.base).expect("base dtb");
    let mut live = LiveTree::from_dtb(&base_dtb, "base").expect("base");
    live.apply(&plan.plugged.overlay, "add-on")
        .expect("applies");
    let flat = flatten(&live.to_dtb());
    let serial = &flat[&format!("{CONNECTOR}/serial@d1001000")];
    assert_eq!(serial["compatible"], b"ns16550a\0".to_vec());
    assert_eq!(
        serial["reg"],
        [0u32, 0xd100_1000, 0, 8]
            .iter()
            .flat_map(|c| c.to_be_bytes())
            .collect::<Vec<u8>>()
    );
    assert_eq!(serial["reg-io-width"], 1u32.to_be_bytes().to_vec());
    // A UART with a port of its own cannot sit on a connector.
    let fixed = DeviceConfig::Uart(crate::config::UartConfig {
        id: "u2".into(),
        state: crate::config::DeviceState::Okay,
        port: Some(0x2f8),
        irq: None,
        path: None,
    });
    assert!(matches!(
        cell.plan(&addon(SOURCE, vec![rng("sensor-disk"), fixed]), "j1"),
        Err(AttachError::Layout {
            source: LayoutError::NotOnConnector { .. },
            ..
        })
    ));
}
