//! `cellvm add-function` and `cellvm remove-function`: one function more
//! or less on a PCI host bridge of a running cell (docs/pci.md,
//! "Functions on a running bridge").

use super::{api_call, guest_wait};
use crate::api::protocol::Request;
use crate::config::LoadOptions;
use std::path::Path;

/// Prints what changed: `added test e0000000:08:03.0 to hot0 in 41.2 ms`.
fn report(r: &serde_json::Value) {
    let change = r["change"].as_str().unwrap_or("changed");
    let prep = if change == "added" { "to" } else { "from" };
    println!(
        "{change} {} {} {prep} {} in {:.1} ms",
        r["kind"].as_str().unwrap_or("function"),
        r["function"].as_str().unwrap_or("?"),
        r["bridge"].as_str().unwrap_or("?"),
        r["elapsed_ms"].as_f64().unwrap_or_default()
    );
}

/// `cellvm add-function CELL BRIDGE FUNCTION.toml`.
pub(super) fn add(cell: &str, bridge: &str, path: &Path, timeout: u64) -> Result<u8, String> {
    // Validated here first, so errors carry the file's lines and columns;
    // the cell validates it again against the bridge.
    let opts = LoadOptions { check_files: true };
    let description = crate::config::load_function(path, &opts).map_err(|e| e.to_string())?;
    let value = description
        .to_value()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let (guest_ms, answer_within) = guest_wait(timeout);
    let request = Request::AddFunction {
        bridge: bridge.to_string(),
        function: value,
        base_dir: Some(super::addon::base_dir_of(path)?),
        timeout_ms: Some(guest_ms),
    };
    report(&api_call(cell, &request, answer_within)?);
    Ok(0)
}

/// `cellvm remove-function CELL BRIDGE DD.F`.
pub(super) fn remove(cell: &str, bridge: &str, function: &str, timeout: u64) -> Result<u8, String> {
    let (guest_ms, answer_within) = guest_wait(timeout);
    let request = Request::RemoveFunction {
        bridge: bridge.to_string(),
        function: function.to_string(),
        timeout_ms: Some(guest_ms),
    };
    report(&api_call(cell, &request, answer_within)?);
    Ok(0)
}
