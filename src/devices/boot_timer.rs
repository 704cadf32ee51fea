//! Boot-timer device (Firecracker's pattern): the guest writes
//! [`BOOT_TIMER_MAGIC`] as a 32-bit value and cellvm logs the time elapsed
//! since it started. From a Linux guest: `devmem 0xd0001000 32 0x12345678`.

use super::{le_value, BusDevice};
use crate::layout::consts::BOOT_TIMER_MAGIC;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// See the module documentation.
pub struct BootTimer {
    start: Instant,
    marks: Arc<Mutex<Vec<Duration>>>,
}

impl BootTimer {
    /// A timer measuring from `start`; every mark is also appended to `marks`.
    pub fn new(start: Instant, marks: Arc<Mutex<Vec<Duration>>>) -> Self {
        BootTimer { start, marks }
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
        eprintln!(
            "cellvm: boot-timer: guest reached userspace after {:.3} ms",
            elapsed.as_secs_f64() * 1000.0
        );
        self.marks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(elapsed);
    }
}
