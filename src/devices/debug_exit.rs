//! Debug-exit device: the guest writes a byte, the cell stops, and cellvm
//! exits with that byte as its status. At [`crate::platform::DEBUG_EXIT_BASE`];
//! from a Linux guest: `devmem 0xd0000000 8 N`.

use super::BusDevice;
use crate::stop::{StopHandle, StopReason};

/// See the module documentation.
pub struct DebugExit {
    stop: StopHandle,
}

impl DebugExit {
    /// A device that stops the cell through `stop`.
    pub fn new(stop: StopHandle) -> Self {
        DebugExit { stop }
    }
}

impl BusDevice for DebugExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 0 {
            if let Some(code) = data.first() {
                self.stop.stop(StopReason::DebugExit(*code));
            }
        }
    }
}
