//! Decoding of configuration-window offsets (ECAM and CAM).
//!
//! ECAM: `offset = bus << 20 | device << 15 | function << 12 | register`
//! (4 KiB of configuration space per function). CAM: `offset = bus << 16 |
//! device << 11 | function << 8 | register` (256 bytes per function). The bus
//! field is relative to the window base; the bridge's first bus sits at
//! offset 0.

use super::PciError;
use crate::config::PciHostKind;
use std::fmt;

/// Bytes of configuration space per function behind an ECAM window.
pub const ECAM_FUNCTION_SIZE: usize = 4096;
/// Bytes of configuration space per function behind a CAM window.
pub const CAM_FUNCTION_SIZE: usize = 256;

/// A PCI function's address: absolute bus, device (0..=31), function (0..=7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    /// Absolute bus number.
    pub bus: u8,
    /// Device number, 0..=31.
    pub device: u8,
    /// Function number, 0..=7.
    pub function: u8,
}

impl PciAddress {
    /// The requester ID of the function: `bus << 8 | device << 3 |
    /// function` (the MSI DeviceID on aarch64).
    pub fn requester_id(&self) -> u32 {
        u32::from(self.bus) << 8 | u32::from(self.device) << 3 | u32::from(self.function)
    }

    /// Checks the device and function ranges.
    pub fn new(bus: u8, device: u8, function: u8) -> Result<Self, PciError> {
        if device > 31 || function > 7 {
            return Err(PciError::InvalidAddress { device, function });
        }
        Ok(PciAddress {
            bus,
            device,
            function,
        })
    }

    /// `device << 3 | function`.
    pub fn devfn(&self) -> u8 {
        (self.device << 3) | self.function
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// Why an access to the configuration window was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadAccess {
    /// Not 1, 2 or 4 bytes (8-byte accesses included).
    Size(usize),
    /// Not naturally aligned, but inside one dword (a 2-byte access at 1).
    Misaligned,
    /// Crosses a dword register boundary (a 4-byte access at 2).
    Straddling,
    /// Reaches past the end of the window.
    OutOfWindow,
}

impl fmt::Display for BadAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadAccess::Size(n) => write!(f, "unsupported size {n}"),
            BadAccess::Misaligned => f.write_str("misaligned"),
            BadAccess::Straddling => f.write_str("straddles a register boundary"),
            BadAccess::OutOfWindow => f.write_str("outside the window"),
        }
    }
}

/// Result of decoding one access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// A well-formed access to `register` (byte offset within the function's
    /// configuration space) of the function at `address`. Whether a function
    /// is there, and whether its configuration space is that large, is for
    /// the bridge to say.
    Register {
        /// The function addressed.
        address: PciAddress,
        /// Byte offset of the access within the function's config space.
        register: u16,
    },
    /// A well-formed access to a bus outside the bridge's bus range: reads
    /// as all ones, writes are ignored, nothing is logged.
    Absent,
    /// A malformed access: reads as all ones, writes are ignored, and the
    /// bridge counts and logs it.
    Bad(BadAccess),
}

/// Decodes offsets within one bridge's configuration window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDecoder {
    kind: PciHostKind,
    bus_start: u8,
    bus_end: u8,
    window_size: u64,
}

impl ConfigDecoder {
    /// A decoder for buses `bus_start..=bus_end`, with a window exactly large
    /// enough for them (as `layout` allocates it).
    pub fn new(kind: PciHostKind, bus_start: u8, bus_end: u8) -> Self {
        let buses = u64::from(bus_end.saturating_sub(bus_start)) + 1;
        ConfigDecoder {
            kind,
            bus_start,
            bus_end,
            window_size: buses * Self::bus_size(kind),
        }
    }

    /// Overrides the window size (a window larger than the bus range decodes
    /// the extra buses as absent).
    pub fn with_window_size(mut self, window_size: u64) -> Self {
        self.window_size = window_size;
        self
    }

    /// ECAM or CAM.
    pub fn kind(&self) -> PciHostKind {
        self.kind
    }

    /// First absolute bus.
    pub fn bus_start(&self) -> u8 {
        self.bus_start
    }

    /// Last absolute bus.
    pub fn bus_end(&self) -> u8 {
        self.bus_end
    }

    /// Size of the window in bytes.
    pub fn window_size(&self) -> u64 {
        self.window_size
    }

    /// Bytes of window per bus.
    pub fn bus_size(kind: PciHostKind) -> u64 {
        match kind {
            PciHostKind::Ecam => 1 << 20,
            PciHostKind::Cam => 1 << 16,
        }
    }

    /// Bytes of configuration space per function this window can address.
    pub fn function_size(&self) -> usize {
        match self.kind {
            PciHostKind::Ecam => ECAM_FUNCTION_SIZE,
            PciHostKind::Cam => CAM_FUNCTION_SIZE,
        }
    }

    fn shifts(&self) -> (u32, u32, u32) {
        match self.kind {
            PciHostKind::Ecam => (20, 15, 12),
            PciHostKind::Cam => (16, 11, 8),
        }
    }

    /// Decodes an access of `len` bytes at `offset` into the window.
    pub fn decode(&self, offset: u64, len: usize) -> Decoded {
        if !matches!(len, 1 | 2 | 4) {
            return Decoded::Bad(BadAccess::Size(len));
        }
        let len64 = len as u64;
        if !offset.is_multiple_of(len64) {
            return Decoded::Bad(if (offset & 3) + len64 > 4 {
                BadAccess::Straddling
            } else {
                BadAccess::Misaligned
            });
        }
        match offset.checked_add(len64) {
            Some(end) if end <= self.window_size => {}
            _ => return Decoded::Bad(BadAccess::OutOfWindow),
        }
        let (bus_shift, dev_shift, fn_shift) = self.shifts();
        let relative = offset >> bus_shift;
        let bus = u64::from(self.bus_start) + relative;
        if bus > u64::from(self.bus_end) {
            return Decoded::Absent;
        }
        let device = ((offset >> dev_shift) & 0x1f) as u8;
        let function = ((offset >> fn_shift) & 0x7) as u8;
        let register = (offset & ((1 << fn_shift) - 1)) as u16;
        Decoded::Register {
            address: PciAddress {
                bus: bus as u8,
                device,
                function,
            },
            register,
        }
    }

    /// The window offset of `register` of the function at `address`, or
    /// `None` if the bus is outside the range or the register outside what
    /// the window addresses per function. The inverse of [`decode`](Self::decode).
    pub fn offset_of(&self, address: PciAddress, register: u16) -> Option<u64> {
        if address.bus < self.bus_start
            || address.bus > self.bus_end
            || address.device > 31
            || address.function > 7
            || usize::from(register) >= self.function_size()
        {
            return None;
        }
        let (bus_shift, dev_shift, fn_shift) = self.shifts();
        Some(
            (u64::from(address.bus - self.bus_start) << bus_shift)
                | (u64::from(address.device) << dev_shift)
                | (u64::from(address.function) << fn_shift)
                | u64::from(register),
        )
    }
}
