//! Runtime attachment: hardware added to (and removed from) a running cell.
//!
//! An attach is planned before anything happens to the cell:
//!
//! 1. a [`DeviceConfig`] says what to attach: the same type, read and
//!    validated by the same code ([`crate::config::load_device`]), as a
//!    device table of a cell file;
//! 2. [`plan()`] places it on a *clone* of the cell's
//!    [`CellLayout`](crate::layout::CellLayout) with
//!    [`CellLayout::place`](crate::layout::CellLayout::place), the method
//!    that places boot-time devices, builds its device-tree overlay from the
//!    same node builders as the base tree, and checks that the overlay
//!    applies cleanly to the cell's current tree (the base tree plus every
//!    earlier attachment's overlay);
//! 3. the caller sends [`AttachPlan::overlay`] to the guest and, once the
//!    guest has applied it, [`AttachPlan::commit`]s the plan: only then do the
//!    cell's layout and list of [`AttachedDevice`]s change.
//!
//! [`plan_detach`] is the reverse: the layout with the device's reservations
//! released, committed with [`DetachPlan::commit`].
//!
//! A failed plan changes nothing; every failure is an [`AttachError`]. The
//! overlay format and the checks are described in `docs/overlays.md`.

mod addon;
mod connector;
mod plan;
mod state;
mod tree_cache;

#[cfg(test)]
mod addon_tests;
#[cfg(test)]
mod connector_tests;
#[cfg(test)]
mod tests;

pub use addon::{
    device_label, live_tree, plan_plug, plan_unplug, PlugPlan, PluggedAddon, UnplugPlan,
};
pub use connector::{
    plan_connect, plan_disconnect, ConnectPlan, ConnectedConnector, DisconnectPlan,
};
pub use plan::{current_tree, plan, plan_detach, plan_on, AttachPlan, DetachPlan};
pub use state::{plan_state, StatePlan};
pub use tree_cache::TreeCache;

use crate::config::DeviceConfig;
use crate::fdt::overlay::ApplyError;
use crate::fdt::FdtError;
use crate::layout::{LayoutError, PlacedDevice};
use thiserror::Error;

/// A device attached at runtime (a committed [`AttachPlan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedDevice {
    /// What was asked for: the same device table a cell file takes.
    pub device: DeviceConfig,
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
    /// The layout refused the device: its id, bus, addresses, ports or
    /// IOAPIC pins collide with the cell's, or a pool is full.
    #[error("{id}: {source}")]
    Layout {
        /// The requested device.
        id: String,
        /// What the layout said (names both sides of a collision).
        #[source]
        source: LayoutError,
    },
    /// Attach adds a device in use: `state` must be `okay`.
    #[error("{id}: state = \"{state}\" is for devices in a cell file; an attach adds a device in use (leave state out or say \"okay\")")]
    NotInUse {
        /// The requested device.
        id: String,
        /// Its state.
        state: &'static str,
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
    /// The cell has no connector of this id.
    #[error("the cell has no connector {connector:?}")]
    NoSuchConnector {
        /// The connector asked for.
        connector: String,
    },
    /// A connector of the cell file cannot be disconnected.
    #[error("connector {id} is in the cell file and cannot be disconnected")]
    BootTimeConnector {
        /// The connector.
        id: String,
    },
    /// Something is plugged into the connector already.
    #[error("connector {connector} already has add-on {addon} plugged in; unplug it first")]
    ConnectorOccupied {
        /// The connector.
        connector: String,
        /// What is plugged in.
        addon: String,
    },
    /// Nothing is plugged into the connector.
    #[error("nothing is plugged into connector {connector}")]
    NothingPlugged {
        /// The connector.
        connector: String,
    },
    /// The add-on's overlay source is invalid (`file:line:column: ...`).
    #[error("{message}")]
    OverlaySource {
        /// What is wrong, and where.
        message: String,
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
            AttachError::BootTimeDevice { .. }
            | AttachError::NotInUse { .. }
            | AttachError::OverlaySource { .. }
            | AttachError::BootTimeConnector { .. } => AttachErrorKind::Invalid,
            AttachError::ConnectorOccupied { .. }
            | AttachError::Layout { .. }
            | AttachError::NodeExists { .. }
            | AttachError::StaleLayout { .. } => AttachErrorKind::Conflict,
            AttachError::NotAttached { .. }
            | AttachError::NoSuchConnector { .. }
            | AttachError::NothingPlugged { .. } => AttachErrorKind::NotFound,
            AttachError::NoIsaBus { .. }
            | AttachError::Fdt { .. }
            | AttachError::Overlay { .. }
            | AttachError::CurrentTree { .. }
            | AttachError::PhandleMismatch { .. }
            | AttachError::LayoutMismatch { .. } => AttachErrorKind::Internal,
        }
    }
}
