//! The trees a cell had after its recent changes, so that planning an
//! attach does not rebuild the current tree from the base and every
//! attached overlay (which costs a tree copy per overlay: quadratic in the
//! devices attached).
//!
//! An entry is keyed by what was attached when the tree was current: each
//! attached device's id and a hash of its overlay, in order. Trees are
//! moved, never copied: an attach takes the current tree out, applies its
//! overlay to it and puts it back under the new key; a detach takes it out,
//! removes the detached device's nodes ([`LiveTree::without`]) and puts it
//! back. A change whose tree is not kept falls back to
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
    /// The tree of the cell when `attached` were attached, if kept, taken
    /// out of the cache without a copy: the caller changes it (an attach
    /// applies its overlay, a detach removes its nodes) and puts it back
    /// under the key of what is attached then. (A copy is thousands of
    /// small allocations, and keeping the trees before and after each
    /// attach side by side held 400 KiB more: docs/benchmarks.md, "the kept
    /// tree moved, not copied".)
    pub fn take(&mut self, attached: &[AttachedDevice]) -> Option<LiveTree> {
        let key = key(attached);
        let i = self.entries.iter().position(|(k, _)| *k == key)?;
        self.entries.remove(i).map(|(_, tree)| tree)
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
