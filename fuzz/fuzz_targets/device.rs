//! Device descriptions, as `cellvm attach` reads them: a TOML description
//! file (`config::parse_device`), or JSON of the same shape (input starting
//! with `{`) through `config::device_from_value`, as the control API gets it.
//!
//! Checks: no panic; a description that validates survives the CLI → API
//! trip (`Description::to_value`, then `device_from_value`) unchanged; its
//! attach plan on a cell either fails with a typed error or commits, puts
//! the nodes it names into the cell's tree, and detaches back to the
//! original layout.

#![no_main]

mod common;

use cellvm::attach;
use cellvm::config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let base = common::base_dir();
    let parsed = if text.trim_start().starts_with('{') {
        let Ok(value) = serde_json::from_str::<toml::Value>(text) else {
            return;
        };
        config::device_from_value(value, "<fuzz>.json", Some(base), &common::NO_FILES)
    } else {
        config::parse_device(text, None, base, &common::NO_FILES)
    };
    let desc = match parsed {
        Ok(desc) => desc,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };

    // What the CLI sends the cell, validated again there: the same device.
    let value = desc
        .to_value()
        .unwrap_or_else(|e| panic!("a valid description does not serialise: {e}"));
    let again = config::device_from_value(value, "<request>", Some(base), &common::NO_FILES)
        .unwrap_or_else(|e| panic!("the API refuses what the CLI sent: {e}"));
    assert_eq!(again.device, desc.device, "the device changed on the way");

    let cell = common::cell();
    let plan = match attach::plan(&desc.device, &cell.layout, &cell.tree, &[]) {
        Ok(plan) => plan,
        Err(e) => {
            let _ = (e.to_string(), e.kind());
            return;
        }
    };
    let id = plan.id.clone();
    let nodes = plan.nodes.clone();
    let mut layout = cell.layout.clone();
    let mut attached = Vec::new();
    plan.commit(&mut layout, &mut attached).unwrap();
    let live = attach::current_tree(&cell.tree, &attached).unwrap();
    for n in &nodes {
        assert!(live.contains(n), "{n} is not in the tree after the attach");
    }
    let detach = attach::plan_detach(&id, &layout, &attached).unwrap();
    detach.commit(&mut layout, &mut attached).unwrap();
    assert!(attached.is_empty());
    assert!(
        layout == cell.layout,
        "attach + detach of {id} did not restore the layout"
    );
});
