//! [`PciTestDevice`]: a tiny PCI function that proves BAR accesses, INTx and
//! MSI-X end to end.
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
//! | 0x08 | irq | RW | bit 0: write 1 raises INTx, 0 lowers it; reads the level asked for |
//! | 0x0c | count | RO | number of write accesses that touched `scratch` |
//! | 0x10 | msix | RW | a write of N signals MSI-X vector N; reads the number of vectors signalled (sent or left pending) |
//!
//! BAR1: 4 KiB, 32-bit, non-prefetchable memory: the MSI-X table
//! ([`TEST_DEVICE_MSIX_VECTORS`] entries) at 0 and the pending-bit array at
//! 0x800.
//!
//! Interrupt pin INTA. While the guest has MSI-X enabled INTx stays low (a
//! write to `irq` only records the level it asks for, which `irq` reads
//! back) and `msix` writes send messages; while it is disabled, or bus
//! mastering is off (a message is a memory write), `msix` writes are
//! ignored and not counted. Capabilities: vendor-specific (id
//! 0x09) at 0x40 with its length (8) at 0x42 and "CVTD" at 0x44, so
//! capability walks have something to find, then MSI-X (id 0x11) at 0x48.

use super::bar::BarSpec;
use super::config_space::{ConfigSpace, IntxPin, PciFunction, PciIds};
use super::msix::{MsiSender, Msix};
use super::PciError;
use std::sync::Arc;

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
/// Size of BAR1 (MSI-X table and PBA).
pub const TEST_DEVICE_MSIX_BAR_SIZE: u64 = 0x1000;
/// MSI-X vectors.
pub const TEST_DEVICE_MSIX_VECTORS: u16 = 2;
/// Offset of the pending-bit array in BAR1 (the table is at 0).
pub const TEST_DEVICE_MSIX_PBA: u64 = 0x800;
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
    /// MSI-X trigger (write N: signal vector N; read: vectors signalled).
    pub const MSIX: u64 = 0x10;
}

/// Capability id of the vendor-specific capability.
const CAP_VENDOR_SPECIFIC: u8 = 0x09;

/// The test device's state.
pub struct PciTestDevice {
    config: ConfigSpace,
    msix: Msix,
    scratch: u32,
    count: u32,
    /// The INTx level the guest asked for through `irq`.
    intx_requested: bool,
    /// Vectors signalled through `msix` while MSI-X was enabled.
    msix_signalled: u32,
}

impl PciTestDevice {
    /// A fresh test device (decode off, scratch 0, INTx low, MSI-X
    /// disabled) whose messages go to `msi`.
    pub fn new(msi: Arc<dyn MsiSender>) -> Result<Self, PciError> {
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
        config.add_bar(1, BarSpec::memory32(TEST_DEVICE_MSIX_BAR_SIZE))?;
        config.set_interrupt_pin(Some(IntxPin::A));
        // Length byte (the whole capability is 8 bytes), a pad byte, then
        // the signature, dword-aligned at 0x44.
        let mut body = vec![8u8, 0];
        body.extend_from_slice(b"CVTD");
        config.add_capability(CAP_VENDOR_SPECIFIC, &body)?;
        let mut msix = Msix::new(TEST_DEVICE_MSIX_VECTORS, msi);
        msix.add_capability(&mut config, 1, 0, TEST_DEVICE_MSIX_PBA as u32)?;
        Ok(PciTestDevice {
            config,
            msix,
            scratch: 0,
            count: 0,
            intx_requested: false,
            msix_signalled: 0,
        })
    }

    /// Whether the guest enabled MSI-X.
    pub fn msix_enabled(&self) -> bool {
        self.msix.enabled()
    }

    /// Drives INTx to the level the guest asked for, or low while MSI-X is
    /// enabled (a function with MSI-X on must not use INTx).
    fn update_intx(&mut self) {
        let level = self.intx_requested && !self.msix.enabled();
        self.config.set_intx(level);
    }

    /// A guest write of `vector` to `msix`. A vector beyond the table is
    /// dropped (by [`Msix::notify`], with a log line) and not counted;
    /// without bus mastering nothing is sent.
    fn signal(&mut self, vector: u32) {
        if !self.config.bus_master_enabled() {
            return;
        }
        let in_table = vector < u32::from(TEST_DEVICE_MSIX_VECTORS);
        let vector = u16::try_from(vector).unwrap_or(u16::MAX);
        if self.msix.notify(vector) && in_table {
            self.msix_signalled = self.msix_signalled.wrapping_add(1);
        }
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
            regs::IRQ => u32::from(self.intx_requested),
            regs::COUNT => self.count,
            regs::MSIX => self.msix_signalled,
            _ => 0,
        }
    }
}

impl PciFunction for PciTestDevice {
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

    fn write_config(&mut self, reg: usize, value: u32, mask: u32) {
        let msix_was_enabled = self.msix.enabled();
        self.config.write(reg, value, mask);
        self.msix.sync(&self.config);
        if self.msix.enabled() != msix_was_enabled {
            self.update_intx();
        }
    }

    fn read_bar(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        match bar {
            0 => {}
            1 if offset < TEST_DEVICE_MSIX_PBA => return self.msix.read_table(offset, data),
            1 => return self.msix.read_pba(offset - TEST_DEVICE_MSIX_PBA, data),
            _ => return data.fill(0xff),
        }
        for (i, byte) in data.iter_mut().enumerate() {
            let at = offset.saturating_add(i as u64);
            *byte = (self.register(at & !3) >> ((at & 3) * 8)) as u8;
        }
    }

    fn write_bar(&mut self, bar: usize, offset: u64, data: &[u8]) {
        match bar {
            0 => {}
            1 if offset < TEST_DEVICE_MSIX_PBA => return self.msix.write_table(offset, data),
            1 => return self.msix.write_pba(offset - TEST_DEVICE_MSIX_PBA, data),
            _ => return,
        }
        let mut scratch = self.scratch;
        let mut irq: Option<u32> = None;
        let mut msix: Option<u32> = None;
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
                regs::MSIX => msix = Some(merge(msix.unwrap_or(0))),
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
            self.intx_requested = v & 1 != 0;
            self.update_intx();
        }
        if let Some(v) = msix {
            self.signal(v);
        }
    }

    fn reset(&mut self) {
        self.scratch = 0;
        self.count = 0;
        self.intx_requested = false;
        self.msix_signalled = 0;
        self.msix.reset();
        self.config.reset();
    }
}
