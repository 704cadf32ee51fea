//! IOAPIC pin allocation.

use super::LayoutError;

/// Tracks which IOAPIC pins are in use and by whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrqAllocator {
    owners: Vec<Option<String>>,
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
    pub fn reserve(&mut self, owner: &str, pin: u32) -> Result<u32, LayoutError> {
        let slot = self.owners.get_mut(pin as usize).ok_or(LayoutError::Irq {
            what: owner.to_string(),
            pin,
            reason: "out of range (the IOAPIC has 24 pins)",
        })?;
        if slot.is_some() {
            return Err(LayoutError::Irq {
                what: owner.to_string(),
                pin,
                reason: "already in use",
            });
        }
        *slot = Some(owner.to_string());
        Ok(pin)
    }

    /// Takes the lowest free dynamic pin.
    pub fn allocate(&mut self, owner: &str) -> Result<u32, LayoutError> {
        let first = self.first_dynamic as usize;
        let free = self
            .owners
            .iter()
            .enumerate()
            .skip(first)
            .find(|(_, o)| o.is_none())
            .map(|(i, _)| i);
        match free {
            Some(i) => {
                self.owners[i] = Some(owner.to_string());
                Ok(i as u32)
            }
            None => Err(LayoutError::IrqsExhausted(owner.to_string())),
        }
    }

    /// Frees every pin held by `owner`.
    pub fn release(&mut self, owner: &str) {
        for o in self.owners.iter_mut() {
            if o.as_deref() == Some(owner) {
                *o = None;
            }
        }
    }

    /// Who holds `pin`, if anyone.
    pub fn owner(&self, pin: u32) -> Option<&str> {
        self.owners.get(pin as usize).and_then(|o| o.as_deref())
    }

    /// Every pin in use, with its owner, by pin number.
    pub fn owners(&self) -> impl Iterator<Item = (u32, &str)> + '_ {
        self.owners
            .iter()
            .enumerate()
            .filter_map(|(pin, o)| Some((u32::try_from(pin).ok()?, o.as_deref()?)))
    }

    /// The pins held by `owner`, in ascending order.
    pub fn pins_of(&self, owner: &str) -> Vec<u32> {
        self.owners()
            .filter(|(_, o)| *o == owner)
            .map(|(pin, _)| pin)
            .collect()
    }
}
