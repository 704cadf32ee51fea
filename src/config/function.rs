//! PCI function descriptions: one `[[pci_bridge.device]]` table alone in a
//! file (TOML, or JSON of the same shape) or in a control-API request, for
//! a function added to a bridge that is already there (`cellvm
//! add-function`, docs/pci.md "Functions on a running bridge"). The table
//! is read by the cell file's validator of bridge functions, so its keys,
//! defaults and messages are the cell file's.
//!
//! A function added at run time sits on the bridge's first bus and is not a
//! PCI-to-PCI bridge; the file holds exactly one function.

use super::error::ConfigError;
use super::model::{LoadOptions, PciDeviceConfig};
use super::raw::{self, RawPciBridge, Sp};
use super::source::{json_value, parse_toml, read_source, source_dir};
use super::validate::{self, Ctx};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The file's shape: `pci_bridge` is a table holding only `device`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawFunctionFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pci_bridge: Option<Sp<RawPciBridge>>,
}

/// A validated function description, and the table as written (to send
/// to a running cell, which validates it again against its bridge).
#[derive(Debug)]
pub struct FunctionDescription {
    /// The validated function.
    pub function: PciDeviceConfig,
    raw: RawFunctionFile,
}

impl FunctionDescription {
    /// The table as written, as a value tree of the file's shape.
    pub fn to_value(&self) -> Result<toml::Value, toml::ser::Error> {
        toml::Value::try_from(&self.raw)
    }
}

/// Reads and validates the function description file at `path`, for a
/// bridge whose first bus is not known yet (any bus number is accepted;
/// the cell checks it against the bridge).
pub fn load_function(path: &Path, opts: &LoadOptions) -> Result<FunctionDescription, ConfigError> {
    let text = read_source(path)?;
    let base_dir = source_dir(path);
    if let Some(value) = json_value(path, &text) {
        let file = path.display().to_string();
        return function_from_value(value?, &file, Some(base_dir), opts, None);
    }
    parse_function(&text, Some(path), base_dir, opts)
}

/// Validates function-description TOML `text` (see [`load_function`]).
pub fn parse_function(
    text: &str,
    source: Option<&Path>,
    base_dir: &Path,
    opts: &LoadOptions,
) -> Result<FunctionDescription, ConfigError> {
    let file = source.map_or_else(|| "<function>".to_string(), |p| p.display().to_string());
    let (tree, raw) = parse_toml::<RawFunctionFile>(text, &file)?;
    let ctx = Ctx {
        text,
        file,
        tree: &tree,
        base_dir: Some(base_dir),
        check_files: opts.check_files,
    };
    validate_function(&ctx, raw, None)
}

/// Validates a function description received as a value tree, for a
/// bridge whose first bus is `bus` (`None`: not known, any bus).
pub fn function_from_value(
    value: toml::Value,
    file: &str,
    base_dir: Option<&Path>,
    opts: &LoadOptions,
    bus: Option<u8>,
) -> Result<FunctionDescription, ConfigError> {
    let tree = raw::Node::Table(Vec::new());
    let raw = RawFunctionFile::deserialize(value)
        .map_err(|e| validate::schema_error("", file, &tree, &e))?;
    let ctx = Ctx {
        text: "",
        file: file.to_string(),
        tree: &tree,
        base_dir,
        check_files: opts.check_files,
    };
    validate_function(&ctx, raw, bus)
}

fn validate_function(
    ctx: &Ctx<'_>,
    raw: RawFunctionFile,
    bus: Option<u8>,
) -> Result<FunctionDescription, ConfigError> {
    let Some(br) = &raw.pci_bridge else {
        return Err(ctx.missing(
            &Default::default(),
            "pci_bridge.device",
            "write one [[pci_bridge.device]] table",
        ));
    };
    let only_device = [
        ("id", br.value.id.as_ref().map(|v| &v.span)),
        ("state", br.value.state.as_ref().map(|v| &v.span)),
        ("kind", br.value.kind.as_ref().map(|v| &v.span)),
        (
            "config_base",
            br.value.config_base.as_ref().map(|v| &v.span),
        ),
        ("bus_start", br.value.bus_start.as_ref().map(|v| &v.span)),
        ("bus_end", br.value.bus_end.as_ref().map(|v| &v.span)),
        ("mmio32", br.value.mmio32.as_ref().map(|v| &v.span)),
        ("mmio64", br.value.mmio64.as_ref().map(|v| &v.span)),
    ];
    if let Some((key, Some(span))) = only_device.into_iter().find(|(_, s)| s.is_some()) {
        return Err(ctx.invalid(
            span,
            &format!("pci_bridge.{key}"),
            "a function description holds one [[pci_bridge.device]] table; the bridge is named on the command line",
        ));
    }
    let count = br.value.device.as_ref().map_or(0, |d| d.value.len());
    if count != 1 {
        return Err(ctx.invalid(
            &br.span,
            "pci_bridge.device",
            format!("{count} functions; a function description holds exactly one"),
        ));
    }
    // The bridge's first bus, or (not known yet) whatever the table says.
    let first = bus.unwrap_or_else(|| {
        let written = br.value.device.iter().flat_map(|d| &d.value).next();
        written
            .and_then(|d| d.value.bus.as_ref())
            .and_then(|b| u8::try_from(b.value).ok())
            .unwrap_or(0)
    });
    let kind = br
        .value
        .device
        .iter()
        .flat_map(|d| &d.value)
        .find_map(|d| d.value.kind.as_ref());
    if let Some(kind) = kind.filter(|k| k.value == "pci-bridge") {
        return Err(ctx.invalid(
            &kind.span,
            "pci_bridge.device[0].kind",
            "a PCI-to-PCI bridge cannot be added to a running bridge; attach a bridge that has it",
        ));
    }
    let functions = validate::pci_devices(ctx, "pci_bridge", br, (first, first), false)?;
    let Some(function) = functions.into_iter().next() else {
        return Err(ctx.missing(&br.span, "pci_bridge.device", ""));
    };
    Ok(FunctionDescription { function, raw })
}
