// The base-tree tests check the x86_64 tree; fdt::aarch64 tests its own.
#![cfg(target_arch = "x86_64")]
use super::template::{self, Template, Vars};
use super::tree::{Cell, Chunk, Node, Phandles, Property};
use super::*;
use crate::config::{
    CellConfig, ConsoleConfig, ConsoleInput, ConsoleOutput, CpuConfig, KernelConfig, KernelFormat,
    MemoryRegion, PciBridgeConfig, PciHostKind, VirtioKind, VirtioMmioConfig, Window,
};
use crate::layout::CellLayout;
use crate::pci::pci_intx_pin;
use crate::platform::*;
use std::collections::BTreeMap;
use std::process::Command;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn config(
    cpus: u8,
    memory: Vec<MemoryRegion>,
    virtio_mmio: Vec<VirtioMmioConfig>,
    pci_bridges: Vec<PciBridgeConfig>,
) -> CellConfig {
    CellConfig {
        name: "test-cell".into(),
        source: None,
        cpus: CpuConfig {
            count: cpus,
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

/// 1 vCPU, 256 MiB, nothing else.
fn minimal_config() -> CellConfig {
    config(
        1,
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

/// 4 vCPUs, RAM below and above 4 GiB, two virtio-mmio devices (one fixed,
/// one allocated), an ECAM bridge with a 64-bit window and a CAM bridge.
fn full_config() -> CellConfig {
    let mut cfg = config(
        4,
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
        vec![
            VirtioMmioConfig {
                id: "rng0".into(),
                state: crate::config::DeviceState::Okay,
                kind: VirtioKind::Rng,
                base: None,
                irq: None,
                backend: Default::default(),
            },
            VirtioMmioConfig {
                id: "blk0".into(),
                state: crate::config::DeviceState::Okay,
                kind: VirtioKind::Block,
                base: Some(0xd010_5000),
                irq: Some(12),
                backend: Default::default(),
            },
        ],
        vec![
            PciBridgeConfig {
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
            },
            PciBridgeConfig {
                id: "pci1".into(),
                state: crate::config::DeviceState::Okay,
                kind: PciHostKind::Cam,
                config_base: Some(0xf000_0000),
                bus_start: 0x10,
                bus_end: 0x10,
                mmio32: Some(Window {
                    base: 0xc800_0000,
                    size: 0x100_0000,
                }),
                mmio64: None,
                devices: vec![],
            },
        ],
    );
    cfg.connectors = vec![crate::config::ConnectorConfig {
        id: "j1".into(),
        size: 1 << 20,
        irqs: 2,
    }];
    cfg
}

fn tree_and_layout(cfg: &CellConfig) -> (Node, CellLayout) {
    let layout = CellLayout::new(cfg).expect("layout");
    let tree = build_base_tree(cfg, &layout).expect("base tree");
    (tree, layout)
}

fn node<'a>(tree: &'a Node, path: &str) -> &'a Node {
    tree.find(path)
        .unwrap_or_else(|| panic!("no node {path} in the tree"))
}

fn u32s(n: &Node, prop: &str) -> Vec<u32> {
    n.property(prop)
        .unwrap_or_else(|| panic!("{} has no {prop}", n.name()))
        .as_u32s()
        .unwrap_or_else(|| panic!("{}:{prop} is not plain cells", n.name()))
}

fn string(n: &Node, prop: &str) -> String {
    n.property(prop)
        .and_then(Property::as_str)
        .unwrap_or_else(|| panic!("{}:{prop} is not a string", n.name()))
        .to_string()
}

fn reg(base: u64, size: u64) -> Vec<u32> {
    vec![
        (base >> 32) as u32,
        base as u32,
        (size >> 32) as u32,
        size as u32,
    ]
}

/// Runs `dtc -I dtb -O dts` on `dtb`; returns (exit ok, stdout, stderr).
fn dtc_decompile(dtb: &[u8]) -> (bool, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cell.dtb");
    std::fs::write(&path, dtb).expect("write dtb");
    let out = match Command::new("dtc")
        .args(["-I", "dtb", "-O", "dts"])
        .arg(&path)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "dtc is not installed; these tests need it: apt-get install device-tree-compiler"
        ),
        Err(e) => panic!("running dtc: {e}"),
    };
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Parses dtc's decompiled output with the template parser (it is the same
/// DTS subset once the `/dts-v1/;` header and the `__symbols__` node, whose
/// name the subset refuses, are gone).
fn parse_dtc_output(dts: &str) -> Node {
    let body = dts
        .strip_prefix("/dts-v1/;")
        .unwrap_or_else(|| panic!("dtc output does not start with /dts-v1/;:\n{dts}"));
    // dtc writes a string list read from a DTB as one string with `\0`s.
    let body = without_symbols(body).replace("\\0", "\", \"");
    template::parse("dtc output", &body).unwrap_or_else(|e| panic!("re-parsing dtc output: {e}"))
}

/// dtc's output without its `\t__symbols__ { ... };` block.
fn without_symbols(dts: &str) -> String {
    let Some(start) = dts.find("\t__symbols__ {") else {
        return dts.to_string();
    };
    let end = dts[start..]
        .find("\n\t};\n")
        .map(|e| start + e + "\n\t};\n".len())
        .expect("end of __symbols__");
    format!("{}{}", &dts[..start], &dts[end..])
}

/// The `__symbols__` node of dtc's output, as label → path.
fn symbols_of(dts: &str) -> Vec<(String, String)> {
    let start = dts.find("\t__symbols__ {").expect("a __symbols__ node");
    let block = &dts[start..];
    let block = &block[..block.find("\n\t};").expect("end of __symbols__")];
    block
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (label, path) = l.trim().trim_end_matches(';').split_once(" = ")?;
            Some((label.to_string(), path.trim_matches('"').to_string()))
        })
        .collect()
}

fn encode_resolved(p: &Property, phandles: &Phandles) -> Vec<u8> {
    p.encode(&mut |label, _| {
        phandles
            .get(label)
            .ok_or_else(|| FdtError::UnresolvedReference {
                path: String::new(),
                property: p.name.clone(),
                label: label.to_string(),
            })
    })
    .expect("encode")
}

/// Asserts that `theirs` (read back from the DTB) has exactly the nodes and
/// property bytes of `ours`, plus a `phandle` on each labelled node.
fn assert_same_tree(ours: &Node, phandles: &Phandles, theirs: &Node, path: &str) {
    let mut expected: BTreeMap<String, Vec<u8>> = ours
        .properties()
        .iter()
        .map(|p| (p.name.clone(), encode_resolved(p, phandles)))
        .collect();
    if let Some(ph) = ours.label().and_then(|l| phandles.get(l)) {
        expected.insert("phandle".into(), ph.to_be_bytes().to_vec());
    }
    let actual: BTreeMap<String, Vec<u8>> = theirs
        .properties()
        .iter()
        .map(|p| (p.name.clone(), encode_resolved(p, &Phandles::default())))
        .collect();
    assert_eq!(expected, actual, "properties of {path}");
    let names = |n: &Node| {
        n.children()
            .iter()
            .map(|c| c.name().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(ours), names(theirs), "children of {path}");
    for (a, b) in ours.children().iter().zip(theirs.children()) {
        let child = if path == "/" {
            format!("/{}", a.name())
        } else {
            format!("{path}/{}", a.name())
        };
        assert_same_tree(a, phandles, b, &child);
    }
}

// ---------------------------------------------------------------------------
// Base tree content

#[test]
fn root_has_address_cells_compatible_model_and_ioapic_interrupt_parent() {
    let (tree, _) = tree_and_layout(&minimal_config());
    assert_eq!(tree.name(), "/");
    assert_eq!(u32s(&tree, "#address-cells"), [2]);
    assert_eq!(u32s(&tree, "#size-cells"), [2]);
    assert_eq!(string(&tree, "compatible"), "cellvm,cell");
    assert_eq!(string(&tree, "model"), "cellvm test-cell");
    let parent = tree.property("interrupt-parent").expect("interrupt-parent");
    assert_eq!(
        parent.as_cells(),
        Some(vec![&Cell::Ref(IOAPIC_LABEL.into())])
    );
}

#[test]
fn one_cpu_node_per_vcpu_with_apic_id_as_reg() {
    for count in [1u8, 4, 17] {
        let mut cfg = minimal_config();
        cfg.cpus.count = count;
        let (tree, _) = tree_and_layout(&cfg);
        let cpus = node(&tree, "/cpus");
        assert_eq!(u32s(cpus, "#address-cells"), [1]);
        assert_eq!(u32s(cpus, "#size-cells"), [0]);
        assert_eq!(cpus.children().len(), usize::from(count));
        for id in 0..u32::from(count) {
            let cpu = node(cpus, &format!("cpu@{id:x}"));
            assert_eq!(string(cpu, "device_type"), "cpu");
            assert_eq!(u32s(cpu, "reg"), [id]);
        }
    }
}

#[test]
fn one_memory_node_per_ram_region_with_64_bit_reg() {
    let (tree, layout) = tree_and_layout(&full_config());
    let mems: Vec<&Node> = tree
        .children()
        .iter()
        .filter(|n| n.name().starts_with("memory@"))
        .collect();
    assert_eq!(mems.len(), 2);
    for (n, w) in mems.iter().zip(&layout.memory) {
        assert_eq!(n.name(), format!("memory@{:x}", w.base));
        assert_eq!(string(n, "device_type"), "memory");
        assert_eq!(u32s(n, "reg"), reg(w.base, w.size));
    }
    assert_eq!(mems[1].name(), "memory@100000000");
    assert_eq!(u32s(mems[1], "reg"), [1, 0, 0, 0x4000_0000]);
}

#[test]
fn chosen_has_bootargs_and_stdout_path_and_alias_to_the_uart() {
    let (tree, _) = tree_and_layout(&minimal_config());
    let chosen = node(&tree, "/chosen");
    assert_eq!(string(chosen, "bootargs"), "console=ttyS0 quiet");
    assert_eq!(string(chosen, "stdout-path"), uart_path());
    assert_eq!(string(node(&tree, "/aliases"), "serial0"), uart_path());
    assert!(
        tree.find(&uart_path()).is_some(),
        "{} is not in the tree",
        uart_path()
    );
}

#[test]
fn bootargs_with_quotes_backslashes_and_dollars_survive_the_template() {
    let mut cfg = minimal_config();
    cfg.kernel.cmdline = r#"console=ttyS0 init=/bin/sh -- -c "echo \"${HOME}\" \\ done""#.into();
    let (tree, layout) = tree_and_layout(&cfg);
    assert_eq!(
        string(node(&tree, "/chosen"), "bootargs"),
        cfg.kernel.cmdline
    );
    let (ok, dts, stderr) = dtc_decompile(&build_base_dtb(&cfg, &layout).expect("dtb"));
    assert!(ok && stderr.is_empty(), "dtc: {stderr}");
    let back = parse_dtc_output(&dts);
    assert_eq!(
        string(node(&back, "/chosen"), "bootargs"),
        cfg.kernel.cmdline
    );
}

#[test]
fn uart_is_an_ns16550_under_the_isa_bus_with_io_space_reg_and_edge_rising_irq() {
    let (tree, _) = tree_and_layout(&minimal_config());
    let isa = node(&tree, "/isa@1");
    assert_eq!(
        isa.name().split('@').next(),
        Some("isa"),
        "Linux matches the name isa"
    );
    assert_eq!(string(isa, "compatible"), "isa");
    assert_eq!(u32s(isa, "#address-cells"), [2]);
    assert_eq!(u32s(isa, "#size-cells"), [1]);
    assert_eq!(u32s(isa, "ranges"), [1, 0, 0, 0, 0x10000]);
    let uart = node(&tree, &uart_path());
    assert_eq!(uart.name(), "serial@3f8");
    assert_eq!(string(uart, "compatible"), "ns16550a");
    assert_eq!(u32s(uart, "reg"), [1, u32::from(UART_PORT), 8]);
    assert_eq!(u32s(uart, "interrupts"), [UART_IRQ, 3]);
    assert_eq!(u32s(uart, "clock-frequency"), [1_843_200]);
}

#[test]
fn ioapic_is_a_labelled_interrupt_controller_at_fec00000() {
    let (tree, _) = tree_and_layout(&minimal_config());
    let ioapic = node(&tree, "/interrupt-controller@fec00000");
    assert_eq!(ioapic.label(), Some(IOAPIC_LABEL));
    assert_eq!(string(ioapic, "compatible"), "intel,ce4100-ioapic");
    assert!(ioapic
        .property("interrupt-controller")
        .is_some_and(Property::is_flag));
    assert_eq!(u32s(ioapic, "#interrupt-cells"), [2]);
    assert_eq!(u32s(ioapic, "#address-cells"), [0]);
    assert_eq!(u32s(ioapic, "reg"), reg(IOAPIC_BASE, IOAPIC_SIZE));
    assert_eq!(
        tree.path_of_label(IOAPIC_LABEL).as_deref(),
        Some("/interrupt-controller@fec00000")
    );
}

#[test]
fn platform_devices_sit_at_the_layout_constants() {
    let (tree, _) = tree_and_layout(&minimal_config());
    let debug = node(&tree, &format!("/debug-exit@{DEBUG_EXIT_BASE:x}"));
    assert_eq!(string(debug, "compatible"), "cellvm,debug-exit");
    assert_eq!(u32s(debug, "reg"), reg(DEBUG_EXIT_BASE, 0x1000));
    let timer = node(&tree, &format!("/boot-timer@{BOOT_TIMER_BASE:x}"));
    assert_eq!(string(timer, "compatible"), "cellvm,boot-timer");
    assert_eq!(
        u32s(timer, "reg"),
        reg(BOOT_TIMER_BASE, PLATFORM_DEVICE_SIZE)
    );
    // The mainline pvpanic-mmio driver binds QEMU's compatible.
    let pvpanic = node(&tree, "/pvpanic@d0002000");
    assert_eq!(string(pvpanic, "compatible"), "qemu,pvpanic-mmio");
    assert_eq!(u32s(pvpanic, "reg"), reg(PVPANIC_BASE, PVPANIC_REG_SIZE));
    let channel = node(&tree, "/channel@d0010000");
    assert_eq!(string(channel, "compatible"), "cellvm,channel-v1");
    assert_eq!(u32s(channel, "reg"), reg(CHANNEL_BASE, CHANNEL_SIZE));
    assert_eq!(u32s(channel, "interrupts"), [CHANNEL_IRQ, 1]);
}

#[test]
fn virtio_mmio_nodes_match_the_layout_slots() {
    let (tree, layout) = tree_and_layout(&full_config());
    assert_eq!(layout.virtio_mmio.len(), 2);
    for slot in &layout.virtio_mmio {
        let n = node(&tree, &format!("/virtio_mmio@{:x}", slot.window.base));
        assert_eq!(string(n, "compatible"), "virtio,mmio");
        assert_eq!(u32s(n, "reg"), reg(slot.window.base, slot.window.size));
        // Level high: the pin may be shared with other devices.
        assert_eq!(u32s(n, "interrupts"), [slot.irq, 1]);
        assert!(n.property("dma-coherent").is_some_and(Property::is_flag));
    }
    // The fixed one keeps its base and pin.
    let blk = node(&tree, "/virtio_mmio@d0105000");
    assert_eq!(u32s(blk, "interrupts"), [12, 1]);
}

#[test]
fn pci_host_nodes_match_the_layout_slots() {
    let (tree, layout) = tree_and_layout(&full_config());
    assert_eq!(layout.pci_bridges.len(), 2);
    for slot in &layout.pci_bridges {
        let n = node(&tree, &format!("/pci@{:x}", slot.config.base));
        let compatible = match slot.kind {
            PciHostKind::Ecam => "pci-host-ecam-generic",
            PciHostKind::Cam => "pci-host-cam-generic",
        };
        assert_eq!(string(n, "compatible"), compatible);
        assert_eq!(string(n, "device_type"), "pci");
        assert_eq!(u32s(n, "#address-cells"), [3]);
        assert_eq!(u32s(n, "#size-cells"), [2]);
        assert_eq!(u32s(n, "#interrupt-cells"), [1]);
        assert_eq!(u32s(n, "reg"), reg(slot.config.base, slot.config.size));
        assert_eq!(
            u32s(n, "bus-range"),
            [u32::from(slot.bus_start), u32::from(slot.bus_end)]
        );
        let m32 = slot.mmio32;
        let mut ranges = vec![
            0x0200_0000,
            0,
            m32.base as u32,
            0,
            m32.base as u32,
            0,
            m32.size as u32,
        ];
        if let Some(m64) = slot.mmio64 {
            let c = |v: u64| [(v >> 32) as u32, v as u32];
            ranges.push(0x4300_0000);
            ranges.extend(c(m64.base));
            ranges.extend(c(m64.base));
            ranges.extend(c(m64.size));
        }
        assert_eq!(u32s(n, "ranges"), ranges, "ranges of {}", n.name());
        assert_eq!(u32s(n, "interrupt-map-mask"), [0x1800, 0, 0, 7]);
        // Every requester ID maps to the x86 MSI target (MSI-X allowed).
        let msi: Vec<_> = n
            .references()
            .into_iter()
            .filter(|r| r.label == MSI_LABEL)
            .collect();
        assert_eq!(msi.len(), 1, "msi-map of {}", n.name());
        assert_eq!((msi[0].property.as_str(), msi[0].offset), ("msi-map", 4));
    }
    // The ECAM bridge got an allocated 64-bit window, the CAM one has none.
    let ecam = &layout.pci_bridges[0];
    assert!(ecam.mmio64.is_some_and(|w| w.base >= PCI_MMIO64_POOL.0));
    let ecam_ranges = u32s(
        node(&tree, &format!("/pci@{:x}", ecam.config.base)),
        "ranges",
    );
    assert_eq!(ecam_ranges.len(), 14);
    assert_eq!(u32s(node(&tree, "/pci@f0000000"), "ranges").len(), 7);
}

/// `(device, pin, ioapic pin)` triples from a bridge's interrupt-map,
/// checking every entry's shape on the way.
fn interrupt_map_entries(n: &Node) -> Vec<(u32, u32, u32)> {
    let cells = n
        .property("interrupt-map")
        .and_then(Property::as_cells)
        .expect("interrupt-map cells");
    assert_eq!(cells.len(), 4 * 4 * 7);
    cells
        .chunks(7)
        .map(|e| {
            let num = |c: &Cell| match c {
                Cell::Num(v) => *v,
                Cell::Ref(l) => panic!("unexpected reference &{l}"),
            };
            assert_eq!(e[4], &Cell::Ref(IOAPIC_LABEL.into()), "interrupt parent");
            assert_eq!((num(e[1]), num(e[2])), (0, 0), "upper address cells");
            assert_eq!(num(e[6]), 1, "level-high");
            (num(e[0]) >> 11, num(e[3]), num(e[5]))
        })
        .collect()
}

#[test]
fn pci_interrupt_map_swizzles_each_device_pin_over_the_bridge_pins() {
    let (tree, layout) = tree_and_layout(&full_config());
    for slot in &layout.pci_bridges {
        let entries = interrupt_map_entries(node(&tree, &format!("/pci@{:x}", slot.config.base)));
        let intx = slot.intx;
        // Devices 0..3 and pins INTA..INTD appear once each, in order.
        let keys: Vec<(u32, u32)> = entries.iter().map(|&(d, p, _)| (d, p)).collect();
        let all: Vec<(u32, u32)> = (0..4).flat_map(|d| (1..=4).map(move |p| (d, p))).collect();
        assert_eq!(keys, all);
        // What the guest does: mask the device number (interrupt-map-mask
        // 0x1800 keeps its two low bits), then find the entry.
        let lookup = |d: u32, p: u32| {
            entries
                .iter()
                .find(|&&(ed, ep, _)| (ed, ep) == (d & 3, p))
                .map(|&(_, _, irq)| irq)
                .expect("entry")
        };
        // (device + pin - 1) % 4, pin 1 = INTA.
        assert_eq!(lookup(0, 1), intx[0]);
        assert_eq!(lookup(0, 4), intx[3]);
        assert_eq!(lookup(1, 1), intx[1]);
        assert_eq!(lookup(1, 4), intx[0]);
        assert_eq!(lookup(2, 3), intx[0]);
        assert_eq!(lookup(5, 2), intx[2]);
        assert_eq!(lookup(31, 4), intx[2]);
        for d in 0..32 {
            for p in 1..=4 {
                assert_eq!(
                    lookup(d, p),
                    pci_intx_pin(&intx, d, p),
                    "device {d} pin {p}"
                );
            }
        }
    }
    // The two bridges use disjoint IOAPIC pins.
    let a = layout.pci_bridges[0].intx;
    let b = layout.pci_bridges[1].intx;
    assert!(a.iter().all(|p| !b.contains(p)));
}

#[test]
fn every_reference_in_the_base_tree_is_to_the_ioapic_or_the_msi_target() {
    let (tree, _) = tree_and_layout(&full_config());
    let refs = tree.references();
    // root interrupt-parent + 16 entries and one msi-map per bridge.
    assert_eq!(refs.len(), 1 + 2 * 17);
    let msi: Vec<_> = refs.iter().filter(|r| r.label == MSI_LABEL).collect();
    assert_eq!(msi.len(), 2);
    assert!(msi.iter().all(|r| r.property == "msi-map"));
    let refs: Vec<_> = refs.iter().filter(|r| r.label != MSI_LABEL).collect();
    assert!(refs.iter().all(|r| r.label == IOAPIC_LABEL));
    assert!(refs
        .iter()
        .any(|r| r.path == "/" && r.property == "interrupt-parent" && r.offset == 0));
    // interrupt-map entries are 7 cells; the parent phandle is cell 4.
    let pci = refs.iter().filter(|r| r.property == "interrupt-map");
    assert!(pci.clone().all(|r| r.offset % 28 == 16));
    assert_eq!(pci.count(), 32);
}

#[test]
fn dtb_interrupt_parent_and_interrupt_maps_carry_the_ioapic_phandle() {
    let cfg = full_config();
    let layout = CellLayout::new(&cfg).expect("layout");
    let (ok, dts, stderr) = dtc_decompile(&build_base_dtb(&cfg, &layout).expect("dtb"));
    assert!(ok, "dtc failed: {stderr}");
    let back = parse_dtc_output(&dts);
    let ioapic_phandle = u32s(node(&back, "/interrupt-controller@fec00000"), "phandle");
    assert_eq!(ioapic_phandle.len(), 1);
    assert_eq!(u32s(&back, "interrupt-parent"), ioapic_phandle);
    let mut maps = 0;
    back.walk(&mut |path, n| {
        if n.property("interrupts").is_some() || n.property("interrupt-parent").is_some() {
            // No node overrides the root's interrupt parent.
            assert!(
                path == "/" || n.property("interrupt-parent").is_none(),
                "{path}"
            );
        }
        if n.property("interrupt-map").is_some() {
            maps += 1;
            let cells = u32s(n, "interrupt-map");
            assert!(cells.chunks(7).all(|e| e[4] == ioapic_phandle[0]), "{path}");
        }
    });
    assert_eq!(maps, 2);
}

#[test]
fn dtb_reads_back_through_dtc_as_the_same_tree() {
    for cfg in [minimal_config(), full_config()] {
        let (tree, layout) = tree_and_layout(&cfg);
        let dtb = build_base_dtb(&cfg, &layout).expect("dtb");
        let (ok, dts, stderr) = dtc_decompile(&dtb);
        assert!(ok, "dtc failed: {stderr}");
        let phandles = Phandles::assign(&tree).expect("phandles");
        assert_eq!(phandles.get(IOAPIC_LABEL), Some(1));
        assert_same_tree(&tree, &phandles, &parse_dtc_output(&dts), "/");
    }
}

#[test]
fn dtb_symbols_name_the_path_of_every_label() {
    let cfg = full_config();
    let (tree, layout) = tree_and_layout(&cfg);
    let dtb = build_base_dtb(&cfg, &layout).expect("dtb");
    let (ok, dts, stderr) = dtc_decompile(&dtb);
    assert!(ok, "dtc failed: {stderr}");
    let mut symbols = symbols_of(&dts);
    symbols.sort();
    let phandles = Phandles::assign(&tree).expect("phandles");
    let mut expected: Vec<(String, String)> = phandles
        .iter()
        .map(|(l, _)| (l.to_string(), tree.path_of_label(l).expect("path")))
        .collect();
    expected.sort();
    assert_eq!(symbols, expected);
    assert!(symbols.contains(&("j1".to_string(), "/connector-bus@d1000000".to_string())));
}

#[test]
fn a_connector_is_a_labelled_simple_bus_over_its_window_and_holds_its_pins() {
    let (tree, layout) = tree_and_layout(&full_config());
    let slot = layout.connector("j1").expect("connector placed");
    assert_eq!(slot.window.base, 0xd100_0000);
    assert_eq!(slot.window.size, 1 << 20);
    let n = node(&tree, "/connector-bus@d1000000");
    assert_eq!(n.label(), Some("j1"));
    assert_eq!(
        n.property("compatible").and_then(Property::as_strings),
        Some(vec!["cellvm,connector", "simple-bus"])
    );
    assert_eq!(u32s(n, "reg"), [0, 0xd100_0000, 0, 0x10_0000]);
    assert!(n.property("ranges").is_some_and(|p| p.value.is_empty()));
    for pin in &slot.irqs {
        assert_eq!(
            layout.irqs.owner(*pin).map(ToString::to_string),
            Some("connector j1".to_string())
        );
    }
}

fn assert_dtc_has_no_warnings(cfg: &CellConfig) {
    let layout = CellLayout::new(cfg).expect("layout");
    let dtb = build_base_dtb(cfg, &layout).expect("dtb");
    let (ok, dts, stderr) = dtc_decompile(&dtb);
    assert!(ok, "dtc failed: {stderr}");
    assert!(
        stderr.trim().is_empty(),
        "dtc -I dtb -O dts printed warnings:\n{stderr}\n--- output ---\n{dts}"
    );
}

#[test]
fn dtc_decompiles_the_minimal_one_vcpu_dtb_without_warnings() {
    assert_dtc_has_no_warnings(&minimal_config());
}

#[test]
fn dtc_decompiles_the_full_dtb_with_virtio_and_pci_bridges_without_warnings() {
    assert_dtc_has_no_warnings(&full_config());
}

#[test]
fn device_nodes_are_self_contained_for_reuse_in_overlays() {
    let (_, layout) = tree_and_layout(&full_config());
    let virtio = virtio_mmio_node(&layout.virtio_mmio[0]).expect("virtio node");
    assert!(virtio.references().is_empty());
    let pci = pci_host_node(&layout.pci_bridges[0]).expect("pci node");
    let refs = pci.references();
    assert_eq!(refs.len(), 17);
    assert!(refs
        .iter()
        .all(|r| r.path == "/" && (r.label == IOAPIC_LABEL || r.label == MSI_LABEL)));
    // On its own (no ioapic label in the same tree) it cannot be emitted as a
    // base tree: the reference must be resolved by the tree it goes into.
    let mut root = Node::new("/");
    root.add_child(pci).expect("add");
    assert_eq!(
        emit::to_dtb(&root),
        Err(FdtError::UnresolvedReference {
            path: format!("/pci@{:x}", layout.pci_bridges[0].config.base),
            property: "interrupt-map".into(),
            label: IOAPIC_LABEL.into(),
        })
    );
}

// ---------------------------------------------------------------------------
// Tree and emitter

#[test]
fn emit_rejects_a_node_that_is_not_a_root() {
    let err = emit::to_dtb(&Node::new("cpus")).expect_err("not a root");
    assert_eq!(err, FdtError::NotRoot("cpus".into()));
    assert_eq!(
        err.to_string(),
        "cannot emit node cpus as a device tree: it is not a root node (/)"
    );
}

#[test]
fn emit_rejects_a_label_used_twice() {
    let root = template::parse("t", "/ { a: x { }; b { a: y { }; }; };").expect("parse");
    assert_eq!(
        emit::to_dtb(&root),
        Err(FdtError::DuplicateLabel {
            label: "a".into(),
            first: "/x".into(),
            second: "/b/y".into(),
        })
    );
}

#[test]
fn emit_rejects_explicit_phandles() {
    let root = template::parse("t", "/ { x { phandle = <1>; }; };").expect("parse");
    let err = emit::to_dtb(&root).expect_err("explicit phandle");
    assert_eq!(
        err.to_string(),
        "/x: explicit phandle property (phandles are assigned from labels)"
    );
}

#[test]
fn emit_reports_vm_fdt_errors_with_the_node_path() {
    let mut root = Node::new("/");
    root.add_child(Node::new("_bad")).expect("add");
    match emit::to_dtb(&root) {
        Err(FdtError::Writer { path, source }) => {
            assert_eq!(path, "/_bad");
            assert_eq!(source, vm_fdt::Error::InvalidNodeName);
        }
        other => panic!("expected a writer error, got {other:?}"),
    }
}

#[test]
fn phandles_are_numbered_from_one_in_tree_order() {
    let root = template::parse(
        "t",
        "/ { p: a { c: b { }; }; q: d { }; e { x = <&q &p &c>; }; };",
    )
    .expect("parse");
    let ph = Phandles::assign(&root).expect("assign");
    assert_eq!(
        ph.iter().collect::<Vec<_>>(),
        [("c", 2), ("p", 1), ("q", 3)]
    );
    let dtb = emit::to_dtb(&root).expect("dtb");
    let (ok, dts, stderr) = dtc_decompile(&dtb);
    assert!(ok, "{stderr}");
    assert_eq!(u32s(node(&parse_dtc_output(&dts), "/e"), "x"), [3, 1, 2]);
}

#[test]
fn adding_a_duplicate_child_or_property_fails() {
    let mut n = Node::new("x");
    n.add_child(Node::new("a")).expect("first");
    assert_eq!(
        n.add_child(Node::new("a")),
        Err(FdtError::DuplicateNode {
            parent: "x".into(),
            name: "a".into()
        })
    );
    n.add_property(Property::flag("p")).expect("first");
    assert!(matches!(
        n.add_property(Property::u32s("p", &[1])),
        Err(FdtError::DuplicateProperty { .. })
    ));
    n.set_property(Property::u32s("p", &[1]));
    assert_eq!(n.property("p").and_then(Property::as_u32s), Some(vec![1]));
}

// ---------------------------------------------------------------------------
// Template parser: good inputs

#[test]
fn every_compiled_in_template_instantiates_in_the_base_tree() {
    // Each template is used by the full configuration; a template that does
    // not parse or has a stray placeholder fails here with its name.
    let (tree, _) = tree_and_layout(&full_config());
    let mut kinds = std::collections::BTreeSet::new();
    tree.walk(&mut |_, n| {
        kinds.insert(n.name().split('@').next().unwrap_or_default().to_string());
    });
    let expected = [
        "/",
        "chosen",
        "aliases",
        "cpus",
        "cpu",
        "memory",
        "interrupt-controller",
        "msi-controller",
        "isa",
        "serial",
        "debug-exit",
        "boot-timer",
        "pvpanic",
        "channel",
        "virtio_mmio",
        "pci",
        "connector-bus",
    ];
    // Every template but the memory-mapped UART's (add-on boards only,
    // checked in attach::addon_tests) and the five aarch64 ones
    // (`arm_templates_instantiate_with_their_placeholders`) is in the full
    // tree.
    assert_eq!(expected.len(), templates::ALL.len() - 6);
    assert_eq!(kinds, expected.iter().map(|s| s.to_string()).collect());
    for t in templates::ALL {
        assert!(
            t.text().contains("Template syntax"),
            "{} lacks its header",
            t.name()
        );
    }
}

#[test]
fn template_parses_every_value_kind_labels_children_and_comments() {
    let text = r#"
// line comment with ${not_a_placeholder}
/* block
   comment */
lbl: node@1f {
    flag;
    cells = <1 0x2 0XfF 4294967295 &other>;
    str = "a\"b\\c\n\t\x41 'q' \' é";
    list = "one", "two";
    mixed = "s", <7>, [00 11 2233];
    empty-cells = <>;
    #size-cells = <0>; // trailing comment
    child@0 { x = <0>; };
    other: sub_node { };
};
"#;
    let n = template::parse("good.dts", text).expect("parse");
    assert_eq!(n.name(), "node@1f");
    assert_eq!(n.label(), Some("lbl"));
    assert!(n.property("flag").is_some_and(Property::is_flag));
    assert_eq!(
        n.property("cells").and_then(Property::as_cells),
        Some(vec![
            &Cell::Num(1),
            &Cell::Num(2),
            &Cell::Num(0xff),
            &Cell::Num(u32::MAX),
            &Cell::Ref("other".into())
        ])
    );
    assert_eq!(string(&n, "str"), "a\"b\\c\n\tA 'q' ' é");
    assert_eq!(
        n.property("list").and_then(Property::as_strings),
        Some(vec!["one", "two"])
    );
    assert_eq!(
        n.property("mixed").map(|p| p.value.clone()),
        Some(vec![
            Chunk::Str("s".into()),
            Chunk::Cells(vec![Cell::Num(7)]),
            Chunk::Bytes(vec![0, 0x11, 0x22, 0x33])
        ])
    );
    assert_eq!(u32s(&n, "empty-cells"), Vec::<u32>::new());
    assert_eq!(u32s(&n, "#size-cells"), [0]);
    assert_eq!(u32s(node(&n, "/child@0"), "x"), [0]);
    assert_eq!(node(&n, "/sub_node").label(), Some("other"));
    let names: Vec<&str> = n.properties().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "flag",
            "cells",
            "str",
            "list",
            "mixed",
            "empty-cells",
            "#size-cells"
        ]
    );
}

#[test]
fn template_accepts_a_root_node() {
    let n = template::parse("root.dts", "/ { a = <1>; b { }; };").expect("parse");
    assert_eq!(n.name(), "/");
    assert!(n.find("/b").is_some());
}

#[test]
fn placeholders_expand_every_value_kind() {
    let tpl = Template::new(
        "p.dts",
        "dev@${unit} { reg = <${reg}>; c = ${c}; l = ${l}; ${extra} x = <1 ${refs} 2>; e = <${none}>; };",
    );
    let vars = Vars::new()
        .hex("unit", 0xd000_0000)
        .cells("reg", [0u32, 0xd000_0000, 0, 0x1000])
        .string("c", "vendor,dev")
        .strings("l", &["a", "b\"c"])
        .raw("extra", "flag; more = <5>;")
        .cells("refs", [Cell::Ref("ioapic".into()), Cell::Num(9)])
        .cells("none", Vec::<u32>::new());
    let n = tpl.instantiate(&vars).expect("instantiate");
    assert_eq!(n.name(), "dev@d0000000");
    assert_eq!(u32s(&n, "reg"), [0, 0xd000_0000, 0, 0x1000]);
    assert_eq!(string(&n, "c"), "vendor,dev");
    assert_eq!(
        n.property("l").and_then(Property::as_strings),
        Some(vec!["a", "b\"c"])
    );
    assert!(n.property("flag").is_some_and(Property::is_flag));
    assert_eq!(u32s(&n, "more"), [5]);
    assert_eq!(
        n.property("x").and_then(Property::as_cells),
        Some(vec![
            &Cell::Num(1),
            &Cell::Ref("ioapic".into()),
            &Cell::Num(9),
            &Cell::Num(2)
        ])
    );
    assert_eq!(u32s(&n, "e"), Vec::<u32>::new());
}

#[test]
fn placeholders_inside_strings_and_comments_are_left_alone() {
    let text = "n { /* ${a} */ s = \"${a} \\\" ${a}\"; // ${a}\n v = <${a}>; };";
    let n = template::instantiate("s.dts", text, &Vars::new().cells("a", [3u32])).expect("parse");
    assert_eq!(string(&n, "s"), "${a} \" ${a}");
    assert_eq!(u32s(&n, "v"), [3]);
}

// ---------------------------------------------------------------------------
// Template parser: errors

fn syntax_error(text: &str) -> (usize, Option<String>, SyntaxError) {
    match template::parse("t.dts", text) {
        Err(FdtError::Syntax {
            template,
            line,
            placeholder,
            kind,
            ..
        }) => {
            assert_eq!(template, "t.dts");
            (line, placeholder, kind)
        }
        other => panic!("expected a syntax error for {text:?}, got {other:?}"),
    }
}

#[test]
fn missing_placeholder_value_names_template_placeholder_and_line() {
    let err = template::instantiate(
        "t.dts",
        "n {\n  a = <1>;\n  reg = <${reg}>;\n};",
        &Vars::new(),
    )
    .expect_err("missing");
    assert_eq!(
        err,
        FdtError::MissingPlaceholder {
            template: "t.dts".into(),
            name: "reg".into(),
            line: 3
        }
    );
    assert_eq!(
        err.to_string(),
        "template t.dts, line 3: no value for placeholder ${reg}"
    );
}

#[test]
fn value_for_an_unknown_placeholder_names_template_and_placeholder() {
    let vars = Vars::new().cells("a", [1u32]).cells("typo", [2u32]);
    let err = template::instantiate("t.dts", "n { a = <${a}>; };", &vars).expect_err("unknown");
    assert_eq!(
        err,
        FdtError::UnknownPlaceholder {
            template: "t.dts".into(),
            name: "typo".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "template t.dts: value given for unknown placeholder ${typo}"
    );
}

#[test]
fn malformed_placeholders_are_rejected_with_their_line() {
    for text in [
        "n {\n a = <${1x}>; };",
        "n {\n a = <${}>; };",
        "n {\n a = <${a>; };",
        "n {\n a = <${",
    ] {
        let (line, _, kind) = syntax_error(text);
        assert_eq!((line, kind), (2, SyntaxError::BadPlaceholder), "{text:?}");
    }
}

#[test]
fn syntax_errors_carry_the_template_line_and_the_problem() {
    use SyntaxError as E;
    let cases: Vec<(&str, usize, SyntaxError)> = vec![
        ("n {\n a = <1>;\n", 3, E::UnexpectedEnd("'}'")),
        (
            "n {\n a = <1>\n};",
            3,
            E::Unexpected {
                found: '}',
                expected: "',' or ';'",
            },
        ),
        ("n { };\n\nm { };", 3, E::TrailingInput('m')),
        ("n { }", 1, E::UnexpectedEnd("';' after '}'")),
        ("\n/* open", 2, E::UnterminatedComment),
        ("n {\n s = \"abc;\n};", 2, E::UnterminatedString),
        ("n { s = \"\\q\"; };", 1, E::BadEscape("q".into())),
        ("n { s = \"\\x\"; };", 1, E::BadEscape("x".into())),
        ("n { s = \"\\xff\"; };", 1, E::BadEscape("xff".into())),
        ("n { s = \"\\0\"; };", 1, E::NulInString),
        ("n { s = \"\\x00\"; };", 1, E::NulInString),
        ("n { a = <0x>; };", 1, E::BadNumber("0x".into())),
        ("n { a = <12ab>; };", 1, E::BadNumber("12ab".into())),
        ("n { a = <010>; };", 1, E::BadNumber("010".into())),
        (
            "n { a = <4294967296>; };",
            1,
            E::NumberTooLarge("4294967296".into()),
        ),
        (
            "n { a = <0x100000000>; };",
            1,
            E::NumberTooLarge("0x100000000".into()),
        ),
        ("n { a = [012]; };", 1, E::BadBytes("012".into())),
        ("n { a = [zz]; };", 1, E::BadBytes("zz".into())),
        ("9n { };", 1, E::BadNodeName("9n".into())),
        ("n@ { };", 1, E::BadNodeName("n@".into())),
        ("n { x@1 = <1>; };", 1, E::BadPropertyName("x@1".into())),
        ("n {\n\n 1abc: c { }; };", 3, E::BadLabel("1abc".into())),
        ("n { a = <&9x>; };", 1, E::BadLabel("9x".into())),
        ("n { a; a = <1>; };", 1, E::DuplicateProperty("a".into())),
        ("n { c { }; c { }; };", 1, E::DuplicateNode("c".into())),
        (
            "n { a = /bits/ 64 <1>; };",
            1,
            E::Unsupported("/bits/ and other directives"),
        ),
        ("n { a = <(1 + 2)>; };", 1, E::Unsupported("an expression")),
        (
            "n { a = <'a'>; };",
            1,
            E::Unsupported("a character literal"),
        ),
        (
            "n { a = <&{/x}>; };",
            1,
            E::Unsupported("a path reference &{...}"),
        ),
        (
            "n { a = &x; };",
            1,
            E::Unsupported("a reference outside < > (a path reference)"),
        ),
        (
            "n { a = <&>; };",
            1,
            E::Unexpected {
                found: '>',
                expected: "a label after '&'",
            },
        ),
        (
            "n { a = 1; };",
            1,
            E::Unexpected {
                found: '1',
                expected: "'<', '\"' or '['",
            },
        ),
        (
            "n { a = <x>; };",
            1,
            E::Unexpected {
                found: 'x',
                expected: "a number, '&label' or '>'",
            },
        ),
        (
            "n { = <1>; };",
            1,
            E::Unexpected {
                found: '=',
                expected: "a property name, a node name or '}'",
            },
        ),
        (
            "n { a b; };",
            1,
            E::Unexpected {
                found: 'b',
                expected: "'=', ';', '{' or ':'",
            },
        ),
        (
            "{ };",
            1,
            E::Unexpected {
                found: '{',
                expected: "a node name or '/'",
            },
        ),
        ("", 1, E::UnexpectedEnd("a node name or '/'")),
        (
            "n { é; };",
            1,
            E::Unexpected {
                found: 'é',
                expected: "a property name, a node name or '}'",
            },
        ),
    ];
    for (text, line, kind) in cases {
        assert_eq!(syntax_error(text), (line, None, kind), "{text:?}");
    }
}

#[test]
fn nesting_deeper_than_the_limit_is_an_error_not_a_stack_overflow() {
    let ok = format!(
        "{}{}",
        "a { ".repeat(template::MAX_DEPTH),
        "}; ".repeat(template::MAX_DEPTH)
    );
    assert!(template::parse("t.dts", &ok).is_ok());
    let deep = format!("{}{}", "a { ".repeat(100_000), "}; ".repeat(100_000));
    let (_, _, kind) = syntax_error(&deep);
    assert_eq!(kind, SyntaxError::TooDeep(template::MAX_DEPTH));
}

#[test]
fn syntax_error_messages_name_template_line_and_placeholder() {
    let vars = Vars::new().raw("bad", "0xg");
    let err = template::instantiate("t.dts", "n {\n  a = <${bad}>;\n};", &vars).expect_err("bad");
    assert_eq!(
        err.to_string(),
        "template t.dts, line 2 (in the value of ${bad}): invalid number \"0xg\" (use decimal or 0x-prefixed hexadecimal)"
    );
    let err = template::parse("t.dts", "n {\n\n  a = <1>\n};").expect_err("missing ;");
    assert_eq!(
        err.to_string(),
        "template t.dts, line 4: unexpected '}', expected ',' or ';'"
    );
}

#[test]
fn error_lines_count_template_lines_even_after_multi_line_values() {
    let vars = Vars::new().raw("props", "a = <1>;\n\n\nb = <2>;");
    let text = "n {\n  ${props}\n  c = <3>;\n  d = <x>;\n};";
    match template::instantiate("t.dts", text, &vars) {
        Err(FdtError::Syntax {
            line, placeholder, ..
        }) => {
            assert_eq!((line, placeholder), (4, None));
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn string_values_cannot_break_out_of_their_literal() {
    let vars = Vars::new().string("s", "x\"; evil = <1>; y = \"\\");
    let n = template::instantiate("t.dts", "n { s = ${s}; };", &vars).expect("parse");
    assert_eq!(string(&n, "s"), "x\"; evil = <1>; y = \"\\");
    assert!(n.property("evil").is_none());
    let err = template::instantiate(
        "t.dts",
        "n { s = ${s}; };",
        &Vars::new().string("s", "a\0b"),
    )
    .expect_err("NUL");
    assert!(matches!(
        err,
        FdtError::Syntax { placeholder: Some(ref p), kind: SyntaxError::NulInString, .. } if p == "s"
    ));
}

// ---------------------------------------------------------------------------
// Template parser: robustness

/// xorshift64*: a fixed-seed generator so the fuzz inputs are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const FUZZ_SEED_TEXT: &str = r#"// c
lbl: node@1f { /* b */
    flag; cells = <1 0x2 &lbl ${a}>; s = "a\"\x41", ${b};
    bytes = [00 1122]; child@0 { x = <0>; }; other: sub { };
};"#;

#[test]
fn parser_never_panics_on_pseudo_random_or_truncated_input() {
    let alphabet: Vec<char> = "abz09xX@,._+-#?/*{}<>[];:=&\"\\$' \n\t()é€\u{0}"
        .chars()
        .collect();
    let seeds: Vec<Vec<char>> = std::iter::once(FUZZ_SEED_TEXT)
        .chain(templates::ALL.iter().map(|t| t.text()))
        .map(|s| s.chars().collect())
        .collect();
    let mut inputs: Vec<String> = Vec::new();
    // Every truncation of the sample.
    let sample: Vec<char> = FUZZ_SEED_TEXT.chars().collect();
    for end in 0..=sample.len() {
        inputs.push(sample[..end].iter().collect());
    }
    let mut rng = Rng(0x5eed_cafe_f00d_1234);
    // Mutations of the sample and the real templates.
    for _ in 0..600 {
        let mut s = seeds[rng.below(seeds.len())].clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(s.len() + 1);
            match rng.below(4) {
                0 if !s.is_empty() => {
                    let end = (at + 1 + rng.below(8)).min(s.len());
                    s.drain(at.min(end)..end);
                }
                1 => {
                    for _ in 0..1 + rng.below(4) {
                        s.insert(at.min(s.len()), alphabet[rng.below(alphabet.len())]);
                    }
                }
                2 if at < s.len() => s[at] = alphabet[rng.below(alphabet.len())],
                _ => s.truncate(at),
            }
        }
        inputs.push(s.into_iter().collect());
    }
    // Pure noise.
    for _ in 0..300 {
        let len = rng.below(64);
        inputs.push(
            (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect(),
        );
    }
    assert!(inputs.len() >= 1000);

    let vars = Vars::new()
        .cells("a", [7u32])
        .string("b", "x")
        .hex("unit", 0x10)
        .cells("reg", [1u32, 2, 3, 4]);
    let mut parsed = 0;
    for input in &inputs {
        let outcome = std::panic::catch_unwind(|| {
            let plain = template::parse("fuzz", input);
            let with_vars = template::instantiate("fuzz", input, &vars);
            let rendered = [&plain, &with_vars].map(|r| match r {
                Ok(_) => true,
                Err(e) => {
                    // Every error renders a message.
                    assert!(!e.to_string().is_empty());
                    false
                }
            });
            rendered.iter().any(|&ok| ok)
        });
        match outcome {
            Ok(ok) => parsed += usize::from(ok),
            Err(_) => panic!("the template parser panicked on {input:?}"),
        }
    }
    // The untruncated sample (at least) parses.
    assert!(parsed >= 1);
}

#[test]
fn reserved_and_disabled_devices_carry_their_status_and_okay_ones_none() {
    let mut cfg = full_config();
    cfg.virtio_mmio[0].state = crate::config::DeviceState::Reserved;
    cfg.pci_bridges[0].state = crate::config::DeviceState::Disabled;
    let (tree, layout) = tree_and_layout(&cfg);
    let status = |path: String| {
        node(&tree, &path)
            .property("status")
            .map(|_| string(node(&tree, &path), "status"))
    };
    let v = &layout.virtio_mmio;
    assert_eq!(
        status(format!("/virtio_mmio@{:x}", v[0].window.base)),
        Some("reserved".to_string())
    );
    assert_eq!(status(format!("/virtio_mmio@{:x}", v[1].window.base)), None);
    let b = &layout.pci_bridges[0];
    assert_eq!(
        status(format!("/pci@{:x}", b.config.base)),
        Some("disabled".to_string())
    );
}

#[test]
fn arm_templates_instantiate_with_their_placeholders() {
    use crate::fdt::template::Vars;
    let cpu = templates::ARM_CPU
        .instantiate(&Vars::new().hex("unit", 0x101).cells("mpidr", [0x101]))
        .unwrap();
    assert_eq!(cpu.name(), "cpu@101");
    assert_eq!(
        cpu.property("enable-method").and_then(|p| p.as_str()),
        Some("psci")
    );
    let gic = templates::ARM_GIC
        .instantiate(&Vars::new().hex("unit", 0x800_0000).cells(
            "reg",
            [0, 0x800_0000, 0, 0x1_0000, 0, 0x810_0000, 0, 0x2_0000],
        ))
        .unwrap();
    assert_eq!(gic.label(), Some("gic"));
    let timer = templates::ARM_TIMER
        .instantiate(&Vars::new().cells("interrupts", [1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4]))
        .unwrap();
    assert_eq!(
        timer
            .property("interrupts")
            .and_then(|p| p.as_u32s())
            .map(|v| v.len()),
        Some(12)
    );
    let its = templates::ARM_ITS
        .instantiate(
            &Vars::new()
                .hex("unit", 0x808_0000)
                .cells("reg", [0, 0x808_0000, 0, 0x2_0000]),
        )
        .unwrap();
    assert_eq!(its.label(), Some("its"));
    let psci = templates::ARM_PSCI.instantiate(&Vars::new()).unwrap();
    assert_eq!(
        psci.property("method").and_then(|p| p.as_str()),
        Some("hvc")
    );
}
