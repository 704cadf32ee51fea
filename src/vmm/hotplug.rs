//! Runtime attach and detach: the cell's side of a hotplug.
//!
//! Attach: plan on a copy of the layout (addresses, IRQs, overlay, checked
//! against the current tree) → build and register the device model → send
//! the overlay over the channel → on the guest's ACK commit the plan; on a
//! NAK, a timeout or no agent, unregister the model and keep the old layout.
//! Detach: ask the guest to remove the overlay → on ACK unregister the model
//! and release its reservations; on failure keep everything unless `force`.
//! One lock around the whole sequence serialises changes to a cell.

use super::irq::GsiRouter;
use super::virtio::{build_virtio_mmio, VirtioModel, VirtioWorker};
use super::{build_bridge, PciBuildContext, VmmError};
use crate::api::protocol::{ApiError, ErrorKind};
use crate::attach::{
    self, AttachError, AttachErrorKind, AttachedDevice, DeviceRequest, PlacedDevice,
};
use crate::channel::{ChannelError, ChannelHandle, OverlayId};
use crate::config::{PciBridgeConfig, PciDeviceKind, VirtioMmioConfig};
use crate::devices::serial::SerialConsole;
use crate::devices::Bus;
use crate::fdt::tree::Node;
use crate::layout::CellLayout;
use crate::pci::PciHostBridge;
use kvm_ioctls::VmFd;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// Default time to wait for the guest agent.
pub const DEFAULT_GUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A registered device model of an attached device.
struct LiveDevice {
    overlay: OverlayId,
    /// The agent generation that applied `overlay`.
    generation: u64,
    mmio: Vec<String>,
    pio: Vec<String>,
    irqfd: Option<(EventFd, u32)>,
    _bridge: Option<Arc<Mutex<PciHostBridge>>>,
    /// The virtio devices' models (their queue ioeventfds stay registered
    /// while these live) and worker threads.
    virtio: Vec<VirtioModel>,
    workers: Vec<VirtioWorker>,
    attached_at: Instant,
}

/// Everything that changes on attach/detach, under one lock.
struct State {
    layout: CellLayout,
    attached: Vec<AttachedDevice>,
    live: BTreeMap<String, LiveDevice>,
}

/// What a cell needs to hotplug devices.
pub struct Hotplug {
    cell: String,
    base_tree: Node,
    mmio: Arc<Bus>,
    pio: Arc<Bus>,
    vm: Arc<VmFd>,
    router: Arc<GsiRouter>,
    channel: ChannelHandle,
    output_dir: PathBuf,
    memory: GuestMemoryMmap,
    state: Mutex<State>,
}

fn attach_error(e: AttachError) -> ApiError {
    let kind = match e.kind() {
        AttachErrorKind::Invalid => ErrorKind::InvalidDevice,
        AttachErrorKind::Conflict => ErrorKind::Conflict,
        AttachErrorKind::NotFound => ErrorKind::NotFound,
        AttachErrorKind::Internal => ErrorKind::Internal,
    };
    ApiError::new(kind, e.to_string())
}

fn channel_error(e: &ChannelError) -> ApiError {
    let kind = match e {
        ChannelError::NoAgent | ChannelError::AgentReset => ErrorKind::NoAgent,
        ChannelError::Timeout | ChannelError::Busy => ErrorKind::GuestTimeout,
        ChannelError::Nak { .. } => ErrorKind::GuestRefused,
        ChannelError::TooLarge { .. } => ErrorKind::InvalidDevice,
        ChannelError::BadReply(_) => ErrorKind::Internal,
        ChannelError::Stopped => ErrorKind::Stopping,
    };
    ApiError::new(kind, e.to_string())
}

impl Hotplug {
    /// Hotplug state for the cell `cell` as booted.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cell: String,
        layout: CellLayout,
        base_tree: Node,
        mmio: Arc<Bus>,
        pio: Arc<Bus>,
        vm: Arc<VmFd>,
        router: Arc<GsiRouter>,
        channel: ChannelHandle,
        output_dir: PathBuf,
        memory: GuestMemoryMmap,
    ) -> Self {
        Hotplug {
            cell,
            base_tree,
            mmio,
            pio,
            vm,
            router,
            channel,
            output_dir,
            memory,
            state: Mutex::new(State {
                layout,
                attached: Vec::new(),
                live: BTreeMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The guest agent's state, for `status`.
    pub fn agent(&self) -> Value {
        use crate::channel::AgentState;
        let s = self.channel.agent_status();
        let (state, version, capabilities) = match s.state {
            AgentState::NotSeen => ("not-seen", None, None),
            AgentState::Ready(info) => ("ready", Some(info.version), Some(info.capabilities)),
            AgentState::Incompatible { version } => ("incompatible", Some(version), None),
            AgentState::Gone => ("gone", None, None),
        };
        json!({
            "state": state,
            "version": version,
            "capabilities": capabilities,
            "rejected_messages": s.rejected_messages,
            "last_error": s.last_error.map(|e| format!("-{}: {}", e.errno, e.what)),
        })
    }

    /// The current layout (boot-time plus attached devices).
    pub fn layout(&self) -> CellLayout {
        self.lock().layout.clone()
    }

    /// Attached devices for `devices`.
    pub fn attached(&self) -> Vec<Value> {
        let st = self.lock();
        st.attached
            .iter()
            .map(|d| {
                let live = st.live.get(d.id());
                let mut v = placement(&d.slot);
                v["state"] = json!("attached");
                v["overlay"] = json!(live.map(|l| l.overlay.0));
                v["nodes"] = json!(d.nodes);
                v["attached_ms_ago"] =
                    json!(live.map(|l| l.attached_at.elapsed().as_millis() as u64));
                v
            })
            .collect()
    }

    /// Attaches the device described by `description` (JSON).
    pub fn attach(&self, description: &Value, timeout: Duration) -> Result<Value, ApiError> {
        let request =
            DeviceRequest::from_json_str(&description.to_string()).map_err(attach_error)?;
        if let DeviceRequest::PciBridge { devices, .. } = &request {
            if devices
                .iter()
                .any(|d| matches!(d.kind, PciDeviceKind::Ivshmem(_)))
            {
                return Err(ApiError::new(
                    ErrorKind::InvalidDevice,
                    "ivshmem functions can only be configured at boot for now",
                ));
            }
        }
        let started = Instant::now();
        let mut st = self.lock();
        let plan = attach::plan(&request, &st.layout, &self.base_tree, &st.attached)
            .map_err(attach_error)?;
        let model = self.build_model(&request, &plan.slot)?;
        let generation = self.channel.agent_status().generation;
        let overlay = match self.channel.apply_overlay(&plan.overlay, timeout) {
            Ok(id) => id,
            Err(e) => {
                self.teardown(model);
                log::warn!("attach {} refused: {e}; nothing changed", plan.id);
                return Err(channel_error(&e));
            }
        };
        let id = plan.id.clone();
        let slot = plan.slot.clone();
        let nodes = plan.nodes.clone();
        let State {
            layout,
            attached,
            live,
        } = &mut *st;
        if let Err(e) = plan.commit(layout, attached) {
            // Cannot happen under the lock; undo in the guest too.
            let _ = self.channel.remove_overlay(overlay, timeout);
            self.teardown(model);
            return Err(attach_error(e));
        }
        live.insert(
            id.clone(),
            LiveDevice {
                overlay,
                generation,
                attached_at: Instant::now(),
                ..model
            },
        );
        let mut v = placement(&slot);
        v["overlay"] = json!(overlay.0);
        v["nodes"] = json!(nodes);
        v["elapsed_ms"] = json!(started.elapsed().as_secs_f64() * 1000.0);
        Ok(v)
    }

    /// Detaches the attached device `id`.
    pub fn detach(&self, id: &str, force: bool, timeout: Duration) -> Result<Value, ApiError> {
        let started = Instant::now();
        let mut st = self.lock();
        let plan = attach::plan_detach(id, &st.layout, &st.attached).map_err(attach_error)?;
        let Some((overlay, generation)) = st.live.get(id).map(|l| (l.overlay, l.generation)) else {
            return Err(ApiError::new(
                ErrorKind::Internal,
                format!("{id} is attached but has no device model"),
            ));
        };
        // An agent that unloaded removed every overlay it had applied, and a
        // new agent numbers overlays afresh: never send a stale id (it could
        // name another device's overlay now).
        let agent = self.channel.agent_status();
        let dropped_by_guest = agent.generation != generation
            || matches!(agent.state, crate::channel::AgentState::Gone);
        let guest = if dropped_by_guest {
            log::info!("detach {id}: the guest agent that applied it is gone; the guest already dropped it");
            Ok(())
        } else {
            self.channel.remove_overlay(overlay, timeout)
        };
        if let Err(e) = &guest {
            if !force {
                return Err(channel_error(e));
            }
            log::warn!("detach {id}: guest failed ({e}); tearing down anyway (--force)");
        }
        let State {
            layout,
            attached,
            live,
        } = &mut *st;
        plan.commit(layout, attached).map_err(attach_error)?;
        if let Some(model) = live.remove(id) {
            self.teardown(model);
        }
        Ok(json!({
            "id": id,
            "detached": true,
            "forced": guest.is_err(),
            "guest_already_dropped": dropped_by_guest,
            "guest_error": guest.err().map(|e| e.to_string()),
            "elapsed_ms": started.elapsed().as_secs_f64() * 1000.0,
        }))
    }

    fn build_model(
        &self,
        request: &DeviceRequest,
        slot: &PlacedDevice,
    ) -> Result<LiveDevice, ApiError> {
        let internal = |what: String| ApiError::new(ErrorKind::Internal, what);
        let mut model = LiveDevice {
            overlay: OverlayId(0),
            generation: 0,
            mmio: Vec::new(),
            pio: Vec::new(),
            irqfd: None,
            _bridge: None,
            virtio: Vec::new(),
            workers: Vec::new(),
            attached_at: Instant::now(),
        };
        match (request, slot) {
            (DeviceRequest::PciBridge { devices, .. }, PlacedDevice::PciBridge(s)) => {
                let cfg = PciBridgeConfig {
                    id: s.id.clone(),
                    kind: s.kind,
                    config_base: Some(s.config.base),
                    bus_start: s.bus_start,
                    bus_end: s.bus_end,
                    mmio32: Some(s.mmio32),
                    mmio64: s.mmio64,
                    devices: devices.clone(),
                };
                let mut ctx = PciBuildContext {
                    mmio: &self.mmio,
                    vm: &self.vm,
                    router: &self.router,
                    readonly_mem: false,
                    next_slot: 0,
                    ivshmem_subs: Vec::new(),
                    memory: &self.memory,
                    virtio: Vec::new(),
                };
                let bridge = build_bridge(s, &cfg, &mut ctx)
                    .map_err(|e| ApiError::new(ErrorKind::InvalidDevice, e.to_string()))?;
                let name = format!("pci bridge {}", s.id);
                self.mmio
                    .insert(&name, s.config.base, s.config.size, bridge.clone())
                    .map_err(|e| ApiError::new(ErrorKind::Conflict, e.to_string()))?;
                model.mmio.push(name);
                model._bridge = Some(bridge);
                model.virtio = ctx.virtio;
                if let Err(e) = start_workers(&mut model) {
                    self.teardown(model);
                    return Err(internal(e.to_string()));
                }
            }
            (
                DeviceRequest::VirtioMmio {
                    id, kind, backend, ..
                },
                PlacedDevice::VirtioMmio(s),
            ) => {
                let cfg = VirtioMmioConfig {
                    id: id.clone(),
                    kind: *kind,
                    base: Some(s.window.base),
                    irq: Some(s.irq),
                    backend: backend.clone(),
                };
                let (device, virtio) = build_virtio_mmio(s, &cfg, &self.memory, &self.vm)
                    .map_err(|e| ApiError::new(ErrorKind::InvalidDevice, e.to_string()))?;
                model.virtio.push(virtio);
                let name = format!("virtio-mmio {}", s.id);
                if let Err(e) = self
                    .mmio
                    .insert(&name, s.window.base, s.window.size, device)
                {
                    self.teardown(model);
                    return Err(ApiError::new(ErrorKind::Conflict, e.to_string()));
                }
                model.mmio.push(name);
                if let Err(e) = start_workers(&mut model) {
                    self.teardown(model);
                    return Err(internal(e.to_string()));
                }
            }
            (DeviceRequest::Uart { .. }, PlacedDevice::Uart(s)) => {
                let path = self.output_dir.join(format!("{}.{}.out", self.cell, s.id));
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| internal(format!("{}: {e}", path.display())))?;
                let (uart, irq, _space) = SerialConsole::new(Box::new(file))
                    .map_err(|e| internal(format!("UART: {e}")))?;
                self.vm
                    .register_irqfd(&irq, s.irq)
                    .map_err(|e| internal(format!("UART irqfd: {e}")))?;
                model.irqfd = Some((irq, s.irq));
                let name = format!("uart {}", s.id);
                if let Err(e) =
                    self.pio
                        .insert(&name, u64::from(s.port), 8, Arc::new(Mutex::new(uart)))
                {
                    self.teardown(model);
                    return Err(ApiError::new(ErrorKind::Conflict, e.to_string()));
                }
                model.pio.push(name);
            }
            _ => return Err(internal("plan does not match the request".into())),
        }
        Ok(model)
    }

    /// Stops the worker threads of every attached device (the cell stopped).
    /// The channel is closed first: an attach or detach waiting for the
    /// guest under the state lock fails at once (an attach rolls back)
    /// instead of holding the lock for the rest of its timeout.
    pub fn shutdown(&self) {
        self.channel.close();
        let mut st = self.lock();
        for live in st.live.values_mut() {
            for w in live.workers.drain(..) {
                w.stop();
            }
        }
    }

    fn teardown(&self, mut model: LiveDevice) {
        for w in model.workers.drain(..) {
            w.stop();
        }
        for name in &model.mmio {
            let _ = self.mmio.remove(name);
        }
        for name in &model.pio {
            let _ = self.pio.remove(name);
        }
        if let Some((fd, gsi)) = &model.irqfd {
            if let Err(e) = self.vm.unregister_irqfd(fd, *gsi) {
                log::warn!("unregister irqfd on pin {gsi}: {e}");
            }
        }
        // Dropping the bridge unmaps its BARs (and so the virtio-pci notify
        // ioeventfds); dropping the models unregisters virtio-mmio's.
    }
}

fn start_workers(model: &mut LiveDevice) -> Result<(), VmmError> {
    for v in &model.virtio {
        model.workers.push(v.start()?);
    }
    Ok(())
}

/// JSON placement of a device.
fn placement(slot: &PlacedDevice) -> Value {
    match slot {
        PlacedDevice::PciBridge(s) => json!({
            "id": s.id, "kind": "pci-bridge",
            "config": format!("{:#x}+{:#x}", s.config.base, s.config.size),
            "buses": format!("{:02x}-{:02x}", s.bus_start, s.bus_end),
            "mmio32": format!("{:#x}+{:#x}", s.mmio32.base, s.mmio32.size),
            "intx": s.intx,
        }),
        PlacedDevice::VirtioMmio(s) => json!({
            "id": s.id, "kind": "virtio-mmio",
            "base": format!("{:#x}", s.window.base), "irq": s.irq,
        }),
        PlacedDevice::Uart(s) => json!({
            "id": s.id, "kind": "uart", "port": format!("{:#x}", s.port), "irq": s.irq,
        }),
    }
}
