//! MSI-X for emulated PCI functions: the capability, the vector table and the
//! pending-bit array (PCI Local Bus 3.0, 6.8.2).
//!
//! A function that offers MSI-X owns an [`Msix`]: it adds the capability to
//! its header with [`Msix::add_capability`], forwards config writes that touch
//! the capability to [`Msix::sync`], serves the table and PBA from one of its
//! BARs with [`Msix::read_table`] / [`Msix::write_table`] (and the PBA
//! equivalents), and signals vectors with [`Msix::notify`]. Masked vectors
//! (per vector or function-wide) set their pending bit; unmasking delivers
//! them. Guest accesses of the wrong size or alignment read as zero and are
//! ignored, with a rate-limited log line.

use super::config_space::ConfigSpace;
use super::PciError;
use crate::ratelimit::RateLimiter;
use std::sync::Arc;

/// Capability ID of MSI-X.
pub const CAP_ID_MSIX: u8 = 0x11;
/// Bytes per table entry.
pub const ENTRY_SIZE: u64 = 16;
/// Message control bit 15: MSI-X enable.
const CONTROL_ENABLE: u16 = 1 << 15;
/// Message control bit 14: function mask.
const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
/// Vector control bit 0: this vector is masked.
const VECTOR_MASKED: u32 = 1;

/// Delivers a message-signalled interrupt (an address/data pair the guest
/// programmed). The VMM implements it with an irqfd per vector (an MSI route
/// in KVM's GSI table) or `KVM_SIGNAL_MSI`; tests record.
pub trait MsiSender: Send + Sync {
    /// Sends the message of table entry `vector`: `address`/`data` are what
    /// the guest programmed there (an implementation that caches routes per
    /// vector must compare them with what it cached).
    fn send(&self, vector: u16, address: u64, data: u32);
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Entry {
    address_low: u32,
    address_high: u32,
    data: u32,
    control: u32,
}

impl Entry {
    fn masked_at_reset() -> Self {
        Entry {
            control: VECTOR_MASKED,
            ..Entry::default()
        }
    }
}

/// The MSI-X state of one function.
pub struct Msix {
    entries: Vec<Entry>,
    pending: Vec<u64>,
    enabled: bool,
    function_masked: bool,
    cap_offset: Option<usize>,
    sender: Arc<dyn MsiSender>,
    log: RateLimiter,
}

impl Msix {
    /// `vectors` table entries (1..=2048), all masked, MSI-X disabled.
    pub fn new(vectors: u16, sender: Arc<dyn MsiSender>) -> Self {
        let n = usize::from(vectors.clamp(1, 2048));
        Msix {
            entries: vec![Entry::masked_at_reset(); n],
            pending: vec![0; n.div_ceil(64)],
            enabled: false,
            function_masked: false,
            cap_offset: None,
            sender,
            log: RateLimiter::new(10),
        }
    }

    /// Number of vectors.
    pub fn vectors(&self) -> usize {
        self.entries.len()
    }

    /// Bytes the table occupies in its BAR.
    pub fn table_size(&self) -> u64 {
        self.entries.len() as u64 * ENTRY_SIZE
    }

    /// Bytes the pending-bit array occupies in its BAR (whole qwords).
    pub fn pba_size(&self) -> u64 {
        self.pending.len() as u64 * 8
    }

    /// Whether the guest enabled MSI-X (then INTx must stay quiet).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Adds the capability to `config`: the table at `table_offset` and the
    /// PBA at `pba_offset` of BAR `bar` (offsets 8-byte aligned). Message
    /// control's enable and function-mask bits are writable.
    pub fn add_capability(
        &mut self,
        config: &mut ConfigSpace,
        bar: u8,
        table_offset: u32,
        pba_offset: u32,
    ) -> Result<usize, PciError> {
        let control = (self.entries.len() - 1) as u16;
        let mut body = Vec::with_capacity(10);
        body.extend_from_slice(&control.to_le_bytes());
        body.extend_from_slice(&(table_offset | u32::from(bar & 7)).to_le_bytes());
        body.extend_from_slice(&(pba_offset | u32::from(bar & 7)).to_le_bytes());
        let offset = config.add_capability(CAP_ID_MSIX, &body)?;
        let writable = u32::from(CONTROL_ENABLE | CONTROL_FUNCTION_MASK) << 16;
        config.set_masks(offset / 4, writable, 0);
        self.cap_offset = Some(offset);
        Ok(offset)
    }

    /// Picks up the enable and function-mask bits after a config write;
    /// delivers vectors that became deliverable.
    pub fn sync(&mut self, config: &ConfigSpace) {
        let Some(at) = self.cap_offset else {
            return;
        };
        let control = config.read_u16(at + 2);
        self.enabled = control & CONTROL_ENABLE != 0;
        self.function_masked = control & CONTROL_FUNCTION_MASK != 0;
        self.deliver_pending();
    }

    /// Back to reset: disabled, every vector masked, nothing pending. The
    /// capability's bits are reset with the config space.
    pub fn reset(&mut self) {
        self.entries.fill(Entry::masked_at_reset());
        self.pending.fill(0);
        self.enabled = false;
        self.function_masked = false;
    }

    /// Signals `vector`: sent now, or pending while masked. A vector beyond
    /// the table is dropped with a log line. Returns false if MSI-X is
    /// disabled (the caller falls back to INTx).
    pub fn notify(&mut self, vector: u16) -> bool {
        if !self.enabled {
            return false;
        }
        let v = usize::from(vector);
        let Some(entry) = self.entries.get(v).copied() else {
            self.warn(format_args!(
                "vector {vector} beyond the table ({}); dropped",
                self.entries.len()
            ));
            return true;
        };
        if self.function_masked || entry.control & VECTOR_MASKED != 0 {
            self.pending[v / 64] |= 1 << (v % 64);
        } else {
            self.send(vector, entry);
        }
        true
    }

    /// Whether `vector`'s pending bit is set.
    pub fn is_pending(&self, vector: u16) -> bool {
        let v = usize::from(vector);
        self.pending
            .get(v / 64)
            .is_some_and(|w| w & (1 << (v % 64)) != 0)
    }

    fn send(&self, vector: u16, entry: Entry) {
        let address = u64::from(entry.address_high) << 32 | u64::from(entry.address_low);
        self.sender.send(vector, address, entry.data);
    }

    fn deliver_pending(&mut self) {
        if !self.enabled || self.function_masked {
            return;
        }
        for v in 0..self.entries.len() {
            let bit = 1u64 << (v % 64);
            if self.pending[v / 64] & bit != 0 && self.entries[v].control & VECTOR_MASKED == 0 {
                self.pending[v / 64] &= !bit;
                // `v` < the table size, which is at most 2048.
                self.send(v as u16, self.entries[v]);
            }
        }
    }

    fn warn(&self, msg: std::fmt::Arguments<'_>) {
        if self.log.allow() {
            log::warn!("MSI-X: {msg}");
        }
    }

    fn aligned(&self, what: &str, offset: u64, len: usize) -> bool {
        let ok = (len == 4 || len == 8) && offset.is_multiple_of(len as u64);
        if !ok {
            self.warn(format_args!(
                "{len}-byte {what} access at {offset:#x} (dword or qword only); ignored"
            ));
        }
        ok
    }

    fn entry_dword(&self, offset: u64) -> u32 {
        let Some(e) = self.entries.get((offset / ENTRY_SIZE) as usize) else {
            return 0;
        };
        match offset % ENTRY_SIZE {
            0 => e.address_low,
            4 => e.address_high,
            8 => e.data,
            _ => e.control,
        }
    }

    /// Guest read of the table at `offset` (relative to the table).
    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if !self.aligned("MSI-X table", offset, data.len()) {
            return;
        }
        for (i, chunk) in data.chunks_mut(4).enumerate() {
            let v = self.entry_dword(offset + 4 * i as u64);
            chunk.copy_from_slice(&v.to_le_bytes());
        }
    }

    /// Guest write of the table at `offset` (relative to the table).
    pub fn write_table(&mut self, offset: u64, data: &[u8]) {
        if !self.aligned("MSI-X table", offset, data.len()) {
            return;
        }
        let mut unmasked = false;
        for (i, chunk) in data.chunks(4).enumerate() {
            let at = offset + 4 * i as u64;
            let Some(e) = self.entries.get_mut((at / ENTRY_SIZE) as usize) else {
                continue;
            };
            let mut bytes = [0u8; 4];
            bytes.copy_from_slice(chunk);
            let v = u32::from_le_bytes(bytes);
            match at % ENTRY_SIZE {
                0 => e.address_low = v & !3,
                4 => e.address_high = v,
                8 => e.data = v,
                _ => {
                    unmasked |= e.control & VECTOR_MASKED != 0 && v & VECTOR_MASKED == 0;
                    e.control = v & VECTOR_MASKED;
                }
            }
        }
        if unmasked {
            self.deliver_pending();
        }
    }

    /// Guest read of the PBA at `offset` (relative to the PBA).
    pub fn read_pba(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if !self.aligned("MSI-X PBA", offset, data.len()) {
            return;
        }
        for (i, chunk) in data.chunks_mut(4).enumerate() {
            let at = offset + 4 * i as u64;
            let word = self.pending.get((at / 8) as usize).copied().unwrap_or(0);
            let v = (word >> ((at % 8) * 8)) as u32;
            chunk.copy_from_slice(&v.to_le_bytes());
        }
    }

    /// Guest write of the PBA: read-only, ignored with a log line.
    pub fn write_pba(&self, offset: u64, _data: &[u8]) {
        self.warn(format_args!(
            "write to the read-only PBA at {offset:#x} ignored"
        ));
    }
}
