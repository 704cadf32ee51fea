//! Boot-timer device (Firecracker's pattern): the guest writes
//! [`BOOT_TIMER_MAGIC`] as a 32-bit value and cellvm logs the time elapsed
//! since it started. From a Linux guest: `devmem 0xd0001000 32 0x12345678`.

use super::{le_value, BusDevice};
use crate::platform::BOOT_TIMER_MAGIC;
use crate::ratelimit::RateLimiter;
use crate::sync;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Marks recorded at most; later ones are only logged (rate-limited), so a
/// guest writing the magic value in a loop cannot grow host memory.
pub const MAX_MARKS: usize = 16;

/// See the module documentation.
pub struct BootTimer {
    start: Instant,
    marks: Arc<Mutex<Vec<Duration>>>,
    log: RateLimiter,
}

impl BootTimer {
    /// A timer measuring from `start`; the first [`MAX_MARKS`] marks are
    /// also appended to `marks`.
    pub fn new(start: Instant, marks: Arc<Mutex<Vec<Duration>>>) -> Self {
        BootTimer {
            start,
            marks,
            log: RateLimiter::new(5),
        }
    }
}

impl BusDevice for BootTimer {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset != 0 || data.len() != 4 || le_value(data) != u64::from(BOOT_TIMER_MAGIC) {
            return;
        }
        let elapsed = self.start.elapsed();
        if self.log.allow() {
            eprintln!(
                "cellvm: boot-timer: guest reached userspace after {:.3} ms",
                elapsed.as_secs_f64() * 1000.0
            );
        }
        let mut marks = sync::lock(&self.marks);
        if marks.len() < MAX_MARKS {
            marks.push(elapsed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_writing_the_magic_in_a_loop_records_a_bounded_number_of_marks() {
        let marks = Arc::new(Mutex::new(Vec::new()));
        let mut timer = BootTimer::new(Instant::now(), marks.clone());
        for _ in 0..10_000 {
            timer.write(0, &BOOT_TIMER_MAGIC.to_le_bytes());
        }
        assert_eq!(marks.lock().unwrap().len(), MAX_MARKS);
    }
}
