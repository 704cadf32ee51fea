//! Plugging an add-on board into a connector, and unplugging it, as one
//! unit: every device of the board placed, one overlay, one guest
//! acknowledgement (docs/addons.md). Pure planning: nothing is changed
//! until a plan is committed.
//!
//! Specification:
//! - The connector must exist and be empty.
//! - The board's devices are placed on the connector with
//!   [`CellLayout::place_on`]: pages of its window, its pins.
//! - The overlay has exactly one fragment, targeting the connector's node.
//!   It adds the node of each served device (built by the base tree's node
//!   builders, labelled with the device id, `-` written `_`, when that is a
//!   valid label) and every node of the user's overlay source.
//! - Each block of the overlay source must target the connector itself
//!   (`&j1`, `&connector` for whichever connector the board is plugged
//!   into, or `&{/connector-bus@...}`) and may only add nodes: a block
//!   targeting any other node, or setting a property of the connector, is
//!   refused at its line and column.
//! - References in the source resolve to labels of the cell's tree (by
//!   phandle, as for an attach) or of the overlay itself (the served
//!   devices', the source's own: `__local_fixups__`).
//! - The overlay must apply to the cell's current tree: no node it adds may
//!   exist already.
//! - Unplugging releases every reservation of the board's devices and
//!   empties the connector.

use super::{AttachError, AttachedDevice, ConnectedConnector};
use crate::config::AddonConfig;
use crate::fdt::dts::{self, SourceFragment, Target};
use crate::fdt::overlay::{build_overlay_for_base, ApplyError, Fragment, LiveTree};
use crate::fdt::{pci_host_node, uart_node, virtio_mmio_node, FdtError, Node};
use crate::layout::{CellLayout, PlacedDevice};

/// An add-on plugged into a connector (a committed [`PlugPlan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluggedAddon {
    /// The connector.
    pub connector: String,
    /// The board.
    pub addon: AddonConfig,
    /// Where each of its devices was placed, in file order.
    pub slots: Vec<PlacedDevice>,
    /// The overlay the guest applied.
    pub overlay: Vec<u8>,
    /// The node paths the overlay added.
    pub nodes: Vec<String>,
}

/// A planned plug: send [`overlay`](Self::overlay), then
/// [`commit`](Self::commit).
#[derive(Debug, Clone)]
pub struct PlugPlan {
    /// What will be plugged, and where.
    pub plugged: PluggedAddon,
    /// The cell's layout with the board's devices placed.
    pub layout: CellLayout,
    before: CellLayout,
}

impl PlugPlan {
    /// Makes the plug part of the cell's state; fails, changing nothing, if
    /// `layout` changed since planning.
    pub fn commit(
        self,
        layout: &mut CellLayout,
        plugged: &mut Vec<PluggedAddon>,
    ) -> Result<(), AttachError> {
        if *layout != self.before {
            return Err(AttachError::StaleLayout {
                id: self.plugged.addon.name,
            });
        }
        *layout = self.layout;
        plugged.push(self.plugged);
        Ok(())
    }
}

/// A planned unplug: remove the overlay in the guest, then
/// [`commit`](Self::commit).
#[derive(Debug, Clone)]
pub struct UnplugPlan {
    /// What is plugged now.
    pub plugged: PluggedAddon,
    /// The cell's layout without the board.
    pub layout: CellLayout,
    before: CellLayout,
}

impl UnplugPlan {
    /// Makes the unplug part of the cell's state; fails, changing nothing,
    /// if `layout` changed since planning.
    pub fn commit(
        self,
        layout: &mut CellLayout,
        plugged: &mut Vec<PluggedAddon>,
    ) -> Result<(), AttachError> {
        if *layout != self.before {
            return Err(AttachError::StaleLayout {
                id: self.plugged.addon.name,
            });
        }
        *layout = self.layout;
        plugged.retain(|p| p.connector != self.plugged.connector);
        Ok(())
    }
}

/// The cell's current tree: `base_tree` with the overlays of `attached`
/// devices, `connected` connectors and `plugged` add-ons applied.
pub fn live_tree(
    base_tree: &Node,
    attached: &[AttachedDevice],
    connected: &[ConnectedConnector],
    plugged: &[PluggedAddon],
) -> Result<LiveTree, AttachError> {
    let mut live = super::current_tree(base_tree, attached)?;
    for c in connected {
        live.apply(
            &c.overlay,
            &format!("the overlay of connector {}", c.slot.id),
        )
        .map_err(|source| AttachError::CurrentTree { source })?;
    }
    for p in plugged {
        live.apply(
            &p.overlay,
            &format!("the overlay of add-on {}", p.addon.name),
        )
        .map_err(|source| AttachError::CurrentTree { source })?;
    }
    Ok(live)
}

/// The label an add-on's overlay may use for whichever connector it is
/// plugged into (as upstream's connector proposals export a generic symbol):
/// `&connector { ... };` makes a board portable across connectors.
pub const ANY_CONNECTOR: &str = "connector";

/// The label of a served device's node: its id with `-` written `_`, if
/// that is a valid label.
pub fn device_label(id: &str) -> Option<String> {
    let label = id.replace('-', "_");
    let ok = label
        .as_bytes()
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    ok.then_some(label)
}

/// Plans plugging `addon` into `connector` of a cell whose layout is
/// `layout`, whose base tree is `base_tree` and whose current tree is
/// `live`.
pub fn plan_plug(
    addon: &AddonConfig,
    connector: &str,
    layout: &CellLayout,
    base_tree: &Node,
    live: &LiveTree,
) -> Result<PlugPlan, AttachError> {
    let name = addon.name.clone();
    let slot = layout
        .connector(connector)
        .ok_or_else(|| AttachError::NoSuchConnector {
            connector: connector.to_string(),
        })?;
    if let Some(other) = &slot.addon {
        return Err(AttachError::ConnectorOccupied {
            connector: connector.to_string(),
            addon: other.clone(),
        });
    }
    let source =
        dts::parse_overlay_source(&addon.overlay_name, &addon.overlay_text).map_err(|e| {
            AttachError::OverlaySource {
                message: dts::located(&e),
            }
        })?;
    let connector_path = slot.path();
    let mut next = layout.clone();
    let mut slots = Vec::new();
    let mut nodes = Vec::new();
    for dev in &addon.devices {
        let placed = next
            .place_on(connector, dev)
            .map_err(|source| AttachError::Layout {
                id: dev.id().to_string(),
                source,
            })?;
        let node = match &placed {
            PlacedDevice::VirtioMmio(s) => virtio_mmio_node(s),
            PlacedDevice::PciBridge(s) => pci_host_node(s),
            PlacedDevice::Uart(s) => uart_node(s),
        };
        let mut node = node.map_err(|source| AttachError::Fdt {
            id: dev.id().to_string(),
            source,
        })?;
        node.set_label(device_label(dev.id()));
        nodes.push(node);
        slots.push(placed);
    }
    next.set_addon(connector, Some(name.clone()))
        .map_err(|source| AttachError::Layout {
            id: name.clone(),
            source,
        })?;
    for frag in &source {
        nodes.extend(user_nodes(addon, frag, connector, &connector_path)?);
    }
    let fragment = Fragment::new(connector_path, nodes);
    // The served nodes come from the base tree's builders: what fails here
    // is the user's source (an unknown label, a name or label used twice).
    let source_err = |e: FdtError| AttachError::OverlaySource {
        message: format!("{}: {e}", addon.overlay_name),
    };
    let overlay = build_overlay_for_base(base_tree, &[fragment]).map_err(source_err)?;
    for r in &overlay.base_references {
        let found = live.phandle(&r.path);
        if found != Some(r.phandle) {
            return Err(AttachError::PhandleMismatch {
                id: name,
                label: r.label.clone(),
                path: r.path.clone(),
                written: r.phandle,
                found,
            });
        }
    }
    let mut check = live.clone();
    let added = check
        .apply(&overlay.blob, &format!("the overlay of add-on {name}"))
        .map_err(|e| match e {
            ApplyError::NodeExists { path, .. } => AttachError::NodeExists {
                id: name.clone(),
                path,
            },
            source => AttachError::Overlay {
                id: name.clone(),
                source,
            },
        })?;
    Ok(PlugPlan {
        plugged: PluggedAddon {
            connector: connector.to_string(),
            addon: addon.clone(),
            slots,
            overlay: overlay.blob,
            nodes: added,
        },
        layout: next,
        before: layout.clone(),
    })
}

/// The nodes one block of the overlay source adds under the connector;
/// refuses a block aimed elsewhere or setting the connector's properties.
fn user_nodes(
    addon: &AddonConfig,
    frag: &SourceFragment,
    connector: &str,
    connector_path: &str,
) -> Result<Vec<Node>, AttachError> {
    let at = format!("{}:{}:{}", addon.overlay_name, frag.line, frag.column);
    let on_connector = match &frag.target {
        Target::Label(l) => l == connector || l == ANY_CONNECTOR,
        Target::Path(p) => p.trim_end_matches('/') == connector_path,
    };
    if !on_connector {
        let target = match &frag.target {
            Target::Label(l) => format!("&{l}"),
            Target::Path(p) => format!("&{{{p}}}"),
        };
        return Err(AttachError::OverlaySource {
            message: format!(
                "{at}: {target} is not connector {connector}: an add-on's overlay adds nodes \
                 under its connector (&{connector} or &{{{connector_path}}})"
            ),
        });
    }
    if let Some(p) = frag.body.properties().first() {
        return Err(AttachError::OverlaySource {
            message: format!(
                "{at}: sets property {} of connector {connector}: an add-on's overlay only \
                 adds nodes under it",
                p.name
            ),
        });
    }
    Ok(frag.body.children().to_vec())
}

/// Plans unplugging whatever is plugged into `connector`.
pub fn plan_unplug(
    connector: &str,
    layout: &CellLayout,
    plugged: &[PluggedAddon],
) -> Result<UnplugPlan, AttachError> {
    if layout.connector(connector).is_none() {
        return Err(AttachError::NoSuchConnector {
            connector: connector.to_string(),
        });
    }
    let Some(p) = plugged.iter().find(|p| p.connector == connector) else {
        return Err(AttachError::NothingPlugged {
            connector: connector.to_string(),
        });
    };
    let mut next = layout.clone();
    for slot in &p.slots {
        next.remove(slot.id())
            .map_err(|_| AttachError::LayoutMismatch {
                id: slot.id().to_string(),
                owner: format!("{} on connector {connector}", slot.id()),
            })?;
    }
    next.set_addon(connector, None)
        .map_err(|source| AttachError::Layout {
            id: p.addon.name.clone(),
            source,
        })?;
    Ok(UnplugPlan {
        plugged: p.clone(),
        layout: next,
        before: layout.clone(),
    })
}
