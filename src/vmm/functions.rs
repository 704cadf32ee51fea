//! Functions on a running bridge: `add_function` and `remove_function` of
//! the control API (docs/pci.md, "Functions on a running bridge").
//!
//! Add: the function's table is validated against the bridge (its first
//! bus, a free slot and function number, function 0 before the others) →
//! its images are claimed (under `BRIDGE/BB:DD.F`) → its model is built and
//! put on the running bridge → the guest agent rescans the bus
//! (PCI_RESCAN) → on the ACK the function joins the bridge's config and
//! model; on a NAK, a timeout or no agent it is taken off again and
//! nothing changed. Remove: the guest agent removes the function after its
//! consent hook let it go (PCI_REMOVE) → on the ACK the function leaves
//! the bridge, its model goes and its claims are released; otherwise
//! nothing changes. The bridge may be a boot-time one (while it is `okay`)
//! or an attached one. The change lock serialises these with every other
//! change; no guest exchange runs under the state lock.

use super::devices::DeviceModel;
use super::hotplug::{build_error, channel_error, config_error, Hotplug, State};
use crate::api::protocol::{ApiError, ErrorKind, FunctionResult};
use crate::channel::protocol::{PciFunction, AGENT_CAP_PCI_FUNCTIONS};
use crate::channel::AgentState;
use crate::config::{DeviceConfig, LoadOptions, PciBridgeConfig, PciDeviceConfig, PciDeviceKind};
use crate::layout::{PciBridgeSlot, PlacedDevice};
use crate::pci::{PciAddress, PciHostBridge};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A bridge's parts in the hotplug state.
struct BridgeParts<'a> {
    config: &'a mut PciBridgeConfig,
    slot: &'a PciBridgeSlot,
    model: &'a mut DeviceModel,
}

/// The bridge `id`, attached or boot-time (and `okay`).
fn bridge_parts<'a>(st: &'a mut State, id: &str) -> Result<BridgeParts<'a>, ApiError> {
    let not_bridge = || {
        ApiError::new(
            ErrorKind::InvalidDevice,
            format!("{id} is not a PCI host bridge"),
        )
    };
    let State {
        attached,
        live,
        boot,
        ..
    } = st;
    let (device, slot, model) = if let Some(a) = attached.iter_mut().find(|d| d.id() == id) {
        let model = live.get_mut(id).map(|l| &mut l.model);
        (&mut a.device, &a.slot, model)
    } else if let Some(b) = boot.get_mut(id) {
        (&mut b.device, &b.slot, b.model.as_mut())
    } else {
        return Err(ApiError::new(
            ErrorKind::NotFound,
            format!("no device {id} in this cell (a bridge of an add-on board cannot change)"),
        ));
    };
    let (DeviceConfig::PciBridge(config), PlacedDevice::PciBridge(slot)) = (device, slot) else {
        return Err(not_bridge());
    };
    let Some(model) = model else {
        return Err(ApiError::new(
            ErrorKind::Conflict,
            format!("bridge {id} is reserved or disabled: enable it first"),
        ));
    };
    Ok(BridgeParts {
        config,
        slot,
        model,
    })
}

/// `DD.F`, `DD` or `BB:DD.F` (hex, as lspci prints them) on a bridge whose
/// first bus is `bus`.
fn parse_function(text: &str, bus: u8) -> Option<(u8, u8, u8)> {
    let hex = |s: &str| u8::from_str_radix(s, 16).ok();
    let (bus, rest) = match text.split_once(':') {
        Some((b, rest)) => (hex(b)?, rest),
        None => (bus, text),
    };
    let (device, function) = match rest.split_once('.') {
        Some((d, f)) => (hex(d)?, f.parse().ok()?),
        None => (hex(rest)?, 0),
    };
    (device < 32 && function < 8).then_some((bus, device, function))
}

/// How the guest names a function of `slot`.
fn guest_name(slot: &PciBridgeSlot, dev: &PciDeviceConfig) -> String {
    format!(
        "{:08x}:{:02x}:{:02x}.{}",
        crate::platform::pci_domain(slot.config.base),
        dev.bus,
        dev.slot,
        dev.function
    )
}

/// The channel's name of a function of `slot`.
fn wire(slot: &PciBridgeSlot, address: PciAddress) -> PciFunction {
    PciFunction {
        domain: crate::platform::pci_domain(slot.config.base),
        bus: address.bus,
        devfn: address.devfn(),
    }
}

/// The key the function's claims are held under.
fn claim_id(bridge: &str, dev: &PciDeviceConfig) -> String {
    format!("{bridge}/{:02x}:{:02x}.{}", dev.bus, dev.slot, dev.function)
}

/// A bridge's functions as `devices` lists them (`08:01.0 test`); `None`
/// for another kind of device.
pub(super) fn function_list(device: &DeviceConfig) -> Option<Vec<String>> {
    let DeviceConfig::PciBridge(cfg) = device else {
        return None;
    };
    Some(
        cfg.devices
            .iter()
            .map(|d| {
                format!(
                    "{:02x}:{:02x}.{} {}",
                    d.bus,
                    d.slot,
                    d.function,
                    kind_name(d)
                )
            })
            .collect(),
    )
}

fn kind_name(dev: &PciDeviceConfig) -> &'static str {
    match dev.kind {
        PciDeviceKind::Test => "test",
        PciDeviceKind::Ivshmem(_) => "ivshmem",
        PciDeviceKind::Virtio(_) => "virtio",
        PciDeviceKind::PciBridge { .. } => "pci-bridge",
    }
}

/// Refuses `dev` if its slot and function are taken on the bridge, or if
/// it is not function 0 and the slot has no function 0.
fn check_free(config: &PciBridgeConfig, dev: &PciDeviceConfig) -> Result<(), ApiError> {
    let at = |d: &PciDeviceConfig| (d.bus, d.slot, d.function);
    if config.devices.iter().any(|d| at(d) == at(dev)) {
        return Err(ApiError::new(
            ErrorKind::Conflict,
            format!(
                "bridge {}: {:02x}:{:02x}.{} is taken",
                config.id, dev.bus, dev.slot, dev.function
            ),
        ));
    }
    let has_function0 = config
        .devices
        .iter()
        .any(|d| (d.bus, d.slot, d.function) == (dev.bus, dev.slot, 0));
    if dev.function != 0 && !has_function0 {
        return Err(ApiError::new(
            ErrorKind::InvalidDevice,
            format!(
                "bridge {}: function {} of slot {:02x} needs function 0 there first",
                config.id, dev.function, dev.slot
            ),
        ));
    }
    Ok(())
}

impl Hotplug {
    fn require_pci_functions(&self) -> Result<(), ApiError> {
        match self.channel.agent_status().state {
            AgentState::Ready(info) if info.capabilities & AGENT_CAP_PCI_FUNCTIONS == 0 => {
                Err(ApiError::new(
                    ErrorKind::Unsupported,
                    format!(
                        "the guest agent cannot rescan or remove PCI functions (capabilities \
                         {:#x}, no {AGENT_CAP_PCI_FUNCTIONS:#x}); update it",
                        info.capabilities
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Adds the function `description` describes to bridge `bridge`.
    pub fn add_function(
        &self,
        bridge: &str,
        description: toml::Value,
        base_dir: Option<&Path>,
        timeout: Duration,
    ) -> Result<FunctionResult, ApiError> {
        let started = Instant::now();
        self.require_pci_functions()?;
        let _change = crate::sync::lock(&self.change);
        let (config, slot, host) = self.bridge_snapshot(bridge)?;
        let opts = LoadOptions { check_files: true };
        let dev = crate::config::function_from_value(
            description,
            "<request>",
            base_dir,
            &opts,
            Some(slot.bus_start),
        )
        .map_err(|e| config_error(&e))?
        .function;
        check_free(&config, &dev)?;
        let claim = claim_id(bridge, &dev);
        let claimed = DeviceConfig::PciBridge(PciBridgeConfig {
            id: claim.clone(),
            devices: vec![dev.clone()],
            ..config.clone()
        });
        self.claims
            .claim_device(&claimed)
            .map_err(|e| ApiError::new(ErrorKind::Conflict, e.to_string()))?;
        let (address, model) = match self.devices.add_function(&host, &slot, &dev) {
            Ok(built) => built,
            Err(e) => {
                self.claims.release_device(&claim);
                return Err(build_error(e));
            }
        };
        if let Err(e) = self.channel.pci_rescan(wire(&slot, address), timeout) {
            self.devices.drop_function(&host, address, model);
            self.claims.release_device(&claim);
            log::warn!(
                "add function {} to {bridge} refused: {e}; nothing changed",
                guest_name(&slot, &dev)
            );
            return Err(channel_error(&e));
        }
        let mut st = self.lock();
        match bridge_parts(&mut st, bridge) {
            Ok(parts) => {
                parts.config.devices.push(dev.clone());
                parts.model.keep_function(address, model);
            }
            Err(e) => {
                // Cannot happen under the change lock; undo all of it.
                drop(st);
                self.devices.drop_function(&host, address, model);
                self.claims.release_device(&claim);
                return Err(e);
            }
        }
        drop(st);
        Ok(FunctionResult {
            bridge: bridge.to_string(),
            function: guest_name(&slot, &dev),
            kind: kind_name(&dev).to_string(),
            change: "added",
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    /// Removes function `function` (`DD.F`, `DD` or `BB:DD.F`) from bridge
    /// `bridge`, once the guest let it go.
    pub fn remove_function(
        &self,
        bridge: &str,
        function: &str,
        timeout: Duration,
    ) -> Result<FunctionResult, ApiError> {
        let started = Instant::now();
        self.require_pci_functions()?;
        let _change = crate::sync::lock(&self.change);
        let (config, slot, _) = self.bridge_snapshot(bridge)?;
        let Some((bus, device, number)) = parse_function(function, slot.bus_start) else {
            return Err(ApiError::new(
                ErrorKind::BadRequest,
                format!("{function:?} is not a PCI function (expected DD.F, DD or BB:DD.F in hex)"),
            ));
        };
        let Some(dev) = config
            .devices
            .iter()
            .find(|d| (d.bus, d.slot, d.function) == (bus, device, number))
            .cloned()
        else {
            return Err(ApiError::new(
                ErrorKind::NotFound,
                format!("bridge {bridge} has no function {bus:02x}:{device:02x}.{number}"),
            ));
        };
        if matches!(dev.kind, PciDeviceKind::PciBridge { .. }) {
            return Err(ApiError::new(
                ErrorKind::Unsupported,
                format!("{bus:02x}:{device:02x}.{number} of {bridge} is a PCI-to-PCI bridge: detach the whole bridge"),
            ));
        }
        if number == 0
            && config
                .devices
                .iter()
                .any(|d| (d.bus, d.slot) == (bus, device) && d.function != 0)
        {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                format!("slot {device:02x} of {bridge} has other functions: remove them before function 0"),
            ));
        }
        let address = PciAddress::new(bus, device, number).map_err(|e| build_error(e.into()))?;
        self.channel
            .pci_remove(wire(&slot, address), timeout)
            .map_err(|e| channel_error(&e))?;
        let mut st = self.lock();
        let parts = bridge_parts(&mut st, bridge)?;
        if let Err(e) = self.devices.remove_function(parts.model, parts.slot, &dev) {
            log::warn!("remove function {function} of {bridge}: {e}");
        }
        parts
            .config
            .devices
            .retain(|d| (d.bus, d.slot, d.function) != (bus, device, number));
        drop(st);
        self.claims.release_device(&claim_id(bridge, &dev));
        Ok(FunctionResult {
            bridge: bridge.to_string(),
            function: guest_name(&slot, &dev),
            kind: kind_name(&dev).to_string(),
            change: "removed",
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    /// The functions of boot-time bridge `id`, for `devices`.
    pub fn boot_functions(&self, id: &str) -> Option<Vec<String>> {
        self.lock()
            .boot
            .get(id)
            .and_then(|b| function_list(&b.device))
    }

    /// The bridge's config, slot and running model, copied out of the state.
    fn bridge_snapshot(
        &self,
        bridge: &str,
    ) -> Result<(PciBridgeConfig, PciBridgeSlot, Arc<Mutex<PciHostBridge>>), ApiError> {
        let mut st = self.lock();
        let parts = bridge_parts(&mut st, bridge)?;
        let host = parts.model.bridge().cloned().ok_or_else(|| {
            ApiError::new(ErrorKind::Internal, format!("bridge {bridge} has no model"))
        })?;
        Ok((parts.config.clone(), parts.slot.clone(), host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bridge_lists_its_functions_and_other_devices_have_none() {
        let test = |slot| PciDeviceConfig {
            bus: 8,
            slot,
            function: 0,
            kind: PciDeviceKind::Test,
        };
        let bridge = DeviceConfig::PciBridge(PciBridgeConfig {
            id: "hot0".into(),
            state: crate::config::DeviceState::Okay,
            kind: crate::config::PciHostKind::Ecam,
            config_base: None,
            bus_start: 8,
            bus_end: 8,
            mmio32: None,
            mmio64: None,
            devices: vec![test(1), test(0x1f)],
        });
        assert_eq!(
            function_list(&bridge),
            Some(vec!["08:01.0 test".to_string(), "08:1f.0 test".to_string()])
        );
        let uart = DeviceConfig::Uart(crate::config::UartConfig {
            id: "u".into(),
            state: crate::config::DeviceState::Okay,
            port: None,
            irq: None,
            path: None,
        });
        assert_eq!(function_list(&uart), None);
    }

    #[test]
    fn function_addresses_are_read_as_lspci_prints_them() {
        assert_eq!(parse_function("03.0", 8), Some((8, 3, 0)));
        assert_eq!(parse_function("1f", 8), Some((8, 31, 0)));
        assert_eq!(parse_function("09:0a.7", 8), Some((9, 10, 7)));
        for bad in [
            "", "20.0", "03.8", "x.0", "03.", "1:2:3.0", "100:01.0", "03.-1",
        ] {
            assert_eq!(parse_function(bad, 8), None, "{bad:?}");
        }
    }
}
