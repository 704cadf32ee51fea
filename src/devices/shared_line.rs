//! A level-triggered interrupt line shared by several sources.
//!
//! The line's level is the OR of its sources' levels, and the line below
//! (the VMM's IOAPIC pin, or nothing yet) is driven only when that OR
//! changes. It is how a PCI host bridge's INTx pin carries every function
//! swizzled onto it, and how several devices share one IOAPIC pin
//! (`layout::IrqAllocator::allocate_shared`). Sharing needs level
//! triggering: the guest's handlers run for every interrupt on the line,
//! each asks its device whether it interrupted, and the line stays asserted
//! (so KVM delivers again after the EOI) until no source asserts it.

use super::InterruptLine;
use crate::sync;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// Keys handed out by [`SharedLine::source`] start here, above any key a
/// caller of [`SharedLine::set`] derives from a 32-bit address.
const FIRST_SOURCE_KEY: u64 = 1 << 32;

struct State {
    line: Option<Arc<dyn InterruptLine>>,
    /// Keys of the sources asserting the line now.
    asserted: BTreeSet<u64>,
    level: bool,
    next_key: u64,
}

/// A level-triggered line that is the OR of its sources.
pub struct SharedLine {
    state: Mutex<State>,
}

impl Default for SharedLine {
    fn default() -> Self {
        SharedLine {
            state: Mutex::new(State {
                line: None,
                asserted: BTreeSet::new(),
                level: false,
                next_key: FIRST_SOURCE_KEY,
            }),
        }
    }
}

impl SharedLine {
    /// A shared line driving `line`.
    pub fn new(line: Arc<dyn InterruptLine>) -> Self {
        let shared = SharedLine::default();
        shared.connect(line);
        shared
    }

    /// Source `key` drives its level; the line below follows the OR.
    pub fn set(&self, key: u64, level: bool) {
        let mut st = sync::lock(&self.state);
        if level {
            st.asserted.insert(key);
        } else {
            st.asserted.remove(&key);
        }
        let new = !st.asserted.is_empty();
        if new != st.level {
            st.level = new;
            if let Some(line) = &st.line {
                line.set_level(new);
            }
        }
    }

    /// Connects the line below and drives it to the current level.
    pub fn connect(&self, line: Arc<dyn InterruptLine>) {
        let mut st = sync::lock(&self.state);
        line.set_level(st.level);
        st.line = Some(line);
    }

    /// The current level (the OR of the sources).
    pub fn level(&self) -> bool {
        sync::lock(&self.state).level
    }

    /// How many sources assert the line now.
    pub fn asserting(&self) -> usize {
        sync::lock(&self.state).asserted.len()
    }

    /// A new source with a key of its own; dropping it deasserts it.
    pub fn source(self: &Arc<Self>) -> LineSource {
        let key = {
            let mut st = sync::lock(&self.state);
            let key = st.next_key;
            st.next_key = st.next_key.wrapping_add(1).max(FIRST_SOURCE_KEY);
            key
        };
        LineSource {
            line: self.clone(),
            key,
        }
    }
}

/// One source of a [`SharedLine`], an [`InterruptLine`] for a device model.
pub struct LineSource {
    line: Arc<SharedLine>,
    key: u64,
}

impl InterruptLine for LineSource {
    fn set_level(&self, level: bool) {
        self.line.set(self.key, level);
    }
}

impl Drop for LineSource {
    fn drop(&mut self) {
        self.line.set(self.key, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<bool>>);

    impl InterruptLine for Recorder {
        fn set_level(&self, level: bool) {
            sync::lock(&self.0).push(level);
        }
    }

    impl Recorder {
        fn seen(&self) -> Vec<bool> {
            sync::lock(&self.0).clone()
        }
    }

    #[test]
    fn the_line_is_the_or_of_its_sources_and_moves_only_when_the_or_changes() {
        let below = Arc::new(Recorder::default());
        let line = Arc::new(SharedLine::new(below.clone()));
        let (a, b) = (line.source(), line.source());
        a.set_level(true);
        b.set_level(true);
        a.set_level(false);
        assert!(line.level(), "b still asserts");
        b.set_level(false);
        assert!(!line.level());
        // Connected low, then one rise and one fall for the whole episode.
        assert_eq!(below.seen(), [false, true, false]);
    }

    #[test]
    fn a_repeated_assert_of_one_source_is_one_source() {
        let below = Arc::new(Recorder::default());
        let line = Arc::new(SharedLine::new(below.clone()));
        let a = line.source();
        a.set_level(true);
        a.set_level(true);
        assert_eq!(line.asserting(), 1);
        a.set_level(false);
        assert!(!line.level());
    }

    #[test]
    fn dropping_an_asserting_source_releases_the_line() {
        let below = Arc::new(Recorder::default());
        let line = Arc::new(SharedLine::new(below.clone()));
        let a = line.source();
        let b = line.source();
        a.set_level(true);
        b.set_level(true);
        drop(a);
        assert!(line.level(), "b still asserts after a went");
        drop(b);
        assert!(!line.level());
        assert_eq!(below.seen(), [false, true, false]);
    }

    #[test]
    fn a_line_connected_late_starts_at_the_current_level() {
        let line = Arc::new(SharedLine::default());
        line.set(7, true);
        let below = Arc::new(Recorder::default());
        line.connect(below.clone());
        assert_eq!(below.seen(), [true]);
    }
}
