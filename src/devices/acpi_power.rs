//! The ACPI power device: the two registers a hardware-reduced ACPI FADT
//! names for sleep and reset (`vmm::acpi` writes the tables), on
//! [`crate::platform::ACPI_POWER_PORT`]. A kernel booted with ACPI tables
//! and without cellvm's guest agent powers off and reboots through them.
//!
//! - Offset 0, the sleep control and status register (8 bits): a write
//!   with `SLP_EN` (bit 5) set and sleep type [`SLEEP_TYPE_S5`] in bits 2-4
//!   (what Linux writes for the DSDT's `\_S5_` package) stops the cell with
//!   [`StopReason::GuestPowerOff`]. Reads return 0 (no wake status).
//! - Offset 1, the reset register: a write of [`RESET_VALUE`] stops the
//!   cell with [`StopReason::GuestReset`]. Reads return 0.
//!
//! Any other write (another sleep state, another value) is ignored with a
//! rate-limited log line and the cell keeps running.

use super::BusDevice;
use crate::ratelimit::RateLimiter;
use crate::stop::{StopHandle, StopReason};

/// Sleep type of S5 (soft off), as the DSDT's `\_S5_` package gives it.
pub const SLEEP_TYPE_S5: u8 = 5;
/// The value the FADT tells the guest to write to the reset register.
pub const RESET_VALUE: u8 = 0x0e;
/// Offset of the sleep control/status register.
pub const SLEEP_OFFSET: u64 = 0;
/// Offset of the reset register.
pub const RESET_OFFSET: u64 = 1;

const SLEEP_ENABLE: u8 = 1 << 5;
const SLEEP_TYPE_SHIFT: u8 = 2;
const SLEEP_TYPE_MASK: u8 = 0b111;

/// See the module documentation.
pub struct AcpiPower {
    stop: StopHandle,
    ignored: RateLimiter,
}

impl AcpiPower {
    /// A device that stops the cell through `stop`.
    pub fn new(stop: StopHandle) -> Self {
        AcpiPower {
            stop,
            ignored: RateLimiter::new(5),
        }
    }

    fn reason(offset: u64, value: u8) -> Option<StopReason> {
        let sleep_type = (value >> SLEEP_TYPE_SHIFT) & SLEEP_TYPE_MASK;
        match offset {
            SLEEP_OFFSET if value & SLEEP_ENABLE != 0 && sleep_type == SLEEP_TYPE_S5 => {
                Some(StopReason::GuestPowerOff)
            }
            RESET_OFFSET if value == RESET_VALUE => Some(StopReason::GuestReset),
            _ => None,
        }
    }
}

impl BusDevice for AcpiPower {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let reason = data.first().and_then(|v| Self::reason(offset, *v));
        match reason {
            Some(reason) => self.stop.stop(reason),
            None => {
                if self.ignored.allow() {
                    log::warn!("acpi-power: ignored write of {data:02x?} at offset {offset:#x}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(offset: u64, data: &[u8]) -> Option<StopReason> {
        let stop = StopHandle::new().unwrap();
        AcpiPower::new(stop.clone()).write(offset, data);
        stop.reason()
    }

    #[test]
    fn sleep_enable_with_the_s5_type_powers_the_cell_off() {
        let value = SLEEP_ENABLE | (SLEEP_TYPE_S5 << SLEEP_TYPE_SHIFT);
        assert_eq!(value, 0x34, "what Linux writes for \\_S5_ = 5");
        assert_eq!(
            written(SLEEP_OFFSET, &[value]),
            Some(StopReason::GuestPowerOff)
        );
    }

    #[test]
    fn the_reset_value_resets_the_cell() {
        assert_eq!(
            written(RESET_OFFSET, &[RESET_VALUE]),
            Some(StopReason::GuestReset)
        );
    }

    #[test]
    fn other_sleep_states_values_and_offsets_keep_the_cell_running() {
        // S3 with SLP_EN, S5 without SLP_EN, a wrong reset value, the reset
        // value on the sleep register, an empty access.
        let s3 = SLEEP_ENABLE | (3 << SLEEP_TYPE_SHIFT);
        for (offset, data) in [
            (SLEEP_OFFSET, vec![s3]),
            (SLEEP_OFFSET, vec![SLEEP_TYPE_S5 << SLEEP_TYPE_SHIFT]),
            (RESET_OFFSET, vec![1]),
            (SLEEP_OFFSET, vec![RESET_VALUE]),
            (RESET_OFFSET, vec![]),
        ] {
            assert_eq!(written(offset, &data), None, "{offset} {data:?}");
        }
    }

    #[test]
    fn reads_return_zero_of_any_size() {
        let mut dev = AcpiPower::new(StopHandle::new().unwrap());
        for len in [1, 2, 4, 8] {
            let mut b = vec![0xffu8; len];
            dev.read(0, &mut b);
            assert!(b.iter().all(|x| *x == 0));
        }
    }
}
