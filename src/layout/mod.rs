//! The cell's address map, I/O port map and interrupt allocation: the
//! single source of truth for where every device lives.
//!
//! [`CellLayout::new`] reserves RAM and the platform devices, then places
//! every device a validated [`CellConfig`] declares with [`CellLayout::place`].
//! A runtime attach places its device with the same method on a copy of the
//! cell's layout, and a detach releases it with [`CellLayout::remove`]: one
//! placement rule per device kind, for boot and runtime alike. Every
//! reservation has a typed [`Owner`]; a collision is impossible by
//! construction rather than by convention.
//!
//! [`place_cell`] is `CellLayout::new` for a config read from a file: a
//! placement error comes back as a [`ConfigError`] at the key that caused it.

mod address_map;
mod irq;
mod owner;
mod place;

pub use address_map::{AddressMap, Reservation};
pub use irq::IrqAllocator;
pub use owner::{BridgePart, Owner, Platform};

use crate::config::{CellConfig, ConfigError, DeviceConfig, PciHostKind, Window};
use crate::platform::*;
use thiserror::Error;

/// Errors from placing a cell's devices.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum LayoutError {
    /// Two address reservations overlap (or one wraps the address space).
    #[error(
        "{what} at {base:#x}..{end:#x} collides with {}",
        other.as_ref().map_or_else(|| "the end of the address space".to_string(), ToString::to_string)
    )]
    Collision {
        /// The reservation that failed.
        what: Owner,
        /// Its base.
        base: u64,
        /// Its end (exclusive).
        end: u64,
        /// The holder of the overlapping reservation (`None`: the range wraps).
        other: Option<Owner>,
    },
    /// Two I/O port ranges overlap.
    #[error("{what} at ports {base:#x}..{end:#x} collides with {other}")]
    PortCollision {
        /// The device that failed.
        what: Owner,
        /// First port.
        base: u64,
        /// One past the last port.
        end: u64,
        /// The holder of the ports.
        other: Owner,
    },
    /// A pool had no free, suitably aligned space left.
    #[error("no room for {what} ({size:#x} bytes) in {pool}")]
    Exhausted {
        /// What was being placed.
        what: Owner,
        /// Requested size.
        size: u64,
        /// Name of the pool.
        pool: &'static str,
    },
    /// A fixed IOAPIC pin does not exist.
    #[error("IOAPIC pin {pin} for {what} does not exist (the IOAPIC has {pins} pins)")]
    IrqOutOfRange {
        /// What wanted it.
        what: Owner,
        /// The pin.
        pin: u32,
        /// How many pins there are.
        pins: usize,
    },
    /// A fixed IOAPIC pin is taken.
    #[error("IOAPIC pin {pin} for {what} is already used by {holder}")]
    IrqTaken {
        /// What wanted it.
        what: Owner,
        /// The pin.
        pin: u32,
        /// Who has it.
        holder: Owner,
    },
    /// All dynamic IOAPIC pins are in use.
    #[error("no free IOAPIC pin for {0}")]
    IrqsExhausted(Owner),
    /// No standard UART port is free.
    #[error("no free UART port for {id} (0x2f8, 0x3e8 and 0x2e8 are taken); give one")]
    NoFreePort {
        /// The UART.
        id: String,
    },
    /// The id is taken by another device of the cell.
    #[error("id {id:?} is already used by {other}")]
    DuplicateId {
        /// The id.
        id: String,
        /// Who has it (`virtio-mmio device rng0`, `platform device console`).
        other: String,
    },
    /// Another bridge already starts at this bus.
    #[error(
        "bus {bus} is already the first bus of pci bridge {other}; \
         host bridges need distinct bus_start values"
    )]
    BusCollision {
        /// The bridge that failed.
        id: String,
        /// The bus number.
        bus: u8,
        /// The bridge that has it.
        other: String,
    },
    /// No device of the cell has this id.
    #[error("no device has id {id:?}")]
    NoSuchDevice {
        /// The id asked for.
        id: String,
    },
}

/// What a [`LayoutError`] is about: the device (and key) or RAM region
/// whose placement failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Culprit<'a> {
    /// The `n`th RAM region (in address order).
    Memory(usize),
    /// A device's key (`base`, `irq`, `bus_start`, ...; empty: its table).
    Device {
        /// The device id.
        id: &'a str,
        /// The key.
        key: &'static str,
    },
    /// A platform device (a bug: they are placed first).
    Platform,
}

impl LayoutError {
    /// What failed to be placed.
    pub fn culprit(&self) -> Culprit<'_> {
        fn owner(o: &Owner, irq: bool) -> Culprit<'_> {
            match o {
                Owner::Memory(i) => Culprit::Memory(*i),
                Owner::Platform(_) => Culprit::Platform,
                other => Culprit::Device {
                    id: other.device_id().unwrap_or_default(),
                    key: other.config_key(irq),
                },
            }
        }
        match self {
            LayoutError::Collision { what, .. }
            | LayoutError::PortCollision { what, .. }
            | LayoutError::Exhausted { what, .. } => owner(what, false),
            LayoutError::IrqOutOfRange { what, .. }
            | LayoutError::IrqTaken { what, .. }
            | LayoutError::IrqsExhausted(what) => owner(what, true),
            LayoutError::NoFreePort { id } => Culprit::Device { id, key: "port" },
            LayoutError::DuplicateId { id, .. } => Culprit::Device { id, key: "id" },
            LayoutError::BusCollision { id, .. } => Culprit::Device {
                id,
                key: "bus_start",
            },
            LayoutError::NoSuchDevice { id } => Culprit::Device { id, key: "id" },
        }
    }

    /// The same error with RAM regions renumbered by `rename` (layout
    /// numbers them by address; a file by position).
    fn renumber_memory(mut self, rename: impl Fn(usize) -> usize) -> Self {
        let fix = |o: &mut Owner| {
            if let Owner::Memory(i) = o {
                *i = rename(*i);
            }
        };
        match &mut self {
            LayoutError::Collision { what, other, .. } => {
                fix(what);
                if let Some(o) = other {
                    fix(o);
                }
            }
            LayoutError::PortCollision { what, other, .. } => {
                fix(what);
                fix(other);
            }
            LayoutError::IrqTaken { what, holder, .. } => {
                fix(what);
                fix(holder);
            }
            LayoutError::Exhausted { what, .. }
            | LayoutError::IrqOutOfRange { what, .. }
            | LayoutError::IrqsExhausted(what) => fix(what),
            LayoutError::NoFreePort { .. }
            | LayoutError::DuplicateId { .. }
            | LayoutError::BusCollision { .. }
            | LayoutError::NoSuchDevice { .. } => {}
        }
        self
    }
}

/// A placed virtio-mmio device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtioMmioSlot {
    /// Device id from the config.
    pub id: String,
    /// MMIO window.
    pub window: Window,
    /// IOAPIC pin.
    pub irq: u32,
}

/// A placed PCI host bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciBridgeSlot {
    /// Bridge id from the config.
    pub id: String,
    /// ECAM or CAM.
    pub kind: PciHostKind,
    /// Configuration window.
    pub config: Window,
    /// First bus.
    pub bus_start: u8,
    /// Last bus.
    pub bus_end: u8,
    /// 32-bit non-prefetchable MMIO window.
    pub mmio32: Window,
    /// Optional 64-bit prefetchable window.
    pub mmio64: Option<Window>,
    /// IOAPIC pins for INTA..INTD (swizzled per slot in the interrupt-map).
    pub intx: [u32; 4],
}

/// A placed extra UART.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UartSlot {
    /// Device id.
    pub id: String,
    /// First of its 8 I/O ports.
    pub port: u16,
    /// IOAPIC pin (edge rising).
    pub irq: u32,
}

/// Where a device was placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacedDevice {
    /// A virtio-mmio transport.
    VirtioMmio(VirtioMmioSlot),
    /// A PCI host bridge.
    PciBridge(PciBridgeSlot),
    /// A UART.
    Uart(UartSlot),
}

impl PlacedDevice {
    /// The device id.
    pub fn id(&self) -> &str {
        match self {
            PlacedDevice::PciBridge(s) => &s.id,
            PlacedDevice::VirtioMmio(s) => &s.id,
            PlacedDevice::Uart(s) => &s.id,
        }
    }
}

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
}

impl CellLayout {
    /// Reserves RAM and the fixed platform devices, then places every
    /// configured device ([`CellConfig::devices`] order).
    pub fn new(cfg: &CellConfig) -> Result<Self, LayoutError> {
        let mut layout = CellLayout::platform(&cfg.memory_windows())?;
        for dev in cfg.devices() {
            layout.place(&dev)?;
        }
        Ok(layout)
    }

    /// RAM and the platform devices, nothing else.
    fn platform(memory: &[Window]) -> Result<Self, LayoutError> {
        let mut map = AddressMap::default();
        for (i, w) in memory.iter().enumerate() {
            map.reserve(Owner::Memory(i), *w)?;
        }
        let fixed = [
            (Platform::DebugExit, DEBUG_EXIT_BASE, PLATFORM_DEVICE_SIZE),
            (Platform::BootTimer, BOOT_TIMER_BASE, PLATFORM_DEVICE_SIZE),
            (Platform::Channel, CHANNEL_BASE, CHANNEL_SIZE),
            (Platform::Ioapic, IOAPIC_BASE, IOAPIC_SIZE),
            (Platform::Lapic, LAPIC_BASE, LAPIC_SIZE),
        ];
        for (owner, base, size) in fixed {
            map.reserve(Owner::Platform(owner), Window { base, size })?;
        }
        let mut ports = AddressMap::default();
        let fixed_ports = [
            (Platform::I8042, I8042_PORT, I8042_PORT_COUNT),
            (Platform::Cmos, CMOS_PORT, CMOS_PORT_COUNT),
            (Platform::Console, UART_PORT, UART_PORT_COUNT),
        ];
        for (owner, base, count) in fixed_ports {
            let w = Window {
                base: u64::from(base),
                size: u64::from(count),
            };
            ports.reserve(Owner::Platform(owner), w)?;
        }
        let mut irqs = IrqAllocator::new(IOAPIC_PINS, FIRST_DYNAMIC_IRQ);
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
                let slot = place::virtio_mmio(self, cfg)?;
                self.virtio_mmio.push(slot.clone());
                PlacedDevice::VirtioMmio(slot)
            }
            DeviceConfig::PciBridge(cfg) => {
                let slot = place::pci_bridge(self, cfg)?;
                self.pci_bridges.push(slot.clone());
                PlacedDevice::PciBridge(slot)
            }
            DeviceConfig::Uart(cfg) => {
                let slot = place::uart(self, cfg)?;
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
        for owner in place::owners(&placed) {
            self.map.release(&owner);
            self.ports.release(&owner);
            self.irqs.release(&owner);
        }
        self.virtio_mmio.retain(|s| s.id != id);
        self.pci_bridges.retain(|s| s.id != id);
        self.uarts.retain(|s| s.id != id);
        Ok(placed)
    }
}

/// Lays out a cell read from a file: [`CellLayout::new`], with a placement
/// error turned into a [`ConfigError`] at the file, line, column and key
/// that caused it (RAM regions numbered as in the file).
pub fn place_cell(cfg: &CellConfig) -> Result<CellLayout, ConfigError> {
    CellLayout::new(cfg).map_err(|e| locate(cfg, e))
}

fn locate(cfg: &CellConfig, error: LayoutError) -> ConfigError {
    let origin = match error.culprit() {
        Culprit::Memory(i) => cfg.origins.memory(i).cloned(),
        Culprit::Device { id, key } => cfg.origins.device(id, key),
        Culprit::Platform => None,
    };
    // Memory origins are `memory[<index in the file>]`: rename to match.
    let file_index = |i: usize| {
        cfg.origins
            .memory(i)
            .and_then(|o| {
                o.field
                    .strip_prefix("memory[")?
                    .strip_suffix(']')?
                    .parse()
                    .ok()
            })
            .unwrap_or(i)
    };
    let message = error.renumber_memory(file_index).to_string();
    match origin {
        Some(o) => ConfigError::Layout {
            at: o.at,
            field: o.field,
            message,
        },
        None => ConfigError::Layout {
            at: crate::config::Location::unknown(
                &cfg.source
                    .as_ref()
                    .map_or_else(|| "<config>".to_string(), |p| p.display().to_string()),
            ),
            field: "<root>".to_string(),
            message,
        },
    }
}

#[cfg(test)]
mod placement_tests;
#[cfg(test)]
mod tests;
