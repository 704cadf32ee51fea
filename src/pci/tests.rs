use super::config_space::{
    regs, COMMAND_BUS_MASTER, COMMAND_INTX_DISABLE, COMMAND_IO, COMMAND_MEMORY, COMMAND_WRITABLE,
    STATUS_CAPABILITIES, STATUS_INTERRUPT, STATUS_RECEIVED_MASTER_ABORT, STATUS_W1C,
};
use super::host_bridge::BarAdapter;
use super::msix::CAP_ID_MSIX;
use super::test_device::{
    regs as td, TEST_DEVICE_BAR_SIZE, TEST_DEVICE_DEVICE_ID, TEST_DEVICE_MAGIC,
    TEST_DEVICE_MSIX_BAR_SIZE, TEST_DEVICE_MSIX_PBA, TEST_DEVICE_MSIX_VECTORS,
    TEST_DEVICE_VENDOR_ID,
};
use super::*;
use crate::config::{PciHostKind, Window};
use crate::devices::{Bus, BusDevice, BusKind, InterruptLine};
use crate::layout::PciBridgeSlot;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

mod mirror;
mod p2p;

/// An MSI sender that records every message (vector, address, data).
#[derive(Default)]
struct Msis(Mutex<Vec<(u16, u64, u32)>>);

impl MsiSender for Msis {
    fn send(&self, vector: u16, address: u64, data: u32) {
        self.0.lock().unwrap().push((vector, address, data));
    }
}

/// A sender for devices whose messages no test looks at.
fn no_msi() -> Arc<dyn MsiSender> {
    Arc::new(Msis::default())
}

const CONFIG_BASE: u64 = 0xe000_0000;
const MMIO32: Window = Window {
    base: 0xc000_0000,
    size: 0x100_0000,
};
const MMIO64: Window = Window {
    base: 0x40_0000_0000,
    size: 0x1_0000_0000,
};
const INTX: [u32; 4] = [10, 11, 12, 13];

fn slot(kind: PciHostKind, bus_start: u8, bus_end: u8) -> PciBridgeSlot {
    let buses = u64::from(bus_end - bus_start) + 1;
    PciBridgeSlot {
        id: "pci0".into(),
        kind,
        config: Window {
            base: CONFIG_BASE,
            size: buses * ConfigDecoder::bus_size(kind),
        },
        bus_start,
        bus_end,
        mmio32: MMIO32,
        mmio64: Some(MMIO64),
        intx: INTX,
    }
}

fn addr(bus: u8, device: u8, function: u8) -> PciAddress {
    PciAddress::new(bus, device, function).unwrap()
}

/// An INTx line that records its level.
#[derive(Default)]
struct Line {
    level: AtomicBool,
    changes: Mutex<Vec<bool>>,
}

impl InterruptLine for Line {
    fn set_level(&self, level: bool) {
        self.level.store(level, Ordering::SeqCst);
        self.changes.lock().unwrap().push(level);
    }
}

impl Line {
    fn high(&self) -> bool {
        self.level.load(Ordering::SeqCst)
    }
}

/// A header-only function with configurable BARs; BAR reads return the BAR
/// index in every byte, writes are recorded.
struct Plain {
    config: ConfigSpace,
    writes: Vec<(usize, u64, Vec<u8>)>,
}

impl Plain {
    fn new(device_id: u16) -> Self {
        Plain {
            config: ConfigSpace::new(PciIds {
                vendor_id: 0x1234,
                device_id,
                class: 0xff,
                ..Default::default()
            }),
            writes: Vec::new(),
        }
    }

    fn with_bar(mut self, index: usize, spec: BarSpec) -> Self {
        self.config.add_bar(index, spec).unwrap();
        self
    }

    fn with_pin(mut self, pin: IntxPin) -> Self {
        self.config.set_interrupt_pin(Some(pin));
        self
    }
}

impl PciFunction for Plain {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }
    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }
    fn read_bar(&mut self, bar: usize, _offset: u64, data: &mut [u8]) {
        data.fill(bar as u8);
    }
    fn write_bar(&mut self, bar: usize, offset: u64, data: &[u8]) {
        self.writes.push((bar, offset, data.to_vec()));
    }
}

/// A bridge registered on a real MMIO bus, with recording INTx lines.
struct Rig {
    bus: Arc<Bus>,
    bridge: Arc<Mutex<PciHostBridge>>,
    slot: PciBridgeSlot,
    lines: [Arc<Line>; 4],
}

impl Rig {
    fn new(kind: PciHostKind, bus_start: u8, bus_end: u8) -> Self {
        let slot = slot(kind, bus_start, bus_end);
        let bus = Arc::new(Bus::new(BusKind::Mmio));
        let mut bridge = PciHostBridge::new(&slot, &bus);
        let lines: [Arc<Line>; 4] = Default::default();
        bridge.connect_intx(lines.clone().map(|l| l as Arc<dyn InterruptLine>));
        let bridge = Arc::new(Mutex::new(bridge));
        bus.insert("pci0", slot.config.base, slot.config.size, bridge.clone())
            .unwrap();
        Rig {
            bus,
            bridge,
            slot,
            lines,
        }
    }

    fn ecam() -> Self {
        Rig::new(PciHostKind::Ecam, 0, 0)
    }

    fn add(&self, a: PciAddress, f: SharedFunction) {
        self.bridge.lock().unwrap().add_function(a, f).unwrap();
    }

    fn add_test_device(&self, a: PciAddress) -> Arc<Mutex<PciTestDevice>> {
        let dev = Arc::new(Mutex::new(PciTestDevice::new(no_msi()).unwrap()));
        self.add(a, dev.clone());
        dev
    }

    fn offset(&self, a: PciAddress, reg: u16) -> u64 {
        ConfigDecoder::new(self.slot.kind, self.slot.bus_start, self.slot.bus_end)
            .offset_of(a, reg)
            .unwrap()
    }

    fn read(&self, a: PciAddress, reg: u16, len: usize) -> u64 {
        let mut data = vec![0u8; len];
        self.bus
            .read(self.slot.config.base + self.offset(a, reg), &mut data);
        crate::devices::le_value(&data)
    }

    fn read32(&self, a: PciAddress, reg: u16) -> u32 {
        self.read(a, reg, 4) as u32
    }

    fn write(&self, a: PciAddress, reg: u16, len: usize, value: u64) {
        let data = value.to_le_bytes();
        self.bus
            .write(self.slot.config.base + self.offset(a, reg), &data[..len]);
    }

    fn write32(&self, a: PciAddress, reg: u16, value: u32) {
        self.write(a, reg, 4, u64::from(value));
    }

    fn command(&self, a: PciAddress, bits: u16) {
        self.write(a, regs::COMMAND as u16, 2, u64::from(bits));
    }

    fn bar_names(&self) -> Vec<(String, u64, u64)> {
        self.bus
            .devices()
            .into_iter()
            .filter(|(n, _, _)| n != "pci0")
            .collect()
    }

    fn mmio_read32(&self, gpa: u64) -> u32 {
        let mut data = [0u8; 4];
        self.bus.read(gpa, &mut data);
        u32::from_le_bytes(data)
    }

    fn mmio_write32(&self, gpa: u64, value: u32) {
        self.bus.write(gpa, &value.to_le_bytes());
    }

    fn bridge_read(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut data = vec![0u8; len];
        self.bridge.lock().unwrap().read(offset, &mut data);
        data
    }

    fn bridge_write(&self, offset: u64, data: &[u8]) {
        self.bridge.lock().unwrap().write(offset, data);
    }

    fn bad(&self) -> u64 {
        self.bridge.lock().unwrap().bad_accesses()
    }
}

// ---------------------------------------------------------------- decoding

#[test]
fn ecam_decode_extracts_bus_device_function_and_register() {
    let d = ConfigDecoder::new(PciHostKind::Ecam, 2, 5);
    assert_eq!(d.window_size(), 4 << 20);
    let off = (1 << 20) | (3 << 15) | (5 << 12) | 0x124;
    assert_eq!(
        d.decode(off, 4),
        Decoded::Register {
            address: addr(3, 3, 5),
            register: 0x124
        }
    );
    let off = (3 << 20) | (31 << 15) | (7 << 12) | 0xffc;
    assert_eq!(
        d.decode(off, 4),
        Decoded::Register {
            address: addr(5, 31, 7),
            register: 0xffc
        }
    );
    assert_eq!(
        d.decode(0, 1),
        Decoded::Register {
            address: addr(2, 0, 0),
            register: 0
        }
    );
}

#[test]
fn cam_decode_extracts_bus_device_function_and_register() {
    let d = ConfigDecoder::new(PciHostKind::Cam, 0, 1);
    assert_eq!(d.window_size(), 2 << 16);
    let off = (1 << 16) | (31 << 11) | (7 << 8) | 0xfc;
    assert_eq!(
        d.decode(off, 4),
        Decoded::Register {
            address: addr(1, 31, 7),
            register: 0xfc
        }
    );
    let off = (9 << 11) | (2 << 8) | 0x3e;
    assert_eq!(
        d.decode(off, 2),
        Decoded::Register {
            address: addr(0, 9, 2),
            register: 0x3e
        }
    );
}

#[test]
fn decode_maps_relative_bus_into_range_and_buses_beyond_are_absent() {
    // A window larger than the bus range: the extra buses are absent.
    let d = ConfigDecoder::new(PciHostKind::Ecam, 2, 3).with_window_size(8 << 20);
    assert!(matches!(d.decode(1 << 20, 4), Decoded::Register { address, .. } if address.bus == 3));
    assert_eq!(d.decode(2 << 20, 4), Decoded::Absent);
    assert_eq!(d.decode(7 << 20, 4), Decoded::Absent);
    // Bus numbers never wrap past 255.
    let d = ConfigDecoder::new(PciHostKind::Cam, 250, 255).with_window_size(16 << 16);
    assert!(
        matches!(d.decode(5 << 16, 4), Decoded::Register { address, .. } if address.bus == 255)
    );
    assert_eq!(d.decode(6 << 16, 4), Decoded::Absent);
    assert_eq!(d.decode(15 << 16, 4), Decoded::Absent);
}

#[test]
fn offset_of_is_the_inverse_of_decode() {
    for kind in [PciHostKind::Ecam, PciHostKind::Cam] {
        let d = ConfigDecoder::new(kind, 4, 7);
        for (bus, dev, func, reg) in [(4, 0, 0, 0u16), (5, 17, 3, 0x40), (7, 31, 7, 0xfc)] {
            let a = addr(bus, dev, func);
            let off = d.offset_of(a, reg).unwrap();
            assert_eq!(
                d.decode(off, 4),
                Decoded::Register {
                    address: a,
                    register: reg
                }
            );
        }
        assert_eq!(d.offset_of(addr(3, 0, 0), 0), None);
        assert_eq!(d.offset_of(addr(8, 0, 0), 0), None);
        assert_eq!(d.offset_of(addr(4, 0, 0), d.function_size() as u16), None);
    }
}

#[test]
fn decode_refuses_bad_sizes_misaligned_straddling_and_out_of_window() {
    let d = ConfigDecoder::new(PciHostKind::Ecam, 0, 0);
    for len in [0, 3, 5, 6, 7, 8, 9, 16] {
        assert_eq!(d.decode(0, len), Decoded::Bad(BadAccess::Size(len)));
    }
    assert_eq!(d.decode(1, 2), Decoded::Bad(BadAccess::Misaligned));
    assert_eq!(d.decode(3, 2), Decoded::Bad(BadAccess::Straddling));
    assert_eq!(d.decode(2, 4), Decoded::Bad(BadAccess::Straddling));
    assert_eq!(d.decode(1, 4), Decoded::Bad(BadAccess::Straddling));
    assert!(matches!(
        d.decode(3, 1),
        Decoded::Register { register: 3, .. }
    ));
    assert!(matches!(
        d.decode((1 << 20) - 4, 4),
        Decoded::Register { .. }
    ));
    assert_eq!(d.decode(1 << 20, 4), Decoded::Bad(BadAccess::OutOfWindow));
    assert_eq!(
        d.decode(u64::MAX - 3, 4),
        Decoded::Bad(BadAccess::OutOfWindow)
    );
}

#[test]
fn pci_address_checks_ranges_and_prints_like_lspci() {
    assert_eq!(addr(0, 1, 0).to_string(), "00:01.0");
    assert_eq!(addr(0xab, 31, 7).to_string(), "ab:1f.7");
    assert_eq!(addr(0, 31, 7).devfn(), 0xff);
    assert!(PciAddress::new(0, 32, 0).is_err());
    assert!(PciAddress::new(0, 0, 8).is_err());
}

// ------------------------------------------------- bridge config window

#[test]
fn absent_functions_read_all_ones_and_ignore_writes() {
    let rig = Rig::ecam();
    rig.add_test_device(addr(0, 1, 0));
    assert_eq!(rig.read32(addr(0, 0, 0), 0), u32::MAX);
    assert_eq!(rig.read32(addr(0, 2, 0), 0), u32::MAX);
    assert_eq!(rig.read32(addr(0, 1, 1), 0), u32::MAX);
    assert_eq!(rig.read(addr(0, 3, 0), 0, 2), 0xffff);
    assert_eq!(rig.read(addr(0, 3, 0), 0x0e, 1), 0xff);
    rig.write32(addr(0, 0, 0), 4, 0xffff_ffff);
    assert_eq!(rig.bad(), 0);
}

#[test]
fn present_function_answers_ids_with_every_access_size() {
    let rig = Rig::ecam();
    let a = addr(0, 1, 0);
    rig.add_test_device(a);
    let ids = u32::from(TEST_DEVICE_VENDOR_ID) | (u32::from(TEST_DEVICE_DEVICE_ID) << 16);
    assert_eq!(rig.read32(a, 0), ids);
    assert_eq!(rig.read(a, 0, 2), u64::from(TEST_DEVICE_VENDOR_ID));
    assert_eq!(rig.read(a, 2, 2), u64::from(TEST_DEVICE_DEVICE_ID));
    assert_eq!(rig.read(a, 1, 1), u64::from(TEST_DEVICE_VENDOR_ID >> 8));
    assert_eq!(rig.read(a, 0x0b, 1), 0xff); // class
}

#[test]
fn registers_beyond_a_functions_config_space_read_all_ones_on_ecam() {
    let rig = Rig::ecam();
    let a = addr(0, 1, 0);
    rig.add_test_device(a);
    for reg in [0x100u16, 0x104, 0xffc] {
        assert_eq!(rig.read32(a, reg), u32::MAX);
        rig.write32(a, reg, 0);
        assert_eq!(rig.read32(a, reg), u32::MAX);
    }
    assert_eq!(rig.read32(a, 0xfc), 0);
    assert_eq!(rig.bad(), 0);
}

#[test]
fn cam_bridge_serves_functions_at_cam_offsets() {
    let rig = Rig::new(PciHostKind::Cam, 0, 0);
    let a = addr(0, 5, 2);
    rig.add(a, Arc::new(Mutex::new(Plain::new(0x4321))));
    let off = (5 << 11) | (2 << 8);
    assert_eq!(rig.offset(a, 0), off);
    assert_eq!(rig.read32(a, 0), 0x4321_1234);
    // Device 5 function 0 is absent.
    assert_eq!(rig.read32(addr(0, 5, 0), 0), u32::MAX);
}

#[test]
fn bridge_honours_its_bus_range() {
    let rig = Rig::new(PciHostKind::Ecam, 2, 3);
    let a = addr(3, 0, 0);
    rig.add(a, Arc::new(Mutex::new(Plain::new(7))));
    // Bus 3 is the second bus of the window: relative bus 1.
    assert_eq!(rig.offset(a, 0), 1 << 20);
    let data = rig.bridge_read(1 << 20, 4);
    assert_eq!(data, [0x34, 0x12, 7, 0]);
    assert_eq!(rig.bridge_read(0, 4), [0xff; 4]);
    let mut bridge = rig.bridge.lock().unwrap();
    for bus in [1u8, 4] {
        let err = bridge
            .add_function(addr(bus, 0, 0), Arc::new(Mutex::new(Plain::new(1))))
            .unwrap_err();
        assert!(matches!(
            err,
            PciError::BusOutOfRange {
                start: 2,
                end: 3,
                ..
            }
        ));
    }
    let err = bridge
        .add_function(a, Arc::new(Mutex::new(Plain::new(1))))
        .unwrap_err();
    assert_eq!(err, PciError::Occupied(a));
}

#[test]
fn bad_accesses_read_all_ones_are_ignored_and_counted() {
    let rig = Rig::ecam();
    let a = addr(0, 0, 0);
    rig.add_test_device(a);
    let window = rig.slot.config.size;
    // 8-byte, misaligned, straddling and out-of-window reads: all ones.
    assert_eq!(rig.bridge_read(0, 8), [0xff; 8]);
    assert_eq!(rig.bridge_read(1, 2), [0xff; 2]);
    assert_eq!(rig.bridge_read(2, 4), [0xff; 4]);
    assert_eq!(rig.bridge_read(3, 2), [0xff; 2]);
    assert_eq!(rig.bridge_read(window, 4), [0xff; 4]);
    assert_eq!(rig.bridge_read(window - 2, 4), [0xff; 4]);
    assert_eq!(rig.bridge_read(0, 3), [0xff; 3]);
    assert_eq!(rig.bridge_read(0, 0), [0u8; 0]);
    assert_eq!(rig.bad(), 8);
    // The same shapes as writes change nothing: decode stays off.
    rig.bridge_write(4, &[0xff; 8]);
    rig.bridge_write(5, &[0xff; 2]);
    rig.bridge_write(2, &[0xff; 4]);
    rig.bridge_write(window, &[0xff; 4]);
    rig.bridge_write(4, &[0xff; 3]);
    assert_eq!(rig.bad(), 13);
    assert_eq!(rig.read(a, regs::COMMAND as u16, 2), 0);
    // A good access still works and is not counted.
    assert_eq!(rig.read(a, 0, 2), u64::from(TEST_DEVICE_VENDOR_ID));
    assert_eq!(rig.bad(), 13);
}

// --------------------------------------------------------------- header

#[test]
fn read_only_header_registers_hold_against_writes() {
    let rig = Rig::ecam();
    let a = addr(0, 1, 0);
    rig.add_test_device(a);
    let ro = [0x00u16, 0x08, 0x0c, 0x28, 0x2c, 0x30, 0x34, 0x38];
    let before: Vec<u32> = ro.iter().map(|r| rig.read32(a, *r)).collect();
    for r in ro {
        rig.write32(a, r, 0xffff_ffff);
        rig.write32(a, r, 0);
    }
    let after: Vec<u32> = ro.iter().map(|r| rig.read32(a, *r)).collect();
    assert_eq!(before, after);
    // Interrupt pin (RO) next to interrupt line (RW).
    rig.write(a, regs::INTERRUPT_PIN as u16, 1, 0x4);
    assert_eq!(rig.read(a, regs::INTERRUPT_PIN as u16, 1), 1);
}

#[test]
fn read_write_registers_round_trip_and_reserved_command_bits_stay_zero() {
    let rig = Rig::ecam();
    let a = addr(0, 1, 0);
    rig.add(a, Arc::new(Mutex::new(Plain::new(1))));
    rig.write(a, regs::INTERRUPT_LINE as u16, 1, 0x5a);
    assert_eq!(rig.read(a, regs::INTERRUPT_LINE as u16, 1), 0x5a);
    rig.write(a, regs::COMMAND as u16, 2, 0xffff);
    assert_eq!(
        rig.read(a, regs::COMMAND as u16, 2),
        u64::from(COMMAND_WRITABLE)
    );
    rig.write(a, regs::COMMAND as u16, 2, u64::from(COMMAND_BUS_MASTER));
    assert_eq!(
        rig.read(a, regs::COMMAND as u16, 2),
        u64::from(COMMAND_BUS_MASTER)
    );
    // A byte write to the command's high byte touches only that byte.
    rig.write(a, 0x05, 1, u64::from(COMMAND_INTX_DISABLE >> 8));
    assert_eq!(
        rig.read(a, regs::COMMAND as u16, 2),
        u64::from(COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE)
    );
}

#[test]
fn rw1c_status_bits_clear_only_where_ones_are_written() {
    let rig = Rig::ecam();
    let a = addr(0, 1, 0);
    let dev = rig.add_test_device(a);
    dev.lock().unwrap().config_mut().set_status_bits(STATUS_W1C);
    let status = || rig.read(a, regs::STATUS as u16, 2) as u16;
    assert_eq!(status(), STATUS_W1C | STATUS_CAPABILITIES);
    rig.write(a, regs::STATUS as u16, 2, 0);
    assert_eq!(status(), STATUS_W1C | STATUS_CAPABILITIES);
    rig.write(
        a,
        regs::STATUS as u16,
        2,
        u64::from(STATUS_RECEIVED_MASTER_ABORT | STATUS_CAPABILITIES | STATUS_INTERRUPT),
    );
    assert_eq!(
        status(),
        (STATUS_W1C & !STATUS_RECEIVED_MASTER_ABORT) | STATUS_CAPABILITIES
    );
    // A 16-bit command write does not clear status bits.
    rig.write(a, regs::COMMAND as u16, 2, 0xffff);
    assert_eq!(
        status(),
        (STATUS_W1C & !STATUS_RECEIVED_MASTER_ABORT) | STATUS_CAPABILITIES
    );
    // A dword write of all ones clears them all and keeps the RO bits.
    rig.write32(a, regs::COMMAND as u16, 0xffff_ffff);
    assert_eq!(status(), STATUS_CAPABILITIES);
}

#[test]
fn bar_sizing_32bit_memory_bar_reads_back_size_mask() {
    let rig = Rig::ecam();
    let a = addr(0, 1, 0);
    rig.add_test_device(a);
    rig.write32(a, 0x10, 0xffff_ffff);
    assert_eq!(rig.read32(a, 0x10), !(TEST_DEVICE_BAR_SIZE as u32 - 1));
    rig.write32(a, 0x10, 0xc000_1234);
    assert_eq!(rig.read32(a, 0x10), 0xc000_1000);
    // BAR1 (MSI-X) sizes to 4 KiB; unused BARs and the ROM BAR to zero.
    rig.write32(a, 0x14, 0xffff_ffff);
    assert_eq!(rig.read32(a, 0x14), !(TEST_DEVICE_MSIX_BAR_SIZE as u32 - 1));
    for reg in [0x18u16, 0x1c, 0x20, 0x24, 0x30] {
        rig.write32(a, reg, 0xffff_ffff);
        assert_eq!(rig.read32(a, reg), 0, "register {reg:#x}");
    }
}

#[test]
fn bar_sizing_64bit_prefetchable_bar_sizes_both_halves() {
    let rig = Rig::ecam();
    let a = addr(0, 1, 0);
    let f = Plain::new(1)
        .with_bar(0, BarSpec::memory64(0x4000).prefetchable())
        .with_bar(2, BarSpec::memory64(8 << 30).prefetchable());
    rig.add(a, Arc::new(Mutex::new(f)));
    assert_eq!(rig.read32(a, 0x10), 0xc);
    for reg in [0x10u16, 0x14, 0x18, 0x1c] {
        rig.write32(a, reg, 0xffff_ffff);
    }
    assert_eq!(rig.read32(a, 0x10), 0xffff_c00c);
    assert_eq!(rig.read32(a, 0x14), 0xffff_ffff);
    // An 8 GiB BAR: no address bits in the low half, bit 0 of the high
    // half is part of the size.
    assert_eq!(rig.read32(a, 0x18), 0x0000_000c);
    assert_eq!(rig.read32(a, 0x1c), 0xffff_fffe);
    rig.write32(a, 0x18, 0);
    rig.write32(a, 0x1c, 0x42);
    let dev = rig.bridge.lock().unwrap().function(a).unwrap();
    assert_eq!(
        dev.lock().unwrap().config().bar_address(2),
        Some(0x42_0000_0000)
    );
}

#[test]
fn bar_sizing_prefetchable_32bit_and_io_bars_keep_their_type_bits() {
    let rig = Rig::ecam();
    let a = addr(0, 1, 0);
    let f = Plain::new(1)
        .with_bar(1, BarSpec::memory32(0x10_0000).prefetchable())
        .with_bar(4, BarSpec::io(0x20));
    rig.add(a, Arc::new(Mutex::new(f)));
    assert_eq!(rig.read32(a, 0x14), 0x8);
    assert_eq!(rig.read32(a, 0x20), 0x1);
    rig.write32(a, 0x14, 0xffff_ffff);
    rig.write32(a, 0x20, 0xffff_ffff);
    assert_eq!(rig.read32(a, 0x14), 0xfff0_0008);
    assert_eq!(rig.read32(a, 0x20), 0xffff_ffe1);
    rig.write32(a, 0x20, 0x1000);
    assert_eq!(rig.read32(a, 0x20), 0x1001);
}

#[test]
fn invalid_bar_specs_are_refused() {
    let mut c = ConfigSpace::new(PciIds::default());
    assert!(c.add_bar(0, BarSpec::memory32(0x1800)).is_err());
    assert!(c.add_bar(0, BarSpec::memory32(8)).is_err());
    assert!(c.add_bar(0, BarSpec::memory32(1 << 32)).is_err());
    assert!(c.add_bar(0, BarSpec::io(512)).is_err());
    assert!(c.add_bar(0, BarSpec::io(16).prefetchable()).is_err());
    assert!(c.add_bar(5, BarSpec::memory64(0x1000)).is_err());
    assert!(c.add_bar(6, BarSpec::memory32(0x1000)).is_err());
    c.add_bar(1, BarSpec::memory64(0x1000)).unwrap();
    assert!(c.add_bar(1, BarSpec::memory32(0x1000)).is_err());
    assert!(c.add_bar(2, BarSpec::memory32(0x1000)).is_err());
    assert!(c.add_bar(0, BarSpec::memory64(0x1000)).is_err());
    c.add_bar(0, BarSpec::memory32(0x1000)).unwrap();
    c.add_bar(3, BarSpec::io(4)).unwrap();
}

#[test]
fn capability_walk_terminates_and_lists_every_capability() {
    let rig = Rig::ecam();
    let a = addr(0, 1, 0);
    let mut f = Plain::new(1);
    let o1 = f.config.add_capability(0x09, &[5, 1, 2]).unwrap();
    let o2 = f.config.add_capability(0x01, &[0; 6]).unwrap();
    let o3 = f.config.add_capability(0x05, &[0; 11]).unwrap();
    assert_eq!((o1, o2, o3), (0x40, 0x48, 0x50));
    rig.add(a, Arc::new(Mutex::new(f)));

    // Walk as a guest does.
    assert_ne!(
        rig.read(a, regs::STATUS as u16, 2) as u16 & STATUS_CAPABILITIES,
        0
    );
    let mut at = rig.read(a, regs::CAPABILITIES as u16, 1) as u16;
    let mut found = Vec::new();
    while at != 0 {
        assert!(found.len() < 48, "capability list loops");
        found.push((rig.read(a, at, 1) as u8, at as usize));
        at = rig.read(a, at + 1, 1) as u16;
    }
    assert_eq!(found, vec![(0x09, 0x40), (0x01, 0x48), (0x05, 0x50)]);
    let dev = rig.bridge.lock().unwrap().function(a).unwrap();
    assert_eq!(dev.lock().unwrap().config().capabilities(), found);
    // Next pointers and bodies are read-only.
    rig.write(a, 0x41, 1, 0x80);
    rig.write(a, 0x42, 1, 0x99);
    assert_eq!(rig.read(a, 0x41, 1), 0x48);
    assert_eq!(rig.read(a, 0x42, 1), 5);
}

#[test]
fn function_without_capabilities_has_no_list_and_full_space_is_refused() {
    let mut c = ConfigSpace::new(PciIds::default());
    assert_eq!(c.status() & STATUS_CAPABILITIES, 0);
    assert!(c.capabilities().is_empty());
    assert_eq!(
        c.add_capability(0x09, &[0; 200]),
        Err(PciError::CapabilitySpace { id: 0x09, len: 202 })
    );
    c.add_capability(0x09, &[0; 180]).unwrap();
    assert!(c.add_capability(0x10, &[0; 20]).is_err());
    assert_eq!(c.capabilities(), vec![(0x09, 0x40)]);
}

#[test]
fn writable_capability_fields_follow_their_masks() {
    let mut c = ConfigSpace::new(PciIds::default());
    let off = c
        .add_capability(0x09, &[0, 0, 0xff, 0xff, 0xff, 0xff])
        .unwrap();
    let reg = off / 4 + 1;
    c.set_masks(reg, 0x0000_ffff, 0xffff_0000);
    c.write(reg, 0x0000_1234, 0xffff_ffff);
    assert_eq!(c.read(reg), 0xffff_1234);
    c.write(reg, 0x0100_0000, 0xffff_ffff);
    assert_eq!(c.read(reg), 0xfeff_0000);
}

#[test]
fn reset_restores_initial_values_and_keeps_structure() {
    let mut dev = PciTestDevice::new(no_msi()).unwrap();
    let c = dev.config_mut();
    c.write(1, 0xffff, 0xffff);
    c.write(4, 0xc000_0000, u32::MAX);
    c.write(15, 0x0b, 0xff);
    dev.reset();
    let c = dev.config();
    assert_eq!(c.command(), 0);
    assert_eq!(c.bar_address(0), Some(0));
    assert_eq!(c.read_u8(regs::INTERRUPT_LINE), 0);
    assert_eq!(c.interrupt_pin(), 1);
    assert_eq!(c.capabilities().len(), 2);
}

// ------------------------------------------------------------ BAR mapping

const BAR_NAME: &str = "pci0/00:01.0/bar0";

#[test]
fn memory_decode_toggle_maps_and_unmaps_the_bar_on_the_bus() {
    let rig = Rig::ecam();
    let a = addr(0, 1, 0);
    rig.add_test_device(a);
    rig.write32(a, 0x10, 0xc000_0000);
    assert!(rig.bar_names().is_empty(), "decode is still off");
    assert_eq!(rig.mmio_read32(0xc000_0000), u32::MAX);

    rig.command(a, COMMAND_MEMORY);
    assert_eq!(
        rig.bar_names(),
        vec![(BAR_NAME.to_string(), 0xc000_0000, TEST_DEVICE_BAR_SIZE)]
    );
    assert_eq!(rig.mmio_read32(0xc000_0000), TEST_DEVICE_MAGIC);

    rig.command(a, 0);
    assert!(rig.bar_names().is_empty());
    assert_eq!(rig.mmio_read32(0xc000_0000), u32::MAX);

    // I/O decode alone does not map a memory BAR.
    rig.command(a, COMMAND_IO);
    assert!(rig.bar_names().is_empty());
}

#[test]
fn moving_a_bar_while_decode_is_on_moves_the_mapping() {
    let rig = Rig::ecam();
    let a = addr(0, 1, 0);
    rig.add_test_device(a);
    rig.write32(a, 0x10, 0xc000_0000);
    rig.command(a, COMMAND_MEMORY);
    rig.mmio_write32(0xc000_0004, 0x1234_5678);
    rig.write32(a, 0x10, 0xc010_0000);
    assert_eq!(
        rig.bar_names(),
        vec![(BAR_NAME.to_string(), 0xc010_0000, TEST_DEVICE_BAR_SIZE)]
    );
    assert_eq!(rig.mmio_read32(0xc000_0004), u32::MAX);
    assert_eq!(rig.mmio_read32(0xc010_0004), 0x1234_5678);
    assert_eq!(rig.bridge.lock().unwrap().mapped_bars().len(), 1);
}

#[test]
fn colliding_bar_stays_unmapped_until_moved_to_a_free_range() {
    let rig = Rig::ecam();
    let a = addr(0, 1, 0);
    rig.add_test_device(a);
    struct Blocker;
    impl BusDevice for Blocker {
        fn read(&mut self, _: u64, data: &mut [u8]) {
            data.fill(0x11);
        }
        fn write(&mut self, _: u64, _: &[u8]) {}
    }
    rig.bus
        .insert("blocker", 0xc000_2800, 0x100, Arc::new(Mutex::new(Blocker)))
        .unwrap();
    rig.write32(a, 0x10, 0xc000_2000);
    rig.command(a, COMMAND_MEMORY);
    assert!(rig.bar_names().iter().all(|(n, _, _)| n != BAR_NAME));
    assert_eq!(rig.mmio_read32(0xc000_2000), u32::MAX);
    assert_eq!(rig.mmio_read32(0xc000_2800), 0x1111_1111);
    assert!(rig.bridge.lock().unwrap().mapped_bars().is_empty());

    rig.write32(a, 0x10, 0xc000_3000);
    assert!(rig
        .bar_names()
        .contains(&(BAR_NAME.to_string(), 0xc000_3000, TEST_DEVICE_BAR_SIZE)));
    assert_eq!(rig.mmio_read32(0xc000_3000), TEST_DEVICE_MAGIC);
}

#[test]
fn two_bars_of_one_function_may_swap_places() {
    let rig = Rig::ecam();
    let a = addr(0, 1, 0);
    let f = Plain::new(1)
        .with_bar(0, BarSpec::memory32(0x1000))
        .with_bar(1, BarSpec::memory32(0x1000));
    rig.add(a, Arc::new(Mutex::new(f)));
    rig.write32(a, 0x10, 0xc000_0000);
    rig.write32(a, 0x14, 0xc000_1000);
    rig.command(a, COMMAND_MEMORY);
    assert_eq!(rig.bar_names().len(), 2);
    // Swap while decode is off, then enable: both map.
    rig.command(a, 0);
    rig.write32(a, 0x10, 0xc000_1000);
    rig.write32(a, 0x14, 0xc000_0000);
    rig.command(a, COMMAND_MEMORY);
    assert_eq!(rig.mmio_read32(0xc000_0000), 0x0101_0101);
    assert_eq!(rig.mmio_read32(0xc000_1000), 0);
}

#[test]
fn bar_outside_the_bridge_windows_stays_unmapped() {
    let rig = Rig::ecam();
    let a = addr(0, 1, 0);
    rig.add_test_device(a);
    for base in [0xb000_0000u32, MMIO32.end() as u32, 0xd000_0000] {
        rig.write32(a, 0x10, base);
        rig.command(a, COMMAND_MEMORY);
        assert!(rig.bar_names().is_empty(), "mapped at {base:#x}");
        rig.command(a, 0);
    }
    // The all-ones sizing pattern is never decoded either.
    rig.write32(a, 0x10, 0xffff_ffff);
    rig.command(a, COMMAND_MEMORY);
    assert!(rig.bar_names().is_empty());
}

#[test]
fn sixty_four_bit_bar_maps_in_the_64bit_window_and_forwards_accesses() {
    let rig = Rig::ecam();
    let a = addr(0, 2, 0);
    let f = Arc::new(Mutex::new(
        Plain::new(1).with_bar(2, BarSpec::memory64(0x10_0000).prefetchable()),
    ));
    rig.add(a, f.clone());
    rig.write32(a, 0x18, MMIO64.base as u32);
    rig.write32(a, 0x1c, (MMIO64.base >> 32) as u32);
    rig.command(a, COMMAND_MEMORY);
    assert_eq!(
        rig.bar_names(),
        vec![("pci0/00:02.0/bar2".to_string(), MMIO64.base, 0x10_0000)]
    );
    let mut data = [0u8; 8];
    assert!(rig.bus.read(MMIO64.base + 0x10, &mut data));
    assert_eq!(data, [2; 8]);
    assert!(rig.bus.write(MMIO64.base + 0x20, &[9, 8]));
    assert_eq!(f.lock().unwrap().writes, vec![(2, 0x20, vec![9, 8])]);
}

#[test]
fn io_bars_are_sized_but_never_mapped() {
    let rig = Rig::ecam();
    let a = addr(0, 1, 0);
    rig.add(
        a,
        Arc::new(Mutex::new(Plain::new(1).with_bar(0, BarSpec::io(0x10)))),
    );
    rig.write32(a, 0x10, 0x1000);
    rig.command(a, COMMAND_IO | COMMAND_MEMORY);
    assert!(rig.bar_names().is_empty());
}

#[derive(Default)]
struct MockMapper {
    calls: Mutex<Vec<(&'static str, u64, u64)>>,
    fail: AtomicBool,
}

impl BarMapper for MockMapper {
    fn map(&self, gpa: u64, size: u64) -> Result<(), BarMapError> {
        self.calls.lock().unwrap().push(("map", gpa, size));
        if self.fail.load(Ordering::SeqCst) {
            return Err("no free memory slot".into());
        }
        Ok(())
    }
    fn unmap(&self, gpa: u64, size: u64) -> Result<(), BarMapError> {
        self.calls.lock().unwrap().push(("unmap", gpa, size));
        Ok(())
    }
}

#[test]
fn memory_backed_bar_is_mapped_moved_and_unmapped_through_the_mapper() {
    let rig = Rig::ecam();
    let a = addr(0, 3, 0);
    let mapper = Arc::new(MockMapper::default());
    let f = Plain::new(1).with_bar(
        2,
        BarSpec::memory64(0x10_0000)
            .prefetchable()
            .backed_by(mapper.clone()),
    );
    rig.add(a, Arc::new(Mutex::new(f)));
    let (lo, hi) = (MMIO64.base as u32, (MMIO64.base >> 32) as u32);
    rig.write32(a, 0x18, lo);
    rig.write32(a, 0x1c, hi);
    assert!(mapper.calls.lock().unwrap().is_empty());
    rig.command(a, COMMAND_MEMORY);
    // The range is also reserved on the bus, so nothing else can land on it.
    assert_eq!(
        rig.bar_names(),
        vec![("pci0/00:03.0/bar2".to_string(), MMIO64.base, 0x10_0000)]
    );
    rig.write32(a, 0x18, lo + 0x10_0000);
    rig.command(a, 0);
    let calls = mapper.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        vec![
            ("map", MMIO64.base, 0x10_0000),
            ("unmap", MMIO64.base, 0x10_0000),
            ("map", MMIO64.base + 0x10_0000, 0x10_0000),
            ("unmap", MMIO64.base + 0x10_0000, 0x10_0000),
        ]
    );
    assert!(rig.bar_names().is_empty());
}

#[test]
fn failed_memory_mapping_leaves_the_bar_unmapped_and_the_bus_clean() {
    let rig = Rig::ecam();
    let a = addr(0, 3, 0);
    let mapper = Arc::new(MockMapper::default());
    mapper.fail.store(true, Ordering::SeqCst);
    let f = Plain::new(1).with_bar(0, BarSpec::memory32(0x1000).backed_by(mapper.clone()));
    rig.add(a, Arc::new(Mutex::new(f)));
    rig.write32(a, 0x10, 0xc000_0000);
    rig.command(a, COMMAND_MEMORY);
    assert!(rig.bar_names().is_empty());
    assert!(rig.bridge.lock().unwrap().mapped_bars().is_empty());
    // Disabling decode does not unmap what was never mapped.
    rig.command(a, 0);
    assert_eq!(
        *mapper.calls.lock().unwrap(),
        vec![("map", 0xc000_0000, 0x1000)]
    );
}

#[test]
fn removing_a_function_unmaps_its_bars_and_lowers_its_intx() {
    let rig = Rig::ecam();
    let a = addr(0, 1, 0);
    rig.add_test_device(a);
    rig.write32(a, 0x10, 0xc000_0000);
    rig.command(a, COMMAND_MEMORY);
    rig.mmio_write32(0xc000_0000 + td::IRQ, 1);
    let pin = PciHostBridge::intx_index(1, 1);
    assert!(rig.lines[pin].high());
    rig.bridge.lock().unwrap().remove_function(a).unwrap();
    assert!(rig.bar_names().is_empty());
    assert!(!rig.lines[pin].high());
    assert_eq!(rig.read32(a, 0), u32::MAX);
    assert!(matches!(
        rig.bridge.lock().unwrap().remove_function(a),
        Err(PciError::NoFunction(x)) if x == a
    ));
}

#[test]
fn bridge_reset_turns_decode_off_and_unmaps_bars() {
    let rig = Rig::ecam();
    let a = addr(0, 1, 0);
    let dev = rig.add_test_device(a);
    rig.write32(a, 0x10, 0xc000_0000);
    rig.command(a, COMMAND_MEMORY);
    rig.mmio_write32(0xc000_0000 + td::SCRATCH, 7);
    rig.bridge.lock().unwrap().reset();
    assert!(rig.bar_names().is_empty());
    assert_eq!(rig.read(a, regs::COMMAND as u16, 2), 0);
    assert_eq!(dev.lock().unwrap().scratch(), 0);
}

#[test]
fn dropping_the_bridge_unmaps_its_bars() {
    let slot = slot(PciHostKind::Ecam, 0, 0);
    let bus = Arc::new(Bus::new(BusKind::Mmio));
    let mut bridge = PciHostBridge::new(&slot, &bus);
    bridge
        .add_function(
            addr(0, 1, 0),
            Arc::new(Mutex::new(PciTestDevice::new(no_msi()).unwrap())),
        )
        .unwrap();
    let base = (1 << 15) as u64;
    bridge.write(base + 0x10, &0xc000_0000u32.to_le_bytes());
    bridge.write(base + 0x04, &COMMAND_MEMORY.to_le_bytes());
    assert_eq!(bus.devices().len(), 1);
    drop(bridge);
    assert!(bus.devices().is_empty());
}

#[test]
fn bar_accesses_and_config_writes_from_two_threads_do_not_deadlock() {
    let rig = Rig::ecam();
    let a = addr(0, 1, 0);
    rig.add_test_device(a);
    rig.write32(a, 0x10, 0xc000_0000);
    let bus = rig.bus.clone();
    let reader = std::thread::spawn(move || {
        for i in 0..20_000u32 {
            let mut data = [0u8; 4];
            bus.read(0xc000_0000, &mut data);
            let v = u32::from_le_bytes(data);
            assert!(v == TEST_DEVICE_MAGIC || v == u32::MAX);
            bus.write(0xc000_0000 + td::IRQ, &(i & 1).to_le_bytes());
        }
    });
    for i in 0..5_000u32 {
        rig.command(a, if i % 2 == 0 { COMMAND_MEMORY } else { 0 });
        rig.write32(a, 0x10, 0xc000_0000 + (i % 4) * 0x1000);
    }
    reader.join().unwrap();
}

// ------------------------------------------------------------ multi-function

#[test]
fn multi_function_bit_is_set_on_function_zero_of_a_device_with_several_functions() {
    let rig = Rig::ecam();
    let header = |f| rig.read(addr(0, 4, f), regs::HEADER_TYPE as u16, 1);
    rig.add(addr(0, 4, 3), Arc::new(Mutex::new(Plain::new(3))));
    rig.add(addr(0, 4, 0), Arc::new(Mutex::new(Plain::new(0))));
    assert_eq!(header(0), 0x80);
    assert_eq!(header(3), 0x00);
    // Other devices are unaffected.
    rig.add(addr(0, 5, 0), Arc::new(Mutex::new(Plain::new(5))));
    assert_eq!(rig.read(addr(0, 5, 0), regs::HEADER_TYPE as u16, 1), 0);
    // A guest scanning functions 1..7 finds function 3.
    assert_eq!(rig.read32(addr(0, 4, 3), 0), 0x0003_1234);
    rig.bridge
        .lock()
        .unwrap()
        .remove_function(addr(0, 4, 3))
        .unwrap();
    assert_eq!(header(0), 0x00);
    // The bit survives a reset (it is part of the initial header).
    rig.add(addr(0, 4, 1), Arc::new(Mutex::new(Plain::new(1))));
    rig.bridge.lock().unwrap().reset();
    assert_eq!(header(0), 0x80);
}

// --------------------------------------------------------------------- INTx

#[test]
fn intx_swizzle_matches_the_device_tree_interrupt_map() {
    for device in 0..32u8 {
        for pin in [IntxPin::A, IntxPin::B, IntxPin::C, IntxPin::D] {
            let index = PciHostBridge::intx_index(device, pin as u8);
            assert_eq!(index, (usize::from(device) + pin as usize - 1) % 4);
            assert_eq!(
                INTX[index],
                pci_intx_pin(&INTX, u32::from(device), pin as u32)
            );
        }
    }
    let rig = Rig::ecam();
    for (device, pin) in [
        (1u8, IntxPin::A),
        (2, IntxPin::B),
        (3, IntxPin::D),
        (8, IntxPin::C),
    ] {
        let a = addr(0, device, 0);
        let f = Arc::new(Mutex::new(Plain::new(1).with_pin(pin)));
        rig.add(a, f.clone());
        let want = (usize::from(device) + pin as usize - 1) % 4;
        assert_eq!(rig.bridge.lock().unwrap().intx_gsi(a), Some(INTX[want]));
        f.lock().unwrap().config_mut().set_intx(true);
        for (i, line) in rig.lines.iter().enumerate() {
            assert_eq!(
                line.high(),
                i == want,
                "device {device} pin {pin:?} line {i}"
            );
        }
        f.lock().unwrap().config_mut().set_intx(false);
        assert!(rig.lines.iter().all(|l| !l.high()));
    }
    // A function without an interrupt pin has no GSI.
    rig.add(addr(0, 9, 0), Arc::new(Mutex::new(Plain::new(1))));
    assert_eq!(rig.bridge.lock().unwrap().intx_gsi(addr(0, 9, 0)), None);
}

#[test]
fn test_device_raises_and_lowers_intx_through_its_bar() {
    let rig = Rig::ecam();
    let a = addr(0, 1, 0);
    rig.add_test_device(a);
    let line = &rig.lines[PciHostBridge::intx_index(1, 1)];
    rig.write32(a, 0x10, 0xc000_0000);
    rig.command(a, COMMAND_MEMORY);
    rig.mmio_write32(0xc000_0000 + td::IRQ, 1);
    assert!(line.high());
    assert_eq!(rig.mmio_read32(0xc000_0000 + td::IRQ), 1);
    assert_ne!(
        rig.read(a, regs::STATUS as u16, 2) as u16 & STATUS_INTERRUPT,
        0
    );
    rig.mmio_write32(0xc000_0000 + td::IRQ, 0);
    assert!(!line.high());
    assert_eq!(
        rig.read(a, regs::STATUS as u16, 2) as u16 & STATUS_INTERRUPT,
        0
    );
    assert_eq!(*line.changes.lock().unwrap(), vec![false, true, false]);
}

#[test]
fn intx_disable_masks_the_line_but_not_the_status_bit() {
    let rig = Rig::ecam();
    let a = addr(0, 1, 0);
    let dev = rig.add_test_device(a);
    let line = &rig.lines[PciHostBridge::intx_index(1, 1)];
    rig.command(a, COMMAND_INTX_DISABLE);
    dev.lock().unwrap().config_mut().set_intx(true);
    assert!(!line.high());
    assert_ne!(
        rig.read(a, regs::STATUS as u16, 2) as u16 & STATUS_INTERRUPT,
        0
    );
    rig.command(a, 0);
    assert!(line.high());
    rig.command(a, COMMAND_INTX_DISABLE);
    assert!(!line.high());
    dev.lock().unwrap().config_mut().set_intx(false);
    rig.command(a, 0);
    assert!(!line.high());
}

#[test]
fn functions_sharing_a_pin_keep_it_high_until_all_lower_it() {
    let rig = Rig::ecam();
    // Device 0 INTB and device 1 INTA both reach bridge pin 1.
    let f0 = Arc::new(Mutex::new(Plain::new(1).with_pin(IntxPin::B)));
    let f1 = Arc::new(Mutex::new(Plain::new(2).with_pin(IntxPin::A)));
    rig.add(addr(0, 0, 0), f0.clone());
    rig.add(addr(0, 1, 0), f1.clone());
    f0.lock().unwrap().config_mut().set_intx(true);
    f1.lock().unwrap().config_mut().set_intx(true);
    assert!(rig.lines[1].high());
    f0.lock().unwrap().config_mut().set_intx(false);
    assert!(rig.lines[1].high());
    assert!(rig.bridge.lock().unwrap().intx_level(1));
    f1.lock().unwrap().config_mut().set_intx(false);
    assert!(!rig.lines[1].high());
    assert!(!rig.bridge.lock().unwrap().intx_level(1));
}

#[test]
fn lines_connected_after_an_interrupt_is_raised_see_the_current_level() {
    let slot = slot(PciHostKind::Ecam, 0, 0);
    let bus = Arc::new(Bus::new(BusKind::Mmio));
    let mut bridge = PciHostBridge::new(&slot, &bus);
    let dev = Arc::new(Mutex::new(PciTestDevice::new(no_msi()).unwrap()));
    bridge.add_function(addr(0, 2, 0), dev.clone()).unwrap();
    dev.lock().unwrap().config_mut().set_intx(true);
    let lines: [Arc<Line>; 4] = Default::default();
    bridge.connect_intx(lines.clone().map(|l| l as Arc<dyn InterruptLine>));
    let pin = PciHostBridge::intx_index(2, 1);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l.high(), i == pin);
    }
}

// ------------------------------------------------------------- test device

#[test]
fn test_device_identifies_itself() {
    let dev = PciTestDevice::new(no_msi()).unwrap();
    let c = dev.config();
    assert_eq!(c.read(0), 0x00ce_1b36);
    assert_eq!(c.read(2), 0xff00_0001);
    assert_eq!(c.read(11), 0x00ce_1b36);
    assert_eq!(c.interrupt_pin(), 1);
    assert_eq!(
        c.bar(0).map(|b| (b.kind(), b.size())),
        Some((BarKind::Memory32, 0x1000))
    );
    assert_eq!(
        c.bar(1).map(|b| (b.kind(), b.size())),
        Some((BarKind::Memory32, TEST_DEVICE_MSIX_BAR_SIZE))
    );
    assert_eq!(c.capabilities(), vec![(0x09, 0x40), (CAP_ID_MSIX, 0x48)]);
    assert_eq!(c.read(0x40 / 4), 0x0008_4809, "length 8, next 0x48");
    // MSI-X: table size N - 1, disabled; table at BAR1 + 0, PBA at 0x800.
    assert_eq!(
        c.read(0x48 / 4),
        u32::from(TEST_DEVICE_MSIX_VECTORS - 1) << 16 | u32::from(CAP_ID_MSIX)
    );
    assert_eq!(c.read(0x4c / 4), 1);
    assert_eq!(c.read(0x50 / 4), TEST_DEVICE_MSIX_PBA as u32 | 1);
    assert_eq!(c.read(0x44 / 4), u32::from_le_bytes(*b"CVTD"));
    assert_eq!(TEST_DEVICE_MAGIC, 0x4454_5643);
}

#[test]
fn test_device_registers_behave_as_documented() {
    let dev: SharedFunction = Arc::new(Mutex::new(PciTestDevice::new(no_msi()).unwrap()));
    let mut bar = BarAdapter::new(dev.clone(), 0);
    let read = |bar: &mut BarAdapter, off: u64, len: usize| {
        let mut data = vec![0u8; len];
        bar.read(off, &mut data);
        crate::devices::le_value(&data)
    };
    assert_eq!(read(&mut bar, td::MAGIC, 4), u64::from(TEST_DEVICE_MAGIC));
    assert_eq!(read(&mut bar, td::MAGIC, 1), u64::from(b'C'));
    assert_eq!(read(&mut bar, td::MAGIC + 3, 1), u64::from(b'D'));
    bar.write(td::MAGIC, &[0; 4]);
    assert_eq!(read(&mut bar, td::MAGIC, 4), u64::from(TEST_DEVICE_MAGIC));

    bar.write(td::SCRATCH, &0xdead_beefu32.to_le_bytes());
    assert_eq!(read(&mut bar, td::SCRATCH, 4), 0xdead_beef);
    bar.write(td::SCRATCH + 1, &[0x00]);
    assert_eq!(read(&mut bar, td::SCRATCH, 4), 0xdead_00ef);
    assert_eq!(read(&mut bar, td::COUNT, 4), 2);
    // An 8-byte write covering magic and scratch counts once.
    bar.write(td::MAGIC, &0x1111_2222_3333_4444u64.to_le_bytes());
    assert_eq!(read(&mut bar, td::SCRATCH, 4), 0x1111_2222);
    assert_eq!(read(&mut bar, td::COUNT, 4), 3);
    // The counter is read-only; writes elsewhere do not count.
    bar.write(td::COUNT, &[0; 4]);
    bar.write(0x800, &[1; 4]);
    assert_eq!(read(&mut bar, td::COUNT, 4), 3);
    assert_eq!(read(&mut bar, 0x800, 4), 0);
    assert_eq!(read(&mut bar, 0xff8, 8), 0);
    // 8-byte read of magic + scratch.
    assert_eq!(
        read(&mut bar, td::MAGIC, 8),
        (0x1111_2222u64 << 32) | u64::from(TEST_DEVICE_MAGIC)
    );

    bar.write(td::IRQ, &1u32.to_le_bytes());
    assert_eq!(read(&mut bar, td::IRQ, 4), 1);
    assert!(dev.lock().unwrap().config().intx_asserted());
    dev.lock().unwrap().reset();
    assert_eq!(read(&mut bar, td::SCRATCH, 4), 0);
    assert_eq!(read(&mut bar, td::COUNT, 4), 0);
    assert_eq!(read(&mut bar, td::IRQ, 4), 0);
    // Other BAR indexes (BAR1 is MSI-X) do not exist.
    let mut other = BarAdapter::new(dev, 2);
    assert_eq!(read(&mut other, 0, 4), 0xffff_ffff);
}

/// The test device with a recording MSI sender, vector `v` programmed
/// (address 0xfee0_0000, data 0x40 + v, unmasked) and MSI-X enabled when
/// `enable`.
fn msix_test_device(enable: bool) -> (PciTestDevice, Arc<Msis>) {
    let msis = Arc::new(Msis::default());
    let mut dev = PciTestDevice::new(msis.clone()).unwrap();
    for v in 0..u64::from(TEST_DEVICE_MSIX_VECTORS) {
        let entry = v * 16;
        dev.write_bar(1, entry, &0xfee0_0000u32.to_le_bytes());
        dev.write_bar(1, entry + 8, &(0x40 + v as u32).to_le_bytes());
        dev.write_bar(1, entry + 12, &0u32.to_le_bytes());
    }
    if enable {
        dev.write_config(0x48 / 4, 1 << 31, 0xffff_0000);
    }
    dev.write_config(1, u32::from(COMMAND_MEMORY | COMMAND_BUS_MASTER), 0xffff);
    (dev, msis)
}

fn read_reg(dev: &mut PciTestDevice, reg: u64) -> u32 {
    let mut b = [0u8; 4];
    dev.read_bar(0, reg, &mut b);
    u32::from_le_bytes(b)
}

#[test]
fn test_device_msix_write_sends_the_programmed_message_of_that_vector() {
    let (mut dev, msis) = msix_test_device(true);
    assert!(dev.msix_enabled());
    dev.write_bar(0, td::MSIX, &1u32.to_le_bytes());
    dev.write_bar(0, td::MSIX, &[0]);
    assert_eq!(
        *msis.0.lock().unwrap(),
        vec![(1, 0xfee0_0000, 0x41), (0, 0xfee0_0000, 0x40)]
    );
    assert_eq!(read_reg(&mut dev, td::MSIX), 2);
    // A vector beyond the table is dropped and not counted.
    dev.write_bar(0, td::MSIX, &u32::MAX.to_le_bytes());
    dev.write_bar(
        0,
        td::MSIX,
        &u32::from(TEST_DEVICE_MSIX_VECTORS).to_le_bytes(),
    );
    assert_eq!(msis.0.lock().unwrap().len(), 2);
    assert_eq!(read_reg(&mut dev, td::MSIX), 2);
    // Without bus mastering no message goes out (nor is one counted).
    dev.write_config(1, u32::from(COMMAND_MEMORY), 0xffff);
    dev.write_bar(0, td::MSIX, &0u32.to_le_bytes());
    assert_eq!(msis.0.lock().unwrap().len(), 2);
    assert_eq!(read_reg(&mut dev, td::MSIX), 2);
}

#[test]
fn test_device_msix_writes_while_disabled_are_ignored_and_intx_works() {
    let (mut dev, msis) = msix_test_device(false);
    dev.write_bar(0, td::MSIX, &0u32.to_le_bytes());
    assert!(msis.0.lock().unwrap().is_empty());
    assert_eq!(read_reg(&mut dev, td::MSIX), 0);
    dev.write_bar(0, td::IRQ, &1u32.to_le_bytes());
    assert!(dev.config().intx_asserted());
}

#[test]
fn test_device_keeps_intx_low_while_msix_is_enabled() {
    let (mut dev, _msis) = msix_test_device(false);
    dev.write_bar(0, td::IRQ, &1u32.to_le_bytes());
    assert!(dev.config().intx_asserted());
    // Enabling MSI-X lowers the line; the register still reads the request.
    dev.write_config(0x48 / 4, 1 << 31, 0xffff_0000);
    assert!(!dev.config().intx_asserted());
    assert_eq!(read_reg(&mut dev, td::IRQ), 1);
    dev.write_bar(0, td::IRQ, &1u32.to_le_bytes());
    assert!(!dev.config().intx_asserted());
    // Disabling it gives the line its requested level back.
    dev.write_config(0x48 / 4, 0, 0xffff_0000);
    assert!(dev.config().intx_asserted());
}

#[test]
fn test_device_masked_vector_pends_until_unmasked_and_reset_clears_msix() {
    let (mut dev, msis) = msix_test_device(true);
    dev.write_bar(1, 12, &1u32.to_le_bytes());
    dev.write_bar(0, td::MSIX, &0u32.to_le_bytes());
    assert!(msis.0.lock().unwrap().is_empty());
    let mut pba = [0u8; 8];
    dev.read_bar(1, TEST_DEVICE_MSIX_PBA, &mut pba);
    assert_eq!(u64::from_le_bytes(pba), 1);
    dev.write_bar(1, 12, &0u32.to_le_bytes());
    assert_eq!(*msis.0.lock().unwrap(), vec![(0, 0xfee0_0000, 0x40)]);

    dev.reset();
    assert!(!dev.msix_enabled());
    assert_eq!(read_reg(&mut dev, td::MSIX), 0);
    let mut entry = [0u8; 4];
    dev.read_bar(1, 12, &mut entry);
    assert_eq!(u32::from_le_bytes(entry), 1, "vectors masked after reset");
}

// ------------------------------------------------------------------- fuzz

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[test]
fn hundred_thousand_random_accesses_never_panic_and_the_bridge_still_answers() {
    let rig = Rig::new(PciHostKind::Ecam, 0, 1);
    let td_addr = addr(0, 1, 0);
    rig.add_test_device(td_addr);
    let mapper = Arc::new(MockMapper::default());
    let plain = Plain::new(0x77)
        .with_bar(0, BarSpec::memory64(0x4000).prefetchable())
        .with_bar(2, BarSpec::io(0x20))
        .with_bar(3, BarSpec::memory32(0x1000).backed_by(mapper))
        .with_pin(IntxPin::C);
    rig.add(addr(1, 1, 0), Arc::new(Mutex::new(plain)));
    let window = rig.slot.config.size;
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut bridge_reads = 0u64;
    let mut ever_mapped = 0usize;
    for _ in 0..100_000 {
        let r = rng.next();
        // Mostly inside the window, sometimes just past it; bias towards
        // the two populated functions' headers so BARs really get mapped.
        let offset = match r % 4 {
            0 => rng.next() % (window + 64),
            1 => (1 << 15) | (rng.next() % 0x100),
            2 => (1 << 20) | (1 << 15) | (rng.next() % 0x100),
            _ => rng.next() % 0x40 + if r & 0x10 != 0 { 1 << 15 } else { 0 },
        };
        let len = (rng.next() % 10) as usize;
        // A quarter of the values are addresses inside the 32-bit window,
        // so BAR writes land somewhere mappable.
        let value = if r % 4 == 3 {
            (MMIO32.base + rng.next() % MMIO32.size).to_le_bytes()
        } else {
            rng.next().to_le_bytes()
        };
        let data: Vec<u8> = value.iter().cycle().take(len).copied().collect();
        if rng.next() & 1 == 0 {
            rig.bridge_write(offset, &data);
        } else {
            rig.bridge_read(offset, len);
            bridge_reads += 1;
        }
        // Now and then poke whatever BARs happen to be mapped.
        if r.is_multiple_of(64) {
            let mapped = rig.bridge.lock().unwrap().mapped_bars();
            ever_mapped += mapped.len();
            for (_, region) in mapped {
                let mut d = [0u8; 4];
                rig.bus.read(region.base, &mut d);
                rig.bus.write(region.base + 8, &value[..4]);
            }
        }
    }
    assert!(bridge_reads > 0);
    assert!(ever_mapped > 0, "the random walk never mapped a BAR");
    assert!(rig.bad() > 0);
    assert_eq!(rig.read(td_addr, 0, 2), u64::from(TEST_DEVICE_VENDOR_ID));
    assert_eq!(rig.read32(addr(1, 1, 0), 0), 0x0077_1234);
    assert_eq!(rig.read32(addr(0, 0, 0), 0), u32::MAX);
    // The bus holds only the window and BARs the bridge says are mapped.
    let mapped = rig.bridge.lock().unwrap().mapped_bars();
    assert_eq!(rig.bar_names().len(), mapped.len());
}
