//! Runtime attachment: hardware added to (and removed from) a running cell.
//!
//! An attach is planned before anything happens to the cell:
//!
//! 1. a [`DeviceRequest`] (built in code, or read from a small TOML/JSON
//!    description file with [`DeviceRequest::from_toml_str`] /
//!    [`DeviceRequest::from_json_str`]) says what to attach;
//! 2. [`plan()`] validates it, places it on a *clone* of the cell's
//!    [`CellLayout`] (addresses and IOAPIC pins through the same
//!    [`AddressMap`](crate::layout::AddressMap) and
//!    [`IrqAllocator`](crate::layout::IrqAllocator) as at boot), builds its
//!    device-tree overlay from the same node builders as the base tree, and
//!    checks that the overlay applies cleanly to the cell's current tree (the
//!    base tree plus every earlier attachment's overlay);
//! 3. the caller sends [`AttachPlan::overlay`] to the guest and, once the
//!    guest has applied it, [`AttachPlan::commit`]s the plan: only then do the
//!    cell's layout and list of [`AttachedDevice`]s change.
//!
//! [`plan_detach`] is the reverse: the layout with the device's reservations
//! released, committed with [`DetachPlan::commit`].
//!
//! A failed plan changes nothing; every failure is an [`AttachError`]. The
//! overlay format and the checks are described in `docs/overlays.md`.

mod description;
mod plan;

#[cfg(test)]
mod tests;

pub use description::DescriptionError;
pub use plan::{current_tree, plan, plan_detach, same_layout, AttachPlan, DetachPlan};

use crate::config::{PciDeviceConfig, PciHostKind, VirtioBackendConfig, VirtioKind, Window};
use crate::fdt::overlay::ApplyError;
use crate::fdt::FdtError;
use crate::layout::{LayoutError, PciBridgeSlot, VirtioMmioSlot};
use thiserror::Error;

/// A device to attach to a running cell.
///
/// Optional placements (`None`) are allocated from the cell's layout the
/// same way as for a device configured at boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceRequest {
    /// A generic PCI host bridge (ECAM or CAM) with functions behind it.
    PciBridge {
        /// Unique device id (`[A-Za-z0-9_-]`, 1-32 characters).
        id: String,
        /// ECAM or CAM.
        kind: PciHostKind,
        /// First bus number; must differ from every other bridge's.
        bus_start: u8,
        /// Last bus number (>= `bus_start`).
        bus_end: u8,
        /// Fixed configuration-space base (below 4 GiB), or allocated.
        config_base: Option<u64>,
        /// 32-bit MMIO window: fixed, or (with `base` 0) only a size, or
        /// allocated (16 MiB) when `None`. As in [`crate::config::PciBridgeConfig`].
        mmio32: Option<Window>,
        /// Optional 64-bit prefetchable window: fixed, or (with `base` 0)
        /// allocated with that size.
        mmio64: Option<Window>,
        /// PCI functions on the bridge's first bus.
        devices: Vec<PciDeviceConfig>,
    },
    /// A virtio-mmio transport.
    VirtioMmio {
        /// Unique device id.
        id: String,
        /// Device kind.
        kind: VirtioKind,
        /// Fixed MMIO base (page aligned, inside the virtio-mmio window), or allocated.
        base: Option<u64>,
        /// Fixed IOAPIC pin, or allocated.
        irq: Option<u32>,
        /// Backend settings (docs/virtio.md).
        backend: VirtioBackendConfig,
    },
    /// A 16550 UART at an I/O port, under the base tree's ISA bus.
    Uart {
        /// Unique device id.
        id: String,
        /// I/O port base (8 ports, 8-aligned), or the first free of 0x2f8,
        /// 0x3e8, 0x2e8.
        port: Option<u16>,
        /// IOAPIC pin, or 3 if free, else allocated.
        irq: Option<u32>,
    },
}

impl DeviceRequest {
    /// The device id.
    pub fn id(&self) -> &str {
        match self {
            DeviceRequest::PciBridge { id, .. }
            | DeviceRequest::VirtioMmio { id, .. }
            | DeviceRequest::Uart { id, .. } => id,
        }
    }

    /// The kind as written in description files: `pci-bridge`,
    /// `virtio-mmio` or `uart`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            DeviceRequest::PciBridge { .. } => "pci-bridge",
            DeviceRequest::VirtioMmio { .. } => "virtio-mmio",
            DeviceRequest::Uart { .. } => "uart",
        }
    }
}

/// A placed UART.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UartSlot {
    /// Device id.
    pub id: String,
    /// First of its 8 I/O ports.
    pub port: u16,
    /// IOAPIC pin (edge rising).
    pub irq: u32,
}

/// Where an attached device was placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacedDevice {
    /// A PCI host bridge.
    PciBridge(PciBridgeSlot),
    /// A virtio-mmio transport.
    VirtioMmio(VirtioMmioSlot),
    /// A UART.
    Uart(UartSlot),
}

impl PlacedDevice {
    /// The device id.
    pub fn id(&self) -> &str {
        match self {
            PlacedDevice::PciBridge(s) => &s.id,
            PlacedDevice::VirtioMmio(s) => &s.id,
            PlacedDevice::Uart(s) => &s.id,
        }
    }
}

/// A device attached at runtime (a committed [`AttachPlan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedDevice {
    /// What was asked for.
    pub request: DeviceRequest,
    /// Where it was placed.
    pub slot: PlacedDevice,
    /// The overlay the guest applied.
    pub overlay: Vec<u8>,
    /// The node paths the overlay added.
    pub nodes: Vec<String>,
}

impl AttachedDevice {
    /// The device id.
    pub fn id(&self) -> &str {
        self.slot.id()
    }
}

/// Broad categories of [`AttachError`], for callers that map errors to
/// protocol codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachErrorKind {
    /// The request or description itself is invalid.
    Invalid,
    /// The request collides with something already in the cell.
    Conflict,
    /// No such device.
    NotFound,
    /// cellvm's own state is inconsistent (a bug).
    Internal,
}

/// Why a device cannot be attached or detached.
#[derive(Debug, Error)]
pub enum AttachError {
    /// A description file is invalid.
    #[error("{0}")]
    Description(#[from] DescriptionError),
    /// A request breaks a rule (the field is named as in description files).
    #[error("{id}: {field}: {message}")]
    InvalidRequest {
        /// Device id (as given).
        id: String,
        /// The offending field, e.g. `mmio32.base` or `device[1].function`.
        field: String,
        /// The rule, and the value that broke it.
        message: String,
    },
    /// The id is already taken.
    #[error("id {id:?} is already used by {other}")]
    DuplicateId {
        /// The requested id.
        id: String,
        /// Who has it ("a boot-time virtio-mmio device", ...).
        other: String,
    },
    /// Another bridge already starts at this bus.
    #[error(
        "{id}: bus {bus} is already the first bus of pci bridge {other}; \
         host bridges need distinct bus_start values"
    )]
    BusCollision {
        /// The requested bridge.
        id: String,
        /// The bus number.
        bus: u8,
        /// The bridge that has it.
        other: String,
    },
    /// A fixed IOAPIC pin is taken.
    #[error("IOAPIC pin {pin} for {what} is already used by {owner}")]
    IrqTaken {
        /// The requesting owner (`virtio-mmio hot1`).
        what: String,
        /// The pin.
        pin: u32,
        /// Its current owner.
        owner: String,
    },
    /// A UART's I/O ports overlap another device's.
    #[error("{what} at ports {port:#x}..{end:#x} collides with {other}")]
    PortCollision {
        /// The requesting owner (`uart hot2`).
        what: String,
        /// First port.
        port: u16,
        /// One past the last port.
        end: u32,
        /// The device holding the ports.
        other: String,
    },
    /// No standard UART port is free.
    #[error("no free UART port for {id} (0x2f8, 0x3e8 and 0x2e8 are taken); give one")]
    NoFreePort {
        /// The requested UART.
        id: String,
    },
    /// The layout refused an address or IRQ (collision, exhausted pool).
    #[error("{id}: {source}")]
    Layout {
        /// The requested device.
        id: String,
        /// What the layout said (names both sides of a collision).
        #[source]
        source: LayoutError,
    },
    /// The base tree has no ISA bus for a UART.
    #[error("{id}: the base tree has no isa bus node to put a UART under")]
    NoIsaBus {
        /// The requested UART.
        id: String,
    },
    /// The overlay could not be built.
    #[error("building the overlay for {id}: {source}")]
    Fdt {
        /// The requested device.
        id: String,
        /// The device-tree error.
        #[source]
        source: FdtError,
    },
    /// The overlay would add a node that is already in the cell's tree.
    #[error("the overlay for {id} adds {path}, which is already in the cell's tree")]
    NodeExists {
        /// The requested device.
        id: String,
        /// The node.
        path: String,
    },
    /// The overlay does not apply to the cell's current tree.
    #[error("the overlay for {id} does not apply to the cell's tree: {source}")]
    Overlay {
        /// The requested device.
        id: String,
        /// Why.
        #[source]
        source: ApplyError,
    },
    /// The base tree plus the earlier overlays does not form a valid tree.
    #[error("the cell's current tree cannot be rebuilt: {source}")]
    CurrentTree {
        /// Why.
        #[source]
        source: ApplyError,
    },
    /// A phandle written into the overlay is not the one the cell's tree has.
    #[error(
        "{id}: the overlay refers to &{label} ({path}) as phandle {written}, \
         but the cell's tree has {}",
        found.map_or_else(|| "no phandle there".to_string(), |p| format!("phandle {p}"))
    )]
    PhandleMismatch {
        /// The requested device.
        id: String,
        /// The label.
        label: String,
        /// The labelled node's path.
        path: String,
        /// The phandle written.
        written: u32,
        /// The phandle in the tree, if any.
        found: Option<u32>,
    },
    /// Boot-time devices are part of the base tree and cannot be detached.
    #[error("{id} was configured at boot and cannot be detached")]
    BootTimeDevice {
        /// The device.
        id: String,
    },
    /// No attached device has this id.
    #[error("no attached device has id {id:?}")]
    NotAttached {
        /// The id asked for.
        id: String,
    },
    /// The layout does not hold a reservation an attached device should have.
    #[error(
        "{id}: the layout has no reservation for {owner}; it does not match the attached devices"
    )]
    LayoutMismatch {
        /// The device.
        id: String,
        /// The missing owner.
        owner: String,
    },
    /// The layout changed between planning and committing.
    #[error("the plan for {id} was made against a different layout or device list; plan again")]
    StaleLayout {
        /// The device.
        id: String,
    },
}

impl AttachError {
    /// The error's category.
    pub fn kind(&self) -> AttachErrorKind {
        match self {
            AttachError::Description(_)
            | AttachError::InvalidRequest { .. }
            | AttachError::BootTimeDevice { .. } => AttachErrorKind::Invalid,
            AttachError::DuplicateId { .. }
            | AttachError::BusCollision { .. }
            | AttachError::IrqTaken { .. }
            | AttachError::PortCollision { .. }
            | AttachError::NoFreePort { .. }
            | AttachError::Layout { .. }
            | AttachError::NodeExists { .. }
            | AttachError::StaleLayout { .. } => AttachErrorKind::Conflict,
            AttachError::NotAttached { .. } => AttachErrorKind::NotFound,
            AttachError::NoIsaBus { .. }
            | AttachError::Fdt { .. }
            | AttachError::Overlay { .. }
            | AttachError::CurrentTree { .. }
            | AttachError::PhandleMismatch { .. }
            | AttachError::LayoutMismatch { .. } => AttachErrorKind::Internal,
        }
    }
}
