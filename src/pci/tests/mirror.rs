//! Config-space mirrors: the page the guest reads always equals what an
//! exiting read returns, and it is mapped exactly while the function is.

use super::*;
use crate::pci::config_mirror::MIRROR_PAGE_SIZE;
use std::collections::BTreeMap;

/// Mapped pages by guest-physical address; a mapping removes its entry when
/// dropped. `fail` makes every map fail.
#[derive(Default)]
struct Pages {
    mapped: Mutex<BTreeMap<u64, Arc<MirrorPage>>>,
    fail: AtomicBool,
}

struct PageMapping {
    gpa: u64,
    pages: Arc<Pages>,
}

impl MirrorMapping for PageMapping {}

impl Drop for PageMapping {
    fn drop(&mut self) {
        self.pages.mapped.lock().unwrap().remove(&self.gpa);
    }
}

struct Mapper(Arc<Pages>);

impl MirrorMapper for Mapper {
    fn map(&self, gpa: u64, page: Arc<MirrorPage>) -> Result<Box<dyn MirrorMapping>, MirrorError> {
        if self.0.fail.load(Ordering::SeqCst) {
            return Err(MirrorError::Map {
                gpa,
                reason: "refused by the test".into(),
            });
        }
        let old = self.0.mapped.lock().unwrap().insert(gpa, page);
        assert!(old.is_none(), "{gpa:#x} mapped twice");
        Ok(Box::new(PageMapping {
            gpa,
            pages: self.0.clone(),
        }))
    }
}

fn mirrored_rig(kind: PciHostKind) -> (Rig, Arc<Pages>) {
    let rig = Rig::new(kind, 0, 0);
    let pages = Arc::new(Pages::default());
    rig.bridge
        .lock()
        .unwrap()
        .set_mirror_mapper(Arc::new(Mapper(pages.clone())));
    (rig, pages)
}

impl Rig {
    fn gpa(&self, a: PciAddress) -> u64 {
        self.slot.config.base + self.offset(a, 0)
    }
}

impl Pages {
    fn page(&self, gpa: u64) -> Option<Arc<MirrorPage>> {
        self.mapped.lock().unwrap().get(&gpa).cloned()
    }
}

/// Every dword of the function's mirror page equals the exiting read.
fn assert_page_matches(rig: &Rig, pages: &Pages, a: PciAddress) {
    let page = pages.page(rig.gpa(a)).expect("the function is mirrored");
    for reg in 0..MIRROR_PAGE_SIZE / 4 {
        let exiting = rig.read32(a, (reg * 4) as u16);
        assert_eq!(page.load(reg), exiting, "{a} dword {reg:#x}");
    }
}

#[test]
fn a_mirrored_functions_page_equals_its_config_space_through_guest_writes() {
    let (rig, pages) = mirrored_rig(PciHostKind::Ecam);
    let a = addr(0, 1, 0);
    rig.add_test_device(a);
    assert_page_matches(&rig, &pages, a);
    // BAR sizing, then an address, decode on, a RW1C status write.
    rig.write32(a, regs::BAR0 as u16, u32::MAX);
    assert_page_matches(&rig, &pages, a);
    rig.write32(a, regs::BAR0 as u16, 0xc000_0000);
    rig.command(a, COMMAND_MEMORY | COMMAND_BUS_MASTER);
    rig.write(a, regs::INTERRUPT_LINE as u16, 1, 0x0b);
    rig.write(a, regs::STATUS as u16, 2, u64::from(STATUS_W1C));
    assert_page_matches(&rig, &pages, a);
}

#[test]
fn device_side_changes_reach_the_page_intx_status_reset_and_multi_function() {
    let (rig, pages) = mirrored_rig(PciHostKind::Ecam);
    let a = addr(0, 1, 0);
    let dev = rig.add_test_device(a);
    dev.lock().unwrap().config_mut().set_intx(true);
    let page = pages.page(rig.gpa(a)).unwrap();
    assert_ne!((page.load(1) >> 16) as u16 & STATUS_INTERRUPT, 0);
    assert_page_matches(&rig, &pages, a);

    rig.command(a, COMMAND_MEMORY);
    rig.bridge.lock().unwrap().reset();
    assert_eq!(page.load(1) & u32::from(COMMAND_MEMORY), 0);
    assert_page_matches(&rig, &pages, a);

    // A second function makes function 0 multi-function, in its page too.
    rig.add_test_device(addr(0, 1, 3));
    assert_ne!((page.load(3) >> 16) & 0x80, 0, "multi-function bit");
    assert_page_matches(&rig, &pages, a);
    assert_page_matches(&rig, &pages, addr(0, 1, 3));
}

#[test]
fn removing_a_function_unmaps_its_page_and_stops_writing_to_it() {
    let (rig, pages) = mirrored_rig(PciHostKind::Ecam);
    let a = addr(0, 1, 0);
    let dev = rig.add_test_device(a);
    let page = pages.page(rig.gpa(a)).unwrap();
    rig.bridge.lock().unwrap().remove_function(a).unwrap();
    assert!(pages.page(rig.gpa(a)).is_none(), "unmapped");
    assert!(!dev.lock().unwrap().config().is_mirrored());
    let before = page.load(1);
    dev.lock().unwrap().config_mut().set_intx(true);
    assert_eq!(page.load(1), before, "no longer written through");
    // Added again: mapped again.
    rig.add(a, dev);
    assert_page_matches(&rig, &pages, a);
}

#[test]
fn dropping_the_bridge_unmaps_every_page() {
    let (rig, pages) = mirrored_rig(PciHostKind::Ecam);
    rig.add_test_device(addr(0, 1, 0));
    rig.add_test_device(addr(0, 2, 0));
    assert_eq!(pages.mapped.lock().unwrap().len(), 2);
    let Rig { bus, bridge, .. } = rig;
    bus.remove("pci0").unwrap();
    drop(bridge);
    assert!(pages.mapped.lock().unwrap().is_empty());
}

#[test]
fn functions_that_do_not_allow_it_cam_bridges_and_failed_maps_are_not_mirrored() {
    // Plain keeps the default: its reads are not declared side-effect free.
    let (rig, pages) = mirrored_rig(PciHostKind::Ecam);
    let plain = addr(0, 1, 0);
    rig.add(plain, Arc::new(Mutex::new(Plain::new(7))));
    assert!(!rig.bridge.lock().unwrap().is_mirrored(plain));

    let (cam, cam_pages) = mirrored_rig(PciHostKind::Cam);
    cam.add_test_device(addr(0, 1, 0));
    assert!(cam_pages.mapped.lock().unwrap().is_empty());

    pages.fail.store(true, Ordering::SeqCst);
    let a = addr(0, 2, 0);
    let dev = rig.add_test_device(a);
    assert!(!rig.bridge.lock().unwrap().is_mirrored(a));
    assert!(!dev.lock().unwrap().config().is_mirrored());
    let ids = u32::from(TEST_DEVICE_VENDOR_ID) | (u32::from(TEST_DEVICE_DEVICE_ID) << 16);
    assert_eq!(rig.read32(a, 0), ids, "served by exits instead");
}

#[test]
fn functions_already_on_the_bridge_are_mirrored_when_the_mapper_arrives() {
    let rig = Rig::ecam();
    let a = addr(0, 3, 0);
    rig.add_test_device(a);
    let pages = Arc::new(Pages::default());
    rig.bridge
        .lock()
        .unwrap()
        .set_mirror_mapper(Arc::new(Mapper(pages.clone())));
    assert_page_matches(&rig, &pages, a);
}
