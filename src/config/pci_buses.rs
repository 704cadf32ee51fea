//! The buses behind one PCI host bridge (docs/pci.md, "PCI-to-PCI
//! bridges"): which `bus` a `[[pci_bridge.device]]` may name.
//!
//! The host bridge's first bus (`bus_start`) is its root bus. A function of
//! kind `pci-bridge` on the root bus leads to its `secondary` bus, which is
//! also its subordinate bus: one level of PCI-to-PCI bridges, configured as
//! firmware would, so the guest keeps the numbers. Rules:
//!
//! - a `pci-bridge` sits on the root bus;
//! - its `secondary` lies in `bus_start + 1 ..= bus_end` and is no other
//!   bridge's;
//! - every other device sits on the root bus or on some bridge's secondary
//!   bus.

use super::error::ConfigError;
use super::model::{PciDeviceConfig, PciDeviceKind};
use super::raw::Span;
use super::validate::Ctx;

/// Spans of a device's `slot`, `bus` and `secondary` keys.
pub(super) type DeviceSpans = (Span, Option<Span>, Option<Span>);

/// Checks the bus of every device of one host bridge against the rules
/// above.
pub(super) fn check(
    ctx: &Ctx<'_>,
    bridge_field: &str,
    devices: &[PciDeviceConfig],
    spans: &[DeviceSpans],
    (bus_start, bus_end): (u8, u8),
) -> Result<(), ConfigError> {
    // (index, device, its spans) for every device; the two slices are
    // built side by side.
    let entries: Vec<(usize, &PciDeviceConfig, &DeviceSpans)> = devices
        .iter()
        .zip(spans)
        .enumerate()
        .map(|(i, (d, s))| (i, d, s))
        .collect();
    let secondaries: Vec<(usize, u8)> = entries
        .iter()
        .filter_map(|&(i, d, _)| match d.kind {
            PciDeviceKind::PciBridge { secondary } => Some((i, secondary)),
            _ => None,
        })
        .collect();
    for &(i, d, (slot_span, bus_span, sec_span)) in &entries {
        let PciDeviceKind::PciBridge { secondary } = d.kind else {
            continue;
        };
        let f = format!("{bridge_field}.device[{i}]");
        if d.bus != bus_start {
            return Err(ctx.invalid(
                bus_span.as_ref().unwrap_or(slot_span),
                &format!("{f}.bus"),
                format!(
                    "a pci-bridge sits on the root bus {bus_start} (one level of PCI-to-PCI bridges)"
                ),
            ));
        }
        let at = sec_span.as_ref().unwrap_or(slot_span);
        if secondary <= bus_start || secondary > bus_end {
            return Err(ctx.invalid(
                at,
                &format!("{f}.secondary"),
                format!(
                    "bus {secondary} is not behind the root bus: expected {}..={bus_end} (raise bus_end for more buses)",
                    u16::from(bus_start) + 1
                ),
            ));
        }
        if let Some(&(j, _)) = secondaries.iter().find(|&&(j, s)| j < i && s == secondary) {
            return Err(ctx.invalid(
                at,
                &format!("{f}.secondary"),
                format!("bus {secondary} is already behind {bridge_field}.device[{j}]"),
            ));
        }
    }
    for &(i, d, (slot_span, bus_span, _)) in &entries {
        let reachable = d.bus == bus_start || secondaries.iter().any(|&(_, s)| s == d.bus);
        if !reachable {
            return Err(ctx.invalid(
                bus_span.as_ref().unwrap_or(slot_span),
                &format!("{bridge_field}.device[{i}].bus"),
                format!(
                    "no pci-bridge leads to bus {}: add a device with kind = \"pci-bridge\" and secondary = {}",
                    d.bus, d.bus
                ),
            ));
        }
    }
    Ok(())
}
