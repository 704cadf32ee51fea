//! The device manager: owns the cell's MMIO and PIO buses, its KVM
//! memory-slot numbers, the GSI router for MSI-X, and the construction of
//! every configurable device model, for boot-time devices and runtime
//! attachments alike.
//!
//! [`DeviceManager::build`] turns a validated [`DeviceConfig`] and the slot
//! the layout placed it in into a [`DeviceModel`]: the model registered on
//! its bus, its interrupt lines (irqfds, INTx lines, MSI-X routes) and its
//! notify ioeventfds connected. [`DeviceManager::remove`] undoes all of
//! it. A build that fails part-way removes what it had registered, so a
//! failed build leaves the buses as they were.
//!
//! Platform devices (console, debug-exit, boot timer, channel, i8042,
//! CMOS) are not configurable and are registered by [`super::Cell::new`].

use super::config_mirror::KvmMirrorMapper;
use super::irq::{GsiRouter, LevelPins};
use super::slots::SlotPool;
use super::virtio::{build_virtio_mmio, build_virtio_pci, VirtioModel, VirtioWorker};
use super::{ivshmem, VmmError};
use crate::config::{
    DeviceConfig, PciBridgeConfig, PciDeviceConfig, PciDeviceKind, UartConfig, VirtioBackendConfig,
    VirtioKind,
};
use crate::devices::serial::SerialConsole;
use crate::devices::Bus;
use crate::devices::InterruptLine;
use crate::ivshmem::{IvshmemDevice, IvshmemRegion, IvshmemSubscriber};
use crate::layout::{PciBridgeSlot, PlacedDevice, UartSlot};
use crate::pci::{PciAddress, PciHostBridge, PciTestDevice, PciToPciBridge, SharedFunction};
use crate::platform::UART_PORT_COUNT;
use crate::seccomp::Filters;
use event_manager::{MutEventSubscriber, RemoteEndpoint, SubscriberId, SubscriberOps};
use kvm_ioctls::VmFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// What the cell's control loop (an `event-manager` loop) runs: control
/// events and the ivshmem doorbell receivers.
pub type LoopSubscriber = Box<dyn MutEventSubscriber + Send>;

/// The file a virtio console appends its output to, if it has one.
fn console_output(kind: VirtioKind, backend: &VirtioBackendConfig) -> Option<PathBuf> {
    (kind == VirtioKind::Console)
        .then(|| backend.path.clone())
        .flatten()
}

/// The output file of a bridge's function (a virtio console's).
fn function_output(dev: &PciDeviceConfig) -> Option<PathBuf> {
    match &dev.kind {
        PciDeviceKind::Virtio(v) => console_output(v.kind, &v.backend),
        _ => None,
    }
}

/// The name of a bridge's function (its virtio model and worker thread).
fn function_name(bridge: &str, dev: &PciDeviceConfig) -> String {
    format!("{bridge}-{:02x}.{}", dev.slot, dev.function)
}

/// Builds and removes the cell's device models.
pub struct DeviceManager {
    /// The MMIO bus (vCPU exits are dispatched on it).
    pub mmio: Arc<Bus>,
    /// The port I/O bus.
    pub pio: Arc<Bus>,
    vm: Arc<VmFd>,
    router: Arc<GsiRouter>,
    /// The level-triggered IOAPIC pins devices share (virtio-mmio, INTx).
    pins: LevelPins,
    memory: GuestMemoryMmap,
    /// Whether KVM maps read-only memory slots (ivshmem's read-only sections).
    readonly_mem: bool,
    /// Whether ECAM bridges let the guest read config space from read-only
    /// mirror pages ([`crate::pci::config_mirror`]): x86_64 with read-only
    /// slots. (Not arm64: without FEAT_S2FWB the guest's device mapping of
    /// ECAM would read the page past the host's cached stores.)
    mirror_config: bool,
    /// The cell's unused KVM memory-slot numbers.
    slots: Arc<SlotPool>,
    /// The cell's name (default output file names of extra UARTs).
    cell: String,
    /// Where extra UARTs without a `path` write (`CELL.ID.out`).
    output_dir: PathBuf,
    /// The seccomp filters the worker threads of virtio devices install.
    seccomp: Option<Arc<Filters>>,
    /// The running control loop, to which models built at run time hand
    /// their doorbell receivers (`None` before the cell runs).
    control_loop: Mutex<Option<RemoteEndpoint<LoopSubscriber>>>,
}

/// A device's model and everything registered for it; give it back to
/// [`DeviceManager::remove`] to unregister.
#[derive(Default)]
pub struct DeviceModel {
    /// Names of its MMIO bus entries.
    mmio: Vec<String>,
    /// Names of its PIO bus entries.
    pio: Vec<String>,
    /// An irqfd registered for it (UARTs), with its GSI.
    irqfd: Option<(EventFd, u32)>,
    /// A PCI host bridge: dropping it unmaps its functions' BARs.
    bridge: Option<Arc<Mutex<PciHostBridge>>>,
    /// Its virtio devices (their ioeventfds stay registered while these
    /// live), and their worker threads once started.
    virtio: Vec<VirtioModel>,
    workers: Vec<VirtioWorker>,
    /// A virtio-mmio transport: a surprise removal leaves its registers on
    /// the bus ([`DeviceManager::sever`]).
    keeps_registers: bool,
    /// Doorbell receivers of its ivshmem functions, for the control loop.
    ivshmem: Vec<IvshmemSubscriber>,
    /// The same, once a runtime build handed them to the running loop.
    subscribed: Vec<SubscriberId>,
    /// Functions added to this (bridge) model while it ran
    /// ([`DeviceManager::add_function`]), each with its own model.
    functions: Vec<(PciAddress, DeviceModel)>,
    /// Output files this build created (they did not exist before): a
    /// refused attach removes them again ([`DeviceManager::discard`]).
    created_files: Vec<PathBuf>,
}

impl DeviceModel {
    /// The ivshmem doorbell receivers, for the control loop (taken once).
    pub fn take_ivshmem_subscribers(&mut self) -> Vec<IvshmemSubscriber> {
        std::mem::take(&mut self.ivshmem)
    }

    /// The PCI host bridge, if this is one.
    pub fn bridge(&self) -> Option<&Arc<Mutex<PciHostBridge>>> {
        self.bridge.as_ref()
    }

    /// Starts a worker thread for each virtio device (not yet started),
    /// each under the virtio-worker filter of `seccomp` (if any).
    pub fn start_workers(&mut self, seccomp: Option<&Arc<Filters>>) -> Result<(), VmmError> {
        for v in self.virtio.iter().skip(self.workers.len()) {
            self.workers.push(v.start(seccomp)?);
        }
        Ok(())
    }

    /// Stops the worker threads (the cell is stopping).
    pub fn stop_workers(&mut self) {
        for w in self.workers.drain(..) {
            w.stop();
        }
        for (_, f) in &mut self.functions {
            f.stop_workers();
        }
    }

    /// Keeps the model of a function added to this bridge at run time
    /// ([`DeviceManager::add_function`]): it goes with the bridge.
    pub fn keep_function(&mut self, address: PciAddress, model: DeviceModel) {
        self.functions.push((address, model));
    }

    /// Drops the virtio device `name` and stops its worker (its function
    /// left the bridge).
    fn stop_virtio(&mut self, name: &str) {
        if let Some(i) = self.virtio.iter().position(|v| v.name() == name) {
            self.virtio.remove(i);
            if i < self.workers.len() {
                self.workers.remove(i).stop();
            }
        }
    }
}

/// What [`DeviceManager::new`] needs from the VM.
pub struct DeviceManagerParts {
    /// The VM.
    pub vm: Arc<VmFd>,
    /// The VM's GSI routes (MSI-X irqfds).
    pub router: Arc<GsiRouter>,
    /// Guest memory (virtio queues).
    pub memory: GuestMemoryMmap,
    /// Whether KVM supports read-only memory slots.
    pub readonly_mem: bool,
    /// The first KVM memory-slot number devices may use.
    pub first_slot: u32,
    /// The cell's name.
    pub cell: String,
    /// Where extra UARTs without a `path` write.
    pub output_dir: PathBuf,
    /// The seccomp filters for the worker threads it starts (`None`:
    /// `--seccomp=off`).
    pub seccomp: Option<Arc<Filters>>,
}

impl DeviceManager {
    /// A device manager with empty buses.
    pub fn new(parts: DeviceManagerParts) -> Self {
        DeviceManager {
            mmio: Arc::new(Bus::new(crate::devices::BusKind::Mmio)),
            pio: Arc::new(Bus::new(crate::devices::BusKind::Pio)),
            pins: LevelPins::new(parts.vm.clone()),
            vm: parts.vm,
            router: parts.router,
            memory: parts.memory,
            readonly_mem: parts.readonly_mem,
            mirror_config: parts.readonly_mem && cfg!(target_arch = "x86_64"),
            slots: Arc::new(SlotPool::new(parts.first_slot)),
            cell: parts.cell,
            output_dir: parts.output_dir,
            seccomp: parts.seccomp,
            control_loop: Mutex::new(None),
        }
    }

    /// The cell's control loop is running: models built from now on hand
    /// their doorbell receivers to it through `endpoint`.
    pub fn connect_control_loop(&self, endpoint: RemoteEndpoint<LoopSubscriber>) {
        *crate::sync::lock(&self.control_loop) = Some(endpoint);
    }

    /// Hands `model`'s doorbell receivers to the running control loop
    /// (a runtime build), waiting until the loop has them. Must not be
    /// called on the control loop's thread.
    fn subscribe(&self, model: &mut DeviceModel) -> Result<(), VmmError> {
        if model.ivshmem.is_empty() {
            return Ok(());
        }
        let Some(endpoint) = crate::sync::lock(&self.control_loop).clone() else {
            return Err(VmmError::NotAtRuntime {
                what: "an ivshmem function before the cell's control loop runs".into(),
            });
        };
        for sub in model.ivshmem.drain(..) {
            let id = endpoint
                .call_blocking(
                    move |ops: &mut dyn SubscriberOps<Subscriber = LoopSubscriber>| {
                        Ok::<_, event_manager::Error>(ops.add_subscriber(Box::new(sub)))
                    },
                )
                .map_err(|e| VmmError::Boot(format!("control loop: {e:?}")))?;
            model.subscribed.push(id);
        }
        Ok(())
    }

    /// Takes `model`'s doorbell receivers out of the control loop (without
    /// waiting: the loop may be the caller, or gone).
    fn unsubscribe(&self, model: &mut DeviceModel) {
        if model.subscribed.is_empty() {
            return;
        }
        let Some(endpoint) = crate::sync::lock(&self.control_loop).clone() else {
            return;
        };
        for id in model.subscribed.drain(..) {
            let removed = endpoint.fire(
                move |ops: &mut dyn SubscriberOps<Subscriber = LoopSubscriber>| {
                    if let Err(e) = ops.remove_subscriber(id) {
                        log::warn!("control loop: removing a doorbell receiver: {e:?}");
                    }
                },
            );
            if let Err(e) = removed {
                log::warn!("control loop: cannot remove a doorbell receiver: {e:?}");
            }
        }
    }

    /// The seccomp filters the cell's threads install (`None`:
    /// `--seccomp=off`).
    pub fn seccomp(&self) -> Option<&Arc<Filters>> {
        self.seccomp.as_ref()
    }

    /// Hands out `count` consecutive KVM memory-slot numbers for the life
    /// of the cell (a cell has thousands, KVM_CAP_NR_MEMSLOTS): the channel
    /// and ivshmem functions. Config-space mirrors take and give back theirs.
    pub fn allocate_slots(&self, count: u32) -> u32 {
        self.slots.allocate(count)
    }

    /// Builds `dev`, placed at `slot`, and registers it. `runtime` says the
    /// cell is running (an attach): device kinds that can only be built at
    /// boot are refused with [`VmmError::NotAtRuntime`].
    pub fn build(
        &self,
        dev: &DeviceConfig,
        slot: &PlacedDevice,
        runtime: bool,
    ) -> Result<DeviceModel, VmmError> {
        let mut model = DeviceModel {
            created_files: self
                .output_files(dev)
                .into_iter()
                .filter(|p| std::fs::symlink_metadata(p).is_err())
                .collect(),
            ..DeviceModel::default()
        };
        let built = match (dev, slot) {
            (DeviceConfig::VirtioMmio(cfg), PlacedDevice::VirtioMmio(s)) => {
                let (device, virtio) =
                    build_virtio_mmio(s, cfg, &self.memory, &self.vm, &self.pins)?;
                model.virtio.push(virtio);
                model.keeps_registers = true;
                let name = format!("virtio-mmio {}", s.id);
                self.mmio
                    .insert(&name, s.window.base, s.window.size, device)
                    .map(|()| model.mmio.push(name))
                    .map_err(VmmError::from)
            }
            (DeviceConfig::PciBridge(cfg), PlacedDevice::PciBridge(s)) => {
                self.build_bridge(cfg, s, &mut model)
            }
            (DeviceConfig::Uart(cfg), PlacedDevice::Uart(s)) => self.build_uart(cfg, s, &mut model),
            _ => Err(VmmError::Boot(format!(
                "{}: the placed slot is not a {}",
                dev.id(),
                dev.kind_name()
            ))),
        };
        let subscribed = match built {
            Ok(()) if runtime => self.subscribe(&mut model),
            other => other,
        };
        match subscribed {
            Ok(()) => Ok(model),
            Err(e) => {
                self.discard(model);
                Err(e)
            }
        }
    }

    /// The files a device appends its output to (created if missing):
    /// a UART's, a virtio console's `path`. Sockets and pty links are
    /// removed by their backends when the model goes.
    fn output_files(&self, dev: &DeviceConfig) -> Vec<PathBuf> {
        match dev {
            DeviceConfig::Uart(u) => vec![self.uart_output(u)],
            DeviceConfig::VirtioMmio(v) => console_output(v.kind, &v.backend).into_iter().collect(),
            DeviceConfig::PciBridge(b) => b.devices.iter().filter_map(function_output).collect(),
        }
    }

    /// Where a UART's output goes.
    fn uart_output(&self, cfg: &UartConfig) -> PathBuf {
        cfg.path.clone().unwrap_or_else(|| {
            self.output_dir
                .join(format!("{}.{}.out", self.cell, cfg.id))
        })
    }

    /// Undoes a build that is not kept (a refused attach): [`Self::remove`],
    /// then the output files the build created are deleted, so nothing of
    /// the attempt is left on the host. Files that existed before are kept.
    pub fn discard(&self, mut model: DeviceModel) {
        let created = std::mem::take(&mut model.created_files);
        self.remove(model);
        for path in created {
            let is_file = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file());
            if is_file {
                if let Err(e) = std::fs::remove_file(&path) {
                    log::warn!("remove {}: {e}", path.display());
                }
            }
        }
    }

    /// Unregisters everything `model` registered and stops its workers.
    pub fn remove(&self, mut model: DeviceModel) {
        model.stop_workers();
        self.unsubscribe(&mut model);
        for (_, f) in std::mem::take(&mut model.functions) {
            self.remove(f);
        }
        for name in &model.mmio {
            if let Err(e) = self.mmio.remove(name) {
                log::warn!("unregister {name}: {e}");
            }
        }
        for name in &model.pio {
            if let Err(e) = self.pio.remove(name) {
                log::warn!("unregister {name}: {e}");
            }
        }
        if let Some((fd, gsi)) = &model.irqfd {
            if let Err(e) = self.vm.unregister_irqfd(fd, *gsi) {
                log::warn!("unregister irqfd on pin {gsi}: {e}");
            }
        }
        // Dropping the bridge unmaps its BARs (and so the virtio-pci notify
        // ioeventfds); dropping the virtio models unregisters virtio-mmio's.
    }

    /// Surprise removal (docs/addons.md): the host side of `model` goes now,
    /// without the guest's consent. Its virtio backends drop their host
    /// resources (an image is closed) and fail or leave unanswered every
    /// later request; a virtio-mmio transport keeps its registers on the
    /// bus so the guest's driver can still tear down (Linux's virtio-blk
    /// waits for requests in flight when it goes: on registers reading
    /// all-ones they would never complete). Everything else leaves the
    /// buses now, so the guest reads all-ones there as from a removed
    /// card: a UART (and its interrupt), a PCI host bridge's configuration
    /// window and its functions' BARs. [`Self::remove`] later undoes the
    /// rest.
    pub fn sever(&self, model: &mut DeviceModel) {
        let added = model.functions.iter().flat_map(|(_, f)| &f.virtio);
        for v in model.virtio.iter().chain(added) {
            v.sever();
        }
        if model.keeps_registers {
            return;
        }
        for name in model.mmio.drain(..) {
            if let Err(e) = self.mmio.remove(&name) {
                log::warn!("unregister {name}: {e}");
            }
        }
        for name in model.pio.drain(..) {
            if let Err(e) = self.pio.remove(&name) {
                log::warn!("unregister {name}: {e}");
            }
        }
        if let Some((fd, gsi)) = model.irqfd.take() {
            if let Err(e) = self.vm.unregister_irqfd(&fd, gsi) {
                log::warn!("unregister irqfd on pin {gsi}: {e}");
            }
        }
        // The bus let go of the bridge: dropping it unmaps the BARs.
        model.bridge = None;
    }

    /// A host bridge with its functions and INTx lines, registered at its
    /// configuration window.
    fn build_bridge(
        &self,
        cfg: &PciBridgeConfig,
        slot: &PciBridgeSlot,
        model: &mut DeviceModel,
    ) -> Result<(), VmmError> {
        let mut bridge = PciHostBridge::new(slot, &self.mmio);
        let lines: [Arc<dyn InterruptLine>; 4] = slot.intx.map(|gsi| self.pins.line(gsi));
        bridge.connect_intx(lines);
        // Buses behind PCI-to-PCI bridges first, so that functions added
        // on them find their INTx route.
        for dev in &cfg.devices {
            if let PciDeviceKind::PciBridge { secondary } = dev.kind {
                bridge.route_bus(secondary, dev.slot);
            }
        }
        for dev in &cfg.devices {
            let address = PciAddress::new(dev.bus, dev.slot, dev.function)?;
            let function = self.build_function(slot, dev, model)?;
            bridge.add_function(address, function)?;
        }
        // After the functions: the window's KVM slots are laid out once,
        // around every function that is not mirrored.
        if self.mirror_config {
            bridge.set_mirror_mapper(Arc::new(KvmMirrorMapper::new(
                self.vm.clone(),
                self.slots.clone(),
            )));
        }
        let bridge = Arc::new(Mutex::new(bridge));
        let name = format!("pci bridge {}", slot.id);
        self.mmio
            .insert(&name, slot.config.base, slot.config.size, bridge.clone())?;
        model.mmio.push(name);
        model.bridge = Some(bridge);
        Ok(())
    }

    /// Where the MSI-X messages of the function at `address` go: irqfds
    /// routed by the cell's GSI router, tagged with its requester id.
    fn msi(&self, address: PciAddress) -> Arc<dyn crate::pci::MsiSender> {
        Arc::new(super::irq::IrqfdMsiSender::new(
            self.vm.clone(),
            self.router.clone(),
            address.requester_id(),
        ))
    }

    /// The model of one function of bridge `slot`; its virtio device and
    /// doorbell receiver go into `model`.
    fn build_function(
        &self,
        slot: &PciBridgeSlot,
        dev: &PciDeviceConfig,
        model: &mut DeviceModel,
    ) -> Result<SharedFunction, VmmError> {
        let address = PciAddress::new(dev.bus, dev.slot, dev.function)?;
        Ok(match &dev.kind {
            PciDeviceKind::Test => Arc::new(Mutex::new(PciTestDevice::new(self.msi(address))?)),
            PciDeviceKind::PciBridge { secondary } => {
                Arc::new(Mutex::new(PciToPciBridge::new(slot.bus_start, *secondary)))
            }
            PciDeviceKind::Ivshmem(iv) => {
                let boot = |e: crate::ivshmem::IvshmemError| {
                    VmmError::Boot(format!("pci bridge {}: ivshmem at {address}: {e}", slot.id))
                };
                let region = Arc::new(
                    IvshmemRegion::open(&crate::ivshmem::runtime_dir(), iv).map_err(boot)?,
                );
                // Without read-only slots BAR2 is served through MMIO exits.
                let mapper: Option<Arc<dyn crate::pci::BarMapper>> = if self.readonly_mem {
                    let count = crate::ivshmem::region::MAX_GUEST_SLOTS as u32;
                    let first = self.allocate_slots(count);
                    let m = ivshmem::KvmShmemMapper::new(self.vm.clone(), region.clone(), first);
                    Some(Arc::new(m))
                } else {
                    None
                };
                let device = Arc::new(Mutex::new(
                    IvshmemDevice::new(region, mapper, self.msi(address)).map_err(boot)?,
                ));
                model.ivshmem.push(IvshmemDevice::subscriber(&device));
                device
            }
            PciDeviceKind::Virtio(v) => {
                let (device, virtio) = build_virtio_pci(
                    &function_name(&slot.id, dev),
                    v.kind,
                    &v.backend,
                    &self.memory,
                    &self.vm,
                    self.msi(address),
                )?;
                model.virtio.push(virtio);
                device
            }
        })
    }

    /// Adds function `dev` to the running `bridge` (placed at `slot`): its
    /// model is built and put on the bridge (BARs unmapped until the guest
    /// programs them), its workers run and its doorbell receiver listens.
    /// Keep the model with the bridge's ([`DeviceModel::keep_function`]),
    /// or give it to [`Self::drop_function`]. All or nothing.
    pub fn add_function(
        &self,
        bridge: &Arc<Mutex<PciHostBridge>>,
        slot: &PciBridgeSlot,
        dev: &PciDeviceConfig,
    ) -> Result<(PciAddress, DeviceModel), VmmError> {
        let address = PciAddress::new(dev.bus, dev.slot, dev.function)?;
        let mut model = DeviceModel {
            created_files: function_output(dev)
                .filter(|p| std::fs::symlink_metadata(p).is_err())
                .into_iter()
                .collect(),
            ..DeviceModel::default()
        };
        let built = self
            .build_function(slot, dev, &mut model)
            .and_then(|function| Ok(crate::sync::lock(bridge).add_function(address, function)?));
        let placed = built.is_ok();
        let started = built
            .and_then(|()| self.subscribe(&mut model))
            .and_then(|()| model.start_workers(self.seccomp.as_ref()));
        if let Err(e) = started {
            if placed {
                let _ = crate::sync::lock(bridge).remove_function(address);
            }
            self.discard(model);
            return Err(e);
        }
        Ok((address, model))
    }

    /// Undoes [`Self::add_function`] (the guest did not take the function).
    pub fn drop_function(
        &self,
        bridge: &Arc<Mutex<PciHostBridge>>,
        address: PciAddress,
        model: DeviceModel,
    ) {
        if let Err(e) = crate::sync::lock(bridge).remove_function(address) {
            log::warn!("dropping function {address}: {e}");
        }
        self.discard(model);
    }

    /// Takes function `address` off the running bridge of `bridge_model`:
    /// its BARs are unmapped and its INTx lowered, and its model goes (a
    /// function added at run time: everything [`Self::add_function`]
    /// built; one the bridge was built with: its virtio worker stops).
    pub fn remove_function(
        &self,
        bridge_model: &mut DeviceModel,
        slot: &PciBridgeSlot,
        dev: &PciDeviceConfig,
    ) -> Result<(), VmmError> {
        let Some(bridge) = bridge_model.bridge.clone() else {
            return Err(VmmError::Boot(format!(
                "{}: not a PCI host bridge",
                slot.id
            )));
        };
        let address = PciAddress::new(dev.bus, dev.slot, dev.function)?;
        crate::sync::lock(&bridge).remove_function(address)?;
        if let Some(i) = bridge_model
            .functions
            .iter()
            .position(|(a, _)| *a == address)
        {
            let (_, model) = bridge_model.functions.remove(i);
            self.remove(model);
        } else {
            bridge_model.stop_virtio(&function_name(&slot.id, dev));
        }
        Ok(())
    }

    /// An extra 16550: output appended to its `path` (or
    /// `OUTPUT_DIR/CELL.ID.out`), interrupt on an irqfd, no input.
    fn build_uart(
        &self,
        cfg: &UartConfig,
        slot: &UartSlot,
        model: &mut DeviceModel,
    ) -> Result<(), VmmError> {
        if cfg.path.is_none() {
            // The runtime directory, as the control API creates it.
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.output_dir)
                .map_err(|source| VmmError::File {
                    path: self.output_dir.clone(),
                    source,
                })?;
        }
        let path = self.uart_output(cfg);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| VmmError::File { path, source })?;
        let (uart, irq, _space) =
            SerialConsole::new(Box::new(file)).map_err(|source| VmmError::Os {
                what: "create UART",
                source,
            })?;
        self.vm
            .register_irqfd(&irq, slot.irq)
            .map_err(|source| VmmError::Kvm {
                what: "register UART irqfd",
                source,
            })?;
        model.irqfd = Some((irq, slot.irq));
        let name = format!("uart {}", slot.id);
        let uart = Arc::new(Mutex::new(uart));
        match slot.mmio {
            Some(w) => {
                self.mmio
                    .insert(&name, w.base, u64::from(UART_PORT_COUNT), uart)?;
                model.mmio.push(name);
            }
            None => {
                self.pio.insert(
                    &name,
                    u64::from(slot.port),
                    u64::from(UART_PORT_COUNT),
                    uart,
                )?;
                model.pio.push(name);
            }
        }
        Ok(())
    }
}
