//! Two device instances in one process stand in for two cells; each test
//! has its own runtime directory (a tempdir), so regions never collide.

use super::device::{
    cap, regs, CAP_VENDOR_SPECIFIC, IVSHMEM_DEVICE_ID, IVSHMEM_VENDOR_ID, MEMORY_BAR, MSIX_BAR,
    MSIX_BAR_SIZE, MSIX_PBA, REGISTER_BAR,
};
use super::doorbell::{socket_file_name, MESSAGE_LEN, MESSAGE_MAGIC};
use super::region::{region_file_name, HEADER_SIZE, STATE_TABLE_SIZE};
use super::*;
use crate::config::IvshmemConfig;
use crate::devices::InterruptLine;
use crate::pci::config_space::{
    regs as header, COMMAND_BUS_MASTER, COMMAND_INTX_DISABLE, COMMAND_MEMORY, STATUS_CAPABILITIES,
    STATUS_INTERRUPT,
};
use crate::pci::msix::CAP_ID_MSIX;
use crate::pci::{BarMapError, BarMapper, MsiSender, PciFunction};
use event_manager::{EventManager, SubscriberId, SubscriberOps};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use tempfile::TempDir;

const KIB: u64 = 1024;

fn cfg(
    region: &str,
    peer_id: u16,
    max_peers: u16,
    rw_size: u64,
    output_size: u64,
) -> IvshmemConfig {
    IvshmemConfig {
        region: region.into(),
        peer_id,
        max_peers,
        rw_size,
        output_size,
    }
}

/// A two-peer region with a 64 KiB R/W section and 4 KiB output sections.
fn pair_cfg(peer_id: u16) -> IvshmemConfig {
    cfg("shm0", peer_id, 2, 64 * KIB, 4 * KIB)
}

/// An INTx line that records every level it is driven to.
#[derive(Default)]
struct Line {
    changes: Mutex<Vec<bool>>,
}

impl InterruptLine for Line {
    fn set_level(&self, level: bool) {
        self.changes.lock().unwrap().push(level);
    }
}

impl Line {
    /// Number of times the line went high.
    fn rises(&self) -> usize {
        self.changes.lock().unwrap().iter().filter(|l| **l).count()
    }

    fn high(&self) -> bool {
        self.changes
            .lock()
            .unwrap()
            .last()
            .copied()
            .unwrap_or(false)
    }
}

/// An MSI sender that records every message (vector, address, data).
#[derive(Default)]
struct Msis(Mutex<Vec<(u16, u64, u32)>>);

impl MsiSender for Msis {
    fn send(&self, vector: u16, address: u64, data: u32) {
        self.0.lock().unwrap().push((vector, address, data));
    }
}

impl Msis {
    fn sent(&self) -> Vec<(u16, u64, u32)> {
        self.0.lock().unwrap().clone()
    }
}

/// A sender for devices whose messages no test looks at.
fn no_msi() -> Arc<dyn MsiSender> {
    Arc::new(Msis::default())
}

/// A mapper that records calls (the VMM's KVM-slot mapper stands here).
#[derive(Default)]
struct RecordingMapper {
    calls: Mutex<Vec<(bool, u64, u64)>>,
}

impl BarMapper for RecordingMapper {
    fn map(&self, gpa: u64, size: u64) -> Result<(), BarMapError> {
        self.calls.lock().unwrap().push((true, gpa, size));
        Ok(())
    }
    fn unmap(&self, gpa: u64, size: u64) -> Result<(), BarMapError> {
        self.calls.lock().unwrap().push((false, gpa, size));
        Ok(())
    }
}

/// One cell's ivshmem: the device, its INTx line, its MSI-X messages and
/// its control loop.
struct Cell {
    device: Arc<Mutex<IvshmemDevice>>,
    line: Arc<Line>,
    msis: Arc<Msis>,
    events: EventManager<IvshmemSubscriber>,
    sub: SubscriberId,
}

impl Cell {
    fn try_new(dir: &Path, cfg: &IvshmemConfig) -> Result<Self, IvshmemError> {
        let region = Arc::new(IvshmemRegion::open(dir, cfg)?);
        let msis = Arc::new(Msis::default());
        let device = Arc::new(Mutex::new(IvshmemDevice::new(region, None, msis.clone())?));
        let line = Arc::new(Line::default());
        {
            let mut dev = device.lock().unwrap();
            dev.config_mut().connect_intx(Some(line.clone()));
            // The guest enabled the device (memory decode), as it must
            // before it can reach BAR0.
            dev.write_config(header::COMMAND / 4, u32::from(COMMAND_MEMORY), 0xffff);
        }
        let mut events = EventManager::new().unwrap();
        let sub = events.add_subscriber(IvshmemDevice::subscriber(&device));
        Ok(Cell {
            device,
            line,
            msis,
            events,
            sub,
        })
    }

    fn new(dir: &Path, cfg: &IvshmemConfig) -> Self {
        Cell::try_new(dir, cfg).unwrap()
    }

    fn dev(&self) -> MutexGuard<'_, IvshmemDevice> {
        self.device.lock().unwrap()
    }

    fn read_reg(&self, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        self.dev().read_bar(REGISTER_BAR, offset, &mut b);
        u32::from_le_bytes(b)
    }

    fn write_reg(&self, offset: u64, value: u32) {
        self.dev()
            .write_bar(REGISTER_BAR, offset, &value.to_le_bytes());
    }

    fn read_shm(&self, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        self.dev().read_bar(MEMORY_BAR, offset, &mut b);
        u32::from_le_bytes(b)
    }

    fn write_shm(&self, offset: u64, value: u32) {
        self.dev()
            .write_bar(MEMORY_BAR, offset, &value.to_le_bytes());
    }

    /// The guest programs MSI-X vector 0 (`address`, `data`, unmasked)
    /// and enables MSI-X in the capability's message control.
    fn enable_msix(&self, address: u32, data: u32) {
        let at = self.msix_capability();
        let mut dev = self.dev();
        for (offset, value) in [(0, address), (4, 0), (8, data), (12, 0)] {
            dev.write_bar(MSIX_BAR, offset, &value.to_le_bytes());
        }
        dev.write_config(at / 4, 1 << 31, 0xffff_0000);
        // Messages are memory writes: the driver turns bus mastering on.
        let command = COMMAND_MEMORY | COMMAND_BUS_MASTER;
        dev.write_config(header::COMMAND / 4, u32::from(command), 0xffff);
    }

    fn msix_capability(&self) -> usize {
        let caps = self.dev().config().capabilities();
        let (_, at) = caps.into_iter().find(|(id, _)| *id == CAP_ID_MSIX).unwrap();
        at
    }

    fn enable_interrupts(&self) {
        self.write_reg(regs::INT_CONTROL, 1);
    }

    /// Acknowledges a pending interrupt and re-arms (Interrupt Control = 1).
    fn ack(&self) {
        self.write_reg(regs::INT_CONTROL, 1);
    }

    /// The status register as the guest reads it (dword 1, high half).
    fn status(&self) -> u16 {
        (self.dev().read_config(header::COMMAND / 4) >> 16) as u16
    }

    /// Whether the status register shows an interrupt pending.
    fn status_pending(&self) -> bool {
        self.status() & STATUS_INTERRUPT != 0
    }

    /// A 2-byte guest write of the command register.
    fn write_command(&self, command: u16) {
        self.dev()
            .write_config(header::COMMAND / 4, u32::from(command), 0xffff);
    }

    fn ring(&self, target: u16, vector: u16) {
        self.write_reg(
            regs::DOORBELL,
            (u32::from(target) << 16) | u32::from(vector),
        );
    }

    /// Runs the control loop until the doorbell socket has been handled
    /// (the datagram is already queued, so this does not wait).
    fn handle_events(&mut self) {
        let n = self.events.run_with_timeout(5000).unwrap();
        assert!(n > 0, "no event on the doorbell socket");
    }

    /// Handles whatever is pending, without waiting.
    fn drain(&mut self) {
        while self.events.run_with_timeout(0).unwrap() > 0 {}
    }

    fn subscriber(&mut self) -> &mut IvshmemSubscriber {
        self.events.subscriber_mut(self.sub).unwrap()
    }

    fn stats(&self) -> IvshmemStats {
        self.dev().stats()
    }
}

/// Peers 0 and 1 of `pair_cfg` in `tmp`, both with memory decode on.
fn two_cells(tmp: &TempDir) -> (Cell, Cell) {
    (
        Cell::new(tmp.path(), &pair_cfg(0)),
        Cell::new(tmp.path(), &pair_cfg(1)),
    )
}

/// [`two_cells`] after peer 0 rang peer 1, which has interrupts enabled:
/// peer 1's INTx latch is set and its line high.
fn two_cells_b_interrupted(tmp: &TempDir) -> (Cell, Cell) {
    let (a, mut b) = two_cells(tmp);
    b.enable_interrupts();
    a.ring(1, 0);
    b.handle_events();
    assert!(b.line.high() && b.status_pending());
    (a, b)
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// xorshift64*: deterministic pseudo-random numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ---------------------------------------------------------------- layout

#[test]
fn layout_puts_state_table_then_rw_section_then_one_output_section_per_peer() {
    let l = RegionLayout::new(3, 64 * KIB, 8 * KIB).unwrap();
    assert_eq!(l.state_table_size, STATE_TABLE_SIZE);
    assert_eq!(l.rw_offset(), 0x1000);
    assert_eq!(l.output_offset(0), 0x11000);
    assert_eq!(l.output_offset(1), 0x13000);
    assert_eq!(l.output_offset(2), 0x15000);
    assert_eq!(l.shared_size(), 0x17000);
    assert_eq!(l.bar_size(), 0x20000);
    assert_eq!(l.file_size(), HEADER_SIZE + 0x17000);
    assert_eq!(
        l.to_string(),
        "max_peers 3, rw_size 0x10000, output_size 0x2000"
    );

    // Peer 1 writes the R/W section and its own output section only.
    assert!(l.writable_by(1, 0x1000, 4));
    assert!(l.writable_by(1, 0x10ffc, 4));
    assert!(l.writable_by(1, 0x13000, 0x2000));
    assert!(!l.writable_by(1, 0, 4), "state table");
    assert!(!l.writable_by(1, 0xffc, 8), "straddles state table and R/W");
    assert!(!l.writable_by(1, 0x11000, 4), "peer 0's output");
    assert!(
        !l.writable_by(1, 0x12ffc, 8),
        "straddles peer 0's and peer 1's output"
    );
    assert!(!l.writable_by(1, 0x15000, 4), "peer 2's output");
    assert!(!l.writable_by(1, 0x17000, 4), "past the end");
    assert!(!l.writable_by(1, u64::MAX - 1, 4), "wrapping");
    assert!(!l.writable_by(3, 0x1000, 4), "no such peer");

    assert_eq!(
        l.guest_runs(1),
        vec![
            (0, 0x1000, true),
            (0x1000, 0x10000, false),
            (0x11000, 0x2000, true),
            (0x13000, 0x2000, false),
            (0x15000, 0x2000, true),
        ]
    );
    // Without an R/W section the state table merges with the outputs
    // below this peer's; empty output sections vanish.
    let no_rw = RegionLayout::new(2, 0, 4 * KIB).unwrap();
    assert_eq!(
        no_rw.guest_runs(1),
        vec![(0, 0x2000, true), (0x2000, 0x1000, false)]
    );
    assert_eq!(
        no_rw.guest_runs(0),
        vec![
            (0, 0x1000, true),
            (0x1000, 0x1000, false),
            (0x2000, 0x1000, true)
        ]
    );
    let no_out = RegionLayout::new(4, 4 * KIB, 0).unwrap();
    assert_eq!(
        no_out.guest_runs(3),
        vec![(0, 0x1000, true), (0x1000, 0x1000, false)]
    );
}

#[test]
fn layout_rejects_bad_peer_counts_and_section_sizes() {
    assert!(RegionLayout::new(1, 4 * KIB, 0).is_err());
    assert!(RegionLayout::new(17, 4 * KIB, 0).is_err());
    assert!(RegionLayout::new(2, 100, 0).is_err());
    assert!(RegionLayout::new(2, 0, (1 << 30) + 4 * KIB).is_err());
    assert!(RegionLayout::new(2, 0, 0).is_err());
}

#[test]
fn guest_slots_cover_the_shared_memory_with_matching_page_protections() {
    let tmp = TempDir::new().unwrap();
    let region = IvshmemRegion::open(tmp.path(), &cfg("prot", 1, 3, 64 * KIB, 8 * KIB)).unwrap();
    let slots = region.guest_slots();
    assert_eq!(slots.len(), region::MAX_GUEST_SLOTS);
    let (base, len) = region.guest_memory();
    assert_eq!(len, region.layout().shared_size());
    let mut next = 0;
    for s in &slots {
        assert_eq!(s.offset, next, "slots are contiguous");
        assert_eq!(s.host_addr, base + s.offset);
        next += s.len;
    }
    assert_eq!(next, len);

    // Each slot is exactly one mapping with the right protection.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    for s in &slots {
        let range = format!("{:x}-{:x} ", s.host_addr, s.host_addr + s.len);
        let line = maps
            .lines()
            .find(|l| l.starts_with(&range))
            .unwrap_or_else(|| panic!("no mapping {range} in\n{maps}"));
        let perms = line.split_whitespace().nth(1).unwrap();
        let want = if s.read_only { "r--s" } else { "rw-s" };
        assert_eq!(perms, want, "slot {s:?}: {line}");
    }
}

// ---------------------------------------------------------- config space

#[test]
fn config_space_has_ivshmem_ids_bars_and_the_vendor_capability() {
    let tmp = TempDir::new().unwrap();
    let region = Arc::new(IvshmemRegion::open(tmp.path(), &pair_cfg(0)).unwrap());
    let mapper = Arc::new(RecordingMapper::default());
    let mut dev = IvshmemDevice::new(region, Some(mapper), no_msi()).unwrap();

    assert_eq!(
        dev.read_config(0),
        u32::from(IVSHMEM_VENDOR_ID) | (u32::from(IVSHMEM_DEVICE_ID) << 16)
    );
    assert_eq!(
        dev.read_config(2),
        0xff00_0000,
        "class ff, protocol 0, revision 0"
    );
    assert_eq!(
        dev.read_config(header::SUBSYSTEM_VENDOR_ID / 4),
        0x4106_110a
    );
    assert_eq!(dev.config().read_u8(header::INTERRUPT_PIN), 1, "INTA");
    assert_eq!(dev.config().read_u16(header::STATUS), STATUS_CAPABILITIES);

    // BAR0: 4 KiB 32-bit registers; BAR1: 4 KiB 32-bit MSI-X table and
    // PBA; BAR2: 64-bit prefetchable, memory-backed, shared size rounded
    // to a power of two.
    let bar0 = dev.config().bar(0).unwrap();
    assert_eq!((bar0.size(), bar0.mapper().is_none()), (0x1000, true));
    let bar1 = dev.config().bar(1).unwrap();
    assert_eq!(
        (bar1.kind(), bar1.size(), bar1.mapper().is_none()),
        (crate::pci::BarKind::Memory32, MSIX_BAR_SIZE, true)
    );
    let bar2 = dev.config().bar(2).unwrap();
    assert_eq!(bar2.kind(), crate::pci::BarKind::Memory64);
    assert!(bar2.is_prefetchable() && bar2.mapper().is_some());
    let shared = 0x1000 + 64 * KIB + 2 * 4 * KIB;
    assert_eq!(bar2.size(), shared.next_power_of_two());
    assert_eq!(dev.read_config(header::BAR0 / 4 + 2), 0xc);
    dev.write_config(header::BAR0 / 4 + 2, u32::MAX, u32::MAX);
    dev.write_config(header::BAR0 / 4 + 3, u32::MAX, u32::MAX);
    assert_eq!(dev.read_config(header::BAR0 / 4 + 2), 0xfffe_0000 | 0xc);
    assert_eq!(dev.read_config(header::BAR0 / 4 + 3), u32::MAX);

    // The vendor capability, then MSI-X: one vector, table at BAR1 + 0,
    // PBA at BAR1 + MSIX_PBA.
    let at = dev.capability_offset();
    let caps = dev.config().capabilities();
    assert_eq!(caps[0], (CAP_VENDOR_SPECIFIC, at));
    assert_eq!(caps.len(), 2);
    let (msix_id, msix_at) = caps[1];
    assert_eq!(msix_id, CAP_ID_MSIX);
    let c = dev.config();
    assert_eq!(c.read_u16(msix_at + 2), 0, "table size 1 (N - 1), disabled");
    assert_eq!(c.read((msix_at + 4) / 4), MSIX_BAR as u32);
    assert_eq!(c.read((msix_at + 8) / 4), MSIX_PBA as u32 | MSIX_BAR as u32);
    assert_eq!(c.read_u8(at + cap::LENGTH), 0x18);
    assert_eq!(c.read_u8(at + cap::PRIV_CONTROL), 0);
    assert_eq!(c.read((at + cap::STATE_TABLE_SIZE) / 4), 0x1000);
    let u64_at = |off: usize| u64::from(c.read(off / 4)) | (u64::from(c.read(off / 4 + 1)) << 32);
    assert_eq!(u64_at(at + cap::RW_SIZE), 64 * KIB);
    assert_eq!(u64_at(at + cap::OUTPUT_SIZE), 4 * KIB);

    // Only Privileged Control bit 0 is writable in the capability.
    let first = dev.read_config(at / 4);
    dev.write_config(at / 4, u32::MAX, u32::MAX);
    assert_eq!(dev.read_config(at / 4), first | (1 << 24));
    dev.write_config((at + 4) / 4, 0, u32::MAX);
    assert_eq!(dev.read_config((at + 4) / 4), 0x1000);

    // Command: memory, bus master, INTx disable; status unchanged (no
    // interrupt pending).
    dev.write_config(header::COMMAND / 4, u32::MAX, u32::MAX);
    assert_eq!(
        dev.config().read_u16(header::COMMAND),
        COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE
    );
    assert_eq!(dev.config().read_u16(header::STATUS), STATUS_CAPABILITIES);

    // reset() restores the capability's writable bit.
    dev.reset();
    assert_eq!(dev.read_config(at / 4), first);
}

#[test]
fn protocol_goes_into_prog_if_and_subclass() {
    let tmp = TempDir::new().unwrap();
    let region = Arc::new(IvshmemRegion::open(tmp.path(), &pair_cfg(0)).unwrap());
    let dev = IvshmemDevice::with_protocol(region, None, no_msi(), 0x4001).unwrap();
    assert_eq!(dev.config().read(2), 0xff40_0100);
}

// ------------------------------------------------------------------ BAR0

#[test]
fn bar0_registers_report_id_and_max_peers_and_keep_int_control_and_state() {
    let tmp = TempDir::new().unwrap();
    let a = Cell::new(tmp.path(), &cfg("regs", 2, 4, 4 * KIB, 0));
    assert_eq!(a.read_reg(regs::ID), 2);
    assert_eq!(a.read_reg(regs::MAX_PEERS), 4);
    assert_eq!(a.read_reg(regs::INT_CONTROL), 0);
    assert_eq!(a.read_reg(regs::STATE), 0);

    a.write_reg(regs::INT_CONTROL, u32::MAX);
    assert_eq!(a.read_reg(regs::INT_CONTROL), 1, "reserved bits read 0");
    a.write_reg(regs::STATE, 0xdead_beef);
    assert_eq!(a.read_reg(regs::STATE), 0xdead_beef);
    assert_eq!(a.dev().region().state(2), Some(0xdead_beef));
    assert_eq!(a.read_shm(8), 0xdead_beef, "state table entry 2 in BAR2");
    assert_eq!(a.read_reg(regs::DOORBELL), 0, "doorbell reads 0");

    // Read-only registers and offsets without a register ignore writes.
    a.write_reg(regs::ID, 7);
    a.write_reg(regs::MAX_PEERS, 7);
    a.write_reg(0x14, 7);
    a.write_reg(0xffc, 7);
    assert_eq!(a.read_reg(regs::ID), 2);
    assert_eq!(a.read_reg(regs::MAX_PEERS), 4);
    assert_eq!(a.read_reg(0x14), 0);
    assert_eq!(a.read_reg(0xffc), 0);

    // Narrow and wide reads see the registers' bytes.
    let mut b1 = [0u8; 1];
    a.dev().read_bar(REGISTER_BAR, regs::STATE + 3, &mut b1);
    assert_eq!(b1, [0xde]);
    let mut b8 = [0u8; 8];
    a.dev().read_bar(REGISTER_BAR, regs::ID, &mut b8);
    assert_eq!(u64::from_le_bytes(b8), 2 | (4 << 32));

    // Only aligned 32-bit writes are defined: others are dropped, counted.
    a.dev().write_bar(REGISTER_BAR, regs::STATE, &[1, 2]);
    a.dev()
        .write_bar(REGISTER_BAR, regs::STATE + 1, &[1, 2, 3, 4]);
    a.dev().write_bar(REGISTER_BAR, regs::INT_CONTROL, &[0; 8]);
    assert_eq!(a.read_reg(regs::STATE), 0xdead_beef);
    assert_eq!(a.read_reg(regs::INT_CONTROL), 1);
    assert_eq!(a.stats().bad_accesses, 3);

    // A reset (guest reboot) clears both and the state table entry.
    a.dev().reset();
    assert_eq!(a.read_reg(regs::STATE), 0);
    assert_eq!(a.read_reg(regs::INT_CONTROL), 0);
    assert_eq!(a.dev().region().state(2), Some(0));
}

// ------------------------------------------------------------- doorbells

#[test]
fn doorbell_from_a_latches_a_pending_interrupt_in_b_until_b_acknowledges() {
    let tmp = TempDir::new().unwrap();
    let (a, mut b) = two_cells(&tmp);
    b.enable_interrupts();

    a.ring(1, 0);
    assert_eq!(a.stats().doorbells_sent, 1);
    assert_eq!(b.line.rises(), 0, "nothing before B's loop runs");
    b.handle_events();
    assert_eq!(b.subscriber().received(), 1);
    assert_eq!(b.stats().interrupts, 1);
    // Level-triggered: the line stays high and the status register shows
    // the interrupt until the guest acknowledges it.
    assert!(b.line.high(), "INTx stays asserted");
    assert!(b.dev().interrupt_pending());
    assert_eq!(b.status(), STATUS_CAPABILITIES | STATUS_INTERRUPT);
    assert_eq!(b.read_reg(regs::INT_CONTROL), 1, "still armed");

    // Acknowledge: any Interrupt Control write clears the latch.
    b.ack();
    assert!(!b.line.high(), "acknowledged: INTx deasserted");
    assert!(!b.status_pending());
    assert!(!b.dev().interrupt_pending());
    assert_eq!(b.read_reg(regs::INT_CONTROL), 1, "writing 1 re-arms");
    assert_eq!(b.stats().interrupts_acked, 1);

    // The next doorbell raises the line again.
    a.ring(1, 0);
    b.handle_events();
    assert_eq!(b.line.rises(), 2);
    assert!(b.status_pending());

    // And back.
    a.enable_interrupts();
    b.ring(0, 0);
    let mut a = a;
    a.handle_events();
    assert_eq!(a.line.rises(), 1);
    assert!(a.line.high() && a.status_pending());
}

#[test]
fn with_msix_enabled_events_send_vector_0_and_latch_nothing() {
    let tmp = TempDir::new().unwrap();
    let (a, mut b) = two_cells(&tmp);
    b.enable_msix(0xfee0_0000, 0x41);
    assert!(b.dev().msix_enabled());
    b.enable_interrupts();

    a.ring(1, 0);
    b.handle_events();
    assert_eq!(b.msis.sent(), vec![(0, 0xfee0_0000, 0x41)]);
    assert_eq!(b.stats().interrupts, 1);
    assert_eq!(b.line.rises(), 0, "no INTx with MSI-X on");
    assert!(!b.status_pending(), "no pending latch with MSI-X on");

    // A state change uses the same vector; Interrupt Control still gates.
    a.write_reg(regs::STATE, 7);
    b.handle_events();
    assert_eq!(b.msis.sent().len(), 2);
    b.write_reg(regs::INT_CONTROL, 0);
    a.ring(1, 0);
    b.handle_events();
    assert_eq!(b.msis.sent().len(), 2, "Interrupt Control 0: dropped");
    assert_eq!(b.stats().interrupts_masked, 1);
    // Without bus mastering a message cannot go out: dropped as well.
    b.enable_interrupts();
    b.write_command(COMMAND_MEMORY);
    a.ring(1, 0);
    b.handle_events();
    assert_eq!(b.msis.sent().len(), 2, "bus mastering off: dropped");
    assert_eq!(b.stats().interrupts_masked, 2);
    assert_eq!(b.line.rises(), 0, "and no INTx instead");
}

#[test]
fn a_masked_msix_vector_pends_and_is_sent_on_unmask() {
    let tmp = TempDir::new().unwrap();
    let (a, mut b) = two_cells(&tmp);
    b.enable_msix(0xfee0_0000, 0x42);
    b.enable_interrupts();
    b.dev().write_bar(MSIX_BAR, 12, &1u32.to_le_bytes());

    a.ring(1, 0);
    b.handle_events();
    assert!(b.msis.sent().is_empty(), "masked");
    let mut pba = [0u8; 8];
    b.dev().read_bar(MSIX_BAR, MSIX_PBA, &mut pba);
    assert_eq!(u64::from_le_bytes(pba), 1, "vector 0 pending");

    b.dev().write_bar(MSIX_BAR, 12, &0u32.to_le_bytes());
    assert_eq!(b.msis.sent(), vec![(0, 0xfee0_0000, 0x42)]);
    b.dev().read_bar(MSIX_BAR, MSIX_PBA, &mut pba);
    assert_eq!(u64::from_le_bytes(pba), 0);
}

#[test]
fn enabling_msix_lowers_a_pending_intx_latch_and_reset_disables_it() {
    let tmp = TempDir::new().unwrap();
    let (_a, b) = two_cells_b_interrupted(&tmp);

    b.enable_msix(0xfee0_0000, 0x43);
    assert!(!b.line.high(), "MSI-X on: INTx deasserted");
    assert!(!b.status_pending());

    b.dev().reset();
    assert!(!b.dev().msix_enabled());
    let at = b.msix_capability();
    assert_eq!(b.dev().config().read_u16(at + 2), 0, "enable bit cleared");
}

#[test]
fn events_while_an_interrupt_is_pending_merge_into_it() {
    let tmp = TempDir::new().unwrap();
    let (a, mut b) = two_cells(&tmp);
    b.enable_interrupts();

    a.ring(1, 0);
    b.handle_events();
    a.write_reg(regs::STATE, 3);
    b.handle_events();
    a.ring(1, 0);
    b.handle_events();
    assert_eq!(b.stats().interrupts, 3, "three events delivered");
    assert_eq!(b.line.rises(), 1, "one level interrupt, never lowered");
    assert!(b.line.high());

    b.ack();
    assert!(!b.line.high());
    assert_eq!(b.stats().interrupts_acked, 1);
    // An acknowledgement with nothing pending is harmless and not counted.
    b.ack();
    assert_eq!(b.stats().interrupts_acked, 1);
    assert_eq!(b.line.rises(), 1);
}

#[test]
fn events_while_interrupt_control_is_zero_are_dropped_not_latched() {
    let tmp = TempDir::new().unwrap();
    let (a, mut b) = two_cells(&tmp);

    a.ring(1, 0);
    b.handle_events();
    assert_eq!(b.line.rises(), 0, "Interrupt Control is 0");
    assert_eq!(b.stats().interrupts_masked, 1);
    assert!(!b.status_pending());

    // Arming later does not bring the dropped event back.
    b.enable_interrupts();
    assert_eq!(b.line.rises(), 0);
    assert!(!b.status_pending());

    // Writing 0 acknowledges and disarms.
    a.ring(1, 0);
    b.handle_events();
    assert!(b.line.high());
    b.write_reg(regs::INT_CONTROL, 0);
    assert!(!b.line.high() && !b.status_pending());
    assert_eq!(b.read_reg(regs::INT_CONTROL), 0);
    a.ring(1, 0);
    b.handle_events();
    assert_eq!(b.line.rises(), 1);
    assert_eq!(b.stats().interrupts_masked, 2);
}

#[test]
fn intx_disable_masks_the_line_but_not_the_status_bit() {
    let tmp = TempDir::new().unwrap();
    let (a, mut b) = two_cells(&tmp);
    b.enable_interrupts();

    b.write_command(COMMAND_MEMORY | COMMAND_INTX_DISABLE);
    a.ring(1, 0);
    b.handle_events();
    assert_eq!(b.stats().interrupts, 1, "latched all the same");
    assert_eq!(b.line.rises(), 0, "INTx disable masks the line");
    assert!(b.status_pending(), "the status bit shows the latch");

    // Unmasking with the interrupt still pending raises the line at once.
    b.write_command(COMMAND_MEMORY);
    assert_eq!(b.line.rises(), 1);
    assert!(b.line.high());

    // Masking lowers it; acknowledging while masked clears the status bit,
    // and unmasking then raises nothing.
    b.write_command(COMMAND_MEMORY | COMMAND_INTX_DISABLE);
    assert!(!b.line.high());
    assert!(b.status_pending());
    b.ack();
    assert!(!b.status_pending());
    b.write_command(COMMAND_MEMORY);
    assert_eq!(b.line.rises(), 1);
    assert!(!b.line.high());
}

/// What Linux's `uio_pci_generic` and a user-space driver do with an
/// ivshmem interrupt: the handler's `pci_check_and_mask_intx` (one dword
/// read of command + status; claim only if the status bit is set, then set
/// INTx disable), the user acknowledges through Interrupt Control, then
/// clears INTx disable in the command register.
#[test]
fn uio_pci_generic_handler_sequence_claims_masks_acknowledges_and_unmasks() {
    let tmp = TempDir::new().unwrap();
    let (a, mut b) = two_cells(&tmp);
    b.enable_interrupts();

    // pci_check_and_mask_intx: true only if the status bit is set.
    let check_and_mask = |c: &Cell| -> bool {
        let dword = c.dev().read_config(header::COMMAND / 4);
        if (dword >> 16) as u16 & STATUS_INTERRUPT == 0 {
            return false;
        }
        c.write_command(dword as u16 | COMMAND_INTX_DISABLE);
        true
    };
    assert!(!check_and_mask(&b), "nothing pending: IRQ_NONE");

    for round in 1..=3 {
        a.ring(1, 0);
        b.handle_events();
        assert!(b.line.high(), "round {round}: interrupt raised");
        assert!(check_and_mask(&b), "round {round}: the handler claims it");
        assert!(!b.line.high(), "round {round}: masked by INTx disable");
        // User space: acknowledge and re-arm, then unmask.
        b.ack();
        b.write_command(COMMAND_MEMORY);
        assert!(!b.line.high(), "round {round}: nothing left pending");
        assert_eq!(b.line.rises(), round);
    }

    // An event between the acknowledgement and the unmask is not lost: it
    // is latched while masked and raises the line on unmask.
    a.ring(1, 0);
    b.handle_events();
    assert!(check_and_mask(&b));
    b.ack();
    a.ring(1, 0);
    b.handle_events();
    assert!(!b.line.high(), "still masked");
    b.write_command(COMMAND_MEMORY);
    assert!(b.line.high(), "the second event fires on unmask");
}

#[test]
fn one_shot_mode_clears_int_control_on_each_delivery() {
    let tmp = TempDir::new().unwrap();
    let (a, mut b) = two_cells(&tmp);
    let at = b.dev().capability_offset();
    b.dev().write_config(at / 4, 1 << 24, 0xff00_0000);
    b.enable_interrupts();

    a.ring(1, 0);
    b.handle_events();
    assert_eq!(b.line.rises(), 1);
    assert_eq!(b.read_reg(regs::INT_CONTROL), 0, "one-shot cleared it");
    assert!(b.line.high(), "pending until acknowledged");

    // Disarmed: the next event is dropped, the pending one stays.
    a.ring(1, 0);
    b.handle_events();
    assert_eq!(b.stats().interrupts_masked, 1);
    assert!(b.line.high() && b.status_pending());

    // Writing 1 acknowledges and re-arms.
    b.enable_interrupts();
    assert!(!b.line.high() && !b.status_pending());
    a.ring(1, 0);
    b.handle_events();
    assert_eq!(b.line.rises(), 2);
    assert_eq!(b.read_reg(regs::INT_CONTROL), 0);
}

#[test]
fn function_reset_clears_a_pending_interrupt() {
    let tmp = TempDir::new().unwrap();
    let (_a, b) = two_cells_b_interrupted(&tmp);

    b.dev().reset();
    assert!(!b.line.high(), "INTx lowered");
    assert!(!b.status_pending());
    assert!(!b.dev().interrupt_pending());
    assert_eq!(b.read_reg(regs::INT_CONTROL), 0, "disarmed");
}

#[test]
fn turning_memory_decode_off_clears_a_pending_interrupt_and_drops_events() {
    let tmp = TempDir::new().unwrap();
    let (a, mut b) = two_cells(&tmp);
    b.enable_interrupts();
    a.ring(1, 0);
    b.handle_events();
    assert!(b.line.high());

    // Other command writes keep it pending.
    b.write_command(COMMAND_MEMORY | COMMAND_BUS_MASTER);
    assert!(b.line.high() && b.status_pending());

    // Decode off: Interrupt Control is unreachable, so nothing may stay
    // pending, and events are dropped.
    b.write_command(0);
    assert!(!b.line.high() && !b.status_pending());
    a.ring(1, 0);
    b.handle_events();
    assert!(!b.line.high() && !b.status_pending());
    assert_eq!(b.stats().interrupts_masked, 1);

    // Decode on again: Interrupt Control kept its value, events latch.
    b.write_command(COMMAND_MEMORY);
    assert_eq!(b.read_reg(regs::INT_CONTROL), 1);
    a.ring(1, 0);
    b.handle_events();
    assert!(b.line.high() && b.status_pending());
    assert_eq!(b.line.rises(), 2);
}

#[test]
fn doorbells_for_invalid_peers_or_vectors_are_dropped_and_self_doorbells_loop_back() {
    let tmp = TempDir::new().unwrap();
    let a = Cell::new(tmp.path(), &pair_cfg(0));
    a.enable_interrupts();
    a.ring(2, 0);
    a.ring(0xffff, 0);
    a.ring(1, 1);
    a.ring(1, 0xffff);
    assert_eq!(a.stats().doorbells_dropped, 4);
    assert_eq!(a.stats().doorbells_sent, 0);
    a.ring(0, 0);
    assert_eq!(a.stats().doorbells_sent, 1);
    assert_eq!(
        a.line.rises(),
        1,
        "a doorbell to oneself interrupts oneself"
    );
}

// ----------------------------------------------------------------- state

#[test]
fn state_write_updates_the_shared_table_and_notifies_the_other_peer() {
    let tmp = TempDir::new().unwrap();
    let (a, mut b) = two_cells(&tmp);
    b.enable_interrupts();

    a.write_reg(regs::STATE, 5);
    // The table is shared memory: visible at once, before any interrupt.
    assert_eq!(b.dev().region().state(0), Some(5));
    assert_eq!(b.read_shm(0), 5);
    assert_eq!(a.stats().state_notifications_sent, 1);
    b.handle_events();
    assert_eq!(b.line.rises(), 1);

    // Writing the same value again is no change: no notification.
    a.write_reg(regs::STATE, 5);
    assert_eq!(a.stats().state_notifications_sent, 1);

    // The table is read-only to guests.
    b.write_shm(0, 9);
    b.write_shm(4, 9);
    assert_eq!(b.read_shm(0), 5);
    assert_eq!(b.read_shm(4), 0);
    assert_eq!(b.stats().bad_accesses, 2);
}

#[test]
fn shared_memory_is_shared_and_each_peer_writes_only_its_own_output_section() {
    let tmp = TempDir::new().unwrap();
    let a = Cell::new(tmp.path(), &pair_cfg(0));
    let b = Cell::new(tmp.path(), &pair_cfg(1));
    let layout = *a.dev().region().layout();
    let (rw, out0, out1) = (
        layout.rw_offset(),
        layout.output_offset(0),
        layout.output_offset(1),
    );

    a.write_shm(rw + 0x100, 0x1111_1111);
    assert_eq!(b.read_shm(rw + 0x100), 0x1111_1111);
    b.write_shm(rw + 0x100, 0x2222_2222);
    assert_eq!(a.read_shm(rw + 0x100), 0x2222_2222);

    a.write_shm(out0, 0xa0a0_a0a0);
    b.write_shm(out1, 0xb1b1_b1b1);
    assert_eq!(b.read_shm(out0), 0xa0a0_a0a0);
    assert_eq!(a.read_shm(out1), 0xb1b1_b1b1);

    // Into the other's output section: dropped.
    a.write_shm(out1, 0);
    b.write_shm(out0, 0);
    assert_eq!(a.read_shm(out1), 0xb1b1_b1b1);
    assert_eq!(b.read_shm(out0), 0xa0a0_a0a0);
    assert_eq!((a.stats().bad_accesses, b.stats().bad_accesses), (1, 1));

    // 8-byte and misaligned accesses behave the same.
    let mut q = [0u8; 8];
    a.dev()
        .write_bar(MEMORY_BAR, rw + 8, &0x0123_4567_89ab_cdefu64.to_le_bytes());
    b.dev().read_bar(MEMORY_BAR, rw + 8, &mut q);
    assert_eq!(u64::from_le_bytes(q), 0x0123_4567_89ab_cdef);
    let mut odd = [0u8; 2];
    b.dev().read_bar(MEMORY_BAR, rw + 9, &mut odd);
    assert_eq!(odd, [0xcd, 0xab]);

    // The BAR's tail past the shared memory reads 0, ignores writes.
    let end = layout.shared_size();
    assert!(layout.bar_size() > end);
    a.write_shm(end, 7);
    assert_eq!(a.read_shm(end), 0);
    assert_eq!(a.read_shm(layout.bar_size() - 4), 0);
    assert_eq!(a.stats().bad_accesses, 1, "tail writes are not errors");
}

#[test]
fn peer_absent_at_first_then_appearing_sees_the_state_and_gets_notified() {
    let tmp = TempDir::new().unwrap();
    let mut a = Cell::new(tmp.path(), &pair_cfg(0));
    a.enable_interrupts();

    // Peer 1 is not running: doorbells are dropped, not errors; the
    // state goes to the table only.
    a.ring(1, 0);
    assert_eq!(
        (a.stats().doorbells_sent, a.stats().doorbells_dropped),
        (0, 1)
    );
    a.write_reg(regs::STATE, 7);
    assert_eq!(a.stats().state_notifications_sent, 0);

    // Peer 1 comes up and finds peer 0's state in the table.
    let mut b = Cell::new(tmp.path(), &pair_cfg(1));
    assert_eq!(b.dev().region().state(0), Some(7));
    assert_eq!(b.dev().region().reset_peers(), &[] as &[u16]);
    b.enable_interrupts();

    // Its own state write reaches peer 0.
    b.write_reg(regs::STATE, 1);
    a.handle_events();
    assert_eq!(a.line.rises(), 1);
    assert_eq!(a.dev().region().state(1), Some(1));
    a.ack();

    // Doorbells now arrive.
    a.ring(1, 0);
    assert_eq!(a.stats().doorbells_sent, 1);
    b.handle_events();
    assert_eq!(b.line.rises(), 1);

    // When peer 1 goes away its entry returns to 0 and peer 0 hears it.
    let Cell { device, .. } = b;
    drop(device);
    assert_eq!(a.dev().region().state(1), Some(0));
    a.handle_events();
    assert_eq!(a.line.rises(), 2);
}

#[test]
fn entries_left_by_dead_peers_are_reset_when_a_peer_joins() {
    let tmp = TempDir::new().unwrap();
    let mut a = Cell::new(tmp.path(), &cfg("dead", 0, 3, 4 * KIB, 0));
    a.enable_interrupts();
    a.write_reg(regs::STATE, 4);
    // Peer 2 died without leaving (SIGKILL): its entry stayed.
    a.dev().region().poke_state(2, 9);

    let b = Cell::new(tmp.path(), &cfg("dead", 1, 3, 4 * KIB, 0));
    assert_eq!(b.dev().region().reset_peers(), &[2]);
    assert_eq!(b.dev().region().state(2), Some(0));
    assert_eq!(b.dev().region().state(0), Some(4), "live peers keep theirs");
    a.handle_events();
    assert_eq!(a.line.rises(), 1, "the reset is a state change");
}

// ------------------------------------------------------- region lifetime

#[test]
fn layout_mismatch_between_peers_is_a_clear_error() {
    let tmp = TempDir::new().unwrap();
    let a = Cell::new(tmp.path(), &pair_cfg(0));
    let err = match Cell::try_new(tmp.path(), &cfg("shm0", 1, 2, 128 * KIB, 4 * KIB)) {
        Err(e) => e,
        Ok(_) => panic!("a different layout was accepted"),
    };
    assert!(
        matches!(err, IvshmemError::LayoutMismatch { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("is in use with max_peers 2, rw_size 0x10000, output_size 0x1000")
            && msg.contains("asks for max_peers 2, rw_size 0x20000, output_size 0x1000"),
        "{msg}"
    );
    let err = Cell::try_new(tmp.path(), &cfg("shm0", 1, 3, 64 * KIB, 4 * KIB)).err();
    assert!(matches!(err, Some(IvshmemError::LayoutMismatch { .. })));

    // The failed attempts left nothing behind; once peer 0 leaves, the
    // region is gone and a new layout is fine.
    assert_eq!(
        dir_entries(tmp.path()),
        vec![region_file_name("shm0"), socket_file_name("shm0", 0)]
    );
    drop(a);
    assert!(dir_entries(tmp.path()).is_empty());
    Cell::new(tmp.path(), &cfg("shm0", 1, 2, 128 * KIB, 4 * KIB));
}

#[test]
fn a_peer_id_already_in_use_is_refused() {
    let tmp = TempDir::new().unwrap();
    let _a = Cell::new(tmp.path(), &pair_cfg(0));
    let err = Cell::try_new(tmp.path(), &pair_cfg(0)).err();
    assert!(
        matches!(err, Some(IvshmemError::PeerIdInUse { peer_id: 0, .. })),
        "{err:?}"
    );
    assert!(err
        .unwrap()
        .to_string()
        .contains("peer id 0 is already in use"));
}

#[test]
fn dropping_devices_removes_their_sockets_and_the_last_peer_removes_the_region() {
    let tmp = TempDir::new().unwrap();
    let a = Cell::new(tmp.path(), &pair_cfg(0));
    let b = Cell::new(tmp.path(), &pair_cfg(1));
    let region_path = tmp.path().join(region_file_name("shm0"));
    assert_eq!(
        dir_entries(tmp.path()),
        vec![
            region_file_name("shm0"),
            socket_file_name("shm0", 0),
            socket_file_name("shm0", 1)
        ]
    );
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&region_path), 0o600);
    assert_eq!(mode(&tmp.path().join(socket_file_name("shm0", 1))), 0o600);

    // B's device goes: its socket file at once; its subscriber closes the
    // socket on the wake-up the device sent.
    let Cell {
        device,
        mut events,
        sub,
        ..
    } = b;
    drop(device);
    assert_eq!(
        dir_entries(tmp.path()),
        vec![region_file_name("shm0"), socket_file_name("shm0", 0)]
    );
    assert!(events.run_with_timeout(5000).unwrap() > 0);
    assert!(events.subscriber_mut(sub).unwrap().is_closed());
    drop(events);

    // A is the last peer: the region file goes with it.
    drop(a);
    assert!(dir_entries(tmp.path()).is_empty());
}

#[test]
fn leftovers_of_a_crashed_run_are_reused() {
    let tmp = TempDir::new().unwrap();
    // A region file nobody holds, with garbage in it, and a socket file
    // nobody is bound to.
    std::fs::write(tmp.path().join(region_file_name("shm0")), b"junk").unwrap();
    let stale = tmp.path().join(socket_file_name("shm0", 1));
    drop(UnixDatagram::bind(&stale).unwrap());
    assert!(stale.exists());

    let (a, mut b) = two_cells(&tmp);
    assert_eq!(a.dev().region().state(1), Some(0));
    b.enable_interrupts();
    a.ring(1, 0);
    b.handle_events();
    assert_eq!(b.line.rises(), 1);
}

#[test]
fn foreign_files_and_overlong_socket_paths_are_errors_not_panics() {
    let tmp = TempDir::new().unwrap();
    // Something that is not a socket where peer 1's socket goes.
    let a = Cell::new(tmp.path(), &pair_cfg(0));
    std::fs::create_dir(tmp.path().join(socket_file_name("shm0", 1))).unwrap();
    let err = Cell::try_new(tmp.path(), &pair_cfg(1)).err();
    assert!(matches!(err, Some(IvshmemError::Foreign { .. })), "{err:?}");
    drop(a);

    let long = tmp.path().join("d".repeat(100));
    std::fs::create_dir(&long).unwrap();
    let err = Cell::try_new(&long, &pair_cfg(0)).err();
    assert!(matches!(err, Some(IvshmemError::PathTooLong(_))), "{err:?}");
    assert!(
        dir_entries(&long).is_empty(),
        "the region went with the error"
    );

    let bad = cfg("../x", 0, 2, 4 * KIB, 0);
    assert!(matches!(
        IvshmemRegion::open(tmp.path(), &bad),
        Err(IvshmemError::InvalidConfig(_))
    ));
}

// ---------------------------------------------------- hostile input

#[test]
fn message_decoding_rejects_every_malformed_field() {
    let good = Message::doorbell(0, 1, 0);
    assert_eq!(Message::decode(&good.encode()), Ok(good));
    let sc = Message::state_change(1, 0, 0xffff_ffff);
    assert_eq!(Message::decode(&sc.encode()), Ok(sc));

    let mut b = good.encode();
    assert_eq!(Message::decode(&b[..15]), Err(MessageError::Length(15)));
    assert_eq!(Message::decode(&[0; 17]), Err(MessageError::Length(17)));
    assert_eq!(Message::decode(&[]), Err(MessageError::Length(0)));
    b[0] ^= 1;
    assert_eq!(Message::decode(&b), Err(MessageError::Magic));
    for kind in [0u16, 3, 0xffff] {
        let mut b = good.encode();
        b[4..6].copy_from_slice(&kind.to_le_bytes());
        assert_eq!(Message::decode(&b), Err(MessageError::Kind(kind)));
    }
    let mut b = good.encode();
    b[15] = 1;
    assert_eq!(Message::decode(&b), Err(MessageError::Reserved));
    let mut b = sc.encode();
    b[10] = 1;
    assert_eq!(Message::decode(&b), Err(MessageError::Reserved));

    // Semantic checks for peer 1 of 2.
    assert_eq!(good.check(1, 2), Ok(()));
    assert_eq!(
        Message::doorbell(1, 1, 0).check(1, 2),
        Err(MessageError::Source(1))
    );
    assert_eq!(
        Message::doorbell(2, 1, 0).check(1, 2),
        Err(MessageError::Source(2))
    );
    assert_eq!(
        Message::doorbell(0, 0, 0).check(1, 2),
        Err(MessageError::Target(0))
    );
    assert_eq!(
        Message::doorbell(0, 1, 1).check(1, 2),
        Err(MessageError::Vector(1))
    );
    assert_eq!(&good.encode()[..4], &MESSAGE_MAGIC);
}

#[test]
fn malformed_and_spoofed_datagrams_are_rejected_without_panicking() {
    let tmp = TempDir::new().unwrap();
    let (a, mut b) = two_cells(&tmp);
    b.enable_interrupts();
    let b_sock = tmp.path().join(socket_file_name("shm0", 1));

    // A valid doorbell from an unnamed socket: the sender is not peer 0.
    let anon = UnixDatagram::unbound().unwrap();
    anon.send_to(&Message::doorbell(0, 1, 0).encode(), &b_sock)
        .unwrap();
    // ... nor from a socket with another name.
    let rogue_path = tmp.path().join("rogue.sock");
    let rogue = UnixDatagram::bind(&rogue_path).unwrap();
    rogue
        .send_to(&Message::doorbell(0, 1, 0).encode(), &b_sock)
        .unwrap();
    b.handle_events();
    assert_eq!(
        (b.subscriber().received(), b.subscriber().rejected()),
        (0, 2)
    );
    assert_eq!(b.line.rises(), 0);

    // Random datagrams from a socket named like peer 0's (in another
    // directory), fixed seed: mostly garbage, some mutated valid messages.
    let sub_dir = tmp.path().join("elsewhere");
    std::fs::create_dir(&sub_dir).unwrap();
    let mimic = UnixDatagram::bind(sub_dir.join(socket_file_name("shm0", 0))).unwrap();
    mimic.set_nonblocking(true).unwrap();
    let mut rng = Rng(0x1f2e_3d4c_5b6a_7988);
    let mut sent = 0u64;
    for i in 0..3000 {
        let mut bytes = if rng.below(2) == 0 {
            let len = rng.below(40) as usize;
            (0..len).map(|_| rng.next() as u8).collect::<Vec<u8>>()
        } else {
            let mut v = Message::doorbell(0, 1, 0).encode().to_vec();
            let at = rng.below(MESSAGE_LEN as u64) as usize;
            v[at] = rng.next() as u8;
            v
        };
        if rng.below(50) == 0 {
            bytes = vec![0; 64 * 1024];
        }
        match mimic.send_to(&bytes, &b_sock) {
            Ok(_) => sent += 1,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("send {i}: {e}"),
        }
        if i % 8 == 7 {
            b.drain();
        }
    }
    b.drain();
    let (received, rejected) = (b.subscriber().received(), b.subscriber().rejected());
    assert_eq!(received + rejected, sent + 2);
    assert!(rejected > sent / 2, "{rejected} of {sent} rejected");

    // B still works (mutated datagrams that happened to be valid may have
    // left an interrupt pending: acknowledge it first).
    b.ack();
    let before = b.line.rises();
    a.ring(1, 0);
    b.handle_events();
    assert_eq!(b.line.rises(), before + 1);
}

#[test]
fn random_guest_accesses_never_panic() {
    let tmp = TempDir::new().unwrap();
    let a = Cell::new(tmp.path(), &cfg("fuzz", 0, 2, 16 * KIB, 4 * KIB));
    let mut b = Cell::new(tmp.path(), &cfg("fuzz", 1, 2, 16 * KIB, 4 * KIB));
    b.enable_interrupts();
    let bar_size = a.dev().region().layout().bar_size();
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let sizes = [1usize, 2, 4, 8];
    for i in 0..100_000u32 {
        let mut dev = a.dev();
        match rng.below(10) {
            0..=3 => {
                // Registers: mostly in-range, aligned or not; any value.
                let len = sizes[rng.below(4) as usize];
                let offset = if rng.below(2) == 0 {
                    rng.below(0x18)
                } else {
                    rng.below(0x1000 - len as u64 + 1)
                };
                let value = rng.next().to_le_bytes();
                if rng.below(2) == 0 {
                    dev.write_bar(REGISTER_BAR, offset, &value[..len]);
                } else {
                    let mut d = vec![0u8; len];
                    dev.read_bar(REGISTER_BAR, offset, &mut d);
                }
            }
            4..=6 => {
                let len = sizes[rng.below(4) as usize];
                let offset = rng.below(bar_size - len as u64 + 1);
                let value = rng.next().to_le_bytes();
                if rng.below(2) == 0 {
                    dev.write_bar(MEMORY_BAR, offset, &value[..len]);
                } else {
                    let mut d = vec![0u8; len];
                    dev.read_bar(MEMORY_BAR, offset, &mut d);
                }
            }
            7 => {
                // BARs that do not exist, offsets beyond any BAR.
                let len = sizes[rng.below(4) as usize];
                let bar = rng.below(7) as usize;
                let offset = rng.next();
                let mut d = vec![0u8; len];
                dev.read_bar(bar, offset, &mut d);
                dev.write_bar(bar, offset, &d);
            }
            8 => {
                let reg = rng.below(64) as usize;
                let mask = [0xff, 0xff00, 0xffff, 0xffff_0000, u32::MAX][rng.below(5) as usize];
                if rng.below(2) == 0 {
                    dev.write_config(reg, rng.next() as u32, mask);
                } else {
                    dev.read_config(reg);
                }
            }
            _ => {
                if rng.below(1000) == 0 {
                    dev.reset();
                }
            }
        }
        drop(dev);
        if i % 64 == 0 {
            b.drain();
        }
    }
    b.drain();
    // A still answers and its state register agrees with the table.
    assert_eq!(a.read_reg(regs::ID), 0);
    assert_eq!(a.read_reg(regs::MAX_PEERS), 2);
    let state = a.read_reg(regs::STATE);
    assert_eq!(a.dev().region().state(0), Some(state));
    assert_eq!(b.dev().region().state(0), Some(state));
    assert!(a.stats().bad_accesses > 0);
    assert_eq!(b.subscriber().rejected(), 0);
}

#[test]
fn runtime_dir_is_the_environment_override_or_dev_shm() {
    let dir = runtime_dir();
    match std::env::var_os(RUNTIME_DIR_ENV) {
        Some(v) if !v.is_empty() => assert_eq!(dir, PathBuf::from(v)),
        _ => assert_eq!(dir, PathBuf::from(DEFAULT_RUNTIME_DIR)),
    }
}
