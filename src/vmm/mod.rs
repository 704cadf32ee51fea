//! The KVM side of a cell: VM, guest memory, devices on buses, vCPU threads,
//! and the control loop that runs until the cell stops.

pub mod boot;
mod channel_mem;
pub mod control;
pub mod cpu;
mod error;
mod hotplug;
mod irq;
mod ivshmem;
mod memory;
pub mod runtime;
mod trim;
pub mod vcpu;
mod virtio;

pub use error::VmmError;
use error::{KvmContext, OsContext};

use crate::config::PciDeviceKind;
use crate::config::{CellConfig, ConsoleInput};
use crate::devices::boot_timer::BootTimer;
use crate::devices::debug_exit::DebugExit;
use crate::devices::legacy::{Cmos, I8042};
use crate::devices::serial::{InputSpace, SerialConsole};
use crate::devices::{Bus, BusKind, InterruptLine};
use crate::layout::{consts, CellLayout, PciBridgeSlot};
use crate::pci::{PciAddress, PciHostBridge, PciTestDevice};
use crate::stop::{StopHandle, StopReason};
use event_manager::{EventManager, SubscriberOps};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vcpu::{ExitCounters, VcpuContext};
use vm_memory::GuestMemoryMmap;

/// Address KVM needs for the TSS on Intel hosts (three pages).
const KVM_TSS_ADDR: u64 = 0xfffb_d000;
/// Address KVM needs for the EPT identity map on Intel hosts (one page).
const KVM_IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;
/// KVM's limit for KVM_GET_SUPPORTED_CPUID entries.
const MAX_CPUID_ENTRIES: usize = 80;

/// Where the cell's console is connected.
pub struct CellIo {
    /// Console output sink.
    pub console_out: Box<dyn Write + Send>,
    /// Console input source, read by a pump thread (blocking reads).
    pub console_in: Option<File>,
    /// Whether SIGINT/SIGTERM stop the cell (they must already be blocked
    /// with [`control::block_termination_signals`]).
    pub handle_signals: bool,
    /// Where to serve the control API, if anywhere.
    pub api_socket: Option<std::path::PathBuf>,
}

impl CellIo {
    /// The console as the config says: stdout/file/none, stdin/none.
    pub fn from_config(cfg: &CellConfig) -> Result<Self, VmmError> {
        use crate::config::ConsoleOutput;
        let console_out: Box<dyn Write + Send> = match &cfg.console.output {
            ConsoleOutput::Stdout => Box::new(std::io::stdout()),
            ConsoleOutput::None => Box::new(std::io::sink()),
            ConsoleOutput::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| VmmError::File {
                        path: path.clone(),
                        source,
                    })?,
            ),
        };
        let console_in = match cfg.console.input {
            ConsoleInput::None => None,
            ConsoleInput::Stdin => {
                let fd = std::io::stdin()
                    .lock()
                    .as_fd_dup()
                    .os("duplicate stdin for the console")?;
                Some(File::from(fd))
            }
        };
        Ok(CellIo {
            console_out,
            console_in,
            handle_signals: true,
            api_socket: Some(crate::api::socket_path(&cfg.name)),
        })
    }
}

trait DupFd {
    fn as_fd_dup(&self) -> std::io::Result<std::os::fd::OwnedFd>;
}

impl<T: std::os::fd::AsFd> DupFd for T {
    fn as_fd_dup(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        self.as_fd().try_clone_to_owned()
    }
}

/// How a cell run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Why the cell stopped.
    pub reason: StopReason,
    /// Times (since cellvm started) at which the guest hit the boot timer.
    pub boot_marks: Vec<Duration>,
    /// Port I/O exits handled.
    pub pio_exits: u64,
    /// MMIO exits handled.
    pub mmio_exits: u64,
    /// Accesses that no device served.
    pub unhandled_exits: u64,
}

/// A cell ready to run: VM created, memory mapped, kernel loaded, devices
/// registered. Field order matters: vCPUs and the VM are dropped before the
/// guest memory they map.
pub struct Cell {
    vcpus: Vec<VcpuFd>,
    bridges: Vec<Arc<Mutex<PciHostBridge>>>,
    hotplug: Arc<hotplug::Hotplug>,
    virtio: Vec<virtio::VirtioModel>,
    ivshmem_subs: Vec<crate::ivshmem::IvshmemSubscriber>,
    _vm: Arc<VmFd>,
    _kvm: Kvm,
    _memory: GuestMemoryMmap,
    cfg: CellConfig,
    layout: CellLayout,
    mmio: Arc<Bus>,
    pio: Arc<Bus>,
    stop: StopHandle,
    console: Arc<Mutex<SerialConsole>>,
    input_space: Arc<InputSpace>,
    io: Option<CellIo>,
    boot_marks: Arc<Mutex<Vec<Duration>>>,
    counters: Arc<ExitCounters>,
}

impl Cell {
    /// Builds the cell. `start` is when cellvm started (for the boot timer).
    pub fn new(cfg: CellConfig, mut io: CellIo, start: Instant) -> Result<Self, VmmError> {
        check_pins(&cfg)?;
        let layout = CellLayout::new(&cfg)?;
        let base_tree = crate::fdt::build_base_tree(&cfg, &layout)?;
        let dtb = crate::fdt::emit::to_dtb(&base_tree)?;

        let kvm = Kvm::new().map_err(VmmError::OpenKvm)?;
        let vm = Arc::new(kvm.create_vm().kvm("create VM")?);
        vm.set_identity_map_address(KVM_IDENTITY_MAP_ADDR)
            .kvm("set identity map address")?;
        vm.set_tss_address(KVM_TSS_ADDR as usize)
            .kvm("set TSS address")?;
        vm.create_irq_chip().kvm("create in-kernel irqchip")?;
        let memory = memory::create_guest_memory(&vm, &layout.memory)?;

        let stop = StopHandle::new().os("create stop event")?;
        let mmio = Arc::new(Bus::new(BusKind::Mmio));
        let pio = Arc::new(Bus::new(BusKind::Pio));
        let boot_marks = Arc::new(Mutex::new(Vec::new()));

        let out = std::mem::replace(&mut io.console_out, Box::new(std::io::sink()));
        let (serial, serial_irq, input_space) =
            SerialConsole::new(out).os("create console UART")?;
        vm.register_irqfd(&serial_irq, consts::UART_IRQ)
            .kvm("register console irqfd")?;
        // The irqfd stays registered for the VM's lifetime; KVM holds its own
        // reference to the eventfd, so this handle may go.
        drop(serial_irq);
        let console = Arc::new(Mutex::new(serial));
        pio.insert("console", u64::from(consts::UART_PORT), 8, console.clone())?;
        pio.insert(
            "i8042",
            I8042::BASE,
            I8042::LEN,
            Arc::new(Mutex::new(I8042::new(stop.clone()))),
        )?;
        pio.insert(
            "cmos",
            Cmos::BASE,
            Cmos::LEN,
            Arc::new(Mutex::new(Cmos::default())),
        )?;
        mmio.insert(
            "debug-exit",
            consts::DEBUG_EXIT_BASE,
            consts::PLATFORM_DEVICE_SIZE,
            Arc::new(Mutex::new(DebugExit::new(stop.clone()))),
        )?;
        let readonly_mem = kvm.check_extension(kvm_ioctls::Cap::ReadonlyMem);
        let mut next_slot = layout.memory.len() as u32;
        let channel_line = Arc::new(irq::KvmIrqLine::new(vm.clone(), consts::CHANNEL_IRQ));
        let (channel, channel_handle) =
            match channel_mem::map_mailboxes(&vm, readonly_mem, next_slot) {
                Some(mem) => {
                    next_slot += channel_mem::SLOTS;
                    crate::channel::ChannelDevice::with_mailbox_memory(channel_line, mem)
                }
                None => crate::channel::ChannelDevice::new(channel_line),
            };
        mmio.insert(
            "channel",
            consts::CHANNEL_BASE,
            consts::CHANNEL_SIZE,
            Arc::new(Mutex::new(channel)),
        )?;
        mmio.insert(
            "boot-timer",
            consts::BOOT_TIMER_BASE,
            consts::PLATFORM_DEVICE_SIZE,
            Arc::new(Mutex::new(BootTimer::new(start, boot_marks.clone()))),
        )?;
        let router = Arc::new(irq::GsiRouter::new(vm.clone()));
        let mut virtio_models = Vec::new();
        for (slot, dev_cfg) in layout.virtio_mmio.iter().zip(&cfg.virtio_mmio) {
            let (dev, model) = virtio::build_virtio_mmio(slot, dev_cfg, &memory, &vm)?;
            mmio.insert(
                &format!("virtio-mmio {}", slot.id),
                slot.window.base,
                slot.window.size,
                dev,
            )?;
            virtio_models.push(model);
        }
        let mut bridges = Vec::with_capacity(layout.pci_bridges.len());
        let mut pci_ctx = PciBuildContext {
            mmio: &mmio,
            vm: &vm,
            router: &router,
            readonly_mem,
            next_slot,
            ivshmem_subs: Vec::new(),
            memory: &memory,
            virtio: Vec::new(),
        };
        for (slot, br_cfg) in layout.pci_bridges.iter().zip(&cfg.pci_bridges) {
            let bridge = build_bridge(slot, br_cfg, &mut pci_ctx)?;
            mmio.insert(
                &format!("pci bridge {}", slot.id),
                slot.config.base,
                slot.config.size,
                bridge.clone(),
            )?;
            bridges.push(bridge);
        }

        cpu::write_boot_tables(&memory)?;
        let entry = boot::load(&memory, &cfg.kernel, &layout.memory, &dtb)?;

        let count = cfg.cpus.count;
        let supported = kvm
            .get_supported_cpuid(MAX_CPUID_ENTRIES)
            .kvm("get supported CPUID")?;
        let mut vcpus = Vec::with_capacity(usize::from(count));
        for id in 0..count {
            let vcpu = vm.create_vcpu(u64::from(id)).kvm("create vCPU")?;
            let mut cpuid = supported.clone();
            cpu::patch_cpuid(&mut cpuid, id, count);
            vcpu.set_cpuid2(&cpuid).kvm("set CPUID")?;
            cpu::setup_common(&vcpu)?;
            if id == 0 {
                cpu::setup_boot_vcpu(&vcpu, &entry)?;
            }
            vcpus.push(vcpu);
        }
        let ivshmem_subs = pci_ctx.ivshmem_subs;
        virtio_models.extend(pci_ctx.virtio);
        let hotplug = Arc::new(hotplug::Hotplug::new(
            cfg.name.clone(),
            layout.clone(),
            base_tree,
            mmio.clone(),
            pio.clone(),
            vm.clone(),
            router,
            channel_handle,
            crate::api::runtime_dir(),
            memory.clone(),
        ));
        Ok(Cell {
            vcpus,
            bridges,
            hotplug,
            virtio: virtio_models,
            ivshmem_subs,
            _vm: vm,
            _kvm: kvm,
            _memory: memory,
            cfg,
            layout,
            mmio,
            pio,
            stop,
            console,
            input_space,
            io: Some(io),
            boot_marks,
            counters: Arc::new(ExitCounters::default()),
        })
    }

    /// The cell's layout (address map and IRQs).
    pub fn layout(&self) -> &CellLayout {
        &self.layout
    }

    /// The cell's PCI host bridges, in config order.
    pub fn pci_bridges(&self) -> &[Arc<Mutex<PciHostBridge>>] {
        &self.bridges
    }

    /// A handle that stops the cell from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Runs the cell until it stops, then returns why.
    pub fn run(mut self) -> Result<RunOutcome, VmmError> {
        vcpu::install_kick_handler().map_err(|e| VmmError::Os {
            what: "install vCPU kick handler",
            source: std::io::Error::from_raw_os_error(e.errno()),
        })?;
        let mut io = self.io.take();
        let handle_signals = io.as_ref().is_some_and(|io| io.handle_signals);
        let _api_guard = match io.as_mut().and_then(|io| io.api_socket.take()) {
            None => None,
            Some(path) => {
                let server = crate::api::ApiServer::bind(&path)?;
                let runtime = Arc::new(runtime::CellRuntime::new(
                    self.cfg.name.clone(),
                    self.cfg.cpus.count,
                    self.hotplug.clone(),
                ));
                log::info!("control API on {}", server.path().display());
                Some(server.spawn(runtime).os("start the control API thread")?)
            }
        };
        if let Some(input) = io.and_then(|io| io.console_in) {
            spawn_input_pump(input, self.console.clone(), self.input_space.clone())?;
        }

        let mut workers = Vec::with_capacity(self.virtio.len());
        for model in &self.virtio {
            workers.push(model.start()?);
        }
        let mut threads = Vec::with_capacity(self.vcpus.len());
        let pins = self.cfg.cpus.pin.clone();
        for (index, vcpu) in std::mem::take(&mut self.vcpus).into_iter().enumerate() {
            let ctx = VcpuContext {
                index,
                pin: pins.as_ref().and_then(|p| p.get(index).copied()),
                mmio: self.mmio.clone(),
                pio: self.pio.clone(),
                stop: self.stop.clone(),
                counters: self.counters.clone(),
            };
            let t = std::thread::Builder::new()
                .name(format!("vcpu{index}"))
                .spawn(move || vcpu::run_vcpu(vcpu, ctx))
                .os("spawn vCPU thread")?;
            threads.push(t);
        }

        let signals = if handle_signals {
            Some(control::termination_signalfd().os("create signalfd")?)
        } else {
            None
        };
        let mut events = EventManager::<Box<dyn event_manager::MutEventSubscriber>>::new()
            .map_err(|e| VmmError::Boot(format!("event manager: {e:?}")))?;
        events.add_subscriber(Box::new(control::ControlEvents::new(
            self.stop.clone(),
            signals,
        )));
        for sub in std::mem::take(&mut self.ivshmem_subs) {
            events.add_subscriber(Box::new(sub));
        }
        // Setup is over: its code need not stay resident (vmm::trim).
        let dropped = trim::drop_startup_code();
        log::debug!(
            "dropped {} KiB of startup code from the resident set",
            dropped / 1024
        );
        while !self.stop.is_stopped() {
            if let Err(e) = events.run() {
                self.stop
                    .stop(StopReason::Error(format!("control loop: {e:?}")));
            }
        }

        for t in &threads {
            // SAFETY: the pthread id belongs to a thread we spawned and have
            // not joined yet, so it is valid; the kick handler is installed.
            unsafe { libc::pthread_kill(t.as_pthread_t(), vcpu::kick_signal()) };
        }
        for t in threads {
            if t.join().is_err() {
                log::error!("a vCPU thread panicked");
            }
        }
        for w in workers {
            w.stop();
        }
        self.hotplug.shutdown();

        let reason = self
            .stop
            .reason()
            .unwrap_or_else(|| StopReason::Error("stopped without a reason".into()));
        let boot_marks = self
            .boot_marks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(RunOutcome {
            reason,
            boot_marks,
            pio_exits: self.counters.pio.load(Ordering::Relaxed),
            mmio_exits: self.counters.mmio.load(Ordering::Relaxed),
            unhandled_exits: self.counters.unhandled.load(Ordering::Relaxed),
        })
    }
}

/// What building PCI functions needs from the VM.
struct PciBuildContext<'a> {
    mmio: &'a Arc<Bus>,
    vm: &'a Arc<VmFd>,
    /// The VM's GSI routes (MSI-X irqfds).
    router: &'a Arc<irq::GsiRouter>,
    /// Whether KVM supports read-only slots (for ivshmem's read-only sections).
    readonly_mem: bool,
    /// Next free KVM memory slot (RAM uses 0..n).
    next_slot: u32,
    /// Doorbell receivers to add to the control loop.
    ivshmem_subs: Vec<crate::ivshmem::IvshmemSubscriber>,
    /// Guest memory (virtio queues).
    memory: &'a GuestMemoryMmap,
    /// Virtio functions built (each needs its worker thread).
    virtio: Vec<virtio::VirtioModel>,
}

/// A host bridge with its configured functions and INTx lines.
fn build_bridge(
    slot: &PciBridgeSlot,
    cfg: &crate::config::PciBridgeConfig,
    ctx: &mut PciBuildContext<'_>,
) -> Result<Arc<Mutex<PciHostBridge>>, VmmError> {
    let mut bridge = PciHostBridge::new(slot, ctx.mmio);
    let vm = ctx.vm;
    let lines: [Arc<dyn InterruptLine>; 4] = slot
        .intx
        .map(|gsi| Arc::new(irq::KvmIrqLine::new(vm.clone(), gsi)) as _);
    bridge.connect_intx(lines);
    for dev in &cfg.devices {
        let address = PciAddress::new(slot.bus_start, dev.slot, dev.function)?;
        let function: crate::pci::SharedFunction = match &dev.kind {
            PciDeviceKind::Test => Arc::new(Mutex::new(PciTestDevice::new()?)),
            PciDeviceKind::Ivshmem(iv) => {
                let boot = |e: crate::ivshmem::IvshmemError| {
                    VmmError::Boot(format!("pci bridge {}: ivshmem at {address}: {e}", slot.id))
                };
                let region = Arc::new(
                    crate::ivshmem::IvshmemRegion::open(&crate::ivshmem::runtime_dir(), iv)
                        .map_err(boot)?,
                );
                // Without read-only slots BAR2 is served through MMIO exits.
                let mapper: Option<Arc<dyn crate::pci::BarMapper>> = if ctx.readonly_mem {
                    let m = ivshmem::KvmShmemMapper::new(vm.clone(), region.clone(), ctx.next_slot);
                    ctx.next_slot += crate::ivshmem::region::MAX_GUEST_SLOTS as u32;
                    Some(Arc::new(m))
                } else {
                    None
                };
                let device = Arc::new(Mutex::new(
                    crate::ivshmem::IvshmemDevice::new(region, mapper).map_err(boot)?,
                ));
                ctx.ivshmem_subs
                    .push(crate::ivshmem::IvshmemDevice::subscriber(&device));
                device
            }
            PciDeviceKind::Virtio(v) => {
                let name = format!("{}-{:02x}.{}", slot.id, dev.slot, dev.function);
                let (device, model) = virtio::build_virtio_pci(
                    &name, v.kind, &v.backend, ctx.memory, vm, ctx.router,
                )?;
                ctx.virtio.push(model);
                device
            }
        };
        bridge.add_function(address, function)?;
    }
    Ok(Arc::new(Mutex::new(bridge)))
}

fn check_pins(cfg: &CellConfig) -> Result<(), VmmError> {
    let Some(pins) = &cfg.cpus.pin else {
        return Ok(());
    };
    let online = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    // SAFETY: sysconf has no memory-safety preconditions.
    let configured = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    let host_cpus = usize::try_from(configured).unwrap_or(online).max(online);
    for (vcpu, cpu) in pins.iter().enumerate() {
        if *cpu >= host_cpus || *cpu >= libc::CPU_SETSIZE as usize {
            return Err(VmmError::Pin {
                vcpu,
                cpu: *cpu,
                reason: format!("this host has {host_cpus} CPUs (0..={})", host_cpus - 1),
            });
        }
    }
    Ok(())
}

/// Feeds console input to the UART, waiting for FIFO space when it is full.
fn spawn_input_pump(
    mut input: File,
    console: Arc<Mutex<SerialConsole>>,
    space: Arc<InputSpace>,
) -> Result<(), VmmError> {
    std::thread::Builder::new()
        .name("console-in".into())
        .spawn(move || {
            let mut buf = [0u8; 256];
            loop {
                let n = match input.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        log::warn!("console input: {e}");
                        return;
                    }
                };
                let mut done = 0;
                while done < n {
                    let took = console
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .enqueue_input(&buf[done..n]);
                    done += took;
                    if took == 0 && !wait_readable(space.event()) {
                        return;
                    }
                }
            }
        })
        .os("spawn console input thread")?;
    Ok(())
}

/// Blocks until `event` is readable and consumes it; false on error.
fn wait_readable(event: &vmm_sys_util::eventfd::EventFd) -> bool {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: event.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd; infinite timeout.
        let r = unsafe { libc::poll(&mut pfd, 1, -1) };
        if r > 0 {
            let _ = event.read();
            return true;
        }
        if r < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        return false;
    }
}
