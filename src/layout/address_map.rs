//! Range reservations: guest-physical addresses, or I/O ports.

use super::error::LayoutError;
use super::owner::Owner;
use crate::config::Window;

/// One reserved range and who owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Who holds it (named in collision messages; the key for release).
    pub owner: Owner,
    /// The range.
    pub window: Window,
}

/// Non-overlapping reservations, sorted by base address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressMap {
    entries: Vec<Reservation>,
}

impl AddressMap {
    /// All reservations, sorted by base.
    pub fn entries(&self) -> &[Reservation] {
        &self.entries
    }

    /// Reserves exactly `window` for `owner`, failing on any overlap or on an
    /// empty or wrapping range.
    pub fn reserve(&mut self, owner: Owner, window: Window) -> Result<Window, LayoutError> {
        let end = window
            .base
            .checked_add(window.size)
            .filter(|_| window.size > 0);
        let Some(end) = end else {
            return Err(LayoutError::Collision {
                what: owner,
                base: window.base,
                end: window.base,
                other: None,
            });
        };
        if let Some(other) = self.overlapping(window.base, end) {
            return Err(LayoutError::Collision {
                what: owner,
                base: window.base,
                end,
                other: Some(other.owner.clone()),
            });
        }
        let at = self
            .entries
            .partition_point(|r| r.window.base < window.base);
        self.entries.insert(at, Reservation { owner, window });
        Ok(window)
    }

    /// Finds the lowest `align`-aligned free range of `size` bytes inside
    /// `pool` and reserves it.
    pub fn allocate(
        &mut self,
        owner: Owner,
        size: u64,
        align: u64,
        pool: (u64, u64),
        pool_name: &'static str,
    ) -> Result<Window, LayoutError> {
        let align = align.max(1);
        let mut candidate = align_up(pool.0, align);
        while let Some(end) = candidate.checked_add(size) {
            if size == 0 || end > pool.1 {
                break;
            }
            match self.overlapping(candidate, end) {
                None => {
                    return self.reserve(
                        owner,
                        Window {
                            base: candidate,
                            size,
                        },
                    )
                }
                Some(r) => candidate = align_up(r.window.end(), align),
            }
        }
        Err(LayoutError::Exhausted {
            what: owner,
            size,
            pool: pool_name,
        })
    }

    /// Releases every reservation owned by `owner`; returns how many there were.
    pub fn release(&mut self, owner: &Owner) -> usize {
        let before = self.entries.len();
        self.entries.retain(|r| r.owner != *owner);
        before - self.entries.len()
    }

    /// The reservations owned by `owner`, sorted by base.
    pub fn owned_by<'a>(&'a self, owner: &'a Owner) -> impl Iterator<Item = &'a Reservation> + 'a {
        self.entries.iter().filter(move |r| r.owner == *owner)
    }

    /// The first reservation overlapping `[base, end)`, if any.
    pub fn overlapping(&self, base: u64, end: u64) -> Option<&Reservation> {
        self.entries
            .iter()
            .find(|r| r.window.base < end && base < r.window.end())
    }
}

fn align_up(v: u64, align: u64) -> u64 {
    v.div_ceil(align).saturating_mul(align)
}
