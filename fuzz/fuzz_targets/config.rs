//! The cell config parser: arbitrary text through `config::parse` (host files
//! never checked), and what `cellvm check` / `cellvm run` do next with a
//! config that validates.
//!
//! Checks: no panic; a config that validates either lays out or fails with a
//! typed error that prints; one that lays out has a base device tree that
//! builds and parses back.

#![no_main]

mod common;

use cellvm::config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let cfg = match config::parse(text, None, common::base_dir(), &common::NO_FILES) {
        Ok(cfg) => cfg,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let layout = match cellvm::layout::place_cell(&cfg) {
        Ok(layout) => layout,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    // `check` accepted it, so `run` and `dtb` must be able to build its tree.
    let dtb = cellvm::fdt::build_base_dtb(&cfg, &layout)
        .unwrap_or_else(|e| panic!("a cell that lays out has no device tree: {e}"));
    cellvm::fdt::overlay::LiveTree::from_dtb(&dtb, "the base tree")
        .unwrap_or_else(|e| panic!("the base tree does not parse back: {e}"));
});
