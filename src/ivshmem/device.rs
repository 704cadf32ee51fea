//! [`IvshmemDevice`]: the ivshmem 2.0 PCI function, and
//! [`IvshmemSubscriber`], the receiving end of its doorbell socket in the
//! VMM's control loop: it drains the socket (at most 64 datagrams per
//! wake-up, so a flooding sender cannot starve the loop) and, if any message
//! was valid, has the device deliver one interrupt.
//!
//! Header: vendor:device 110a:4106 (subsystem the same), revision 0, class
//! 0xff with the 16-bit protocol in prog-if (low byte) and subclass (high
//! byte), 0x0000 "undefined" by default. Interrupt pin INTA. Command: only
//! memory space, bus master and INTx disable are writable. Status: the
//! capability list bit, and the interrupt status bit (3) while an interrupt
//! is pending (PCI 2.3 INTx semantics, see below).
//!
//! | BAR | what |
//! |---|---|
//! | 0 | 4 KiB, 32-bit memory: registers |
//! | 1 | 4 KiB, 32-bit memory: the MSI-X table (one vector) at 0, the pending-bit array at 0x800 |
//! | 2 (+3) | 64-bit prefetchable memory: the shared memory, size rounded up to a power of two |
//!
//! BAR0 registers (little endian; the specification only defines aligned
//! 32-bit accesses: other reads return the registers' bytes, other writes
//! are dropped and counted; offsets without a register read 0, ignore writes):
//!
//! | offset | register | access |
//! |---|---|---|
//! | 0x00 | ID: this peer's id | RO |
//! | 0x04 | Maximum Peers | RO |
//! | 0x08 | Interrupt Control: bit 0 enables interrupts | RW, 0 on reset |
//! | 0x0c | Doorbell: target id << 16 \| vector | WO (reads 0) |
//! | 0x10 | State: this peer's state | RW, 0 on reset |
//!
//! Vendor-specific capability (0x09) at 0x40: length 0x18 at +2, Privileged
//! Control at +3 (bit 0 RW: one-shot interrupt mode), State Table Size (u32)
//! at +4, R/W Section Size (u64) at +8, Output Section Size (u64) at +0x10.
//! No Base Address field: BAR2 locates the shared memory.
//!
//! Interrupts: MSI-X (capability 0x11 after the vendor-specific one) when
//! the guest enables it, otherwise level-triggered INTx with PCI 2.3
//! semantics, so that stock `uio_pci_generic` can consume them. (The
//! specification wants MSI-X only, with Interrupt Pin 0, where the
//! platform has it; cellvm offers both, as virtio-pci functions do, so
//! drivers of either kind work.) With MSI-X enabled, an event that passes
//! the gate below (and finds bus mastering on) sends vector 0 (the only vector: every doorbell and state
//! change uses it) and latches nothing: INTx stays low and the status bit
//! clear. A vector the guest masked is left pending in the PBA and sent
//! when unmasked (PCI semantics; the specification's devices drop it, and
//! its users read the event state from shared memory either way). An event (a doorbell to this peer or
//! a state change of another peer) that arrives while Interrupt Control bit 0
//! is set and memory decode is on latches "interrupt pending": the status
//! register's interrupt bit is set and INTx is asserted, unless the command
//! register's INTx-disable bit masks the line (the status bit shows the
//! latch regardless). In one-shot mode the event also clears Interrupt
//! Control bit 0. Further events merge into a pending interrupt. Any aligned
//! 32-bit write to Interrupt Control acknowledges: it clears the latch
//! (deasserting INTx), and writing 1 re-arms. Events while bit 0 is 0 or
//! memory decode is off are dropped, not latched. A function reset, or the
//! guest turning memory decode off (Interrupt Control becomes unreachable),
//! clears the latch.

use super::doorbell::{DoorbellSocket, Message, SendOutcome, VECTORS};
use super::region::IvshmemRegion;
use super::IvshmemError;
use crate::devices::{fill_le, le_value};
use crate::pci::config_space::{
    regs as header, COMMAND_BUS_MASTER, COMMAND_INTX_DISABLE, COMMAND_MEMORY,
};
use crate::pci::{BarMapper, BarSpec, ConfigSpace, IntxPin, MsiSender, Msix, PciFunction, PciIds};
use crate::ratelimit::RateLimiter;
use crate::sync;
use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

/// Vendor ID (Siemens, as the specification assigns).
pub const IVSHMEM_VENDOR_ID: u16 = 0x110a;
/// Device ID of ivshmem 2.0.
pub const IVSHMEM_DEVICE_ID: u16 = 0x4106;
/// Base class: 0xff.
pub const IVSHMEM_CLASS: u8 = 0xff;
/// Revision ID.
pub const IVSHMEM_REVISION: u8 = 0;
/// Protocol 0x0000: undefined.
pub const PROTOCOL_UNDEFINED: u16 = 0x0000;
/// BAR with the registers.
pub const REGISTER_BAR: usize = 0;
/// Size of the register BAR.
pub const REGISTER_BAR_SIZE: u64 = 0x1000;
/// BAR with the MSI-X table and pending-bit array.
pub const MSIX_BAR: usize = 1;
/// Size of the MSI-X BAR.
pub const MSIX_BAR_SIZE: u64 = 0x1000;
/// Offset of the pending-bit array in the MSI-X BAR (the table is at 0).
pub const MSIX_PBA: u64 = 0x800;
/// BAR with the shared memory (64-bit: registers 2 and 3).
pub const MEMORY_BAR: usize = 2;
/// Capability id of the vendor-specific capability.
pub const CAP_VENDOR_SPECIFIC: u8 = 0x09;
/// Interrupt Control bit 0: interrupts enabled.
pub const INT_CONTROL_ENABLE: u32 = 1;
/// Datagrams the subscriber handles per wake-up, so a flooding sender
/// cannot starve the control loop.
const MAX_BATCH: usize = 64;

/// BAR0 register offsets.
pub mod regs {
    /// ID (RO).
    pub const ID: u64 = 0x00;
    /// Maximum Peers (RO).
    pub const MAX_PEERS: u64 = 0x04;
    /// Interrupt Control (RW, bit 0).
    pub const INT_CONTROL: u64 = 0x08;
    /// Doorbell (WO).
    pub const DOORBELL: u64 = 0x0c;
    /// State (RW).
    pub const STATE: u64 = 0x10;
    /// One past the last register.
    pub const END: u64 = 0x14;
}

/// Vendor-specific capability fields (offsets from the capability).
pub mod cap {
    /// Length byte.
    pub const LENGTH: usize = 0x02;
    /// Privileged Control byte.
    pub const PRIV_CONTROL: usize = 0x03;
    /// State Table Size (u32).
    pub const STATE_TABLE_SIZE: usize = 0x04;
    /// R/W Section Size (u64).
    pub const RW_SIZE: usize = 0x08;
    /// Output Section Size (u64).
    pub const OUTPUT_SIZE: usize = 0x10;
    /// Capability length without a Base Address field.
    pub const LEN: u8 = 0x18;
    /// Privileged Control bit 0: one-shot interrupt mode.
    pub const PRIV_ONE_SHOT: u8 = 0x01;
}

/// Counters of what a device did (for tests and diagnostics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IvshmemStats {
    /// Doorbells handed to the target (its socket, or this device).
    pub doorbells_sent: u64,
    /// Doorbells dropped: absent or busy target, invalid target or vector.
    pub doorbells_dropped: u64,
    /// State-change notifications handed to peers' sockets.
    pub state_notifications_sent: u64,
    /// Events delivered as an interrupt: an MSI-X message, or they set the
    /// INTx pending latch or merged into one the guest had not acknowledged.
    pub interrupts: u64,
    /// Events dropped because Interrupt Control bit 0 was 0, memory decode
    /// was off, or MSI-X was enabled without bus mastering.
    pub interrupts_masked: u64,
    /// Interrupt Control writes that found an interrupt pending (and
    /// cleared it).
    pub interrupts_acked: u64,
    /// Guest accesses dropped: non-32-bit or misaligned register writes,
    /// writes to read-only shared memory.
    pub bad_accesses: u64,
}

/// An ivshmem 2.0 PCI function, one peer of a shared region.
pub struct IvshmemDevice {
    config: ConfigSpace,
    region: Arc<IvshmemRegion>,
    socket: Arc<DoorbellSocket>,
    /// Offset of the vendor-specific capability.
    cap: usize,
    msix: Msix,
    int_control: u32,
    state: u32,
    stats: IvshmemStats,
    log: RateLimiter,
}

impl IvshmemDevice {
    /// A device for `region` with protocol 0 (undefined). `memory` maps
    /// BAR2 into the guest (KVM slots over
    /// [`IvshmemRegion::guest_slots`]); without it BAR2 accesses exit and
    /// the device serves them from the same memory, slowly.
    ///
    /// MSI-X messages go to `msi`.
    ///
    /// Binds this peer's doorbell socket; if joining the region reset stale
    /// state entries, the other peers are notified.
    pub fn new(
        region: Arc<IvshmemRegion>,
        memory: Option<Arc<dyn BarMapper>>,
        msi: Arc<dyn MsiSender>,
    ) -> Result<Self, IvshmemError> {
        Self::with_protocol(region, memory, msi, PROTOCOL_UNDEFINED)
    }

    /// [`new`](Self::new) with another protocol in the class code.
    pub fn with_protocol(
        region: Arc<IvshmemRegion>,
        memory: Option<Arc<dyn BarMapper>>,
        msi: Arc<dyn MsiSender>,
        protocol: u16,
    ) -> Result<Self, IvshmemError> {
        let layout = *region.layout();
        let [prog_if, subclass] = protocol.to_le_bytes();
        let mut config = ConfigSpace::new(PciIds {
            vendor_id: IVSHMEM_VENDOR_ID,
            device_id: IVSHMEM_DEVICE_ID,
            class: IVSHMEM_CLASS,
            subclass,
            prog_if,
            revision: IVSHMEM_REVISION,
            subsystem_vendor_id: IVSHMEM_VENDOR_ID,
            subsystem_id: IVSHMEM_DEVICE_ID,
        });
        config.add_bar(REGISTER_BAR, BarSpec::memory32(REGISTER_BAR_SIZE))?;
        config.add_bar(MSIX_BAR, BarSpec::memory32(MSIX_BAR_SIZE))?;
        let mut shm = BarSpec::memory64(layout.bar_size()).prefetchable();
        if let Some(mapper) = memory {
            shm = shm.backed_by(mapper);
        }
        config.add_bar(MEMORY_BAR, shm)?;
        config.set_interrupt_pin(Some(IntxPin::A));
        let state_table_size = u32::try_from(layout.state_table_size)
            .map_err(|_| IvshmemError::InvalidConfig("state table larger than 4 GiB".into()))?;
        let mut body = vec![cap::LEN, 0];
        body.extend_from_slice(&state_table_size.to_le_bytes());
        body.extend_from_slice(&layout.rw_size.to_le_bytes());
        body.extend_from_slice(&layout.output_size.to_le_bytes());
        let cap_offset = config.add_capability(CAP_VENDOR_SPECIFIC, &body)?;
        // Privileged Control bit 0 (byte 3 of the capability's first dword).
        config.set_masks(cap_offset / 4, u32::from(cap::PRIV_ONE_SHOT) << 24, 0);
        let mut msix = Msix::new(VECTORS, msi);
        msix.add_capability(&mut config, MSIX_BAR as u8, 0, MSIX_PBA as u32)?;
        // Command: memory space, bus master, INTx disable; status static.
        config.set_masks(
            header::COMMAND / 4,
            u32::from(COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE),
            0,
        );
        let socket = Arc::new(DoorbellSocket::bind(&region)?);
        let reset_on_join = !region.reset_peers().is_empty();
        let mut device = IvshmemDevice {
            config,
            region,
            socket,
            cap: cap_offset,
            msix,
            int_control: 0,
            state: 0,
            stats: IvshmemStats::default(),
            log: RateLimiter::new(10),
        };
        if reset_on_join {
            // Entries left by crashed peers (or by us) went back to 0: that
            // is a state change the others must hear about.
            device.notify_state(0);
        }
        Ok(device)
    }

    /// The receiving end of this device's doorbell socket, for the VMM's
    /// control loop. It keeps the device only weakly.
    pub fn subscriber(device: &Arc<Mutex<IvshmemDevice>>) -> IvshmemSubscriber {
        let socket = sync::lock(device).socket.clone();
        IvshmemSubscriber::new(socket, Arc::downgrade(device))
    }

    /// The shared region.
    pub fn region(&self) -> &Arc<IvshmemRegion> {
        &self.region
    }

    /// This peer's id.
    pub fn peer_id(&self) -> u16 {
        self.region.peer_id()
    }

    /// The State register.
    pub fn state(&self) -> u32 {
        self.state
    }

    /// The Interrupt Control register.
    pub fn int_control(&self) -> u32 {
        self.int_control
    }

    /// Counters.
    pub fn stats(&self) -> IvshmemStats {
        self.stats
    }

    /// This peer's doorbell socket.
    pub fn socket_path(&self) -> &Path {
        self.socket.path()
    }

    /// Offset of the vendor-specific capability in configuration space.
    pub fn capability_offset(&self) -> usize {
        self.cap
    }

    fn one_shot(&self) -> bool {
        (self.config.read(self.cap / 4) >> 24) & u32::from(cap::PRIV_ONE_SHOT) != 0
    }

    /// Whether an interrupt is pending: latched by an event, not yet
    /// acknowledged through Interrupt Control (the status register's
    /// interrupt bit).
    pub fn interrupt_pending(&self) -> bool {
        self.config.intx_asserted()
    }

    /// Whether the guest enabled MSI-X.
    pub fn msix_enabled(&self) -> bool {
        self.msix.enabled()
    }

    /// An event for this peer (doorbell or another peer's state change):
    /// if Interrupt Control bit 0 is set and memory decode is on, sends
    /// MSI-X vector 0 (if bus mastering is on: a message is a memory write)
    /// or, with MSI-X disabled, latches a pending interrupt (status bit,
    /// INTx level); otherwise drops it.
    pub(crate) fn deliver_interrupt(&mut self) {
        let msix_blocked = self.msix.enabled() && !self.config.bus_master_enabled();
        if self.int_control & INT_CONTROL_ENABLE == 0
            || !self.config.memory_enabled()
            || msix_blocked
        {
            self.stats.interrupts_masked += 1;
            return;
        }
        if self.one_shot() {
            self.int_control = 0;
        }
        self.stats.interrupts += 1;
        if !self.msix.notify(0) {
            self.config.set_intx(true);
        }
    }

    /// A guest write to Interrupt Control: acknowledges (clears the pending
    /// latch, lowering INTx) and sets the enable bit as written.
    fn write_int_control(&mut self, value: u32) {
        if self.config.intx_asserted() {
            self.stats.interrupts_acked += 1;
        }
        self.int_control = value & INT_CONTROL_ENABLE;
        self.config.set_intx(false);
    }

    fn register(&self, offset: u64) -> u32 {
        match offset {
            regs::ID => u32::from(self.region.peer_id()),
            regs::MAX_PEERS => u32::from(self.region.layout().max_peers),
            regs::INT_CONTROL => self.int_control,
            regs::STATE => self.state,
            _ => 0,
        }
    }

    fn bad_access(&mut self, what: std::fmt::Arguments<'_>) {
        self.stats.bad_accesses += 1;
        if self.log.allow() {
            log::warn!(
                "ivshmem region {:?} peer {}: {what}; dropped",
                self.region.name(),
                self.region.peer_id()
            );
        }
    }

    fn ring_doorbell(&mut self, value: u32) {
        let vector = (value & 0xffff) as u16;
        let target = (value >> 16) as u16;
        let max_peers = self.region.layout().max_peers;
        let me = self.region.peer_id();
        if target >= max_peers || vector >= VECTORS {
            self.stats.doorbells_dropped += 1;
            if self.log.allow() {
                log::warn!(
                    "ivshmem region {:?} peer {me}: doorbell for vector {vector} of peer {target} \
                     dropped (the region has {max_peers} peers, {VECTORS} vector)",
                    self.region.name()
                );
            }
            return;
        }
        if target == me {
            self.stats.doorbells_sent += 1;
            self.deliver_interrupt();
            return;
        }
        // The guest's shared-memory writes before the doorbell are visible
        // before the target can see the datagram.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        match self.socket.send(&Message::doorbell(me, target, vector)) {
            Ok(SendOutcome::Sent) => self.stats.doorbells_sent += 1,
            Ok(outcome) => {
                self.stats.doorbells_dropped += 1;
                if self.log.allow() {
                    let why = match outcome {
                        SendOutcome::Absent => "is not running",
                        _ => "has a full queue",
                    };
                    log::info!(
                        "ivshmem region {:?} peer {me}: peer {target} {why}; doorbell dropped",
                        self.region.name()
                    );
                }
            }
            Err(e) => {
                self.stats.doorbells_dropped += 1;
                if self.log.allow() {
                    log::warn!(
                        "ivshmem region {:?} peer {me}: doorbell to peer {target}: {e}",
                        self.region.name()
                    );
                }
            }
        }
    }

    /// Tells every other peer that this peer's state is now `state` (the
    /// state table already says so). Absent peers are skipped: they read
    /// the table when they come up.
    fn notify_state(&mut self, state: u32) {
        let me = self.region.peer_id();
        for peer in (0..self.region.layout().max_peers).filter(|p| *p != me) {
            match self.socket.send(&Message::state_change(me, peer, state)) {
                Ok(SendOutcome::Sent) => self.stats.state_notifications_sent += 1,
                Ok(_) => {}
                Err(e) => {
                    if self.log.allow() {
                        log::warn!(
                            "ivshmem region {:?} peer {me}: state notification to peer {peer}: {e}",
                            self.region.name()
                        );
                    }
                }
            }
        }
    }

    fn write_state(&mut self, value: u32) {
        let old = self.state;
        self.state = value;
        self.region.set_own_state(value);
        if old != value {
            self.notify_state(value);
        }
    }

    fn write_register(&mut self, offset: u64, data: &[u8]) {
        if offset >= regs::END {
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            self.bad_access(format_args!(
                "{}-byte register write at {offset:#x} (only aligned 32-bit writes are defined)",
                data.len()
            ));
            return;
        }
        let value = le_value(data) as u32;
        match offset {
            regs::INT_CONTROL => self.write_int_control(value),
            regs::DOORBELL => self.ring_doorbell(value),
            regs::STATE => self.write_state(value),
            _ => {}
        }
    }

    /// A BAR2 write that exited: for read-only slots (state table, other
    /// peers' output sections), or anywhere if there is no mapper.
    fn write_memory(&mut self, offset: u64, data: &[u8]) {
        if self.region.write(offset, data) || offset >= self.region.layout().shared_size() {
            return;
        }
        self.bad_access(format_args!(
            "{}-byte write to read-only shared memory at {offset:#x}",
            data.len()
        ));
    }
}

impl PciFunction for IvshmemDevice {
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
        let decoding = self.config.memory_enabled();
        self.config.write(reg, value, mask);
        self.msix.sync(&self.config);
        if decoding && !self.config.memory_enabled() && self.config.intx_asserted() {
            // Interrupt Control is out of the guest's reach now: a pending
            // interrupt could never be acknowledged.
            self.config.set_intx(false);
        }
        if self.msix.enabled() && self.config.intx_asserted() {
            // Interrupts go out as messages now: a latch from before must
            // not keep INTx asserted.
            self.config.set_intx(false);
        }
    }

    fn read_bar(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        match bar {
            REGISTER_BAR => {
                if data.len() == 4 && offset.is_multiple_of(4) {
                    fill_le(data, u64::from(self.register(offset)));
                    return;
                }
                for (i, byte) in data.iter_mut().enumerate() {
                    let at = offset.saturating_add(i as u64);
                    *byte = (self.register(at & !3) >> ((at & 3) * 8)) as u8;
                }
            }
            MSIX_BAR if offset < MSIX_PBA => self.msix.read_table(offset, data),
            MSIX_BAR => self.msix.read_pba(offset - MSIX_PBA, data),
            MEMORY_BAR => {
                // Reached only where no KVM slot maps the memory: without a
                // mapper, or past the shared memory in the BAR's tail.
                if !self.region.read(offset, data) {
                    data.fill(0);
                }
            }
            _ => data.fill(0xff),
        }
    }

    fn write_bar(&mut self, bar: usize, offset: u64, data: &[u8]) {
        match bar {
            REGISTER_BAR => self.write_register(offset, data),
            MSIX_BAR if offset < MSIX_PBA => self.msix.write_table(offset, data),
            MSIX_BAR => self.msix.write_pba(offset - MSIX_PBA, data),
            MEMORY_BAR => self.write_memory(offset, data),
            _ => {}
        }
    }

    fn reset(&mut self) {
        self.int_control = 0;
        self.write_state(0);
        self.msix.reset();
        // Also clears the pending latch: status bit and INTx low.
        self.config.reset();
    }
}

impl Drop for IvshmemDevice {
    fn drop(&mut self) {
        // Disconnected: state 0 in the table, and the others hear of it.
        self.write_state(0);
        // Let the subscriber notice we are gone and close its end, then make
        // the socket unreachable.
        self.socket.wake();
        self.socket.unlink();
    }
}

/// The receiving end of a device's doorbell socket, for the VMM's
/// `event-manager` control loop. It holds the device weakly: once the
/// device is dropped (which wakes it), it stops watching and closes the
/// socket.
pub struct IvshmemSubscriber {
    socket: Option<Arc<DoorbellSocket>>,
    device: Weak<Mutex<IvshmemDevice>>,
    received: u64,
    rejected: u64,
    log: RateLimiter,
}

impl IvshmemSubscriber {
    fn new(socket: Arc<DoorbellSocket>, device: Weak<Mutex<IvshmemDevice>>) -> Self {
        IvshmemSubscriber {
            socket: Some(socket),
            device,
            received: 0,
            rejected: 0,
            log: RateLimiter::new(10),
        }
    }

    /// Valid messages received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Datagrams rejected.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Whether the device is gone and the socket closed.
    pub fn is_closed(&self) -> bool {
        self.socket.is_none()
    }

    fn close(&mut self, ops: &mut EventOps) {
        if let Some(socket) = self.socket.take() {
            let _ = ops.remove(Events::new(socket.as_ref(), EventSet::IN));
            log::debug!(
                "ivshmem region {:?} peer {}: device gone, socket closed",
                socket.region(),
                socket.peer_id()
            );
        }
    }
}

impl MutEventSubscriber for IvshmemSubscriber {
    fn init(&mut self, ops: &mut EventOps) {
        if let Some(socket) = &self.socket {
            if let Err(e) = ops.add(Events::new(socket.as_ref(), EventSet::IN)) {
                log::error!(
                    "ivshmem region {:?} peer {}: cannot watch {}: {e:?}",
                    socket.region(),
                    socket.peer_id(),
                    socket.path().display()
                );
            }
        }
    }

    fn process(&mut self, _events: Events, ops: &mut EventOps) {
        let Some(socket) = self.socket.clone() else {
            return;
        };
        let Some(device) = self.device.upgrade() else {
            self.close(ops);
            return;
        };
        let mut interrupt = false;
        for _ in 0..MAX_BATCH {
            match socket.receive() {
                Ok(None) => break,
                Ok(Some(Ok(msg))) => {
                    self.received += 1;
                    interrupt = true;
                    log::trace!("ivshmem region {:?}: {msg:?}", socket.region());
                }
                Ok(Some(Err(e))) => {
                    self.rejected += 1;
                    if self.log.allow() {
                        log::warn!(
                            "ivshmem region {:?} peer {}: dropped a datagram: {e}",
                            socket.region(),
                            socket.peer_id()
                        );
                    }
                }
                Err(e) => {
                    if self.log.allow() {
                        log::warn!(
                            "ivshmem region {:?} peer {}: receive failed: {e}",
                            socket.region(),
                            socket.peer_id()
                        );
                    }
                    break;
                }
            }
        }
        if interrupt {
            sync::lock(&device).deliver_interrupt();
        }
    }
}
