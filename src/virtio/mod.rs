//! Virtio devices: the virtio-mmio (version 2, "modern") transport and the
//! device backends it drives (entropy, block, console).
//!
//! A transport ([`VirtioMmioDevice`]) owns the guest-visible registers, the
//! feature negotiation, the status state machine, the virtqueues and the
//! interrupt line; a backend ([`VirtioBackend`]) knows one device type: its
//! features, its configuration space and how to serve a queue. The split lets
//! a later virtio-pci transport reuse the backends unchanged.
//!
//! Everything the guest controls is treated as hostile: descriptor chains are
//! walked by [`next_request`] with a bound on their length, every buffer is
//! checked against guest memory before it is used, and all guest memory
//! accesses go through vm-memory, which never touches anything outside guest
//! RAM. See docs/virtio.md.

pub mod block;
pub mod console;
pub mod mmio;
pub mod pci;
#[cfg(test)]
mod pci_tests;
pub mod rng;
pub mod state;
#[cfg(test)]
mod tests;

pub use block::BlockBackend;
pub use console::{ConsoleBackend, ConsoleHost};
pub use mmio::VirtioMmioDevice;
pub use pci::VirtioPciFunction;
pub use rng::RngBackend;

use std::os::fd::RawFd;
use std::path::PathBuf;
use thiserror::Error;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

/// `VIRTIO_F_VERSION_1`: the only transport feature cellvm offers and the one
/// it requires.
pub const VIRTIO_F_VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;

const VRING_DESC_F_NEXT: u16 = virtio_bindings::virtio_ring::VRING_DESC_F_NEXT as u16;
const VRING_DESC_F_WRITE: u16 = virtio_bindings::virtio_ring::VRING_DESC_F_WRITE as u16;
const VRING_DESC_F_INDIRECT: u16 = virtio_bindings::virtio_ring::VRING_DESC_F_INDIRECT as u16;

/// Errors of the virtio devices.
#[derive(Debug, Error)]
pub enum VirtioError {
    /// The block image could not be opened or sized.
    #[error("block image {path}: {source}")]
    Image {
        /// The image path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The console's host side could not be set up.
    #[error("console host side {what}: {source}")]
    ConsoleHost {
        /// What was being set up (path or "stdout").
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The console socket path names a socket something still listens on
    /// (another cell's console?); it is left alone.
    #[error("console socket {0} is in use: something is listening on it")]
    ConsoleSocketInUse(PathBuf),
    /// The driver broke the virtqueue protocol in a way that needs a device
    /// reset (e.g. the available index moved by more than the queue size).
    #[error("queue {queue}: {source}")]
    Queue {
        /// Queue index.
        queue: usize,
        /// What virtio-queue reported.
        source: virtio_queue::Error,
    },
    /// A used-ring update failed (used ring outside guest memory).
    #[error("queue {queue}: cannot publish used buffer: {source}")]
    UsedRing {
        /// Queue index.
        queue: usize,
        /// What virtio-queue reported.
        source: virtio_queue::Error,
    },
}

/// One device type behind a virtio transport.
///
/// The transport calls these from the vCPU thread that wrote QueueNotify (or
/// from whoever calls [`VirtioMmioDevice::process_host_input`]), with the
/// transport's lock held; backends never see the transport's registers.
pub trait VirtioBackend: Send {
    /// Virtio device ID (2 block, 3 console, 4 entropy).
    fn device_type(&self) -> u32;
    /// Feature bits the device offers, including [`VIRTIO_F_VERSION_1`].
    fn device_features(&self) -> u64;
    /// Maximum size of each queue (powers of two); its length is the number
    /// of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// The device-specific configuration space (little endian).
    fn config_space(&self) -> Vec<u8>;
    /// A driver write into the configuration space, already bounds-checked.
    /// The default ignores it (all of cellvm's config fields are read-only).
    fn write_config(&mut self, _offset: usize, _data: &[u8]) {}
    /// The driver set DRIVER_OK with these negotiated features.
    fn activate(&mut self, _features: u64) {}
    /// The driver reset the device. Only per-driver state goes; the host side
    /// (image file, console connection) stays.
    fn reset(&mut self) {}
    /// Serves queue `index` after a notification. Returns whether any used
    /// buffer was published (the transport then raises the interrupt). An
    /// error means the device needs a reset.
    fn process_queue(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<bool, VirtioError>;
    /// The device was surprise-removed (docs/addons.md): drop the host side
    /// (an image file, a console connection) now. Later calls of
    /// [`Self::process_queue`] must not block: they fail each request with
    /// the device type's error status, or leave it unanswered where the
    /// guest's driver does not wait for it when the device goes.
    fn sever(&mut self);
    /// Host file descriptors whose readability means host input may be
    /// pending (see [`VirtioMmioDevice::process_host_input`]). The set can
    /// change after each call of `process_host_input` (a console client
    /// connecting or leaving). Default: none.
    fn host_fds(&self) -> Vec<std::os::fd::RawFd> {
        Vec::new()
    }
    /// Host-side input is (or may be) pending: feed it into the queues.
    /// Returns whether any used buffer was published. Default: nothing.
    fn process_host_input(
        &mut self,
        _queues: &mut [Queue],
        _mem: &GuestMemoryMmap,
    ) -> Result<bool, VirtioError> {
        Ok(false)
    }
}

/// What the VMM's per-device I/O worker drives (see `vmm::virtio`): queue
/// notifications that arrived through ioeventfds instead of a trapped write
/// of the notify register, and host-side input (a console's socket or pty).
pub trait VirtioTransport: Send {
    /// Number of virtqueues (one notification eventfd each).
    fn num_queues(&self) -> usize;
    /// The driver notified queue `index` (an ioeventfd fired). Unlike a
    /// trapped register write, this may arrive after the driver reset the
    /// device or disabled the queue: such a notification is dropped quietly.
    fn queue_notified(&mut self, index: u16);
    /// Descriptors whose readability means host input may be pending.
    fn host_fds(&self) -> Vec<std::os::fd::RawFd>;
    /// Moves pending host input into the guest's buffers.
    fn process_host_input(&mut self);
    /// An eventfd the transport signals when a guest access (on a vCPU
    /// thread) changed [`Self::host_fds`], e.g. the driver started the
    /// device: a worker blocked in poll on the old set then asks again.
    /// Default: ignored.
    fn set_host_fds_waker(&mut self, _waker: EventFd) {}
    /// Surprise removal: the backend drops its host side
    /// ([`VirtioBackend::sever`]); the registers keep answering.
    fn sever(&mut self);
}

/// What a transport keeps to tell its worker that a guest access changed
/// its host fds ([`VirtioTransport::set_host_fds_waker`]).
#[derive(Default)]
pub(crate) struct HostFdsWaker(Option<EventFd>);

impl HostFdsWaker {
    /// Signals `waker` from now on.
    pub fn set(&mut self, waker: EventFd) {
        self.0 = Some(waker);
    }

    /// The host fds before a guest access, if anyone is to be told of a
    /// change (computed only then).
    pub fn before(&self, fds: impl FnOnce() -> Vec<RawFd>) -> Option<Vec<RawFd>> {
        self.0.as_ref().map(|_| fds())
    }

    /// Signals the waker if the host fds differ from `before`.
    pub fn after(&self, before: Option<Vec<RawFd>>, fds: impl FnOnce() -> Vec<RawFd>) {
        let (Some(waker), Some(before)) = (&self.0, before) else {
            return;
        };
        if fds() != before {
            if let Err(e) = waker.write(1) {
                log::warn!("virtio: cannot wake the device worker: {e}");
            }
        }
    }
}

impl VirtioTransport for VirtioMmioDevice {
    fn num_queues(&self) -> usize {
        VirtioMmioDevice::num_queues(self)
    }
    fn queue_notified(&mut self, index: u16) {
        VirtioMmioDevice::queue_notified(self, index)
    }
    fn host_fds(&self) -> Vec<std::os::fd::RawFd> {
        VirtioMmioDevice::host_fds(self)
    }
    fn process_host_input(&mut self) {
        VirtioMmioDevice::process_host_input(self)
    }
    fn set_host_fds_waker(&mut self, waker: EventFd) {
        VirtioMmioDevice::set_host_fds_waker(self, waker)
    }
    fn sever(&mut self) {
        VirtioMmioDevice::sever(self)
    }
}

impl VirtioTransport for VirtioPciFunction {
    fn num_queues(&self) -> usize {
        VirtioPciFunction::num_queues(self)
    }
    fn queue_notified(&mut self, index: u16) {
        VirtioPciFunction::queue_notified(self, index)
    }
    fn host_fds(&self) -> Vec<std::os::fd::RawFd> {
        VirtioPciFunction::host_fds(self)
    }
    fn process_host_input(&mut self) {
        VirtioPciFunction::process_host_input(self)
    }
    fn set_host_fds_waker(&mut self, waker: EventFd) {
        VirtioPciFunction::set_host_fds_waker(self, waker)
    }
    fn sever(&mut self) {
        VirtioPciFunction::sever(self)
    }
}

/// One buffer of a descriptor chain, checked to lie inside guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Buffer {
    pub addr: GuestAddress,
    pub len: u32,
    pub writable: bool,
}

/// A well-formed descriptor chain: readable buffers first, then writable ones.
#[derive(Debug)]
pub(crate) struct Request {
    pub head: u16,
    pub buffers: Vec<Buffer>,
}

impl Request {
    pub fn readable(&self) -> impl Iterator<Item = &Buffer> {
        self.buffers.iter().filter(|b| !b.writable)
    }
    pub fn writable(&self) -> impl Iterator<Item = &Buffer> {
        self.buffers.iter().filter(|b| b.writable)
    }
    pub fn readable_len(&self) -> u64 {
        self.readable().map(|b| u64::from(b.len)).sum()
    }
    pub fn writable_len(&self) -> u64 {
        self.writable().map(|b| u64::from(b.len)).sum()
    }
}

/// What the next available ring entry held.
#[derive(Debug)]
pub(crate) enum Popped {
    /// Nothing available.
    Empty,
    /// A well-formed chain.
    Request(Request),
    /// A chain the device must not use; complete it with length 0.
    Malformed { head: u16, why: &'static str },
    /// A head index outside the queue: nothing can be completed; skip it.
    BadHead(u16),
}

/// Pops the next available chain of `queue` and walks it.
///
/// The walk reads descriptors straight from the table (never more than the
/// queue size of them, so loops end), rejects indirect descriptors (cellvm does
/// not offer `VIRTIO_F_INDIRECT_DESC`), next indices outside the table,
/// readable buffers after writable ones, chains longer than 4 GiB in total and
/// buffers not entirely inside guest memory.
pub(crate) fn next_request(
    index: usize,
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
) -> Result<Popped, VirtioError> {
    let size = queue.size();
    let table = GuestAddress(queue.desc_table());
    let head = {
        let mut iter = queue.iter(mem).map_err(|source| VirtioError::Queue {
            queue: index,
            source,
        })?;
        match iter.next() {
            None => return Ok(Popped::Empty),
            Some(chain) => chain.head_index(),
        }
    };
    if head >= size {
        return Ok(Popped::BadHead(head));
    }
    let malformed = |why| Ok(Popped::Malformed { head, why });
    let mut buffers = Vec::new();
    let mut next = head;
    let mut total: u64 = 0;
    let mut seen_writable = false;
    loop {
        if buffers.len() >= usize::from(size) {
            return malformed("chain longer than the queue (loop?)");
        }
        let Some(at) = table.checked_add(u64::from(next) * 16) else {
            return malformed("descriptor address overflows");
        };
        let Ok(desc) = mem.read_obj::<Descriptor>(at) else {
            return malformed("descriptor table outside guest memory");
        };
        let flags = desc.flags();
        if flags & VRING_DESC_F_INDIRECT != 0 {
            return malformed("indirect descriptor (not negotiated)");
        }
        let writable = flags & VRING_DESC_F_WRITE != 0;
        if seen_writable && !writable {
            return malformed("readable descriptor after a writable one");
        }
        seen_writable |= writable;
        total += u64::from(desc.len());
        if total > u64::from(u32::MAX) {
            return malformed("chain longer than 4 GiB");
        }
        let addr = desc.addr();
        if desc.len() > 0 && !mem.check_range(addr, desc.len() as usize) {
            return malformed("buffer outside guest memory");
        }
        buffers.push(Buffer {
            addr,
            len: desc.len(),
            writable,
        });
        if flags & VRING_DESC_F_NEXT == 0 {
            break;
        }
        next = desc.next();
        if next >= size {
            return malformed("next index outside the descriptor table");
        }
    }
    Ok(Popped::Request(Request { head, buffers }))
}

/// Publishes `head` with `len` bytes written on the used ring.
pub(crate) fn complete(
    index: usize,
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    head: u16,
    len: u32,
) -> Result<(), VirtioError> {
    queue
        .add_used(mem, head, len)
        .map_err(|source| VirtioError::UsedRing {
            queue: index,
            source,
        })
}

/// Copies guest buffers out as one byte stream: `skip` bytes are skipped,
/// then at most `out.len()` bytes are read. Returns the number read.
pub(crate) fn gather<'a>(
    mem: &GuestMemoryMmap,
    buffers: impl Iterator<Item = &'a Buffer>,
    mut skip: u64,
    out: &mut [u8],
) -> usize {
    let mut done = 0;
    for b in buffers {
        if done == out.len() {
            break;
        }
        let len = u64::from(b.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = ((len - skip) as usize).min(out.len() - done);
        let Some(addr) = b.addr.checked_add(skip) else {
            break;
        };
        if mem.read_slice(&mut out[done..done + n], addr).is_err() {
            break;
        }
        skip = 0;
        done += n;
    }
    done
}

/// Copies `data` into guest buffers viewed as one byte stream starting
/// `skip` bytes in. Returns the number of bytes written.
pub(crate) fn scatter<'a>(
    mem: &GuestMemoryMmap,
    buffers: impl Iterator<Item = &'a Buffer>,
    mut skip: u64,
    data: &[u8],
) -> usize {
    let mut done = 0;
    for b in buffers {
        if done == data.len() {
            break;
        }
        let len = u64::from(b.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = ((len - skip) as usize).min(data.len() - done);
        let Some(addr) = b.addr.checked_add(skip) else {
            break;
        };
        if mem.write_slice(&data[done..done + n], addr).is_err() {
            break;
        }
        skip = 0;
        done += n;
    }
    done
}

/// Completes a malformed chain with length 0 after a rate-limited log line.
pub(crate) fn reject(
    index: usize,
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    head: u16,
    why: &str,
    log: &crate::ratelimit::RateLimiter,
    device: &str,
) -> Result<(), VirtioError> {
    if log.allow() {
        log::warn!("virtio {device}: queue {index}: dropping descriptor chain {head}: {why}");
    }
    complete(index, queue, mem, head, 0)
}

/// Pops the next well-formed chain of `queue`, completing malformed chains
/// with length 0 and skipping heads outside the queue on the way (each with a
/// rate-limited log line). Sets `used` when a chain was completed; `None`
/// when nothing is available.
pub(crate) fn next_valid_request(
    index: usize,
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    log: &crate::ratelimit::RateLimiter,
    device: &str,
    used: &mut bool,
) -> Result<Option<Request>, VirtioError> {
    loop {
        match next_request(index, queue, mem)? {
            Popped::Empty => return Ok(None),
            Popped::BadHead(head) => log_bad_head(index, head, log, device),
            Popped::Malformed { head, why } => {
                reject(index, queue, mem, head, why, log, device)?;
                *used = true;
            }
            Popped::Request(req) => return Ok(Some(req)),
        }
    }
}

/// Logs a head index outside the queue (nothing can be completed).
pub(crate) fn log_bad_head(
    index: usize,
    head: u16,
    log: &crate::ratelimit::RateLimiter,
    device: &str,
) {
    if log.allow() {
        log::warn!("virtio {device}: queue {index}: available ring names descriptor {head}, outside the queue; skipped");
    }
}
