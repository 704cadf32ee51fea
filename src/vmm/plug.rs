//! Add-on boards on a running cell: the cell's side of `plug` and `unplug`
//! (docs/addons.md).
//!
//! Plug: validate the board → plan on a copy of the layout (every device
//! placed on the connector, one overlay checked against the current tree)
//! → claim every device's host resources and build and register every
//! model → send the overlay → on the guest's ACK commit. Any failure
//! (a claim, a build, a NAK, a timeout, no agent) unregisters every model
//! built so far, releases every claim and leaves the layout as it was.
//! Unplug: ask the guest to remove the overlay → on ACK unregister every
//! model, release the claims and the placements. A forced unplug is a
//! surprise removal: the models are severed and the claims released
//! before the guest is told, and the board goes whatever it answers.
//! Both run under the cell's change lock, like attach and detach.

use super::devices::DeviceModel;
use super::hotplug::{
    attach_error, build_error, channel_error, config_error, placement, Hotplug, LiveAddon, State,
};
use crate::api::protocol::{ApiError, DeviceInfo, ErrorKind, PlugResult, UnplugResult};
use crate::attach;
use crate::config::{AddonConfig, LoadOptions};
use std::path::Path;
use std::time::{Duration, Instant};

/// What a plug needs from the API request.
pub struct PlugRequest<'a> {
    /// The connector.
    pub connector: &'a str,
    /// The add-on description's value tree.
    pub addon: toml::Value,
    /// The overlay source's name and text.
    pub overlay: (&'a str, &'a str),
    /// Where the description's relative paths resolve.
    pub base_dir: Option<&'a Path>,
}

impl Hotplug {
    /// Plugs the add-on `req` describes into its connector.
    pub fn plug(&self, req: PlugRequest<'_>, timeout: Duration) -> Result<PlugResult, ApiError> {
        let opts = LoadOptions { check_files: true };
        let addon = crate::config::addon_from_value(
            req.addon,
            req.overlay,
            "<request>",
            req.base_dir,
            &opts,
        )
        .map_err(|e| config_error(&e))?;
        self.plug_addon(&addon, req.connector, timeout)
    }

    /// Plugs a validated add-on into `connector`.
    pub fn plug_addon(
        &self,
        addon: &AddonConfig,
        connector: &str,
        timeout: Duration,
    ) -> Result<PlugResult, ApiError> {
        let started = Instant::now();
        let _change = crate::sync::lock(&self.change);
        let (layout, attached, connected, plugged) = {
            let st = self.lock();
            (
                st.layout.clone(),
                st.attached.clone(),
                st.connected.clone(),
                st.plugged.clone(),
            )
        };
        let live = attach::live_tree(&self.base_tree, &attached, &connected, &plugged)
            .map_err(attach_error)?;
        let plan = attach::plan_plug(addon, connector, &layout, &self.base_tree, &live)
            .map_err(attach_error)?;
        let models = self.build_all(addon, &plan.plugged.slots)?;
        let generation = self.channel.agent_status().generation;
        let overlay = match self.channel.apply_overlay(&plan.plugged.overlay, timeout) {
            Ok(id) => id,
            Err(e) => {
                self.undo(addon, models);
                log::warn!(
                    "plug {} into {connector} refused: {e}; nothing changed",
                    addon.name
                );
                return Err(channel_error(&e));
            }
        };
        let devices: Vec<DeviceInfo> = plan
            .plugged
            .slots
            .iter()
            .map(|s| DeviceInfo {
                connector: Some(connector.to_string()),
                ..placement(s)
            })
            .collect();
        let nodes = plan.plugged.nodes.clone();
        let mut st = self.lock();
        let State {
            layout, plugged, ..
        } = &mut *st;
        if let Err(e) = plan.commit(layout, plugged) {
            // Cannot happen under the change lock; undo in the guest too.
            drop(st);
            let _ = self.channel.remove_overlay(overlay, timeout);
            self.undo(addon, models);
            return Err(attach_error(e));
        }
        st.live_addons.insert(
            connector.to_string(),
            LiveAddon {
                overlay,
                generation,
                models,
            },
        );
        log::info!("add-on {} plugged into {connector}", addon.name);
        Ok(PlugResult {
            connector: connector.to_string(),
            addon: addon.name.clone(),
            devices,
            overlay: overlay.0,
            nodes,
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    /// Claims, builds and starts every device of `addon`; all or nothing.
    fn build_all(
        &self,
        addon: &AddonConfig,
        slots: &[crate::layout::PlacedDevice],
    ) -> Result<Vec<DeviceModel>, ApiError> {
        let mut models = Vec::new();
        for (dev, slot) in addon.devices.iter().zip(slots) {
            if let Err(e) = self.claims.claim_device(dev) {
                self.claims.release_device(dev.id());
                self.undo(addon, models);
                return Err(ApiError::new(ErrorKind::Conflict, e.to_string()));
            }
            let mut model = match self.devices.build(dev, slot, true) {
                Ok(model) => model,
                Err(e) => {
                    self.claims.release_device(dev.id());
                    self.undo(addon, models);
                    return Err(build_error(e));
                }
            };
            if let Err(e) = model.start_workers(self.devices.seccomp()) {
                self.devices.discard(model);
                self.claims.release_device(dev.id());
                self.undo(addon, models);
                return Err(ApiError::new(ErrorKind::Internal, e.to_string()));
            }
            models.push(model);
        }
        Ok(models)
    }

    /// Discards `models` (built for the first devices of `addon`) and
    /// releases those devices' claims.
    fn undo(&self, addon: &AddonConfig, models: Vec<DeviceModel>) {
        for (dev, model) in addon.devices.iter().zip(models) {
            self.devices.discard(model);
            self.claims.release_device(dev.id());
        }
    }

    /// Unplugs the add-on in `connector`: with the guest's consent, or with
    /// `force` as a surprise removal (see [`Self::unplug_locked`]).
    pub fn unplug(
        &self,
        connector: &str,
        force: bool,
        timeout: Duration,
    ) -> Result<UnplugResult, ApiError> {
        let _change = crate::sync::lock(&self.change);
        self.unplug_locked(connector, force, timeout)
    }

    /// [`Self::unplug`] under the change lock the caller holds.
    ///
    /// Without `force`: ask the guest to remove the overlay; only on its ACK
    /// do the models, claims and placements go. With `force` (a surprise
    /// removal): first every model is severed ([`DeviceManager::sever`]:
    /// host resources dropped, requests fail, registers read all-ones) and
    /// the claims are released, then the guest is asked to drop the nodes,
    /// and whatever it answers the board is gone from the cell.
    ///
    /// [`DeviceManager::sever`]: super::devices::DeviceManager::sever
    pub(super) fn unplug_locked(
        &self,
        connector: &str,
        force: bool,
        timeout: Duration,
    ) -> Result<UnplugResult, ApiError> {
        let started = Instant::now();
        let (plan, live) = {
            let st = self.lock();
            let plan =
                attach::plan_unplug(connector, &st.layout, &st.plugged).map_err(attach_error)?;
            let live = st
                .live_addons
                .get(connector)
                .map(|l| (l.overlay, l.generation));
            (plan, live)
        };
        let Some((overlay, generation)) = live else {
            return Err(ApiError::new(
                ErrorKind::Internal,
                format!("connector {connector} has an add-on but no device models"),
            ));
        };
        let addon = plan.plugged.addon.clone();
        if force {
            self.sever_board(connector, &addon);
        }
        // As for a detach: never send an overlay id a new agent did not give.
        let agent = self.channel.agent_status();
        let dropped_by_guest = agent.generation != generation
            || matches!(agent.state, crate::channel::AgentState::Gone);
        let guest = if dropped_by_guest {
            Ok(())
        } else {
            self.channel.remove_overlay(overlay, timeout)
        };
        if let Err(e) = &guest {
            if !force {
                return Err(channel_error(e));
            }
            log::warn!(
                "unplug {connector}: the guest did not drop the board's nodes ({e}); \
                 its drivers keep reading all-ones where the board was"
            );
        }
        let mut st = self.lock();
        let State {
            layout, plugged, ..
        } = &mut *st;
        plan.commit(layout, plugged).map_err(attach_error)?;
        let models = st
            .live_addons
            .remove(connector)
            .map(|l| l.models)
            .unwrap_or_default();
        drop(st);
        for (dev, model) in addon.devices.iter().zip(models) {
            self.devices.remove(model);
            self.claims.release_device(dev.id());
        }
        log::info!("add-on {} unplugged from {connector}", addon.name);
        Ok(UnplugResult {
            connector: connector.to_string(),
            addon: addon.name,
            forced: force,
            guest_error: guest.err().map(|e| e.to_string()),
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    /// The host side of the board in `connector` goes now: every model
    /// severed, every claim released (an image can pass to another cell at
    /// once). The models stay registered until the unplug completes.
    fn sever_board(&self, connector: &str, addon: &AddonConfig) {
        log::warn!(
            "unplug {connector}: surprise removal of {}: its devices are cut off now",
            addon.name
        );
        let mut st = self.lock();
        if let Some(live) = st.live_addons.get_mut(connector) {
            for model in &mut live.models {
                self.devices.sever(model);
            }
        }
        drop(st);
        for dev in &addon.devices {
            self.claims.release_device(dev.id());
        }
    }

    /// The connectors, and the devices of the add-ons plugged into them,
    /// for `devices`.
    pub fn connector_devices(&self) -> Vec<DeviceInfo> {
        let st = self.lock();
        let mut out = Vec::new();
        for c in &st.layout.connectors {
            out.push(DeviceInfo {
                id: c.id.clone(),
                kind: "connector",
                state: Some(if c.addon.is_some() {
                    "plugged"
                } else {
                    "empty"
                }),
                base: Some(format!("{:#x}", c.window.base)),
                size: Some(format!("{:#x}", c.window.size)),
                addon: c.addon.clone(),
                ..DeviceInfo::default()
            });
            let Some(p) = st.plugged.iter().find(|p| p.connector == c.id) else {
                continue;
            };
            let overlay = st.live_addons.get(&c.id).map(|l| l.overlay.0);
            for slot in &p.slots {
                out.push(DeviceInfo {
                    state: Some("plugged"),
                    connector: Some(c.id.clone()),
                    addon: Some(p.addon.name.clone()),
                    overlay,
                    ..placement(slot)
                });
            }
        }
        out
    }

    /// Ids of the devices of plugged add-ons.
    pub fn plugged_ids(&self) -> Vec<String> {
        self.lock()
            .plugged
            .iter()
            .flat_map(|p| p.slots.iter().map(|s| s.id().to_string()))
            .collect()
    }
}
