//! The running cell as the control API sees it: status, the device list,
//! runtime attach/detach (delegated to [`super::hotplug::Hotplug`]), the
//! lifecycle (pause, resume, destroy) and statistics.
//!
//! Lifecycle: `pause` closes the vCPUs' run gate and answers once every
//! vCPU is parked (`vmm::gate`); `resume` opens it; `destroy` stops the
//! cell (`cellvm run` exits with status 4). On a stopping cell every
//! lifecycle request is refused with `stopping`. The state `status`
//! reports is `stopping` once a stop was requested, else `paused` while
//! the gate is closed, else `running`.

use super::gate::{GateError, RunGate};
use super::hotplug::{channel_error, placement, Hotplug, DEFAULT_GUEST_TIMEOUT};
use super::vcpu::ExitCounters;
use crate::api::handover::{self, CellEndpoint, RemoteCell};
use crate::api::protocol::{
    ApiError, DeviceInfo, DeviceStats, ErrorKind, MemoryInfo, Reply, Request, ShutdownResult,
    StateInfo, StatsInfo, StatusInfo, VcpuStats, API_VERSION, MAX_GUEST_TIMEOUT_MS,
};
use crate::api::ControlTarget;
use crate::channel::ChannelHandle;
use crate::devices::Bus;
use crate::layout::PlacedDevice;
use crate::platform;
use crate::stop::{StopHandle, StopReason};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long `shutdown` waits for the guest by default (its answer and its
/// poweroff together).
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `pause` waits for every vCPU to park.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the control API needs to steer a running cell's vCPUs.
pub struct Controls {
    /// Stops the cell.
    pub stop: StopHandle,
    /// The vCPUs' run gate.
    pub gate: Arc<RunGate>,
    /// One per vCPU.
    pub counters: Vec<Arc<ExitCounters>>,
    /// The MMIO bus (per-device access counts).
    pub mmio: Arc<Bus>,
    /// The port I/O bus.
    pub pio: Arc<Bus>,
    /// The channel to the guest agent (`shutdown`).
    pub channel: ChannelHandle,
}

/// Shared state of a running cell.
pub struct CellRuntime {
    name: String,
    started: Instant,
    hotplug: Arc<Hotplug>,
    controls: Controls,
}

fn gate_error(e: GateError) -> ApiError {
    let kind = match e {
        GateError::Stopping => ErrorKind::Stopping,
        GateError::NotParked { .. } => ErrorKind::GuestTimeout,
    };
    ApiError::new(kind, e.to_string())
}

/// Kicks one vCPU thread out of `KVM_RUN`.
fn kick(thread: libc::pthread_t) {
    // SAFETY: the id is of a vCPU thread registered by `Cell::run`; the
    // gate sends kicks under its lock and never after its release, which
    // `Cell::run` does before joining the vCPU threads, so the thread is
    // alive; the kick handler is installed.
    unsafe { libc::pthread_kill(thread, super::vcpu::kick_signal()) };
}

impl CellRuntime {
    /// State for the cell `name`.
    pub fn new(name: String, hotplug: Arc<Hotplug>, controls: Controls) -> Self {
        CellRuntime {
            name,
            started: Instant::now(),
            hotplug,
            controls,
        }
    }

    /// `paused`, `running` or `stopping`.
    fn state(&self) -> &'static str {
        if self.controls.stop.is_stopped() {
            "stopping"
        } else if self.controls.gate.is_paused() {
            "paused"
        } else {
            "running"
        }
    }

    fn state_reply(&self) -> Reply {
        Reply::State(StateInfo {
            state: self.state(),
        })
    }

    /// Refuses a request that needs the guest's answer while the cell is
    /// paused (the guest could not answer; the request would only wait).
    fn not_paused(&self, what: &str) -> Result<(), ApiError> {
        if self.controls.gate.is_paused() {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                format!("{what}: the cell is paused and its guest cannot answer; resume it first"),
            ));
        }
        Ok(())
    }

    /// Refuses a lifecycle request on a stopping cell.
    fn not_stopping(&self) -> Result<(), ApiError> {
        if self.controls.stop.is_stopped() {
            return Err(gate_error(GateError::Stopping));
        }
        Ok(())
    }

    /// Asks the guest to power off and waits (within `timeout` in all)
    /// until it has; with `force`, destroys the cell when it does not.
    fn shutdown(&self, force: bool, timeout: Duration) -> Result<Reply, ApiError> {
        self.not_stopping()?;
        let started = Instant::now();
        let paused = self.not_paused("shutdown").err();
        let answer = match paused {
            Some(e) => Err(e),
            None => self.controls.channel.shutdown(timeout).map_err(|e| {
                let e = channel_error(&e);
                ApiError::new(e.kind, format!("shutdown: {}", e.message))
            }),
        };
        let failure = match answer {
            Ok(()) => {
                let left = timeout.saturating_sub(started.elapsed());
                if self.controls.stop.wait_timeout(left) {
                    None
                } else {
                    Some(ApiError::new(
                        ErrorKind::GuestTimeout,
                        format!(
                            "the guest acknowledged the shutdown but did not power off within {} ms",
                            timeout.as_millis()
                        ),
                    ))
                }
            }
            Err(e) => Some(e),
        };
        let forced = match failure {
            None => None,
            Some(e) if force => {
                log::warn!("cell {}: {}; destroying it (--force)", self.name, e.message);
                self.controls.stop.stop(StopReason::Destroyed);
                Some(e.message)
            }
            Some(e) => return Err(e),
        };
        let stopped = self
            .controls
            .stop
            .reason()
            .map_or_else(|| "stopping".to_string(), |r| r.to_string());
        Ok(Reply::Shutdown(ShutdownResult {
            state: "stopping",
            stopped,
            forced: forced.is_some(),
            guest_error: forced,
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        }))
    }

    fn stats(&self) -> StatsInfo {
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let vcpus = self
            .controls
            .counters
            .iter()
            .enumerate()
            .map(|(vcpu, c)| VcpuStats {
                vcpu,
                mmio: load(&c.mmio),
                pio: load(&c.pio),
                hlt: load(&c.hlt),
                interrupted: load(&c.interrupted),
                unhandled: load(&c.unhandled),
            })
            .collect();
        let bus = |b: &Bus, name: &'static str| {
            b.access_counts()
                .into_iter()
                .map(move |(device, accesses)| DeviceStats {
                    device,
                    bus: name,
                    accesses,
                })
                .collect::<Vec<_>>()
        };
        let mut devices = bus(&self.controls.pio, "pio");
        devices.extend(bus(&self.controls.mmio, "mmio"));
        StatsInfo {
            name: self.name.clone(),
            vcpus,
            devices,
        }
    }

    /// Every device: the platform's, the boot-time ones, then the attached
    /// ones in attach order.
    fn devices(&self) -> Vec<DeviceInfo> {
        let layout = self.hotplug.layout();
        let attached = self.hotplug.attached();
        let boot_states = self.hotplug.boot_states();
        let plugged = self.hotplug.plugged_ids();
        let is_attached =
            |id: &str| attached.iter().any(|d| d.id == id) || plugged.iter().any(|p| p == id);
        let mut out = vec![DeviceInfo {
            id: "console".into(),
            kind: "uart",
            state: Some("boot"),
            port: platform::CONSOLE_PORT.map(|p| format!("{p:#x}")),
            base: platform::CONSOLE_MMIO.map(|b| format!("{b:#x}")),
            irq: Some(platform::UART_IRQ),
            ..DeviceInfo::default()
        }];
        for (id, base, size) in [
            (
                "debug-exit",
                platform::DEBUG_EXIT_BASE,
                platform::PLATFORM_DEVICE_SIZE,
            ),
            (
                "boot-timer",
                platform::BOOT_TIMER_BASE,
                platform::PLATFORM_DEVICE_SIZE,
            ),
            (
                "pvpanic",
                platform::PVPANIC_BASE,
                platform::PLATFORM_DEVICE_SIZE,
            ),
            ("channel", platform::CHANNEL_BASE, platform::CHANNEL_SIZE),
        ] {
            out.push(DeviceInfo {
                id: id.into(),
                kind: "platform",
                state: Some("boot"),
                base: Some(format!("{base:#x}")),
                size: Some(format!("{size:#x}")),
                ..DeviceInfo::default()
            });
        }
        let placed = layout
            .virtio_mmio
            .iter()
            .cloned()
            .map(PlacedDevice::VirtioMmio)
            .chain(
                layout
                    .pci_bridges
                    .iter()
                    .cloned()
                    .map(PlacedDevice::PciBridge),
            )
            .chain(layout.uarts.iter().cloned().map(PlacedDevice::Uart));
        for slot in placed.filter(|s| !is_attached(s.id())) {
            use crate::config::DeviceState;
            let (now, file) = boot_states
                .iter()
                .find(|(id, _, _)| id == slot.id())
                .map_or((DeviceState::Okay, DeviceState::Okay), |(_, n, f)| (*n, *f));
            out.push(DeviceInfo {
                state: Some(match (now, file) {
                    (DeviceState::Okay, DeviceState::Okay) => "boot",
                    (DeviceState::Okay, _) => "enabled",
                    (other, _) => other.as_str(),
                }),
                mmio32: None,
                functions: self.hotplug.boot_functions(slot.id()),
                ..placement(&slot)
            });
        }
        out.extend(attached);
        out.extend(self.hotplug.connector_devices());
        out
    }
}

/// The guest wait a request asks for: the default, or its `timeout_ms` up
/// to [`MAX_GUEST_TIMEOUT_MS`] (more is refused: a change holds the cell's
/// change lock while it waits).
fn timeout(ms: Option<u64>) -> Result<Duration, ApiError> {
    match ms {
        None => Ok(DEFAULT_GUEST_TIMEOUT),
        Some(ms) if ms <= MAX_GUEST_TIMEOUT_MS => Ok(Duration::from_millis(ms)),
        Some(ms) => Err(ApiError::new(
            ErrorKind::BadRequest,
            format!("timeout_ms {ms} is above the limit of {MAX_GUEST_TIMEOUT_MS}"),
        )),
    }
}

/// This cell as the giving side of a `move`: its requests are handled here,
/// not through its socket.
impl CellEndpoint for CellRuntime {
    fn name(&self) -> &str {
        &self.name
    }

    fn call(&self, request: &Request, _within: Duration) -> Result<serde_json::Value, ApiError> {
        let reply = self.handle(request.clone())?;
        serde_json::to_value(&reply)
            .map_err(|e| ApiError::new(ErrorKind::Internal, format!("answer of {request:?}: {e}")))
    }
}

impl ControlTarget for CellRuntime {
    fn handle(&self, request: Request) -> Result<Reply, ApiError> {
        match request {
            Request::Status {} => Ok(Reply::Status(StatusInfo {
                name: self.name.clone(),
                state: self.state(),
                vcpus: u8::try_from(self.controls.counters.len()).unwrap_or(u8::MAX),
                uptime_ms: self.started.elapsed().as_millis() as u64,
                api_version: API_VERSION,
                agent: self.hotplug.agent(),
                memory: memory_status(),
            })),
            Request::Devices {} => Ok(Reply::Devices(self.devices())),
            Request::Attach {
                device,
                base_dir,
                timeout_ms,
            } => {
                self.not_paused("attach")?;
                self.hotplug
                    .attach(device, base_dir.as_deref(), timeout(timeout_ms)?)
                    .map(|r| Reply::Attached(Box::new(r)))
            }
            Request::Detach {
                id,
                force,
                timeout_ms,
            } => {
                self.not_paused("detach")?;
                self.hotplug
                    .detach(&id, force, timeout(timeout_ms)?)
                    .map(Reply::Detached)
            }
            Request::Plug {
                connector,
                addon,
                overlay_name,
                overlay,
                base_dir,
                timeout_ms,
            } => {
                self.not_paused("plug")?;
                let req = super::plug::PlugRequest {
                    connector: &connector,
                    addon,
                    overlay: (&overlay_name, &overlay),
                    base_dir: base_dir.as_deref(),
                };
                self.hotplug
                    .plug(req, timeout(timeout_ms)?)
                    .map(Reply::Plugged)
            }
            Request::Unplug {
                connector,
                force,
                timeout_ms,
            } => {
                self.not_paused("unplug")?;
                self.hotplug
                    .unplug(&connector, force, timeout(timeout_ms)?)
                    .map(Reply::Unplugged)
            }
            Request::AddFunction {
                bridge,
                function,
                base_dir,
                timeout_ms,
            } => {
                self.not_paused("add_function")?;
                self.hotplug
                    .add_function(&bridge, function, base_dir.as_deref(), timeout(timeout_ms)?)
                    .map(Reply::Function)
            }
            Request::RemoveFunction {
                bridge,
                function,
                timeout_ms,
            } => {
                self.not_paused("remove_function")?;
                self.hotplug
                    .remove_function(&bridge, &function, timeout(timeout_ms)?)
                    .map(Reply::Function)
            }
            Request::Connect {
                connector,
                timeout_ms,
            } => {
                self.not_paused("connect")?;
                self.hotplug
                    .connect(connector, timeout(timeout_ms)?)
                    .map(Reply::Connected)
            }
            Request::Disconnect {
                id,
                force,
                timeout_ms,
            } => {
                self.not_paused("disconnect")?;
                self.hotplug
                    .disconnect(&id, force, timeout(timeout_ms)?)
                    .map(Reply::Disconnected)
            }
            Request::Pause {} => {
                self.not_stopping()?;
                self.controls
                    .gate
                    .pause(kick, PAUSE_TIMEOUT)
                    .map_err(gate_error)?;
                log::info!("cell {} paused", self.name);
                Ok(self.state_reply())
            }
            Request::Resume {} => {
                self.not_stopping()?;
                self.controls.gate.resume().map_err(gate_error)?;
                log::info!("cell {} resumed", self.name);
                Ok(self.state_reply())
            }
            Request::Destroy {} => {
                self.not_stopping()?;
                self.controls.stop.stop(StopReason::Destroyed);
                Ok(self.state_reply())
            }
            Request::Stats {} => Ok(Reply::Stats(self.stats())),
            Request::Claim { id, from } => {
                self.not_stopping()?;
                self.hotplug.claim_from(&id, &from).map(Reply::DeviceState)
            }
            Request::Unclaim { id } => self.hotplug.unclaim(&id).map(Reply::DeviceState),
            Request::Enable { id, timeout_ms } => {
                self.not_paused("enable")?;
                self.hotplug
                    .set_state(&id, true, false, timeout(timeout_ms)?)
                    .map(Reply::DeviceState)
            }
            Request::Disable {
                id,
                force,
                timeout_ms,
            } => {
                self.not_paused("disable")?;
                self.hotplug
                    .set_state(&id, false, force, timeout(timeout_ms)?)
                    .map(Reply::DeviceState)
            }
            Request::Move { id, to, timeout_ms } => {
                self.not_paused("move")?;
                // `to` names a socket in the runtime directory: a name, not a path.
                if !crate::config::valid_name(&to) {
                    return Err(ApiError::new(
                        ErrorKind::BadRequest,
                        format!("move: {to:?} is not a cell name ([A-Za-z0-9_-], 1 to 32)"),
                    ));
                }
                let guest = timeout(timeout_ms)?;
                let guest_ms = u64::try_from(guest.as_millis()).unwrap_or(u64::MAX);
                handover::move_device(&id, self, &RemoteCell::new(&to), guest_ms)
                    .map(Reply::Moved)
                    .map_err(|f| f.into_api_error())
            }
            Request::Shutdown { force, timeout_ms } => {
                let wait = match timeout_ms {
                    None => DEFAULT_SHUTDOWN_TIMEOUT,
                    some => timeout(some)?,
                };
                self.shutdown(force, wait)
            }
        }
    }
}

/// cellvm's own memory, for `cellvm status`: the process's resident set
/// (guest RAM included), the bytes Rust code holds on the heap
/// ([`crate::heap`]; a leak grows them) and the C allocator's view (which
/// also counts its per-thread caches as in use).
fn memory_status() -> MemoryInfo {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    #[allow(unused_mut)]
    let mut info = MemoryInfo {
        vm_rss_kib: kib("VmRSS:"),
        rss_anon_kib: kib("RssAnon:"),
        heap_live_bytes: crate::heap::live_bytes(),
        heap_in_use_bytes: None,
        heap_free_bytes: None,
    };
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let m = unsafe { libc::mallinfo2() };
        info.heap_in_use_bytes = Some(m.uordblks);
        info.heap_free_bytes = Some(m.fordblks);
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_waits_above_the_limit_are_bad_requests() {
        assert_eq!(timeout(None).unwrap(), DEFAULT_GUEST_TIMEOUT);
        assert_eq!(
            timeout(Some(MAX_GUEST_TIMEOUT_MS)).unwrap(),
            Duration::from_millis(MAX_GUEST_TIMEOUT_MS)
        );
        let e = timeout(Some(MAX_GUEST_TIMEOUT_MS + 1)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest);
        let e = timeout(Some(u64::MAX)).unwrap_err();
        assert!(e.message.contains("above the limit"), "{}", e.message);
    }
}
