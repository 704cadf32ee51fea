//! The [`PciFunction`] trait and [`ConfigSpace`], a reusable type-0 header.
//!
//! The header is 64 dwords (256 bytes, conventional PCI). Every dword has
//! three masks: bits that are read-write, bits that are write-1-to-clear, and
//! (implicitly) everything else read-only. A write of `value` under the byte
//! mask `mask` does
//!
//! ```text
//! new = ((old & !(rw & mask)) | (value & rw & mask)) & !(value & w1c & mask)
//! ```
//!
//! so read-only bits hold, read-write bits round-trip, and write-1-to-clear
//! bits clear only where a one is written. BARs, the command register's side
//! effects and INTx are built on top of that.
//!
//! Every register change goes through one setter, which also stores the new
//! dword in the function's mirror page when it has one
//! ([`super::config_mirror`]): the page cannot miss a change, whichever side
//! made it.

use super::bar::{BarKind, BarRegion, BarSpec};
use super::config_mirror::MirrorPage;
use super::PciError;
use crate::devices::InterruptLine;
use std::sync::{Arc, Mutex};

/// Register byte offsets of the type-0 header.
pub mod regs {
    /// Vendor ID (16 bits).
    pub const VENDOR_ID: usize = 0x00;
    /// Device ID (16 bits).
    pub const DEVICE_ID: usize = 0x02;
    /// Command register (16 bits).
    pub const COMMAND: usize = 0x04;
    /// Status register (16 bits).
    pub const STATUS: usize = 0x06;
    /// Revision ID (8 bits).
    pub const REVISION_ID: usize = 0x08;
    /// Programming interface (8 bits).
    pub const PROG_IF: usize = 0x09;
    /// Subclass (8 bits).
    pub const SUBCLASS: usize = 0x0a;
    /// Base class (8 bits).
    pub const CLASS: usize = 0x0b;
    /// Header type (8 bits; bit 7 = multi-function).
    pub const HEADER_TYPE: usize = 0x0e;
    /// First BAR (six dwords 0x10..0x28).
    pub const BAR0: usize = 0x10;
    /// Subsystem vendor ID (16 bits).
    pub const SUBSYSTEM_VENDOR_ID: usize = 0x2c;
    /// Subsystem ID (16 bits).
    pub const SUBSYSTEM_ID: usize = 0x2e;
    /// Expansion ROM base (not implemented: reads 0).
    pub const ROM_BASE: usize = 0x30;
    /// Capabilities pointer (8 bits).
    pub const CAPABILITIES: usize = 0x34;
    /// Interrupt line (8 bits, read-write, no effect).
    pub const INTERRUPT_LINE: usize = 0x3c;
    /// Interrupt pin (8 bits, read-only: 0 none, 1..=4 INTA..INTD).
    pub const INTERRUPT_PIN: usize = 0x3d;
    /// First byte of the capability area.
    pub const CAPABILITY_START: usize = 0x40;
}

/// Command register bit: I/O space decode.
pub const COMMAND_IO: u16 = 1 << 0;
/// Command register bit: memory space decode.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// Command register bit: bus master.
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Command register bit: parity error response.
pub const COMMAND_PARITY: u16 = 1 << 6;
/// Command register bit: SERR# enable.
pub const COMMAND_SERR: u16 = 1 << 8;
/// Command register bit: INTx disable.
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// Writable command bits.
pub const COMMAND_WRITABLE: u16 = COMMAND_IO
    | COMMAND_MEMORY
    | COMMAND_BUS_MASTER
    | COMMAND_PARITY
    | COMMAND_SERR
    | COMMAND_INTX_DISABLE;

/// Status register bit: INTx asserted by the function (read-only).
pub const STATUS_INTERRUPT: u16 = 1 << 3;
/// Status register bit: capability list present (read-only).
pub const STATUS_CAPABILITIES: u16 = 1 << 4;
/// Status register bit: master data parity error (RW1C).
pub const STATUS_MASTER_PARITY_ERROR: u16 = 1 << 8;
/// Status register bit: signaled target abort (RW1C).
pub const STATUS_SIGNALED_TARGET_ABORT: u16 = 1 << 11;
/// Status register bit: received target abort (RW1C).
pub const STATUS_RECEIVED_TARGET_ABORT: u16 = 1 << 12;
/// Status register bit: received master abort (RW1C).
pub const STATUS_RECEIVED_MASTER_ABORT: u16 = 1 << 13;
/// Status register bit: signaled system error (RW1C).
pub const STATUS_SIGNALED_SYSTEM_ERROR: u16 = 1 << 14;
/// Status register bit: detected parity error (RW1C).
pub const STATUS_DETECTED_PARITY_ERROR: u16 = 1 << 15;
/// Write-1-to-clear status bits.
pub const STATUS_W1C: u16 = STATUS_MASTER_PARITY_ERROR
    | STATUS_SIGNALED_TARGET_ABORT
    | STATUS_RECEIVED_TARGET_ABORT
    | STATUS_RECEIVED_MASTER_ABORT
    | STATUS_SIGNALED_SYSTEM_ERROR
    | STATUS_DETECTED_PARITY_ERROR;

/// Header type bit 7: the device has more than one function.
pub const HEADER_MULTI_FUNCTION: u8 = 0x80;

/// Size of the type-0 header's configuration space (conventional PCI).
pub const CONFIG_SPACE_SIZE: usize = 256;
const DWORDS: usize = CONFIG_SPACE_SIZE / 4;
const BAR_DWORD: usize = regs::BAR0 / 4;

/// A function's interrupt pin register value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum IntxPin {
    /// INTA#.
    A = 1,
    /// INTB#.
    B = 2,
    /// INTC#.
    C = 3,
    /// INTD#.
    D = 4,
}

/// Identification registers of a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PciIds {
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Base class.
    pub class: u8,
    /// Subclass.
    pub subclass: u8,
    /// Programming interface.
    pub prog_if: u8,
    /// Revision ID.
    pub revision: u8,
    /// Subsystem vendor ID.
    pub subsystem_vendor_id: u16,
    /// Subsystem ID.
    pub subsystem_id: u16,
}

/// A PCI function behind a [`PciHostBridge`](super::PciHostBridge).
///
/// Configuration accesses arrive as whole dwords: `reg` is the dword index
/// (byte offset / 4) and, for writes, `mask` has whole bytes set for the
/// bytes the guest wrote (`0x0000_ff00` for a 1-byte write at offset 1), with
/// `value` already shifted into place. `reg` is always below
/// [`config_size`](Self::config_size) / 4. BAR accesses carry the BAR index,
/// the offset within the BAR, and 1, 2, 4 or 8 bytes that lie inside it.
///
/// The default methods implement a plain type-0 header through
/// [`config`](Self::config) / [`config_mut`](Self::config_mut); override
/// them for registers with side effects and delegate the rest.
pub trait PciFunction: Send {
    /// The function's header.
    fn config(&self) -> &ConfigSpace;
    /// The function's header, mutably.
    fn config_mut(&mut self) -> &mut ConfigSpace;
    /// Bytes of configuration space (256 for a conventional function);
    /// registers beyond it read as all ones.
    fn config_size(&self) -> usize {
        self.config().size()
    }
    /// Reads dword `reg`.
    fn read_config(&mut self, reg: usize) -> u32 {
        self.config().read(reg)
    }
    /// Writes the bytes of dword `reg` selected by `mask`.
    fn write_config(&mut self, reg: usize, value: u32, mask: u32) {
        self.config_mut().write(reg, value, mask)
    }
    /// Guest read of `data.len()` bytes at `offset` in BAR `bar`.
    fn read_bar(&mut self, bar: usize, offset: u64, data: &mut [u8]);
    /// Guest write of `data` at `offset` in BAR `bar`.
    fn write_bar(&mut self, bar: usize, offset: u64, data: &[u8]);
    /// Whether the guest may read this function's configuration space from
    /// a mirror page instead of exiting ([`super::config_mirror`]): only if
    /// [`read_config`](Self::read_config) is the default (every register
    /// served from [`config`](Self::config), no read side effects). `false`
    /// unless a function says so.
    fn mirror_config(&self) -> bool {
        false
    }
    /// Returns the function to its power-on state (decode off, INTx low).
    fn reset(&mut self) {
        self.config_mut().reset()
    }
}

/// A function shared between the bridge and its BAR adapters.
pub type SharedFunction = Arc<Mutex<dyn PciFunction>>;

#[derive(Default)]
struct Intx {
    line: Option<Arc<dyn InterruptLine>>,
    /// The function's own level (what the status bit shows).
    asserted: bool,
    /// What was last driven onto `line`.
    driven: bool,
}

/// A type-0 configuration header with masks, BARs, capabilities and INTx.
pub struct ConfigSpace {
    regs: [u32; DWORDS],
    initial: [u32; DWORDS],
    rw: [u32; DWORDS],
    w1c: [u32; DWORDS],
    bars: [Option<BarSpec>; 6],
    /// Byte offset of the last capability's header, if any.
    last_capability: Option<usize>,
    /// Where the next capability goes.
    next_capability: usize,
    intx: Intx,
    /// The page the guest reads these registers from, if mirrored: every
    /// register change is written through to it ([`super::config_mirror`]).
    mirror: Option<Arc<MirrorPage>>,
}

impl ConfigSpace {
    /// A header with the given IDs, no BARs, no capabilities, no interrupt
    /// pin, decode off.
    pub fn new(ids: PciIds) -> Self {
        let mut regs = [0u32; DWORDS];
        regs[0] = u32::from(ids.vendor_id) | (u32::from(ids.device_id) << 16);
        regs[2] = u32::from(ids.revision)
            | (u32::from(ids.prog_if) << 8)
            | (u32::from(ids.subclass) << 16)
            | (u32::from(ids.class) << 24);
        regs[regs::SUBSYSTEM_VENDOR_ID / 4] =
            u32::from(ids.subsystem_vendor_id) | (u32::from(ids.subsystem_id) << 16);
        let mut rw = [0u32; DWORDS];
        let mut w1c = [0u32; DWORDS];
        rw[regs::COMMAND / 4] = u32::from(COMMAND_WRITABLE);
        w1c[regs::STATUS / 4] = u32::from(STATUS_W1C) << 16;
        rw[regs::INTERRUPT_LINE / 4] = 0xff;
        ConfigSpace {
            regs,
            initial: regs,
            rw,
            w1c,
            bars: Default::default(),
            last_capability: None,
            next_capability: regs::CAPABILITY_START,
            intx: Intx::default(),
            mirror: None,
        }
    }

    /// Writes every register to `page` and keeps it up to date from now on
    /// (the bridge maps it into the guest afterwards).
    pub fn attach_mirror(&mut self, page: Arc<MirrorPage>) {
        for (reg, value) in self.regs.iter().enumerate() {
            page.store(reg, *value);
        }
        self.mirror = Some(page);
    }

    /// Stops writing register changes to the mirror page (the bridge has
    /// unmapped it).
    pub fn detach_mirror(&mut self) {
        self.mirror = None;
    }

    /// Whether a mirror page is attached.
    pub fn is_mirrored(&self) -> bool {
        self.mirror.is_some()
    }

    /// Sets dword `reg` (inside the header) and its mirror.
    fn set_reg(&mut self, reg: usize, value: u32) {
        if let Some(r) = self.regs.get_mut(reg) {
            *r = value;
            if let Some(page) = &self.mirror {
                page.store(reg, value);
            }
        }
    }

    /// Bytes of configuration space.
    pub fn size(&self) -> usize {
        CONFIG_SPACE_SIZE
    }

    /// Dword `reg`; all ones beyond the header.
    pub fn read(&self, reg: usize) -> u32 {
        self.regs.get(reg).copied().unwrap_or(u32::MAX)
    }

    /// Guest write of the bytes of dword `reg` selected by `mask`.
    pub fn write(&mut self, reg: usize, value: u32, mask: u32) {
        let (Some(old), Some(rw), Some(w1c)) = (
            self.regs.get(reg).copied(),
            self.rw.get(reg).copied(),
            self.w1c.get(reg).copied(),
        ) else {
            return;
        };
        let rw = rw & mask;
        let clear = w1c & mask & value;
        self.set_reg(reg, ((old & !rw) | (value & rw)) & !clear);
        if reg == regs::COMMAND / 4 {
            self.drive_intx(false);
        }
    }

    /// Byte at `offset` (0 beyond the header).
    pub fn read_u8(&self, offset: usize) -> u8 {
        (self.read(offset / 4) >> ((offset % 4) * 8)) as u8
    }

    /// Little-endian 16-bit value at `offset` (must not cross a dword).
    pub fn read_u16(&self, offset: usize) -> u16 {
        (self.read(offset / 4) >> ((offset % 4) * 8)) as u16
    }

    /// Sets bytes of the header from the device side (ignoring masks), both
    /// now and as the value restored by [`reset`](Self::reset). Bytes beyond
    /// the header are dropped.
    pub fn set_initial_bytes(&mut self, offset: usize, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            let at = offset + i;
            let (reg, shift) = (at / 4, (at % 4) * 8);
            if reg >= DWORDS {
                return;
            }
            let m = 0xffu32 << shift;
            self.set_reg(reg, (self.regs[reg] & !m) | (u32::from(*b) << shift));
            self.initial[reg] = (self.initial[reg] & !m) | (u32::from(*b) << shift);
        }
    }

    /// Makes bits of dword `reg` read-write (`rw`) and write-1-to-clear
    /// (`w1c`); all other bits read-only. For a function's own registers
    /// (capability fields); the header's masks are set up by [`new`](Self::new)
    /// and [`add_bar`](Self::add_bar).
    pub fn set_masks(&mut self, reg: usize, rw: u32, w1c: u32) {
        if let (Some(r), Some(w)) = (self.rw.get_mut(reg), self.w1c.get_mut(reg)) {
            *r = rw & !w1c;
            *w = w1c;
        }
    }

    /// The read-write and write-1-to-clear masks of dword `reg`.
    pub fn masks(&self, reg: usize) -> (u32, u32) {
        (
            self.rw.get(reg).copied().unwrap_or(0),
            self.w1c.get(reg).copied().unwrap_or(0),
        )
    }

    /// Returns every register to its initial value, lowers INTx. Masks,
    /// BARs and capabilities stay.
    pub fn reset(&mut self) {
        for reg in 0..DWORDS {
            self.set_reg(reg, self.initial[reg]);
        }
        self.intx.asserted = false;
        self.sync_interrupt_status();
        self.drive_intx(false);
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.read_u16(regs::COMMAND)
    }

    /// The status register.
    pub fn status(&self) -> u16 {
        self.read_u16(regs::STATUS)
    }

    /// Whether memory decode is on.
    pub fn memory_enabled(&self) -> bool {
        self.command() & COMMAND_MEMORY != 0
    }

    /// Whether I/O decode is on.
    pub fn io_enabled(&self) -> bool {
        self.command() & COMMAND_IO != 0
    }

    /// Whether the function may master the bus (DMA).
    pub fn bus_master_enabled(&self) -> bool {
        self.command() & COMMAND_BUS_MASTER != 0
    }

    /// Whether INTx is disabled by the command register.
    pub fn intx_disabled(&self) -> bool {
        self.command() & COMMAND_INTX_DISABLE != 0
    }

    /// Sets status bits from the device side (an error the function
    /// detected); the guest clears the RW1C ones by writing ones.
    pub fn set_status_bits(&mut self, bits: u16) {
        let reg = regs::STATUS / 4;
        self.set_reg(reg, self.regs[reg] | (u32::from(bits) << 16));
    }

    /// Sets or clears the header type's multi-function bit (the bridge does
    /// this for function 0 of a device with several functions).
    pub fn set_multi_function(&mut self, on: bool) {
        let reg = regs::HEADER_TYPE / 4;
        let bit = u32::from(HEADER_MULTI_FUNCTION) << ((regs::HEADER_TYPE % 4) * 8);
        let set = |r: u32| if on { r | bit } else { r & !bit };
        self.initial[reg] = set(self.initial[reg]);
        self.set_reg(reg, set(self.regs[reg]));
    }

    /// Whether the multi-function bit is set.
    pub fn is_multi_function(&self) -> bool {
        self.read_u8(regs::HEADER_TYPE) & HEADER_MULTI_FUNCTION != 0
    }

    /// Sets the interrupt pin register (`None`: the function uses no INTx).
    pub fn set_interrupt_pin(&mut self, pin: Option<IntxPin>) {
        self.set_initial_bytes(regs::INTERRUPT_PIN, &[pin.map_or(0, |p| p as u8)]);
    }

    /// The interrupt pin register (0 none, 1..=4 INTA..INTD).
    pub fn interrupt_pin(&self) -> u8 {
        self.read_u8(regs::INTERRUPT_PIN)
    }

    /// Declares BAR `index`. A 64-bit BAR also takes `index + 1`.
    pub fn add_bar(&mut self, index: usize, spec: BarSpec) -> Result<(), PciError> {
        spec.validate(index)?;
        for i in index..index + spec.registers() {
            if self.bar_register_used(i) {
                return Err(PciError::InvalidBar {
                    index,
                    reason: format!("BAR register {i} is already in use"),
                });
            }
        }
        let (low_rw, high_rw) = spec.writable_masks();
        let low = BAR_DWORD + index;
        self.set_reg(low, spec.flag_bits());
        self.initial[low] = spec.flag_bits();
        self.rw[low] = low_rw;
        if let Some(high_rw) = high_rw {
            self.set_reg(low + 1, 0);
            self.initial[low + 1] = 0;
            self.rw[low + 1] = high_rw;
        }
        self.bars[index] = Some(spec);
        Ok(())
    }

    fn bar_register_used(&self, i: usize) -> bool {
        if self.bars.get(i).is_some_and(Option::is_some) {
            return true;
        }
        i > 0
            && self
                .bars
                .get(i - 1)
                .and_then(Option::as_ref)
                .is_some_and(|b| b.kind() == BarKind::Memory64)
    }

    /// The BAR declared at `index` (the low register of a 64-bit BAR).
    pub fn bar(&self, index: usize) -> Option<&BarSpec> {
        self.bars.get(index).and_then(Option::as_ref)
    }

    /// The address programmed in BAR `index`, whether decoded or not.
    pub fn bar_address(&self, index: usize) -> Option<u64> {
        let spec = self.bar(index)?;
        let low = self.regs[BAR_DWORD + index];
        let high = self.regs.get(BAR_DWORD + index + 1).copied().unwrap_or(0);
        Some(spec.address(low, high))
    }

    /// The BARs the function currently decodes: declared, the matching
    /// decode bit on, and programmed at a decodable address.
    pub fn active_bars(&self) -> Vec<BarRegion> {
        let mut out = Vec::new();
        for (index, spec) in self.bars.iter().enumerate() {
            let Some(spec) = spec else { continue };
            let enabled = match spec.kind() {
                BarKind::Io => self.io_enabled(),
                BarKind::Memory32 | BarKind::Memory64 => self.memory_enabled(),
            };
            let Some(base) = self.bar_address(index) else {
                continue;
            };
            if enabled && spec.decodable_at(base) {
                out.push(BarRegion {
                    index,
                    kind: spec.kind(),
                    base,
                    size: spec.size(),
                    prefetchable: spec.is_prefetchable(),
                });
            }
        }
        out
    }

    /// Appends a capability: `id`, a next pointer, then `body` (read-only;
    /// use [`set_masks`](Self::set_masks) on the returned offset for
    /// writable fields). Capabilities are dword-aligned from 0x40 and linked
    /// in the order added. Returns the capability's byte offset.
    pub fn add_capability(&mut self, id: u8, body: &[u8]) -> Result<usize, PciError> {
        let len = 2 + body.len();
        let offset = self.next_capability;
        let end = offset + len;
        if end > CONFIG_SPACE_SIZE {
            return Err(PciError::CapabilitySpace { id, len });
        }
        self.set_initial_bytes(offset, &[id, 0]);
        self.set_initial_bytes(offset + 2, body);
        match self.last_capability {
            Some(prev) => self.set_initial_bytes(prev + 1, &[offset as u8]),
            None => self.set_initial_bytes(regs::CAPABILITIES, &[offset as u8]),
        }
        let reg = regs::STATUS / 4;
        let bit = u32::from(STATUS_CAPABILITIES) << 16;
        self.set_reg(reg, self.regs[reg] | bit);
        self.initial[reg] |= bit;
        self.last_capability = Some(offset);
        self.next_capability = (end + 3) & !3;
        Ok(offset)
    }

    /// The capabilities as `(id, offset)`, walked through the pointers as a
    /// guest would (bounded, so a corrupt list cannot loop).
    pub fn capabilities(&self) -> Vec<(u8, usize)> {
        let mut out = Vec::new();
        if self.status() & STATUS_CAPABILITIES == 0 {
            return out;
        }
        let mut at = usize::from(self.read_u8(regs::CAPABILITIES) & !3);
        while at >= regs::CAPABILITY_START && out.len() < 48 {
            out.push((self.read_u8(at), at));
            at = usize::from(self.read_u8(at + 1) & !3);
        }
        out
    }

    /// Connects the function's INTx pin to `line` (or disconnects it). The
    /// previous line, if driven, is lowered first; the new one is driven
    /// with the current state.
    pub fn connect_intx(&mut self, line: Option<Arc<dyn InterruptLine>>) {
        if let Some(old) = self.intx.line.take() {
            if self.intx.driven {
                old.set_level(false);
            }
        }
        self.intx.driven = false;
        self.intx.line = line;
        self.drive_intx(true);
    }

    /// Raises (`true`) or lowers the function's INTx. The status register's
    /// interrupt bit follows the function's level; the line follows it unless
    /// the command register's INTx-disable bit is set.
    pub fn set_intx(&mut self, level: bool) {
        self.intx.asserted = level;
        self.sync_interrupt_status();
        self.drive_intx(false);
    }

    /// The function's own INTx level (the status bit).
    pub fn intx_asserted(&self) -> bool {
        self.intx.asserted
    }

    /// Whether the line is currently driven high.
    pub fn intx_driven(&self) -> bool {
        self.intx.driven
    }

    fn sync_interrupt_status(&mut self) {
        let bit = u32::from(STATUS_INTERRUPT) << 16;
        let reg = regs::STATUS / 4;
        let value = if self.intx.asserted {
            self.regs[reg] | bit
        } else {
            self.regs[reg] & !bit
        };
        self.set_reg(reg, value);
    }

    fn drive_intx(&mut self, force: bool) {
        let level = self.intx.asserted && !self.intx_disabled();
        if let Some(line) = &self.intx.line {
            if force || level != self.intx.driven {
                line.set_level(level);
            }
            self.intx.driven = level;
        } else {
            self.intx.driven = false;
        }
    }
}
