//! The cell's address map, I/O port map and interrupt allocation: the
//! single source of truth for where every device lives.
//!
//! [`CellLayout::new`] reserves RAM and the platform devices, then places
//! every device a validated [`CellConfig`] declares with [`CellLayout::place`].
//! A runtime attach places its device with the same method on a copy of the
//! cell's layout, and a detach releases it with [`CellLayout::remove`]: one
//! placement rule per device kind, for boot and runtime alike. Every
//! reservation has a typed [`Owner`]; a collision is impossible by
//! construction rather than by convention.
//!
//! [`place_cell`] is `CellLayout::new` for a config read from a file: a
//! placement error comes back as a [`ConfigError`] at the key that caused it.

mod address_map;
mod cell_layout;
mod error;
mod irq;
mod owner;
mod slots;

pub use address_map::{AddressMap, Reservation};
pub use cell_layout::CellLayout;
pub use error::{Culprit, LayoutError};
pub use irq::IrqAllocator;
pub use owner::{BridgePart, Owner, Platform};
pub use slots::{ConnectorSlot, PciBridgeSlot, PlacedDevice, UartSlot, VirtioMmioSlot};

use crate::config::{CellConfig, ConfigError};

/// Lays out a cell read from a file: [`CellLayout::new`], with a placement
/// error turned into a [`ConfigError`] at the file, line, column and key
/// that caused it (RAM regions numbered as in the file).
pub fn place_cell(cfg: &CellConfig) -> Result<CellLayout, ConfigError> {
    CellLayout::new(cfg).map_err(|e| locate(cfg, e))
}

fn locate(cfg: &CellConfig, error: LayoutError) -> ConfigError {
    let origin = match error.culprit() {
        Culprit::Memory(i) => cfg.origins.memory(i).cloned(),
        Culprit::Device { id, key } => cfg.origins.device(id, key),
        Culprit::Platform => None,
    };
    // Memory origins are `memory[<index in the file>]`: rename to match.
    let file_index = |i: usize| {
        cfg.origins
            .memory(i)
            .and_then(|o| {
                o.field
                    .strip_prefix("memory[")?
                    .strip_suffix(']')?
                    .parse()
                    .ok()
            })
            .unwrap_or(i)
    };
    let message = error.renumber_memory(file_index).to_string();
    match origin {
        Some(o) => ConfigError::Layout {
            at: o.at,
            field: o.field,
            message,
        },
        None => ConfigError::Layout {
            at: crate::config::Location::unknown(
                &cfg.source
                    .as_ref()
                    .map_or_else(|| "<config>".to_string(), |p| p.display().to_string()),
            ),
            field: "<root>".to_string(),
            message,
        },
    }
}

#[cfg(test)]
mod placement_tests;
#[cfg(test)]
mod tests;
