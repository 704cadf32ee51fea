//! Device descriptions: one device table of a cell file (`[[virtio_mmio]]`,
//! `[[pci_bridge]]` with its `[[pci_bridge.device]]` tables, or `[[uart]]`)
//! on its own, as a file (TOML, or JSON of the same shape) or as a value in
//! a control-API request. Read by the cell file's validator, so the keys,
//! defaults, rules and messages are the cell file's (docs/overlays.md,
//! "Description files").

use super::error::ConfigError;
use super::model::{DeviceConfig, LoadOptions};
use super::raw;
use super::source::{json_value, parse_toml, read_source, source_dir};
use super::validate;
use std::path::Path;

/// Reads and validates the device description file at `path`: one device
/// table in the cell file's syntax (`[[virtio_mmio]]`, `[[pci_bridge]]` with
/// its `[[pci_bridge.device]]` tables, or `[[uart]]`), TOML, or JSON of the
/// same shape if the name ends in `.json`. Relative paths inside resolve
/// against the file's directory; errors are those of a cell file.
pub fn load_device(path: &Path, opts: &LoadOptions) -> Result<Description, ConfigError> {
    let text = read_source(path)?;
    let base_dir = source_dir(path);
    match json_value(path, &text) {
        Some(value) => device_from_value(value?, &path.display().to_string(), Some(base_dir), opts),
        None => parse_device(&text, Some(path), base_dir, opts),
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
    let (tree, devices) = parse_toml::<raw::RawDevices>(text, &file)?;
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
