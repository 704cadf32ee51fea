//! The running cell as the control API sees it: status, the device list,
//! and runtime attach/detach (delegated to [`super::hotplug::Hotplug`]).

use super::hotplug::{Hotplug, DEFAULT_GUEST_TIMEOUT};
use crate::api::protocol::{ApiError, Request, API_VERSION};
use crate::api::ControlTarget;
use crate::layout::consts;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Shared state of a running cell.
pub struct CellRuntime {
    name: String,
    vcpus: u8,
    started: Instant,
    hotplug: Arc<Hotplug>,
}

impl CellRuntime {
    /// State for the cell `name`.
    pub fn new(name: String, vcpus: u8, hotplug: Arc<Hotplug>) -> Self {
        CellRuntime {
            name,
            vcpus,
            started: Instant::now(),
            hotplug,
        }
    }

    fn devices(&self) -> Value {
        let layout = self.hotplug.layout();
        let attached = self.hotplug.attached();
        let attached_ids: Vec<&str> = attached.iter().filter_map(|d| d["id"].as_str()).collect();
        let mut out = vec![json!({
            "id": "console", "kind": "uart", "state": "boot",
            "port": format!("{:#x}", consts::UART_PORT), "irq": consts::UART_IRQ,
        })];
        for (id, base, size) in [
            (
                "debug-exit",
                consts::DEBUG_EXIT_BASE,
                consts::PLATFORM_DEVICE_SIZE,
            ),
            (
                "boot-timer",
                consts::BOOT_TIMER_BASE,
                consts::PLATFORM_DEVICE_SIZE,
            ),
            ("channel", consts::CHANNEL_BASE, consts::CHANNEL_SIZE),
        ] {
            out.push(json!({
                "id": id, "kind": "platform", "state": "boot",
                "base": format!("{base:#x}"), "size": format!("{size:#x}"),
            }));
        }
        for v in layout
            .virtio_mmio
            .iter()
            .filter(|v| !attached_ids.contains(&v.id.as_str()))
        {
            out.push(json!({
                "id": v.id, "kind": "virtio-mmio", "state": "boot",
                "base": format!("{:#x}", v.window.base), "irq": v.irq,
            }));
        }
        for b in layout
            .pci_bridges
            .iter()
            .filter(|b| !attached_ids.contains(&b.id.as_str()))
        {
            out.push(json!({
                "id": b.id, "kind": "pci-bridge", "state": "boot",
                "config": format!("{:#x}+{:#x}", b.config.base, b.config.size),
                "buses": format!("{:02x}-{:02x}", b.bus_start, b.bus_end),
                "intx": b.intx,
            }));
        }
        out.extend(attached);
        Value::Array(out)
    }
}

fn timeout(ms: Option<u64>) -> Duration {
    ms.map_or(DEFAULT_GUEST_TIMEOUT, Duration::from_millis)
}

impl ControlTarget for CellRuntime {
    fn handle(&self, request: Request) -> Result<Value, ApiError> {
        match request {
            Request::Status {} => Ok(json!({
                "name": self.name,
                "state": "running",
                "vcpus": self.vcpus,
                "uptime_ms": self.started.elapsed().as_millis() as u64,
                "api_version": API_VERSION,
                "agent": self.hotplug.agent(),
                "memory": memory_status(),
            })),
            Request::Devices {} => Ok(self.devices()),
            Request::Attach { device, timeout_ms } => {
                self.hotplug.attach(&device, timeout(timeout_ms))
            }
            Request::Detach {
                id,
                force,
                timeout_ms,
            } => self.hotplug.detach(&id, force, timeout(timeout_ms)),
        }
    }
}

/// cellvm's own memory, for `cellvm status`: the process's resident set
/// (guest RAM included), the bytes Rust code holds on the heap
/// ([`crate::heap`]; a leak grows them) and the C allocator's view (which
/// also counts its per-thread caches as in use).
fn memory_status() -> Value {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    let mut v = json!({
        "vm_rss_kib": kib("VmRSS:"),
        "rss_anon_kib": kib("RssAnon:"),
        "heap_live_bytes": crate::heap::live_bytes(),
    });
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let info = unsafe { libc::mallinfo2() };
        v["heap_in_use_bytes"] = json!(info.uordblks);
        v["heap_free_bytes"] = json!(info.fordblks);
    }
    v
}
