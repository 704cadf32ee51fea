//! The x86_64 nodes of the base tree: CPUs by local APIC ID, the IOAPIC
//! every interrupt refers to, the MSI target of PCI functions, and the ISA
//! bus with the console UART and the extra UARTs at their I/O ports.

use super::base::{ns16550_node, state_of, t, uart_node, window_vars, with_state};
use super::template::Vars;
use super::tree::{child_path, Cell, Node, Property};
use super::FdtError;
use crate::config::{CellConfig, Window};
use crate::layout::{CellLayout, PciBridgeSlot, UartSlot};
use crate::platform::{IOAPIC_BASE, IOAPIC_SIZE, UART_IRQ, UART_PORT};

/// The IOAPIC's label.
pub use crate::platform::x86_64::INTC_LABEL;

/// Gives a PCI host bridge its `msi-map`: every requester ID to the x86
/// MSI target (`msi.dts`), so functions may use MSI-X. (Linux makes the
/// domain the config base's low 32 bits itself.)
pub(super) fn finish_pci_host(node: &mut Node, _slot: &PciBridgeSlot) {
    node.set_property(Property::cells(
        "msi-map",
        vec![
            Cell::Num(0),
            Cell::Ref(super::MSI_LABEL.to_string()),
            Cell::Num(0),
            Cell::Num(0x1_0000),
        ],
    ));
}

/// Name of the ISA bus node under the root, as in `isa.dts` (Linux matches
/// the part before `@`; see the template for the unit address).
const ISA_NAME: &str = "isa@1";

/// Node name of the console UART under `/isa`.
fn uart_name() -> String {
    format!("serial@{:x}", UART_PORT)
}

/// Full path of the console UART node (`/isa@1/serial@3f8`).
pub fn uart_path() -> String {
    child_path(&child_path("/", ISA_NAME), &uart_name())
}

/// `/cpus`, one node per vCPU with its local APIC ID.
pub(super) fn cpus_node(cfg: &CellConfig) -> Result<Node, FdtError> {
    let mut cpus = t::CPUS.instantiate(&Vars::new())?;
    for id in 0..u32::from(cfg.cpus.count) {
        cpus.add_child(
            t::CPU.instantiate(
                &Vars::new()
                    .hex("unit", u64::from(id))
                    .cells("apic_id", [id]),
            )?,
        )?;
    }
    Ok(cpus)
}

/// The IOAPIC node (labelled [`INTC_LABEL`]).
pub fn ioapic_node() -> Result<Node, FdtError> {
    t::IOAPIC.instantiate(&window_vars(Window {
        base: IOAPIC_BASE,
        size: IOAPIC_SIZE,
    }))
}

/// The ISA bus with the console UART and the cell's extra UARTs.
fn isa_node(cfg: &CellConfig, uarts: &[UartSlot]) -> Result<Node, FdtError> {
    let mut isa = t::ISA.instantiate(&Vars::new())?;
    isa.add_child(ns16550_node(UART_PORT, UART_IRQ)?)?;
    for slot in uarts {
        let mut node = uart_node(slot)?;
        with_state(&mut node, state_of(cfg, &slot.id));
        isa.add_child(node)?;
    }
    Ok(isa)
}

/// The IOAPIC, the MSI target and the ISA bus.
pub(super) fn add_platform_nodes(
    root: &mut Node,
    cfg: &CellConfig,
    layout: &CellLayout,
) -> Result<(), FdtError> {
    root.add_child(ioapic_node()?)?;
    root.add_child(t::MSI.instantiate(&Vars::new())?)?;
    root.add_child(isa_node(cfg, &layout.uarts)?)?;
    Ok(())
}
