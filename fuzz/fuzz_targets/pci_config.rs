//! PCI configuration space behind an ECAM or CAM host bridge: a
//! `PciHostBridge` on an MMIO bus with cellvm test devices and a virtio-pci
//! function, driven by config-window accesses of any size at any offset
//! (inside the window or past it), well-formed accesses to the functions'
//! registers (BARs, command, capabilities, MSI-X), and accesses to whatever
//! the guest mapped its BARs at.
//!
//! Checks: no panic; `ConfigDecoder::decode` and `offset_of` are inverses;
//! malformed accesses are counted and read as all ones; absent functions
//! read as all ones; a function's vendor and device IDs never change; mapped
//! BARs lie inside the bridge's windows, do not overlap, and are on the bus.

#![no_main]

use arbitrary::Arbitrary;
use cellvm::config::{PciHostKind, Window};
use cellvm::devices::{le_value, Bus, BusDevice, BusKind};
use cellvm::layout::PciBridgeSlot;
use cellvm::pci::{
    ConfigDecoder, Decoded, MsiSender, PciAddress, PciHostBridge, PciTestDevice, SharedFunction,
};
use cellvm::virtio::{RngBackend, VirtioPciFunction};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, Mutex};
use vm_memory::{GuestAddress, GuestMemoryMmap};

const CONFIG_BASE: u64 = 0xe000_0000;
const MMIO32: Window = Window {
    base: 0xc000_0000,
    size: 0x100_0000,
};
const MMIO64: Window = Window {
    base: 0x40_0000_0000,
    size: 0x1_0000_0000,
};

struct NoMsi;

impl MsiSender for NoMsi {
    fn send(&self, _vector: u16, _address: u64, _data: u32) {}
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Kind {
    Test,
    VirtioRng,
}

#[derive(Arbitrary, Debug)]
struct Function {
    bus: u8,
    device: u8,
    function: u8,
    kind: Kind,
}

#[derive(Arbitrary, Debug)]
enum Action {
    /// Any access to the config window: `len` 0..=8, offset wrapped into
    /// the window plus a little beyond it.
    Read {
        offset: u32,
        len: u8,
    },
    Write {
        offset: u32,
        len: u8,
        value: u64,
    },
    /// A well-formed access to register `register` of function `which`.
    FnRead {
        which: u8,
        register: u16,
        len: u8,
    },
    FnWrite {
        which: u8,
        register: u16,
        len: u8,
        value: u32,
    },
    /// Turn memory decode on (with bus mastering) and program BAR `bar`.
    Program {
        which: u8,
        bar: u8,
        address: u32,
    },
    /// An access inside a mapped BAR.
    BarRead {
        bar: u8,
        offset: u32,
        len: u8,
    },
    BarWrite {
        bar: u8,
        offset: u32,
        len: u8,
        value: u64,
    },
    Reset,
    Remove {
        which: u8,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    cam: bool,
    bus_start: u8,
    extra_buses: u8,
    /// The window covers more buses than the bridge has.
    bigger_window: bool,
    functions: Vec<Function>,
    actions: Vec<Action>,
}

fn access_len(len: u8) -> usize {
    [1, 2, 4][usize::from(len % 3)]
}

struct Rig {
    bus: Arc<Bus>,
    bridge: Arc<Mutex<PciHostBridge>>,
    decoder: ConfigDecoder,
    /// Every function added: address and its `vendor | device << 16`.
    functions: Vec<(PciAddress, u32)>,
}

impl Rig {
    fn bridge(&self) -> std::sync::MutexGuard<'_, PciHostBridge> {
        self.bridge.lock().unwrap()
    }

    fn present(&self, address: PciAddress) -> bool {
        self.bridge().function(address).is_some()
    }

    fn config_read(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut data = vec![0u8; len];
        if !self.bus.read(CONFIG_BASE + offset, &mut data) {
            data.fill(0xff);
        }
        data
    }

    fn config_write(&self, offset: u64, data: &[u8]) {
        self.bus.write(CONFIG_BASE + offset, data);
    }

    /// A raw access: checks the decoder, the bad-access count and what an
    /// absent or malformed access reads.
    fn raw(&self, offset: u32, len: u8, write: Option<u64>) {
        let len = usize::from(len % 9);
        let window = self.decoder.window_size();
        let offset = u64::from(offset) % (window + 16);
        let decoded = self.decoder.decode(offset, len);
        if let Decoded::Register { address, register } = decoded {
            assert_eq!(
                self.decoder.offset_of(address, register),
                Some(offset),
                "decode({offset:#x}) = {address} register {register:#x} does not invert"
            );
        }
        let bad_before = self.bridge().bad_accesses();
        // Straight to the bridge, not through the bus (which only passes
        // accesses of 1, 2, 4 or 8 bytes inside the window): the bridge
        // must cope with anything on its own.
        match write {
            Some(value) => {
                let data = &value.to_le_bytes()[..len];
                self.bridge().write(offset, data);
            }
            None => {
                let mut data = vec![0u8; len];
                self.bridge().read(offset, &mut data);
                let all_ones = data.iter().all(|&b| b == 0xff);
                match decoded {
                    Decoded::Bad(_) | Decoded::Absent => assert!(all_ones, "{decoded:?}"),
                    Decoded::Register { address, .. } if !self.present(address) => {
                        assert!(all_ones, "absent function {address} read {data:?}")
                    }
                    Decoded::Register { .. } => {}
                }
            }
        }
        let bad_after = self.bridge().bad_accesses();
        let bad = u64::from(matches!(decoded, Decoded::Bad(_)));
        assert_eq!(bad_after, bad_before + bad, "{decoded:?}");
    }

    fn function_access(&self, which: u8, register: u16, len: u8, write: Option<u32>) {
        let Some(&(address, _)) = self
            .functions
            .get(usize::from(which) % self.functions.len().max(1))
        else {
            return;
        };
        let len = access_len(len);
        let register = (register % self.decoder.function_size() as u16) & !(len as u16 - 1);
        let Some(offset) = self.decoder.offset_of(address, register) else {
            return;
        };
        match write {
            Some(v) => self.config_write(offset, &v.to_le_bytes()[..len]),
            None => {
                let _ = self.config_read(offset, len);
            }
        }
    }

    fn program(&self, which: u8, bar: u8, address: u32) {
        let Some(&(a, _)) = self
            .functions
            .get(usize::from(which) % self.functions.len().max(1))
        else {
            return;
        };
        let Some(off) = self.decoder.offset_of(a, 0x10 + 4 * u16::from(bar % 6)) else {
            return;
        };
        // Mostly inside the 32-bit window, where a BAR can be mapped.
        let address = if address & 1 == 0 {
            MMIO32.base as u32 + (address % MMIO32.size as u32)
        } else {
            address
        };
        self.config_write(off, &address.to_le_bytes());
        if let Some(cmd) = self.decoder.offset_of(a, 4) {
            self.config_write(cmd, &0x0006u16.to_le_bytes());
        }
    }

    fn bar_access(&self, bar: u8, offset: u32, len: u8, write: Option<u64>) {
        let bars = self.bridge().mapped_bars();
        let Some(&(_, region)) = bars.get(usize::from(bar) % bars.len().max(1)) else {
            return;
        };
        let len = [1usize, 2, 4, 8][usize::from(len % 4)];
        let gpa = region.base + u64::from(offset) % region.size;
        let mut data = vec![0u8; len];
        match write {
            Some(v) => {
                self.bus.write(gpa, &v.to_le_bytes()[..len]);
            }
            None => {
                self.bus.read(gpa, &mut data);
            }
        }
    }

    fn check(&self) {
        for &(address, ids) in &self.functions {
            if !self.present(address) {
                continue;
            }
            let offset = self.decoder.offset_of(address, 0).unwrap();
            let got = le_value(&self.config_read(offset, 4)) as u32;
            assert_eq!(got, ids, "the IDs of {address} changed");
        }
        let mut bars = self.bridge().mapped_bars();
        bars.sort_by_key(|(_, r)| r.base);
        for w in bars.windows(2) {
            assert!(w[0].1.end() <= w[1].1.base, "overlapping BARs {w:?}");
        }
        let on_bus = self.bus.devices();
        for (address, r) in &bars {
            assert!(
                [MMIO32, MMIO64]
                    .iter()
                    .any(|w| r.base >= w.base && r.end() <= w.base + w.size),
                "{address} BAR {r:?} outside the windows"
            );
            assert!(
                on_bus
                    .iter()
                    .any(|(_, base, size)| *base == r.base && *size == r.size),
                "{address} BAR {r:?} is not on the bus"
            );
        }
    }
}

fuzz_target!(|input: Input| {
    let kind = if input.cam {
        PciHostKind::Cam
    } else {
        PciHostKind::Ecam
    };
    let bus_start = input.bus_start;
    let bus_end = bus_start.saturating_add(input.extra_buses % 4);
    let mut config_size = (u64::from(bus_end - bus_start) + 1) * ConfigDecoder::bus_size(kind);
    if input.bigger_window {
        config_size += ConfigDecoder::bus_size(kind);
    }
    let slot = PciBridgeSlot {
        id: "pci0".into(),
        kind,
        config: Window {
            base: CONFIG_BASE,
            size: config_size,
        },
        bus_start,
        bus_end,
        mmio32: MMIO32,
        mmio64: Some(MMIO64),
        intx: [10, 11, 12, 13],
    };
    let bus = Arc::new(Bus::new(BusKind::Mmio));
    let bridge = PciHostBridge::new(&slot, &bus);
    let decoder = *bridge.decoder();
    let bridge = Arc::new(Mutex::new(bridge));
    bus.insert("pci0", CONFIG_BASE, config_size, bridge.clone())
        .unwrap();
    let mut rig = Rig {
        bus,
        bridge,
        decoder,
        functions: Vec::new(),
    };
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
    for f in input.functions.iter().take(4) {
        let Ok(address) = PciAddress::new(
            bus_start.wrapping_add(f.bus % 4),
            f.device % 32,
            f.function % 8,
        ) else {
            continue;
        };
        let function: SharedFunction = match f.kind {
            Kind::Test => Arc::new(Mutex::new(PciTestDevice::new(Arc::new(NoMsi)).unwrap())),
            Kind::VirtioRng => Arc::new(Mutex::new(
                VirtioPciFunction::new(
                    "rng",
                    Box::new(RngBackend::new()),
                    mem.clone(),
                    Arc::new(NoMsi),
                    None,
                )
                .unwrap(),
            )),
        };
        let ids = {
            let f = function.lock().unwrap();
            u32::from(f.config().read_u16(0)) | u32::from(f.config().read_u16(2)) << 16
        };
        if rig.bridge().add_function(address, function).is_ok() {
            rig.functions.push((address, ids));
        }
    }
    for action in input.actions.into_iter().take(256) {
        match action {
            Action::Read { offset, len } => rig.raw(offset, len, None),
            Action::Write { offset, len, value } => rig.raw(offset, len, Some(value)),
            Action::FnRead {
                which,
                register,
                len,
            } => rig.function_access(which, register, len, None),
            Action::FnWrite {
                which,
                register,
                len,
                value,
            } => rig.function_access(which, register, len, Some(value)),
            Action::Program {
                which,
                bar,
                address,
            } => rig.program(which, bar, address),
            Action::BarRead { bar, offset, len } => rig.bar_access(bar, offset, len, None),
            Action::BarWrite {
                bar,
                offset,
                len,
                value,
            } => rig.bar_access(bar, offset, len, Some(value)),
            Action::Reset => rig.bridge().reset(),
            Action::Remove { which } => {
                if let Some(&(a, _)) = rig
                    .functions
                    .get(usize::from(which) % rig.functions.len().max(1))
                {
                    let _ = rig.bridge().remove_function(a);
                }
            }
        }
        rig.check();
    }
});
