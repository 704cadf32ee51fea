//! Planning a change of a boot-time device's state at run time (enable a
//! `reserved`/`disabled` device, disable an `okay` one): the overlay that
//! sets the `status` of the device's existing node, checked against the
//! cell's current tree. Pure: nothing is changed.
//!
//! Specification:
//! - The overlay has one fragment targeting the device's node (the
//!   virtio-mmio node, the PCI host bridge node or the UART under the ISA
//!   bus, where the base tree put it) and sets only its `status`; it adds no
//!   node and touches no other node.
//! - It must apply to the cell's current tree (base plus the overlays of
//!   attached devices); the node must be there.

use super::{current_tree, AttachError, AttachedDevice};
use crate::config::DeviceState;
use crate::fdt::overlay::{build_overlay_for_base, Fragment};
use crate::fdt::{pci_host_node, uart_node, virtio_mmio_node, Node, Property};
use crate::layout::PlacedDevice;

/// A planned state change: send [`overlay`](Self::overlay) to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePlan {
    /// The device id.
    pub id: String,
    /// The path of the device's node.
    pub path: String,
    /// The state the overlay sets.
    pub state: DeviceState,
    /// The overlay blob.
    pub overlay: Vec<u8>,
}

/// The path of `slot`'s node in a tree built from `base_tree`.
fn node_path(base_tree: &Node, slot: &PlacedDevice) -> Result<String, AttachError> {
    let id = slot.id().to_string();
    let fdt_err = |source| AttachError::Fdt {
        id: id.clone(),
        source,
    };
    Ok(match slot {
        PlacedDevice::VirtioMmio(s) => format!("/{}", virtio_mmio_node(s).map_err(fdt_err)?.name()),
        PlacedDevice::PciBridge(s) => format!("/{}", pci_host_node(s).map_err(fdt_err)?.name()),
        PlacedDevice::Uart(s) => {
            let isa = base_tree
                .children()
                .iter()
                .find(|c| c.name().split('@').next() == Some("isa"))
                .ok_or_else(|| AttachError::NoIsaBus { id: id.clone() })?;
            format!("/{}/{}", isa.name(), uart_node(s).map_err(fdt_err)?.name())
        }
    })
}

/// Plans setting the `status` of the boot-time device placed at `slot` to
/// `state`, for a cell whose base tree is `base_tree` and which has
/// `attached` devices.
pub fn plan_state(
    slot: &PlacedDevice,
    state: DeviceState,
    base_tree: &Node,
    attached: &[AttachedDevice],
) -> Result<StatePlan, AttachError> {
    let id = slot.id().to_string();
    let path = node_path(base_tree, slot)?;
    let fragment = Fragment::set_properties(
        path.clone(),
        vec![Property::string("status", state.as_str())],
    );
    let overlay =
        build_overlay_for_base(base_tree, &[fragment]).map_err(|source| AttachError::Fdt {
            id: id.clone(),
            source,
        })?;
    let mut live = current_tree(base_tree, attached)?;
    live.apply(
        &overlay.blob,
        &format!("the {} overlay for {id}", state.as_str()),
    )
    .map_err(|source| AttachError::Overlay {
        id: id.clone(),
        source,
    })?;
    Ok(StatePlan {
        id,
        path,
        state,
        overlay: overlay.blob,
    })
}
