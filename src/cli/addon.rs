//! `cellvm plug` and `cellvm unplug`: add-on boards on a running cell
//! (docs/addons.md), `cellvm connect` and `cellvm disconnect`: connectors
//! at run time, and `cellvm dtb --plug`, a plug planned offline.

use super::{api_call, guest_wait, one_line};
use crate::api::protocol::Request;
use crate::attach::{AttachedDevice, PluggedAddon};
use crate::config::LoadOptions;
use crate::fdt::Node;
use crate::layout::CellLayout;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `CONNECTOR=ADDON.toml` of `cellvm dtb --plug`.
pub(super) fn parse_plug_arg(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((c, f)) if !c.is_empty() && !f.is_empty() => Ok((c.to_string(), PathBuf::from(f))),
        _ => Err(format!("expected CONNECTOR=ADDON.toml, got {s:?}")),
    }
}

/// The directory an add-on's relative paths resolve against, absolute (the
/// cell process has its own working directory).
pub(super) fn base_dir_of(path: &Path) -> Result<PathBuf, String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))
}

/// `cellvm plug CELL CONNECTOR ADDON.toml`.
pub(super) fn plug(cell: &str, connector: &str, path: &Path, timeout: u64) -> Result<u8, String> {
    // Validated here first, so errors carry the files' lines and columns;
    // the cell validates it again with the same code.
    let opts = LoadOptions { check_files: true };
    let description = crate::config::load_addon(path, &opts).map_err(|e| e.to_string())?;
    let addon = &description.addon;
    crate::fdt::dts::parse_overlay_source(&addon.overlay_name, &addon.overlay_text)
        .map_err(|e| crate::fdt::dts::located(&e))?;
    let value = description
        .to_value()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let (guest_ms, answer_within) = guest_wait(timeout);
    let request = Request::Plug {
        connector: connector.to_string(),
        addon: value,
        overlay_name: addon.overlay_name.clone(),
        overlay: addon.overlay_text.clone(),
        base_dir: Some(base_dir_of(path)?),
        timeout_ms: Some(guest_ms),
    };
    let r = api_call(cell, &request, answer_within)?;
    println!(
        "plugged {} into {cell}:{connector} in {:.1} ms (overlay {})",
        addon.name,
        r["elapsed_ms"].as_f64().unwrap_or_default(),
        r["overlay"]
    );
    for d in r["devices"].as_array().into_iter().flatten() {
        println!("  {}", one_line(d));
    }
    Ok(0)
}

/// `cellvm unplug CELL CONNECTOR [--force]`.
pub(super) fn unplug(cell: &str, connector: &str, force: bool, timeout: u64) -> Result<u8, String> {
    let (guest_ms, answer_within) = guest_wait(timeout);
    let request = Request::Unplug {
        connector: connector.to_string(),
        force,
        timeout_ms: Some(guest_ms),
    };
    let r = api_call(cell, &request, answer_within)?;
    println!("{}", one_line(&r));
    Ok(0)
}

/// Plugs each `(connector, add-on file)` into the freshly booted cell,
/// planned exactly as a running cell plans a plug; files are not checked
/// (as for `cellvm dtb`).
pub(super) fn plug_offline(
    base: &Node,
    layout: &mut CellLayout,
    attached: &[AttachedDevice],
    plugs: &[(String, PathBuf)],
) -> Result<Vec<PluggedAddon>, String> {
    let opts = LoadOptions { check_files: false };
    let mut plugged = Vec::new();
    for (connector, path) in plugs {
        let addon = match crate::config::load_addon(path, &opts) {
            Ok(d) => d.addon,
            Err(e) => return Err(e.to_string()),
        };
        let live =
            crate::attach::live_tree(base, attached, &[], &plugged).map_err(|e| e.to_string())?;
        let plan = crate::attach::plan_plug(&addon, connector, layout, base, &live)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        plan.commit(layout, &mut plugged)
            .map_err(|e| e.to_string())?;
    }
    Ok(plugged)
}

/// `cellvm connect CELL CONNECTOR.toml`.
pub(super) fn connect(cell: &str, path: &Path, timeout: u64) -> Result<u8, String> {
    let description = crate::config::load_connector(path).map_err(|e| e.to_string())?;
    let value = description
        .to_value()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let (guest_ms, answer_within) = guest_wait(timeout);
    let request = Request::Connect {
        connector: value,
        timeout_ms: Some(guest_ms),
    };
    println!("{}", one_line(&api_call(cell, &request, answer_within)?));
    Ok(0)
}

/// `cellvm disconnect CELL ID [--force]`.
pub(super) fn disconnect(cell: &str, id: &str, force: bool, timeout: u64) -> Result<u8, String> {
    let (guest_ms, answer_within) = guest_wait(timeout);
    let request = Request::Disconnect {
        id: id.to_string(),
        force,
        timeout_ms: Some(guest_ms),
    };
    // A forced disconnect may unplug a board first: two guest waits.
    let answer_within = answer_within.saturating_add(Duration::from_millis(guest_ms));
    println!("{}", one_line(&api_call(cell, &request, answer_within)?));
    Ok(0)
}
