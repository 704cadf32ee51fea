//! pvpanic device (QEMU's `pvpanic-mmio` interface, `qemu,pvpanic-mmio` in
//! the device tree; Linux's `pvpanic-mmio` driver binds it). At
//! [`crate::platform::PVPANIC_BASE`].
//!
//! - A read of byte 0 returns the events cellvm handles:
//!   [`PVPANIC_PANICKED`]. Other bytes read as 0.
//! - A write of byte 0 reports events: [`PVPANIC_PANICKED`] stops the cell
//!   with [`StopReason::GuestPanic`] (exit status 5). Other bits (crash
//!   kernel loaded, shutdown) are not offered and are ignored with a
//!   rate-limited log line, as are writes elsewhere.

use super::BusDevice;
use crate::ratelimit::RateLimiter;
use crate::stop::{StopHandle, StopReason};

/// The "guest panicked" event bit.
pub const PVPANIC_PANICKED: u8 = 1 << 0;

/// See the module documentation.
pub struct Pvpanic {
    stop: StopHandle,
    ignored: RateLimiter,
}

impl Pvpanic {
    /// A device that stops the cell through `stop` on a panic.
    pub fn new(stop: StopHandle) -> Self {
        Pvpanic {
            stop,
            ignored: RateLimiter::new(5),
        }
    }
}

impl BusDevice for Pvpanic {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset == 0 {
            if let Some(first) = data.first_mut() {
                *first = PVPANIC_PANICKED;
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data.first()) {
            (0, Some(events)) if events & PVPANIC_PANICKED != 0 => {
                self.stop.stop(StopReason::GuestPanic);
            }
            _ => {
                if self.ignored.allow() {
                    log::warn!("pvpanic: ignored write of {data:02x?} at offset {offset:#x}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_offers_the_panicked_event_only() {
        let mut p = Pvpanic::new(StopHandle::new().unwrap());
        let mut b = [0xffu8; 4];
        p.read(0, &mut b);
        assert_eq!(b, [PVPANIC_PANICKED, 0, 0, 0]);
        let mut b = [0xffu8; 1];
        p.read(1, &mut b);
        assert_eq!(b, [0]);
    }

    #[test]
    fn a_panicked_event_stops_the_cell_as_a_guest_panic() {
        let stop = StopHandle::new().unwrap();
        let mut p = Pvpanic::new(stop.clone());
        p.write(0, &[PVPANIC_PANICKED]);
        assert_eq!(stop.reason(), Some(StopReason::GuestPanic));
    }

    #[test]
    fn other_events_and_offsets_are_ignored_and_the_cell_keeps_running() {
        let stop = StopHandle::new().unwrap();
        let mut p = Pvpanic::new(stop.clone());
        p.write(0, &[1 << 1]);
        p.write(1, &[PVPANIC_PANICKED]);
        p.write(0, &[]);
        assert!(!stop.is_stopped());
    }
}
