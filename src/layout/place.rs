//! The placement rule of each device kind: which pools, alignments, owners
//! and IOAPIC pins a device gets. [`super::CellLayout::place`] uses these for
//! boot-time devices and runtime attachments alike.

use super::{
    BridgePart, CellLayout, LayoutError, Owner, PciBridgeSlot, PlacedDevice, UartSlot,
    VirtioMmioSlot,
};
use crate::config::{PciBridgeConfig, PciHostKind, UartConfig, VirtioMmioConfig, Window};
use crate::platform::*;

/// Places a virtio-mmio device: a page at its fixed base or the first free
/// one of the virtio-mmio pool, its fixed pin or the first free dynamic one.
pub(super) fn virtio_mmio(
    layout: &mut CellLayout,
    cfg: &VirtioMmioConfig,
) -> Result<VirtioMmioSlot, LayoutError> {
    let owner = Owner::VirtioMmio(cfg.id.clone());
    let window = match cfg.base {
        Some(base) => layout.map.reserve(
            owner.clone(),
            Window {
                base,
                size: VIRTIO_MMIO_SIZE,
            },
        )?,
        None => layout.map.allocate(
            owner.clone(),
            VIRTIO_MMIO_SIZE,
            VIRTIO_MMIO_SIZE,
            VIRTIO_MMIO_POOL,
            "the virtio-mmio pool",
        )?,
    };
    let irq = match cfg.irq {
        Some(pin) => layout.irqs.reserve(&owner, pin)?,
        None => layout.irqs.allocate(&owner)?,
    };
    Ok(VirtioMmioSlot {
        id: cfg.id.clone(),
        window,
        irq,
    })
}

/// Configuration space per bus.
fn bus_size(kind: PciHostKind) -> u64 {
    match kind {
        PciHostKind::Ecam => ECAM_BUS_SIZE,
        PciHostKind::Cam => CAM_BUS_SIZE,
    }
}

/// Places a PCI host bridge: a distinct first bus, its config window (fixed
/// or from the config pool, aligned to at least 1 MiB so each bridge has a
/// distinct PCI domain on x86), its 32-bit window (fixed, or a size or
/// 16 MiB from the 32-bit pool), its optional 64-bit window and four
/// dynamic pins for INTA..INTD.
pub(super) fn pci_bridge(
    layout: &mut CellLayout,
    cfg: &PciBridgeConfig,
) -> Result<PciBridgeSlot, LayoutError> {
    if let Some(other) = layout
        .pci_bridges
        .iter()
        .find(|b| b.bus_start == cfg.bus_start)
    {
        return Err(LayoutError::BusCollision {
            id: cfg.id.clone(),
            bus: cfg.bus_start,
            other: other.id.clone(),
        });
    }
    let part = |p: BridgePart| Owner::PciBridge(cfg.id.clone(), p);
    let buses = u64::from(cfg.bus_end.saturating_sub(cfg.bus_start)) + 1;
    let config_size = bus_size(cfg.kind) * buses;
    let map = &mut layout.map;
    let config = match cfg.config_base {
        Some(base) => map.reserve(
            part(BridgePart::ConfigSpace),
            Window {
                base,
                size: config_size,
            },
        )?,
        None => map.allocate(
            part(BridgePart::ConfigSpace),
            config_size,
            config_size.max(ECAM_BUS_SIZE),
            PCI_CONFIG_POOL,
            "the PCI config pool",
        )?,
    };
    let mmio32 = match cfg.mmio32 {
        Some(w) if w.base != 0 => map.reserve(part(BridgePart::Mmio32), w)?,
        other => {
            let size = other.map_or(DEFAULT_MMIO32_SIZE, |w| w.size);
            map.allocate(
                part(BridgePart::Mmio32),
                size,
                size.next_power_of_two(),
                PCI_MMIO32_POOL,
                "the PCI 32-bit MMIO pool",
            )?
        }
    };
    let mmio64 = match cfg.mmio64 {
        Some(w) if w.base == 0 => Some(map.allocate(
            part(BridgePart::Mmio64),
            w.size,
            w.size.next_power_of_two(),
            PCI_MMIO64_POOL,
            "the PCI 64-bit MMIO pool",
        )?),
        Some(w) => Some(map.reserve(part(BridgePart::Mmio64), w)?),
        None => None,
    };
    let mut intx = [0u32; 4];
    for (n, pin) in (0u8..).zip(intx.iter_mut()) {
        *pin = layout.irqs.allocate(&part(BridgePart::Intx(n)))?;
    }
    Ok(PciBridgeSlot {
        id: cfg.id.clone(),
        kind: cfg.kind,
        config,
        bus_start: cfg.bus_start,
        bus_end: cfg.bus_end,
        mmio32,
        mmio64,
        intx,
    })
}

/// Places an extra UART: its 8 ports (fixed, or the first free of COM2,
/// COM3, COM4) and its pin (fixed, else 3 if free, else a dynamic one).
pub(super) fn uart(layout: &mut CellLayout, cfg: &UartConfig) -> Result<UartSlot, LayoutError> {
    let owner = Owner::Uart(cfg.id.clone());
    let ports = |port: u16| Window {
        base: u64::from(port),
        size: u64::from(UART_PORT_COUNT),
    };
    let port = match cfg.port {
        Some(port) => port,
        None => DEFAULT_UART_PORTS
            .into_iter()
            .find(|p| {
                let w = ports(*p);
                layout.ports.overlapping(w.base, w.end()).is_none()
            })
            .ok_or_else(|| LayoutError::NoFreePort { id: cfg.id.clone() })?,
    };
    layout
        .ports
        .reserve(owner.clone(), ports(port))
        .map_err(|e| match e {
            LayoutError::Collision {
                what,
                base,
                end,
                other: Some(other),
            } => LayoutError::PortCollision {
                what,
                base,
                end,
                other,
            },
            e => e,
        })?;
    let irq = match cfg.irq {
        Some(pin) => layout.irqs.reserve(&owner, pin)?,
        None if layout.irqs.owner(DEFAULT_UART_IRQ).is_none() => {
            layout.irqs.reserve(&owner, DEFAULT_UART_IRQ)?
        }
        None => layout.irqs.allocate(&owner)?,
    };
    Ok(UartSlot {
        id: cfg.id.clone(),
        port,
        irq,
    })
}

/// Every owner a placed device's reservations are under.
pub(super) fn owners(placed: &PlacedDevice) -> Vec<Owner> {
    match placed {
        PlacedDevice::VirtioMmio(s) => vec![Owner::VirtioMmio(s.id.clone())],
        PlacedDevice::Uart(s) => vec![Owner::Uart(s.id.clone())],
        PlacedDevice::PciBridge(s) => [
            BridgePart::ConfigSpace,
            BridgePart::Mmio32,
            BridgePart::Mmio64,
            BridgePart::Intx(0),
            BridgePart::Intx(1),
            BridgePart::Intx(2),
            BridgePart::Intx(3),
        ]
        .into_iter()
        .map(|p| Owner::PciBridge(s.id.clone(), p))
        .collect(),
    }
}
