//! Attach planning, detach planning and device descriptions.

use super::*;
use crate::config::{
    IvshmemConfig, MemoryRegion, PciBridgeConfig, PciDeviceKind, VirtioMmioConfig,
};
use crate::fdt::emit;
use crate::fdt::overlay::LiveTree;
use crate::fdt::overlay_tests::{
    apply_both_ways, assert_same_flat, busy_config, dtc_clean, fdtoverlay, flatten, small_config,
    test_config, tree_and_layout, with_child, GIB, MIB,
};
use crate::fdt::{build_base_tree, Node};
use crate::layout::consts::*;
use crate::layout::CellLayout;

// ---------------------------------------------------------------------------
// Helpers

fn bridge(id: &str, bus_start: u8) -> DeviceRequest {
    DeviceRequest::PciBridge {
        id: id.into(),
        kind: PciHostKind::Ecam,
        bus_start,
        bus_end: bus_start,
        config_base: None,
        mmio32: None,
        mmio64: None,
        devices: vec![PciDeviceConfig {
            slot: 1,
            function: 0,
            kind: PciDeviceKind::Test,
        }],
    }
}

fn virtio(id: &str, base: Option<u64>, irq: Option<u32>) -> DeviceRequest {
    DeviceRequest::VirtioMmio {
        id: id.into(),
        kind: VirtioKind::Rng,
        base,
        irq,
        backend: Default::default(),
    }
}

fn uart(id: &str, port: Option<u16>, irq: Option<u32>) -> DeviceRequest {
    DeviceRequest::Uart {
        id: id.into(),
        port,
        irq,
    }
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

    fn plan(&self, req: &DeviceRequest) -> Result<AttachPlan, AttachError> {
        plan(req, &self.layout, &self.base, &self.attached)
    }

    /// Plans `req`, asserting a failure leaves the layout alone.
    fn reject(&self, req: &DeviceRequest) -> AttachError {
        let before = self.layout.clone();
        let err = self.plan(req).expect_err("the plan should fail");
        assert!(same_layout(&before, &self.layout));
        err
    }

    fn attach(&mut self, req: &DeviceRequest) -> AttachedDevice {
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
            .map(|r| (r.owner.clone(), r.window.base, r.window.size))
            .collect(),
        l.irqs.owners().map(|(p, o)| (p, o.to_string())).collect(),
    )
}

fn assert_layout_eq(a: &CellLayout, b: &CellLayout) {
    assert_eq!(snapshot(a), snapshot(b));
    assert!(same_layout(a, b));
}

/// The optional placements of a bridge request, for tests to change.
struct Patch {
    config_base: Option<u64>,
    mmio32: Option<Window>,
    mmio64: Option<Window>,
}

/// `r` (a bridge request) with `f` applied to its placements.
fn patch(mut r: DeviceRequest, f: impl FnOnce(&mut Patch)) -> DeviceRequest {
    if let DeviceRequest::PciBridge {
        config_base,
        mmio32,
        mmio64,
        ..
    } = &mut r
    {
        let mut p = Patch {
            config_base: *config_base,
            mmio32: *mmio32,
            mmio64: *mmio64,
        };
        f(&mut p);
        (*config_base, *mmio32, *mmio64) = (p.config_base, p.mmio32, p.mmio64);
    }
    r
}

fn req_config(req: &DeviceRequest) -> PciBridgeConfig {
    match req.clone() {
        DeviceRequest::PciBridge {
            id,
            kind,
            bus_start,
            bus_end,
            config_base,
            mmio32,
            mmio64,
            devices,
        } => PciBridgeConfig {
            id,
            kind,
            config_base,
            bus_start,
            bus_end,
            mmio32,
            mmio64,
            devices,
        },
        _ => panic!("not a bridge"),
    }
}

// ---------------------------------------------------------------------------
// Runtime attach == static configuration

#[test]
fn attaching_a_pci_bridge_at_runtime_gives_the_tree_and_layout_of_configuring_it_statically() {
    for req in [
        bridge("hot0", 8),
        DeviceRequest::PciBridge {
            id: "hot1".into(),
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
        },
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
            irq: 3,
        })
    );
    assert_eq!(dev.nodes, ["/isa@legacy/serial@1,2f8"]);
    assert_eq!(cell.layout.irqs.owner(3), Some("uart com2"));
    let node = crate::fdt::templates::NS16550
        .instantiate(
            &crate::fdt::Vars::new()
                .raw("unit", "1,2f8")
                .cells("port", [0x2f8u32])
                .cells("irq", [3u32]),
        )
        .expect("node");
    let expected = with_child(&cell.base, "isa@legacy", node);
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
    assert!(matches!(err, AttachError::NoFreePort { .. }), "{err}");
    let tree = cell.tree();
    for p in ["2f8", "3e8", "280", "2e8"] {
        assert!(tree.contains_key(&format!("/isa@legacy/serial@1,{p}")));
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
        "IOAPIC pin 5 for virtio-mmio hot0 is already used by channel"
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
        "IOAPIC pin 20 for uart u is already used by virtio-mmio hot0"
    );
    let rng_irq = cell.layout.virtio_mmio[0].irq;
    assert!(matches!(
        cell.reject(&virtio("x", None, Some(rng_irq))),
        AttachError::IrqTaken { .. }
    ));
}

#[test]
fn duplicate_ids_are_rejected() {
    let mut cell = Cell::new(&busy_config());
    cell.attach(&uart("com2", None, None));
    for (id, who) in [
        ("rng0", "a boot-time virtio-mmio device"),
        ("pci0", "a boot-time pci bridge"),
        ("console", "a boot-time platform device"),
        ("com2", "an attached uart device"),
    ] {
        let err = cell.reject(&virtio(id, None, None));
        assert_eq!(
            err.to_string(),
            format!("id {id:?} is already used by {who}")
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
        AttachError::BusCollision { ref other, .. } if other == "hot0"
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
        "uart u at ports 0x3f8..0x400 collides with console"
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
fn invalid_requests_are_rejected_naming_the_field() {
    let cell = Cell::new(&small_config());
    let bad_bridge = |f: &dyn Fn(&mut DeviceRequest)| {
        let mut r = bridge("b", 8);
        f(&mut r);
        r
    };
    fn set(r: &mut DeviceRequest, g: impl FnOnce(&mut PciBridgeFields)) {
        if let DeviceRequest::PciBridge {
            bus_end,
            config_base,
            mmio32,
            mmio64,
            devices,
            kind,
            ..
        } = r
        {
            g(&mut PciBridgeFields {
                bus_end,
                config_base,
                mmio32,
                mmio64,
                devices,
                kind,
            });
        }
    }
    struct PciBridgeFields<'a> {
        bus_end: &'a mut u8,
        config_base: &'a mut Option<u64>,
        mmio32: &'a mut Option<Window>,
        mmio64: &'a mut Option<Window>,
        devices: &'a mut Vec<PciDeviceConfig>,
        kind: &'a mut PciHostKind,
    }
    let dev = |slot, function| PciDeviceConfig {
        slot,
        function,
        kind: PciDeviceKind::Test,
    };
    let cases: Vec<(DeviceRequest, &str)> = vec![
        (virtio("bad id", None, None), "id"),
        (virtio("", None, None), "id"),
        (virtio(&"x".repeat(33), None, None), "id"),
        (virtio("v", Some(0xd010_0800), None), "base"),
        (virtio("v", Some(0x1000), None), "base"),
        (virtio("v", Some(!0xfffu64), None), "base"),
        (virtio("v", None, Some(24)), "irq"),
        (uart("u", Some(0x2f9), None), "port"),
        (uart("u", Some(0xfffc), None), "port"),
        (uart("u", None, Some(99)), "irq"),
        (bad_bridge(&|r| set(r, |f| *f.bus_end = 7)), "bus_end"),
        (
            bad_bridge(&|r| set(r, |f| *f.config_base = Some(0xe008_0000))),
            "config_base",
        ),
        (
            bad_bridge(&|r| {
                set(r, |f| {
                    *f.kind = PciHostKind::Cam;
                    *f.config_base = Some(0xffff_8000);
                })
            }),
            "config_base",
        ),
        (
            bad_bridge(&|r| set(r, |f| *f.config_base = Some(0xfff0_0000 + (1 << 20)))),
            "config_base",
        ),
        (
            bad_bridge(&|r| {
                set(r, |f| {
                    *f.mmio32 = Some(Window {
                        base: 0,
                        size: 3 * MIB,
                    })
                })
            }),
            "mmio32.size",
        ),
        (
            bad_bridge(&|r| {
                set(r, |f| {
                    *f.mmio32 = Some(Window {
                        base: 0,
                        size: 4096,
                    })
                })
            }),
            "mmio32.size",
        ),
        (
            bad_bridge(&|r| {
                set(r, |f| {
                    *f.mmio32 = Some(Window {
                        base: 0xc010_0000,
                        size: 16 * MIB,
                    })
                })
            }),
            "mmio32.base",
        ),
        (
            bad_bridge(&|r| {
                set(r, |f| {
                    *f.mmio32 = Some(Window {
                        base: 0xff00_0000,
                        size: 32 * MIB,
                    })
                })
            }),
            "mmio32.base",
        ),
        (
            bad_bridge(&|r| {
                set(r, |f| {
                    *f.mmio64 = Some(Window {
                        base: 2 * GIB,
                        size: GIB,
                    })
                })
            }),
            "mmio64.base",
        ),
        (
            bad_bridge(&|r| {
                set(r, |f| {
                    *f.mmio64 = Some(Window {
                        base: 1 << 63,
                        size: 1 << 63,
                    })
                })
            }),
            "mmio64",
        ),
        (
            bad_bridge(&|r| set(r, |f| *f.devices = vec![dev(32, 0)])),
            "device[0].slot",
        ),
        (
            bad_bridge(&|r| set(r, |f| *f.devices = vec![dev(1, 8)])),
            "device[0].function",
        ),
        (
            bad_bridge(&|r| set(r, |f| *f.devices = vec![dev(1, 0), dev(1, 0)])),
            "device[1].slot",
        ),
        (
            bad_bridge(&|r| set(r, |f| *f.devices = vec![dev(1, 0), dev(2, 1)])),
            "device[1].function",
        ),
        (
            bad_bridge(&|r| {
                set(r, |f| {
                    *f.devices = vec![PciDeviceConfig {
                        slot: 0,
                        function: 0,
                        kind: PciDeviceKind::Ivshmem(IvshmemConfig {
                            region: "r".into(),
                            peer_id: 2,
                            max_peers: 2,
                            rw_size: 4096,
                            output_size: 0,
                        }),
                    }]
                })
            }),
            "device[0].peer_id",
        ),
        (
            bad_bridge(&|r| {
                set(r, |f| {
                    *f.devices = vec![PciDeviceConfig {
                        slot: 0,
                        function: 0,
                        kind: PciDeviceKind::Ivshmem(IvshmemConfig {
                            region: "r".into(),
                            peer_id: 0,
                            max_peers: 2,
                            rw_size: 0,
                            output_size: 0,
                        }),
                    }]
                })
            }),
            "device[0].rw_size",
        ),
    ];
    for (req, field) in cases {
        match cell.reject(&req) {
            AttachError::InvalidRequest { field: f, .. } => {
                assert_eq!(f, field, "{req:?}")
            }
            other => panic!("{req:?}: expected an invalid {field}, got {other}"),
        }
    }
}

#[test]
fn no_request_panics_whatever_its_values() {
    let cell = Cell::new(&busy_config());
    let edge_u64 = [
        0,
        1,
        0xfff,
        0x1000,
        0xc000_0000,
        1 << 32,
        u64::MAX / 2,
        u64::MAX,
    ];
    let edge_u8 = [0u8, 1, 31, 32, 254, 255];
    for &a in &edge_u64 {
        for &b in &edge_u8 {
            for kind in [PciHostKind::Ecam, PciHostKind::Cam] {
                let req = DeviceRequest::PciBridge {
                    id: "p".into(),
                    kind,
                    bus_start: b,
                    bus_end: b.saturating_add(3),
                    config_base: Some(a),
                    mmio32: Some(Window { base: a, size: a }),
                    mmio64: Some(Window {
                        base: a,
                        size: a.wrapping_mul(2),
                    }),
                    devices: vec![PciDeviceConfig {
                        slot: b,
                        function: b,
                        kind: PciDeviceKind::Test,
                    }],
                };
                let _ = cell.plan(&req);
            }
            let _ = cell.plan(&virtio("v", Some(a), Some(u32::from(b))));
            let _ = cell.plan(&uart("u", Some(a as u16), Some(u32::from(b))));
        }
    }
    assert!(same_layout(
        &cell.layout,
        &tree_and_layout(&busy_config()).1
    ));
}

#[test]
fn plan_rejects_an_overlay_whose_ioapic_phandle_differs_from_the_cell_tree() {
    // An (odd) earlier overlay renumbered the IOAPIC: &ioapic = 1 would be wrong.
    let dir = tempfile::tempdir().expect("tempdir");
    let dts = dir.path().join("x.dts");
    std::fs::write(
        &dts,
        "/dts-v1/;\n/ { fragment@0 { target-path = \"/ioapic@fec00000\"; \
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
        assert!(
            !same_layout(&p.layout, &original),
            "{req:?} reserves something"
        );
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
    assert!(tree.contains_key("/isa@legacy/serial@1,2f8"));
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
        "v: the layout has no reservation for virtio-mmio v; it does not match the attached devices"
    );
    assert_eq!(err.kind(), AttachErrorKind::Internal);
}

// ---------------------------------------------------------------------------
// Description files

const BRIDGE_TOML: &str = r#"kind = "pci-bridge"     # or "virtio-mmio", "uart"
id = "hot0"
bridge = "ecam"         # ecam | cam
bus_start = 8
[[device]]
slot = 1
kind = "test"
"#;

fn desc_err(r: Result<DeviceRequest, AttachError>) -> DescriptionError {
    match r {
        Err(AttachError::Description(e)) => e,
        other => panic!("expected a description error, got {other:?}"),
    }
}

#[test]
fn the_example_description_reads_as_a_pci_bridge_request() {
    let req = DeviceRequest::from_toml_str(BRIDGE_TOML).expect("parse");
    assert_eq!(req, bridge("hot0", 8));
    assert_eq!(req.kind_name(), "pci-bridge");
}

#[test]
fn toml_and_json_descriptions_of_every_kind_read_the_same() {
    let cases = [
        (
            r#"kind = "pci-bridge"
id = "b1"
bridge = "cam"
bus_start = 0x10
bus_end = 0x11
config_base = 0xf0000000
mmio32 = { base = 0xc8000000, size = "16M" }
mmio64 = { size = "1G" }
[[device]]
slot = 2
kind = "test"
[[device]]
slot = 3
kind = "ivshmem"
region = "shm0"
peer_id = 1
max_peers = 4
rw_size = "64K"
"#,
            r#"{"kind": "pci-bridge", "id": "b1", "bridge": "cam", "bus_start": 16,
               "bus_end": 17, "config_base": 4026531840,
               "mmio32": {"base": 3355443200, "size": "16M"}, "mmio64": {"size": 1073741824},
               "device": [{"slot": 2, "kind": "test"},
                          {"slot": 3, "kind": "ivshmem", "region": "shm0", "peer_id": 1,
                           "max_peers": 4, "rw_size": 65536}]}"#,
            DeviceRequest::PciBridge {
                id: "b1".into(),
                kind: PciHostKind::Cam,
                bus_start: 0x10,
                bus_end: 0x11,
                config_base: Some(0xf000_0000),
                mmio32: Some(Window {
                    base: 0xc800_0000,
                    size: 16 * MIB,
                }),
                mmio64: Some(Window { base: 0, size: GIB }),
                devices: vec![
                    PciDeviceConfig {
                        slot: 2,
                        function: 0,
                        kind: PciDeviceKind::Test,
                    },
                    PciDeviceConfig {
                        slot: 3,
                        function: 0,
                        kind: PciDeviceKind::Ivshmem(IvshmemConfig {
                            region: "shm0".into(),
                            peer_id: 1,
                            max_peers: 4,
                            rw_size: 64 * 1024,
                            output_size: 0,
                        }),
                    },
                ],
            },
        ),
        (
            "kind = \"virtio-mmio\"\nid = \"rng1\"\nvirtio = \"rng\"\nbase = 0xd0105000\nirq = 9\n",
            r#"{"kind": "virtio-mmio", "id": "rng1", "virtio": "rng", "base": 3490729984, "irq": 9}"#,
            DeviceRequest::VirtioMmio {
                id: "rng1".into(),
                kind: VirtioKind::Rng,
                base: Some(0xd010_5000),
                irq: Some(9),
                backend: Default::default(),
            },
        ),
        (
            "kind = \"uart\"\nid = \"com2\"\n",
            r#"{"kind": "uart", "id": "com2"}"#,
            uart("com2", None, None),
        ),
        (
            "kind = \"uart\"\nid = \"com3\"\nport = 0x3e8\nirq = 4\n",
            r#"{"kind": "uart", "id": "com3", "port": 1000, "irq": 4}"#,
            uart("com3", Some(0x3e8), Some(4)),
        ),
    ];
    for (toml, json, expected) in cases {
        assert_eq!(DeviceRequest::from_toml_str(toml).expect("toml"), expected);
        assert_eq!(DeviceRequest::from_json_str(json).expect("json"), expected);
        let value: serde_json::Value = serde_json::from_str(json).expect("value");
        assert_eq!(
            DeviceRequest::from_json_value(&value).expect("value"),
            expected
        );
    }
}

#[test]
fn toml_description_errors_name_the_field_and_line() {
    let cases: &[(&str, &str, usize, &str)] = &[
        ("id = \"x\"\n", "kind", 1, "missing required key"),
        (
            "kind = \"scsi\"\nid = \"x\"\n",
            "kind",
            1,
            "unknown kind \"scsi\", expected \"pci-bridge\", \"virtio-mmio\" or \"uart\"",
        ),
        ("kind = \"uart\"\n", "id", 1, "missing required key"),
        (
            "kind = \"uart\"\nid = \"x\"\nbus_start = 3\n",
            "bus_start",
            3,
            "unknown key (a uart description takes `kind`, `id`, `port`, `irq`)",
        ),
        (
            "kind = \"pci-bridge\"\nid = \"x\"\nbridge = \"ecam\"\nbus_strat = 3\n",
            "bus_strat",
            4,
            "unknown key",
        ),
        (
            "kind = \"pci-bridge\"\nid = \"x\"\nbridge = \"ecam\"\nbus_start = \"8\"\n",
            "bus_start",
            4,
            "invalid type: a string, expected an integer",
        ),
        (
            "kind = \"pci-bridge\"\nid = \"x\"\nbridge = \"ecam\"\nbus_start = 300\n",
            "bus_start",
            4,
            "bus numbers are 0 to 255, got 300",
        ),
        (
            "kind = \"pci-bridge\"\nid = \"x\"\n",
            "bridge",
            1,
            "missing required key",
        ),
        (
            "kind = \"pci-bridge\"\nid = \"x\"\nbridge = \"pcie\"\n",
            "bridge",
            3,
            "unknown kind \"pcie\", expected \"ecam\" or \"cam\"",
        ),
        (
            "kind = \"pci-bridge\"\nid = \"x\"\nbridge = \"ecam\"\nbus_start = 8\nbus_end = 7\n",
            "bus_end",
            5,
            "7 is below bus_start 8",
        ),
        (
            "kind = \"pci-bridge\"\nid = \"x\"\nbridge = \"ecam\"\nmmio32 = { size = \"3M\" }\n",
            "mmio32.size",
            4,
            "3 MiB (0x300000) is not a power of two",
        ),
        (
            "kind = \"pci-bridge\"\nid = \"x\"\nbridge = \"ecam\"\nmmio32 = { base = 0xc0000000 }\n",
            "mmio32.size",
            4,
            "missing required key",
        ),
        (
            "kind = \"pci-bridge\"\nid = \"x\"\nbridge = \"ecam\"\nmmio64 = { size = \"1X\" }\n",
            "mmio64.size",
            4,
            "invalid size \"1X\": unknown suffix \"X\" (use K, M, G, KiB, MiB or GiB)",
        ),
        (
            "kind = \"pci-bridge\"\nid = \"x\"\nbridge = \"ecam\"\nconfig_base = -1\n",
            "config_base",
            4,
            "must not be negative, got -1",
        ),
        (
            "kind = \"pci-bridge\"\nid = \"x\"\nbridge = \"ecam\"\n[[device]]\nslot = 1\nkind = \"test\"\n[[device]]\nslot = 2\nfunction = 1\nkind = \"test\"\n",
            "device[1].function",
            9,
            "function 1 of slot 2 needs a function 0 in the same slot",
        ),
        (
            "kind = \"pci-bridge\"\nid = \"x\"\nbridge = \"ecam\"\n[[device]]\nslot = 40\nkind = \"test\"\n",
            "device[0].slot",
            5,
            "40 is not a PCI device number (0..=31)",
        ),
        (
            "kind = \"pci-bridge\"\nid = \"x\"\nbridge = \"ecam\"\n[[device]]\nslot = 1\nkind = \"test\"\nregion = \"r\"\n",
            "device[0].region",
            7,
            "only ivshmem devices take this key",
        ),
        (
            "kind = \"pci-bridge\"\nid = \"x\"\nbridge = \"ecam\"\n[[device]]\nkind = \"test\"\n",
            "device[0].slot",
            4,
            "missing required key",
        ),
        (
            "kind = \"pci-bridge\"\nid = \"x\"\nbridge = \"ecam\"\ndevice = 3\n",
            "device",
            4,
            "invalid type: an integer, expected an array of tables",
        ),
        (
            "kind = \"virtio-mmio\"\nid = \"bad id!\"\nvirtio = \"rng\"\n",
            "id",
            2,
            "must be 1-32 characters of A-Z, a-z, 0-9, '_' and '-', got \"bad id!\"",
        ),
        (
            "kind = \"virtio-mmio\"\nid = \"v\"\nvirtio = \"gpu\"\n",
            "virtio",
            3,
            "unknown kind \"gpu\", expected \"rng\", \"block\" or \"console\"",
        ),
        (
            "kind = \"virtio-mmio\"\nid = \"v\"\nvirtio = \"rng\"\n\nbase = 0xd0100800\n",
            "base",
            5,
            "0xd0100800 is not a multiple of 4 KiB",
        ),
        (
            "kind = \"virtio-mmio\"\nid = \"v\"\nvirtio = \"rng\"\nirq = 24\n",
            "irq",
            4,
            "IOAPIC pin 24 does not exist (pins are 0 to 23)",
        ),
        (
            "kind = \"uart\"\nid = \"u\"\nport = 0x10000\n",
            "port",
            3,
            "0x10000 is not an I/O port (0 to 0xffff)",
        ),
        (
            "kind = \"uart\"\nid = \"u\"\nport = 0x2fa\n",
            "port",
            3,
            "0x2fa is not a multiple of 8",
        ),
        (
            "kind = \"uart\"\nid = \"u\"\nirq = 1979-05-27\n",
            "irq",
            3,
            "invalid type: a datetime, expected an integer",
        ),
        (
            "kind = \"uart\"\nid = \"u\"\nport = \n",
            "port",
            3,
            "invalid TOML",
        ),
        (
            "kind = \"uart\"\nid = \"u\"\nid = \"v\"\n",
            "id",
            3,
            "invalid TOML",
        ),
        (
            "kind = \"virtio-mmio\"\nid = \"d\"\nvirtio = \"block\"\npath = \"/nonexistent/disk.img\"\n",
            "path",
            4,
            "disk image /nonexistent/disk.img: No such file or directory",
        ),
        (
            "kind = \"virtio-mmio\"\nid = \"r\"\nvirtio = \"rng\"\nqueue_size = 100\n",
            "queue_size",
            4,
            "100 is not a power of two from 16 to 1024",
        ),
        (
            "kind = \"virtio-mmio\"\nid = \"c\"\nvirtio = \"console\"\npath = \"a\"\npty = \"b\"\n",
            "pty",
            5,
            "a console takes one of path, socket or pty",
        ),
        (
            "kind = \"virtio-mmio\"\nid = \"r\"\nvirtio = \"rng\"\nserial = \"x\"\n",
            "serial",
            4,
            "a rng device takes no \"serial\" key",
        ),
        (
            "kind = \"pci-bridge\"\nid = \"b\"\nbridge = \"ecam\"\n[[device]]\nslot = 1\nkind = \"test\"\nvirtio = \"rng\"\n",
            "device[0].virtio",
            7,
            "only virtio devices take this key",
        ),
        (
            "kind = \"pci-bridge\"\nid = \"b\"\nbridge = \"ecam\"\n[[device]]\nslot = 1\nkind = \"virtio\"\nvirtio = \"gpu\"\n",
            "device[0].virtio",
            7,
            "unknown kind \"gpu\"",
        ),
    ];
    for (text, field, line, message) in cases {
        let e = desc_err(DeviceRequest::from_toml_str(text));
        assert_eq!(e.field, *field, "{text}\n=> {e}");
        let at = e.at.as_ref().unwrap_or_else(|| panic!("no location: {e}"));
        assert_eq!(at.line, *line, "{text}\n=> {e}");
        assert_eq!(at.file, "<description>");
        assert!(e.message.starts_with(message), "{text}\n=> {e}");
    }
}

#[test]
fn description_error_prints_file_line_column_field_and_message() {
    let e = desc_err(DeviceRequest::from_toml_str(
        "kind = \"pci-bridge\"\nid = \"x\"\nbridge = \"ecam\"\nbus_start = 300\n",
    ));
    assert_eq!(
        e.to_string(),
        "<description>:4:13: bus_start: bus numbers are 0 to 255, got 300"
    );
    assert_eq!(AttachError::Description(e).kind(), AttachErrorKind::Invalid);
}

#[test]
fn json_description_errors_name_the_field_and_syntax_errors_the_line() {
    let cases: &[(&str, &str, &str)] = &[
        (r#"{"id": "x"}"#, "kind", "missing required key"),
        (
            r#"[1, 2]"#,
            "<root>",
            "invalid type: an array, expected an object",
        ),
        (
            r#"{"kind": "uart", "id": "u", "port": -8}"#,
            "port",
            "must not be negative, got -8",
        ),
        (
            r#"{"kind": "uart", "id": "u", "port": 1.5}"#,
            "port",
            "invalid type: a float, expected an integer",
        ),
        (
            r#"{"kind": "uart", "id": "u", "irq": null}"#,
            "irq",
            "invalid type: null, expected an integer",
        ),
        (
            r#"{"kind": "pci-bridge", "id": "x", "bridge": "ecam", "mmio32": 5}"#,
            "mmio32",
            "invalid type: an integer, expected an object",
        ),
        (
            r#"{"kind": "pci-bridge", "id": "x", "bridge": "ecam", "device": [{"slot": 1, "kind": "test", "colour": 1}]}"#,
            "device[0].colour",
            "unknown key (a PCI device takes",
        ),
        (
            r#"{"kind": "virtio-mmio", "id": "v", "virtio": "rng", "base": 4096}"#,
            "base",
            "0x1000..0x2000 is outside the virtio-mmio window",
        ),
    ];
    for (text, field, message) in cases {
        let e = desc_err(DeviceRequest::from_json_str(text));
        assert_eq!(e.field, *field, "{text}\n=> {e}");
        assert!(e.at.is_none(), "{e}");
        assert!(e.message.starts_with(message), "{text}\n=> {e}");
        assert!(e.to_string().starts_with(&format!("{field}: ")));
    }
    let e = desc_err(DeviceRequest::from_json_str(
        "{\n  \"kind\": \"uart\",\n  \"id\" \"u\"\n}",
    ));
    let at = e.at.clone().expect("syntax errors have a location");
    assert_eq!((at.line, e.field.as_str()), (3, "<root>"));
    assert!(e.message.starts_with("invalid JSON"), "{e}");
}

#[test]
fn loading_a_description_file_picks_the_format_by_extension_and_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = dir.path().join("hot0.toml");
    std::fs::write(&toml, BRIDGE_TOML).expect("write");
    assert_eq!(DeviceRequest::load(&toml).expect("load"), bridge("hot0", 8));
    let json = dir.path().join("u.JSON");
    std::fs::write(&json, r#"{"kind": "uart", "id": "u"}"#).expect("write");
    assert_eq!(
        DeviceRequest::load(&json).expect("load"),
        uart("u", None, None)
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "kind = \"uart\"\nid = 5\n").expect("write");
    let e = desc_err(DeviceRequest::load(&bad));
    assert_eq!(
        e.to_string(),
        format!(
            "{}:2:6: id: invalid type: an integer, expected a string",
            bad.display()
        )
    );
    let e = desc_err(DeviceRequest::load(&dir.path().join("missing.toml")));
    assert_eq!(e.field, "<file>");
}

#[test]
fn a_description_planned_and_attached_end_to_end_applies_with_fdtoverlay() {
    let mut cell = Cell::new(&busy_config());
    for text in [
        BRIDGE_TOML,
        "kind = \"virtio-mmio\"\nid = \"con1\"\nvirtio = \"console\"\n",
        "kind = \"uart\"\nid = \"com2\"\n",
    ] {
        let req = DeviceRequest::from_toml_str(text).expect("parse");
        cell.attach(&req);
    }
    let overlays: Vec<&[u8]> = cell.attached.iter().map(|d| d.overlay.as_slice()).collect();
    let out = fdtoverlay(&emit::to_dtb(&cell.base).expect("dtb"), &overlays);
    let dts = dtc_clean(&out, "the tree with three attachments");
    assert!(dts.contains("serial@1,2f8"), "{dts}");
    let live = LiveTree::from_dtb(&out, "out").expect("parse");
    assert_eq!(cell.tree(), flatten(&live.to_dtb()));
}

#[test]
fn memory_above_4g_does_not_confuse_the_64_bit_pool() {
    let cfg = test_config(
        vec![
            MemoryRegion {
                base: 0,
                size: 256 * MIB,
            },
            MemoryRegion {
                base: 4 * GIB,
                size: 8 * GIB,
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

#[test]
fn virtio_descriptions_carry_their_backend_on_both_transports() {
    let img = tempfile::NamedTempFile::new().unwrap();
    let path = img.path().display().to_string();
    let mmio = DeviceRequest::from_toml_str(&format!(
        "kind = \"virtio-mmio\"\nid = \"d\"\nvirtio = \"block\"\npath = \"{path}\"\nread_only = true\nserial = \"S1\"\nqueue_size = 32\n"
    ))
    .expect("parse");
    let DeviceRequest::VirtioMmio { kind, backend, .. } = &mmio else {
        panic!("{mmio:?}");
    };
    assert_eq!(*kind, VirtioKind::Block);
    assert_eq!(backend.path.as_deref(), Some(img.path()));
    assert!(backend.read_only);
    assert_eq!(backend.serial.as_deref(), Some("S1"));
    assert_eq!(backend.queue_size, Some(32));
    assert!(backend.ioeventfd, "ioeventfds are on by default");
    let pci = DeviceRequest::from_json_str(
        r#"{"kind": "pci-bridge", "id": "b", "bridge": "ecam", "device": [{"slot": 2, "kind": "virtio", "virtio": "console", "pty": "/tmp/x.pty", "ioeventfd": false}]}"#,
    )
    .expect("parse");
    let DeviceRequest::PciBridge { devices, .. } = &pci else {
        panic!("{pci:?}");
    };
    let PciDeviceKind::Virtio(v) = &devices[0].kind else {
        panic!("{devices:?}");
    };
    assert_eq!(v.kind, VirtioKind::Console);
    assert_eq!(
        v.backend.pty.as_deref(),
        Some(std::path::Path::new("/tmp/x.pty"))
    );
    assert!(!v.backend.ioeventfd);
}
