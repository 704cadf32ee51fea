//! Address-range dispatch of guest accesses to device models.

use super::BusDevice;
use crate::ratelimit::RateLimiter;
use crate::sync;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use thiserror::Error;

/// Which address space a bus serves (for messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusKind {
    /// Memory-mapped I/O.
    Mmio,
    /// x86 port I/O.
    Pio,
}

/// Errors from inserting or removing devices.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BusError {
    /// The new range overlaps a registered device.
    #[error("{kind:?} range {base:#x}+{len:#x} for {name} overlaps {other}")]
    Overlap {
        /// Bus kind.
        kind: BusKind,
        /// Requested base.
        base: u64,
        /// Requested length.
        len: u64,
        /// Requested device name.
        name: String,
        /// The device already there.
        other: String,
    },
    /// Empty or wrapping range.
    #[error("{kind:?} range {base:#x}+{len:#x} for {name} is empty or wraps")]
    BadRange {
        /// Bus kind.
        kind: BusKind,
        /// Requested base.
        base: u64,
        /// Requested length.
        len: u64,
        /// Requested device name.
        name: String,
    },
    /// No device registered under that name.
    #[error("no device named {0} on the bus")]
    NotFound(String),
}

/// A shared device model.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

#[derive(Clone)]
struct Entry {
    base: u64,
    len: u64,
    name: String,
    device: SharedDevice,
    /// Guest accesses served (for `cellvm stats`).
    accesses: Arc<AtomicU64>,
}

/// Sorted, non-overlapping device ranges. Cloning shares the same devices.
pub struct Bus {
    kind: BusKind,
    entries: RwLock<Vec<Entry>>,
    unmapped_log: RateLimiter,
}

impl Bus {
    /// An empty bus.
    pub fn new(kind: BusKind) -> Self {
        Bus {
            kind,
            entries: RwLock::new(Vec::new()),
            unmapped_log: RateLimiter::new(10),
        }
    }

    /// Registers `device` at `[base, base + len)`.
    pub fn insert(
        &self,
        name: &str,
        base: u64,
        len: u64,
        device: SharedDevice,
    ) -> Result<(), BusError> {
        let end = base.checked_add(len).filter(|_| len > 0);
        let Some(end) = end else {
            return Err(BusError::BadRange {
                kind: self.kind,
                base,
                len,
                name: name.to_string(),
            });
        };
        let mut entries = sync::write(&self.entries);
        if let Some(other) = entries
            .iter()
            .find(|e| e.base < end && base < e.base + e.len)
        {
            return Err(BusError::Overlap {
                kind: self.kind,
                base,
                len,
                name: name.to_string(),
                other: other.name.clone(),
            });
        }
        let at = entries.partition_point(|e| e.base < base);
        entries.insert(
            at,
            Entry {
                base,
                len,
                name: name.to_string(),
                device,
                accesses: Arc::new(AtomicU64::new(0)),
            },
        );
        Ok(())
    }

    /// Unregisters the device named `name`.
    pub fn remove(&self, name: &str) -> Result<(), BusError> {
        let mut entries = sync::write(&self.entries);
        let before = entries.len();
        entries.retain(|e| e.name != name);
        if entries.len() == before {
            return Err(BusError::NotFound(name.to_string()));
        }
        Ok(())
    }

    /// Names and ranges of all registered devices, sorted by base.
    pub fn devices(&self) -> Vec<(String, u64, u64)> {
        let entries = sync::read(&self.entries);
        entries
            .iter()
            .map(|e| (e.name.clone(), e.base, e.len))
            .collect()
    }

    /// Guest accesses served per device name (entries of one name summed),
    /// in address order of their first entry.
    pub fn access_counts(&self) -> Vec<(String, u64)> {
        let entries = sync::read(&self.entries);
        let mut out: Vec<(String, u64)> = Vec::new();
        for e in entries.iter() {
            let n = e.accesses.load(Ordering::Relaxed);
            match out.iter_mut().find(|(name, _)| *name == e.name) {
                Some((_, total)) => *total += n,
                None => out.push((e.name.clone(), n)),
            }
        }
        out
    }

    fn lookup(&self, addr: u64, len: usize) -> Option<(SharedDevice, u64)> {
        if !matches!(len, 1 | 2 | 4 | 8) {
            return None;
        }
        let entries = sync::read(&self.entries);
        let idx = entries.partition_point(|e| e.base <= addr).checked_sub(1)?;
        let e = entries.get(idx)?;
        let offset = addr - e.base;
        let last = offset.checked_add(len as u64)?;
        if last > e.len {
            return None;
        }
        e.accesses.fetch_add(1, Ordering::Relaxed);
        Some((e.device.clone(), offset))
    }

    /// Dispatches a guest read. Reads nobody serves (unmapped, straddling a
    /// device's end, or of an unsupported size) return all ones. Returns
    /// whether a device served the access.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.lookup(addr, data.len()) {
            Some((dev, offset)) => {
                sync::lock(&dev).read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                if self.unmapped_log.allow() {
                    log::debug!(
                        "unmapped {:?} read of {} bytes at {addr:#x}",
                        self.kind,
                        data.len()
                    );
                }
                false
            }
        }
    }

    /// Dispatches a guest write. Writes nobody serves are dropped. Returns
    /// whether a device served the access.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.lookup(addr, data.len()) {
            Some((dev, offset)) => {
                sync::lock(&dev).write(offset, data);
                true
            }
            None => {
                if self.unmapped_log.allow() {
                    log::debug!(
                        "unmapped {:?} write of {} bytes at {addr:#x}",
                        self.kind,
                        data.len()
                    );
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(Vec<(u64, Vec<u8>)>);
    impl BusDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    fn bus_with_echo() -> (Bus, Arc<Mutex<Echo>>) {
        let bus = Bus::new(BusKind::Mmio);
        let dev = Arc::new(Mutex::new(Echo(Vec::new())));
        bus.insert("echo", 0x1000, 0x10, dev.clone()).unwrap();
        (bus, dev)
    }

    #[test]
    fn read_inside_device_reaches_it_with_offset() {
        let (bus, _) = bus_with_echo();
        let mut data = [0u8; 4];
        assert!(bus.read(0x1004, &mut data));
        assert_eq!(data, [4; 4]);
    }

    #[test]
    fn served_accesses_are_counted_per_device_and_unserved_ones_are_not() {
        let (bus, _) = bus_with_echo();
        let mut buf = [0u8; 4];
        bus.read(0x1000, &mut buf);
        bus.write(0x1004, &buf);
        bus.read(0x9000_0000, &mut buf);
        let mut odd = [0u8; 3];
        bus.read(0x1000, &mut odd);
        assert_eq!(bus.access_counts(), vec![("echo".to_string(), 2)]);
    }

    #[test]
    fn unmapped_read_returns_all_ones() {
        let (bus, _) = bus_with_echo();
        let mut data = [0u8; 4];
        assert!(!bus.read(0x2000, &mut data));
        assert_eq!(data, [0xff; 4]);
    }

    #[test]
    fn access_straddling_device_end_is_not_dispatched() {
        let (bus, dev) = bus_with_echo();
        let mut data = [0u8; 8];
        assert!(!bus.read(0x100c, &mut data));
        assert_eq!(data, [0xff; 8]);
        assert!(!bus.write(0x100c, &[1; 8]));
        assert!(dev.lock().unwrap().0.is_empty());
    }

    #[test]
    fn odd_sized_accesses_are_rejected() {
        let (bus, dev) = bus_with_echo();
        for len in [0usize, 3, 5, 6, 7, 16] {
            let mut data = vec![0u8; len];
            assert!(!bus.read(0x1000, &mut data));
            assert!(data.iter().all(|b| *b == 0xff));
            assert!(!bus.write(0x1000, &data));
        }
        assert!(dev.lock().unwrap().0.is_empty());
    }

    #[test]
    fn overlapping_insert_is_refused_and_bus_unchanged() {
        let (bus, _) = bus_with_echo();
        let other = Arc::new(Mutex::new(Echo(Vec::new())));
        let err = bus.insert("other", 0x100f, 2, other).unwrap_err();
        assert!(matches!(err, BusError::Overlap { ref other, .. } if other == "echo"));
        assert_eq!(bus.devices().len(), 1);
    }

    #[test]
    fn wrapping_range_is_refused() {
        let bus = Bus::new(BusKind::Pio);
        let dev = Arc::new(Mutex::new(Echo(Vec::new())));
        assert!(matches!(
            bus.insert("x", u64::MAX, 2, dev),
            Err(BusError::BadRange { .. })
        ));
    }

    #[test]
    fn removed_device_no_longer_receives_accesses() {
        let (bus, dev) = bus_with_echo();
        bus.remove("echo").unwrap();
        assert!(!bus.write(0x1000, &[1]));
        assert!(dev.lock().unwrap().0.is_empty());
        assert_eq!(bus.remove("echo"), Err(BusError::NotFound("echo".into())));
    }

    #[test]
    fn access_at_highest_address_does_not_overflow() {
        let bus = Bus::new(BusKind::Mmio);
        let dev = Arc::new(Mutex::new(Echo(Vec::new())));
        bus.insert("top", u64::MAX - 0xf, 0xf, dev).unwrap();
        let mut data = [0u8; 8];
        assert!(!bus.read(u64::MAX - 3, &mut data));
        assert!(bus.read(u64::MAX - 0xf, &mut data));
    }
}
