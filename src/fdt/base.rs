//! The cell's base device tree, assembled from the templates in
//! `fdt-templates/`.
//!
//! Each `*_node` function instantiates one template and returns a
//! self-contained [`Node`] whose references to the interrupt controller
//! stay symbolic (`&ioapic`, `&gic`), so the same function serves the base
//! tree and, later, overlay fragments that attach hardware at runtime.
//! Interrupt specifiers come from [`crate::platform::irq_cells`]; the nodes
//! only one architecture has (CPUs, interrupt controller, console) are built
//! by `fdt::x86_64` and `fdt::aarch64`.

use super::arch;
use super::template::{Template, Vars};
use super::tree::{Cell, Node, Property};
use super::FdtError;
use crate::config::{CellConfig, DeviceConfig, DeviceState, PciHostKind, Window};
use crate::layout::{CellLayout, ConnectorSlot, PciBridgeSlot, UartSlot, VirtioMmioSlot};
use crate::pci::pci_intx_pin;
use crate::platform::*;

/// Label (and so phandle) of the x86 IOAPIC node.
pub const IOAPIC_LABEL: &str = crate::platform::x86_64::INTC_LABEL;
/// Label of the x86 MSI target node (`msi.dts`); PCI bridges' msi-map
/// refers to it.
pub const MSI_LABEL: &str = "msi";

/// The templates, compiled in.
pub mod templates {
    use super::Template;

    macro_rules! template {
        ($id:ident, $file:literal) => {
            #[doc = concat!("`fdt-templates/", $file, "`.")]
            pub const $id: Template =
                Template::new($file, include_str!(concat!("../../fdt-templates/", $file)));
        };
    }

    template!(ROOT, "root.dts");
    template!(CHOSEN, "chosen.dts");
    template!(ALIASES, "aliases.dts");
    template!(CPUS, "cpus.dts");
    template!(CPU, "cpu.dts");
    template!(MEMORY, "memory.dts");
    template!(IOAPIC, "ioapic.dts");
    template!(ISA, "isa.dts");
    template!(NS16550, "ns16550.dts");
    template!(DEBUG_EXIT, "debug-exit.dts");
    template!(BOOT_TIMER, "boot-timer.dts");
    template!(PVPANIC, "pvpanic.dts");
    template!(CHANNEL, "channel.dts");
    template!(VIRTIO_MMIO, "virtio-mmio.dts");
    template!(PCI_HOST, "pci-host.dts");
    template!(MSI, "msi.dts");
    template!(CONNECTOR, "connector.dts");
    template!(NS16550_MMIO, "ns16550-mmio.dts");
    template!(ARM_CPU, "arm-cpu.dts");
    template!(ARM_GIC, "arm-gic.dts");
    template!(ARM_TIMER, "arm-timer.dts");
    template!(ARM_PSCI, "arm-psci.dts");
    template!(ARM_ITS, "arm-its.dts");

    /// Every template, for checks that they all parse.
    pub const ALL: [Template; 23] = [
        ROOT,
        CHOSEN,
        ALIASES,
        CPUS,
        CPU,
        MEMORY,
        IOAPIC,
        ISA,
        NS16550,
        DEBUG_EXIT,
        BOOT_TIMER,
        PVPANIC,
        CHANNEL,
        VIRTIO_MMIO,
        PCI_HOST,
        MSI,
        CONNECTOR,
        NS16550_MMIO,
        ARM_CPU,
        ARM_GIC,
        ARM_TIMER,
        ARM_PSCI,
        ARM_ITS,
    ];
}

pub(super) use templates as t;

/// PCI `ranges` space code: 32-bit memory, non-prefetchable.
const PCI_SPACE_MEM32: u32 = 0x0200_0000;
/// PCI `ranges` space code: 64-bit memory, prefetchable.
const PCI_SPACE_MEM64_PREF: u32 = 0x4300_0000;

pub(super) fn hi(v: u64) -> u32 {
    (v >> 32) as u32
}

pub(super) fn lo(v: u64) -> u32 {
    v as u32
}

/// `<base-hi base-lo size-hi size-lo>` for a node under the root
/// (`#address-cells = <2>`, `#size-cells = <2>`).
pub(super) fn reg_cells(base: u64, size: u64) -> [u32; 4] {
    [hi(base), lo(base), hi(size), lo(size)]
}

/// Unit address and `reg` for a window under the root.
pub(super) fn window_vars(w: Window) -> Vars {
    Vars::new()
        .hex("unit", w.base)
        .cells("reg", reg_cells(w.base, w.size))
}

/// A 16550 under the ISA bus at `port` with IOAPIC pin `irq` (x86_64).
pub(super) fn ns16550_node(port: u16, irq: u32) -> Result<Node, FdtError> {
    t::NS16550.instantiate(
        &Vars::new()
            .raw("unit", format!("{port:x}"))
            .cells("port", [u32::from(port)])
            .cells("irq", [irq]),
    )
}

/// An extra UART: a child of the ISA bus node at its port, or, memory-mapped
/// (an add-on board's), a node with its registers in its page.
pub fn uart_node(slot: &UartSlot) -> Result<Node, FdtError> {
    match slot.mmio {
        None => ns16550_node(slot.port, slot.irq),
        Some(w) => ns16550_mmio_node(w.base, slot.irq),
    }
}

/// A memory-mapped 16550 at `base` (its 8 byte registers) on line `irq`.
pub(super) fn ns16550_mmio_node(base: u64, irq: u32) -> Result<Node, FdtError> {
    t::NS16550_MMIO.instantiate(
        &window_vars(Window {
            base,
            size: u64::from(UART_PORT_COUNT),
        })
        .cells("irq", irq_cells(irq, Trigger::Edge)),
    )
}

/// The debug-exit platform device.
pub fn debug_exit_node() -> Result<Node, FdtError> {
    t::DEBUG_EXIT.instantiate(&window_vars(Window {
        base: DEBUG_EXIT_BASE,
        size: PLATFORM_DEVICE_SIZE,
    }))
}

/// The boot-timer platform device.
pub fn boot_timer_node() -> Result<Node, FdtError> {
    t::BOOT_TIMER.instantiate(&window_vars(Window {
        base: BOOT_TIMER_BASE,
        size: PLATFORM_DEVICE_SIZE,
    }))
}

/// The pvpanic platform device.
pub fn pvpanic_node() -> Result<Node, FdtError> {
    t::PVPANIC.instantiate(&window_vars(Window {
        base: PVPANIC_BASE,
        size: PVPANIC_REG_SIZE,
    }))
}

/// The paravirtual channel.
pub fn channel_node() -> Result<Node, FdtError> {
    t::CHANNEL.instantiate(
        &window_vars(Window {
            base: CHANNEL_BASE,
            size: CHANNEL_SIZE,
        })
        .cells("irq", irq_cells(CHANNEL_IRQ, Trigger::LevelHigh)),
    )
}

/// A virtio-mmio transport.
pub fn virtio_mmio_node(slot: &VirtioMmioSlot) -> Result<Node, FdtError> {
    t::VIRTIO_MMIO.instantiate(
        &window_vars(slot.window).cells("irq", irq_cells(slot.irq, Trigger::LevelHigh)),
    )
}

/// An add-on connector, labelled with its id.
pub fn connector_node(slot: &ConnectorSlot) -> Result<Node, FdtError> {
    t::CONNECTOR.instantiate(&window_vars(slot.window).raw("label", slot.id.as_str()))
}

/// A PCI host bridge, with its INTx interrupt-map.
pub fn pci_host_node(slot: &PciBridgeSlot) -> Result<Node, FdtError> {
    let compatible = match slot.kind {
        PciHostKind::Ecam => "pci-host-ecam-generic",
        PciHostKind::Cam => "pci-host-cam-generic",
    };
    let m32 = slot.mmio32;
    let mut ranges = vec![
        PCI_SPACE_MEM32,
        hi(m32.base),
        lo(m32.base),
        hi(m32.base),
        lo(m32.base),
        hi(m32.size),
        lo(m32.size),
    ];
    if let Some(m64) = slot.mmio64 {
        ranges.extend([
            PCI_SPACE_MEM64_PREF,
            hi(m64.base),
            lo(m64.base),
            hi(m64.base),
            lo(m64.base),
            hi(m64.size),
            lo(m64.size),
        ]);
    }
    let mut node = t::PCI_HOST.instantiate(
        &window_vars(slot.config)
            .string("compatible", compatible)
            .cells(
                "bus_range",
                [u32::from(slot.bus_start), u32::from(slot.bus_end)],
            )
            .cells("ranges", ranges)
            .cells("interrupt_map", pci_interrupt_map(&slot.intx)),
    )?;
    arch::finish_pci_host(&mut node, slot);
    Ok(node)
}

/// Devices the `interrupt-map` lists: the swizzle
/// ([`pci_intx_pin`]) depends on the device number modulo 4 only, so the
/// `interrupt-map-mask` (`<0x1800 0 0 7>`, in `pci-host.dts`) keeps the low
/// two bits of the device number and four devices cover all 32, as on QEMU's
/// virt board. 16 entries instead of 128: a bridge's overlay is a quarter
/// of the size, and so is the guest's work to copy and search the map.
pub const INTERRUPT_MAP_DEVICES: u32 = 4;

/// `interrupt-map` cells for devices 0..[`INTERRUPT_MAP_DEVICES`] ×
/// INTA..INTD: `<devfn<<8 0 0 pin &intc [parent unit address] specifier>`
/// each, the specifier level-high.
fn pci_interrupt_map(intx: &[u32; 4]) -> Vec<Cell> {
    let n = INTERRUPT_MAP_DEVICES as usize;
    let mut cells = Vec::with_capacity(n * 4 * 10);
    for device in 0..INTERRUPT_MAP_DEVICES {
        for pin in 1..=4u32 {
            cells.extend([
                Cell::Num(device << 11),
                Cell::Num(0),
                Cell::Num(0),
                Cell::Num(pin),
                Cell::Ref(INTC_LABEL.to_string()),
            ]);
            cells.extend(std::iter::repeat_n(Cell::Num(0), INTC_ADDRESS_CELLS));
            let line = pci_intx_pin(intx, device, pin);
            cells.extend(
                irq_cells(line, Trigger::LevelHigh)
                    .into_iter()
                    .map(Cell::Num),
            );
        }
    }
    cells
}

/// Assembles the base tree: the root, the architecture's own nodes (CPUs,
/// interrupt controller, console, `chosen`), then the platform devices and
/// the configured ones.
pub(super) fn build(cfg: &CellConfig, layout: &CellLayout) -> Result<Node, FdtError> {
    let mut root = t::ROOT.instantiate(
        &Vars::new()
            .string("model", format!("cellvm {}", cfg.name))
            .cells("intc", [Cell::Ref(INTC_LABEL.to_string())]),
    )?;
    let uart = arch::uart_path();
    root.add_child(
        t::CHOSEN.instantiate(
            &Vars::new()
                .string("bootargs", cfg.kernel.cmdline.as_str())
                .string("stdout_path", uart.as_str()),
        )?,
    )?;
    root.add_child(t::ALIASES.instantiate(&Vars::new().string("serial0", uart.as_str()))?)?;
    root.add_child(arch::cpus_node(cfg)?)?;
    for w in &layout.memory {
        root.add_child(t::MEMORY.instantiate(&window_vars(*w))?)?;
    }
    arch::add_platform_nodes(&mut root, cfg, layout)?;
    root.add_child(debug_exit_node()?)?;
    root.add_child(boot_timer_node()?)?;
    root.add_child(pvpanic_node()?)?;
    root.add_child(channel_node()?)?;
    for slot in &layout.virtio_mmio {
        let mut node = virtio_mmio_node(slot)?;
        with_state(&mut node, state_of(cfg, &slot.id));
        root.add_child(node)?;
    }
    for slot in &layout.pci_bridges {
        let mut node = pci_host_node(slot)?;
        with_state(&mut node, state_of(cfg, &slot.id));
        root.add_child(node)?;
    }
    for slot in &layout.connectors {
        root.add_child(connector_node(slot)?)?;
    }
    Ok(root)
}

/// The configured state of device `id` (`okay` if the config has none).
pub(super) fn state_of(cfg: &CellConfig, id: &str) -> DeviceState {
    cfg.devices()
        .iter()
        .find(|d| d.id() == id)
        .map_or(DeviceState::Okay, DeviceConfig::state)
}

/// Gives a device node that is not in use its `status` (`reserved`,
/// `disabled`); an `okay` node keeps none (the default).
pub fn with_state(node: &mut Node, state: DeviceState) {
    if state != DeviceState::Okay {
        node.set_property(Property::string("status", state.as_str()));
    }
}
