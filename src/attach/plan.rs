//! Attach and detach planning: placement on a copy of the layout, the
//! overlay, and the checks against the cell's current tree.

use super::{AttachError, AttachedDevice};
use crate::config::DeviceConfig;
use crate::fdt::overlay::{build_overlay_for_base, ApplyError, BaseReference, Fragment, LiveTree};
use crate::fdt::{pci_host_node, uart_node, virtio_mmio_node, FdtError, Node};
use crate::layout::{CellLayout, PlacedDevice};

/// A planned attachment: everything needed to attach the device, nothing
/// applied yet. Send [`overlay`](Self::overlay) to the guest, then
/// [`commit`](Self::commit).
#[derive(Debug, Clone)]
pub struct AttachPlan {
    /// The device id.
    pub id: String,
    /// The device planned.
    pub device: DeviceConfig,
    /// The cell's layout with the device placed (its slot is also in
    /// `virtio_mmio` / `pci_bridges` for those kinds).
    pub layout: CellLayout,
    /// Where the device was placed.
    pub slot: PlacedDevice,
    /// The overlay blob for the guest's `of_overlay_fdt_apply()`.
    pub overlay: Vec<u8>,
    /// Node paths the overlay adds to the cell's tree.
    pub nodes: Vec<String>,
    /// Base-tree nodes the overlay refers to by phandle (checked against
    /// the cell's tree).
    pub base_references: Vec<BaseReference>,
    /// The cell's tree with the overlay applied: the current tree once the
    /// plan is committed ([`Self::take_tree`]).
    tree: Option<LiveTree>,
    before: CellLayout,
    attached_before: Vec<String>,
}

impl AttachPlan {
    /// The cell's tree as it will be once this plan is committed (taken
    /// once), for a caller that keeps the current tree instead of
    /// rebuilding it for every attach ([`plan_on`]).
    pub fn take_tree(&mut self) -> Option<LiveTree> {
        self.tree.take()
    }

    /// Makes the attachment part of the cell's state: `layout` becomes
    /// [`AttachPlan::layout`] and the device joins `attached`. Fails, changing
    /// nothing, if `layout` or `attached` are not what the plan was made
    /// against (another change was committed in between).
    pub fn commit(
        self,
        layout: &mut CellLayout,
        attached: &mut Vec<AttachedDevice>,
    ) -> Result<(), AttachError> {
        ensure_fresh(
            &self.id,
            &self.before,
            &self.attached_before,
            layout,
            attached,
        )?;
        *layout = self.layout;
        attached.push(AttachedDevice {
            device: self.device,
            slot: self.slot,
            overlay: self.overlay,
            nodes: self.nodes,
        });
        Ok(())
    }
}

/// A planned detachment: the layout without the device. Remove the overlay
/// in the guest, then [`commit`](Self::commit).
#[derive(Debug, Clone)]
pub struct DetachPlan {
    /// The device id.
    pub id: String,
    /// The cell's layout with the device's reservations released (and its
    /// slot gone from `virtio_mmio` / `pci_bridges`).
    pub layout: CellLayout,
    /// Where the device was.
    pub slot: PlacedDevice,
    /// The overlay the guest applied for it.
    pub overlay: Vec<u8>,
    /// The node paths that overlay added.
    pub nodes: Vec<String>,
    before: CellLayout,
    attached_before: Vec<String>,
}

impl DetachPlan {
    /// Makes the detachment part of the cell's state; fails, changing
    /// nothing, if `layout` or `attached` changed since planning.
    pub fn commit(
        self,
        layout: &mut CellLayout,
        attached: &mut Vec<AttachedDevice>,
    ) -> Result<(), AttachError> {
        ensure_fresh(
            &self.id,
            &self.before,
            &self.attached_before,
            layout,
            attached,
        )?;
        *layout = self.layout;
        attached.retain(|d| d.id() != self.id);
        Ok(())
    }
}

/// A plan may only be committed against the state it was made from.
fn ensure_fresh(
    id: &str,
    before: &CellLayout,
    attached_before: &[String],
    layout: &CellLayout,
    attached: &[AttachedDevice],
) -> Result<(), AttachError> {
    if layout != before || ids(attached) != attached_before {
        return Err(AttachError::StaleLayout { id: id.to_string() });
    }
    Ok(())
}

fn ids(attached: &[AttachedDevice]) -> Vec<String> {
    attached.iter().map(|d| d.id().to_string()).collect()
}

/// The cell's current tree: `base_tree` with every attached device's overlay
/// applied in attach order.
pub fn current_tree(
    base_tree: &Node,
    attached: &[AttachedDevice],
) -> Result<LiveTree, AttachError> {
    let mut live =
        LiveTree::from_base(base_tree).map_err(|source| AttachError::CurrentTree { source })?;
    for d in attached {
        live = live
            .applied(&d.overlay, &format!("the overlay of attached {}", d.id()))
            .map_err(|source| AttachError::CurrentTree { source })?
            .0;
    }
    Ok(live)
}

/// Plans attaching `device` to a cell whose layout is `layout`, whose base
/// device tree (as booted) is `base_tree` and which has `attached` devices.
/// Nothing is changed: the result carries the new layout and the overlay.
pub fn plan(
    device: &DeviceConfig,
    layout: &CellLayout,
    base_tree: &Node,
    attached: &[AttachedDevice],
) -> Result<AttachPlan, AttachError> {
    let live = current_tree(base_tree, attached)?;
    plan_on(device, layout, base_tree, attached, live)
}

/// [`plan`] against `live`, the cell's current tree
/// (`current_tree(base_tree, attached)`), which the caller kept from the
/// previous plan ([`AttachPlan::take_tree`]) instead of rebuilding it: the
/// cost of planning then does not grow with the devices attached.
pub fn plan_on(
    device: &DeviceConfig,
    layout: &CellLayout,
    base_tree: &Node,
    attached: &[AttachedDevice],
    live: LiveTree,
) -> Result<AttachPlan, AttachError> {
    let id = device.id().to_string();
    if device.state() != crate::config::DeviceState::Okay {
        return Err(AttachError::NotInUse {
            id,
            state: device.state().as_str(),
        });
    }
    let fdt_err = |source: FdtError| AttachError::Fdt {
        id: id.clone(),
        source,
    };
    let mut next = layout.clone();
    let slot = next.place(device).map_err(|source| AttachError::Layout {
        id: id.clone(),
        source,
    })?;
    let fragment = match &slot {
        PlacedDevice::PciBridge(s) => Fragment::new("/", vec![pci_host_node(s).map_err(fdt_err)?]),
        PlacedDevice::VirtioMmio(s) => {
            Fragment::new("/", vec![virtio_mmio_node(s).map_err(fdt_err)?])
        }
        PlacedDevice::Uart(s) => {
            let isa =
                isa_path(base_tree).ok_or_else(|| AttachError::NoIsaBus { id: id.clone() })?;
            Fragment::new(isa, vec![uart_node(s).map_err(fdt_err)?])
        }
    };
    let overlay = build_overlay_for_base(base_tree, &[fragment]).map_err(fdt_err)?;
    for r in &overlay.base_references {
        let found = live.phandle(&r.path);
        if found != Some(r.phandle) {
            return Err(AttachError::PhandleMismatch {
                id,
                label: r.label.clone(),
                path: r.path.clone(),
                written: r.phandle,
                found,
            });
        }
    }
    let (live, nodes) = live
        .applied(&overlay.blob, &format!("the overlay for {id}"))
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
    Ok(AttachPlan {
        id,
        device: device.clone(),
        layout: next,
        slot,
        overlay: overlay.blob,
        nodes,
        base_references: overlay.base_references,
        tree: Some(live),
        before: layout.clone(),
        attached_before: ids(attached),
    })
}

/// Path of the base tree's ISA bus node (the root's child named `isa`, with
/// or without a unit address).
fn isa_path(base_tree: &Node) -> Option<String> {
    base_tree
        .children()
        .iter()
        .find(|c| c.name().split('@').next() == Some("isa"))
        .map(|c| format!("/{}", c.name()))
}

/// Plans detaching the attached device `id`: the layout with its address
/// and IOAPIC reservations released (and its slot gone). Nothing is changed.
pub fn plan_detach(
    id: &str,
    layout: &CellLayout,
    attached: &[AttachedDevice],
) -> Result<DetachPlan, AttachError> {
    let Some(dev) = attached.iter().find(|d| d.id() == id) else {
        return Err(match layout.id_user(id) {
            Some(_) => AttachError::BootTimeDevice { id: id.to_string() },
            None => AttachError::NotAttached { id: id.to_string() },
        });
    };
    let mut next = layout.clone();
    let removed = next.remove(id).map_err(|_| AttachError::LayoutMismatch {
        id: id.to_string(),
        owner: id.to_string(),
    })?;
    if removed != dev.slot {
        return Err(AttachError::LayoutMismatch {
            id: id.to_string(),
            owner: format!("{id} as attached"),
        });
    }
    Ok(DetachPlan {
        id: id.to_string(),
        layout: next,
        slot: dev.slot.clone(),
        overlay: dev.overlay.clone(),
        nodes: dev.nodes.clone(),
        before: layout.clone(),
        attached_before: ids(attached),
    })
}
