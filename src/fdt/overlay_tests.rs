use super::overlay::*;
use super::*;
use crate::config::*;
use crate::layout::*;

#[test]
fn scratch_dump() {
    let cfg = CellConfig {
        name: "t".into(),
        source: None,
        cpus: CpuConfig {
            count: 1,
            pin: None,
        },
        memory: vec![MemoryRegion {
            base: 0,
            size: 256 << 20,
        }],
        kernel: KernelConfig {
            path: "/k".into(),
            format: KernelFormat::BzImage,
            initrd: None,
            cmdline: "x".into(),
        },
        console: ConsoleConfig {
            output: ConsoleOutput::Stdout,
            input: ConsoleInput::None,
        },
        virtio_mmio: vec![],
        pci_bridges: vec![],
    };
    let layout = CellLayout::new(&cfg).unwrap();
    let base = build_base_tree(&cfg, &layout).unwrap();
    let slot = PciBridgeSlot {
        id: "x".into(),
        kind: PciHostKind::Ecam,
        config: Window {
            base: 0xe0000000,
            size: 1 << 20,
        },
        bus_start: 8,
        bus_end: 8,
        mmio32: Window {
            base: 0xc0000000,
            size: 1 << 24,
        },
        mmio64: None,
        intx: [6, 7, 8, 9],
    };
    let mut n = pci_host_node(&slot).unwrap();
    let mut child = Node::new("child");
    child.set_label(Some("kid".into()));
    child.add_property(Property::u32s("x", &[1])).unwrap();
    n.add_child(child).unwrap();
    n.add_property(Property::cells(
        "ref",
        vec![Cell::Num(3), Cell::Ref("kid".into())],
    ))
    .unwrap();
    let ov = build_overlay_for_base(&base, &[Fragment::new("/", vec![n])]).unwrap();
    std::fs::write("/tmp/ov.dtbo", &ov.blob).unwrap();
    std::fs::write("/tmp/base.dtb", emit::to_dtb(&base).unwrap()).unwrap();
    let mut live = LiveTree::from_base(&base).unwrap();
    println!("{:?}", live.apply(&ov.blob, "x").unwrap());
    std::fs::write("/tmp/out-dtk.dtb", live.to_dtb()).unwrap();
}
