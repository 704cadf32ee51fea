//! Connectors attached to a running cell (`cellvm connect`) and detached
//! again (`cellvm disconnect`), seed 004's "connector overlay, then model
//! overlay" (docs/addons.md, "Connectors at run time"). Pure planning.
//!
//! Specification:
//! - `connect` places the connector with [`CellLayout::place_connector`] (its
//!   window from the connector pool, its pins) on a copy of the layout and
//!   builds an overlay adding its node under the root, labelled with its id,
//!   built by the base tree's builder; the overlay must apply to the cell's
//!   current tree.
//! - `disconnect` removes a connector that `connect` added and that has no
//!   add-on plugged in ([`AttachError::ConnectorOccupied`] otherwise; the
//!   caller unplugs first when forced); a connector of the cell file is
//!   refused ([`AttachError::BootTimeConnector`]).

use super::AttachError;
use crate::config::ConnectorConfig;
use crate::fdt::connector_node;
use crate::fdt::overlay::{build_overlay, ApplyError, Fragment, LiveTree};
use crate::layout::{CellLayout, ConnectorSlot};

/// A connector attached at run time (a committed [`ConnectPlan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectedConnector {
    /// Where it was placed.
    pub slot: ConnectorSlot,
    /// The overlay the guest applied.
    pub overlay: Vec<u8>,
    /// The node paths the overlay added.
    pub nodes: Vec<String>,
}

/// A planned connect: send [`overlay`](Self::overlay), then
/// [`commit`](Self::commit).
#[derive(Debug, Clone)]
pub struct ConnectPlan {
    /// What will be added.
    pub connected: ConnectedConnector,
    /// The cell's layout with the connector placed.
    pub layout: CellLayout,
    before: CellLayout,
}

impl ConnectPlan {
    /// Makes the connect part of the cell's state; fails, changing nothing,
    /// if `layout` changed since planning.
    pub fn commit(
        self,
        layout: &mut CellLayout,
        connected: &mut Vec<ConnectedConnector>,
    ) -> Result<(), AttachError> {
        if *layout != self.before {
            return Err(AttachError::StaleLayout {
                id: self.connected.slot.id,
            });
        }
        *layout = self.layout;
        connected.push(self.connected);
        Ok(())
    }
}

/// A planned disconnect: remove the overlay in the guest, then
/// [`commit`](Self::commit).
#[derive(Debug, Clone)]
pub struct DisconnectPlan {
    /// What goes.
    pub connected: ConnectedConnector,
    /// The cell's layout without the connector.
    pub layout: CellLayout,
    before: CellLayout,
}

impl DisconnectPlan {
    /// Makes the disconnect part of the cell's state; fails, changing
    /// nothing, if `layout` changed since planning.
    pub fn commit(
        self,
        layout: &mut CellLayout,
        connected: &mut Vec<ConnectedConnector>,
    ) -> Result<(), AttachError> {
        if *layout != self.before {
            return Err(AttachError::StaleLayout {
                id: self.connected.slot.id,
            });
        }
        *layout = self.layout;
        connected.retain(|c| c.slot.id != self.connected.slot.id);
        Ok(())
    }
}

/// Plans attaching connector `cfg` to a cell whose layout is `layout` and
/// whose current tree is `live`.
pub fn plan_connect(
    cfg: &ConnectorConfig,
    layout: &CellLayout,
    live: &LiveTree,
) -> Result<ConnectPlan, AttachError> {
    let id = cfg.id.clone();
    let mut next = layout.clone();
    let slot = next
        .place_connector(cfg)
        .map_err(|source| AttachError::Layout {
            id: id.clone(),
            source,
        })?;
    let node = connector_node(&slot).map_err(|source| AttachError::Fdt {
        id: id.clone(),
        source,
    })?;
    let overlay =
        build_overlay(&[Fragment::new("/", vec![node])]).map_err(|source| AttachError::Fdt {
            id: id.clone(),
            source,
        })?;
    let nodes = live
        .clone()
        .apply(&overlay, &format!("the overlay for connector {id}"))
        .map_err(|e| match e {
            ApplyError::NodeExists { path, .. } => AttachError::NodeExists {
                id: id.clone(),
                path,
            },
            source => AttachError::Overlay {
                id: id.clone(),
                source,
            },
        })?;
    Ok(ConnectPlan {
        connected: ConnectedConnector {
            slot,
            overlay,
            nodes,
        },
        layout: next,
        before: layout.clone(),
    })
}

/// Plans detaching connector `id`, which `connect` added (one of
/// `connected`).
pub fn plan_disconnect(
    id: &str,
    layout: &CellLayout,
    connected: &[ConnectedConnector],
) -> Result<DisconnectPlan, AttachError> {
    let Some(c) = connected.iter().find(|c| c.slot.id == id) else {
        return Err(match layout.connector(id) {
            Some(_) => AttachError::BootTimeConnector { id: id.to_string() },
            None => AttachError::NoSuchConnector {
                connector: id.to_string(),
            },
        });
    };
    if let Some(addon) = layout.connector(id).and_then(|s| s.addon.clone()) {
        return Err(AttachError::ConnectorOccupied {
            connector: id.to_string(),
            addon,
        });
    }
    let mut next = layout.clone();
    next.remove_connector(id)
        .map_err(|source| AttachError::Layout {
            id: id.to_string(),
            source,
        })?;
    Ok(DisconnectPlan {
        connected: c.clone(),
        layout: next,
        before: layout.clone(),
    })
}
