//! [`PciTestDevice`]: a tiny PCI function that proves BAR accesses and INTx
//! end to end.
//!
//! IDs: vendor 0x1b36 (Red Hat, the vendor of QEMU's own devices), device
//! 0x00ce, class 0xff (unassigned), revision 1. 0x00ce is not allocated in
//! QEMU's `docs/specs/pci-ids.rst` (its 1b36 range runs 0x0001..=0x0015 plus
//! 0x0100), and no Linux driver matches 1b36:00ce or class 0xff, so nothing
//! binds by accident (0x0010, for instance, is QEMU's NVMe and the nvme
//! driver claims it). It is a test-only ID: do not ship a product with it.
//!
//! BAR0: 4 KiB, 32-bit, non-prefetchable memory. Registers (little endian,
//! any access size; bytes outside the registers read 0, writes ignored):
//!
//! | offset | name | access | meaning |
//! |---|---|---|---|
//! | 0x00 | magic | RO | `0x4454_5643`, the bytes "CVTD" |
//! | 0x04 | scratch | RW | any value; reset 0 |
//! | 0x08 | irq | RW | bit 0: write 1 raises INTx, 0 lowers it; reads the level |
//! | 0x0c | count | RO | number of write accesses that touched `scratch` |
//!
//! Interrupt pin INTA. A vendor-specific capability (id 0x09) at 0x40 holds
//! its length (8) at 0x42 and "CVTD" at 0x44, so capability walks have
//! something to find.

use super::bar::BarSpec;
use super::config_space::{ConfigSpace, IntxPin, PciFunction, PciIds};
use super::PciError;

/// Vendor ID (Red Hat / QEMU).
pub const TEST_DEVICE_VENDOR_ID: u16 = 0x1b36;
/// Device ID (unallocated in QEMU's list, matched by no Linux driver).
pub const TEST_DEVICE_DEVICE_ID: u16 = 0x00ce;
/// Base class 0xff: device does not fit any defined class.
pub const TEST_DEVICE_CLASS: u8 = 0xff;
/// Revision.
pub const TEST_DEVICE_REVISION: u8 = 1;
/// Size of BAR0.
pub const TEST_DEVICE_BAR_SIZE: u64 = 0x1000;
/// Value of the magic register: "CVTD" in memory order.
pub const TEST_DEVICE_MAGIC: u32 = u32::from_le_bytes(*b"CVTD");

/// Register offsets in BAR0.
pub mod regs {
    /// Magic (RO).
    pub const MAGIC: u64 = 0x00;
    /// Scratch (RW).
    pub const SCRATCH: u64 = 0x04;
    /// Interrupt control (bit 0 = INTx level).
    pub const IRQ: u64 = 0x08;
    /// Count of writes to scratch (RO).
    pub const COUNT: u64 = 0x0c;
}

/// Capability id of the vendor-specific capability.
const CAP_VENDOR_SPECIFIC: u8 = 0x09;

/// The test device's state.
pub struct PciTestDevice {
    config: ConfigSpace,
    scratch: u32,
    count: u32,
}

impl PciTestDevice {
    /// A fresh test device (decode off, scratch 0, INTx low).
    pub fn new() -> Result<Self, PciError> {
        let mut config = ConfigSpace::new(PciIds {
            vendor_id: TEST_DEVICE_VENDOR_ID,
            device_id: TEST_DEVICE_DEVICE_ID,
            class: TEST_DEVICE_CLASS,
            subclass: 0,
            prog_if: 0,
            revision: TEST_DEVICE_REVISION,
            subsystem_vendor_id: TEST_DEVICE_VENDOR_ID,
            subsystem_id: TEST_DEVICE_DEVICE_ID,
        });
        config.add_bar(0, BarSpec::memory32(TEST_DEVICE_BAR_SIZE))?;
        config.set_interrupt_pin(Some(IntxPin::A));
        // Length byte (the whole capability is 8 bytes), a pad byte, then
        // the signature, dword-aligned at 0x44.
        let mut body = vec![8u8, 0];
        body.extend_from_slice(b"CVTD");
        config.add_capability(CAP_VENDOR_SPECIFIC, &body)?;
        Ok(PciTestDevice {
            config,
            scratch: 0,
            count: 0,
        })
    }

    /// The scratch register.
    pub fn scratch(&self) -> u32 {
        self.scratch
    }

    /// Number of writes that touched the scratch register.
    pub fn scratch_writes(&self) -> u32 {
        self.count
    }

    fn register(&self, reg: u64) -> u32 {
        match reg {
            regs::MAGIC => TEST_DEVICE_MAGIC,
            regs::SCRATCH => self.scratch,
            regs::IRQ => u32::from(self.config.intx_asserted()),
            regs::COUNT => self.count,
            _ => 0,
        }
    }
}

impl PciFunction for PciTestDevice {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }

    fn read_bar(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        if bar != 0 {
            data.fill(0xff);
            return;
        }
        for (i, byte) in data.iter_mut().enumerate() {
            let at = offset.saturating_add(i as u64);
            *byte = (self.register(at & !3) >> ((at & 3) * 8)) as u8;
        }
    }

    fn write_bar(&mut self, bar: usize, offset: u64, data: &[u8]) {
        if bar != 0 {
            return;
        }
        let mut scratch = self.scratch;
        let mut irq: Option<u32> = None;
        for (i, byte) in data.iter().enumerate() {
            let at = offset.saturating_add(i as u64);
            let shift = (at & 3) * 8;
            let merge = |old: u32| (old & !(0xff << shift)) | (u32::from(*byte) << shift);
            match at & !3 {
                regs::SCRATCH => scratch = merge(scratch),
                regs::IRQ => {
                    let old = irq.unwrap_or_else(|| self.register(regs::IRQ));
                    irq = Some(merge(old));
                }
                _ => {}
            }
        }
        if data
            .iter()
            .enumerate()
            .any(|(i, _)| offset.saturating_add(i as u64) & !3 == regs::SCRATCH)
        {
            self.scratch = scratch;
            self.count = self.count.wrapping_add(1);
        }
        if let Some(v) = irq {
            self.config.set_intx(v & 1 != 0);
        }
    }

    fn reset(&mut self) {
        self.scratch = 0;
        self.count = 0;
        self.config.reset();
    }
}
