//! Runtime attach and detach: the cell's side of a hotplug.
//!
//! Attach: plan on a copy of the layout (addresses, IRQs, overlay, checked
//! against the current tree) → build and register the device model → send
//! the overlay over the channel → on the guest's ACK commit the plan; on a
//! NAK, a timeout or no agent, unregister the model and keep the old layout.
//! A device's host resources (disk images) are claimed before its model is
//! built and released when an attach fails or the device is detached.
//! Detach: ask the guest to remove the overlay → on ACK unregister the model
//! and release its reservations; on failure keep everything unless `force`.
//! A change lock serialises changes to a cell; the state lock is held only
//! to read or commit, never across the guest's answer, so `status` and
//! `devices` are answered while a change waits for the guest.

use super::device_state::BootDevice;
use super::devices::{DeviceManager, DeviceModel};
use super::VmmError;
use crate::api::protocol::{
    AgentInfo, ApiError, AttachResult, DetachResult, DeviceInfo, ErrorKind,
};
use crate::attach::{self, AttachError, AttachErrorKind, AttachedDevice};
use crate::channel::{ChannelError, ChannelHandle, OverlayId};
use crate::config::{ConfigError, DeviceConfig, LoadOptions};
use crate::fdt::tree::Node;
use crate::layout::{CellLayout, PlacedDevice};
use crate::partition::claims::CellClaims;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Default time to wait for the guest agent.
pub const DEFAULT_GUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The device model of an attached device, and the overlay that added it.
pub(super) struct LiveDevice {
    pub(super) overlay: OverlayId,
    /// The agent generation that applied `overlay`.
    pub(super) generation: u64,
    pub(super) model: DeviceModel,
    pub(super) attached_at: Instant,
}

/// The device models of a plugged add-on, and the overlay that added it.
pub(super) struct LiveAddon {
    pub(super) overlay: OverlayId,
    /// The agent generation that applied `overlay`.
    pub(super) generation: u64,
    pub(super) models: Vec<DeviceModel>,
}

/// Everything that changes on attach/detach, under one lock.
pub(super) struct State {
    pub(super) layout: CellLayout,
    pub(super) attached: Vec<AttachedDevice>,
    pub(super) live: BTreeMap<String, LiveDevice>,
    /// Add-ons plugged into connectors (`vmm::plug`).
    pub(super) plugged: Vec<attach::PluggedAddon>,
    /// Their device models, by connector.
    pub(super) live_addons: BTreeMap<String, LiveAddon>,
    /// Connectors attached at run time (`vmm::connect`).
    pub(super) connected: Vec<attach::ConnectedConnector>,
    /// Their overlays in the guest (id, agent generation), by connector.
    pub(super) live_connectors: BTreeMap<String, (OverlayId, u64)>,
    /// The cell's boot-time devices (`vmm::device_state`).
    pub(super) boot: BTreeMap<String, BootDevice>,
    /// Recent trees an attach checks against (`attach::current_tree` of
    /// the base and `attached`), so the next one need not rebuild it.
    pub(super) trees: attach::TreeCache,
}

/// What a cell needs to hotplug devices.
pub struct Hotplug {
    pub(super) base_tree: Node,
    pub(super) devices: Arc<DeviceManager>,
    pub(super) channel: ChannelHandle,
    /// The cell's host-wide claims; attached devices add theirs.
    pub(super) claims: Arc<CellClaims>,
    /// Held for a whole attach, detach or state change: one at a time.
    pub(super) change: Mutex<()>,
    /// Held briefly: to read, to plan from, to commit.
    pub(super) state: Mutex<State>,
}

pub(super) fn attach_error(e: AttachError) -> ApiError {
    let kind = match e.kind() {
        AttachErrorKind::Invalid => ErrorKind::InvalidDevice,
        AttachErrorKind::Conflict => ErrorKind::Conflict,
        AttachErrorKind::NotFound => ErrorKind::NotFound,
        AttachErrorKind::Internal => ErrorKind::Internal,
    };
    ApiError::new(kind, e.to_string())
}

/// The API error for a failed guest exchange.
pub(super) fn channel_error(e: &ChannelError) -> ApiError {
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

pub(super) fn config_error(e: &ConfigError) -> ApiError {
    ApiError::new(ErrorKind::InvalidDevice, e.to_string())
}

/// The API error for a device model that could not be built.
pub(super) fn build_error(e: VmmError) -> ApiError {
    let kind = match e {
        VmmError::NotAtRuntime { .. } => ErrorKind::Unsupported,
        VmmError::Bus(_) => ErrorKind::Conflict,
        _ => ErrorKind::InvalidDevice,
    };
    ApiError::new(kind, e.to_string())
}

impl Hotplug {
    /// Hotplug state for a cell as booted: its layout and base tree, and
    /// the device manager that built its boot-time devices.
    pub fn new(
        layout: CellLayout,
        base_tree: Node,
        devices: Arc<DeviceManager>,
        channel: ChannelHandle,
        claims: Arc<CellClaims>,
        boot: Vec<BootDevice>,
    ) -> Self {
        Hotplug {
            base_tree,
            devices,
            channel,
            claims,
            change: Mutex::new(()),
            state: Mutex::new(State {
                layout,
                attached: Vec::new(),
                live: BTreeMap::new(),
                plugged: Vec::new(),
                live_addons: BTreeMap::new(),
                connected: Vec::new(),
                live_connectors: BTreeMap::new(),
                boot: boot.into_iter().map(|b| (b.id().to_string(), b)).collect(),
                trees: attach::TreeCache::default(),
            }),
        }
    }

    /// The channel to the guest agent.
    pub fn channel(&self) -> ChannelHandle {
        self.channel.clone()
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// The guest agent's state, for `status`.
    pub fn agent(&self) -> AgentInfo {
        use crate::channel::AgentState;
        let s = self.channel.agent_status();
        let (state, version, capabilities) = match s.state {
            AgentState::NotSeen => ("not-seen", None, None),
            AgentState::Ready(info) => ("ready", Some(info.version), Some(info.capabilities)),
            AgentState::Incompatible { version } => ("incompatible", Some(version), None),
            AgentState::Gone => ("gone", None, None),
        };
        AgentInfo {
            state,
            version,
            capabilities,
            rejected_messages: s.rejected_messages,
            last_error: s.last_error.map(|e| format!("-{}: {}", e.errno, e.what)),
        }
    }

    /// The current layout (boot-time plus attached devices).
    pub fn layout(&self) -> CellLayout {
        self.lock().layout.clone()
    }

    /// Attached devices for `devices`.
    pub fn attached(&self) -> Vec<DeviceInfo> {
        let st = self.lock();
        st.attached
            .iter()
            .map(|d| {
                let live = st.live.get(d.id());
                DeviceInfo {
                    state: Some("attached"),
                    overlay: live.map(|l| l.overlay.0),
                    nodes: Some(d.nodes.clone()),
                    attached_ms_ago: live.map(|l| l.attached_at.elapsed().as_millis() as u64),
                    functions: super::functions::function_list(&d.device),
                    ..placement(&d.slot)
                }
            })
            .collect()
    }

    /// Attaches the device described by `description` (a description's
    /// value tree, as the API received it; relative paths resolve against
    /// `base_dir`).
    pub fn attach(
        &self,
        description: toml::Value,
        base_dir: Option<&Path>,
        timeout: Duration,
    ) -> Result<AttachResult, ApiError> {
        let opts = LoadOptions { check_files: true };
        let device = crate::config::device_from_value(description, "<request>", base_dir, &opts)
            .map_err(|e| config_error(&e))?
            .device;
        self.attach_device(&device, timeout)
    }

    /// Attaches a validated device.
    pub fn attach_device(
        &self,
        device: &DeviceConfig,
        timeout: Duration,
    ) -> Result<AttachResult, ApiError> {
        let started = Instant::now();
        let _change = crate::sync::lock(&self.change);
        let (layout, attached, kept) = {
            let mut st = self.lock();
            let State {
                layout,
                attached,
                trees,
                ..
            } = &mut *st;
            // Taken, not copied: a failed attach leaves no tree for this
            // set, and the next one rebuilds it.
            let kept = trees.take(attached);
            (layout.clone(), attached.clone(), kept)
        };
        let live = match kept {
            Some(tree) => tree,
            None => attach::current_tree(&self.base_tree, &attached).map_err(attach_error)?,
        };
        let mut plan = attach::plan_on(device, &layout, &self.base_tree, &attached, live)
            .map_err(attach_error)?;
        let next_tree = plan.take_tree();
        let planned = Instant::now();
        self.claims
            .claim_device(device)
            .map_err(|e| ApiError::new(ErrorKind::Conflict, e.to_string()))?;
        let model = match self.devices.build(device, &plan.slot, true) {
            Ok(model) => model,
            Err(e) => {
                self.claims.release_device(device.id());
                return Err(build_error(e));
            }
        };
        let mut model = model;
        if let Err(e) = model.start_workers(self.devices.seccomp()) {
            self.devices.discard(model);
            self.claims.release_device(device.id());
            return Err(ApiError::new(ErrorKind::Internal, e.to_string()));
        }
        let built = Instant::now();
        let generation = self.channel.agent_status().generation;
        let (overlay, trace) = match self.channel.apply_overlay_traced(&plan.overlay, timeout) {
            Ok(applied) => applied,
            Err(e) => {
                self.devices.discard(model);
                self.claims.release_device(device.id());
                log::warn!("attach {} refused: {e}; nothing changed", plan.id);
                return Err(channel_error(&e));
            }
        };
        let acked = Instant::now();
        let id = plan.id.clone();
        let slot = plan.slot.clone();
        let nodes = plan.nodes.clone();
        let mut st = self.lock();
        let State {
            layout,
            attached,
            live,
            ..
        } = &mut *st;
        if let Err(e) = plan.commit(layout, attached) {
            // Cannot happen under the lock; undo in the guest too.
            let _ = self.channel.remove_overlay(overlay, timeout);
            self.devices.discard(model);
            self.claims.release_device(device.id());
            return Err(attach_error(e));
        }
        live.insert(
            id,
            LiveDevice {
                overlay,
                generation,
                model,
                attached_at: Instant::now(),
            },
        );
        if let Some(tree) = next_tree {
            let State {
                attached, trees, ..
            } = &mut *st;
            trees.put(attached, tree);
        }
        drop(st);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let round_trip = acked.saturating_duration_since(built);
        let ack = match (trace.delivered, trace.guest) {
            (Some(d), Some(g)) => Some(round_trip.saturating_sub(d).saturating_sub(g)),
            _ => None,
        };
        Ok(AttachResult {
            device: DeviceInfo {
                overlay: Some(overlay.0),
                nodes: Some(nodes),
                ..placement(&slot)
            },
            elapsed_ms: ms(started.elapsed()),
            breakdown: crate::api::protocol::AttachBreakdown {
                plan_ms: ms(planned.saturating_duration_since(started)),
                build_ms: ms(built.saturating_duration_since(planned)),
                deliver_ms: trace.delivered.map(ms),
                wake_ms: trace.guest_wake.map(ms),
                guest_ms: trace.guest.map(ms),
                ack_ms: ack.map(ms),
                commit_ms: ms(acked.elapsed()),
            },
        })
    }

    /// Detaches the attached device `id`.
    pub fn detach(
        &self,
        id: &str,
        force: bool,
        timeout: Duration,
    ) -> Result<DetachResult, ApiError> {
        let started = Instant::now();
        let _change = crate::sync::lock(&self.change);
        let (plan, live) = {
            let st = self.lock();
            let plan = attach::plan_detach(id, &st.layout, &st.attached).map_err(attach_error)?;
            (plan, st.live.get(id).map(|l| (l.overlay, l.generation)))
        };
        let Some((overlay, generation)) = live else {
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
        let mut st = self.lock();
        let State {
            layout,
            attached,
            live,
            trees,
            ..
        } = &mut *st;
        let nodes = attached
            .iter()
            .find(|d| d.id() == id)
            .map(|d| d.nodes.clone());
        let tree = trees.take(attached);
        plan.commit(layout, attached).map_err(attach_error)?;
        // The tree without the device's nodes is the tree of what is left
        // attached (for the next attach to plan on).
        if let (Some(tree), Some(nodes)) = (tree, nodes) {
            trees.put(attached, tree.without(&nodes));
        }
        if let Some(dev) = live.remove(id) {
            self.devices.remove(dev.model);
        }
        self.claims.release_device(id);
        Ok(DetachResult {
            id: id.to_string(),
            detached: true,
            forced: guest.is_err(),
            guest_already_dropped: dropped_by_guest,
            guest_error: guest.err().map(|e| e.to_string()),
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    /// Stops the worker threads of every attached device (the cell stopped).
    /// The channel is closed first: an attach or detach waiting for the
    /// guest under the state lock fails at once (an attach rolls back)
    /// instead of holding the lock for the rest of its timeout.
    pub fn shutdown(&self) {
        self.channel.close();
        let mut st = self.lock();
        for live in st.live.values_mut() {
            live.model.stop_workers();
        }
        for addon in st.live_addons.values_mut() {
            for model in &mut addon.models {
                model.stop_workers();
            }
        }
        for model in st.boot.values_mut().filter_map(|b| b.model.as_mut()) {
            model.stop_workers();
        }
    }
}

/// Where a device is, for `devices` and `attach`.
pub(super) fn placement(slot: &PlacedDevice) -> DeviceInfo {
    match slot {
        PlacedDevice::PciBridge(s) => DeviceInfo {
            id: s.id.clone(),
            kind: "pci-bridge",
            config: Some(format!("{:#x}+{:#x}", s.config.base, s.config.size)),
            buses: Some(format!("{:02x}-{:02x}", s.bus_start, s.bus_end)),
            mmio32: Some(format!("{:#x}+{:#x}", s.mmio32.base, s.mmio32.size)),
            intx: Some(s.intx),
            ..DeviceInfo::default()
        },
        PlacedDevice::VirtioMmio(s) => DeviceInfo {
            id: s.id.clone(),
            kind: "virtio-mmio",
            base: Some(format!("{:#x}", s.window.base)),
            irq: Some(s.irq),
            ..DeviceInfo::default()
        },
        PlacedDevice::Uart(s) => DeviceInfo {
            id: s.id.clone(),
            kind: "uart",
            port: s.mmio.is_none().then(|| format!("{:#x}", s.port)),
            base: s.mmio.map(|w| format!("{:#x}", w.base)),
            irq: Some(s.irq),
            ..DeviceInfo::default()
        },
    }
}
