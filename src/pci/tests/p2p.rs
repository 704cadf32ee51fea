//! PCI-to-PCI bridges: the type-1 header and the bus behind it.

use super::*;
use crate::pci::p2p_bridge::regs as p2p;

/// A host bridge with buses 0..=1 and a PCI-to-PCI bridge at 00:02.0
/// leading to bus 1.
fn rig_with_p2p() -> Rig {
    let rig = Rig::new(PciHostKind::Ecam, 0, 1);
    rig.bridge.lock().unwrap().route_bus(1, 2);
    rig.add(
        addr(0, 2, 0),
        Arc::new(Mutex::new(PciToPciBridge::new(0, 1))),
    );
    rig
}

#[test]
fn a_pci_to_pci_bridge_has_a_type_1_header_configured_as_firmware_would() {
    let rig = rig_with_p2p();
    let at = addr(0, 2, 0);
    assert_eq!(rig.read32(at, 0), 0x0001_1b36);
    assert_eq!(rig.read32(at, 0x08) >> 16, 0x0604);
    assert_eq!(rig.read(at, regs::HEADER_TYPE as u16, 1), 1);
    // primary 0, secondary 1, subordinate 1.
    assert_eq!(rig.read32(at, p2p::BUS_NUMBERS as u16), 0x0001_0100);
    assert_eq!(rig.read(at, regs::INTERRUPT_PIN as u16, 1), 0);
}

#[test]
fn a_pci_to_pci_bridge_offers_a_memory_window_only() {
    let rig = rig_with_p2p();
    let at = addr(0, 2, 0);
    // Linux probes each window by writing and reading back.
    rig.write32(at, p2p::IO_BASE as u16, 0xe0f0);
    assert_eq!(rig.read32(at, p2p::IO_BASE as u16), 0, "no I/O window");
    rig.write32(at, p2p::PREF_MEMORY_BASE as u16, 0xfff0_fff0);
    assert_eq!(rig.read32(at, p2p::PREF_MEMORY_BASE as u16), 0);
    // Memory window 0xc010_0000..=0xc01f_ffff: low four bits read 0.
    rig.write32(at, p2p::MEMORY_BASE as u16, 0xc01f_c01f);
    assert_eq!(rig.read32(at, p2p::MEMORY_BASE as u16), 0xc010_c010);
    let window = rig.bridge.lock().unwrap().function(at).map(|f| {
        let f = f.lock().unwrap();
        f.config().read(p2p::MEMORY_BASE / 4)
    });
    assert_eq!(window, Some(0xc010_c010));
    let bridge = PciToPciBridge::new(0, 1);
    assert_eq!(bridge.secondary_bus(), 1);
}

#[test]
fn the_memory_window_the_guest_programs_is_read_back_as_a_range() {
    let mut bridge = PciToPciBridge::new(0, 1);
    assert_eq!(bridge.memory_window(), Some((0, 0xf_ffff)));
    bridge
        .config_mut()
        .write(p2p::MEMORY_BASE / 4, 0xc01f_c010, u32::MAX);
    assert_eq!(bridge.memory_window(), Some((0xc010_0000, 0xc01f_ffff)));
    // Base above limit: closed.
    bridge
        .config_mut()
        .write(p2p::MEMORY_BASE / 4, 0xc000_c010, u32::MAX);
    assert_eq!(bridge.memory_window(), None);
}

#[test]
fn a_function_behind_the_bridge_answers_on_its_bus_with_its_intx_swizzled() {
    let rig = rig_with_p2p();
    let first = rig.add_test_device(addr(1, 0, 0));
    rig.add_test_device(addr(1, 1, 0));
    assert_eq!(
        rig.read32(addr(1, 0, 0), 0),
        u32::from(TEST_DEVICE_VENDOR_ID) | u32::from(TEST_DEVICE_DEVICE_ID) << 16
    );
    // Nothing at bus 1 slot 2; nothing on the root bus at slot 0.
    assert_eq!(rig.read32(addr(1, 2, 0), 0), u32::MAX);
    assert_eq!(rig.read32(addr(0, 0, 0), 0), u32::MAX);
    // INTA of 01:00.0 reaches the bridge's INTA, which is root slot 2's
    // INTA: bridge pin (2 + 0) % 4. INTA of 01:01.0 reaches the bridge's
    // INTB: pin (2 + 1) % 4.
    let bridge = rig.bridge.lock().unwrap();
    assert_eq!(bridge.intx_gsi(addr(1, 0, 0)), Some(INTX[2]));
    assert_eq!(bridge.intx_gsi(addr(1, 1, 0)), Some(INTX[3]));
    drop(bridge);
    first.lock().unwrap().config_mut().set_intx(true);
    let high: Vec<bool> = rig.lines.iter().map(|l| l.high()).collect();
    assert_eq!(high, [false, false, true, false]);
}

#[test]
fn a_function_on_a_bus_no_bridge_leads_to_has_no_intx() {
    let rig = Rig::new(PciHostKind::Ecam, 0, 1);
    rig.add_test_device(addr(1, 0, 0));
    assert_eq!(rig.bridge.lock().unwrap().intx_gsi(addr(1, 0, 0)), None);
}
