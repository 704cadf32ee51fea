//! Config-space mirrors: what the guest reads from the mirror window always
//! equals what an exiting read returns, absent functions included; the
//! mapped ranges leave out exactly the functions that are not mirrored.

use super::*;
use crate::pci::config_mirror::MIRROR_PAGE_SIZE;
use std::collections::BTreeMap;

/// A mapped range: the window, the offset in it, the length.
type Range = (Arc<MirrorWindow>, u64, u64);

/// Mapped ranges by guest-physical address; a mapping removes its entry
/// when dropped. `fail` makes every map fail.
#[derive(Default)]
struct Ranges {
    mapped: Mutex<BTreeMap<u64, Range>>,
    fail: AtomicBool,
}

struct RangeMapping {
    gpa: u64,
    ranges: Arc<Ranges>,
}

impl MirrorMapping for RangeMapping {}

impl Drop for RangeMapping {
    fn drop(&mut self) {
        self.ranges.mapped.lock().unwrap().remove(&self.gpa);
    }
}

struct Mapper(Arc<Ranges>);

impl MirrorMapper for Mapper {
    fn map(
        &self,
        gpa: u64,
        window: &Arc<MirrorWindow>,
        offset: u64,
        len: u64,
    ) -> Result<Box<dyn MirrorMapping>, MirrorError> {
        if self.0.fail.load(Ordering::SeqCst) {
            return Err(MirrorError::Map {
                gpa,
                reason: "refused by the test".into(),
            });
        }
        let mut mapped = self.0.mapped.lock().unwrap();
        let overlaps = mapped
            .iter()
            .any(|(g, (_, _, l))| gpa < g + l && *g < gpa + len);
        assert!(!overlaps, "{gpa:#x}+{len:#x} overlaps a mapped range");
        mapped.insert(gpa, (window.clone(), offset, len));
        Ok(Box::new(RangeMapping {
            gpa,
            ranges: self.0.clone(),
        }))
    }
}

fn mirrored_rig(kind: PciHostKind) -> (Rig, Arc<Ranges>) {
    let rig = Rig::new(kind, 0, 0);
    let ranges = Arc::new(Ranges::default());
    rig.bridge
        .lock()
        .unwrap()
        .set_mirror_mapper(Arc::new(Mapper(ranges.clone())));
    (rig, ranges)
}

impl Rig {
    fn gpa(&self, a: PciAddress) -> u64 {
        self.slot.config.base + self.offset(a, 0)
    }
}

impl Ranges {
    /// What the guest reads at `gpa` if a mapped range covers it.
    fn guest_read(&self, gpa: u64) -> Option<u32> {
        let mapped = self.mapped.lock().unwrap();
        let (start, (window, offset, len)) = mapped.range(..=gpa).next_back()?;
        (gpa < start + len).then(|| window.load(offset + (gpa - start)))
    }

    /// The mapped ranges as (guest-physical address, length).
    fn spans(&self) -> Vec<(u64, u64)> {
        let mapped = self.mapped.lock().unwrap();
        mapped.iter().map(|(g, (_, _, l))| (*g, *l)).collect()
    }
}

/// Every dword of the function's page, as the guest reads it from the
/// mapped window, equals the exiting read.
fn assert_page_matches(rig: &Rig, ranges: &Ranges, a: PciAddress) {
    for reg in 0..MIRROR_PAGE_SIZE / 4 {
        let exiting = rig.read32(a, (reg * 4) as u16);
        let gpa = rig.gpa(a) + (reg * 4) as u64;
        assert_eq!(
            ranges.guest_read(gpa),
            Some(exiting),
            "{a} dword {reg:#x} is not mapped or differs"
        );
    }
}

#[test]
fn a_mirrored_functions_page_equals_its_config_space_through_guest_writes() {
    let (rig, ranges) = mirrored_rig(PciHostKind::Ecam);
    let a = addr(0, 1, 0);
    rig.add_test_device(a);
    assert_page_matches(&rig, &ranges, a);
    // BAR sizing, then an address, decode on, a RW1C status write.
    rig.write32(a, regs::BAR0 as u16, u32::MAX);
    assert_page_matches(&rig, &ranges, a);
    rig.write32(a, regs::BAR0 as u16, 0xc000_0000);
    rig.command(a, COMMAND_MEMORY | COMMAND_BUS_MASTER);
    rig.write(a, regs::INTERRUPT_LINE as u16, 1, 0x0b);
    rig.write(a, regs::STATUS as u16, 2, u64::from(STATUS_W1C));
    assert_page_matches(&rig, &ranges, a);
}

#[test]
fn every_absent_function_reads_all_ones_from_the_window_without_an_exit() {
    let (rig, ranges) = mirrored_rig(PciHostKind::Ecam);
    rig.add_test_device(addr(0, 1, 0));
    rig.add_test_device(addr(0, 4, 0));
    // One range: the whole window (every function mirrored).
    assert_eq!(ranges.spans(), vec![(CONFIG_BASE, rig.slot.config.size)]);
    for device in 0..32 {
        for function in [0, 1, 7] {
            let a = addr(0, device, function);
            assert_eq!(ranges.guest_read(rig.gpa(a)), Some(rig.read32(a, 0)), "{a}");
        }
    }
    assert_eq!(ranges.guest_read(rig.gpa(addr(0, 2, 0))), Some(u32::MAX));
}

#[test]
fn device_side_changes_reach_the_page_intx_status_reset_and_multi_function() {
    let (rig, ranges) = mirrored_rig(PciHostKind::Ecam);
    let a = addr(0, 1, 0);
    let dev = rig.add_test_device(a);
    dev.lock().unwrap().config_mut().set_intx(true);
    let status = ranges.guest_read(rig.gpa(a) + 4).unwrap() >> 16;
    assert_ne!(status as u16 & STATUS_INTERRUPT, 0);
    assert_page_matches(&rig, &ranges, a);

    rig.command(a, COMMAND_MEMORY);
    rig.bridge.lock().unwrap().reset();
    let command = ranges.guest_read(rig.gpa(a) + 4).unwrap();
    assert_eq!(command & u32::from(COMMAND_MEMORY), 0);
    assert_page_matches(&rig, &ranges, a);

    // A second function makes function 0 multi-function, in its page too.
    rig.add_test_device(addr(0, 1, 3));
    let header = ranges.guest_read(rig.gpa(a) + 0xc).unwrap();
    assert_ne!((header >> 16) & 0x80, 0, "multi-function bit");
    assert_page_matches(&rig, &ranges, a);
    assert_page_matches(&rig, &ranges, addr(0, 1, 3));
}

#[test]
fn removing_a_function_shows_all_ones_and_stops_writing_to_its_page() {
    let (rig, ranges) = mirrored_rig(PciHostKind::Ecam);
    let a = addr(0, 1, 0);
    let dev = rig.add_test_device(a);
    rig.bridge.lock().unwrap().remove_function(a).unwrap();
    assert_eq!(ranges.guest_read(rig.gpa(a)), Some(u32::MAX), "absent");
    assert_eq!(ranges.guest_read(rig.gpa(a) + 4), Some(u32::MAX));
    assert!(!dev.lock().unwrap().config().is_mirrored());
    dev.lock().unwrap().config_mut().set_intx(true);
    assert_eq!(ranges.guest_read(rig.gpa(a) + 4), Some(u32::MAX));
    // Added again: shown again.
    rig.add(a, dev);
    assert_page_matches(&rig, &ranges, a);
}

#[test]
fn a_function_that_is_not_mirrored_is_a_hole_in_the_mapped_ranges_until_it_goes() {
    let (rig, ranges) = mirrored_rig(PciHostKind::Ecam);
    let mirrored = addr(0, 1, 0);
    rig.add_test_device(mirrored);
    // Plain keeps the default: its reads are not declared side-effect free.
    let plain = addr(0, 3, 0);
    rig.add(plain, Arc::new(Mutex::new(Plain::new(7))));
    let hole = rig.gpa(plain);
    let page = MIRROR_PAGE_SIZE as u64;
    let end = CONFIG_BASE + rig.slot.config.size;
    assert_eq!(
        ranges.spans(),
        vec![
            (CONFIG_BASE, hole - CONFIG_BASE),
            (hole + page, end - hole - page)
        ]
    );
    assert_eq!(ranges.guest_read(hole), None, "its reads exit");
    assert!(!rig.bridge.lock().unwrap().is_mirrored(plain));
    assert!(rig.bridge.lock().unwrap().is_mirrored(mirrored));
    assert_page_matches(&rig, &ranges, mirrored);

    rig.bridge.lock().unwrap().remove_function(plain).unwrap();
    assert_eq!(ranges.spans(), vec![(CONFIG_BASE, rig.slot.config.size)]);
    assert_eq!(ranges.guest_read(hole), Some(u32::MAX));
}

#[test]
fn dropping_the_bridge_unmaps_the_window() {
    let (rig, ranges) = mirrored_rig(PciHostKind::Ecam);
    rig.add_test_device(addr(0, 1, 0));
    rig.add_test_device(addr(0, 2, 0));
    assert_eq!(ranges.spans().len(), 1);
    let Rig { bus, bridge, .. } = rig;
    bus.remove("pci0").unwrap();
    drop(bridge);
    assert!(ranges.spans().is_empty());
}

#[test]
fn cam_bridges_and_failed_maps_are_not_mirrored_and_reads_exit() {
    let (cam, cam_ranges) = mirrored_rig(PciHostKind::Cam);
    cam.add_test_device(addr(0, 1, 0));
    assert!(cam_ranges.spans().is_empty());

    let rig = Rig::ecam();
    let ranges = Arc::new(Ranges::default());
    ranges.fail.store(true, Ordering::SeqCst);
    rig.bridge
        .lock()
        .unwrap()
        .set_mirror_mapper(Arc::new(Mapper(ranges.clone())));
    let a = addr(0, 2, 0);
    rig.add_test_device(a);
    assert!(ranges.spans().is_empty());
    assert!(!rig.bridge.lock().unwrap().is_mirrored(a));
    let ids = u32::from(TEST_DEVICE_VENDOR_ID) | (u32::from(TEST_DEVICE_DEVICE_ID) << 16);
    assert_eq!(rig.read32(a, 0), ids, "served by exits instead");
}

#[test]
fn functions_already_on_the_bridge_are_mirrored_when_the_mapper_arrives() {
    let rig = Rig::ecam();
    let a = addr(0, 3, 0);
    rig.add_test_device(a);
    let ranges = Arc::new(Ranges::default());
    rig.bridge
        .lock()
        .unwrap()
        .set_mirror_mapper(Arc::new(Mapper(ranges.clone())));
    assert_page_matches(&rig, &ranges, a);
    assert!(rig.bridge.lock().unwrap().is_mirrored(a));
}

#[test]
fn a_window_reads_all_ones_until_a_page_is_placed_and_again_once_cleared() {
    let window = MirrorWindow::new(0x2_0000).unwrap();
    assert_eq!(window.load(0), u32::MAX);
    assert_eq!(window.load(0x1_fffc), u32::MAX);
    let page = MirrorPage::new().unwrap();
    page.store(0, 0x1234_5678);
    window.place(0x1_3000, &page).unwrap();
    assert_eq!(window.load(0x1_3000), 0x1234_5678);
    page.store(1, 7);
    assert_eq!(window.load(0x1_3004), 7, "the same memory as the page");
    window.clear(0x1_3000).unwrap();
    assert_eq!(window.load(0x1_3000), u32::MAX);
    assert!(!window.is_broken());
    assert!(window.place(0x2_0000, &page).is_err(), "outside");
    assert!(window.place(0x1_0800, &page).is_err(), "not page-aligned");
    assert!(MirrorWindow::new(0x1800).is_err());
}
