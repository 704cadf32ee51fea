//! Connectors attached and detached at run time, and boards on them.

use super::*;
use crate::config::{AddonConfig, ConnectorConfig, DeviceConfig, VirtioKind, VirtioMmioConfig};
use crate::fdt::emit;
use crate::fdt::overlay::LiveTree;
use crate::fdt::overlay_tests::{flatten, small_config, tree_and_layout};
use crate::fdt::Node;
use crate::layout::CellLayout;

struct Cell {
    base: Node,
    layout: CellLayout,
    connected: Vec<ConnectedConnector>,
    plugged: Vec<PluggedAddon>,
}

impl Cell {
    /// A cell with connector j1 in its file.
    fn new() -> Self {
        let mut cfg = small_config();
        cfg.connectors = vec![connector("j1")];
        let (base, layout) = tree_and_layout(&cfg);
        Cell {
            base,
            layout,
            connected: Vec::new(),
            plugged: Vec::new(),
        }
    }

    fn live(&self) -> LiveTree {
        live_tree(&self.base, &[], &self.connected, &self.plugged).expect("current tree")
    }

    fn connect(&mut self, id: &str) -> ConnectedConnector {
        let plan = plan_connect(&connector(id), &self.layout, &self.live())
            .unwrap_or_else(|e| panic!("connect: {e}"));
        let c = plan.connected.clone();
        plan.commit(&mut self.layout, &mut self.connected)
            .expect("commit");
        c
    }

    fn plug(&mut self, connector: &str, source: &str) -> Result<(), AttachError> {
        let plan = plan_plug(
            &board(source),
            connector,
            &self.layout,
            &self.base,
            &self.live(),
        )?;
        plan.commit(&mut self.layout, &mut self.plugged)
    }
}

fn connector(id: &str) -> ConnectorConfig {
    ConnectorConfig {
        id: id.into(),
        size: 1 << 20,
        irqs: 4,
    }
}

fn board(source: &str) -> AddonConfig {
    AddonConfig {
        name: "board".into(),
        overlay_name: "board.dtso".into(),
        overlay_text: source.into(),
        devices: vec![DeviceConfig::VirtioMmio(VirtioMmioConfig {
            id: "board-rng".into(),
            state: crate::config::DeviceState::Okay,
            kind: VirtioKind::Rng,
            base: None,
            irq: None,
            backend: Default::default(),
        })],
    }
}

const PORTABLE: &str = "/dts-v1/;\n/plugin/;\n&connector {\n\tinfo { rng = <&board_rng>; };\n};\n";

#[test]
fn a_connected_connector_is_the_node_a_cell_file_would_have_given() {
    let mut cell = Cell::new();
    let c = cell.connect("j3");
    assert_eq!(c.slot.window.base, 0xd110_0000);
    assert_eq!(c.nodes, ["/connector-bus@d1100000"]);
    assert_eq!(c.slot.path(), "/connector-bus@d1100000");
    // The same connector in the cell file gives the same node.
    let mut cfg = small_config();
    cfg.connectors = vec![connector("j1"), connector("j3")];
    let (static_tree, _) = tree_and_layout(&cfg);
    let applied = flatten(&cell.live().to_dtb());
    let expected = flatten(&emit::to_dtb(&static_tree).expect("dtb"));
    let path = "/connector-bus@d1100000";
    let mut ours = applied[path].clone();
    let mut theirs = expected[path].clone();
    ours.remove("phandle");
    theirs.remove("phandle");
    assert_eq!(ours, theirs);
}

#[test]
fn a_board_plugs_into_a_connected_connector_and_connector_names_any_connector() {
    let mut cell = Cell::new();
    cell.connect("j3");
    cell.plug("j3", PORTABLE).expect("plug into j3");
    let flat = flatten(&cell.live().to_dtb());
    assert!(flat.contains_key("/connector-bus@d1100000/virtio_mmio@d1100000"));
    assert!(flat.contains_key("/connector-bus@d1100000/info"));
    // The same source plugs into the file's connector too.
    let mut other = Cell::new();
    other.plug("j1", PORTABLE).expect("plug into j1");
}

#[test]
fn a_connector_with_a_board_or_from_the_cell_file_is_not_disconnected() {
    let mut cell = Cell::new();
    cell.connect("j3");
    cell.plug("j3", PORTABLE).expect("plug");
    let err = plan_disconnect("j3", &cell.layout, &cell.connected).expect_err("occupied");
    assert_eq!(
        err.to_string(),
        "connector j3 already has add-on board plugged in; unplug it first"
    );
    let err = plan_disconnect("j1", &cell.layout, &cell.connected).expect_err("boot-time");
    assert_eq!(
        err.to_string(),
        "connector j1 is in the cell file and cannot be disconnected"
    );
    let err = plan_disconnect("j9", &cell.layout, &cell.connected).expect_err("unknown");
    assert_eq!(err.kind(), AttachErrorKind::NotFound);
}

#[test]
fn disconnecting_gives_back_the_layout_from_before_the_connect() {
    let mut cell = Cell::new();
    let before = cell.layout.clone();
    cell.connect("j3");
    cell.plug("j3", PORTABLE).expect("plug");
    let unplug = plan_unplug("j3", &cell.layout, &cell.plugged).expect("unplug");
    unplug
        .commit(&mut cell.layout, &mut cell.plugged)
        .expect("commit");
    let plan = plan_disconnect("j3", &cell.layout, &cell.connected).expect("disconnect");
    plan.commit(&mut cell.layout, &mut cell.connected)
        .expect("commit");
    assert_eq!(cell.layout, before);
    assert!(cell.connected.is_empty());
}

#[test]
fn a_connector_id_the_cell_uses_is_refused() {
    let cell = Cell::new();
    let err = plan_connect(&connector("j1"), &cell.layout, &cell.live()).expect_err("dup");
    assert_eq!(
        err.to_string(),
        "j1: id \"j1\" is already used by connector j1"
    );
}
