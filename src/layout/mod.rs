//! The cell's address map and interrupt allocation: the single source of
//! truth for where every device lives.
//!
//! [`CellLayout::new`] places everything a validated [`CellConfig`] asks for.
//! Runtime attachment later reserves more space through the same
//! [`AddressMap`] and [`IrqAllocator`], so a collision is impossible by
//! construction rather than by convention.

mod address_map;
mod irq;

pub use address_map::{AddressMap, Reservation};
pub use irq::IrqAllocator;

use crate::config::{CellConfig, PciHostKind, Window};
use thiserror::Error;

/// Guest-physical constants of the x86_64 cell platform.
pub mod consts {
    /// RAM may not be placed in `[DEVICE_WINDOW_START, DEVICE_WINDOW_END)`.
    pub const DEVICE_WINDOW_START: u64 = 0xc000_0000;
    /// End of the 32-bit device window (4 GiB).
    pub const DEVICE_WINDOW_END: u64 = 0x1_0000_0000;
    /// Pool for PCI 32-bit MMIO windows.
    pub const PCI_MMIO32_POOL: (u64, u64) = (0xc000_0000, 0xd000_0000);
    /// cellvm's own platform devices.
    pub const PLATFORM_BASE: u64 = 0xd000_0000;
    /// Debug-exit device (write a byte: the cell stops, cellvm exits with it).
    pub const DEBUG_EXIT_BASE: u64 = PLATFORM_BASE;
    /// Boot-timer device (write [`BOOT_TIMER_MAGIC`]: cellvm logs time since start).
    pub const BOOT_TIMER_BASE: u64 = PLATFORM_BASE + 0x1000;
    /// Size of each small platform device.
    pub const PLATFORM_DEVICE_SIZE: u64 = 0x1000;
    /// Paravirtual channel: registers + message buffer.
    pub const CHANNEL_BASE: u64 = 0xd001_0000;
    /// Size of the channel window.
    pub const CHANNEL_SIZE: u64 = 0x1_0000;
    /// Pool for virtio-mmio devices (one page each).
    pub const VIRTIO_MMIO_POOL: (u64, u64) = (0xd010_0000, 0xd020_0000);
    /// Size of one virtio-mmio device.
    pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
    /// Pool for PCI configuration windows (ECAM/CAM), below 4 GiB.
    pub const PCI_CONFIG_POOL: (u64, u64) = (0xe000_0000, 0xfe00_0000);
    /// IOAPIC registers.
    pub const IOAPIC_BASE: u64 = 0xfec0_0000;
    /// IOAPIC register window size.
    pub const IOAPIC_SIZE: u64 = 0x1000;
    /// Local APIC registers.
    pub const LAPIC_BASE: u64 = 0xfee0_0000;
    /// Local APIC window size.
    pub const LAPIC_SIZE: u64 = 0x1000;
    /// Pool for 64-bit prefetchable PCI windows (256 GiB .. 320 GiB).
    pub const PCI_MMIO64_POOL: (u64, u64) = (0x40_0000_0000, 0x50_0000_0000);
    /// Number of IOAPIC pins (KVM's in-kernel IOAPIC).
    pub const IOAPIC_PINS: u32 = 24;
    /// Console UART I/O port base.
    pub const UART_PORT: u16 = 0x3f8;
    /// Console UART IOAPIC pin.
    pub const UART_IRQ: u32 = 4;
    /// Paravirtual channel IOAPIC pin.
    pub const CHANNEL_IRQ: u32 = 5;
    /// First IOAPIC pin handed out to devices.
    pub const FIRST_DYNAMIC_IRQ: u32 = 6;
    /// Value the guest writes to the boot-timer device.
    pub const BOOT_TIMER_MAGIC: u32 = 0x1234_5678;
    /// Bytes of configuration space per bus for ECAM.
    pub const ECAM_BUS_SIZE: u64 = 1 << 20;
    /// Bytes of configuration space per bus for CAM.
    pub const CAM_BUS_SIZE: u64 = 1 << 16;
}

use consts::*;

/// Errors from placing a cell's devices.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LayoutError {
    /// Two reservations overlap.
    #[error("{what} at {base:#x}..{end:#x} collides with {other}")]
    Collision {
        /// The reservation that failed.
        what: String,
        /// Its base.
        base: u64,
        /// Its end (exclusive).
        end: u64,
        /// The owner of the overlapping reservation.
        other: String,
    },
    /// A pool had no free, suitably aligned space left.
    #[error("no room for {what} ({size:#x} bytes) in {pool}")]
    Exhausted {
        /// What was being placed.
        what: String,
        /// Requested size.
        size: u64,
        /// Name of the pool.
        pool: &'static str,
    },
    /// An IRQ was requested that is out of range or already taken.
    #[error("IOAPIC pin {pin} for {what} is {reason}")]
    Irq {
        /// What wanted it.
        what: String,
        /// The pin.
        pin: u32,
        /// Why it cannot be had.
        reason: &'static str,
    },
    /// All dynamic IOAPIC pins are in use.
    #[error("no free IOAPIC pin for {0}")]
    IrqsExhausted(String),
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

/// Everything placed for one cell.
#[derive(Debug, Clone)]
pub struct CellLayout {
    /// Every reserved guest-physical range, with its owner.
    pub map: AddressMap,
    /// IOAPIC pin allocation.
    pub irqs: IrqAllocator,
    /// Guest RAM, as configured.
    pub memory: Vec<Window>,
    /// Placed virtio-mmio devices, in config order.
    pub virtio_mmio: Vec<VirtioMmioSlot>,
    /// Placed PCI host bridges, in config order.
    pub pci_bridges: Vec<PciBridgeSlot>,
}

impl CellLayout {
    /// Places RAM, the fixed platform devices, and every configured device.
    pub fn new(cfg: &CellConfig) -> Result<Self, LayoutError> {
        let mut map = AddressMap::default();
        let mut irqs = IrqAllocator::new(IOAPIC_PINS, FIRST_DYNAMIC_IRQ);
        let mut memory = Vec::new();
        for (i, r) in cfg.memory.iter().enumerate() {
            let w = Window {
                base: r.base,
                size: r.size,
            };
            map.reserve(format!("memory[{i}]"), w)?;
            memory.push(w);
        }
        let fixed = [
            ("debug-exit", DEBUG_EXIT_BASE, PLATFORM_DEVICE_SIZE),
            ("boot-timer", BOOT_TIMER_BASE, PLATFORM_DEVICE_SIZE),
            ("channel", CHANNEL_BASE, CHANNEL_SIZE),
            ("ioapic", IOAPIC_BASE, IOAPIC_SIZE),
            ("lapic", LAPIC_BASE, LAPIC_SIZE),
        ];
        for (name, base, size) in fixed {
            map.reserve(name.to_string(), Window { base, size })?;
        }
        irqs.reserve("console", UART_IRQ)?;
        irqs.reserve("channel", CHANNEL_IRQ)?;

        let mut virtio_mmio = Vec::new();
        for dev in &cfg.virtio_mmio {
            let owner = format!("virtio-mmio {}", dev.id);
            let window = match dev.base {
                Some(base) => map.reserve(
                    owner.clone(),
                    Window {
                        base,
                        size: VIRTIO_MMIO_SIZE,
                    },
                )?,
                None => map.allocate(
                    owner.clone(),
                    VIRTIO_MMIO_SIZE,
                    VIRTIO_MMIO_SIZE,
                    VIRTIO_MMIO_POOL,
                    "the virtio-mmio pool",
                )?,
            };
            let irq = match dev.irq {
                Some(pin) => irqs.reserve(&owner, pin)?,
                None => irqs.allocate(&owner)?,
            };
            virtio_mmio.push(VirtioMmioSlot {
                id: dev.id.clone(),
                window,
                irq,
            });
        }

        let mut pci_bridges = Vec::new();
        for br in &cfg.pci_bridges {
            let owner = format!("pci bridge {}", br.id);
            let per_bus = match br.kind {
                PciHostKind::Ecam => ECAM_BUS_SIZE,
                PciHostKind::Cam => CAM_BUS_SIZE,
            };
            let buses = u64::from(br.bus_end - br.bus_start) + 1;
            let config_size = per_bus * buses;
            let config = match br.config_base {
                Some(base) => map.reserve(
                    format!("{owner} config space"),
                    Window {
                        base,
                        size: config_size,
                    },
                )?,
                None => map.allocate(
                    format!("{owner} config space"),
                    config_size,
                    config_size.max(ECAM_BUS_SIZE),
                    PCI_CONFIG_POOL,
                    "the PCI config pool",
                )?,
            };
            let mmio32 = match br.mmio32 {
                Some(w) if w.base != 0 => map.reserve(format!("{owner} mmio32 window"), w)?,
                // No window, or only a size: allocate (16 MiB by default).
                other => {
                    let size = other.map_or(0x100_0000, |w| w.size);
                    map.allocate(
                        format!("{owner} mmio32 window"),
                        size,
                        size.next_power_of_two(),
                        PCI_MMIO32_POOL,
                        "the PCI 32-bit MMIO pool",
                    )?
                }
            };
            let mmio64 = match br.mmio64 {
                Some(w) if w.base == 0 => Some(map.allocate(
                    format!("{owner} mmio64 window"),
                    w.size,
                    w.size.next_power_of_two(),
                    PCI_MMIO64_POOL,
                    "the PCI 64-bit MMIO pool",
                )?),
                Some(w) => Some(map.reserve(format!("{owner} mmio64 window"), w)?),
                None => None,
            };
            let mut intx = [0u32; 4];
            for (n, pin) in intx.iter_mut().enumerate() {
                *pin = irqs.allocate(&format!("{owner} INT{}", char::from(b'A' + n as u8)))?;
            }
            pci_bridges.push(PciBridgeSlot {
                id: br.id.clone(),
                kind: br.kind,
                config,
                bus_start: br.bus_start,
                bus_end: br.bus_end,
                mmio32,
                mmio64,
                intx,
            });
        }

        Ok(CellLayout {
            map,
            irqs,
            memory,
            virtio_mmio,
            pci_bridges,
        })
    }

    /// Highest guest-physical address of RAM (exclusive).
    pub fn ram_end(&self) -> u64 {
        self.memory.iter().map(Window::end).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests;
