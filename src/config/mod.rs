//! Cell configuration: TOML text → validated [`CellConfig`].

mod model;

pub use model::*;

/// Largest vCPU count a cell may have.
pub const MAX_VCPUS: u8 = 64;
