//! The aarch64 nodes of the base tree: CPUs started by PSCI, the PSCI node,
//! the GICv3 every interrupt refers to, the architected timer, and the
//! console, a memory-mapped 16550. The initrd's place goes into `/chosen`
//! when the kernel is loaded ([`set_initrd`]), since only then is its size
//! known.

use super::base::{hi, lo, ns16550_mmio_node, reg_cells, state_of, t, uart_node, with_state};
use super::template::Vars;
use super::tree::{child_path, Cell, Node, Property};
use super::FdtError;
use crate::config::CellConfig;
use crate::layout::{CellLayout, PciBridgeSlot};
use crate::platform::aarch64::{
    GIC_DIST_BASE, GIC_DIST_SIZE, GIC_ITS_BASE, GIC_ITS_SIZE, GIC_PPI, GIC_REDIST_BASE,
    GIC_REDIST_SIZE_PER_CPU, TIMER_PPIS, UART_MMIO_BASE,
};
use crate::platform::UART_IRQ;

/// The GIC's label.
pub use crate::platform::aarch64::INTC_LABEL;

/// Label of the ITS node, the MSI target.
pub const ITS_LABEL: &str = "its";

/// Gives a PCI host bridge `linux,pci-domain`
/// ([`crate::platform::pci_domain`]: Linux keeps 16 bits of it), so the
/// channel's PCI messages name a bridge by a number the guest knows, and
/// `msi-map`: every requester ID to the same DeviceID of the ITS (bus
/// ranges of a cell's bridges never overlap, so DeviceIDs are distinct).
pub(super) fn finish_pci_host(node: &mut Node, slot: &PciBridgeSlot) {
    node.set_property(Property::u32s(
        "linux,pci-domain",
        &[crate::platform::pci_domain(slot.config.base)],
    ));
    node.set_property(Property::cells(
        "msi-map",
        vec![
            Cell::Num(0),
            Cell::Ref(ITS_LABEL.to_string()),
            Cell::Num(0),
            Cell::Num(0x1_0000),
        ],
    ));
}

/// PPI flags: level high.
const PPI_LEVEL_HIGH: u32 = 4;

/// Full path of the console UART node (`/serial@9000000`).
pub fn uart_path() -> String {
    child_path("/", &format!("serial@{UART_MMIO_BASE:x}"))
}

/// The MPIDR affinity KVM gives vCPU `id` (Aff0 = id % 16, Aff1 = id / 16:
/// KVM's default, 16 vCPUs per cluster as the GICv3's target lists allow).
pub fn mpidr_of(id: u32) -> u32 {
    (id % 16) | ((id / 16) << 8)
}

/// Records the initrd loaded at `start..end` in `/chosen`.
pub fn set_initrd(root: &mut Node, start: u64, end: u64) -> Result<(), FdtError> {
    let chosen = root
        .find_mut("/chosen")
        .ok_or(FdtError::MissingNode("/chosen"))?;
    chosen.set_property(Property::u32s(
        "linux,initrd-start",
        &[hi(start), lo(start)],
    ));
    chosen.set_property(Property::u32s("linux,initrd-end", &[hi(end), lo(end)]));
    Ok(())
}

/// `/cpus`, one node per vCPU with its MPIDR affinity.
pub(super) fn cpus_node(cfg: &CellConfig) -> Result<Node, FdtError> {
    let mut cpus = t::CPUS.instantiate(&Vars::new())?;
    for id in 0..u32::from(cfg.cpus.count) {
        let mpidr = mpidr_of(id);
        cpus.add_child(
            t::ARM_CPU.instantiate(
                &Vars::new()
                    .hex("unit", u64::from(mpidr))
                    .cells("mpidr", [mpidr]),
            )?,
        )?;
    }
    Ok(cpus)
}

/// The GICv3 with one redistributor frame pair per vCPU, and its ITS.
fn gic_node(cpus: u8) -> Result<Node, FdtError> {
    let redist = GIC_REDIST_SIZE_PER_CPU * u64::from(cpus);
    let mut reg = reg_cells(GIC_DIST_BASE, GIC_DIST_SIZE).to_vec();
    reg.extend(reg_cells(GIC_REDIST_BASE, redist));
    let mut gic =
        t::ARM_GIC.instantiate(&Vars::new().hex("unit", GIC_DIST_BASE).cells("reg", reg))?;
    gic.add_child(
        t::ARM_ITS.instantiate(
            &Vars::new()
                .hex("unit", GIC_ITS_BASE)
                .cells("reg", reg_cells(GIC_ITS_BASE, GIC_ITS_SIZE)),
        )?,
    )?;
    Ok(gic)
}

/// The architected timer's node.
fn timer_node() -> Result<Node, FdtError> {
    let cells: Vec<u32> = TIMER_PPIS
        .iter()
        .flat_map(|&ppi| [GIC_PPI, ppi, PPI_LEVEL_HIGH])
        .collect();
    t::ARM_TIMER.instantiate(&Vars::new().cells("interrupts", cells))
}

/// PSCI, the GIC, the timer, the console UART and the extra UARTs (all
/// memory-mapped).
pub(super) fn add_platform_nodes(
    root: &mut Node,
    cfg: &CellConfig,
    layout: &CellLayout,
) -> Result<(), FdtError> {
    root.add_child(t::ARM_PSCI.instantiate(&Vars::new())?)?;
    root.add_child(gic_node(cfg.cpus.count)?)?;
    root.add_child(timer_node()?)?;
    root.add_child(ns16550_mmio_node(UART_MMIO_BASE, UART_IRQ)?)?;
    for slot in &layout.uarts {
        let mut node = uart_node(slot)?;
        with_state(&mut node, state_of(cfg, &slot.id));
        root.add_child(node)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, LoadOptions};
    use crate::fdt::{build_base_tree, emit};
    use std::path::Path;

    /// Two vCPUs, a virtio-mmio disk and an ECAM bridge with a test device.
    const CELL: &str = r#"
name = "arm"
[cpus]
count = 2
[[memory]]
size = "256M"
[kernel]
path = "Image"
[[virtio_mmio]]
id = "rng0"
kind = "rng"
[[pci_bridge]]
id = "pci0"
kind = "ecam"
[[pci_bridge.device]]
slot = 1
kind = "test"
"#;

    fn tree() -> (Node, CellLayout) {
        let cfg = parse(
            CELL,
            None,
            Path::new("."),
            &LoadOptions { check_files: false },
        )
        .expect("config");
        let layout = CellLayout::new(&cfg).expect("layout");
        (build_base_tree(&cfg, &layout).expect("tree"), layout)
    }

    fn u32s(root: &Node, path: &str, prop: &str) -> Vec<u32> {
        root.find(path)
            .and_then(|n| n.property(prop))
            .and_then(|p| p.as_u32s())
            .unwrap_or_else(|| panic!("{path} {prop}"))
    }

    #[test]
    fn aarch64_tree_has_psci_cpus_a_gicv3_the_timer_and_the_mmio_console() {
        let (root, _) = tree();
        assert_eq!(u32s(&root, "/cpus/cpu@1", "reg"), [1]);
        let cpu = root.find("/cpus/cpu@1").expect("cpu 1");
        assert_eq!(
            cpu.property("enable-method").and_then(|p| p.as_str()),
            Some("psci")
        );
        let gic = "/interrupt-controller@8000000";
        assert_eq!(
            u32s(&root, gic, "reg"),
            [0, 0x800_0000, 0, 0x1_0000, 0, 0x810_0000, 0, 0x4_0000],
            "distributor and two vCPUs' redistributors"
        );
        assert_eq!(u32s(&root, gic, "#interrupt-cells"), [3]);
        assert_eq!(u32s(&root, "/timer", "interrupts").len(), 12);
        assert_eq!(u32s(&root, &uart_path(), "interrupts"), [0, UART_IRQ, 1]);
        let chosen = root.find("/chosen").expect("chosen");
        assert_eq!(
            chosen.property("stdout-path").and_then(|p| p.as_str()),
            Some("/serial@9000000")
        );
    }

    #[test]
    fn aarch64_devices_interrupt_through_gic_spis_and_bridges_name_their_domain() {
        let (root, layout) = tree();
        let virtio = &layout.virtio_mmio[0];
        let path = format!("/virtio_mmio@{:x}", virtio.window.base);
        assert_eq!(u32s(&root, &path, "interrupts"), [0, virtio.irq, 4]);
        let bridge = &layout.pci_bridges[0];
        let path = format!("/pci@{:x}", bridge.config.base);
        assert_eq!(
            u32s(&root, &path, "linux,pci-domain"),
            [crate::platform::pci_domain(bridge.config.base)]
        );
        let node = root.find(&path).expect("bridge");
        let msi_map = node
            .property("msi-map")
            .and_then(|p| p.as_cells())
            .expect("msi-map");
        assert!(matches!(msi_map[1], crate::fdt::Cell::Ref(l) if l == ITS_LABEL));
        assert!(root
            .find("/interrupt-controller@8000000/msi-controller@8080000")
            .is_some());
        // 4 devices (the mask keeps device % 4) x 4 pins, each <3 child
        // address, 1 pin, &gic, 2 parent address, 3 specifier> cells.
        let map = node
            .property("interrupt-map")
            .and_then(|p| p.as_cells())
            .expect("interrupt-map");
        assert_eq!(map.len(), 4 * 4 * 10);
        assert!(matches!(map[4], crate::fdt::Cell::Ref(l) if l == INTC_LABEL));
    }

    #[test]
    fn aarch64_dtb_decompiles_with_dtc_without_warnings() {
        let (mut root, _) = tree();
        set_initrd(&mut root, 0x4f00_0000, 0x4f10_0000).expect("initrd");
        let dtb = emit::to_dtb(&root).expect("dtb");
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("cell.dtb");
        std::fs::write(&file, dtb).expect("write");
        let out = std::process::Command::new("dtc")
            .args(["-I", "dtb", "-O", "dts"])
            .arg(&file)
            .output()
            .expect("dtc (apt-get install device-tree-compiler)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stderr.is_empty(), "{stderr}");
        let dts = String::from_utf8_lossy(&out.stdout);
        assert!(
            dts.contains("linux,initrd-start = <0x00 0x4f000000>;"),
            "{dts}"
        );
    }

    #[test]
    fn aarch64_mpidr_follows_kvms_sixteen_per_cluster() {
        assert_eq!(mpidr_of(0), 0);
        assert_eq!(mpidr_of(15), 15);
        assert_eq!(mpidr_of(16), 0x100);
        assert_eq!(mpidr_of(33), 0x201);
    }
}
