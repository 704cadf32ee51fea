//! Attach planning, detach planning and device descriptions.

use super::*;
use crate::config::{
    DeviceConfig, MemoryRegion, PciBridgeConfig, PciDeviceConfig, PciDeviceKind, PciHostKind,
    UartConfig, VirtioKind, VirtioMmioConfig, Window,
};
use crate::fdt::emit;
use crate::fdt::overlay::LiveTree;
use crate::fdt::overlay_tests::{
    apply_both_ways, assert_same_flat, busy_config, dtc_clean, fdtoverlay, flatten, small_config,
    test_config, tree_and_layout, with_child, GIB, MIB,
};
use crate::fdt::{build_base_tree, Node};
use crate::layout::{CellLayout, LayoutError, PlacedDevice, UartSlot};
use crate::platform::*;

// ---------------------------------------------------------------------------
// Helpers

fn bridge_config(id: &str, bus_start: u8) -> PciBridgeConfig {
    PciBridgeConfig {
        id: id.into(),
        state: crate::config::DeviceState::Okay,
        kind: PciHostKind::Ecam,
        bus_start,
        bus_end: bus_start,
        config_base: None,
        mmio32: None,
        mmio64: None,
        devices: vec![PciDeviceConfig {
            bus: bus_start,
            slot: 1,
            function: 0,
            kind: PciDeviceKind::Test,
        }],
    }
}

fn bridge(id: &str, bus_start: u8) -> DeviceConfig {
    DeviceConfig::PciBridge(bridge_config(id, bus_start))
}

fn virtio(id: &str, base: Option<u64>, irq: Option<u32>) -> DeviceConfig {
    DeviceConfig::VirtioMmio(VirtioMmioConfig {
        id: id.into(),
        state: crate::config::DeviceState::Okay,
        kind: VirtioKind::Rng,
        base,
        irq,
        backend: Default::default(),
    })
}

fn uart(id: &str, port: Option<u16>, irq: Option<u32>) -> DeviceConfig {
    DeviceConfig::Uart(UartConfig {
        id: id.into(),
        state: crate::config::DeviceState::Okay,
        port,
        irq,
        path: None,
    })
}

/// A cell: its base tree, layout and attached devices.
struct Cell {
    base: Node,
    layout: CellLayout,
    attached: Vec<AttachedDevice>,
}

impl Cell {
    fn new(cfg: &crate::config::CellConfig) -> Self {
        let (base, layout) = tree_and_layout(cfg);
        Cell {
            base,
            layout,
            attached: Vec::new(),
        }
    }

    fn plan(&self, req: &DeviceConfig) -> Result<AttachPlan, AttachError> {
        plan(req, &self.layout, &self.base, &self.attached)
    }

    /// Plans `req`, asserting a failure leaves the layout alone.
    fn reject(&self, req: &DeviceConfig) -> AttachError {
        let before = self.layout.clone();
        let err = self.plan(req).expect_err("the plan should fail");
        assert_eq!(before, self.layout);
        err
    }

    fn attach(&mut self, req: &DeviceConfig) -> AttachedDevice {
        let p = self
            .plan(req)
            .unwrap_or_else(|e| panic!("planning {}: {e}", req.id()));
        p.commit(&mut self.layout, &mut self.attached)
            .expect("commit");
        self.attached.last().cloned().expect("attached")
    }

    fn detach(&mut self, id: &str) {
        plan_detach(id, &self.layout, &self.attached)
            .unwrap_or_else(|e| panic!("planning detach of {id}: {e}"))
            .commit(&mut self.layout, &mut self.attached)
            .expect("commit detach");
    }

    /// The tree after every attached overlay, applied by dtoolkit and by
    /// fdtoverlay (checked equal and dtc-clean).
    fn tree(&self) -> crate::fdt::overlay_tests::Flat {
        let overlays: Vec<&[u8]> = self.attached.iter().map(|d| d.overlay.as_slice()).collect();
        apply_both_ways(&emit::to_dtb(&self.base).expect("dtb"), &overlays)
    }
}

/// Map entries and IRQ owners of a layout, for equality with a message.
/// (owner, base, size) per reservation, and (pin, owner) per used pin.
type Snapshot = (Vec<(String, u64, u64)>, Vec<(u32, String)>);

fn snapshot(l: &CellLayout) -> Snapshot {
    (
        l.map
            .entries()
            .iter()
            .map(|r| (r.owner.to_string(), r.window.base, r.window.size))
            .collect(),
        l.irqs.owners().map(|(p, o)| (p, o.to_string())).collect(),
    )
}

fn assert_layout_eq(a: &CellLayout, b: &CellLayout) {
    assert_eq!(snapshot(a), snapshot(b));
    assert!(a == b);
}

/// The optional placements of a bridge request, for tests to change.
struct Patch {
    config_base: Option<u64>,
    mmio32: Option<Window>,
    mmio64: Option<Window>,
}

/// `r` (a bridge) with `f` applied to its placements.
fn patch(mut r: DeviceConfig, f: impl FnOnce(&mut Patch)) -> DeviceConfig {
    if let DeviceConfig::PciBridge(b) = &mut r {
        let mut p = Patch {
            config_base: b.config_base,
            mmio32: b.mmio32,
            mmio64: b.mmio64,
        };
        f(&mut p);
        (b.config_base, b.mmio32, b.mmio64) = (p.config_base, p.mmio32, p.mmio64);
    }
    r
}

fn req_config(req: &DeviceConfig) -> PciBridgeConfig {
    match req {
        DeviceConfig::PciBridge(b) => b.clone(),
        _ => panic!("not a bridge"),
    }
}

// ---------------------------------------------------------------------------
// Runtime attach == static configuration

#[test]
fn attaching_a_pci_bridge_at_runtime_gives_the_tree_and_layout_of_configuring_it_statically() {
    for req in [
        bridge("hot0", 8),
        DeviceConfig::PciBridge(PciBridgeConfig {
            id: "hot1".into(),
            state: crate::config::DeviceState::Okay,
            kind: PciHostKind::Cam,
            bus_start: 0x20,
            bus_end: 0x21,
            config_base: Some(0xf100_0000),
            mmio32: Some(Window {
                base: 0,
                size: 32 * MIB,
            }),
            mmio64: Some(Window {
                base: 0,
                size: 2 * GIB,
            }),
            devices: vec![],
        }),
    ] {
        let cfg = busy_config();
        let mut cell = Cell::new(&cfg);
        let dev = cell.attach(&req);
        let mut static_cfg = cfg.clone();
        static_cfg.pci_bridges.push(req_config(&req));
        let (static_tree, static_layout) = tree_and_layout(&static_cfg);
        assert_layout_eq(&cell.layout, &static_layout);
        assert_same_flat(
            &cell.tree(),
            &flatten(&emit::to_dtb(&static_tree).expect("dtb")),
            "runtime vs static",
        );
        let PlacedDevice::PciBridge(slot) = &dev.slot else {
            panic!("not a bridge slot");
        };
        assert_eq!(dev.nodes, [format!("/pci@{:x}", slot.config.base)]);
    }
}

#[test]
fn attaching_a_virtio_mmio_device_at_runtime_gives_the_static_tree_and_layout() {
    let cfg = busy_config();
    let mut cell = Cell::new(&cfg);
    cell.attach(&virtio("hot0", Some(0xd010_4000), Some(15)));
    let mut static_cfg = cfg.clone();
    static_cfg.virtio_mmio.push(VirtioMmioConfig {
        id: "hot0".into(),
        state: crate::config::DeviceState::Okay,
        kind: VirtioKind::Rng,
        base: Some(0xd010_4000),
        irq: Some(15),
        backend: Default::default(),
    });
    let (static_tree, static_layout) = tree_and_layout(&static_cfg);
    assert_layout_eq(&cell.layout, &static_layout);
    assert_same_flat(
        &cell.tree(),
        &flatten(&emit::to_dtb(&static_tree).expect("dtb")),
        "runtime vs static",
    );
}

#[test]
fn the_planned_layout_rebuilds_a_base_tree_equal_to_base_plus_overlay_modulo_placement() {
    // Placement differs from a static config here (the bridge was placed
    // after an attached virtio device), but the layout is the source of
    // truth: the base tree built from the new layout is the attached tree.
    let cfg = busy_config();
    let mut cell = Cell::new(&cfg);
    cell.attach(&virtio("v1", None, None));
    cell.attach(&bridge("b1", 4));
    let rebuilt = build_base_tree(&cfg, &cell.layout).expect("tree");
    assert_same_flat(
        &cell.tree(),
        &flatten(&emit::to_dtb(&rebuilt).expect("dtb")),
        "attached vs rebuilt",
    );
}

#[test]
fn a_uart_goes_under_the_isa_node_at_0x2f8_irq_3_by_default() {
    let mut cell = Cell::new(&small_config());
    let dev = cell.attach(&uart("com2", None, None));
    assert_eq!(
        dev.slot,
        PlacedDevice::Uart(UartSlot {
            id: "com2".into(),
            port: 0x2f8,
            mmio: None,
            irq: 3,
        })
    );
    assert_eq!(dev.nodes, ["/isa@1/serial@2f8"]);
    assert_eq!(
        cell.layout
            .irqs
            .owner(3)
            .map(ToString::to_string)
            .as_deref(),
        Some("uart com2")
    );
    let node = crate::fdt::templates::NS16550
        .instantiate(
            &crate::fdt::Vars::new()
                .raw("unit", "2f8")
                .cells("port", [0x2f8u32])
                .cells("irq", [3u32]),
        )
        .expect("node");
    let expected = with_child(&cell.base, "isa@1", node);
    assert_same_flat(
        &cell.tree(),
        &flatten(&emit::to_dtb(&expected).expect("dtb")),
        "uart",
    );
}

#[test]
fn later_uarts_take_the_next_free_standard_port_and_a_dynamic_pin() {
    let mut cell = Cell::new(&small_config());
    cell.attach(&uart("a", None, None));
    let b = cell.attach(&uart("b", None, None));
    let c = cell.attach(&uart("c", Some(0x280), Some(11)));
    let d = cell.attach(&uart("d", None, None));
    let slot = |d: &AttachedDevice| match &d.slot {
        PlacedDevice::Uart(s) => (s.port, s.irq),
        _ => panic!("not a uart"),
    };
    assert_eq!(slot(&b), (0x3e8, FIRST_DYNAMIC_IRQ));
    assert_eq!(slot(&c), (0x280, 11));
    assert_eq!(slot(&d), (0x2e8, FIRST_DYNAMIC_IRQ + 1));
    let err = cell.reject(&uart("e", None, None));
    assert!(
        matches!(
            err,
            AttachError::Layout {
                source: LayoutError::NoFreePort { .. },
                ..
            }
        ),
        "{err}"
    );
    let tree = cell.tree();
    for p in ["2f8", "3e8", "280", "2e8"] {
        assert!(tree.contains_key(&format!("/isa@1/serial@{p}")));
    }
}

#[test]
fn each_plan_checks_against_the_base_tree_plus_every_earlier_overlay() {
    let mut cell = Cell::new(&busy_config());
    cell.attach(&virtio("v1", None, None));
    cell.attach(&bridge("b1", 4));
    cell.attach(&uart("u1", None, None));
    let live = current_tree(&cell.base, &cell.attached).expect("current tree");
    for d in &cell.attached {
        for n in &d.nodes {
            assert!(live.contains(n), "{n}");
        }
    }
    dtc_clean(&live.to_dtb(), "the current tree");
    let p = cell.plan(&virtio("v2", None, None)).expect("plan");
    assert_eq!(p.base_references, []);
    let p = cell.plan(&bridge("b2", 5)).expect("plan");
    // The IOAPIC (interrupt-map) and the MSI target (msi-map).
    let refs: Vec<(&str, u32)> = p
        .base_references
        .iter()
        .map(|r| (r.label.as_str(), r.phandle))
        .collect();
    assert_eq!(refs, [("ioapic", 1), ("msi", 2)]);
}

// ---------------------------------------------------------------------------
// Collisions and invalid requests: rejected before anything is produced

#[test]
fn fixed_window_over_ram_is_rejected_naming_both_sides() {
    let cell = Cell::new(&small_config());
    let req = patch(bridge("hot0", 8), |p| {
        p.mmio32 = Some(Window {
            base: 0x0800_0000,
            size: 16 * MIB,
        })
    });
    let err = cell.reject(&req);
    assert_eq!(
        err.to_string(),
        "hot0: pci bridge hot0 mmio32 window at 0x8000000..0x9000000 collides with memory[0]"
    );
    let cell = Cell::new(&busy_config());
    let req = patch(bridge("hot1", 8), |p| {
        p.mmio64 = Some(Window {
            base: 4 * GIB,
            size: GIB,
        })
    });
    assert!(cell
        .reject(&req)
        .to_string()
        .ends_with("collides with memory[1]"));
}

#[test]
fn fixed_address_over_the_channel_or_a_boot_time_device_is_rejected() {
    let cell = Cell::new(&busy_config());
    let err = cell.reject(&virtio("hot0", Some(CHANNEL_BASE), None));
    assert_eq!(
        err.to_string(),
        "hot0: virtio-mmio hot0 at 0xd0010000..0xd0011000 collides with channel"
    );
    assert_eq!(err.kind(), AttachErrorKind::Conflict);
    let err = cell.reject(&virtio("hot0", Some(0xd010_0000), None));
    assert!(
        err.to_string().ends_with("collides with virtio-mmio rng0"),
        "{err}"
    );
    let req = patch(bridge("hot0", 8), |p| p.config_base = Some(0xe000_0000));
    let err = cell.reject(&req);
    assert!(
        err.to_string()
            .ends_with("collides with pci bridge pci0 config space"),
        "{err}"
    );
}

#[test]
fn fixed_address_over_an_earlier_attachment_is_rejected() {
    let mut cell = Cell::new(&small_config());
    cell.attach(&virtio("hot0", Some(0xd010_8000), None));
    let err = cell.reject(&virtio("hot1", Some(0xd010_8000), None));
    assert_eq!(
        err.to_string(),
        "hot1: virtio-mmio hot1 at 0xd0108000..0xd0109000 collides with virtio-mmio hot0"
    );
    let b = cell.attach(&bridge("b0", 2));
    let PlacedDevice::PciBridge(slot) = b.slot else {
        panic!("slot")
    };
    let req = patch(bridge("b1", 3), |p| p.mmio32 = Some(slot.mmio32));
    assert!(cell
        .reject(&req)
        .to_string()
        .ends_with("collides with pci bridge b0 mmio32 window"));
}

#[test]
fn taken_irq_is_rejected_naming_its_owner() {
    let mut cell = Cell::new(&busy_config());
    let err = cell.reject(&virtio("hot0", None, Some(CHANNEL_IRQ)));
    assert_eq!(
        err.to_string(),
        "hot0: IOAPIC pin 5 for virtio-mmio hot0 is already used by channel"
    );
    let err = cell.reject(&uart("u", None, Some(UART_IRQ)));
    assert!(
        err.to_string().ends_with("already used by console"),
        "{err}"
    );
    cell.attach(&virtio("hot0", None, Some(20)));
    let err = cell.reject(&uart("u", None, Some(20)));
    assert_eq!(
        err.to_string(),
        "u: IOAPIC pin 20 for uart u is already used by virtio-mmio hot0"
    );
    let rng_irq = cell.layout.virtio_mmio[0].irq;
    assert!(matches!(
        cell.reject(&virtio("x", None, Some(rng_irq))),
        AttachError::Layout {
            source: LayoutError::IrqTaken { .. },
            ..
        }
    ));
}

#[test]
fn duplicate_ids_are_rejected() {
    let mut cell = Cell::new(&busy_config());
    cell.attach(&uart("com2", None, None));
    for (id, who) in [
        ("rng0", "virtio-mmio device rng0"),
        ("pci0", "pci bridge pci0"),
        ("console", "platform device console"),
        ("com2", "uart com2"),
    ] {
        let err = cell.reject(&virtio(id, None, None));
        assert_eq!(
            err.to_string(),
            format!("{id}: id {id:?} is already used by {who}")
        );
    }
}

#[test]
fn bus_start_colliding_with_another_bridge_is_rejected() {
    let mut cell = Cell::new(&busy_config());
    let err = cell.reject(&bridge("hot0", 0));
    assert_eq!(
        err.to_string(),
        "hot0: bus 0 is already the first bus of pci bridge pci0; host bridges need distinct bus_start values"
    );
    cell.attach(&bridge("hot0", 8));
    assert!(matches!(
        cell.reject(&bridge("hot1", 8)),
        AttachError::Layout {
            source: LayoutError::BusCollision { ref other, .. },
            ..
        } if other == "hot0"
    ));
}

#[test]
fn node_path_already_in_the_tree_is_rejected() {
    // A base tree that already has /virtio_mmio@d0100000 although the
    // layout it is given does not: the overlay check catches it.
    let (busy_tree, _) = tree_and_layout(&busy_config());
    let (_, small_layout) = tree_and_layout(&small_config());
    let err =
        plan(&virtio("hot0", None, None), &small_layout, &busy_tree, &[]).expect_err("exists");
    assert_eq!(
        err.to_string(),
        "the overlay for hot0 adds /virtio_mmio@d0100000, which is already in the cell's tree"
    );
}

#[test]
fn uart_ports_colliding_with_boot_time_or_attached_devices_are_rejected() {
    let mut cell = Cell::new(&small_config());
    let err = cell.reject(&uart("u", Some(0x3f8), None));
    assert_eq!(
        err.to_string(),
        "u: uart u at ports 0x3f8..0x400 collides with console"
    );
    assert!(cell
        .reject(&uart("u", Some(0x60), None))
        .to_string()
        .ends_with("collides with i8042"));
    assert!(cell
        .reject(&uart("u", Some(0x70), None))
        .to_string()
        .ends_with("collides with cmos"));
    cell.attach(&uart("a", Some(0x2f8), None));
    assert!(cell
        .reject(&uart("b", Some(0x2f8), None))
        .to_string()
        .ends_with("collides with uart a"));
}

#[test]
fn uart_without_an_isa_bus_in_the_base_tree_is_rejected() {
    let (_, layout) = tree_and_layout(&small_config());
    let root = Node::new("/");
    let err = plan(&uart("u", None, None), &layout, &root, &[]).expect_err("no isa");
    assert!(matches!(err, AttachError::NoIsaBus { .. }), "{err}");
}

#[test]
fn plan_rejects_an_overlay_whose_ioapic_phandle_differs_from_the_cell_tree() {
    // An (odd) earlier overlay renumbered the IOAPIC: &ioapic = 1 would be wrong.
    let dir = tempfile::tempdir().expect("tempdir");
    let dts = dir.path().join("x.dts");
    std::fs::write(
        &dts,
        "/dts-v1/;\n/ { fragment@0 { target-path = \"/interrupt-controller@fec00000\"; \
         __overlay__ { phandle = <7>; }; }; };\n",
    )
    .expect("write");
    let out = std::process::Command::new("dtc")
        .args(["-I", "dts", "-O", "dtb"])
        .arg(&dts)
        .output()
        .expect("dtc (apt-get install device-tree-compiler)");
    assert!(out.status.success());
    let mut cell = Cell::new(&small_config());
    let dev = cell.attach(&virtio("v", None, None));
    cell.attached.push(AttachedDevice {
        overlay: out.stdout,
        nodes: vec![],
        ..dev
    });
    cell.attached.remove(0);
    let err = cell.reject(&bridge("b", 1));
    assert!(
        matches!(
            err,
            AttachError::PhandleMismatch {
                written: 1,
                found: Some(p),
                ..
            } if p != 1
        ),
        "{err}"
    );
}

#[test]
fn a_corrupt_earlier_overlay_makes_planning_fail_not_panic() {
    let mut cell = Cell::new(&small_config());
    let mut dev = cell.attach(&virtio("v", None, None));
    dev.overlay = b"garbage".to_vec();
    cell.attached = vec![dev];
    assert!(matches!(
        cell.reject(&virtio("w", None, None)),
        AttachError::CurrentTree { .. }
    ));
}

// ---------------------------------------------------------------------------
// Commit and detach

#[test]
fn plan_then_detach_plan_returns_the_original_layout_for_every_kind() {
    for req in [
        bridge("b", 9),
        patch(bridge("b64", 10), |p| {
            p.mmio64 = Some(Window { base: 0, size: GIB })
        }),
        virtio("v", None, None),
        virtio("vf", Some(0xd01f_f000), Some(23)),
        uart("u", None, None),
        uart("u2", Some(0x300), Some(12)),
    ] {
        let mut cell = Cell::new(&busy_config());
        let original = cell.layout.clone();
        let p = cell.plan(&req).expect("plan");
        assert!(p.layout != original, "{req:?} reserves something");
        p.commit(&mut cell.layout, &mut cell.attached)
            .expect("commit");
        let d = plan_detach(req.id(), &cell.layout, &cell.attached).expect("detach plan");
        assert_layout_eq(&d.layout, &original);
        assert_eq!(d.nodes, cell.attached[0].nodes);
        d.commit(&mut cell.layout, &mut cell.attached)
            .expect("commit");
        assert_layout_eq(&cell.layout, &original);
        assert!(cell.attached.is_empty());
    }
}

#[test]
fn a_hundred_plan_commit_detach_cycles_leave_the_layout_identical() {
    let mut cell = Cell::new(&busy_config());
    let original = cell.layout.clone();
    let reqs = [
        bridge("b", 7),
        virtio("v", None, None),
        uart("u", None, None),
    ];
    for i in 0..100 {
        let req = &reqs[i % reqs.len()];
        cell.attach(req);
        if i % 2 == 0 {
            // Sometimes with another device attached in between.
            cell.attach(&virtio("other", None, None));
            cell.detach(req.id());
            cell.detach("other");
        } else {
            cell.detach(req.id());
        }
        assert!(cell.attached.is_empty());
    }
    assert_layout_eq(&cell.layout, &original);
    // And the tree is back to the base tree.
    assert_same_flat(
        &cell.tree(),
        &flatten(&emit::to_dtb(&cell.base).expect("dtb")),
        "after 100 cycles",
    );
}

#[test]
fn detaching_out_of_order_leaves_the_other_devices_in_place() {
    let mut cell = Cell::new(&small_config());
    let original = cell.layout.clone();
    cell.attach(&bridge("b", 1));
    cell.attach(&virtio("v", None, None));
    cell.attach(&uart("u", None, None));
    cell.detach("v");
    let tree = cell.tree();
    assert!(!tree.contains_key("/virtio_mmio@d0100000"));
    assert!(tree.contains_key("/isa@1/serial@2f8"));
    assert_eq!(cell.layout.virtio_mmio, []);
    assert_eq!(cell.layout.pci_bridges.len(), 1);
    // The freed address and pin go to the next device.
    let p = cell.plan(&virtio("w", None, None)).expect("plan");
    let PlacedDevice::VirtioMmio(s) = &p.slot else {
        panic!("slot")
    };
    assert_eq!(s.window.base, 0xd010_0000);
    cell.detach("b");
    cell.detach("u");
    assert_layout_eq(&cell.layout, &original);
}

#[test]
fn committing_a_plan_made_against_an_older_layout_fails_and_changes_nothing() {
    let mut cell = Cell::new(&small_config());
    let a = cell.plan(&virtio("a", None, None)).expect("plan a");
    let b = cell.plan(&virtio("b", None, None)).expect("plan b");
    a.commit(&mut cell.layout, &mut cell.attached)
        .expect("commit a");
    let before = cell.layout.clone();
    let err = b
        .commit(&mut cell.layout, &mut cell.attached)
        .expect_err("stale");
    assert!(matches!(err, AttachError::StaleLayout { ref id } if id == "b"));
    assert_layout_eq(&cell.layout, &before);
    assert_eq!(cell.attached.len(), 1);
    let d = plan_detach("a", &cell.layout, &cell.attached).expect("detach");
    cell.attach(&virtio("c", None, None));
    assert!(d.commit(&mut cell.layout, &mut cell.attached).is_err());
}

#[test]
fn detach_of_unknown_boot_time_or_inconsistent_devices_is_rejected() {
    let mut cell = Cell::new(&busy_config());
    assert_eq!(
        plan_detach("nope", &cell.layout, &cell.attached)
            .expect_err("unknown")
            .to_string(),
        "no attached device has id \"nope\""
    );
    let err = plan_detach("rng0", &cell.layout, &cell.attached).expect_err("boot");
    assert_eq!(
        err.to_string(),
        "rng0 was configured at boot and cannot be detached"
    );
    assert!(matches!(
        plan_detach("console", &cell.layout, &cell.attached),
        Err(AttachError::BootTimeDevice { .. })
    ));
    cell.attach(&virtio("v", None, None));
    let fresh = tree_and_layout(&busy_config()).1;
    let err = plan_detach("v", &fresh, &cell.attached).expect_err("mismatch");
    assert_eq!(
        err.to_string(),
        "v: the layout has no reservation for v; it does not match the attached devices"
    );
    assert_eq!(err.kind(), AttachErrorKind::Internal);
}

#[test]
fn memory_above_4g_does_not_confuse_the_64_bit_pool() {
    let cfg = test_config(
        vec![
            MemoryRegion {
                base: 0,
                size: 256 * MIB,
                prefault: false,
                lock: false,
            },
            MemoryRegion {
                base: 4 * GIB,
                size: 8 * GIB,
                prefault: false,
                lock: false,
            },
        ],
        vec![],
        vec![],
    );
    let mut cell = Cell::new(&cfg);
    let dev = cell.attach(&patch(bridge("b", 1), |p| {
        p.mmio64 = Some(Window {
            base: 0,
            size: 4 * GIB,
        })
    }));
    let PlacedDevice::PciBridge(s) = dev.slot else {
        panic!("slot")
    };
    assert_eq!(s.mmio64.map(|w| w.base), Some(PCI_MMIO64_POOL.0));
}

// ---------------------------------------------------------------------------
// Description files: a cell file's device tables

/// Every device table of every shipped cell, cut out of its cell file and
/// pasted into a description file, reads as the same device and attaches
/// (at the planning level) to that cell booted without it.
#[test]
fn every_boot_time_table_of_the_shipped_cells_attaches_as_a_description() {
    let cells = concat!(env!("CARGO_MANIFEST_DIR"), "/cells");
    let opts = crate::config::LoadOptions { check_files: false };
    let mut tables = 0;
    for entry in std::fs::read_dir(cells).expect("cells/") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let cfg = crate::config::load(&path, &opts).expect("a shipped cell is valid");
        let doc: toml::Table =
            toml::from_str(&std::fs::read_to_string(&path).expect("read")).expect("toml");
        for key in ["virtio_mmio", "pci_bridge", "uart"] {
            let Some(toml::Value::Array(entries)) = doc.get(key) else {
                continue;
            };
            for entry in entries {
                let mut one = toml::Table::new();
                one.insert(key.into(), toml::Value::Array(vec![entry.clone()]));
                let text = toml::to_string(&one).expect("serialise");
                let dev = crate::config::parse_device(&text, None, &cells_dir(&path), &opts)
                    .unwrap_or_else(|e| panic!("{}: {key}: {e}\n{text}", path.display()))
                    .device;
                assert!(
                    cfg.devices().contains(&dev),
                    "{}: {key} reads differently: {dev:?}",
                    path.display()
                );
                if dev.state() != crate::config::DeviceState::Okay {
                    // Not attachable by design (a_reserved_device_cannot_be_attached).
                    continue;
                }
                let mut without = cfg.clone();
                without.virtio_mmio.retain(|d| d.id != dev.id());
                without.pci_bridges.retain(|d| d.id != dev.id());
                without.uarts.retain(|d| d.id != dev.id());
                let mut cell = Cell::new(&without);
                cell.attach(&dev);
                tables += 1;
            }
        }
    }
    assert!(tables >= 8, "only {tables} tables in cells/");
}

fn cells_dir(cell_file: &std::path::Path) -> std::path::PathBuf {
    cell_file.parent().expect("a directory").to_path_buf()
}

#[test]
fn the_shipped_example_descriptions_plan_and_apply_with_fdtoverlay() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/cells/devices");
    let opts = crate::config::LoadOptions { check_files: false };
    let mut cell = Cell::new(&busy_config());
    for name in ["hot-pci.toml", "hot-uart.toml"] {
        let path = std::path::Path::new(dir).join(name);
        let d = crate::config::load_device(&path, &opts).expect("valid");
        cell.attach(&d.device);
    }
    let overlays: Vec<&[u8]> = cell.attached.iter().map(|d| d.overlay.as_slice()).collect();
    let out = fdtoverlay(&emit::to_dtb(&cell.base).expect("dtb"), &overlays);
    let dts = dtc_clean(&out, "the tree with the example attachments");
    assert!(dts.contains("serial@2f8"), "{dts}");
    let live = LiveTree::from_dtb(&out, "out").expect("parse");
    assert_eq!(cell.tree(), flatten(&live.to_dtb()));
}

#[test]
fn a_reserved_device_cannot_be_attached() {
    let cell = Cell::new(&busy_config());
    let mut req = virtio("rng7", None, None);
    if let DeviceConfig::VirtioMmio(v) = &mut req {
        v.state = crate::config::DeviceState::Reserved;
    }
    let err = cell.reject(&req);
    assert_eq!(err.kind(), AttachErrorKind::Invalid);
    assert_eq!(
        err.to_string(),
        "rng7: state = \"reserved\" is for devices in a cell file; an attach adds a device in use \
         (leave state out or say \"okay\")"
    );
}

// ---------------------------------------------------------------------------
// State changes of boot-time devices (enable/disable)

#[test]
fn enabling_a_reserved_device_is_an_overlay_that_sets_only_its_status() {
    let mut cfg = busy_config();
    cfg.virtio_mmio[0].state = crate::config::DeviceState::Reserved;
    let (base, layout) = tree_and_layout(&cfg);
    let slot = PlacedDevice::VirtioMmio(layout.virtio_mmio[0].clone());
    let plan = plan_state(&slot, crate::config::DeviceState::Okay, &base, &[]).unwrap();
    let path = format!("/virtio_mmio@{:x}", layout.virtio_mmio[0].window.base);
    assert_eq!(plan.path, path);
    let base_dtb = emit::to_dtb(&base).unwrap();
    // dtoolkit and libfdt's fdtoverlay agree on the result...
    let after = apply_both_ways(&base_dtb, &[&plan.overlay]);
    // ...which is the base tree with that one property changed.
    let mut expected = flatten(&base_dtb);
    expected
        .get_mut(&path)
        .unwrap()
        .insert("status".to_string(), b"okay\0".to_vec());
    assert_same_flat(&after, &expected, "enable");
}

#[test]
fn disabling_a_boot_uart_targets_its_node_under_the_isa_bus() {
    let mut cfg = busy_config();
    cfg.uarts.push(UartConfig {
        id: "com2".into(),
        state: crate::config::DeviceState::Okay,
        port: None,
        irq: None,
        path: None,
    });
    let (base, layout) = tree_and_layout(&cfg);
    let slot = PlacedDevice::Uart(layout.uarts[0].clone());
    let plan = plan_state(&slot, crate::config::DeviceState::Reserved, &base, &[]).unwrap();
    assert_eq!(plan.path, "/isa@1/serial@2f8");
    let base_dtb = emit::to_dtb(&base).unwrap();
    let after = apply_both_ways(&base_dtb, &[&plan.overlay]);
    assert_eq!(after["/isa@1/serial@2f8"]["status"], b"reserved\0");
}

#[test]
fn a_state_change_of_a_node_that_is_not_in_the_tree_is_refused() {
    let cfg = busy_config();
    let (base, layout) = tree_and_layout(&cfg);
    let mut slot = layout.virtio_mmio[0].clone();
    slot.window.base += 0x10_0000;
    let err = plan_state(
        &PlacedDevice::VirtioMmio(slot),
        crate::config::DeviceState::Okay,
        &base,
        &[],
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("which is not in the tree"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// The tree cache

#[test]
fn the_tree_cache_gives_a_tree_back_once_and_only_for_its_own_set() {
    let mut cell = Cell::new(&small_config());
    let mut cache = TreeCache::default();
    cell.attach(&virtio("v0", None, None));
    let before = current_tree(&cell.base, &cell.attached).unwrap();
    cache.put(&cell.attached, before.clone());
    cell.attach(&bridge("hot0", 8));
    assert_eq!(cache.take(&cell.attached), None, "another set");
    cell.detach("hot0");
    assert_eq!(cache.take(&cell.attached), Some(before.clone()));
    assert_eq!(cache.take(&cell.attached), None, "taken: no copy stays");
    // A different overlay under the same id is another key.
    cache.put(&cell.attached, before);
    cell.attach(&bridge("hot0", 9));
    let with_9 = cell.attached.clone();
    cell.detach("hot0");
    cell.attach(&bridge("hot0", 8));
    cache.put(&with_9, current_tree(&cell.base, &with_9).unwrap());
    assert_eq!(cache.take(&cell.attached), None);
}

/// Attaches `req` the way a running cell does: planned on the tree taken
/// from `cache` (or rebuilt), the tree after it put back.
fn attach_on_cache(cell: &mut Cell, cache: &mut TreeCache, req: &DeviceConfig) {
    let live = cache
        .take(&cell.attached)
        .unwrap_or_else(|| current_tree(&cell.base, &cell.attached).unwrap());
    let mut p = plan_on(req, &cell.layout, &cell.base, &cell.attached, live).unwrap();
    let next = p.take_tree().expect("the plan's tree");
    p.commit(&mut cell.layout, &mut cell.attached).unwrap();
    cache.put(&cell.attached, next);
}

/// Detaches `id` the way a running cell does: the kept tree without the
/// device's nodes is put back under what is left.
fn detach_on_cache(cell: &mut Cell, cache: &mut TreeCache, id: &str) {
    let nodes = cell
        .attached
        .iter()
        .find(|d| d.id() == id)
        .map(|d| d.nodes.clone())
        .unwrap();
    let tree = cache.take(&cell.attached).expect("the kept tree");
    cell.detach(id);
    cache.put(&cell.attached, tree.without(&nodes));
}

#[test]
fn a_kept_tree_after_attaches_and_detaches_is_the_tree_rebuilt_from_the_base() {
    let mut cell = Cell::new(&small_config());
    let mut cache = TreeCache::default();
    let check = |cell: &Cell, cache: &mut TreeCache, when: &str| {
        let kept = cache.take(&cell.attached).expect("a tree kept for the set");
        let rebuilt = current_tree(&cell.base, &cell.attached).unwrap();
        assert_eq!(kept.paths(), rebuilt.paths(), "{when}: node paths");
        assert_eq!(kept.to_dtb(), rebuilt.to_dtb(), "{when}: the whole tree");
        cache.put(&cell.attached, kept);
    };
    for round in 0..3 {
        attach_on_cache(&mut cell, &mut cache, &virtio("v0", None, None));
        attach_on_cache(&mut cell, &mut cache, &bridge("hot0", 8));
        attach_on_cache(&mut cell, &mut cache, &uart("u1", None, None));
        check(&cell, &mut cache, &format!("round {round}: three attached"));
        detach_on_cache(&mut cell, &mut cache, "u1");
        check(
            &cell,
            &mut cache,
            &format!("round {round}: the last detached"),
        );
        attach_on_cache(&mut cell, &mut cache, &uart("u1", None, None));
        detach_on_cache(&mut cell, &mut cache, "hot0");
        check(
            &cell,
            &mut cache,
            &format!("round {round}: one from the middle detached"),
        );
        detach_on_cache(&mut cell, &mut cache, "v0");
        detach_on_cache(&mut cell, &mut cache, "u1");
        check(&cell, &mut cache, &format!("round {round}: none attached"));
    }
}

#[test]
fn a_tree_without_paths_it_lacks_is_unchanged() {
    let cell = Cell::new(&small_config());
    let tree = current_tree(&cell.base, &cell.attached).unwrap();
    let dtb = tree.to_dtb();
    let after = tree.without(&[
        "/no-such@0".to_string(),
        "/a/b/c".to_string(),
        String::new(),
    ]);
    assert_eq!(after.to_dtb(), dtb);
}

#[test]
fn the_tree_cache_keeps_the_most_recently_used_trees() {
    let mut cell = Cell::new(&small_config());
    let mut cache = TreeCache::default();
    let mut sets = Vec::new();
    for i in 0..6 {
        cell.attach(&virtio(&format!("v{i}"), None, None));
        cache.put(
            &cell.attached,
            current_tree(&cell.base, &cell.attached).unwrap(),
        );
        sets.push(cell.attached.clone());
    }
    // Six trees put, four kept: the two oldest went.
    assert!(cache.take(&sets[0]).is_none(), "evicted: only 4 are kept");
    assert!(cache.take(&sets[1]).is_none(), "evicted: only 4 are kept");
    // Taken and put back: the most recently used.
    let t2 = cache.take(&sets[2]).expect("kept");
    cache.put(&sets[2], t2);
    cache.put(&sets[0], current_tree(&cell.base, &sets[0]).unwrap());
    assert!(
        cache.take(&sets[3]).is_none(),
        "the least recently used went"
    );
    for kept in [&sets[0], &sets[2], &sets[4]] {
        let tree = cache.take(kept).expect("kept");
        cache.put(kept, tree);
    }
    cache.clear();
    assert!(cache.take(&sets[5]).is_none());
}
