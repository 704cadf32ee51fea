//! The cell's layout and the placement rule of each device kind: which
//! pools, alignments, owners and IOAPIC pins a device gets.
//! [`CellLayout::place`] applies them to boot-time devices and runtime
//! attachments alike.

use super::address_map::AddressMap;
use super::error::LayoutError;
use super::irq::IrqAllocator;
use super::owner::{BridgePart, Owner, Platform};
use super::slots::{ConnectorSlot, PciBridgeSlot, PlacedDevice, UartSlot, VirtioMmioSlot};
use crate::config::{
    CellConfig, ConnectorConfig, DeviceConfig, PciBridgeConfig, PciHostKind, UartConfig,
    VirtioMmioConfig, Window,
};
use crate::platform::*;
use std::collections::BTreeMap;

/// Everything placed for one cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellLayout {
    /// Every reserved guest-physical range, with its owner.
    pub map: AddressMap,
    /// Every reserved I/O port range, with its owner.
    pub ports: AddressMap,
    /// IOAPIC pin allocation.
    pub irqs: IrqAllocator,
    /// Guest RAM, as configured.
    pub memory: Vec<Window>,
    /// Placed virtio-mmio devices, in placement order.
    pub virtio_mmio: Vec<VirtioMmioSlot>,
    /// Placed PCI host bridges, in placement order.
    pub pci_bridges: Vec<PciBridgeSlot>,
    /// Placed extra UARTs, in placement order.
    pub uarts: Vec<UartSlot>,
    /// Placed add-on connectors, in config order.
    pub connectors: Vec<ConnectorSlot>,
}

impl CellLayout {
    /// Reserves RAM and the fixed platform devices, then places every
    /// configured device ([`CellConfig::devices`] order), then the
    /// connectors.
    pub fn new(cfg: &CellConfig) -> Result<Self, LayoutError> {
        let mut layout = CellLayout::platform(&cfg.memory_windows())?;
        for dev in cfg.devices() {
            layout.place(&dev)?;
        }
        for c in &cfg.connectors {
            layout.place_connector(c)?;
        }
        Ok(layout)
    }

    /// Places a connector: its window (aligned to its size) from the
    /// connector pool and its pins, the lowest free dynamic ones.
    pub fn place_connector(&mut self, cfg: &ConnectorConfig) -> Result<ConnectorSlot, LayoutError> {
        if let Some(other) = self.id_user(&cfg.id) {
            return Err(LayoutError::DuplicateId {
                id: cfg.id.clone(),
                other,
            });
        }
        let mut next = self.clone();
        let owner = Owner::Connector(cfg.id.clone());
        let window = next.map.allocate(
            owner.clone(),
            cfg.size,
            cfg.size,
            CONNECTOR_POOL,
            "the connector pool",
        )?;
        let mut irqs = Vec::new();
        for _ in 0..cfg.irqs {
            irqs.push(next.irqs.allocate(&owner)?);
        }
        let slot = ConnectorSlot {
            id: cfg.id.clone(),
            window,
            irqs,
            addon: None,
            occupants: AddressMap::default(),
            pin_users: BTreeMap::new(),
        };
        next.connectors.push(slot.clone());
        *self = next;
        Ok(slot)
    }

    /// Removes the empty connector `id`: releases its window and pins.
    pub fn remove_connector(&mut self, id: &str) -> Result<ConnectorSlot, LayoutError> {
        let slot = self
            .connector(id)
            .cloned()
            .ok_or_else(|| LayoutError::NoSuchConnector { id: id.to_string() })?;
        if let Some(addon) = &slot.addon {
            return Err(LayoutError::ConnectorInUse {
                id: id.to_string(),
                addon: addon.clone(),
            });
        }
        let owner = Owner::Connector(id.to_string());
        self.map.release(&owner);
        self.irqs.release(&owner);
        self.connectors.retain(|c| c.id != id);
        Ok(slot)
    }

    /// The connector `id`, if the cell has one.
    pub fn connector(&self, id: &str) -> Option<&ConnectorSlot> {
        self.connectors.iter().find(|c| c.id == id)
    }

    /// Places `dev`, a device of an add-on, on connector `connector`: its
    /// windows are the lowest free ones of the connector's window and its
    /// pins the lowest free ones of the connector's pins. A virtio-mmio
    /// device takes a page and a pin; a PCI bridge its config window (at
    /// least 1 MiB aligned), its 32-bit window (its `mmio32` size, else
    /// [`ADDON_MMIO32_SIZE`]) and four pins. Fixed addresses, fixed pins or a
    /// 64-bit window cannot sit on a connector. A UART is memory-mapped on
    /// a connector: a page and a pin. All or nothing.
    pub fn place_on(
        &mut self,
        connector: &str,
        dev: &DeviceConfig,
    ) -> Result<PlacedDevice, LayoutError> {
        let id = dev.id().to_string();
        if let Some(other) = self.id_user(&id) {
            return Err(LayoutError::DuplicateId { id, other });
        }
        let mut next = self.clone();
        let placed =
            match dev {
                DeviceConfig::VirtioMmio(c) if c.base.is_none() && c.irq.is_none() => {
                    let slot = next.connector_mut(connector)?;
                    let w = slot.window;
                    let window = slot.occupants.allocate(
                        Owner::VirtioMmio(id.clone()),
                        VIRTIO_MMIO_SIZE,
                        VIRTIO_MMIO_SIZE,
                        (w.base, w.end()),
                        "the connector's window",
                    )?;
                    let irq = take_pins(slot, &id, 1)?[0];
                    let placed = VirtioMmioSlot { id, window, irq };
                    next.virtio_mmio.push(placed.clone());
                    PlacedDevice::VirtioMmio(placed)
                }
                DeviceConfig::PciBridge(c)
                    if c.config_base.is_none()
                        && c.mmio64.is_none()
                        && c.mmio32.is_none_or(|w| w.base == 0) =>
                {
                    let placed = bridge_on(&mut next, connector, c)?;
                    next.pci_bridges.push(placed.clone());
                    PlacedDevice::PciBridge(placed)
                }
                DeviceConfig::VirtioMmio(_) => {
                    return Err(LayoutError::NotOnConnector {
                        id,
                        kind: "virtio-mmio device with a fixed base or irq",
                    })
                }
                DeviceConfig::PciBridge(_) => return Err(LayoutError::NotOnConnector {
                    id,
                    kind: "pci bridge with a fixed config_base or mmio32 base, or an mmio64 window",
                }),
                DeviceConfig::Uart(c) if c.port.is_none() && c.irq.is_none() => {
                    let slot = next.connector_mut(connector)?;
                    let w = slot.window;
                    let window = slot.occupants.allocate(
                        Owner::Uart(id.clone()),
                        PLATFORM_DEVICE_SIZE,
                        PLATFORM_DEVICE_SIZE,
                        (w.base, w.end()),
                        "the connector's window",
                    )?;
                    let irq = take_pins(slot, &id, 1)?[0];
                    let placed = UartSlot {
                        id,
                        port: 0,
                        mmio: Some(window),
                        irq,
                    };
                    next.uarts.push(placed.clone());
                    PlacedDevice::Uart(placed)
                }
                DeviceConfig::Uart(_) => {
                    return Err(LayoutError::NotOnConnector {
                        id,
                        kind: "uart with a fixed port or irq",
                    })
                }
            };
        *self = next;
        Ok(placed)
    }

    fn connector_mut(&mut self, connector: &str) -> Result<&mut ConnectorSlot, LayoutError> {
        self.connectors
            .iter_mut()
            .find(|c| c.id == connector)
            .ok_or_else(|| LayoutError::NoSuchConnector {
                id: connector.to_string(),
            })
    }

    /// Records that add-on `addon` is plugged into connector `connector`
    /// (`None`: unplugged).
    pub fn set_addon(&mut self, connector: &str, addon: Option<String>) -> Result<(), LayoutError> {
        let slot = self
            .connectors
            .iter_mut()
            .find(|c| c.id == connector)
            .ok_or_else(|| LayoutError::NoSuchConnector {
                id: connector.to_string(),
            })?;
        slot.addon = addon;
        Ok(())
    }

    /// RAM and the platform devices, nothing else.
    fn platform(memory: &[Window]) -> Result<Self, LayoutError> {
        let mut map = AddressMap::default();
        for (i, w) in memory.iter().enumerate() {
            map.reserve(Owner::Memory(i), *w)?;
        }
        for (owner, base, size) in FIXED_MMIO {
            map.reserve(Owner::Platform(owner), Window { base, size })?;
        }
        let mut ports = AddressMap::default();
        for (owner, base, count) in FIXED_PORTS {
            let w = Window {
                base: u64::from(base),
                size: u64::from(count),
            };
            ports.reserve(Owner::Platform(owner), w)?;
        }
        let mut irqs = IrqAllocator::new(IRQ_LINES, FIRST_DYNAMIC_IRQ);
        irqs.reserve(&Owner::Platform(Platform::Console), UART_IRQ)?;
        irqs.reserve(&Owner::Platform(Platform::Channel), CHANNEL_IRQ)?;
        Ok(CellLayout {
            map,
            ports,
            irqs,
            memory: memory.to_vec(),
            virtio_mmio: Vec::new(),
            pci_bridges: Vec::new(),
            uarts: Vec::new(),
            connectors: Vec::new(),
        })
    }

    /// Highest guest-physical address of RAM (exclusive).
    pub fn ram_end(&self) -> u64 {
        self.memory.iter().map(Window::end).max().unwrap_or(0)
    }

    /// Who uses `id` in this cell: a placed device or a platform device.
    pub fn id_user(&self, id: &str) -> Option<String> {
        if let Some(dev) = self.device(id) {
            let kind = match dev {
                PlacedDevice::VirtioMmio(_) => "virtio-mmio device",
                PlacedDevice::PciBridge(_) => "pci bridge",
                PlacedDevice::Uart(_) => "uart",
            };
            return Some(format!("{kind} {id}"));
        }
        if self.connector(id).is_some() {
            return Some(format!("connector {id}"));
        }
        Platform::ALL
            .iter()
            .find(|p| p.name() == id)
            .map(|p| format!("platform device {}", p.name()))
    }

    /// The placed device `id`, if any.
    pub fn device(&self, id: &str) -> Option<PlacedDevice> {
        let virtio = self.virtio_mmio.iter().find(|s| s.id == id);
        let bridge = self.pci_bridges.iter().find(|s| s.id == id);
        let uart = self.uarts.iter().find(|s| s.id == id);
        virtio
            .cloned()
            .map(PlacedDevice::VirtioMmio)
            .or_else(|| bridge.cloned().map(PlacedDevice::PciBridge))
            .or_else(|| uart.cloned().map(PlacedDevice::Uart))
    }

    /// Places `dev`: reserves its addresses, ports and IOAPIC pins under
    /// its typed owners and records its slot. All or nothing: on an error
    /// the layout is unchanged.
    pub fn place(&mut self, dev: &DeviceConfig) -> Result<PlacedDevice, LayoutError> {
        let mut next = self.clone();
        let placed = next.place_unchecked(dev)?;
        *self = next;
        Ok(placed)
    }

    fn place_unchecked(&mut self, dev: &DeviceConfig) -> Result<PlacedDevice, LayoutError> {
        let id = dev.id();
        if let Some(other) = self.id_user(id) {
            return Err(LayoutError::DuplicateId {
                id: id.to_string(),
                other,
            });
        }
        Ok(match dev {
            DeviceConfig::VirtioMmio(cfg) => {
                let slot = virtio_mmio(self, cfg)?;
                self.virtio_mmio.push(slot.clone());
                PlacedDevice::VirtioMmio(slot)
            }
            DeviceConfig::PciBridge(cfg) => {
                let slot = pci_bridge(self, cfg)?;
                self.pci_bridges.push(slot.clone());
                PlacedDevice::PciBridge(slot)
            }
            DeviceConfig::Uart(cfg) => {
                let slot = uart(self, cfg)?;
                self.uarts.push(slot.clone());
                PlacedDevice::Uart(slot)
            }
        })
    }

    /// Removes the device `id`: releases every address, port and pin it
    /// holds and forgets its slot.
    pub fn remove(&mut self, id: &str) -> Result<PlacedDevice, LayoutError> {
        let placed = self
            .device(id)
            .ok_or_else(|| LayoutError::NoSuchDevice { id: id.to_string() })?;
        for owner in owners(&placed) {
            self.map.release(&owner);
            self.ports.release(&owner);
            self.irqs.release(&owner);
            for c in &mut self.connectors {
                c.occupants.release(&owner);
            }
        }
        for c in &mut self.connectors {
            c.pin_users.retain(|_, user| user != id);
        }
        self.virtio_mmio.retain(|s| s.id != id);
        self.pci_bridges.retain(|s| s.id != id);
        self.uarts.retain(|s| s.id != id);
        Ok(placed)
    }
}

/// Places a virtio-mmio device: a page at its fixed base or the first free
/// one of the virtio-mmio pool, its fixed pin (exclusive) or a shared
/// level-triggered one ([`IrqAllocator::allocate_shared`]).
fn virtio_mmio(
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
        None => layout.irqs.allocate_shared(&owner)?,
    };
    Ok(VirtioMmioSlot {
        id: cfg.id.clone(),
        window,
        irq,
    })
}

/// Takes `n` free pins of connector `slot` for device `id`, lowest first.
fn take_pins(slot: &mut ConnectorSlot, id: &str, n: usize) -> Result<Vec<u32>, LayoutError> {
    let free: Vec<u32> = slot
        .irqs
        .iter()
        .copied()
        .filter(|p| !slot.pin_users.contains_key(p))
        .take(n)
        .collect();
    if free.len() < n {
        return Err(LayoutError::ConnectorIrqsExhausted {
            id: id.to_string(),
            connector: slot.id.clone(),
            pins: slot.irqs.len(),
        });
    }
    for p in &free {
        slot.pin_users.insert(*p, id.to_string());
    }
    Ok(free)
}

/// Places an add-on's PCI bridge inside connector `connector` of `layout`.
fn bridge_on(
    layout: &mut CellLayout,
    connector: &str,
    cfg: &PciBridgeConfig,
) -> Result<PciBridgeSlot, LayoutError> {
    check_bus_start(layout, cfg)?;
    let slot = layout.connector_mut(connector)?;
    let pool = (slot.window.base, slot.window.end());
    let part = |p: BridgePart| Owner::PciBridge(cfg.id.clone(), p);
    let buses = u64::from(cfg.bus_end.saturating_sub(cfg.bus_start)) + 1;
    let config_size = bus_size(cfg.kind) * buses;
    let config = slot.occupants.allocate(
        part(BridgePart::ConfigSpace),
        config_size,
        config_size.max(ECAM_BUS_SIZE),
        pool,
        "the connector's window",
    )?;
    let size = cfg.mmio32.map_or(ADDON_MMIO32_SIZE, |w| w.size);
    let mmio32 = slot.occupants.allocate(
        part(BridgePart::Mmio32),
        size,
        size.next_power_of_two(),
        pool,
        "the connector's window",
    )?;
    let pins = take_pins(slot, &cfg.id, 4)?;
    Ok(PciBridgeSlot {
        id: cfg.id.clone(),
        kind: cfg.kind,
        config,
        bus_start: cfg.bus_start,
        bus_end: cfg.bus_end,
        mmio32,
        mmio64: None,
        intx: [pins[0], pins[1], pins[2], pins[3]],
    })
}

/// A bridge's first bus must be no other bridge's.
fn check_bus_start(layout: &CellLayout, cfg: &PciBridgeConfig) -> Result<(), LayoutError> {
    match layout
        .pci_bridges
        .iter()
        .find(|b| b.bus_start == cfg.bus_start)
    {
        Some(other) => Err(LayoutError::BusCollision {
            id: cfg.id.clone(),
            bus: cfg.bus_start,
            other: other.id.clone(),
        }),
        None => Ok(()),
    }
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
/// shared level-triggered pins for INTA..INTD.
fn pci_bridge(
    layout: &mut CellLayout,
    cfg: &PciBridgeConfig,
) -> Result<PciBridgeSlot, LayoutError> {
    check_bus_start(layout, cfg)?;
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
        *pin = layout.irqs.allocate_shared(&part(BridgePart::Intx(n)))?;
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
fn uart(layout: &mut CellLayout, cfg: &UartConfig) -> Result<UartSlot, LayoutError> {
    if !HAS_PORT_IO {
        return Err(LayoutError::NoPortIo { id: cfg.id.clone() });
    }
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
        mmio: None,
        irq,
    })
}

/// Every owner a placed device's reservations are under.
fn owners(placed: &PlacedDevice) -> Vec<Owner> {
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
