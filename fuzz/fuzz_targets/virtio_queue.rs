//! Virtqueue handling, structure-aware: a virtio-mmio device with the rng,
//! block or console backend, probed like a guest driver would, then fed
//! descriptor tables, available-ring entries and index steps (well-formed
//! chains and hostile ones: loops, jumps, out-of-range heads and buffers,
//! indirect and write-before-read descriptors), notifications through the
//! register and the ioeventfd path, console host input, interrupt acks,
//! resets and raw register writes. See also the seeded loop in
//! src/virtio/tests.rs.
//!
//! Checks: no panic; the device never writes guest memory outside its rings
//! and the buffers the driver marked device-writable (unless the input moved
//! the rings with raw register writes); the block image keeps its size and a
//! read-only one its contents; the identification registers hold.

#![no_main]

use arbitrary::Arbitrary;
use cellvm::devices::{BusDevice, InterruptLine};
use cellvm::virtio::mmio::{regs, MAGIC};
use cellvm::virtio::{BlockBackend, ConsoleBackend, RngBackend, VirtioBackend, VirtioMmioDevice};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const MEM_SIZE: u64 = 512 << 10;
/// Queue `i`'s rings live in `RINGS + i * RING_STRIDE ..`.
const RINGS: u64 = 0x10000;
const RING_STRIDE: u64 = 0x4000;
/// Where device-writable buffers may point (and the driver's scratch data).
const SCRATCH: (u64, u64) = (0x40000, 0x60000);
const IMAGE_SECTORS: u64 = 64;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;

const ACK: u32 = 1;
const DRIVER: u32 = 2;
const DRIVER_OK: u32 = 4;
const FEATURES_OK: u32 = 8;

#[derive(Default)]
struct Line(AtomicBool);

impl InterruptLine for Line {
    fn set_level(&self, level: bool) {
        self.0.store(level, Ordering::SeqCst);
    }
}

#[derive(Arbitrary, Debug)]
enum Backend {
    Rng,
    Block { read_only: bool },
    Console { input: Vec<u8> },
}

/// A buffer address, mostly somewhere useful.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Addr {
    Scratch(u32),
    Ram(u32),
    /// Straddling or just past the end of guest memory.
    NearEnd(u16),
    Any(u64),
}

impl Addr {
    fn resolve(self) -> u64 {
        match self {
            Addr::Scratch(o) => SCRATCH.0 + u64::from(o) % (SCRATCH.1 - SCRATCH.0),
            Addr::Ram(o) => u64::from(o) % MEM_SIZE,
            Addr::NearEnd(o) => (MEM_SIZE - 0x1000) + u64::from(o) % 0x2000,
            Addr::Any(a) => a,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Buf {
    addr: Addr,
    len: u32,
    writable: bool,
}

#[derive(Arbitrary, Debug)]
enum Action {
    /// A well-formed chain of buffers, made available with one index step.
    Chain {
        queue: u8,
        bufs: Vec<Buf>,
    },
    /// One raw descriptor table entry.
    Desc {
        queue: u8,
        index: u16,
        addr: Addr,
        len: u32,
        flags: u16,
        next: u16,
    },
    /// One available-ring slot.
    Avail {
        queue: u8,
        slot: u16,
        head: u16,
    },
    /// Move the available index (small steps mostly, sometimes a jump).
    Publish {
        queue: u8,
        step: u16,
    },
    /// Driver data in scratch memory (e.g. a block request header).
    Data {
        at: u16,
        bytes: Vec<u8>,
    },
    /// A virtio-blk request header in scratch memory.
    BlockHeader {
        at: u16,
        kind: u8,
        sector: u64,
    },
    Notify {
        queue: u32,
    },
    /// The ioeventfd path.
    Notified {
        queue: u16,
    },
    HostInput,
    AckInterrupts,
    Read {
        offset: u16,
    },
    Write {
        offset: u16,
        value: u32,
    },
    /// Reset and probe again.
    Reprobe,
}

#[derive(Arbitrary, Debug)]
struct Input {
    backend: Backend,
    /// Queue size: 1 << (size_log2 % 9), at most the device's maximum.
    size_log2: u8,
    actions: Vec<Action>,
}

fn rings(q: u64) -> (u64, u64, u64) {
    let base = RINGS + q * RING_STRIDE;
    (base, base + 0x1000, base + 0x2000)
}

/// The block image: a memfd made once per process (nothing is left on
/// disk), opened by its /proc path for every input.
fn image() -> &'static PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        // SAFETY: memfd_create reads a NUL-terminated name and returns a
        // new descriptor or -1; no memory is handed over.
        let fd = unsafe { libc::memfd_create(c"cellvm-fuzz-image".as_ptr(), 0) };
        assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
        let path = PathBuf::from(format!("/proc/self/fd/{fd}"));
        let data: Vec<u8> = (0..IMAGE_SECTORS * 512)
            .map(|i| (i * 7 % 253) as u8)
            .collect();
        std::fs::write(&path, data).unwrap();
        path
    })
}

struct Guest {
    dev: VirtioMmioDevice,
    mem: GuestMemoryMmap,
    queues: u32,
    qsize: u16,
    next_desc: Vec<u16>,
    avail_idx: Vec<u16>,
    /// A raw register write may have moved or resized a ring.
    rings_moved: bool,
}

impl Guest {
    fn r32(&mut self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.dev.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn w32(&mut self, off: u64, v: u32) {
        self.dev.write(off, &v.to_le_bytes());
    }

    fn probe(&mut self) {
        self.w32(regs::STATUS, 0);
        self.w32(regs::STATUS, ACK);
        self.w32(regs::STATUS, ACK | DRIVER);
        for sel in 0..2 {
            self.w32(regs::DEVICE_FEATURES_SEL, sel);
            let f = self.r32(regs::DEVICE_FEATURES);
            self.w32(regs::DRIVER_FEATURES_SEL, sel);
            self.w32(regs::DRIVER_FEATURES, f);
        }
        self.w32(regs::STATUS, ACK | DRIVER | FEATURES_OK);
        for q in 0..self.queues {
            let (d, a, u) = rings(u64::from(q));
            self.mem
                .write_slice(&vec![0u8; RING_STRIDE as usize], GuestAddress(d))
                .unwrap();
            self.w32(regs::QUEUE_SEL, q);
            self.w32(regs::QUEUE_NUM, u32::from(self.qsize));
            self.w32(regs::QUEUE_DESC_LOW, d as u32);
            self.w32(regs::QUEUE_DESC_HIGH, 0);
            self.w32(regs::QUEUE_AVAIL_LOW, a as u32);
            self.w32(regs::QUEUE_AVAIL_HIGH, 0);
            self.w32(regs::QUEUE_USED_LOW, u as u32);
            self.w32(regs::QUEUE_USED_HIGH, 0);
            self.w32(regs::QUEUE_READY, 1);
            self.next_desc[q as usize] = 0;
            self.avail_idx[q as usize] = 0;
        }
        self.w32(regs::STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    }

    fn queue(&self, q: u8) -> u32 {
        u32::from(q) % self.queues
    }

    fn write_desc(&self, q: u32, idx: u16, addr: u64, len: u32, flags: u16, next: u16) {
        // Device-writable buffers stay inside scratch, or wholly outside RAM.
        let (addr, len) = if flags & F_WRITE != 0 && addr < MEM_SIZE {
            let addr = if (SCRATCH.0..SCRATCH.1).contains(&addr) {
                addr
            } else {
                SCRATCH.0
            };
            (addr, len.min((SCRATCH.1 - addr) as u32))
        } else {
            (addr, len)
        };
        let (d, _, _) = rings(u64::from(q));
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        let at = d + u64::from(idx % self.qsize) * 16;
        self.mem.write_slice(&raw, GuestAddress(at)).unwrap();
    }

    fn set_avail(&self, q: u32, slot: u16, head: u16) {
        let (_, a, _) = rings(u64::from(q));
        let at = a + 4 + u64::from(slot % self.qsize) * 2;
        self.mem.write_obj(head, GuestAddress(at)).unwrap();
    }

    fn publish(&mut self, q: u32, step: u16) {
        let idx = self.avail_idx[q as usize].wrapping_add(step);
        self.avail_idx[q as usize] = idx;
        let (_, a, _) = rings(u64::from(q));
        self.mem.write_obj(idx, GuestAddress(a + 2)).unwrap();
    }

    fn chain(&mut self, q: u32, bufs: &[Buf]) {
        let bufs = &bufs[..bufs.len().min(usize::from(self.qsize))];
        if bufs.is_empty() {
            return;
        }
        let head = self.next_desc[q as usize];
        for (k, b) in bufs.iter().enumerate() {
            let idx = (head + k as u16) % self.qsize;
            let mut flags = if b.writable { F_WRITE } else { 0 };
            if k + 1 < bufs.len() {
                flags |= F_NEXT;
            }
            self.write_desc(
                q,
                idx,
                b.addr.resolve(),
                b.len,
                flags,
                (idx + 1) % self.qsize,
            );
        }
        self.next_desc[q as usize] = (head + bufs.len() as u16) % self.qsize;
        let slot = self.avail_idx[q as usize];
        self.set_avail(q, slot, head);
        self.publish(q, 1);
    }

    fn step(&mut self, action: Action) {
        match action {
            Action::Chain { queue, bufs } => {
                let q = self.queue(queue);
                self.chain(q, &bufs);
            }
            Action::Desc {
                queue,
                index,
                addr,
                len,
                flags,
                next,
            } => {
                let q = self.queue(queue);
                let flags = flags & (F_NEXT | F_WRITE | F_INDIRECT) | flags & 0x8000;
                self.write_desc(q, index, addr.resolve(), len, flags, next);
            }
            Action::Avail { queue, slot, head } => {
                let q = self.queue(queue);
                self.set_avail(q, slot, head);
            }
            Action::Publish { queue, step } => {
                let q = self.queue(queue);
                let step = if step & 0x8000 != 0 {
                    step
                } else {
                    step % (self.qsize + 1)
                };
                self.publish(q, step);
            }
            Action::Data { at, bytes } => {
                let at = SCRATCH.0 + u64::from(at);
                let n = bytes.len().min(4096);
                self.mem.write_slice(&bytes[..n], GuestAddress(at)).unwrap();
            }
            Action::BlockHeader { at, kind, sector } => {
                // IN, OUT, FLUSH, GET_ID, or anything.
                let kind = match kind % 5 {
                    0 => 0,
                    1 => 1,
                    2 => 4,
                    3 => 8,
                    _ => u32::from(kind),
                };
                let mut hdr = [0u8; 16];
                hdr[0..4].copy_from_slice(&kind.to_le_bytes());
                let sector = if sector & (1 << 63) == 0 {
                    sector % (IMAGE_SECTORS + 2)
                } else {
                    sector
                };
                hdr[8..16].copy_from_slice(&sector.to_le_bytes());
                let at = SCRATCH.0 + u64::from(at);
                self.mem.write_slice(&hdr, GuestAddress(at)).unwrap();
            }
            Action::Notify { queue } => {
                let q = if queue & 0x8000_0000 == 0 {
                    queue % self.queues
                } else {
                    queue
                };
                self.w32(regs::QUEUE_NOTIFY, q);
            }
            Action::Notified { queue } => self.dev.queue_notified(queue % 4),
            Action::HostInput => self.dev.process_host_input(),
            Action::AckInterrupts => {
                let pending = self.r32(regs::INTERRUPT_STATUS);
                self.w32(regs::INTERRUPT_ACK, pending);
            }
            Action::Read { offset } => {
                let _ = self.r32(u64::from(offset % 0x200) & !3);
            }
            Action::Write { offset, value } => {
                let offset = u64::from(offset % 0x200) & !3;
                if matches!(offset, regs::QUEUE_NUM | regs::QUEUE_READY)
                    || (regs::QUEUE_DESC_LOW..=regs::QUEUE_USED_HIGH).contains(&offset)
                {
                    self.rings_moved = true;
                }
                self.w32(offset, value);
            }
            Action::Reprobe => self.probe(),
        }
    }

    /// Whether guest memory outside the rings and scratch still holds
    /// [`fill`].
    fn guarded_intact(&self) -> bool {
        let ring_end = RINGS + u64::from(self.queues) * RING_STRIDE;
        let mut buf = vec![0u8; MEM_SIZE as usize];
        [(0, RINGS), (ring_end, SCRATCH.0), (SCRATCH.1, MEM_SIZE)]
            .into_iter()
            .all(|(s, e)| {
                let (s, e) = (s as usize, e as usize);
                self.mem
                    .read_slice(&mut buf[s..e], GuestAddress(s as u64))
                    .unwrap();
                buf[s..e] == fill()[s..e]
            })
    }
}

/// What guest memory holds before the driver starts.
fn fill() -> &'static [u8] {
    static FILL: OnceLock<Vec<u8>> = OnceLock::new();
    FILL.get_or_init(|| (0..MEM_SIZE).map(|i| (i * 31 % 251) as u8).collect())
}

fuzz_target!(|input: Input| {
    let mut read_only_image = None;
    let backend: Box<dyn VirtioBackend> = match &input.backend {
        Backend::Rng => Box::new(RngBackend::new()),
        Backend::Block { read_only } => {
            if *read_only {
                read_only_image = Some(std::fs::read(image()).unwrap());
            }
            Box::new(BlockBackend::open(image(), *read_only, "fuzz").unwrap())
        }
        Backend::Console { input } => {
            let mut b = ConsoleBackend::with_writer("fuzz", Box::new(std::io::sink()));
            b.push_input(input);
            Box::new(b)
        }
    };
    let max = backend.queue_max_sizes().iter().copied().min().unwrap();
    let queues = backend.queue_max_sizes().len() as u32;
    let qsize = (1u16 << (input.size_log2 % 9)).min(max);
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap();
    mem.write_slice(fill(), GuestAddress(0)).unwrap();
    let line = Arc::new(Line::default());
    let mut g = Guest {
        dev: VirtioMmioDevice::new("fuzz", backend, mem.clone(), line),
        mem,
        queues,
        qsize,
        next_desc: vec![0; queues as usize],
        avail_idx: vec![0; queues as usize],
        rings_moved: false,
    };
    g.probe();
    for action in input.actions.into_iter().take(128) {
        g.step(action);
    }
    assert_eq!(g.r32(regs::MAGIC), MAGIC);
    if !g.rings_moved {
        assert!(
            g.guarded_intact(),
            "the device wrote outside its rings and writable buffers"
        );
    }
    if matches!(input.backend, Backend::Block { .. }) {
        let len = std::fs::metadata(image()).unwrap().len();
        assert_eq!(len, IMAGE_SECTORS * 512, "the image changed size");
    }
    if let Some(contents) = read_only_image {
        assert!(
            std::fs::read(image()).unwrap() == contents,
            "a read-only image changed"
        );
    }
});
