//! Connectors on a running cell: the cell's side of `connect` and
//! `disconnect` (docs/addons.md, "Connectors at run time").
//!
//! Connect: validate the `[[connector]]` table → plan on a copy of the
//! layout (window, pins, the overlay adding its node) → send the overlay
//! (the guest agent populates the new bus, capability
//! `AGENT_CAP_CONNECTORS`) → commit on the ACK; anything else changes
//! nothing. Disconnect: refused while an add-on is plugged in, unless
//! `force`, which unplugs it first (a surprise removal, under the same
//! change lock); then the guest removes the
//! connector's overlay and the window and pins are released.

use super::hotplug::{attach_error, channel_error, config_error, Hotplug, State};
use crate::api::protocol::{ApiError, ConnectResult, DisconnectResult, ErrorKind};
use crate::attach;
use crate::channel::protocol::AGENT_CAP_CONNECTORS;
use crate::channel::AgentState;
use std::time::{Duration, Instant};

impl Hotplug {
    /// Attaches the connector a `[[connector]]` table (as a value tree)
    /// describes.
    pub fn connect(
        &self,
        description: toml::Value,
        timeout: Duration,
    ) -> Result<ConnectResult, ApiError> {
        let started = Instant::now();
        let cfg = crate::config::connector_from_value(description, "<request>")
            .map_err(|e| config_error(&e))?;
        if let AgentState::Ready(info) = self.channel.agent_status().state {
            if info.capabilities & AGENT_CAP_CONNECTORS == 0 {
                return Err(ApiError::new(
                    ErrorKind::Unsupported,
                    format!(
                        "connect {}: the guest agent does not populate connectors added at run \
                         time (capabilities {:#x}, no {AGENT_CAP_CONNECTORS:#x}); update it",
                        cfg.id, info.capabilities
                    ),
                ));
            }
        }
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
        let plan = attach::plan_connect(&cfg, &layout, &live).map_err(attach_error)?;
        let generation = self.channel.agent_status().generation;
        let overlay = self
            .channel
            .apply_overlay(&plan.connected.overlay, timeout)
            .map_err(|e| {
                log::warn!("connect {} refused: {e}; nothing changed", cfg.id);
                channel_error(&e)
            })?;
        let slot = plan.connected.slot.clone();
        let nodes = plan.connected.nodes.clone();
        let mut st = self.lock();
        let State {
            layout, connected, ..
        } = &mut *st;
        if let Err(e) = plan.commit(layout, connected) {
            let _ = self.channel.remove_overlay(overlay, timeout);
            return Err(attach_error(e));
        }
        st.live_connectors
            .insert(cfg.id.clone(), (overlay, generation));
        log::info!("connector {} attached at {:#x}", cfg.id, slot.window.base);
        Ok(ConnectResult {
            id: slot.id,
            base: format!("{:#x}", slot.window.base),
            size: format!("{:#x}", slot.window.size),
            irqs: slot.irqs,
            overlay: overlay.0,
            nodes,
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    /// Detaches connector `id` (one `connect` added); `force` unplugs its
    /// add-on first and tears down what the guest refuses.
    pub fn disconnect(
        &self,
        id: &str,
        force: bool,
        timeout: Duration,
    ) -> Result<DisconnectResult, ApiError> {
        let started = Instant::now();
        // One change lock for both steps: nothing can plug a board between
        // the forced unplug and the connector's removal.
        let _change = crate::sync::lock(&self.change);
        let addon = self
            .lock()
            .layout
            .connector(id)
            .and_then(|c| c.addon.clone());
        let unplugged = match addon {
            Some(name) if force => {
                self.unplug_locked(id, true, timeout)?;
                Some(name)
            }
            _ => None,
        };
        let (plan, live) = {
            let st = self.lock();
            let plan =
                attach::plan_disconnect(id, &st.layout, &st.connected).map_err(attach_error)?;
            (plan, st.live_connectors.get(id).copied())
        };
        let Some((overlay, generation)) = live else {
            return Err(ApiError::new(
                ErrorKind::Internal,
                format!("connector {id} was connected but has no overlay"),
            ));
        };
        let agent = self.channel.agent_status();
        let dropped_by_guest =
            agent.generation != generation || matches!(agent.state, AgentState::Gone);
        let guest = if dropped_by_guest {
            Ok(())
        } else {
            self.channel.remove_overlay(overlay, timeout)
        };
        if let Err(e) = &guest {
            if !force {
                return Err(channel_error(e));
            }
            log::warn!("disconnect {id}: guest failed ({e}); removing it anyway (--force)");
        }
        let mut st = self.lock();
        let State {
            layout, connected, ..
        } = &mut *st;
        plan.commit(layout, connected).map_err(attach_error)?;
        st.live_connectors.remove(id);
        log::info!("connector {id} detached");
        Ok(DisconnectResult {
            id: id.to_string(),
            forced: guest.is_err(),
            unplugged,
            guest_error: guest.err().map(|e| e.to_string()),
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }
}
