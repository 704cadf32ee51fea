//! Cell configuration: TOML text → validated [`CellConfig`].
//!
//! [`load`] reads a cell file, [`parse`] validates text. Every error is a
//! [`ConfigError`] that prints as one line, `file:line:column: field: message`.
//! The file format is documented in `docs/config.md`.

mod addon;
mod connector;
mod description;
mod error;
mod function;
pub mod ivshmem_shape;
mod kernel_image;
mod model;
mod origins;
mod pci_buses;
mod raw;
mod size;
mod source;
mod validate;

#[cfg(test)]
mod addon_tests;
#[cfg(test)]
mod description_tests;
#[cfg(test)]
mod function_tests;
#[cfg(test)]
mod pci_buses_tests;
#[cfg(test)]
pub(crate) mod tests;

use source::{parse_toml, read_source, source_dir};
use std::path::Path;

pub use addon::{addon_from_value, load_addon, AddonConfig, AddonDescription, MAX_OVERLAY_SOURCE};
pub use connector::{
    connector_from_value, load_connector, valid_connector_id, ConnectorDescription,
};
pub use description::{device_from_value, load_device, parse_device, Description};
pub use error::{shown, ConfigError, Location};
pub use function::{function_from_value, load_function, parse_function, FunctionDescription};
pub use kernel_image::{detect_kernel_format, kernel_format_from_header, KernelFileError};
pub use model::*;
pub use origins::{Origin, Origins};

/// CPUs this host has (configured, not only online), which `cpus.pin` may
/// name.
pub fn host_cpu_count() -> usize {
    validate::host_cpu_count()
}
pub use size::{human_size, parse_size, HumanSize, SizeError};

/// Whether `s` is a valid cell name (or device id): `[A-Za-z0-9_-]{1,32}`.
pub fn valid_name(s: &str) -> bool {
    validate::valid_id(s)
}

/// Kernel command line used when the config gives none.
pub const DEFAULT_CMDLINE: &str = validate::DEFAULT_CMDLINE;

/// Reads and validates the cell file at `path`. Relative paths inside it
/// resolve against the file's directory.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<CellConfig, ConfigError> {
    let text = read_source(path)?;
    parse(&text, Some(path), source_dir(path), opts)
}

/// Validates cell-file `text`. `source` names the text in messages (and is
/// stored in [`CellConfig::source`]); relative paths resolve against
/// `base_dir`.
pub fn parse(
    text: &str,
    source: Option<&Path>,
    base_dir: &Path,
    opts: &LoadOptions,
) -> Result<CellConfig, ConfigError> {
    let file = source.map_or_else(|| "<config>".to_string(), |p| p.display().to_string());
    let (tree, cell) = parse_toml::<raw::RawCell>(text, &file)?;
    let ctx = validate::Ctx {
        text,
        file,
        tree: &tree,
        base_dir: Some(base_dir),
        check_files: opts.check_files,
    };
    validate::validate(cell, &ctx, source)
}
