//! Virtio devices in a running cell: building them from their configuration,
//! their queue-notification ioeventfds, and the worker thread each device
//! gets.
//!
//! The fast path: every virtqueue has an eventfd that KVM signals when the
//! guest writes that queue's notify register (an ioeventfd with the queue
//! index as datamatch), so the vCPU does not exit to cellvm for it. The
//! device's worker thread waits on those eventfds (and on the backend's host
//! fds: a console's pty or socket), and serves the queue; interrupts go out
//! on the device's level-triggered pin (`irq::LevelPins`, `KVM_IRQ_LINE`)
//! for virtio-mmio and through irqfds (`irq::IrqfdMsiSender`) for
//! virtio-pci's MSI-X. A write KVM does not match (another width or
//! value, or registration refused) still exits and is served synchronously
//! on the vCPU thread, so the slow path stays correct.

use super::error::{OsContext, VmmError};
use super::irq;
use crate::config::{VirtioBackendConfig, VirtioKind};
use crate::pci::{BarMapError, BarMapper};
use crate::seccomp::{Filters, ThreadKind};
use crate::sync;
use crate::virtio::{
    BlockBackend, ConsoleBackend, ConsoleHost, RngBackend, VirtioBackend, VirtioMmioDevice,
    VirtioPciFunction, VirtioTransport,
};
use kvm_ioctls::{IoEventAddress, VmFd};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// The backend a device's configuration asks for. `id` names it in errors
/// and is the default disk serial.
pub(crate) fn build_backend(
    id: &str,
    kind: VirtioKind,
    b: &VirtioBackendConfig,
) -> Result<Box<dyn VirtioBackend>, VmmError> {
    let backend: Box<dyn VirtioBackend> = match kind {
        VirtioKind::Rng => {
            let r = RngBackend::new();
            Box::new(match b.queue_size {
                Some(n) => r.with_queue_size(n),
                None => r,
            })
        }
        VirtioKind::Block => {
            let path = b.path.as_ref().ok_or_else(|| {
                VmmError::Boot(format!("virtio device {id}: a block device needs a path"))
            })?;
            let d = BlockBackend::open(path, b.read_only, b.serial.as_deref().unwrap_or(id))?;
            Box::new(match b.queue_size {
                Some(n) => d.with_queue_size(n),
                None => d,
            })
        }
        VirtioKind::Console => {
            let host = match (&b.path, &b.socket, &b.pty) {
                (Some(p), _, _) => ConsoleHost::File(p.clone()),
                (None, Some(s), _) => ConsoleHost::Socket(s.clone()),
                (None, None, Some(p)) => ConsoleHost::Pty(p.clone()),
                (None, None, None) => ConsoleHost::Stdout,
            };
            let c = ConsoleBackend::open(&host)?;
            Box::new(match b.queue_size {
                Some(n) => c.with_queue_size(n),
                None => c,
            })
        }
    };
    Ok(backend)
}

/// A virtio device as the VMM runs it: the transport behind its lock and
/// the eventfds KVM signals for its queues. [`VirtioModel::start`] gives it
/// its worker thread.
pub(crate) struct VirtioModel {
    name: String,
    device: Arc<Mutex<dyn VirtioTransport>>,
    events: Arc<QueueEvents>,
}

impl VirtioModel {
    /// The device's name (its worker thread's).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts the device's worker thread, under the virtio-worker filter of
    /// `seccomp` (if any).
    pub fn start(&self, seccomp: Option<&Arc<Filters>>) -> Result<VirtioWorker, VmmError> {
        let queues = self.events.clones().os("duplicate queue eventfds")?;
        VirtioWorker::spawn(&self.name, self.device.clone(), queues, seccomp)
    }

    /// Surprise removal: the backend drops its host side now.
    pub fn sever(&self) {
        crate::sync::lock(&self.device).sever();
    }
}

/// A virtio-mmio device for `slot`, with its notify ioeventfds registered
/// and its interrupt a source of its level-triggered pin (shared with the
/// other devices the layout put there).
pub(crate) fn build_virtio_mmio(
    slot: &crate::layout::VirtioMmioSlot,
    cfg: &crate::config::VirtioMmioConfig,
    memory: &GuestMemoryMmap,
    vm: &Arc<VmFd>,
    pins: &irq::LevelPins,
) -> Result<(Arc<Mutex<VirtioMmioDevice>>, VirtioModel), VmmError> {
    let backend = build_backend(&cfg.id, cfg.kind, &cfg.backend)?;
    let queues = backend.queue_max_sizes().len();
    let line = pins.line(slot.irq);
    let device = Arc::new(Mutex::new(VirtioMmioDevice::new(
        &slot.id,
        backend,
        memory.clone(),
        line,
    )));
    let events = Arc::new(
        QueueEvents::new(vm.clone(), NotifyLayout::Mmio, queues).os("create queue eventfds")?,
    );
    let notify = slot.window.base + crate::virtio::mmio::regs::QUEUE_NOTIFY;
    if !cfg.backend.ioeventfd {
        log::info!(
            "virtio-mmio {}: ioeventfd = false: notifications exit to cellvm",
            slot.id
        );
    } else if let Err(e) = events.register(notify) {
        log::warn!(
            "virtio-mmio {}: no ioeventfds ({e}); notifications exit to cellvm",
            slot.id
        );
    }
    let model = VirtioModel {
        name: slot.id.clone(),
        device: device.clone(),
        events,
    };
    Ok((device, model))
}

/// A virtio-pci function: MSI-X through `msi` (the device manager's
/// irqfd sender for its requester id), and notify ioeventfds that follow
/// BAR0.
pub(crate) fn build_virtio_pci(
    name: &str,
    kind: VirtioKind,
    backend_cfg: &VirtioBackendConfig,
    memory: &GuestMemoryMmap,
    vm: &Arc<VmFd>,
    msi: Arc<dyn crate::pci::MsiSender>,
) -> Result<(Arc<Mutex<VirtioPciFunction>>, VirtioModel), VmmError> {
    let backend = build_backend(name, kind, backend_cfg)?;
    let queues = backend.queue_max_sizes().len();
    let events = Arc::new(
        QueueEvents::new(vm.clone(), NotifyLayout::Pci, queues).os("create queue eventfds")?,
    );
    let notify: Option<Arc<dyn BarMapper>> = if backend_cfg.ioeventfd {
        Some(events.clone())
    } else {
        log::info!("virtio-pci {name}: ioeventfd = false: notifications exit to cellvm");
        None
    };
    let function = VirtioPciFunction::new(name, backend, memory.clone(), msi, notify)?;
    let device = Arc::new(Mutex::new(function));
    let model = VirtioModel {
        name: name.to_string(),
        device: device.clone(),
        events,
    };
    Ok((device, model))
}

/// Where a transport's queues are notified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotifyLayout {
    /// virtio-mmio: every queue at QueueNotify, a 32-bit write of its index.
    Mmio,
    /// virtio-pci: queue `i` at its own address in BAR0, a 16-bit write of
    /// its index.
    Pci,
}

/// One eventfd per virtqueue, registered as KVM ioeventfds on the queues'
/// notify addresses relative to a base (the virtio-mmio window's QueueNotify
/// register, or BAR0 of a virtio-pci function, which moves when the guest
/// reprograms it: then the bridge calls [`BarMapper::map`]/`unmap`).
pub(crate) struct QueueEvents {
    vm: Arc<VmFd>,
    layout: NotifyLayout,
    events: Vec<EventFd>,
    registered_at: Mutex<Option<u64>>,
}

impl QueueEvents {
    /// Eventfds for `queues` queues, not registered yet.
    pub fn new(vm: Arc<VmFd>, layout: NotifyLayout, queues: usize) -> std::io::Result<Self> {
        let events = (0..queues)
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(QueueEvents {
            vm,
            layout,
            events,
            registered_at: Mutex::new(None),
        })
    }

    /// Duplicates of the eventfds (same eventfd objects) for the worker.
    pub fn clones(&self) -> std::io::Result<Vec<EventFd>> {
        self.events.iter().map(EventFd::try_clone).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<u64>> {
        sync::lock(&self.registered_at)
    }

    fn change(&self, base: u64, assign: bool) -> Result<(), kvm_ioctls::Error> {
        for (i, fd) in self.events.iter().enumerate() {
            // Queue counts come from backends (at most a few queues).
            let index = i as u16;
            let result = match self.layout {
                NotifyLayout::Mmio => {
                    let addr = IoEventAddress::Mmio(base);
                    let data = u32::from(index);
                    if assign {
                        self.vm.register_ioevent(fd, &addr, data)
                    } else {
                        self.vm.unregister_ioevent(fd, &addr, data)
                    }
                }
                NotifyLayout::Pci => {
                    let addr =
                        IoEventAddress::Mmio(crate::virtio::pci::notify_address(base, index));
                    if assign {
                        self.vm.register_ioevent(fd, &addr, index)
                    } else {
                        self.vm.unregister_ioevent(fd, &addr, index)
                    }
                }
            };
            if let Err(e) = result {
                if assign {
                    // All or nothing: take back the queues registered so far.
                    for (j, fd) in self.events.iter().enumerate().take(i) {
                        let _ = self.unregister_one(fd, base, j as u16);
                    }
                }
                return Err(e);
            }
        }
        Ok(())
    }

    fn unregister_one(&self, fd: &EventFd, base: u64, index: u16) -> Result<(), kvm_ioctls::Error> {
        match self.layout {
            NotifyLayout::Mmio => {
                self.vm
                    .unregister_ioevent(fd, &IoEventAddress::Mmio(base), u32::from(index))
            }
            NotifyLayout::Pci => self.vm.unregister_ioevent(
                fd,
                &IoEventAddress::Mmio(crate::virtio::pci::notify_address(base, index)),
                index,
            ),
        }
    }

    /// Registers the queues' ioeventfds relative to `base` (for virtio-mmio
    /// the QueueNotify address itself), moving them if registered elsewhere.
    pub fn register(&self, base: u64) -> Result<(), kvm_ioctls::Error> {
        let mut at = self.lock();
        if let Some(old) = at.take() {
            if old == base {
                *at = Some(old);
                return Ok(());
            }
            if let Err(e) = self.change(old, false) {
                log::warn!("moving queue ioeventfds from {old:#x}: {e}");
            }
        }
        self.change(base, true)?;
        *at = Some(base);
        Ok(())
    }

    /// Removes the registration, if any.
    pub fn unregister(&self) {
        let mut at = self.lock();
        if let Some(base) = at.take() {
            if let Err(e) = self.change(base, false) {
                log::warn!("unregistering queue ioeventfds at {base:#x}: {e}");
            }
        }
    }
}

impl BarMapper for QueueEvents {
    fn map(&self, gpa: u64, _size: u64) -> Result<(), BarMapError> {
        // Without ioeventfds the notify writes still reach the function
        // through the bus: log, but do not refuse the BAR.
        if let Err(e) = self.register(gpa) {
            log::warn!("virtio-pci: no notify ioeventfds at BAR0 {gpa:#x} ({e}); notifications exit to cellvm");
        }
        Ok(())
    }

    fn unmap(&self, _gpa: u64, _size: u64) -> Result<(), BarMapError> {
        self.unregister();
        Ok(())
    }
}

impl Drop for QueueEvents {
    fn drop(&mut self) {
        self.unregister();
    }
}

/// The thread serving one virtio device: queue notifications from its
/// ioeventfds and host input from its backend. Stopped (and joined) by
/// [`VirtioWorker::stop`] or on drop.
pub(crate) struct VirtioWorker {
    ctl: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl VirtioWorker {
    /// Starts serving `device`; `queues[i]` is the eventfd of queue `i`.
    /// The thread installs the virtio-worker filter of `seccomp` (if any)
    /// before it serves anything.
    pub fn spawn(
        name: &str,
        device: Arc<Mutex<dyn VirtioTransport>>,
        queues: Vec<EventFd>,
        seccomp: Option<&Arc<Filters>>,
    ) -> Result<Self, VmmError> {
        let ctl = EventFd::new(EFD_NONBLOCK).os("create virtio worker eventfd")?;
        let ctl_fd = ctl.try_clone().os("duplicate virtio worker eventfd")?;
        let wake = EventFd::new(EFD_NONBLOCK).os("create virtio worker wake eventfd")?;
        sync::lock(&device).set_host_fds_waker(
            wake.try_clone()
                .os("duplicate virtio worker wake eventfd")?,
        );
        let thread = crate::seccomp::spawn(
            std::thread::Builder::new().name(format!("virtio-{name}")),
            ThreadKind::VirtioWorker,
            seccomp,
            move || worker_loop(&device, &queues, &ctl_fd, &wake),
        )?;
        Ok(VirtioWorker {
            ctl,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(t) = self.thread.take() {
            if let Err(e) = self.ctl.write(1) {
                log::error!("cannot stop a virtio worker: {e}");
                return;
            }
            if t.join().is_err() {
                log::error!("a virtio worker thread panicked");
            }
        }
    }
}

impl Drop for VirtioWorker {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Reads every queue eventfd once without blocking and serves the queues
/// that were notified; true if any was.
fn serve_pending(device: &Mutex<dyn VirtioTransport>, queues: &[EventFd]) -> bool {
    let mut any = false;
    for (i, q) in queues.iter().enumerate() {
        if q.read().is_ok() {
            // Queue indices fit u16 (backends have a handful of queues).
            sync::lock(device).queue_notified(i as u16);
            any = true;
        }
    }
    any
}

/// Polls `ctl`, `wake`, the queue eventfds and the device's host fds until
/// `ctl` is written. The host fd set is asked for again after every round (a
/// console's socket client may come or go, and a backend whose input buffer
/// is full leaves its input fd out until the guest takes some); the device
/// writes `wake` when a guest access on a vCPU thread changed it (e.g. the
/// driver started the device: no host fds are offered before).
///
/// No busy-polling after a request (QEMU's iothreads poll up to 32 µs): a
/// trial with an adaptive window of up to 64 µs made the host benchmark's
/// round trip slower, not faster (`benches/virtio_notify.rs`), and on a
/// single-CPU host polling only keeps the vCPU from running.
fn worker_loop(
    device: &Mutex<dyn VirtioTransport>,
    queues: &[EventFd],
    ctl: &EventFd,
    wake: &EventFd,
) {
    let pollfd = |fd: RawFd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // fds[0] is ctl, fds[1] wake, then the queues, then the host fds.
    let first_queue = 2;
    let first_host = first_queue + queues.len();
    loop {
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(first_host + 2);
        fds.push(pollfd(ctl.as_raw_fd()));
        fds.push(pollfd(wake.as_raw_fd()));
        fds.extend(queues.iter().map(|q| pollfd(q.as_raw_fd())));
        fds.extend(sync::lock(device).host_fds().into_iter().map(pollfd));
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds; every fd is
        // open: ours are owned by this thread, the host fds by the device,
        // which cannot close them while we wait (it is only changed under
        // its lock, by `process_host_input` below, on this thread).
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            log::error!("virtio worker: poll: {e}; stopping");
            return;
        }
        if fds[0].revents != 0 {
            return;
        }
        if fds[1].revents != 0 {
            // Only resets the counter: the next round asks for the new set.
            let _ = wake.read();
        }
        if fds[first_queue..first_host].iter().any(|p| p.revents != 0) {
            serve_pending(device, queues);
        }
        if fds[first_host..].iter().any(|p| p.revents != 0) {
            sync::lock(device).process_host_input();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    struct Recorder {
        queues: usize,
        tx: mpsc::Sender<String>,
        input: Option<std::os::unix::net::UnixStream>,
        /// Whether `input` is offered (like a device the driver runs).
        open: bool,
        waker: Option<EventFd>,
    }

    impl VirtioTransport for Recorder {
        fn num_queues(&self) -> usize {
            self.queues
        }
        fn queue_notified(&mut self, index: u16) {
            let _ = self.tx.send(format!("queue {index}"));
        }
        fn host_fds(&self) -> Vec<RawFd> {
            if !self.open {
                return Vec::new();
            }
            self.input.iter().map(|s| s.as_raw_fd()).collect()
        }
        fn set_host_fds_waker(&mut self, waker: EventFd) {
            self.waker = Some(waker);
        }
        fn sever(&mut self) {
            self.input = None;
        }
        fn process_host_input(&mut self) {
            use std::io::Read;
            let mut buf = [0u8; 64];
            if let Some(s) = self.input.as_mut() {
                let n = s.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    self.input = None;
                }
                let _ = self
                    .tx
                    .send(format!("input {}", String::from_utf8_lossy(&buf[..n])));
            }
        }
    }

    fn recv(rx: &mpsc::Receiver<String>) -> String {
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the worker did not report within 10 s")
    }

    #[test]
    fn worker_serves_the_queue_whose_eventfd_fired_and_host_input() {
        use std::io::Write;
        let (tx, rx) = mpsc::channel();
        let (mut host, guest_side) = std::os::unix::net::UnixStream::pair().unwrap();
        let device: Arc<Mutex<dyn VirtioTransport>> = Arc::new(Mutex::new(Recorder {
            queues: 2,
            tx,
            input: Some(guest_side),
            open: true,
            waker: None,
        }));
        let queues: Vec<EventFd> = (0..2)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect();
        let kick: Vec<EventFd> = queues.iter().map(|q| q.try_clone().unwrap()).collect();
        let worker = VirtioWorker::spawn("test", device, queues, None).unwrap();
        kick[1].write(1).unwrap();
        assert_eq!(recv(&rx), "queue 1");
        // Two writes before the worker reads count as one notification.
        kick[0].write(1).unwrap();
        assert_eq!(recv(&rx), "queue 0");
        host.write_all(b"hi").unwrap();
        assert_eq!(recv(&rx), "input hi");
        drop(host);
        assert_eq!(recv(&rx), "input ");
        worker.stop();
        // The thread is joined: nothing can serve this any more.
        kick[0].write(1).unwrap();
        assert!(rx.try_recv().is_err(), "a stopped worker served a queue");
    }

    #[test]
    fn worker_watches_host_fds_the_device_offers_after_it_started_polling() {
        use std::io::Write;
        let (tx, rx) = mpsc::channel();
        let (mut host, guest_side) = std::os::unix::net::UnixStream::pair().unwrap();
        let recorder = Arc::new(Mutex::new(Recorder {
            queues: 1,
            tx,
            input: Some(guest_side),
            open: false,
            waker: None,
        }));
        let device: Arc<Mutex<dyn VirtioTransport>> = recorder.clone();
        let q = EventFd::new(EFD_NONBLOCK).unwrap();
        let kick = q.try_clone().unwrap();
        let worker = VirtioWorker::spawn("gate", device, vec![q], None).unwrap();
        // Input the device does not offer yet (its driver is not running).
        host.write_all(b"early").unwrap();
        // A served queue proves the worker polled without the input fd.
        kick.write(1).unwrap();
        assert_eq!(recv(&rx), "queue 0");
        {
            // What a transport does when a guest write starts the device.
            let mut r = recorder.lock().unwrap();
            r.open = true;
            r.waker
                .as_ref()
                .expect("the worker gave the device a waker")
                .write(1)
                .unwrap();
        }
        assert_eq!(recv(&rx), "input early");
        worker.stop();
    }

    #[test]
    fn stopping_a_worker_joins_its_thread() {
        let (tx, _rx) = mpsc::channel();
        let device: Arc<Mutex<dyn VirtioTransport>> = Arc::new(Mutex::new(Recorder {
            queues: 1,
            tx,
            input: None,
            open: true,
            waker: None,
        }));
        let q = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut worker = VirtioWorker::spawn("join", device.clone(), vec![q], None).unwrap();
        worker.halt();
        assert!(worker.thread.is_none());
        // The thread's clone of the device is gone with it.
        assert_eq!(Arc::strong_count(&device), 1);
    }
}
