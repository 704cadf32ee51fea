//! Add-on board overlay sources (docs/addons.md): arbitrary text read by
//! `fdt::dts::parse_overlay_source` and planned as a board on connector j1
//! of the fuzz cell, as `cellvm plug` does before anything is sent.
//!
//! Checks: no panic; a syntax error has a line and column inside the text;
//! a plan adds only nodes under the connector, applies to the cell's tree,
//! and unplugging it restores the layout exactly.

#![no_main]

mod common;

use cellvm::attach::{live_tree, plan_plug, plan_unplug};
use cellvm::config::{AddonConfig, DeviceConfig, DeviceState, VirtioKind, VirtioMmioConfig};
use cellvm::fdt::dts::parse_overlay_source;
use cellvm::fdt::FdtError;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse_overlay_source("fuzz.dtso", &text) {
        Err(FdtError::Syntax { line, column, .. }) => {
            let lines = text.split('\n').count();
            assert!(line >= 1 && line <= lines, "line {line} of {lines}");
            assert!(column >= 1, "column {column}");
        }
        Err(other) => panic!("a syntax error that is not FdtError::Syntax: {other}"),
        Ok(_) => {}
    }
    let cell = common::cell();
    let addon = AddonConfig {
        name: "fuzz-board".into(),
        overlay_name: "fuzz.dtso".into(),
        overlay_text: text.into_owned(),
        devices: vec![DeviceConfig::VirtioMmio(VirtioMmioConfig {
            id: "fuzz-rng".into(),
            state: DeviceState::Okay,
            kind: VirtioKind::Rng,
            base: None,
            irq: None,
            backend: Default::default(),
        })],
    };
    let live = live_tree(&cell.tree, &[], &[], &[]).expect("the cell's tree");
    let Ok(plan) = plan_plug(&addon, "j1", &cell.layout, &cell.tree, &live) else {
        return;
    };
    let connector = cell.layout.connector("j1").expect("connector j1").path();
    for node in &plan.plugged.nodes {
        assert!(
            node.starts_with(&format!("{connector}/")),
            "{node} is outside {connector}"
        );
    }
    let mut layout = cell.layout.clone();
    let mut plugged = Vec::new();
    plan.commit(&mut layout, &mut plugged).expect("commit");
    let unplug = plan_unplug("j1", &layout, &plugged).expect("unplug plan");
    unplug.commit(&mut layout, &mut plugged).expect("unplug");
    assert!(layout == cell.layout, "unplugging did not restore the layout");
});
