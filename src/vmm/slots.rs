//! KVM memory-slot numbers: handed out by [`SlotPool`], some for the life of
//! the cell (guest RAM, the channel, boot-time ivshmem), some returned and
//! reused (config-space mirrors, which come and go with every attach).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// The cell's unused KVM memory-slot numbers.
pub struct SlotPool {
    /// Above every number handed out so far.
    next: AtomicU32,
    /// Numbers given back, handed out again first by [`take`](Self::take).
    free: Mutex<Vec<u32>>,
}

impl SlotPool {
    /// A pool starting at slot `first` (the ones below are guest RAM).
    pub fn new(first: u32) -> Self {
        SlotPool {
            next: AtomicU32::new(first),
            free: Mutex::new(Vec::new()),
        }
    }

    /// `count` consecutive numbers, never given back.
    pub fn allocate(&self, count: u32) -> u32 {
        self.next.fetch_add(count, Ordering::Relaxed)
    }

    /// One number, to be given back with [`give_back`](Self::give_back)
    /// once its slot is deleted.
    pub fn take(&self) -> u32 {
        crate::sync::lock(&self.free)
            .pop()
            .unwrap_or_else(|| self.allocate(1))
    }

    /// Returns a number from [`take`](Self::take) whose slot KVM no longer has.
    pub fn give_back(&self, slot: u32) {
        crate::sync::lock(&self.free).push(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_numbers_are_reused_after_give_back_and_allocations_never_overlap() {
        let pool = SlotPool::new(3);
        let a = pool.take();
        let block = pool.allocate(5);
        let b = pool.take();
        assert_eq!((a, block, b), (3, 4, 9));
        pool.give_back(a);
        assert_eq!(pool.take(), 3);
        assert_eq!(pool.take(), 10);
    }
}
