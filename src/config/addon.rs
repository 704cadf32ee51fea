//! Add-on board descriptions (docs/addons.md): a TOML file naming the
//! board, its device-tree overlay source (a `.dtso` file the user writes)
//! and the devices cellvm serves for it, in the cell file's device tables.
//!
//! ```toml
//! name = "sensor-board"
//! overlay = "sensor-board.dtso"     # relative to this file
//!
//! [[virtio_mmio]]                   # placed in the connector's window
//! id = "sensor-disk"
//! kind = "block"
//! path = "sensor.img"
//! ```
//!
//! The devices are validated by the cell file's code (same keys, defaults
//! and messages), with three rules of their own: no fixed addresses or pins
//! (`base`, `irq`, `config_base`, an `mmio32` base, `mmio64`: the
//! connector's window and pins place them), no `state` other than `okay`
//! (the board is plugged in use); a `[[uart]]` has no `port` or `irq` (it
//! is memory-mapped on the connector). The
//! overlay file is read here, as text; `fdt::dts` parses it.

use super::error::ConfigError;
use super::model::{DeviceConfig, DeviceState, LoadOptions};
use super::raw::RawAddon;
use super::source::{parse_toml, read_source, source_dir};
use super::validate::{self, Ctx, Spans};
use std::path::{Path, PathBuf};

/// Largest overlay source an add-on may have (256 KiB: far above any
/// board, and inside one control-API request line).
pub const MAX_OVERLAY_SOURCE: u64 = 256 << 10;

/// A validated add-on board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddonConfig {
    /// The board's name (`[A-Za-z0-9_-]`, 1-32 characters).
    pub name: String,
    /// The overlay source's name, for messages (`sensor-board.dtso`, as
    /// resolved).
    pub overlay_name: String,
    /// The overlay source's text.
    pub overlay_text: String,
    /// The devices cellvm serves for the board: its virtio-mmio devices,
    /// then its PCI bridges, then its UARTs, each in file order, with no
    /// fixed addresses or pins.
    pub devices: Vec<DeviceConfig>,
}

/// A validated add-on and its file as written (to send to a running cell,
/// which validates it again with the same code).
#[derive(Debug)]
pub struct AddonDescription {
    /// The add-on.
    pub addon: AddonConfig,
    raw: RawAddon,
}

impl AddonDescription {
    /// The add-on file as a value tree (paths as written: send the file's
    /// directory along to resolve them).
    pub fn to_value(&self) -> Result<toml::Value, toml::ser::Error> {
        toml::Value::try_from(&self.raw)
    }
}

/// Reads and validates the add-on file at `path` and reads its overlay
/// source. Relative paths resolve against the file's directory.
pub fn load_addon(path: &Path, opts: &LoadOptions) -> Result<AddonDescription, ConfigError> {
    let text = read_source(path)?;
    let file = path.display().to_string();
    let (tree, raw) = parse_toml::<RawAddon>(&text, &file)?;
    let ctx = Ctx {
        text: &text,
        file,
        tree: &tree,
        base_dir: Some(source_dir(path)),
        check_files: opts.check_files,
    };
    let overlay_path = overlay_path(&ctx, &raw)?;
    let overlay_text = read_overlay(&ctx, &raw, &overlay_path)?;
    let addon = validate_addon(&ctx, &raw, &overlay_path, overlay_text)?;
    Ok(AddonDescription { addon, raw })
}

/// Validates an add-on received as a value tree (as the control API
/// receives it) with its overlay source's name and text. `file` names it
/// in messages; relative paths resolve against `base_dir`.
pub fn addon_from_value(
    value: toml::Value,
    overlay: (&str, &str),
    file: &str,
    base_dir: Option<&Path>,
    opts: &LoadOptions,
) -> Result<AddonConfig, ConfigError> {
    use serde::Deserialize;
    let tree = super::raw::Node::Table(Vec::new());
    let raw =
        RawAddon::deserialize(value).map_err(|e| validate::schema_error("", file, &tree, &e))?;
    let ctx = Ctx {
        text: "",
        file: file.to_string(),
        tree: &tree,
        base_dir,
        check_files: opts.check_files,
    };
    if raw.overlay.is_none() {
        return Err(ctx.missing(&None, "overlay", ""));
    }
    if overlay.1.len() as u64 > MAX_OVERLAY_SOURCE {
        return Err(ctx.invalid(
            &None,
            "overlay",
            format!(
                "{} is {} bytes; an overlay source may have at most {MAX_OVERLAY_SOURCE}",
                overlay.0,
                overlay.1.len()
            ),
        ));
    }
    validate_addon(&ctx, &raw, Path::new(overlay.0), overlay.1.to_string())
}

/// The resolved path of the `overlay` key.
fn overlay_path(ctx: &Ctx<'_>, raw: &RawAddon) -> Result<PathBuf, ConfigError> {
    match &raw.overlay {
        Some(o) => ctx.path(o, "overlay"),
        None => Err(ctx.missing(&None, "overlay", " (the board's .dtso file)")),
    }
}

/// The overlay source's text (at most [`MAX_OVERLAY_SOURCE`] bytes, UTF-8).
fn read_overlay(ctx: &Ctx<'_>, raw: &RawAddon, path: &Path) -> Result<String, ConfigError> {
    let span = raw.overlay.as_ref().and_then(|o| o.span.clone());
    let invalid = |message: String| ctx.invalid(&span, "overlay", message);
    let meta = std::fs::metadata(path)
        .map_err(|e| ctx.file_error(&span, "overlay", "overlay source", path, e))?;
    if meta.len() > MAX_OVERLAY_SOURCE {
        return Err(invalid(format!(
            "{} is {} bytes; an overlay source may have at most {MAX_OVERLAY_SOURCE}",
            path.display(),
            meta.len()
        )));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| ctx.file_error(&span, "overlay", "overlay source", path, e))?;
    String::from_utf8(bytes).map_err(|_| invalid(format!("{} is not UTF-8 text", path.display())))
}

fn validate_addon(
    ctx: &Ctx<'_>,
    raw: &RawAddon,
    overlay_path: &Path,
    overlay_text: String,
) -> Result<AddonConfig, ConfigError> {
    let name = match &raw.name {
        Some(n) => ctx.id(n, "name")?,
        None => return Err(ctx.missing(&None, "name", "")),
    };
    let mut spans = Spans::default();
    let mut devices = Vec::new();
    for (i, dev) in raw.virtio_mmio.iter().flat_map(|v| &v.value).enumerate() {
        let f = format!("virtio_mmio[{i}]");
        for (key, span) in [
            ("base", dev.value.base.as_ref().map(|b| &b.span)),
            ("irq", dev.value.irq.as_ref().map(|q| &q.span)),
        ] {
            if let Some(span) = span {
                return Err(ctx.invalid(
                    span,
                    &format!("{f}.{key}"),
                    "an add-on's devices are placed in the connector's window and pins; leave base and irq out",
                ));
            }
        }
        let cfg = validate::virtio(ctx, i, dev, &mut spans)?;
        if cfg.state != DeviceState::Okay {
            let span = dev.value.state.as_ref().and_then(|s| s.span.clone());
            return Err(ctx.invalid(
                &span,
                &format!("{f}.state"),
                "an add-on's devices are in use when it is plugged: leave state out or say \"okay\"",
            ));
        }
        devices.push(DeviceConfig::VirtioMmio(cfg));
    }
    for (i, br) in raw.pci_bridge.iter().flat_map(|v| &v.value).enumerate() {
        let f = format!("pci_bridge[{i}]");
        let v = &br.value;
        let fixed = [
            ("config_base", v.config_base.as_ref().map(|b| &b.span)),
            ("mmio64", v.mmio64.as_ref().map(|w| &w.span)),
            (
                "mmio32.base",
                v.mmio32
                    .as_ref()
                    .and_then(|w| w.value.base.as_ref())
                    .map(|b| &b.span),
            ),
        ];
        for (key, span) in fixed {
            if let Some(span) = span {
                return Err(ctx.invalid(
                    span,
                    &format!("{f}.{key}"),
                    "an add-on's bridge is placed in the connector's window (give mmio32 a \
                     size only) and has no 64-bit window",
                ));
            }
        }
        let cfg = validate::bridge(ctx, i, br, &mut spans)?;
        if cfg.state != DeviceState::Okay {
            let span = v.state.as_ref().and_then(|s| s.span.clone());
            return Err(ctx.invalid(
                &span,
                &format!("{f}.state"),
                "an add-on's devices are in use when it is plugged: leave state out or say \"okay\"",
            ));
        }
        devices.push(DeviceConfig::PciBridge(cfg));
    }
    for (i, u) in raw.uart.iter().flat_map(|v| &v.value).enumerate() {
        let f = format!("uart[{i}]");
        let v = &u.value;
        for (key, span) in [
            ("port", v.port.as_ref().map(|p| &p.span)),
            ("irq", v.irq.as_ref().map(|q| &q.span)),
        ] {
            if let Some(span) = span {
                return Err(ctx.invalid(
                    span,
                    &format!("{f}.{key}"),
                    "an add-on's UART is memory-mapped in the connector's window on one of its \
                     pins; leave port and irq out",
                ));
            }
        }
        let cfg = validate::uart(ctx, i, u, &mut spans)?;
        if cfg.state != DeviceState::Okay {
            let span = v.state.as_ref().and_then(|s| s.span.clone());
            return Err(ctx.invalid(
                &span,
                &format!("{f}.state"),
                "an add-on's devices are in use when it is plugged: leave state out or say \"okay\"",
            ));
        }
        devices.push(DeviceConfig::Uart(cfg));
    }
    validate::unique_ids(ctx, &spans)?;
    Ok(AddonConfig {
        name,
        overlay_name: overlay_path.display().to_string(),
        overlay_text,
        devices,
    })
}
