//! Where a placed device is: its slot in the layout.

use crate::config::{PciHostKind, Window};

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
