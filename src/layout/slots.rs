//! Where a placed device is: its slot in the layout.

use super::address_map::AddressMap;
use crate::config::{PciHostKind, Window};
use std::collections::BTreeMap;

/// A placed virtio-mmio device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtioMmioSlot {
    /// Device id from the config.
    pub id: String,
    /// MMIO window.
    pub window: Window,
    /// IOAPIC pin (level high; shared with other devices unless fixed).
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
    /// First of its 8 I/O ports (0 for a memory-mapped UART).
    pub port: u16,
    /// The page of a memory-mapped UART (an add-on board's, on a
    /// connector): its registers are the page's first 8 bytes. `None`: the
    /// UART is at `port`.
    pub mmio: Option<Window>,
    /// IOAPIC pin (edge rising).
    pub irq: u32,
}

/// A placed add-on connector and what is plugged into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorSlot {
    /// Connector id (also its device-tree label).
    pub id: String,
    /// The window add-on devices are placed in.
    pub window: Window,
    /// The IOAPIC pins reserved for add-on devices, ascending.
    pub irqs: Vec<u32>,
    /// The add-on plugged in, if any.
    pub addon: Option<String>,
    /// The add-on devices' reservations inside `window`.
    pub occupants: AddressMap,
    /// Which add-on device uses each of `irqs` that is in use.
    pub pin_users: BTreeMap<u32, String>,
}

impl ConnectorSlot {
    /// The path of the connector's node (`/connector-bus@d1000000`), where
    /// the base tree or a connector's overlay puts it.
    pub fn path(&self) -> String {
        format!("/connector-bus@{:x}", self.window.base)
    }

    /// Ids of the devices placed on the connector, by address.
    pub fn device_ids(&self) -> Vec<String> {
        self.occupants
            .entries()
            .iter()
            .filter_map(|r| r.owner.device_id().map(str::to_string))
            .collect()
    }
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
