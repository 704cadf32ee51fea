//! The running cell as the control API sees it: status and device list now;
//! attach and detach are served here once the channel and overlay planner
//! are wired in.

use crate::api::protocol::{ApiError, ErrorKind, Request, API_VERSION};
use crate::api::ControlTarget;
use crate::layout::CellLayout;
use serde_json::{json, Value};
use std::sync::Mutex;
use std::time::Instant;

/// Shared state of a running cell.
pub struct CellRuntime {
    name: String,
    vcpus: u8,
    started: Instant,
    layout: Mutex<CellLayout>,
}

impl CellRuntime {
    /// State for the cell `name`.
    pub fn new(name: String, vcpus: u8, layout: CellLayout) -> Self {
        CellRuntime {
            name,
            vcpus,
            started: Instant::now(),
            layout: Mutex::new(layout),
        }
    }

    fn devices(&self) -> Value {
        let layout = self.layout.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = vec![json!({
            "id": "console", "kind": "uart", "state": "boot",
            "port": crate::layout::consts::UART_PORT, "irq": crate::layout::consts::UART_IRQ,
        })];
        for r in layout.map.entries() {
            if r.owner.starts_with("memory[") {
                continue;
            }
            out.push(json!({
                "id": r.owner, "state": "boot",
                "base": format!("{:#x}", r.window.base),
                "size": format!("{:#x}", r.window.size),
            }));
        }
        for v in &layout.virtio_mmio {
            out.push(json!({"id": v.id, "kind": "virtio-mmio", "state": "boot", "irq": v.irq}));
        }
        for b in &layout.pci_bridges {
            out.push(json!({
                "id": b.id, "kind": "pci-bridge", "state": "boot",
                "buses": format!("{:02x}-{:02x}", b.bus_start, b.bus_end),
                "intx": b.intx,
            }));
        }
        Value::Array(out)
    }
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
                "agent": "unavailable",
            })),
            Request::Devices {} => Ok(self.devices()),
            Request::Attach { .. } | Request::Detach { .. } => Err(ApiError::new(
                ErrorKind::Unsupported,
                "runtime attach/detach is not available in this build yet (needs the guest channel)",
            )),
        }
    }
}
