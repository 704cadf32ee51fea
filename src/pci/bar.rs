//! Base address registers: what a function declares ([`BarSpec`]), what the
//! guest has programmed ([`BarRegion`]), and the optional [`BarMapper`] that
//! puts host resources at the BAR's address (memory slots, ioeventfds). The
//! bus device that forwards a mapped BAR's accesses to the function is
//! [`BarAdapter`](super::host_bridge::BarAdapter), in the host bridge: this
//! file describes BARs and knows nothing of functions.
//!
//! Sizing needs no special code: the address bits of a BAR register are
//! writable only above the BAR's size (`!(size - 1)`), and the type bits are
//! read-only, so after the guest writes all ones it reads back
//! `!(size - 1) | type bits`, which is the PCI sizing protocol.

use super::PciError;
use std::fmt;
use std::sync::Arc;

/// BAR register bit 0: I/O space indicator.
pub const BAR_IO_SPACE: u32 = 0x1;
/// BAR register bits 2:1 = 0b10: 64-bit memory BAR.
pub const BAR_MEM_TYPE_64: u32 = 0x4;
/// BAR register bit 3: prefetchable memory.
pub const BAR_MEM_PREFETCHABLE: u32 = 0x8;
/// Address bits of a memory BAR's low register.
pub const BAR_MEM_ADDR_MASK: u32 = 0xffff_fff0;
/// Address bits of an I/O BAR.
pub const BAR_IO_ADDR_MASK: u32 = 0xffff_fffc;

/// The three kinds of BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    /// 32-bit memory BAR (one register).
    Memory32,
    /// 64-bit memory BAR (two registers: this index and the next).
    Memory64,
    /// I/O space BAR.
    Io,
}

/// Error a [`BarMapper`] returns; logged by the bridge.
pub type BarMapError = Box<dyn std::error::Error + Send + Sync>;

/// Puts host-side resources behind a BAR wherever the guest maps it: a KVM
/// memory slot (ivshmem's shared-memory BAR), or ioeventfds on addresses
/// inside it (virtio-pci's queue notifications). Accesses KVM does not
/// complete itself still reach the function through the bus. The bridge calls
/// [`map`](Self::map) when the guest enables memory decode with the BAR at a
/// valid address, and [`unmap`](Self::unmap) before it disables decode,
/// moves the BAR, or the function goes away. Calls are made with the
/// bridge's lock held and no function lock held; an implementation must not
/// access the bridge's config window.
pub trait BarMapper: Send + Sync {
    /// Puts the resources at guest-physical `[gpa, gpa + size)`.
    fn map(&self, gpa: u64, size: u64) -> Result<(), BarMapError>;
    /// Removes the mapping made by the matching [`map`](Self::map).
    fn unmap(&self, gpa: u64, size: u64) -> Result<(), BarMapError>;
}

/// A BAR a function declares.
#[derive(Clone)]
pub struct BarSpec {
    kind: BarKind,
    size: u64,
    prefetchable: bool,
    memory: Option<Arc<dyn BarMapper>>,
}

impl fmt::Debug for BarSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BarSpec")
            .field("kind", &self.kind)
            .field("size", &format_args!("{:#x}", self.size))
            .field("prefetchable", &self.prefetchable)
            .field("memory_backed", &self.memory.is_some())
            .finish()
    }
}

impl BarSpec {
    /// A 32-bit memory BAR of `size` bytes (a power of two, 16 B ..= 2 GiB).
    pub fn memory32(size: u64) -> Self {
        BarSpec {
            kind: BarKind::Memory32,
            size,
            prefetchable: false,
            memory: None,
        }
    }

    /// A 64-bit memory BAR of `size` bytes (a power of two, at least 16 B).
    pub fn memory64(size: u64) -> Self {
        BarSpec {
            kind: BarKind::Memory64,
            size,
            prefetchable: false,
            memory: None,
        }
    }

    /// An I/O BAR of `size` bytes (a power of two, 4 ..= 256 B).
    pub fn io(size: u64) -> Self {
        BarSpec {
            kind: BarKind::Io,
            size,
            prefetchable: false,
            memory: None,
        }
    }

    /// Marks a memory BAR prefetchable.
    pub fn prefetchable(mut self) -> Self {
        self.prefetchable = true;
        self
    }

    /// Has `mapper` follow the BAR around: it is told whenever the guest maps
    /// or unmaps the BAR (memory slots, ioeventfds inside it).
    pub fn backed_by(mut self, mapper: Arc<dyn BarMapper>) -> Self {
        self.memory = Some(mapper);
        self
    }

    /// The kind.
    pub fn kind(&self) -> BarKind {
        self.kind
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the prefetchable bit is set.
    pub fn is_prefetchable(&self) -> bool {
        self.prefetchable
    }

    /// The mapper following this BAR, if any.
    pub fn mapper(&self) -> Option<&Arc<dyn BarMapper>> {
        self.memory.as_ref()
    }

    /// Number of BAR registers used (2 for a 64-bit BAR).
    pub fn registers(&self) -> usize {
        match self.kind {
            BarKind::Memory64 => 2,
            _ => 1,
        }
    }

    /// Checks the size and flags for `index`.
    pub fn validate(&self, index: usize) -> Result<(), PciError> {
        let bad = |reason: String| PciError::InvalidBar { index, reason };
        if index + self.registers() > 6 {
            return Err(bad(format!(
                "a {:?} BAR does not fit at index {index}",
                self.kind
            )));
        }
        if !self.size.is_power_of_two() {
            return Err(bad(format!("size {:#x} is not a power of two", self.size)));
        }
        let (min, max) = match self.kind {
            BarKind::Memory32 => (16, 1 << 31),
            BarKind::Memory64 => (16, 1 << 63),
            BarKind::Io => (4, 256),
        };
        if self.size < min || self.size > max {
            return Err(bad(format!(
                "size {:#x} outside {min:#x}..={max:#x} for a {:?} BAR",
                self.size, self.kind
            )));
        }
        if self.kind == BarKind::Io && (self.prefetchable || self.memory.is_some()) {
            return Err(bad(
                "an I/O BAR cannot be prefetchable or memory-backed".into()
            ));
        }
        Ok(())
    }

    /// Read-only type bits of the (low) register.
    pub fn flag_bits(&self) -> u32 {
        match self.kind {
            BarKind::Io => BAR_IO_SPACE,
            BarKind::Memory32 | BarKind::Memory64 => {
                let mut bits = 0;
                if self.kind == BarKind::Memory64 {
                    bits |= BAR_MEM_TYPE_64;
                }
                if self.prefetchable {
                    bits |= BAR_MEM_PREFETCHABLE;
                }
                bits
            }
        }
    }

    /// Writable bits of the low register and, for 64-bit BARs, the high one.
    pub fn writable_masks(&self) -> (u32, Option<u32>) {
        let addr_mask = !(self.size.wrapping_sub(1));
        match self.kind {
            BarKind::Io => (addr_mask as u32 & BAR_IO_ADDR_MASK, None),
            BarKind::Memory32 => (addr_mask as u32 & BAR_MEM_ADDR_MASK, None),
            BarKind::Memory64 => (
                addr_mask as u32 & BAR_MEM_ADDR_MASK,
                Some((addr_mask >> 32) as u32),
            ),
        }
    }

    /// The address programmed in the registers `low` (and `high`).
    pub fn address(&self, low: u32, high: u32) -> u64 {
        match self.kind {
            BarKind::Io => u64::from(low & BAR_IO_ADDR_MASK),
            BarKind::Memory32 => u64::from(low & BAR_MEM_ADDR_MASK),
            BarKind::Memory64 => (u64::from(high) << 32) | u64::from(low & BAR_MEM_ADDR_MASK),
        }
    }

    /// Whether a BAR at `base` may be decoded at all: not at 0 (never
    /// programmed), not wrapping, and a 32-bit BAR must end below 4 GiB - 1
    /// (this excludes the all-ones sizing pattern, as QEMU does).
    pub fn decodable_at(&self, base: u64) -> bool {
        if base == 0 {
            return false;
        }
        let Some(end) = base.checked_add(self.size) else {
            return false;
        };
        match self.kind {
            BarKind::Memory32 => end < u64::from(u32::MAX),
            BarKind::Io => end <= 0x1_0000,
            BarKind::Memory64 => true,
        }
    }
}

/// A BAR as the guest has programmed and enabled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarRegion {
    /// BAR index (0..=5; the low register of a 64-bit BAR).
    pub index: usize,
    /// The kind.
    pub kind: BarKind,
    /// Guest-physical (or I/O port) base.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
    /// Prefetchable bit.
    pub prefetchable: bool,
}

impl BarRegion {
    /// One past the last address.
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }
}
