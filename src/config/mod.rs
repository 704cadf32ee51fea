//! Cell configuration: TOML text → validated [`CellConfig`].
//!
//! [`load`] reads a cell file, [`parse`] validates text. Every error is a
//! [`ConfigError`] that prints as one line, `file:line:column: field: message`.
//! The file format is documented in `docs/config.md`.

mod error;
mod kernel_image;
mod model;
mod origins;
mod raw;
mod size;
mod validate;

#[cfg(test)]
mod description_tests;
#[cfg(test)]
mod tests;

use std::path::Path;

pub use error::{ConfigError, Location};
pub use kernel_image::{detect_kernel_format, kernel_format_from_header, KernelFileError};
pub use model::*;
pub use origins::{Origin, Origins};
pub use size::{human_size, parse_size, HumanSize, SizeError};

/// Largest vCPU count a cell may have.
pub const MAX_VCPUS: u8 = 64;

/// Kernel command line used when the config gives none.
pub const DEFAULT_CMDLINE: &str = validate::DEFAULT_CMDLINE;

/// How [`load`] and [`parse`] treat the files a config names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Check that the kernel and initrd exist and are readable, and detect
    /// the kernel format from the image. When `false` (e.g. `cellvm dtb`),
    /// nothing is read and the format defaults to bzImage unless given.
    pub check_files: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { check_files: true }
    }
}

/// Reads and validates the cell file at `path`. Relative paths inside it
/// resolve against the file's directory.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<CellConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    let base_dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    parse(&text, Some(path), base_dir, opts)
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
    let tree: raw::Node =
        toml::from_str(text).map_err(|e| validate::syntax_error(text, &file, &e))?;
    let cell: raw::RawCell =
        toml::from_str(text).map_err(|e| validate::schema_error(text, &file, &tree, &e))?;
    let ctx = validate::Ctx {
        text,
        file,
        tree: &tree,
        base_dir: Some(base_dir),
        check_files: opts.check_files,
    };
    validate::validate(cell, &ctx, source)
}

/// Whether `s` is a valid device id, cell name or ivshmem region name
/// (`[A-Za-z0-9_-]{1,32}`).
pub fn valid_id(s: &str) -> bool {
    validate::valid_id(s)
}

/// Reads and validates the device description file at `path`: one device
/// table in the cell file's syntax (`[[virtio_mmio]]`, `[[pci_bridge]]` with
/// its `[[pci_bridge.device]]` tables, or `[[uart]]`), TOML, or JSON of the
/// same shape if the name ends in `.json`. Relative paths inside resolve
/// against the file's directory; errors are those of a cell file.
pub fn load_device(path: &Path, opts: &LoadOptions) -> Result<Description, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    let base_dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if is_json {
        let value: toml::Value = serde_json::from_str(&text).map_err(|e| ConfigError::Syntax {
            at: Location {
                file: path.display().to_string(),
                line: e.line().max(1),
                column: e.column().max(1),
            },
            field: "<root>".to_string(),
            message: format!("invalid JSON: {e}"),
        })?;
        device_from_value(value, &path.display().to_string(), Some(base_dir), opts)
    } else {
        parse_device(&text, Some(path), base_dir, opts)
    }
}

/// Validates device-description TOML `text` (see [`load_device`]).
pub fn parse_device(
    text: &str,
    source: Option<&Path>,
    base_dir: &Path,
    opts: &LoadOptions,
) -> Result<Description, ConfigError> {
    let file = source.map_or_else(|| "<description>".to_string(), |p| p.display().to_string());
    let tree: raw::Node =
        toml::from_str(text).map_err(|e| validate::syntax_error(text, &file, &e))?;
    let devices: raw::RawDevices =
        toml::from_str(text).map_err(|e| validate::schema_error(text, &file, &tree, &e))?;
    let ctx = validate::Ctx {
        text,
        file,
        tree: &tree,
        base_dir: Some(base_dir),
        check_files: opts.check_files,
    };
    let device = validate::device(&devices, &ctx)?;
    Ok(Description {
        device,
        raw: devices,
    })
}

/// Validates a device description received as a value tree (a JSON object
/// of the description's shape, as the control API receives it). `file`
/// names it in messages; relative paths resolve against `base_dir`, and are
/// refused without one.
pub fn device_from_value(
    value: toml::Value,
    file: &str,
    base_dir: Option<&Path>,
    opts: &LoadOptions,
) -> Result<Description, ConfigError> {
    use serde::Deserialize;
    let tree = raw::Node::Table(Vec::new());
    let devices = raw::RawDevices::deserialize(value)
        .map_err(|e| validate::schema_error("", file, &tree, &e))?;
    let ctx = validate::Ctx {
        text: "",
        file: file.to_string(),
        tree: &tree,
        base_dir,
        check_files: opts.check_files,
    };
    let device = validate::device(&devices, &ctx)?;
    Ok(Description {
        device,
        raw: devices,
    })
}

/// A validated device description: the device, and the table as written
/// (to send to a running cell, which validates it again with the same
/// code).
#[derive(Debug)]
pub struct Description {
    /// The validated device.
    pub device: DeviceConfig,
    raw: raw::RawDevices,
}

impl Description {
    /// The table as written, as a value tree of the description's shape
    /// (paths as written: send the description's directory along to
    /// resolve them).
    pub fn to_value(&self) -> Result<toml::Value, toml::ser::Error> {
        toml::Value::try_from(&self.raw)
    }
}
