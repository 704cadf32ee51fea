//! Minimal legacy PC ports a Linux guest touches even when booted from a
//! device tree: the i8042 controller (reset line) and the CMOS RTC.

use super::BusDevice;
use crate::stop::{StopHandle, StopReason};

/// i8042 at ports 0x60..=0x64: status reads 0x01 (reads of 0xff made Linux's
/// `reboot=k` path spin), and command 0xfe on port 0x64 pulses reset, which
/// stops the cell as a guest reset.
pub struct I8042 {
    stop: StopHandle,
}

impl I8042 {
    /// First port of the device (length 5).
    pub const BASE: u64 = crate::platform::I8042_PORT as u64;
    /// Number of ports.
    pub const LEN: u64 = crate::platform::I8042_PORT_COUNT as u64;

    /// A controller whose reset command stops the cell through `stop`.
    pub fn new(stop: StopHandle) -> Self {
        I8042 { stop }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset == 4 {
            if let Some(b) = data.first_mut() {
                *b = 0x01;
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 4 && data.first() == Some(&0xfe) {
            self.stop.stop(StopReason::GuestReset);
        }
    }
}

/// CMOS RTC at ports 0x70/0x71: reports the host's UTC time in BCD, 24-hour
/// mode, and a valid battery; other registers read and write as plain RAM.
pub struct Cmos {
    index: u8,
    ram: [u8; 128],
}

impl Default for Cmos {
    fn default() -> Self {
        Cmos {
            index: 0,
            ram: [0; 128],
        }
    }
}

impl Cmos {
    /// First port.
    pub const BASE: u64 = crate::platform::CMOS_PORT as u64;
    /// Number of ports.
    pub const LEN: u64 = crate::platform::CMOS_PORT_COUNT as u64;

    fn time_register(reg: u8) -> Option<u8> {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let (year, month, day) = civil_from_days(days as i64);
        let bcd = |v: u64| -> u8 { (((v / 10) << 4) | (v % 10)) as u8 };
        Some(match reg {
            0x00 => bcd(rem % 60),
            0x02 => bcd(rem / 60 % 60),
            0x04 => bcd(rem / 3600),
            0x06 => bcd((days + 4) % 7 + 1),
            0x07 => bcd(day),
            0x08 => bcd(month),
            0x09 => bcd(year % 100),
            0x32 => bcd(year / 100),
            0x0a => 0x26, // UIP clear, 32.768 kHz, 1024 Hz
            0x0b => 0x02, // 24-hour, BCD
            0x0c => 0x00,
            0x0d => 0x80, // valid RAM and time
            _ => return None,
        })
    }
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (u64, u64, u64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y.max(0) as u64, m as u64, d as u64)
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let value = match offset {
            0 => self.index,
            _ => {
                Self::time_register(self.index).unwrap_or(self.ram[usize::from(self.index & 0x7f)])
            }
        };
        if let Some(b) = data.first_mut() {
            *b = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(value) = data.first() else { return };
        match offset {
            0 => self.index = value & 0x7f,
            _ => self.ram[usize::from(self.index & 0x7f)] = *value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_date_of_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn i8042_reset_command_stops_cell_as_reset() {
        let stop = StopHandle::new().unwrap();
        let mut dev = I8042::new(stop.clone());
        let mut status = [0u8; 1];
        dev.read(4, &mut status);
        assert_eq!(status, [0x01]);
        dev.write(4, &[0xfe]);
        assert_eq!(stop.reason(), Some(StopReason::GuestReset));
    }

    #[test]
    fn cmos_reports_valid_bcd_time() {
        let mut cmos = Cmos::default();
        cmos.write(0, &[0x0d]);
        let mut v = [0u8; 1];
        cmos.read(1, &mut v);
        assert_eq!(v, [0x80]);
        cmos.write(0, &[0x08]);
        cmos.read(1, &mut v);
        let month = (v[0] >> 4) * 10 + (v[0] & 0xf);
        assert!((1..=12).contains(&month));
    }

    #[test]
    fn cmos_index_masks_nmi_bit_and_ram_round_trips() {
        let mut cmos = Cmos::default();
        cmos.write(0, &[0x80 | 0x40]);
        cmos.write(1, &[0x5a]);
        let mut v = [0u8; 1];
        cmos.read(1, &mut v);
        assert_eq!(v, [0x5a]);
    }
}
