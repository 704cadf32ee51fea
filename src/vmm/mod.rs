//! The KVM side of a cell: VM, guest memory, devices on buses, vCPU threads,
//! and the control loop that runs until the cell stops.

pub mod arch;
mod channel_mem;
mod config_mirror;
mod connect;
pub mod control;
mod device_state;
pub mod devices;
mod error;
mod functions;
pub mod gate;
mod hotplug;
mod irq;
mod ivshmem;
mod memory;
mod plug;
pub mod runtime;
pub mod slots;
mod trim;
pub mod vcpu;
mod virtio;

pub use error::VmmError;
use error::{KvmContext, OsContext};

use crate::config::{CellConfig, ConsoleInput, DeviceState};
use crate::devices::boot_timer::BootTimer;
use crate::devices::debug_exit::DebugExit;
use crate::devices::pvpanic::Pvpanic;
use crate::devices::serial::{InputSpace, SerialConsole};
use crate::layout::CellLayout;
use crate::partition::claims::CellClaims;
use crate::platform;
use crate::seccomp::{Filters, ThreadKind};
use crate::stop::{StopHandle, StopReason};
use devices::{DeviceManager, DeviceManagerParts};
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
    /// Whether every thread of the running cell installs its seccomp filter
    /// (docs/security.md). [`Cell::run`] then installs the control filter
    /// on the thread that calls it: run a cell on a thread that has nothing
    /// else to do afterwards but end (or end the process).
    pub seccomp: bool,
    /// The host resources the cell holds (docs/partitioning.md), when
    /// claimed before the console was opened; [`Cell::new`] claims them
    /// itself when this is `None`.
    pub claims: Option<Arc<CellClaims>>,
    /// The cell's stop handle, when the caller made it (e.g. for a console
    /// watcher that stops the cell); [`Cell::new`] makes one otherwise.
    pub stop: Option<StopHandle>,
    /// Stop the cell with [`StopReason::Timeout`] this long after
    /// [`Cell::run`] starts it.
    pub timeout: Option<Duration>,
}

impl CellIo {
    /// The console as the config says: stdout/file/none, stdin/none.
    /// The cell's host resources are claimed first: a refused start creates
    /// no console file.
    pub fn from_config(cfg: &CellConfig) -> Result<Self, VmmError> {
        use crate::config::ConsoleOutput;
        let claims = Some(Arc::new(claim(cfg)?));
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
            seccomp: true,
            claims,
            stop: None,
            timeout: None,
        })
    }
}

/// The directory of host-wide claims: `RUNTIME_DIR/claims`, private.
pub fn claims_dir() -> Result<std::path::PathBuf, VmmError> {
    let runtime = crate::api::runtime_dir();
    crate::api::ensure_private_dir(&runtime)?;
    let dir = runtime.join("claims");
    crate::api::ensure_private_dir(&dir)?;
    Ok(dir)
}

/// Claims what `cfg` uses on this host (its name, pinned CPUs, images).
fn claim(cfg: &CellConfig) -> Result<CellClaims, VmmError> {
    Ok(CellClaims::take(cfg, &claims_dir()?)?)
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
    hotplug: Arc<hotplug::Hotplug>,
    devices: Arc<DeviceManager>,
    _vm: Arc<VmFd>,
    _kvm: Kvm,
    _memory: GuestMemoryMmap,
    cfg: CellConfig,
    layout: CellLayout,
    stop: StopHandle,
    console: Arc<Mutex<SerialConsole>>,
    input_space: Arc<InputSpace>,
    io: Option<CellIo>,
    boot_marks: Arc<Mutex<Vec<Duration>>>,
    /// One per vCPU.
    counters: Vec<Arc<ExitCounters>>,
    gate: Arc<gate::RunGate>,
    /// The host resources the cell holds: declared last, so dropped after
    /// the devices and the VM that use them.
    _claims: Arc<CellClaims>,
}

impl Cell {
    /// Builds the cell. `start` is when cellvm started (for the boot timer).
    pub fn new(cfg: CellConfig, mut io: CellIo, start: Instant) -> Result<Self, VmmError> {
        check_pins(&cfg)?;
        let claims = match io.claims.take() {
            Some(c) => c,
            None => Arc::new(claim(&cfg)?),
        };
        let layout = CellLayout::new(&cfg)?;
        let mut base_tree = crate::fdt::build_base_tree(&cfg, &layout)?;

        // Compiled before anything is created: a filter that does not build
        // fails the boot, not a thread of the running cell.
        let seccomp = if io.seccomp {
            Some(Arc::new(Filters::compile(vcpu::kick_signal())?))
        } else {
            None
        };
        let kvm = Kvm::new().map_err(VmmError::OpenKvm)?;
        let (vm, irqchip) = arch::create_vm(&kvm, &cfg)?;
        let vcpus = arch::create_vcpus(&kvm, &vm, &irqchip, cfg.cpus.count)?;
        let vm = Arc::new(vm);
        let memory = memory::create_guest_memory(&vm, &layout.memory)?;
        memory::settle_guest_memory(&memory, &cfg.memory)?;
        let readonly_mem = kvm.check_extension(kvm_ioctls::Cap::ReadonlyMem);
        let devices = Arc::new(DeviceManager::new(DeviceManagerParts {
            vm: vm.clone(),
            router: Arc::new(irq::GsiRouter::new(vm.clone())),
            memory: memory.clone(),
            readonly_mem,
            first_slot: layout.memory.len() as u32,
            cell: cfg.name.clone(),
            output_dir: crate::api::runtime_dir(),
            seccomp,
        }));
        let (mmio, pio) = (&devices.mmio, &devices.pio);

        let stop = match io.stop.take() {
            Some(stop) => stop,
            None => StopHandle::new().os("create stop event")?,
        };
        let boot_marks = Arc::new(Mutex::new(Vec::new()));

        let out = std::mem::replace(&mut io.console_out, Box::new(std::io::sink()));
        let (serial, serial_irq, input_space) =
            SerialConsole::new(out).os("create console UART")?;
        vm.register_irqfd(&serial_irq, platform::UART_IRQ)
            .kvm("register console irqfd")?;
        // The irqfd stays registered for the VM's lifetime; KVM holds its own
        // reference to the eventfd, so this handle may go.
        drop(serial_irq);
        let console = Arc::new(Mutex::new(serial));
        arch::add_platform_devices(mmio, pio, console.clone(), &stop)?;
        mmio.insert(
            "debug-exit",
            platform::DEBUG_EXIT_BASE,
            platform::PLATFORM_DEVICE_SIZE,
            Arc::new(Mutex::new(DebugExit::new(stop.clone()))),
        )?;
        mmio.insert(
            "pvpanic",
            platform::PVPANIC_BASE,
            platform::PLATFORM_DEVICE_SIZE,
            Arc::new(Mutex::new(Pvpanic::new(stop.clone()))),
        )?;
        let channel_line = Arc::new(irq::KvmIrqLine::new(vm.clone(), platform::CHANNEL_IRQ));
        let channel_slots = devices.allocate_slots(channel_mem::SLOTS);
        let (channel, channel_handle) =
            match channel_mem::map_mailboxes(&vm, readonly_mem, channel_slots) {
                Some(mem) => crate::channel::ChannelDevice::with_mailbox_memory(channel_line, mem),
                None => crate::channel::ChannelDevice::new(channel_line),
            };
        let power_off = stop.clone();
        channel_handle.on_power_off(Box::new(move || {
            power_off.stop(StopReason::GuestPowerOff);
        }));
        mmio.insert(
            "channel",
            platform::CHANNEL_BASE,
            platform::CHANNEL_SIZE,
            Arc::new(Mutex::new(channel)),
        )?;
        mmio.insert(
            "boot-timer",
            platform::BOOT_TIMER_BASE,
            platform::PLATFORM_DEVICE_SIZE,
            Arc::new(Mutex::new(BootTimer::new(start, boot_marks.clone()))),
        )?;
        let mut boot_devices = Vec::new();
        // A reserved or disabled device is in the tree and the layout only:
        // no model until it is enabled (docs/config.md, `state`).
        for dev in cfg.devices() {
            let slot = layout.device(dev.id()).ok_or_else(|| {
                VmmError::Boot(format!("{} was not placed in the layout", dev.id()))
            })?;
            let model = match dev.state() {
                DeviceState::Okay => Some(devices.build(&dev, &slot, false)?),
                _ => None,
            };
            boot_devices.push(device_state::BootDevice::new(dev, slot, model));
        }

        let entry = arch::load(&memory, &cfg, &layout, &mut base_tree)?;
        let boot_vcpu = vcpus
            .first()
            .ok_or_else(|| VmmError::Boot("a cell needs at least one vCPU".into()))?;
        arch::set_boot_entry(boot_vcpu, &entry)?;
        let count = cfg.cpus.count;
        let hotplug = Arc::new(hotplug::Hotplug::new(
            layout.clone(),
            base_tree,
            devices.clone(),
            channel_handle,
            claims.clone(),
            boot_devices,
        ));
        Ok(Cell {
            vcpus,
            hotplug,
            _claims: claims,
            devices,
            _vm: vm,
            _kvm: kvm,
            _memory: memory,
            cfg,
            layout,
            stop,
            console,
            input_space,
            io: Some(io),
            boot_marks,
            counters: (0..count).map(|_| Arc::default()).collect(),
            gate: Arc::new(gate::RunGate::new(false, usize::from(count))),
        })
    }

    /// The cell's layout (address map and IRQs) as booted.
    pub fn layout(&self) -> &CellLayout {
        &self.layout
    }

    /// The cell's boot-time PCI host bridges that have a model now (not
    /// reserved or disabled), in id order.
    pub fn pci_bridges(&self) -> Vec<Arc<Mutex<crate::pci::PciHostBridge>>> {
        self.hotplug.boot_bridges()
    }

    /// Makes [`Cell::run`] create the vCPU threads paused: no guest code
    /// runs until the control API's `resume` (`cellvm run --paused`).
    pub fn start_paused(&mut self) {
        self.gate = Arc::new(gate::RunGate::new(true, self.counters.len()));
    }

    /// A handle that stops the cell from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Runs the cell until it stops, then returns why.
    ///
    /// With seccomp on ([`CellIo::seccomp`]) every thread it starts installs
    /// its kind's filter first, and the calling thread installs the control
    /// filter once everything is started: after this returns, the calling
    /// thread may only do what that filter allows (docs/security.md), so
    /// call it on a thread of its own, or last on the main thread.
    pub fn run(mut self) -> Result<RunOutcome, VmmError> {
        vcpu::install_kick_handler().map_err(|e| VmmError::Os {
            what: "install vCPU kick handler",
            source: std::io::Error::from_raw_os_error(e.errno()),
        })?;
        let mut io = self.io.take();
        let handle_signals = io.as_ref().is_some_and(|io| io.handle_signals);
        let timeout = io.as_ref().and_then(|io| io.timeout);
        let seccomp = self.devices.seccomp().cloned();
        let _api_guard = match io.as_mut().and_then(|io| io.api_socket.take()) {
            None => None,
            Some(path) => {
                let mut server = crate::api::ApiServer::bind(&path)?;
                if let Some(filters) = &seccomp {
                    server = server.with_seccomp(filters.clone());
                }
                let runtime = Arc::new(runtime::CellRuntime::new(
                    self.cfg.name.clone(),
                    self.hotplug.clone(),
                    runtime::Controls {
                        stop: self.stop.clone(),
                        gate: self.gate.clone(),
                        counters: self.counters.clone(),
                        mmio: self.devices.mmio.clone(),
                        pio: self.devices.pio.clone(),
                        channel: self.hotplug.channel(),
                    },
                ));
                log::info!("control API on {}", server.path().display());
                Some(server.spawn(runtime).os("start the control API thread")?)
            }
        };
        if let Some(input) = io.and_then(|io| io.console_in) {
            spawn_input_pump(
                input,
                self.console.clone(),
                self.input_space.clone(),
                seccomp.as_ref(),
            )?;
        }

        // Everything that can fail with `?` comes before the vCPU threads:
        // once they run, a failure must stop them and join them below.
        let signals = if handle_signals {
            Some(control::termination_signalfd().os("create signalfd")?)
        } else {
            None
        };
        let mut events = EventManager::<devices::LoopSubscriber>::new()
            .map_err(|e| VmmError::Boot(format!("event manager: {e:?}")))?;
        let deadline = match timeout {
            Some(after) => Some(control::Deadline::new(after).os("arm the run timeout")?),
            None => None,
        };
        events.add_subscriber(Box::new(control::ControlEvents::new(
            self.stop.clone(),
            signals,
            deadline,
        )));
        for sub in self.hotplug.take_ivshmem_subscribers() {
            events.add_subscriber(Box::new(sub));
        }
        // Models built from now on (attach) hand theirs over through this.
        self.devices.connect_control_loop(events.remote_endpoint());
        self.hotplug.start_boot_workers(seccomp.as_ref())?;
        let mut threads = Vec::with_capacity(self.vcpus.len());
        let pins = self.cfg.cpus.pin.clone();
        for (index, vcpu) in std::mem::take(&mut self.vcpus).into_iter().enumerate() {
            let ctx = VcpuContext {
                index,
                pin: pins.as_ref().and_then(|p| p.get(index).copied()),
                mmio: self.devices.mmio.clone(),
                pio: self.devices.pio.clone(),
                stop: self.stop.clone(),
                counters: self.counters.get(index).cloned().unwrap_or_default(),
                gate: self.gate.clone(),
            };
            let spawned = crate::seccomp::spawn(
                std::thread::Builder::new().name(format!("vcpu{index}")),
                ThreadKind::Vcpu,
                seccomp.as_ref(),
                move || vcpu::run_vcpu(vcpu, ctx),
            );
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    // The vCPUs already running are stopped below.
                    self.stop
                        .stop(StopReason::Error(format!("vCPU {index}: {e}")));
                    break;
                }
            }
        }

        // Setup is over: its code need not stay resident (vmm::trim).
        let dropped = trim::drop_startup_code();
        log::debug!(
            "dropped {} KiB of startup code from the resident set",
            dropped / 1024
        );
        // Every other thread is started: this one's filter comes last, so
        // that none of them inherits it.
        if let Some(filters) = &seccomp {
            if let Err(e) = filters.apply(ThreadKind::Control) {
                self.stop.stop(StopReason::Error(e.to_string()));
            }
        }
        while !self.stop.is_stopped() {
            if let Err(e) = events.run() {
                self.stop
                    .stop(StopReason::Error(format!("control loop: {e:?}")));
            }
        }

        // Parked vCPUs (paused) return from the gate and see the stop.
        self.gate.release();
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
        self.hotplug.shutdown();

        let reason = self
            .stop
            .reason()
            .unwrap_or_else(|| StopReason::Error("stopped without a reason".into()));
        let boot_marks = crate::sync::lock(&self.boot_marks).clone();
        Ok(RunOutcome {
            reason,
            boot_marks,
            pio_exits: sum(&self.counters, |c| &c.pio),
            mmio_exits: sum(&self.counters, |c| &c.mmio),
            unhandled_exits: sum(&self.counters, |c| &c.unhandled),
        })
    }
}

/// One counter summed over every vCPU.
fn sum(
    counters: &[Arc<ExitCounters>],
    which: impl Fn(&ExitCounters) -> &std::sync::atomic::AtomicU64,
) -> u64 {
    counters
        .iter()
        .map(|c| which(c).load(Ordering::Relaxed))
        .sum()
}

fn check_pins(cfg: &CellConfig) -> Result<(), VmmError> {
    let Some(pins) = &cfg.cpus.pin else {
        return Ok(());
    };
    let host_cpus = crate::config::host_cpu_count();
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
    seccomp: Option<&Arc<Filters>>,
) -> Result<(), VmmError> {
    crate::seccomp::spawn(
        std::thread::Builder::new().name("console-in".into()),
        ThreadKind::ConsoleInput,
        seccomp,
        move || {
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
                    let took = crate::sync::lock(&console).enqueue_input(&buf[done..n]);
                    done += took;
                    if took == 0 && !wait_readable(space.event()) {
                        return;
                    }
                }
            }
        },
    )?;
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
