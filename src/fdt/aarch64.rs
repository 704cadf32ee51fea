//! The aarch64 nodes of the base tree: CPUs started by PSCI, the PSCI node,
//! the GICv3 every interrupt refers to, the architected timer, and the
//! console, a memory-mapped 16550. The initrd's place goes into `/chosen`
//! when the kernel is loaded ([`set_initrd`]), since only then is its size
//! known.

use super::base::{hi, lo, ns16550_mmio_node, reg_cells, state_of, t, uart_node, with_state};
use super::template::Vars;
use super::tree::{child_path, Node, Property};
use super::FdtError;
use crate::config::CellConfig;
use crate::layout::{CellLayout, PciBridgeSlot};
use crate::platform::aarch64::{
    GIC_DIST_BASE, GIC_DIST_SIZE, GIC_PPI, GIC_REDIST_BASE, GIC_REDIST_SIZE_PER_CPU, TIMER_PPIS,
    UART_MMIO_BASE,
};
use crate::platform::UART_IRQ;

/// The GIC's label.
pub use crate::platform::aarch64::INTC_LABEL;

/// Gives a PCI host bridge `linux,pci-domain`
/// ([`crate::platform::pci_domain`]: Linux keeps 16 bits of it), so the
/// channel's PCI messages name a bridge by a number the guest knows. No
/// `msi-map`: without
/// an ITS or GICv2m there is no MSI target; functions use INTx
/// (docs/aarch64.md).
pub(super) fn finish_pci_host(node: &mut Node, slot: &PciBridgeSlot) {
    node.set_property(Property::u32s(
        "linux,pci-domain",
        &[crate::platform::pci_domain(slot.config.base)],
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

/// `/chosen`: the command line and the console; [`set_initrd`] adds the
/// initrd.
pub(super) fn chosen_node(cfg: &CellConfig, uart: &str) -> Result<Node, FdtError> {
    t::CHOSEN.instantiate(
        &Vars::new()
            .string("bootargs", cfg.kernel.cmdline.as_str())
            .string("stdout_path", uart),
    )
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

/// The GICv3 with one redistributor frame pair per vCPU.
fn gic_node(cpus: u8) -> Result<Node, FdtError> {
    let redist = GIC_REDIST_SIZE_PER_CPU * u64::from(cpus);
    let mut reg = reg_cells(GIC_DIST_BASE, GIC_DIST_SIZE).to_vec();
    reg.extend(reg_cells(GIC_REDIST_BASE, redist));
    t::ARM_GIC.instantiate(&Vars::new().hex("unit", GIC_DIST_BASE).cells("reg", reg))
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
