//! Tests driving the virtio-mmio transport through `BusDevice` exactly as a
//! guest driver would, with virtqueues built by hand in real guest memory.

use super::mmio::{regs, INT_CONFIG, INT_USED_RING, MAGIC, VENDOR_ID};
use super::*;
use crate::devices::{BusDevice, InterruptLine};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE as ACK, VIRTIO_CONFIG_S_DRIVER as DRIVER,
    VIRTIO_CONFIG_S_DRIVER_OK as DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK as FEATURES_OK,
    VIRTIO_CONFIG_S_NEEDS_RESET as NEEDS_RESET,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

mod sever;

const MEM_SIZE: usize = 4 << 20;
const QSIZE: u16 = 16;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

#[derive(Default)]
struct Line {
    level: AtomicBool,
    raises: AtomicUsize,
}

impl InterruptLine for Line {
    fn set_level(&self, level: bool) {
        if level {
            self.raises.fetch_add(1, Ordering::SeqCst);
        }
        self.level.store(level, Ordering::SeqCst);
    }
}

impl Line {
    fn high(&self) -> bool {
        self.level.load(Ordering::SeqCst)
    }
}

fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

/// Guest addresses of queue `i`'s rings.
fn rings(i: u64) -> (u64, u64, u64) {
    let base = 0x10000 + i * 0x10000;
    (base, base + 0x1000, base + 0x2000)
}

/// A test "guest driver": the device, its memory and its interrupt line.
struct Guest {
    dev: VirtioMmioDevice,
    mem: GuestMemoryMmap,
    line: Arc<Line>,
    /// Next free descriptor per queue and driver-side avail index per queue.
    next_desc: Vec<u16>,
    avail_idx: Vec<u16>,
}

impl Guest {
    fn new(backend: Box<dyn VirtioBackend>) -> Guest {
        let mem = guest_memory();
        let line = Arc::new(Line::default());
        let dev = VirtioMmioDevice::new("test", backend, mem.clone(), line.clone());
        Guest {
            dev,
            mem,
            line,
            next_desc: vec![0; 4],
            avail_idx: vec![0; 4],
        }
    }

    fn r32(&mut self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.dev.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn w32(&mut self, off: u64, v: u32) {
        self.dev.write(off, &v.to_le_bytes());
    }

    fn status(&mut self) -> u32 {
        self.r32(regs::STATUS)
    }

    fn device_features(&mut self) -> u64 {
        self.w32(regs::DEVICE_FEATURES_SEL, 0);
        let lo = self.r32(regs::DEVICE_FEATURES);
        self.w32(regs::DEVICE_FEATURES_SEL, 1);
        let hi = self.r32(regs::DEVICE_FEATURES);
        u64::from(hi) << 32 | u64::from(lo)
    }

    fn write_driver_features(&mut self, f: u64) {
        self.w32(regs::DRIVER_FEATURES_SEL, 0);
        self.w32(regs::DRIVER_FEATURES, f as u32);
        self.w32(regs::DRIVER_FEATURES_SEL, 1);
        self.w32(regs::DRIVER_FEATURES, (f >> 32) as u32);
    }

    /// Reset, ACKNOWLEDGE, DRIVER, accept all offered features, FEATURES_OK.
    fn negotiate(&mut self) {
        self.w32(regs::STATUS, 0);
        self.w32(regs::STATUS, ACK);
        self.w32(regs::STATUS, ACK | DRIVER);
        let f = self.device_features();
        self.write_driver_features(f);
        self.w32(regs::STATUS, ACK | DRIVER | FEATURES_OK);
        assert_eq!(self.status(), ACK | DRIVER | FEATURES_OK);
    }

    fn setup_queue(&mut self, i: u32) {
        let (d, a, u) = rings(u64::from(i));
        self.w32(regs::QUEUE_SEL, i);
        assert!(self.r32(regs::QUEUE_NUM_MAX) >= u32::from(QSIZE));
        self.w32(regs::QUEUE_NUM, u32::from(QSIZE));
        self.w32(regs::QUEUE_DESC_LOW, d as u32);
        self.w32(regs::QUEUE_DESC_HIGH, 0);
        self.w32(regs::QUEUE_AVAIL_LOW, a as u32);
        self.w32(regs::QUEUE_AVAIL_HIGH, 0);
        self.w32(regs::QUEUE_USED_LOW, u as u32);
        self.w32(regs::QUEUE_USED_HIGH, 0);
        self.w32(regs::QUEUE_READY, 1);
        assert_eq!(self.r32(regs::QUEUE_READY), 1);
        // Clean rings.
        self.mem
            .write_slice(&[0u8; 0x3000], GuestAddress(d))
            .unwrap();
        self.next_desc[i as usize] = 0;
        self.avail_idx[i as usize] = 0;
    }

    /// Full probe: negotiation, `queues` queues, DRIVER_OK.
    fn probe(&mut self, queues: u32) {
        self.negotiate();
        for i in 0..queues {
            self.setup_queue(i);
        }
        self.w32(regs::STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
        assert_eq!(self.status(), ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    }

    fn write_desc(&self, q: u32, idx: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let (d, _, _) = rings(u64::from(q));
        let at = GuestAddress(d + u64::from(idx) * 16);
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        self.mem.write_slice(&raw, at).unwrap();
    }

    /// Puts `head` on the available ring (without notifying).
    fn make_available(&mut self, q: u32, head: u16) {
        let (_, a, _) = rings(u64::from(q));
        let idx = self.avail_idx[q as usize];
        let slot = a + 4 + u64::from(idx % QSIZE) * 2;
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        let idx = idx.wrapping_add(1);
        self.avail_idx[q as usize] = idx;
        self.mem.write_obj(idx, GuestAddress(a + 2)).unwrap();
    }

    /// Adds a chain of (addr, len, writable) buffers and makes it available.
    /// Returns the head index.
    fn add_chain(&mut self, q: u32, bufs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc[q as usize];
        for (k, &(addr, len, writable)) in bufs.iter().enumerate() {
            let idx = (head + k as u16) % QSIZE;
            let last = k + 1 == bufs.len();
            let mut flags = if writable { F_WRITE } else { 0 };
            if !last {
                flags |= F_NEXT;
            }
            self.write_desc(q, idx, addr, len, flags, (idx + 1) % QSIZE);
        }
        self.next_desc[q as usize] = (head + bufs.len() as u16) % QSIZE;
        self.make_available(q, head);
        head
    }

    fn notify(&mut self, q: u32) {
        self.w32(regs::QUEUE_NOTIFY, q);
    }

    fn used_idx(&self, q: u32) -> u16 {
        let (_, _, u) = rings(u64::from(q));
        self.mem.read_obj(GuestAddress(u + 2)).unwrap()
    }

    /// The used element number `n` of queue `q`: (id, len).
    fn used(&self, q: u32, n: u16) -> (u32, u32) {
        let (_, _, u) = rings(u64::from(q));
        let at = u + 4 + u64::from(n % QSIZE) * 8;
        let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
        (id, len)
    }

    fn read_mem(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    fn ack_all(&mut self) {
        let s = self.r32(regs::INTERRUPT_STATUS);
        self.w32(regs::INTERRUPT_ACK, s);
    }
}

// Buffers live at 0x100000.. in these tests.
const BUF: u64 = 0x10_0000;

fn rng_guest() -> Guest {
    Guest::new(Box::new(RngBackend::new()))
}

// ---------------------------------------------------------------- transport

#[test]
fn identification_registers_describe_a_modern_device() {
    let mut g = rng_guest();
    assert_eq!(g.r32(regs::MAGIC), MAGIC);
    assert_eq!(g.r32(regs::VERSION), 2);
    assert_eq!(g.r32(regs::DEVICE_ID), 4);
    assert_eq!(g.r32(regs::VENDOR_ID), VENDOR_ID);
    assert_ne!(g.device_features() & VIRTIO_F_VERSION_1, 0);
    assert_eq!(g.r32(regs::CONFIG_GENERATION), 0);
}

#[test]
fn register_accesses_that_are_not_32_bit_read_zero_and_are_ignored() {
    let mut g = rng_guest();
    let mut b = [0xffu8; 2];
    g.dev.read(regs::MAGIC, &mut b);
    assert_eq!(b, [0, 0]);
    g.dev.write(regs::STATUS, &[ACK as u8]);
    assert_eq!(g.status(), 0);
}

#[test]
fn features_ok_is_refused_without_version_1() {
    let mut g = rng_guest();
    g.w32(regs::STATUS, ACK);
    g.w32(regs::STATUS, ACK | DRIVER);
    g.write_driver_features(0);
    g.w32(regs::STATUS, ACK | DRIVER | FEATURES_OK);
    assert_eq!(g.status(), ACK | DRIVER);
}

#[test]
fn features_ok_is_refused_for_features_the_device_did_not_offer() {
    let mut g = rng_guest();
    g.w32(regs::STATUS, ACK);
    g.w32(regs::STATUS, ACK | DRIVER);
    g.write_driver_features(VIRTIO_F_VERSION_1 | 1 << 28);
    g.w32(regs::STATUS, ACK | DRIVER | FEATURES_OK);
    assert_eq!(g.status(), ACK | DRIVER);
}

#[test]
fn driver_features_written_before_driver_or_after_features_ok_are_ignored() {
    let mut g = rng_guest();
    // Before DRIVER: ignored, so FEATURES_OK is later refused.
    g.w32(regs::STATUS, ACK);
    g.write_driver_features(VIRTIO_F_VERSION_1);
    g.w32(regs::STATUS, ACK | DRIVER);
    g.w32(regs::STATUS, ACK | DRIVER | FEATURES_OK);
    assert_eq!(g.status(), ACK | DRIVER);
    // After FEATURES_OK: an unknown bit written then does not stick.
    g.negotiate();
    g.write_driver_features(VIRTIO_F_VERSION_1 | 1 << 28);
    g.w32(regs::STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    assert_eq!(g.status(), ACK | DRIVER | FEATURES_OK | DRIVER_OK);
}

#[test]
fn status_bits_set_out_of_order_are_ignored() {
    let mut g = rng_guest();
    g.w32(regs::STATUS, DRIVER);
    assert_eq!(g.status(), 0);
    g.w32(regs::STATUS, ACK);
    g.w32(regs::STATUS, ACK | DRIVER | DRIVER_OK);
    assert_eq!(g.status(), ACK);
    g.w32(regs::STATUS, ACK | FEATURES_OK);
    assert_eq!(g.status(), ACK);
    g.negotiate();
    // Clearing a bit without a reset.
    g.w32(regs::STATUS, ACK | FEATURES_OK);
    assert_eq!(g.status(), ACK | DRIVER | FEATURES_OK);
    // The driver cannot set DEVICE_NEEDS_RESET.
    g.w32(regs::STATUS, ACK | DRIVER | FEATURES_OK | NEEDS_RESET);
    assert_eq!(g.status(), ACK | DRIVER | FEATURES_OK);
}

#[test]
fn queue_registers_before_features_ok_are_ignored() {
    let mut g = rng_guest();
    g.w32(regs::STATUS, ACK);
    g.w32(regs::STATUS, ACK | DRIVER);
    g.w32(regs::QUEUE_SEL, 0);
    g.w32(regs::QUEUE_READY, 1);
    assert_eq!(g.r32(regs::QUEUE_READY), 0);
}

#[test]
fn absent_queue_reports_max_size_zero() {
    let mut g = rng_guest();
    g.w32(regs::QUEUE_SEL, 1);
    assert_eq!(g.r32(regs::QUEUE_NUM_MAX), 0);
    g.w32(regs::QUEUE_SEL, 0);
    assert_eq!(g.r32(regs::QUEUE_NUM_MAX), u32::from(rng::QUEUE_SIZE));
}

#[test]
fn queue_size_not_a_power_of_two_cannot_be_enabled_and_needs_reset() {
    for size in [3u32, 100, 512, 0x1_0000, 0] {
        let mut g = rng_guest();
        g.negotiate();
        g.w32(regs::QUEUE_SEL, 0);
        g.w32(regs::QUEUE_NUM, size);
        g.w32(regs::QUEUE_READY, 1);
        assert_eq!(g.r32(regs::QUEUE_READY), 0, "size {size}");
        assert_ne!(g.status() & NEEDS_RESET, 0, "size {size}");
        // A reset clears it, and a valid size then works.
        g.probe(1);
        assert_eq!(g.status() & NEEDS_RESET, 0);
    }
}

#[test]
fn queue_rings_outside_guest_memory_cannot_be_enabled() {
    let mut g = rng_guest();
    g.negotiate();
    g.w32(regs::QUEUE_SEL, 0);
    g.w32(regs::QUEUE_NUM, 16);
    g.w32(regs::QUEUE_DESC_LOW, 0x1000);
    g.w32(regs::QUEUE_AVAIL_LOW, 0x2000);
    g.w32(regs::QUEUE_USED_LOW, (MEM_SIZE - 8) as u32);
    g.w32(regs::QUEUE_READY, 1);
    assert_eq!(g.r32(regs::QUEUE_READY), 0);
    assert_ne!(g.status() & NEEDS_RESET, 0);
}

#[test]
fn notify_before_driver_ok_is_ignored() {
    let mut g = rng_guest();
    g.negotiate();
    g.setup_queue(0);
    g.add_chain(0, &[(BUF, 64, true)]);
    g.notify(0);
    assert_eq!(g.used_idx(0), 0);
    assert!(!g.line.high());
    // Once DRIVER_OK is set, the next notification serves the request.
    g.w32(regs::STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    g.notify(0);
    assert_eq!(g.used_idx(0), 1);
}

#[test]
fn notify_for_an_absent_queue_is_ignored() {
    let mut g = rng_guest();
    g.probe(1);
    g.notify(7);
    assert!(!g.line.high());
    assert_eq!(g.status() & NEEDS_RESET, 0);
}

#[test]
fn interrupt_line_stays_high_until_every_status_bit_is_acked() {
    let mut g = rng_guest();
    g.probe(1);
    g.add_chain(0, &[(BUF, 16, true)]);
    g.notify(0);
    assert!(g.line.high());
    assert_eq!(g.r32(regs::INTERRUPT_STATUS), INT_USED_RING);
    g.w32(regs::INTERRUPT_ACK, INT_CONFIG);
    assert!(g.line.high(), "acking another bit leaves the line up");
    g.w32(regs::INTERRUPT_ACK, INT_USED_RING);
    assert!(!g.line.high());
    assert_eq!(g.r32(regs::INTERRUPT_STATUS), 0);
}

#[test]
fn reset_lowers_the_interrupt_line_and_clears_queues() {
    let mut g = rng_guest();
    g.probe(1);
    g.add_chain(0, &[(BUF, 16, true)]);
    g.notify(0);
    assert!(g.line.high());
    g.w32(regs::STATUS, 0);
    assert!(!g.line.high());
    assert_eq!(g.status(), 0);
    g.w32(regs::QUEUE_SEL, 0);
    assert_eq!(g.r32(regs::QUEUE_READY), 0);
}

#[test]
fn config_space_out_of_bounds_reads_zero_and_writes_are_ignored() {
    let mut g = Guest::new(Box::new(ConsoleBackend::with_writer(
        "t",
        Box::new(std::io::sink()),
    )));
    // max_nr_ports at config offset 4.
    assert_eq!(g.r32(regs::CONFIG + 4), 1);
    let mut b = [0xffu8; 8];
    g.dev.read(regs::CONFIG + 8, &mut b);
    assert_eq!(b, [0; 8], "8-byte read straddling the 12-byte config");
    g.dev.write(regs::CONFIG + 0x100, &[1, 2, 3, 4]);
    assert_eq!(g.r32(regs::CONFIG + 4), 1);
}

// ---------------------------------------------------------------- rng

#[test]
fn rng_fills_a_device_writable_buffer() {
    let mut g = rng_guest();
    g.probe(1);
    let head = g.add_chain(0, &[(BUF, 256, true), (BUF + 0x1000, 256, true)]);
    g.notify(0);
    assert_eq!(g.used_idx(0), 1);
    assert_eq!(g.used(0, 0), (u32::from(head), 512));
    let a = g.read_mem(BUF, 256);
    let b = g.read_mem(BUF + 0x1000, 256);
    assert!(a.iter().any(|&x| x != 0) && b.iter().any(|&x| x != 0));
    assert_ne!(a, b);
    assert!(g.line.high());
}

#[test]
fn rng_request_with_a_readable_buffer_completes_with_nothing_written() {
    let mut g = rng_guest();
    g.probe(1);
    g.add_chain(0, &[(BUF, 64, false)]);
    g.notify(0);
    assert_eq!(g.used(0, 0).1, 0);
    assert_eq!(g.read_mem(BUF, 64), vec![0; 64]);
}

#[test]
fn buffer_outside_guest_memory_drops_the_request() {
    let mut g = rng_guest();
    g.probe(1);
    let end = MEM_SIZE as u64;
    g.add_chain(0, &[(BUF, 64, true), (end - 32, 64, true)]);
    g.add_chain(0, &[(u64::MAX - 8, 64, true)]);
    g.notify(0);
    assert_eq!(g.used_idx(0), 2);
    assert_eq!(g.used(0, 0).1, 0);
    assert_eq!(g.used(0, 1).1, 0);
    assert_eq!(g.read_mem(BUF, 64), vec![0; 64]);
    assert_eq!(g.read_mem(end - 32, 32), vec![0; 32]);
}

#[test]
fn descriptor_loop_drops_the_request() {
    let mut g = rng_guest();
    g.probe(1);
    g.write_desc(0, 0, BUF, 16, F_WRITE | F_NEXT, 1);
    g.write_desc(0, 1, BUF + 16, 16, F_WRITE | F_NEXT, 0);
    g.make_available(0, 0);
    g.notify(0);
    assert_eq!(g.used_idx(0), 1);
    assert_eq!(g.used(0, 0), (0, 0));
    assert_eq!(g.read_mem(BUF, 32), vec![0; 32]);
    assert_eq!(g.status() & NEEDS_RESET, 0);
}

#[test]
fn readable_after_writable_or_indirect_descriptors_drop_the_request() {
    let mut g = rng_guest();
    g.probe(1);
    g.write_desc(0, 0, BUF, 16, F_WRITE | F_NEXT, 1);
    g.write_desc(0, 1, BUF + 16, 16, 0, 0);
    g.make_available(0, 0);
    g.write_desc(0, 2, BUF + 0x100, 32, 4 /* INDIRECT */, 0);
    g.make_available(0, 2);
    g.notify(0);
    assert_eq!(g.used_idx(0), 2);
    assert_eq!(g.used(0, 0), (0, 0));
    assert_eq!(g.used(0, 1), (2, 0));
    assert_eq!(g.read_mem(BUF, 16), vec![0; 16]);
}

#[test]
fn head_index_outside_the_queue_is_skipped() {
    let mut g = rng_guest();
    g.probe(1);
    g.make_available(0, QSIZE + 3);
    g.add_chain(0, &[(BUF, 8, true)]);
    g.notify(0);
    assert_eq!(g.used_idx(0), 1);
    assert_eq!(g.used(0, 0), (0, 8));
}

#[test]
fn available_index_jump_sets_needs_reset_and_raises_config_interrupt() {
    let mut g = rng_guest();
    g.probe(1);
    let (_, a, _) = rings(0);
    g.mem.write_obj(QSIZE + 5, GuestAddress(a + 2)).unwrap();
    g.notify(0);
    assert_ne!(g.status() & NEEDS_RESET, 0);
    assert_eq!(g.r32(regs::INTERRUPT_STATUS) & INT_CONFIG, INT_CONFIG);
    assert!(g.line.high());
    // Further notifications are ignored until the driver resets.
    g.ack_all();
    g.notify(0);
    assert!(!g.line.high());
    g.probe(1);
    g.add_chain(0, &[(BUF, 8, true)]);
    g.notify(0);
    assert_eq!(g.used(0, 0).1, 8);
}

// ---------------------------------------------------------------- block

const HDR: u64 = 0x20_0000;
const DATA: u64 = 0x20_1000;
const STATUS_AT: u64 = 0x20_0f00;

fn image(sectors: u64) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    let data: Vec<u8> = (0..sectors * 512)
        .map(|i| (i / 512) as u8 ^ (i as u8))
        .collect();
    f.write_all(&data).unwrap();
    f.flush().unwrap();
    f
}

fn block_guest(img: &tempfile::NamedTempFile, read_only: bool) -> Guest {
    let backend = BlockBackend::open(img.path(), read_only, "disk-serial-0").unwrap();
    let mut g = Guest::new(Box::new(backend));
    g.probe(1);
    g
}

impl Guest {
    /// Issues one block request; returns (status byte, used length).
    fn blk(&mut self, kind: u32, sector: u64, data: Option<(u32, bool)>) -> (u8, u32) {
        let mut hdr = [0u8; 16];
        hdr[0..4].copy_from_slice(&kind.to_le_bytes());
        hdr[8..16].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&hdr, GuestAddress(HDR)).unwrap();
        self.mem.write_obj(0xeeu8, GuestAddress(STATUS_AT)).unwrap();
        let mut bufs = vec![(HDR, 16, false)];
        if let Some((len, writable)) = data {
            bufs.push((DATA, len, writable));
        }
        bufs.push((STATUS_AT, 1, true));
        let n = self.used_idx(0);
        self.add_chain(0, &bufs);
        self.notify(0);
        assert_eq!(self.used_idx(0), n.wrapping_add(1));
        let status: u8 = self.mem.read_obj(GuestAddress(STATUS_AT)).unwrap();
        (status, self.used(0, n).1)
    }
}

#[test]
fn block_capacity_and_features_are_in_config_space() {
    let img = image(8);
    let mut g = block_guest(&img, false);
    assert_eq!(g.r32(regs::DEVICE_ID), 2);
    let mut cap = [0u8; 8];
    g.dev.read(regs::CONFIG, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 8);
    let mut lo = [0u8; 1];
    g.dev.read(regs::CONFIG, &mut lo);
    assert_eq!(lo[0], 8);
    let f = g.device_features();
    assert_ne!(f & 1 << VIRTIO_BLK_F_FLUSH, 0);
    assert_eq!(f & 1 << VIRTIO_BLK_F_RO, 0);
}

#[test]
fn block_read_returns_the_image_sectors() {
    let img = image(8);
    let mut g = block_guest(&img, false);
    assert_eq!(
        g.blk(VIRTIO_BLK_T_IN, 2, Some((1024, true))),
        (VIRTIO_BLK_S_OK as u8, 1025)
    );
    let on_disk = std::fs::read(img.path()).unwrap();
    assert_eq!(g.read_mem(DATA, 1024), on_disk[1024..2048]);
}

#[test]
fn block_write_lands_on_disk_and_flush_succeeds() {
    let img = image(8);
    let mut g = block_guest(&img, false);
    let pattern: Vec<u8> = (0..512u32).map(|i| (i * 7) as u8).collect();
    g.mem.write_slice(&pattern, GuestAddress(DATA)).unwrap();
    assert_eq!(
        g.blk(VIRTIO_BLK_T_OUT, 5, Some((512, false))),
        (VIRTIO_BLK_S_OK as u8, 1)
    );
    assert_eq!(
        g.blk(VIRTIO_BLK_T_FLUSH, 0, None),
        (VIRTIO_BLK_S_OK as u8, 1)
    );
    let on_disk = std::fs::read(img.path()).unwrap();
    assert_eq!(on_disk[5 * 512..6 * 512], pattern[..]);
    assert_eq!(on_disk.len(), 8 * 512);
}

#[test]
fn block_get_id_returns_the_serial() {
    let img = image(1);
    let mut g = block_guest(&img, false);
    assert_eq!(
        g.blk(VIRTIO_BLK_T_GET_ID, 0, Some((20, true))),
        (VIRTIO_BLK_S_OK as u8, 21)
    );
    let mut want = b"disk-serial-0".to_vec();
    want.resize(20, 0);
    assert_eq!(g.read_mem(DATA, 20), want);
}

#[test]
fn block_write_to_a_read_only_image_fails_and_leaves_it_unchanged() {
    let img = image(4);
    let before = std::fs::read(img.path()).unwrap();
    let mut g = block_guest(&img, true);
    assert_ne!(g.device_features() & 1 << VIRTIO_BLK_F_RO, 0);
    g.mem.write_slice(&[0xaa; 512], GuestAddress(DATA)).unwrap();
    assert_eq!(
        g.blk(VIRTIO_BLK_T_OUT, 0, Some((512, false))),
        (VIRTIO_BLK_S_IOERR as u8, 1)
    );
    assert_eq!(std::fs::read(img.path()).unwrap(), before);
    // Reads still work.
    assert_eq!(
        g.blk(VIRTIO_BLK_T_IN, 0, Some((512, true))).0,
        VIRTIO_BLK_S_OK as u8
    );
}

#[test]
fn block_requests_beyond_the_image_fail_with_ioerr() {
    let img = image(4);
    let mut g = block_guest(&img, false);
    assert_eq!(
        g.blk(VIRTIO_BLK_T_IN, 4, Some((512, true))),
        (VIRTIO_BLK_S_IOERR as u8, 1)
    );
    assert_eq!(
        g.blk(VIRTIO_BLK_T_IN, 3, Some((1024, true))).0,
        VIRTIO_BLK_S_IOERR as u8
    );
    assert_eq!(
        g.blk(VIRTIO_BLK_T_OUT, u64::MAX, Some((512, false))).0,
        VIRTIO_BLK_S_IOERR as u8
    );
    // Not a whole number of sectors.
    assert_eq!(
        g.blk(VIRTIO_BLK_T_IN, 0, Some((100, true))).0,
        VIRTIO_BLK_S_IOERR as u8
    );
    assert_eq!(std::fs::read(img.path()).unwrap().len(), 4 * 512);
}

#[test]
fn block_unknown_request_type_is_unsupported() {
    let img = image(1);
    let mut g = block_guest(&img, false);
    assert_eq!(
        g.blk(11 /* DISCARD */, 0, Some((16, false))).0,
        VIRTIO_BLK_S_UNSUPP as u8
    );
    assert_eq!(g.blk(0x7777, 0, None).0, VIRTIO_BLK_S_UNSUPP as u8);
}

#[test]
fn block_request_without_status_byte_is_dropped() {
    let img = image(1);
    let mut g = block_guest(&img, false);
    g.add_chain(0, &[(HDR, 16, false)]);
    g.notify(0);
    assert_eq!(g.used(0, 0).1, 0);
}

#[test]
fn block_open_of_a_missing_image_fails() {
    let dir = tempfile::tempdir().unwrap();
    let err = BlockBackend::open(&dir.path().join("nope.img"), false, "x").err();
    assert!(matches!(err, Some(VirtioError::Image { .. })));
}

// ---------------------------------------------------------------- console

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn console_output_reaches_the_host_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("console.log");
    let backend = ConsoleBackend::open(&ConsoleHost::File(path.clone())).unwrap();
    let mut g = Guest::new(Box::new(backend));
    assert_eq!(g.r32(regs::DEVICE_ID), 3);
    g.probe(2);
    g.mem.write_slice(b"hello ", GuestAddress(BUF)).unwrap();
    g.mem
        .write_slice(b"world\n", GuestAddress(BUF + 0x800))
        .unwrap();
    g.add_chain(1, &[(BUF, 6, false), (BUF + 0x800, 6, false)]);
    g.notify(1);
    assert_eq!(g.used(1, 0).1, 0);
    assert!(g.line.high());
    assert_eq!(std::fs::read(&path).unwrap(), b"hello world\n");
}

#[test]
fn console_socket_input_reaches_the_guest_buffer_and_output_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("console.sock");
    let backend = ConsoleBackend::open(&ConsoleHost::Socket(path.clone())).unwrap();
    let mut g = Guest::new(Box::new(backend));
    g.probe(2);
    assert_eq!(
        g.dev.host_fds().len(),
        1,
        "only the listener before a client"
    );
    let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
    client.write_all(b"ls\n").unwrap();
    // No receive buffer yet: input waits.
    g.dev.process_host_input();
    assert!(!g.line.high());
    let head = g.add_chain(0, &[(BUF, 64, true)]);
    g.notify(0);
    assert_eq!(g.used(0, 0), (u32::from(head), 3));
    assert_eq!(g.read_mem(BUF, 3), b"ls\n");
    assert_eq!(g.dev.host_fds().len(), 1, "the client only");
    assert!(g.line.high());
    g.ack_all();
    // Input arriving after the buffer was posted.
    g.add_chain(0, &[(BUF + 0x100, 2, true)]);
    client.write_all(b"pwd").unwrap();
    g.dev.process_host_input();
    assert_eq!(g.used(0, 1).1, 2);
    assert_eq!(g.read_mem(BUF + 0x100, 2), b"pw");
    assert!(g.line.high());
    // Output goes to the client.
    g.mem
        .write_slice(b"out", GuestAddress(BUF + 0x200))
        .unwrap();
    g.add_chain(1, &[(BUF + 0x200, 3, false)]);
    g.notify(1);
    let mut got = [0u8; 3];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"out");
}

#[test]
fn console_transmit_with_a_writable_buffer_is_dropped() {
    let sink = Sink::default();
    let mut g = Guest::new(Box::new(ConsoleBackend::with_writer(
        "t",
        Box::new(sink.clone()),
    )));
    g.probe(2);
    g.mem.write_slice(b"abc", GuestAddress(BUF)).unwrap();
    g.add_chain(1, &[(BUF, 3, false), (BUF + 8, 3, true)]);
    g.notify(1);
    assert_eq!(g.used_idx(1), 1);
    assert!(sink.0.lock().unwrap().is_empty());
}

#[test]
fn console_pushed_input_waits_for_driver_ok() {
    let mut backend = ConsoleBackend::with_writer("t", Box::new(std::io::sink()));
    assert_eq!(backend.push_input(b"x"), 1);
    let mut g = Guest::new(Box::new(backend));
    g.negotiate();
    g.setup_queue(0);
    g.setup_queue(1);
    g.add_chain(0, &[(BUF, 8, true)]);
    g.dev.process_host_input();
    assert_eq!(g.used_idx(0), 0);
    g.w32(regs::STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    g.dev.process_host_input();
    assert_eq!(g.used(0, 0).1, 1);
}

#[test]
fn console_socket_path_of_a_live_socket_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.sock");
    let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let err = ConsoleBackend::open(&ConsoleHost::Socket(path.clone())).err();
    assert!(
        matches!(&err, Some(VirtioError::ConsoleSocketInUse(p)) if *p == path),
        "{err:?}"
    );
    // The owner still gets its connections.
    let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();
    assert!(live.accept().is_ok());
}

#[test]
fn console_socket_path_of_a_stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let backend = ConsoleBackend::open(&ConsoleHost::Socket(path.clone()));
    assert!(backend.is_ok(), "{:?}", backend.err());
    assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
}

#[test]
fn console_host_fds_are_offered_only_while_the_driver_runs_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.sock");
    let backend = ConsoleBackend::open(&ConsoleHost::Socket(path.clone())).unwrap();
    let mut g = Guest::new(Box::new(backend));
    let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();
    // A waiting client before DRIVER_OK: host input is not read yet, so
    // no fd is offered (a worker's poll would spin on it).
    g.negotiate();
    g.setup_queue(0);
    g.setup_queue(1);
    assert!(g.dev.host_fds().is_empty());
    g.w32(regs::STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    assert_eq!(g.dev.host_fds().len(), 1);
    g.w32(regs::STATUS, 0);
    assert!(g.dev.host_fds().is_empty(), "offered after a reset");
}

#[test]
fn console_socket_listener_is_not_offered_while_a_client_is_connected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.sock");
    let backend = ConsoleBackend::open(&ConsoleHost::Socket(path.clone())).unwrap();
    let mut g = Guest::new(Box::new(backend));
    g.probe(2);
    let listener = g.dev.host_fds();
    assert_eq!(listener.len(), 1);
    let first = std::os::unix::net::UnixStream::connect(&path).unwrap();
    g.dev.process_host_input();
    let client = g.dev.host_fds();
    assert_eq!(client.len(), 1);
    assert_ne!(client, listener, "the client replaces the listener");
    // A second client waits in the backlog; the listener stays out.
    let mut second = std::os::unix::net::UnixStream::connect(&path).unwrap();
    second.write_all(b"2nd").unwrap();
    g.dev.process_host_input();
    assert_eq!(g.dev.host_fds(), client);
    // The first leaves: the listener is back and the second gets in.
    drop(first);
    g.dev.process_host_input();
    assert_eq!(g.dev.host_fds(), listener);
    g.add_chain(0, &[(BUF, 8, true)]);
    g.dev.process_host_input();
    assert_eq!(g.used(0, 0).1, 3);
    assert_eq!(g.read_mem(BUF, 3), b"2nd");
}

#[test]
fn register_write_that_starts_the_device_wakes_the_host_fds_waker() {
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.sock");
    let backend = ConsoleBackend::open(&ConsoleHost::Socket(path)).unwrap();
    let mut g = Guest::new(Box::new(backend));
    let waker = EventFd::new(EFD_NONBLOCK).unwrap();
    g.dev.set_host_fds_waker(waker.try_clone().unwrap());
    g.negotiate();
    g.setup_queue(0);
    g.setup_queue(1);
    assert!(waker.read().is_err(), "woken while the fds did not change");
    g.w32(regs::STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    assert_eq!(waker.read().unwrap(), 1);
    g.w32(regs::STATUS, 0);
    assert_eq!(waker.read().unwrap(), 1, "not woken by the reset");
}

// ---------------------------------------------------------------- reset

#[test]
fn reset_then_reprobe_keeps_the_block_image_and_console_connection() {
    let img = image(4);
    let mut g = block_guest(&img, false);
    g.mem.write_slice(&[0x5a; 512], GuestAddress(DATA)).unwrap();
    assert_eq!(
        g.blk(VIRTIO_BLK_T_OUT, 1, Some((512, false))).0,
        VIRTIO_BLK_S_OK as u8
    );
    g.w32(regs::STATUS, 0);
    g.probe(1);
    assert_eq!(
        g.blk(VIRTIO_BLK_T_IN, 1, Some((512, true))).0,
        VIRTIO_BLK_S_OK as u8
    );
    assert_eq!(g.read_mem(DATA, 512), vec![0x5a; 512]);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.sock");
    let mut c = Guest::new(Box::new(
        ConsoleBackend::open(&ConsoleHost::Socket(path.clone())).unwrap(),
    ));
    c.probe(2);
    let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
    c.mem.write_slice(b"one", GuestAddress(BUF)).unwrap();
    c.add_chain(1, &[(BUF, 3, false)]);
    c.notify(1);
    c.w32(regs::STATUS, 0);
    c.probe(2);
    c.mem.write_slice(b"two", GuestAddress(BUF)).unwrap();
    c.add_chain(1, &[(BUF, 3, false)]);
    c.notify(1);
    let mut got = [0u8; 6];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"onetwo");
    client.write_all(b"in").unwrap();
    c.add_chain(0, &[(BUF + 0x100, 8, true)]);
    c.notify(0);
    assert_eq!(c.read_mem(BUF + 0x100, 2), b"in");
}

// ---------------------------------------------------------------- fuzz

/// xorshift64*: deterministic, seedable, no dependency.
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

/// Region the random descriptors may name as device-writable.
const SCRATCH: (u64, u64) = (0x10_0000, 0x18_0000);

fn random_descriptors(g: &mut Guest, r: &mut Rng, q: u32) {
    for idx in 0..QSIZE {
        let writable = r.below(2) == 0;
        let len = match r.below(4) {
            0 => 0,
            1 => r.below(64) as u32,
            2 => r.below(0x1_0000) as u32,
            _ => r.next() as u32,
        };
        let addr = match r.below(5) {
            // Inside scratch (may run past its end only when readable).
            0 | 1 => SCRATCH.0 + r.below(SCRATCH.1 - SCRATCH.0),
            // Straddling or beyond the end of guest memory.
            2 => MEM_SIZE as u64 - r.below(0x1000),
            3 => r.next(),
            // Anywhere in RAM: only readable buffers may go there.
            _ => r.below(MEM_SIZE as u64),
        };
        let mut flags = r.below(8) as u16; // NEXT, WRITE, INDIRECT at random
        if writable {
            flags |= F_WRITE;
        }
        // A writable buffer is kept inside scratch, or wholly outside RAM.
        let (addr, len) = if flags & F_WRITE != 0 {
            let inside = addr >= SCRATCH.0 && addr < SCRATCH.1;
            let outside = addr >= MEM_SIZE as u64;
            if inside {
                (addr, len.min((SCRATCH.1 - addr) as u32))
            } else if outside {
                (addr, len)
            } else {
                (SCRATCH.0, len.min((SCRATCH.1 - SCRATCH.0) as u32))
            }
        } else {
            (addr, len)
        };
        let next = if r.below(4) == 0 {
            r.below(0x1_0000) as u16
        } else {
            r.below(u64::from(QSIZE)) as u16
        };
        g.write_desc(q, idx, addr, len, flags, next);
    }
    // Random available entries and a random index step (sometimes a jump).
    let (_, a, _) = rings(u64::from(q));
    for slot in 0..QSIZE {
        let head = if r.below(8) == 0 {
            r.next() as u16
        } else {
            r.below(u64::from(QSIZE)) as u16
        };
        g.mem
            .write_obj(head, GuestAddress(a + 4 + u64::from(slot) * 2))
            .unwrap();
    }
    let step = if r.below(50) == 0 {
        r.next() as u16
    } else {
        r.below(u64::from(QSIZE) + 1) as u16
    };
    let idx = g.avail_idx[q as usize].wrapping_add(step);
    g.avail_idx[q as usize] = idx;
    g.mem.write_obj(idx, GuestAddress(a + 2)).unwrap();
}

fn fuzz(mut g: Guest, queues: u32, seed: u64, iterations: usize) {
    let mut r = Rng(seed);
    // Everything outside the rings of the set-up queues and the scratch
    // region must stay as it is.
    let (first, _, _) = rings(0);
    let (_, _, last_used) = rings(u64::from(queues - 1));
    let guarded: [(u64, u64); 2] = [(0, first), (last_used + 0x1000, MEM_SIZE as u64)];
    let fill: Vec<u8> = (0..MEM_SIZE).map(|i| (i * 31 % 251) as u8).collect();
    g.mem.write_slice(&fill, GuestAddress(0)).unwrap();
    g.probe(queues);
    let snapshot = |g: &Guest| -> Vec<u8> {
        let mut v = Vec::new();
        for &(s, e) in &guarded {
            if e > s {
                let mut part = g.read_mem(s, (e - s) as usize);
                if s <= SCRATCH.0 && SCRATCH.1 <= e {
                    // Scratch may change.
                    part.drain((SCRATCH.0 - s) as usize..(SCRATCH.1 - s) as usize);
                }
                v.extend(part);
            }
        }
        v
    };
    let before = snapshot(&g);
    let mut resets = 0;
    for i in 0..iterations {
        let q = r.below(u64::from(queues)) as u32;
        random_descriptors(&mut g, &mut r, q);
        let target = if r.below(20) == 0 { r.next() as u32 } else { q };
        g.w32(regs::QUEUE_NOTIFY, target);
        if r.below(3) == 0 {
            g.dev.process_host_input();
        }
        if r.below(2) == 0 {
            g.ack_all();
        }
        if g.status() & NEEDS_RESET != 0 {
            resets += 1;
            g.probe(queues);
        }
        if i % 500 == 0 {
            assert!(
                before == snapshot(&g),
                "iteration {i}: guarded memory changed"
            );
        }
    }
    assert!(before == snapshot(&g), "guarded memory changed");
    assert_eq!(g.r32(regs::MAGIC), MAGIC);
    let raises = g.line.raises.load(Ordering::SeqCst);
    assert!(
        raises > iterations / 10,
        "only {raises} interrupts: the walk barely served requests"
    );
    assert!(
        resets > 0,
        "the random walk should hit an available-index jump"
    );
}

#[test]
fn random_descriptor_tables_never_write_outside_device_writable_buffers_rng() {
    fuzz(rng_guest(), 1, 0x5eed_0001, 10_000);
}

#[test]
fn random_descriptor_tables_never_write_outside_device_writable_buffers_block() {
    let img = image(64);
    let backend = BlockBackend::open(img.path(), false, "fuzz").unwrap();
    fuzz(Guest::new(Box::new(backend)), 1, 0x5eed_0002, 10_000);
    assert_eq!(std::fs::metadata(img.path()).unwrap().len(), 64 * 512);
}

#[test]
fn random_descriptor_tables_never_write_outside_device_writable_buffers_console() {
    let sink = Sink::default();
    let mut backend = ConsoleBackend::with_writer("fuzz", Box::new(sink));
    backend.push_input(&[0x42; 4096]);
    fuzz(Guest::new(Box::new(backend)), 2, 0x5eed_0003, 10_000);
}

#[test]
fn misaligned_ring_address_keeps_the_queue_disabled() {
    let mut g = rng_guest();
    g.negotiate();
    g.setup_queue(0);
    g.w32(regs::STATUS, 0);
    g.negotiate();
    g.w32(regs::QUEUE_SEL, 0);
    g.w32(regs::QUEUE_NUM, 16);
    g.w32(regs::QUEUE_DESC_LOW, 0x1008);
    g.w32(regs::QUEUE_AVAIL_LOW, 0x2000);
    g.w32(regs::QUEUE_USED_LOW, 0x3000);
    g.w32(regs::QUEUE_READY, 1);
    assert_eq!(g.r32(regs::QUEUE_READY), 0);
    assert_ne!(g.status() & NEEDS_RESET, 0);
}

#[test]
fn queue_registers_written_after_driver_ok_are_ignored() {
    let mut g = rng_guest();
    g.probe(1);
    g.w32(regs::QUEUE_SEL, 0);
    g.w32(regs::QUEUE_DESC_LOW, 0x9000);
    g.add_chain(0, &[(BUF, 8, true)]);
    g.notify(0);
    assert_eq!(g.used(0, 0).1, 8);
}

#[test]
fn driver_ok_in_the_same_write_as_a_refused_features_ok_does_not_stick() {
    let mut g = rng_guest();
    g.w32(regs::STATUS, ACK);
    g.w32(regs::STATUS, ACK | DRIVER);
    g.write_driver_features(1 << 28);
    g.w32(regs::STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    assert_eq!(g.status(), ACK | DRIVER);
    g.w32(regs::QUEUE_NOTIFY, 0);
    assert!(!g.line.high());
}
