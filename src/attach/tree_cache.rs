//! The trees a cell had after its recent changes, so that planning an
//! attach does not rebuild the current tree from the base and every
//! attached overlay (which costs a tree copy per overlay: quadratic in the
//! devices attached).
//!
//! An entry is keyed by what was attached when the tree was current: each
//! attached device's id and a hash of its overlay, in order. An attach
//! keeps the tree it planned on and the tree after it, so detaching the
//! device attached last finds its tree again; other changes fall back to
//! [`super::current_tree`]. The cache holds a few entries, most recently
//! used first.

use super::AttachedDevice;
use crate::fdt::overlay::LiveTree;
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};

/// Entries kept.
const CAPACITY: usize = 4;

/// What a tree was built from.
type Key = Vec<(String, u64)>;

fn key(attached: &[AttachedDevice]) -> Key {
    attached
        .iter()
        .map(|d| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            d.overlay.hash(&mut h);
            (d.id().to_string(), h.finish())
        })
        .collect()
}

/// Recent trees of one cell.
#[derive(Debug, Default)]
pub struct TreeCache {
    entries: VecDeque<(Key, LiveTree)>,
}

impl TreeCache {
    /// The tree of the cell when `attached` were attached, if kept.
    pub fn get(&mut self, attached: &[AttachedDevice]) -> Option<LiveTree> {
        let key = key(attached);
        let i = self.entries.iter().position(|(k, _)| *k == key)?;
        let entry = self.entries.remove(i)?;
        let tree = entry.1.clone();
        self.entries.push_front(entry);
        Some(tree)
    }

    /// Keeps `tree` as the cell's tree when `attached` are attached.
    pub fn put(&mut self, attached: &[AttachedDevice], tree: LiveTree) {
        let key = key(attached);
        self.entries.retain(|(k, _)| *k != key);
        self.entries.push_front((key, tree));
        self.entries.truncate(CAPACITY);
    }

    /// Forgets every tree (the base tree changed).
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}
