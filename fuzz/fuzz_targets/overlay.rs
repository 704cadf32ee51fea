//! The overlay checker: arbitrary overlay blobs applied with
//! `fdt::overlay::LiveTree` to a cell's base tree, as `attach` does before
//! anything is sent to the guest. The input is one or more blobs, split at
//! the bytes `\0OVL` (the seed corpus holds the overlays cellvm builds).
//!
//! Checks: no panic; a refused overlay leaves the tree exactly as it was;
//! an applied one adds exactly the nodes `check` announced (and keeps every
//! node that was there), and the new tree survives a DTB round trip.

#![no_main]

mod common;

use cellvm::fdt::overlay::LiveTree;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeSet;
use std::sync::OnceLock;

fn base() -> &'static LiveTree {
    static BASE: OnceLock<LiveTree> = OnceLock::new();
    BASE.get_or_init(|| LiveTree::from_base(&common::cell().tree).unwrap())
}

fn split(data: &[u8]) -> Vec<&[u8]> {
    const SEP: &[u8] = b"\0OVL";
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(SEP.len()).position(|w| w == SEP) {
        out.push(&rest[..i]);
        rest = &rest[i + SEP.len()..];
    }
    out.push(rest);
    out
}

fuzz_target!(|data: &[u8]| {
    let mut live = base().clone();
    for (i, blob) in split(data).into_iter().take(4).enumerate() {
        let before = live.clone();
        let paths_before: BTreeSet<String> = live.paths().into_iter().collect();
        let what = format!("overlay {i}");
        let checked = live.check(blob, &what);
        match live.apply(blob, &what) {
            Err(e) => {
                let _ = e.to_string();
                assert!(live == before, "a refused overlay changed the tree: {e}");
            }
            Ok(adds) => {
                let announced = checked.expect("apply succeeded where check failed");
                assert_eq!(adds, announced);
                let paths_after: BTreeSet<String> = live.paths().into_iter().collect();
                let added: BTreeSet<String> = adds.iter().cloned().collect();
                assert!(paths_before.is_subset(&paths_after), "nodes went missing");
                let expected: BTreeSet<String> = paths_before.union(&added).cloned().collect();
                assert_eq!(paths_after, expected, "the overlay added other nodes");
                let dtb = live.to_dtb();
                let again = LiveTree::from_dtb(&dtb, "the new tree")
                    .unwrap_or_else(|e| panic!("the new tree does not parse back: {e}"));
                assert!(again == live, "the new tree changed through its DTB");
            }
        }
    }
});
