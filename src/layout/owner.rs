//! Who holds a reservation in the layout: a typed owner, printed the same
//! way in every message and in `cellvm check`'s map.

use std::fmt;

pub use crate::platform::Platform;

/// The part of a PCI host bridge a reservation is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BridgePart {
    /// The ECAM/CAM configuration window.
    ConfigSpace,
    /// The 32-bit MMIO window.
    Mmio32,
    /// The 64-bit prefetchable window.
    Mmio64,
    /// The IOAPIC pin of INTA (0) .. INTD (3).
    Intx(u8),
}

/// The holder of an address range, an I/O port range or an IOAPIC pin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    /// The `n`th RAM region (in address order).
    Memory(usize),
    /// A platform device.
    Platform(Platform),
    /// A virtio-mmio device (its window and its pin).
    VirtioMmio(String),
    /// A part of a PCI host bridge.
    PciBridge(String, BridgePart),
    /// An extra UART (its ports and its pin).
    Uart(String),
    /// An add-on connector (its window and its pins; the devices of the
    /// add-on plugged into it hold theirs inside).
    Connector(String),
}

impl Owner {
    /// The id of the configured or attached device this belongs to (not
    /// RAM, not a platform device).
    pub fn device_id(&self) -> Option<&str> {
        match self {
            Owner::VirtioMmio(id)
            | Owner::PciBridge(id, _)
            | Owner::Uart(id)
            | Owner::Connector(id) => Some(id),
            Owner::Memory(_) | Owner::Platform(_) => None,
        }
    }

    /// The key of the device's table that placed this reservation (`base`,
    /// `irq`, `config_base`, `mmio32`, `mmio64`, `port`); `irq` says the
    /// reservation at issue is an IOAPIC pin.
    pub fn config_key(&self, irq: bool) -> &'static str {
        match (self, irq) {
            (Owner::VirtioMmio(_) | Owner::Uart(_), true) => "irq",
            (Owner::VirtioMmio(_), false) => "base",
            (Owner::Uart(_), false) => "port",
            (Owner::PciBridge(_, BridgePart::ConfigSpace), _) => "config_base",
            (Owner::PciBridge(_, BridgePart::Mmio32), _) => "mmio32",
            (Owner::PciBridge(_, BridgePart::Mmio64), _) => "mmio64",
            (Owner::Connector(_), true) => "irqs",
            (Owner::Connector(_), false) => "size",
            (Owner::PciBridge(_, BridgePart::Intx(_)), _)
            | (Owner::Memory(_) | Owner::Platform(_), _) => "",
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Memory(i) => write!(f, "memory[{i}]"),
            Owner::Platform(p) => f.write_str(p.name()),
            Owner::VirtioMmio(id) => write!(f, "virtio-mmio {id}"),
            Owner::PciBridge(id, part) => match part {
                BridgePart::ConfigSpace => write!(f, "pci bridge {id} config space"),
                BridgePart::Mmio32 => write!(f, "pci bridge {id} mmio32 window"),
                BridgePart::Mmio64 => write!(f, "pci bridge {id} mmio64 window"),
                BridgePart::Intx(n) => {
                    write!(f, "pci bridge {id} INT{}", char::from(b'A' + (n % 4)))
                }
            },
            Owner::Uart(id) => write!(f, "uart {id}"),
            Owner::Connector(id) => write!(f, "connector {id}"),
        }
    }
}
