//! [`PciToPciBridge`]: a PCI-to-PCI bridge function (type-1 header) that
//! makes a second bus of a host bridge visible to the guest.
//!
//! IDs: 1b36:0001, class 0x0604 (PCI-to-PCI bridge), as QEMU's `pci-bridge`,
//! which Linux drives with its generic bridge code. cellvm configures the
//! bridge as firmware would: primary bus = the host bridge's root bus,
//! secondary = subordinate = the bus behind it; Linux keeps numbers it
//! finds configured. The host bridge routes configuration accesses by bus
//! number (a guest that renumbers the buses is not followed).
//!
//! Registers (everything else of the type-1 header reads 0, writes are
//! ignored):
//!
//! | offset | register | access |
//! |---|---|---|
//! | 0x04 | command | memory, bus master, INTx disable (as every function) |
//! | 0x18 | primary, secondary, subordinate bus, secondary latency | RW, initially configured |
//! | 0x1c | I/O base and limit, secondary status | RO 0: no I/O window (cellvm's host bridges have no I/O space) |
//! | 0x20 | memory base and limit (1 MiB granularity) | RW bits 15:4 of each |
//! | 0x24..0x2f | prefetchable base, limit, upper halves | RO 0: no prefetchable window (such BARs go in the memory window) |
//! | 0x3c | interrupt line, bridge control | RW; interrupt pin 0 (none) |
//!
//! No BARs, no capabilities. Linux sizes and programs the memory window;
//! the functions behind it get their BARs inside it, and their INTx pins
//! are swizzled through the bridge's slot (docs/pci.md).

use super::config_space::{ConfigSpace, PciFunction, PciIds};

/// Vendor ID (Red Hat / QEMU).
pub const P2P_VENDOR_ID: u16 = 0x1b36;
/// Device ID of QEMU's PCI-to-PCI bridge.
pub const P2P_DEVICE_ID: u16 = 0x0001;

/// Type-1 header register offsets.
pub mod regs {
    /// Primary, secondary, subordinate bus numbers and secondary latency.
    pub const BUS_NUMBERS: usize = 0x18;
    /// I/O base and limit, secondary status.
    pub const IO_BASE: usize = 0x1c;
    /// Memory base and limit.
    pub const MEMORY_BASE: usize = 0x20;
    /// Prefetchable memory base and limit.
    pub const PREF_MEMORY_BASE: usize = 0x24;
    /// Interrupt line, pin and bridge control.
    pub const BRIDGE_CONTROL: usize = 0x3c;
}

/// Header type 1 (PCI-to-PCI bridge).
const HEADER_TYPE_BRIDGE: u8 = 0x01;
/// Writable bits of the memory base and limit (bits 15:4 of each).
const MEMORY_WINDOW_MASK: u32 = 0xfff0_fff0;
/// Writable bits of 0x3c: the interrupt line and the bridge-control bits
/// Linux uses (parity, SERR, ISA, VGA, master abort, secondary reset).
const BRIDGE_CONTROL_MASK: u32 = 0x007f_00ff;

/// A PCI-to-PCI bridge function.
pub struct PciToPciBridge {
    config: ConfigSpace,
}

impl PciToPciBridge {
    /// A bridge from `primary` to `secondary` (also its subordinate bus).
    pub fn new(primary: u8, secondary: u8) -> Self {
        let mut config = ConfigSpace::new(PciIds {
            vendor_id: P2P_VENDOR_ID,
            device_id: P2P_DEVICE_ID,
            class: 0x06,
            subclass: 0x04,
            prog_if: 0,
            revision: 0,
            subsystem_vendor_id: 0,
            subsystem_id: 0,
        });
        config.set_initial_bytes(
            super::config_space::regs::HEADER_TYPE,
            &[HEADER_TYPE_BRIDGE],
        );
        config.set_initial_bytes(regs::BUS_NUMBERS, &[primary, secondary, secondary, 0]);
        config.set_masks(regs::BUS_NUMBERS / 4, u32::MAX, 0);
        config.set_masks(regs::IO_BASE / 4, 0, 0);
        config.set_masks(regs::MEMORY_BASE / 4, MEMORY_WINDOW_MASK, 0);
        config.set_masks(regs::PREF_MEMORY_BASE / 4, 0, 0);
        config.set_masks(regs::BRIDGE_CONTROL / 4, BRIDGE_CONTROL_MASK, 0);
        PciToPciBridge { config }
    }

    /// The bus behind the bridge, as the guest sees it now.
    pub fn secondary_bus(&self) -> u8 {
        self.config.read_u8(regs::BUS_NUMBERS + 1)
    }

    /// The memory window `[base, limit]` the guest programmed, if open.
    pub fn memory_window(&self) -> Option<(u64, u64)> {
        let r = self.config.read(regs::MEMORY_BASE / 4);
        let base = u64::from(r & 0xfff0) << 16;
        let limit = (u64::from(r >> 16 & 0xfff0) << 16) | 0xf_ffff;
        (base <= limit).then_some((base, limit))
    }
}

impl PciFunction for PciToPciBridge {
    /// Every register is served from the [`ConfigSpace`]; reads have no
    /// side effects.
    fn mirror_config(&self) -> bool {
        true
    }

    fn config(&self) -> &ConfigSpace {
        &self.config
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }

    /// No BARs: never called.
    fn read_bar(&mut self, _bar: usize, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    /// No BARs: never called.
    fn write_bar(&mut self, _bar: usize, _offset: u64, _data: &[u8]) {}
}
