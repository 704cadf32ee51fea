//! IOAPIC pin allocation.
//!
//! A pin is either **exclusive** (one holder: fixed pins, UARTs, connectors,
//! the platform's pins) or **shared** (level-triggered, one or more holders:
//! virtio-mmio devices and PCI INTx lines placed without a fixed pin). A
//! shared allocation takes the lowest free dynamic pin while one is free, and
//! then joins the shared pin with the fewest holders (the lowest such pin on
//! a tie), so a cell is not limited to the IOAPIC's 18 dynamic pins and the
//! result depends only on the order of placements. Only shared pins are
//! ever joined; an exclusive pin never gains a second holder.

use super::error::LayoutError;
use super::owner::Owner;

/// One pin: who holds it and whether others may join.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Pin {
    holders: Vec<Owner>,
    shared: bool,
}

/// Tracks which IOAPIC pins are in use and by whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrqAllocator {
    pins: Vec<Pin>,
    first_dynamic: u32,
}

impl IrqAllocator {
    /// An allocator for `pins` pins, handing out pins from `first_dynamic` up.
    pub fn new(pins: u32, first_dynamic: u32) -> Self {
        IrqAllocator {
            pins: vec![Pin::default(); pins as usize],
            first_dynamic,
        }
    }

    /// Takes a specific pin, exclusively.
    pub fn reserve(&mut self, owner: &Owner, pin: u32) -> Result<u32, LayoutError> {
        let count = self.pins.len();
        let Some(slot) = self.pins.get_mut(pin as usize) else {
            return Err(LayoutError::IrqOutOfRange {
                what: owner.clone(),
                pin,
                pins: count,
            });
        };
        if let Some(holder) = slot.holders.first() {
            return Err(LayoutError::IrqTaken {
                what: owner.clone(),
                pin,
                holder: holder.clone(),
            });
        }
        slot.holders.push(owner.clone());
        Ok(pin)
    }

    /// Takes the lowest free dynamic pin, exclusively.
    pub fn allocate(&mut self, owner: &Owner) -> Result<u32, LayoutError> {
        self.take_free(owner, false)
            .ok_or_else(|| LayoutError::IrqsExhausted(owner.clone()))
    }

    /// Takes a level-triggered pin that others may share: the lowest free
    /// dynamic pin, else the shared pin with the fewest holders.
    pub fn allocate_shared(&mut self, owner: &Owner) -> Result<u32, LayoutError> {
        if let Some(pin) = self.take_free(owner, true) {
            return Ok(pin);
        }
        let least = self
            .pins
            .iter_mut()
            .enumerate()
            .filter(|(_, p)| p.shared)
            .min_by_key(|(i, p)| (p.holders.len(), *i));
        match least {
            Some((i, pin)) => {
                pin.holders.push(owner.clone());
                u32::try_from(i).map_err(|_| LayoutError::IrqsExhausted(owner.clone()))
            }
            None => Err(LayoutError::IrqsExhausted(owner.clone())),
        }
    }

    fn take_free(&mut self, owner: &Owner, shared: bool) -> Option<u32> {
        let (i, pin) = self
            .pins
            .iter_mut()
            .enumerate()
            .skip(self.first_dynamic as usize)
            .find(|(_, p)| p.holders.is_empty())?;
        pin.holders.push(owner.clone());
        pin.shared = shared;
        u32::try_from(i).ok()
    }

    /// Frees every pin held by `owner` (a shared pin stays with its other
    /// holders).
    pub fn release(&mut self, owner: &Owner) {
        for pin in self.pins.iter_mut() {
            pin.holders.retain(|o| o != owner);
            if pin.holders.is_empty() {
                pin.shared = false;
            }
        }
    }

    /// Who holds `pin` first, if anyone.
    pub fn owner(&self, pin: u32) -> Option<&Owner> {
        self.holders(pin).first()
    }

    /// Every holder of `pin`, in the order they took it.
    pub fn holders(&self, pin: u32) -> &[Owner] {
        self.pins
            .get(pin as usize)
            .map_or(&[], |p| p.holders.as_slice())
    }

    /// Whether `pin` is a shared, level-triggered pin.
    pub fn is_shared(&self, pin: u32) -> bool {
        self.pins.get(pin as usize).is_some_and(|p| p.shared)
    }

    /// Every pin in use with each of its holders, by pin number.
    pub fn owners(&self) -> impl Iterator<Item = (u32, &Owner)> + '_ {
        self.pins.iter().enumerate().flat_map(|(pin, p)| {
            let pin = u32::try_from(pin).ok();
            p.holders.iter().filter_map(move |o| Some((pin?, o)))
        })
    }

    /// The pins held by `owner`, in ascending order.
    pub fn pins_of(&self, owner: &Owner) -> Vec<u32> {
        self.owners()
            .filter(|(_, o)| *o == owner)
            .map(|(pin, _)| pin)
            .collect()
    }
}
