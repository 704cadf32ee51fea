//! Boot-time devices of a running cell and their state: `enable` and
//! `disable` at run time (`cellvm enable|disable CELL ID`).
//!
//! Specification:
//! - Every device of the cell file is a [`BootDevice`]: its config, its
//!   slot in the layout (reserved whatever its state), the state its guest
//!   sees, and its model while it is `okay`.
//! - **Enable** (`reserved`/`disabled` → `okay`): claim its backing
//!   resource (an image lock), build and start its model, then ask the
//!   guest: apply the overlay that sets the node's status to `okay`
//!   (`attach::plan_state`), or remove the overlay that disabled it if it
//!   was `okay` at boot. On the guest's ACK the device is `okay`; on a NAK,
//!   a timeout or no agent, the model is discarded and the claim released:
//!   nothing changed.
//! - **Disable** (`okay` → `reserved`): ask the guest first (the overlay
//!   setting `status = "reserved"`, or removing the one that enabled it),
//!   and only on its ACK remove the model and release the claim. If the
//!   guest refuses or does not answer, everything stays, unless `force`:
//!   then the host side goes anyway (the guest's driver may still be bound
//!   to a device that no longer answers).
//! - Enabling an `okay` device or disabling one that is not is a
//!   `conflict`; an id that is not a boot-time device is `not_found` (a
//!   runtime-attached device is detached, not disabled).

use super::devices::DeviceModel;
use super::hotplug::{channel_error, Hotplug};
use crate::api::protocol::{ApiError, DeviceStateResult, ErrorKind};
use crate::channel::OverlayId;
use crate::config::{DeviceConfig, DeviceState};
use crate::layout::PlacedDevice;
use std::time::{Duration, Instant};

/// A device of the cell file, as the running cell has it.
pub struct BootDevice {
    /// Its config.
    pub device: DeviceConfig,
    /// Where the layout placed it.
    pub slot: PlacedDevice,
    /// The state the guest sees now.
    pub state: DeviceState,
    /// The overlay that changed it from its boot state, and the agent
    /// generation that applied it: removing it goes back.
    pub flip: Option<(OverlayId, u64)>,
    /// Its model while it is `okay`.
    pub model: Option<DeviceModel>,
}

impl BootDevice {
    /// A device as booted: `model` is built for an `okay` one.
    pub fn new(device: DeviceConfig, slot: PlacedDevice, model: Option<DeviceModel>) -> Self {
        BootDevice {
            state: device.state(),
            device,
            slot,
            flip: None,
            model,
        }
    }

    /// The device id.
    pub fn id(&self) -> &str {
        self.device.id()
    }
}

fn conflict(message: String) -> ApiError {
    ApiError::new(ErrorKind::Conflict, message)
}

impl Hotplug {
    /// Every boot-time device: id, the state its guest sees now, and its
    /// state in the cell file.
    pub fn boot_states(&self) -> Vec<(String, DeviceState, DeviceState)> {
        self.lock()
            .boot
            .iter()
            .map(|(id, b)| (id.clone(), b.state, b.device.state()))
            .collect()
    }

    /// Starts the worker threads of the boot-time models.
    pub fn start_boot_workers(
        &self,
        seccomp: Option<&std::sync::Arc<crate::seccomp::Filters>>,
    ) -> Result<(), super::VmmError> {
        let mut st = self.lock();
        for model in st.boot.values_mut().filter_map(|b| b.model.as_mut()) {
            model.start_workers(seccomp)?;
        }
        Ok(())
    }

    /// The ivshmem doorbell receivers of the boot-time models (taken once).
    pub fn take_ivshmem_subscribers(&self) -> Vec<crate::ivshmem::IvshmemSubscriber> {
        let mut st = self.lock();
        st.boot
            .values_mut()
            .filter_map(|b| b.model.as_mut())
            .flat_map(DeviceModel::take_ivshmem_subscribers)
            .collect()
    }

    /// The boot-time PCI host bridges that have a model, in id order.
    pub fn boot_bridges(&self) -> Vec<std::sync::Arc<std::sync::Mutex<crate::pci::PciHostBridge>>> {
        self.lock()
            .boot
            .values()
            .filter_map(|b| b.model.as_ref().and_then(|m| m.bridge().cloned()))
            .collect()
    }

    /// The reserved boot-time device `id`, for a handover.
    fn reserved_device(&self, id: &str) -> Result<DeviceConfig, ApiError> {
        let st = self.lock();
        let b = st.boot.get(id).ok_or_else(|| {
            ApiError::new(
                ErrorKind::NotFound,
                format!("{id} is not a device of the cell file"),
            )
        })?;
        if b.state == DeviceState::Okay {
            return Err(conflict(format!(
                "{id} is okay here: a device moves to a cell that has it reserved"
            )));
        }
        Ok(b.device.clone())
    }

    /// Takes the images of the reserved device `id` over from cell `from`
    /// (which still holds them): the first step of a move. Refused, with
    /// nothing claimed, if this cell's guest has no agent (it could not
    /// take the device) or the images are not `from`'s alone.
    pub fn claim_from(&self, id: &str, from: &str) -> Result<DeviceStateResult, ApiError> {
        let started = Instant::now();
        let _change = crate::sync::lock(&self.change);
        let device = self.reserved_device(id)?;
        if !matches!(
            self.channel.agent_status().state,
            crate::channel::AgentState::Ready(_)
        ) {
            return Err(ApiError::new(
                ErrorKind::NoAgent,
                format!("{id}: this cell's guest has no agent to take the device"),
            ));
        }
        self.claims
            .claim_device_from(&device, from)
            .map_err(|e| conflict(e.to_string()))?;
        Ok(DeviceStateResult {
            id: id.to_string(),
            state: "reserved",
            forced: false,
            guest_error: None,
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    /// Drops the handover claim of the reserved device `id`.
    pub fn unclaim(&self, id: &str) -> Result<DeviceStateResult, ApiError> {
        let _change = crate::sync::lock(&self.change);
        self.reserved_device(id)?;
        self.claims.release_device(id);
        Ok(DeviceStateResult {
            id: id.to_string(),
            state: "reserved",
            forced: false,
            guest_error: None,
            elapsed_ms: 0.0,
        })
    }

    /// Enables (`okay`) or disables (`reserved`, or the boot state when
    /// that is `disabled`) the boot-time device `id`.
    pub fn set_state(
        &self,
        id: &str,
        enable: bool,
        force: bool,
        timeout: Duration,
    ) -> Result<DeviceStateResult, ApiError> {
        let started = Instant::now();
        let _change = crate::sync::lock(&self.change);
        let (device, slot, state, flip, attached) = {
            let st = self.lock();
            let Some(b) = st.boot.get(id) else {
                let what = if st.attached.iter().any(|a| a.id() == id) {
                    format!("{id} was attached at run time: detach it instead")
                } else {
                    format!("{id} is not a device of the cell file")
                };
                return Err(ApiError::new(ErrorKind::NotFound, what));
            };
            (
                b.device.clone(),
                b.slot.clone(),
                b.state,
                b.flip,
                st.attached.clone(),
            )
        };
        if enable == (state == DeviceState::Okay) {
            return Err(conflict(format!("{id} is already {}", state.as_str())));
        }
        if !enable && has_ivshmem(&device) {
            return Err(ApiError::new(
                ErrorKind::Unsupported,
                format!("{id}: a bridge with ivshmem functions cannot be built again at run time, so it is not disabled"),
            ));
        }
        let boot_state = device.state();
        let target = if enable {
            DeviceState::Okay
        } else if boot_state == DeviceState::Okay {
            DeviceState::Reserved
        } else {
            boot_state
        };
        let generation = self.channel.agent_status().generation;
        // A flip applied by an agent that is gone was dropped with it: the
        // guest is back at the boot state.
        let live_flip = flip.filter(|(_, g)| *g == generation);
        // The overlay first: planning fails before anything is claimed.
        let action = self.resolve(
            guest_action(target, boot_state, live_flip),
            &slot,
            target,
            &attached,
        )?;
        let change = Change {
            device: &device,
            slot: &slot,
            action,
            live_flip,
            generation,
            timeout,
        };
        let Outcome {
            flip: new_flip,
            model,
            guest_error,
        } = if enable {
            self.enable(&change)?
        } else {
            self.disable(&change, force)?
        };
        let mut st = self.lock();
        let b = st
            .boot
            .get_mut(id)
            .ok_or_else(|| ApiError::new(ErrorKind::Internal, format!("{id} vanished")))?;
        b.state = target;
        b.flip = new_flip;
        let old = std::mem::replace(&mut b.model, model);
        drop(st);
        if let Some(old) = old {
            self.devices.remove(old);
            self.claims.release_device(id);
        }
        Ok(DeviceStateResult {
            id: id.to_string(),
            state: target.as_str(),
            forced: guest_error.is_some(),
            guest_error,
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    /// Carries out the change's guest action: the flip afterwards.
    fn ask_guest(
        &self,
        c: &Change<'_>,
    ) -> Result<Option<(OverlayId, u64)>, crate::channel::ChannelError> {
        match &c.action {
            GuestAction::Nothing => Ok(c.live_flip),
            GuestAction::Remove(overlay) => self
                .channel
                .remove_overlay(*overlay, c.timeout)
                .map(|()| None),
            GuestAction::Apply(blob) => self
                .channel
                .apply_overlay(blob, c.timeout)
                .map(|o| Some((o, c.generation))),
        }
    }

    /// Claims, builds, asks the guest: the new flip and the model.
    fn enable(&self, c: &Change<'_>) -> Result<Outcome, ApiError> {
        let id = c.device.id();
        self.claims
            .claim_device(c.device)
            .map_err(|e| conflict(e.to_string()))?;
        let undo = |model: Option<DeviceModel>| {
            if let Some(m) = model {
                self.devices.discard(m);
            }
            self.claims.release_device(id);
        };
        let mut model = match self.devices.build(c.device, c.slot, true) {
            Ok(m) => m,
            Err(e) => {
                undo(None);
                return Err(super::hotplug::build_error(e));
            }
        };
        if let Err(e) = model.start_workers(self.devices.seccomp()) {
            undo(Some(model));
            return Err(ApiError::new(ErrorKind::Internal, e.to_string()));
        }
        match self.ask_guest(c) {
            Ok(flip) => Ok(Outcome {
                flip,
                model: Some(model),
                guest_error: None,
            }),
            Err(e) => {
                undo(Some(model));
                log::warn!("enable {id} refused: {e}; nothing changed");
                Err(channel_error(&e))
            }
        }
    }

    /// Asks the guest to let the device go: the new flip, no model, and
    /// the guest's error when forced (the flip is then kept: a later call
    /// tries to remove it again).
    fn disable(&self, c: &Change<'_>, force: bool) -> Result<Outcome, ApiError> {
        match self.ask_guest(c) {
            Ok(flip) => Ok(Outcome {
                flip,
                model: None,
                guest_error: None,
            }),
            Err(e) if force => {
                let id = c.device.id();
                log::warn!("disable {id}: guest failed ({e}); tearing down anyway (--force)");
                Ok(Outcome {
                    flip: c.live_flip,
                    model: None,
                    guest_error: Some(e.to_string()),
                })
            }
            Err(e) => Err(channel_error(&e)),
        }
    }

    /// The overlay of a planned apply, built for `status`.
    fn resolve(
        &self,
        action: PlannedAction,
        slot: &PlacedDevice,
        status: DeviceState,
        attached: &[crate::attach::AttachedDevice],
    ) -> Result<GuestAction, ApiError> {
        Ok(match action {
            PlannedAction::Nothing => GuestAction::Nothing,
            PlannedAction::Remove(o) => GuestAction::Remove(o),
            PlannedAction::Apply => GuestAction::Apply(
                crate::attach::plan_state(slot, status, &self.base_tree, attached)
                    .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?
                    .overlay,
            ),
        })
    }
}

/// What the guest must do to reach a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PlannedAction {
    /// The guest is there already.
    Nothing,
    /// Remove the overlay that took it from its boot state.
    Remove(OverlayId),
    /// Apply an overlay setting the status.
    Apply,
}

/// One state change as `set_state` decided it.
struct Change<'a> {
    device: &'a DeviceConfig,
    slot: &'a PlacedDevice,
    action: GuestAction,
    /// The overlay of the current agent that flipped the device, if any.
    live_flip: Option<(OverlayId, u64)>,
    generation: u64,
    timeout: Duration,
}

/// What a change leaves: the flip, the model (enable), and the guest's
/// error when a disable was forced.
struct Outcome {
    flip: Option<(OverlayId, u64)>,
    model: Option<DeviceModel>,
    guest_error: Option<String>,
}

/// A [`PlannedAction`] with its overlay built.
enum GuestAction {
    Nothing,
    Remove(OverlayId),
    Apply(Vec<u8>),
}

/// How the guest reaches `target` from where it is: its boot state, or
/// the other side when `flip` (an overlay of the current agent) is there.
fn guest_action(
    target: DeviceState,
    boot: DeviceState,
    flip: Option<(OverlayId, u64)>,
) -> PlannedAction {
    let back_to_boot = (target == DeviceState::Okay) == (boot == DeviceState::Okay);
    match (back_to_boot, flip) {
        (true, Some((overlay, _))) => PlannedAction::Remove(overlay),
        (true, None) | (false, Some(_)) => PlannedAction::Nothing,
        (false, None) => PlannedAction::Apply,
    }
}

/// Whether `device` is a bridge with ivshmem functions (built at boot only).
fn has_ivshmem(device: &DeviceConfig) -> bool {
    matches!(device, DeviceConfig::PciBridge(b)
        if b.devices.iter().any(|d| matches!(d.kind, crate::config::PciDeviceKind::Ivshmem(_))))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OKAY: DeviceState = DeviceState::Okay;
    const RESERVED: DeviceState = DeviceState::Reserved;

    #[test]
    fn the_guest_goes_back_to_its_boot_state_by_removing_the_flip_and_away_by_an_overlay() {
        let flip = Some((OverlayId(7), 1));
        // Boot okay: disable applies, enable removes what disable applied.
        assert_eq!(guest_action(RESERVED, OKAY, None), PlannedAction::Apply);
        assert_eq!(
            guest_action(OKAY, OKAY, flip),
            PlannedAction::Remove(OverlayId(7))
        );
        // Boot reserved: enable applies, disable removes.
        assert_eq!(guest_action(OKAY, RESERVED, None), PlannedAction::Apply);
        assert_eq!(
            guest_action(RESERVED, RESERVED, flip),
            PlannedAction::Remove(OverlayId(7))
        );
    }

    #[test]
    fn a_guest_already_at_the_target_is_sent_nothing() {
        // The agent reloaded (its flips are gone): the guest is at its boot
        // state, which is the target.
        assert_eq!(guest_action(OKAY, OKAY, None), PlannedAction::Nothing);
        assert_eq!(
            guest_action(RESERVED, RESERVED, None),
            PlannedAction::Nothing
        );
        // A forced disable kept a flip the guest may still have applied.
        let flip = Some((OverlayId(3), 2));
        assert_eq!(guest_action(OKAY, RESERVED, flip), PlannedAction::Nothing);
    }
}
