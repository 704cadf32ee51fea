//! Overlay blobs: structure, references, errors, and (with dtoolkit in-process
//! and with libfdt's `fdtoverlay`) that applying one to a base tree gives the
//! tree that had the device from the start. The helpers are shared with the
//! attach tests.

use super::overlay::*;
use super::tree::{Cell, Node, Property};
use super::*;
use crate::config::{
    CellConfig, ConsoleConfig, ConsoleInput, ConsoleOutput, CpuConfig, KernelConfig, KernelFormat,
    MemoryRegion, PciBridgeConfig, PciHostKind, VirtioKind, VirtioMmioConfig, Window,
};
use crate::layout::CellLayout;
use dtoolkit::fdt::Fdt;
use dtoolkit::model::DeviceTreeNode;
use dtoolkit::{Node as _, Property as _};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

pub(crate) const MIB: u64 = 1 << 20;
pub(crate) const GIB: u64 = 1 << 30;

/// A cell with `memory` regions and the given boot-time devices.
pub(crate) fn test_config(
    memory: Vec<MemoryRegion>,
    virtio_mmio: Vec<VirtioMmioConfig>,
    pci_bridges: Vec<PciBridgeConfig>,
) -> CellConfig {
    CellConfig {
        name: "overlay-test".into(),
        source: None,
        cpus: CpuConfig {
            count: 2,
            pin: None,
            shared: false,
        },
        memory,
        kernel: KernelConfig {
            path: "/boot/vmlinuz".into(),
            format: KernelFormat::BzImage,
            initrd: None,
            cmdline: "console=ttyS0 quiet".into(),
            acpi: true,
        },
        console: ConsoleConfig {
            output: ConsoleOutput::Stdout,
            input: ConsoleInput::None,
        },
        virtio_mmio,
        pci_bridges,
        uarts: vec![],
        connectors: vec![],
        origins: Default::default(),
    }
}

/// 256 MiB of RAM at 0, nothing else.
pub(crate) fn small_config() -> CellConfig {
    test_config(
        vec![MemoryRegion {
            base: 0,
            size: 256 * MIB,
            prefault: false,
            lock: false,
        }],
        vec![],
        vec![],
    )
}

/// RAM below and above 4 GiB, a virtio-mmio device and an ECAM bridge.
pub(crate) fn busy_config() -> CellConfig {
    test_config(
        vec![
            MemoryRegion {
                base: 0,
                size: 2 * GIB,
                prefault: false,
                lock: false,
            },
            MemoryRegion {
                base: 4 * GIB,
                size: GIB,
                prefault: false,
                lock: false,
            },
        ],
        vec![VirtioMmioConfig {
            id: "rng0".into(),
            state: crate::config::DeviceState::Okay,
            kind: VirtioKind::Rng,
            base: None,
            irq: None,
            backend: Default::default(),
        }],
        vec![PciBridgeConfig {
            id: "pci0".into(),
            state: crate::config::DeviceState::Okay,
            kind: PciHostKind::Ecam,
            config_base: None,
            bus_start: 0,
            bus_end: 1,
            mmio32: None,
            mmio64: Some(Window {
                base: 0,
                size: 8 * GIB,
            }),
            devices: vec![],
        }],
    )
}

pub(crate) fn tree_and_layout(cfg: &CellConfig) -> (Node, CellLayout) {
    let layout = CellLayout::new(cfg).expect("layout");
    let tree = build_base_tree(cfg, &layout).expect("base tree");
    (tree, layout)
}

/// A tree as path → (property → bytes): order-insensitive, because libfdt
/// inserts overlay nodes and properties in a different order than dtoolkit
/// (and the base emitter) does.
pub(crate) type Flat = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

fn flatten_node(node: &DeviceTreeNode, path: &str, out: &mut Flat) {
    out.insert(
        path.to_string(),
        node.properties()
            .map(|p| (p.name().to_string(), p.value().to_vec()))
            .collect(),
    );
    for c in node.children() {
        let child = if path == "/" {
            format!("/{}", c.name())
        } else {
            format!("{path}/{}", c.name())
        };
        flatten_node(c, &child, out);
    }
}

pub(crate) fn flatten(dtb: &[u8]) -> Flat {
    let fdt = Fdt::new(dtb).expect("valid DTB");
    let tree = dtoolkit::model::DeviceTree::from_fdt(&fdt);
    let mut out = Flat::new();
    flatten_node(&tree.root, "/", &mut out);
    out
}

/// Asserts two flattened trees are equal, naming the first difference.
pub(crate) fn assert_same_flat(actual: &Flat, expected: &Flat, what: &str) {
    let a: Vec<&String> = actual.keys().collect();
    let e: Vec<&String> = expected.keys().collect();
    assert_eq!(a, e, "{what}: node paths differ");
    for (path, props) in expected {
        assert_eq!(&actual[path], props, "{what}: properties of {path} differ");
    }
}

fn tool_missing(tool: &str) -> ! {
    panic!(
        "{tool} is not installed; these tests need it: apt-get install device-tree-compiler \
         (the Debian package device-tree-compiler provides dtc and fdtoverlay)"
    )
}

/// libfdt's `fdtoverlay -i base.dtb -o out.dtb overlay.dtbo...`.
pub(crate) fn fdtoverlay(base: &[u8], overlays: &[&[u8]]) -> Vec<u8> {
    if overlays.is_empty() {
        // fdtoverlay wants at least one overlay.
        return base.to_vec();
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let base_path = dir.path().join("base.dtb");
    let out_path = dir.path().join("out.dtb");
    std::fs::write(&base_path, base).expect("write base");
    let mut cmd = Command::new("fdtoverlay");
    cmd.arg("-i").arg(&base_path).arg("-o").arg(&out_path);
    for (i, ov) in overlays.iter().enumerate() {
        let p = dir.path().join(format!("overlay{i}.dtbo"));
        std::fs::write(&p, ov).expect("write overlay");
        cmd.arg(p);
    }
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => tool_missing("fdtoverlay"),
        Err(e) => panic!("running fdtoverlay: {e}"),
    };
    assert!(
        out.status.success(),
        "fdtoverlay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&out_path).expect("read fdtoverlay output")
}

fn dtc_on_file(path: &Path) -> (bool, String, String) {
    let out = match Command::new("dtc")
        .args(["-I", "dtb", "-O", "dts"])
        .arg(path)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => tool_missing("dtc"),
        Err(e) => panic!("running dtc: {e}"),
    };
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `dtc -I dtb -O dts` on `dtb`, asserting it succeeds without warnings;
/// returns the DTS.
pub(crate) fn dtc_clean(dtb: &[u8], what: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tree.dtb");
    std::fs::write(&path, dtb).expect("write dtb");
    let (ok, dts, stderr) = dtc_on_file(&path);
    assert!(ok, "dtc failed on {what}: {stderr}");
    assert!(
        stderr.trim().is_empty(),
        "dtc -I dtb -O dts printed warnings for {what}:\n{stderr}\n--- output ---\n{dts}"
    );
    dts
}

/// `dtc -I dtb -O dts` on an overlay blob (warnings are expected there: the
/// fragments are not a normal tree); returns the DTS.
pub(crate) fn dtc_overlay(dtbo: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("overlay.dtbo");
    std::fs::write(&path, dtbo).expect("write dtbo");
    let (ok, dts, stderr) = dtc_on_file(&path);
    assert!(ok, "dtc failed on the overlay: {stderr}");
    dts
}

/// Applies `overlays` to `base_dtb` with dtoolkit (through [`LiveTree`]) and
/// with `fdtoverlay`, checks both give the same tree and that dtc prints no
/// warnings for either, and returns it flattened.
pub(crate) fn apply_both_ways(base_dtb: &[u8], overlays: &[&[u8]]) -> Flat {
    let mut live = LiveTree::from_dtb(base_dtb, "the base tree").expect("base parses");
    for (i, ov) in overlays.iter().enumerate() {
        live.apply(ov, &format!("overlay {i}"))
            .unwrap_or_else(|e| panic!("dtoolkit: {e}"));
    }
    let ours = live.to_dtb();
    let libfdt = fdtoverlay(base_dtb, overlays);
    dtc_clean(&ours, "the tree applied by dtoolkit");
    dtc_clean(&libfdt, "the tree applied by fdtoverlay");
    let (a, b) = (flatten(&ours), flatten(&libfdt));
    assert_same_flat(&a, &b, "dtoolkit vs fdtoverlay");
    a
}

/// `base` with `node` added under the child `parent` of the root.
pub(crate) fn with_child(base: &Node, parent: &str, node: Node) -> Node {
    let mut root = Node::new("/");
    root.set_label(base.label().map(str::to_string));
    for p in base.properties() {
        root.add_property(p.clone()).expect("property");
    }
    for c in base.children() {
        let mut c = c.clone();
        if c.name() == parent {
            c.add_child(node.clone()).expect("child");
        }
        root.add_child(c).expect("child");
    }
    root
}

fn uart_node(port: u16, irq: u32) -> Node {
    templates::NS16550
        .instantiate(
            &Vars::new()
                .raw("unit", format!("{port:x}"))
                .cells("port", [u32::from(port)])
                .cells("irq", [irq]),
        )
        .expect("uart node")
}

// ---------------------------------------------------------------------------
// Equivalence with the static tree

/// Attaching what `with_device` configures statically, as an overlay built
/// from the slot the static layout gives it, yields the static tree.
fn assert_overlay_equals_static(base_cfg: &CellConfig, with_device: &CellConfig) {
    let (base, _) = tree_and_layout(base_cfg);
    let (full, full_layout) = tree_and_layout(with_device);
    let mut nodes = Vec::new();
    for slot in &full_layout.virtio_mmio {
        if base_cfg.virtio_mmio.iter().all(|v| v.id != slot.id) {
            nodes.push(virtio_mmio_node(slot).expect("virtio node"));
        }
    }
    for slot in &full_layout.pci_bridges {
        if base_cfg.pci_bridges.iter().all(|b| b.id != slot.id) {
            nodes.push(pci_host_node(slot).expect("pci node"));
        }
    }
    assert!(!nodes.is_empty(), "the test adds a device");
    let overlay = build_overlay_for_base(&base, &[Fragment::new("/", nodes)]).expect("overlay");
    let applied = apply_both_ways(&emit::to_dtb(&base).expect("base dtb"), &[&overlay.blob]);
    let expected = flatten(&emit::to_dtb(&full).expect("full dtb"));
    assert_same_flat(&applied, &expected, "base + overlay vs static");
}

#[test]
fn virtio_mmio_overlay_applied_to_the_base_tree_equals_the_static_tree() {
    let base = small_config();
    let mut full = base.clone();
    full.virtio_mmio.push(VirtioMmioConfig {
        id: "hot0".into(),
        state: crate::config::DeviceState::Okay,
        kind: VirtioKind::Console,
        base: None,
        irq: None,
        backend: Default::default(),
    });
    assert_overlay_equals_static(&base, &full);
}

#[test]
fn ecam_bridge_with_64_bit_window_overlay_equals_the_static_tree() {
    let base = busy_config();
    let mut full = base.clone();
    full.pci_bridges.push(PciBridgeConfig {
        id: "hot0".into(),
        state: crate::config::DeviceState::Okay,
        kind: PciHostKind::Ecam,
        config_base: None,
        bus_start: 8,
        bus_end: 9,
        mmio32: None,
        mmio64: Some(Window { base: 0, size: GIB }),
        devices: vec![],
    });
    assert_overlay_equals_static(&base, &full);
}

#[test]
fn cam_bridge_overlay_equals_the_static_tree() {
    let base = small_config();
    let mut full = base.clone();
    full.pci_bridges.push(PciBridgeConfig {
        id: "hot1".into(),
        state: crate::config::DeviceState::Okay,
        kind: PciHostKind::Cam,
        config_base: Some(0xf000_0000),
        bus_start: 0x20,
        bus_end: 0x20,
        mmio32: Some(Window {
            base: 0xc800_0000,
            size: 0x100_0000,
        }),
        mmio64: None,
        devices: vec![],
    });
    assert_overlay_equals_static(&base, &full);
}

#[test]
fn uart_overlay_under_the_isa_node_equals_a_tree_with_the_uart_from_the_start() {
    let (base, _) = tree_and_layout(&small_config());
    let uart = uart_node(0x2f8, 3);
    let overlay = build_overlay_for_base(&base, &[Fragment::new("/isa@1", vec![uart.clone()])])
        .expect("overlay");
    assert_eq!(overlay.adds, ["/isa@1/serial@2f8"]);
    assert!(overlay.base_references.is_empty());
    let applied = apply_both_ways(&emit::to_dtb(&base).expect("dtb"), &[&overlay.blob]);
    let expected = flatten(&emit::to_dtb(&with_child(&base, "isa@1", uart)).expect("dtb"));
    assert_same_flat(&applied, &expected, "base + uart overlay vs static");
}

#[test]
fn several_overlays_apply_in_sequence_like_one_static_tree() {
    let base_cfg = small_config();
    let mut full_cfg = base_cfg.clone();
    full_cfg.virtio_mmio.push(VirtioMmioConfig {
        id: "v".into(),
        state: crate::config::DeviceState::Okay,
        kind: VirtioKind::Rng,
        base: None,
        irq: None,
        backend: Default::default(),
    });
    full_cfg.pci_bridges.push(PciBridgeConfig {
        id: "p".into(),
        state: crate::config::DeviceState::Okay,
        kind: PciHostKind::Ecam,
        config_base: None,
        bus_start: 3,
        bus_end: 3,
        mmio32: None,
        mmio64: None,
        devices: vec![],
    });
    let (base, _) = tree_and_layout(&base_cfg);
    let (full, layout) = tree_and_layout(&full_cfg);
    let v = build_overlay_for_base(
        &base,
        &[Fragment::new(
            "/",
            vec![virtio_mmio_node(&layout.virtio_mmio[0]).expect("node")],
        )],
    )
    .expect("overlay");
    let p = build_overlay_for_base(
        &base,
        &[Fragment::new(
            "/",
            vec![pci_host_node(&layout.pci_bridges[0]).expect("node")],
        )],
    )
    .expect("overlay");
    let applied = apply_both_ways(&emit::to_dtb(&base).expect("dtb"), &[&v.blob, &p.blob]);
    assert_same_flat(
        &applied,
        &flatten(&emit::to_dtb(&full).expect("dtb")),
        "two overlays vs static",
    );
}

// ---------------------------------------------------------------------------
// The blob itself

#[test]
fn overlay_blob_has_a_fragment_with_target_path_and_overlay_and_no_fixup_nodes() {
    let (base, layout) = tree_and_layout(&busy_config());
    let node = pci_host_node(&layout.pci_bridges[0]).expect("node");
    // Pretend it is new: build against a base without it.
    let (small, _) = tree_and_layout(&small_config());
    let overlay = build_overlay_for_base(&small, &[Fragment::new("/", vec![node])]).expect("ov");
    let flat = flatten(&overlay.blob);
    let paths: Vec<&str> = flat.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        [
            "/",
            "/fragment@0",
            "/fragment@0/__overlay__",
            "/fragment@0/__overlay__/pci@e0000000",
        ]
    );
    assert_eq!(flat["/fragment@0"]["target-path"], b"/\0");
    assert!(flat["/"].is_empty(), "the overlay root has no properties");
    // &ioapic became the base tree's phandle, checked against the base DTB.
    let phandle = LiveTree::from_base(&base)
        .expect("live")
        .phandle("/interrupt-controller@fec00000");
    assert_eq!(phandle, Some(1));
    assert_eq!(
        overlay.base_references,
        [
            BaseReference {
                label: IOAPIC_LABEL.into(),
                path: "/interrupt-controller@fec00000".into(),
                phandle: 1,
            },
            BaseReference {
                label: MSI_LABEL.into(),
                path: "/msi-controller".into(),
                phandle: 2,
            }
        ]
    );
    let map = &flat["/fragment@0/__overlay__/pci@e0000000"]["interrupt-map"];
    let cells: Vec<u32> = map
        .chunks(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(cells.len(), 4 * 4 * 7);
    assert!(
        cells.chunks(7).all(|e| e[4] == 1),
        "every entry points at phandle 1"
    );
    let dts = dtc_overlay(&overlay.blob);
    assert!(dts.contains("target-path = \"/\";"), "{dts}");
    assert!(
        !dts.contains("__fixups__") && !dts.contains("__symbols__"),
        "{dts}"
    );
}

#[test]
fn labels_inside_the_overlay_get_local_phandles_and_local_fixups_that_both_appliers_relocate() {
    let (base, _) = tree_and_layout(&small_config());
    let mut parent = Node::new("parent@d0300000");
    parent
        .add_property(Property::u32s("reg", &[0, 0xd030_0000, 0, 0x1000]))
        .expect("prop");
    parent
        .add_property(Property::cells(
            "link",
            vec![
                Cell::Num(7),
                Cell::Ref("kid".into()),
                Cell::Ref("kid".into()),
            ],
        ))
        .expect("prop");
    let mut kid = Node::new("kid");
    kid.set_label(Some("kid".into()));
    kid.add_property(Property::string("compatible", "cellvm,test"))
        .expect("prop");
    parent.add_child(kid).expect("child");
    let overlay = build_overlay_for_base(&base, &[Fragment::new("/", vec![parent])]).expect("ov");
    let flat = flatten(&overlay.blob);
    assert_eq!(
        flat["/__local_fixups__/fragment@0/__overlay__/parent@d0300000"]["link"],
        [0u8, 0, 0, 4, 0, 0, 0, 8]
    );
    assert_eq!(
        flat["/fragment@0/__overlay__/parent@d0300000/kid"]["phandle"],
        1u32.to_be_bytes()
    );
    // The base's highest phandle is 2 (IOAPIC 1, MSI target 2): the kid
    // becomes 3.
    let applied = apply_both_ways(&emit::to_dtb(&base).expect("dtb"), &[&overlay.blob]);
    assert_eq!(
        applied["/parent@d0300000/kid"]["phandle"],
        3u32.to_be_bytes()
    );
    let link: Vec<u8> = [7u32, 3, 3].iter().flat_map(|v| v.to_be_bytes()).collect();
    assert_eq!(applied["/parent@d0300000"]["link"], link);
}

#[test]
fn build_overlay_without_a_base_rejects_references_to_the_ioapic() {
    let (_, layout) = tree_and_layout(&busy_config());
    let node = pci_host_node(&layout.pci_bridges[0]).expect("node");
    let err = build_overlay(&[Fragment::new("/", vec![node])]).expect_err("unresolved");
    assert_eq!(
        err,
        FdtError::UnresolvedReference {
            path: "/pci@e0000000".into(),
            property: "interrupt-map".into(),
            label: "ioapic".into(),
        }
    );
}

#[test]
fn build_overlay_without_references_needs_no_base() {
    let (_, layout) = tree_and_layout(&busy_config());
    let node = virtio_mmio_node(&layout.virtio_mmio[0]).expect("node");
    let blob = build_overlay(&[Fragment::new("/", vec![node])]).expect("overlay");
    let flat = flatten(&blob);
    assert!(flat.contains_key("/fragment@0/__overlay__/virtio_mmio@d0100000"));
}

#[test]
fn reference_to_a_label_neither_in_the_base_nor_the_overlay_is_rejected() {
    let (base, _) = tree_and_layout(&small_config());
    let mut n = Node::new("x");
    n.add_property(Property::cells("clocks", vec![Cell::Ref("nowhere".into())]))
        .expect("prop");
    let err =
        build_overlay_for_base(&base, &[Fragment::new("/isa@1", vec![n])]).expect_err("unresolved");
    assert_eq!(
        err.to_string(),
        "/isa@1/x: property clocks references unknown label &nowhere"
    );
}

#[test]
fn overlay_label_that_the_base_tree_already_has_is_rejected() {
    let (base, _) = tree_and_layout(&small_config());
    let mut n = Node::new("x");
    n.set_label(Some(IOAPIC_LABEL.into()));
    let err = build_overlay_for_base(&base, &[Fragment::new("/", vec![n])]).expect_err("dup");
    assert_eq!(
        err,
        FdtError::DuplicateLabel {
            label: "ioapic".into(),
            first: "/interrupt-controller@fec00000".into(),
            second: "/x".into(),
        }
    );
}

#[test]
fn explicit_phandle_in_an_overlay_node_is_rejected() {
    let mut n = Node::new("x");
    n.add_property(Property::u32s("phandle", &[5]))
        .expect("prop");
    let err = build_overlay(&[Fragment::new("/", vec![n])]).expect_err("phandle");
    assert!(matches!(err, FdtError::ExplicitPhandle { ref path, .. } if path == "/x"));
}

#[test]
fn invalid_target_paths_are_rejected() {
    for target in ["", "isa", "/isa//x", "/bad name", "/a\0b", "/x/"] {
        let err = build_overlay(&[Fragment::new(target, vec![Node::new("n")])]).expect_err(target);
        assert!(
            matches!(err, FdtError::Writer { ref path, .. } if path == "/fragment@0:target-path"),
            "{target:?}: {err}"
        );
    }
}

#[test]
fn the_same_node_twice_across_fragments_is_rejected() {
    let frags = [
        Fragment::new("/", vec![Node::new("n@1")]),
        Fragment::new("/", vec![Node::new("n@1")]),
    ];
    assert_eq!(
        build_overlay(&frags).expect_err("dup"),
        FdtError::DuplicateNode {
            parent: "/".into(),
            name: "n@1".into(),
        }
    );
}

#[test]
fn invalid_node_and_property_names_are_writer_errors() {
    let err = build_overlay(&[Fragment::new("/", vec![Node::new("bad name")])]).expect_err("n");
    assert!(matches!(
        err,
        FdtError::Writer {
            source: vm_fdt::Error::InvalidNodeName,
            ..
        }
    ));
    let mut n = Node::new("ok");
    n.add_property(Property::flag("bad name")).expect("prop");
    let err = build_overlay(&[Fragment::new("/", vec![n])]).expect_err("p");
    assert!(matches!(
        err,
        FdtError::Writer {
            source: vm_fdt::Error::InvalidPropertyName,
            ..
        }
    ));
}

#[test]
fn an_overlay_too_large_to_send_is_rejected_not_written() {
    let mut n = Node::new("big");
    n.add_property(Property {
        name: "blob".into(),
        value: vec![tree::Chunk::Bytes(vec![0; MAX_OVERLAY_SIZE + 1])],
    })
    .expect("prop");
    let err = build_overlay(&[Fragment::new("/", vec![n])]).expect_err("too big");
    assert!(matches!(
        err,
        FdtError::Writer {
            source: vm_fdt::Error::TotalSizeTooLarge,
            ..
        }
    ));
}

#[test]
fn fragments_list_the_paths_they_add_parents_first() {
    let mut a = Node::new("a@1");
    a.add_child(Node::new("b")).expect("child");
    let f = Fragment::new("/isa@1", vec![a, Node::new("c")]);
    assert_eq!(f.added_paths(), ["/isa@1/a@1", "/isa@1/a@1/b", "/isa@1/c"]);
}

// ---------------------------------------------------------------------------
// LiveTree checks

#[test]
fn live_tree_refuses_an_overlay_adding_an_existing_node_and_stays_unchanged() {
    let (base, layout) = tree_and_layout(&busy_config());
    let existing = virtio_mmio_node(&layout.virtio_mmio[0]).expect("node");
    let overlay = build_overlay_for_base(&base, &[Fragment::new("/", vec![existing])])
        .expect("the builder does not know the base's nodes");
    let mut live = LiveTree::from_base(&base).expect("live");
    let before = live.clone();
    let err = live
        .apply(&overlay.blob, "the overlay")
        .expect_err("exists");
    assert!(
        matches!(err, ApplyError::NodeExists { ref path, .. } if path == "/virtio_mmio@d0100000"),
        "{err}"
    );
    assert_eq!(live, before);
    // Applying the same overlay twice is the same error on the second try.
    let (small, _) = tree_and_layout(&small_config());
    let mut live = LiveTree::from_base(&small).expect("live");
    live.apply(&overlay.blob, "first").expect("first apply");
    assert!(matches!(
        live.apply(&overlay.blob, "second"),
        Err(ApplyError::NodeExists { .. })
    ));
}

#[test]
fn live_tree_refuses_an_overlay_whose_target_is_missing() {
    let (base, _) = tree_and_layout(&small_config());
    let blob = build_overlay(&[Fragment::new("/nowhere", vec![Node::new("n")])]).expect("ov");
    let mut live = LiveTree::from_base(&base).expect("live");
    let err = live.apply(&blob, "the overlay").expect_err("missing");
    assert_eq!(
        err.to_string(),
        "the overlay: fragment@0 targets /nowhere, which is not in the tree"
    );
    assert!(!live.contains("/nowhere/n"));
}

#[test]
fn live_tree_rejects_blobs_that_are_not_device_trees() {
    let (base, _) = tree_and_layout(&small_config());
    let mut live = LiveTree::from_base(&base).expect("live");
    for blob in [
        &b""[..],
        b"not a dtb",
        &[0xd0, 0x0d, 0xfe, 0xed, 0, 0, 0, 8],
    ] {
        assert!(matches!(
            live.apply(blob, "junk"),
            Err(ApplyError::Parse { .. })
        ));
    }
    assert!(LiveTree::from_dtb(b"junk", "junk").is_err());
}

#[test]
fn live_tree_matches_names_exactly_including_the_unit_address() {
    let (base, _) = tree_and_layout(&small_config());
    let live = LiveTree::from_base(&base).expect("live");
    assert!(live.contains("/isa@1/serial@3f8"));
    assert!(!live.contains("/isa/serial@3f8"));
    assert!(!live.contains("/isa@1/serial"));
    assert!(live.contains("/"));
    assert!(!live.contains("relative"));
    assert_eq!(live.phandle("/interrupt-controller@fec00000"), Some(1));
    assert_eq!(live.phandle("/isa@1"), None);
}
