//! IOAPIC pin allocation.

use super::error::LayoutError;
use super::owner::Owner;

/// Tracks which IOAPIC pins are in use and by whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrqAllocator {
    owners: Vec<Option<Owner>>,
    first_dynamic: u32,
}

impl IrqAllocator {
    /// An allocator for `pins` pins, handing out pins from `first_dynamic` up.
    pub fn new(pins: u32, first_dynamic: u32) -> Self {
        IrqAllocator {
            owners: vec![None; pins as usize],
            first_dynamic,
        }
    }

    /// Takes a specific pin.
    pub fn reserve(&mut self, owner: &Owner, pin: u32) -> Result<u32, LayoutError> {
        let pins = self.owners.len();
        let Some(slot) = self.owners.get_mut(pin as usize) else {
            return Err(LayoutError::IrqOutOfRange {
                what: owner.clone(),
                pin,
                pins,
            });
        };
        if let Some(holder) = slot {
            return Err(LayoutError::IrqTaken {
                what: owner.clone(),
                pin,
                holder: holder.clone(),
            });
        }
        *slot = Some(owner.clone());
        Ok(pin)
    }

    /// Takes the lowest free dynamic pin.
    pub fn allocate(&mut self, owner: &Owner) -> Result<u32, LayoutError> {
        let first = self.first_dynamic as usize;
        let free = self
            .owners
            .iter()
            .enumerate()
            .skip(first)
            .find(|(_, o)| o.is_none())
            .map(|(i, _)| i);
        match free.and_then(|i| Some((i, self.owners.get_mut(i)?))) {
            Some((i, slot)) => {
                *slot = Some(owner.clone());
                Ok(i as u32)
            }
            None => Err(LayoutError::IrqsExhausted(owner.clone())),
        }
    }

    /// Frees every pin held by `owner`.
    pub fn release(&mut self, owner: &Owner) {
        for o in self.owners.iter_mut() {
            if o.as_ref() == Some(owner) {
                *o = None;
            }
        }
    }

    /// Who holds `pin`, if anyone.
    pub fn owner(&self, pin: u32) -> Option<&Owner> {
        self.owners.get(pin as usize).and_then(Option::as_ref)
    }

    /// Every pin in use, with its owner, by pin number.
    pub fn owners(&self) -> impl Iterator<Item = (u32, &Owner)> + '_ {
        self.owners
            .iter()
            .enumerate()
            .filter_map(|(pin, o)| Some((u32::try_from(pin).ok()?, o.as_ref()?)))
    }

    /// The pins held by `owner`, in ascending order.
    pub fn pins_of(&self, owner: &Owner) -> Vec<u32> {
        self.owners()
            .filter(|(_, o)| *o == owner)
            .map(|(pin, _)| pin)
            .collect()
    }
}
