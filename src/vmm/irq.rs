//! Interrupts into KVM's in-kernel irqchip: level-triggered IOAPIC pins
//! driven with `KVM_IRQ_LINE` and shared by the devices on them, MSI-X
//! vectors signalled through irqfds, and the GSI routing table the MSI
//! irqfds need.

use super::arch;
use crate::devices::{InterruptLine, SharedLine};
use crate::sync;
use kvm_bindings::{
    kvm_irq_routing_entry, KvmIrqRouting, KVM_IRQ_ROUTING_MSI, KVM_MSI_VALID_DEVID,
};
use kvm_ioctls::VmFd;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Highest GSI handed out to MSI routes (KVM allows 4096 routes per VM; the
/// irqchip routes take 40 of them).
const MAX_GSI: u32 = 4000;

/// An IOAPIC pin driven with `KVM_IRQ_LINE`: KVM keeps the level, so an
/// interrupt still asserted after the guest's EOI is delivered again without
/// any resample bookkeeping in cellvm.
pub struct KvmIrqLine {
    vm: Arc<VmFd>,
    gsi: u32,
}

impl KvmIrqLine {
    /// A line for IOAPIC pin `gsi`.
    pub fn new(vm: Arc<VmFd>, gsi: u32) -> Self {
        KvmIrqLine { vm, gsi }
    }
}

impl InterruptLine for KvmIrqLine {
    fn set_level(&self, level: bool) {
        if let Err(e) = self.vm.set_irq_line(arch::kvm_irq_line(self.gsi), level) {
            log::error!("KVM_IRQ_LINE {} <- {level}: {e}", self.gsi);
        }
    }
}

/// The cell's level-triggered IOAPIC pins, each a [`SharedLine`] driven
/// with `KVM_IRQ_LINE`: every device line on a pin is a source of the same
/// shared line, so devices the layout put on one pin
/// (`layout::IrqAllocator::allocate_shared`) share it, and the pin stays
/// asserted while any of them asserts it. (KVM keeps one level per pin for
/// all of userspace, so the OR must happen here.) A pin's shared line lives
/// while some device holds a source of it.
pub struct LevelPins {
    vm: Arc<VmFd>,
    pins: Mutex<BTreeMap<u32, Weak<SharedLine>>>,
}

impl LevelPins {
    /// The level pins of `vm`.
    pub fn new(vm: Arc<VmFd>) -> Self {
        LevelPins {
            vm,
            pins: Mutex::new(BTreeMap::new()),
        }
    }

    /// A new source on pin `gsi`, for one device's line.
    pub fn line(&self, gsi: u32) -> Arc<dyn InterruptLine> {
        let mut pins = sync::lock(&self.pins);
        pins.retain(|_, pin| pin.strong_count() > 0);
        let pin = match pins.get(&gsi).and_then(Weak::upgrade) {
            Some(pin) => pin,
            None => {
                let pin = Arc::new(SharedLine::new(Arc::new(KvmIrqLine::new(
                    self.vm.clone(),
                    gsi,
                ))));
                pins.insert(gsi, Arc::downgrade(&pin));
                pin
            }
        };
        Arc::new(pin.source())
    }
}

/// One MSI route's message: what the guest programmed (address, data) and
/// the requester ID of the function that sends it, which an aarch64 cell's
/// GICv3 ITS takes as the DeviceID (`msi-map` maps requester IDs to
/// DeviceIDs one to one; x86 ignores it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiMessage {
    /// The message address.
    pub address: u64,
    /// The message data.
    pub data: u32,
    /// The sender's requester ID (`bus << 8 | devfn`).
    pub devid: u32,
}

/// KVM's GSI routing table of one VM: the irqchip routes KVM sets up by
/// default (GSI 0..24 to the IOAPIC, 0..16 also to the 8259s) plus one MSI
/// route per MSI irqfd. `KVM_SET_GSI_ROUTING` replaces the whole table, so
/// every change goes through here.
pub struct GsiRouter {
    vm: Arc<VmFd>,
    routes: Mutex<BTreeMap<u32, MsiMessage>>,
}

impl GsiRouter {
    /// The router of `vm` (whose in-kernel irqchip exists already).
    pub fn new(vm: Arc<VmFd>) -> Self {
        GsiRouter {
            vm,
            routes: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u32, MsiMessage>> {
        sync::lock(&self.routes)
    }

    /// A GSI for a new MSI route, sending `msg`.
    pub fn add_msi(&self, msg: MsiMessage) -> Result<u32, RouteError> {
        let mut routes = self.lock();
        let gsi = (arch::FIRST_MSI_GSI..=MAX_GSI)
            .find(|g| !routes.contains_key(g))
            .ok_or(RouteError::Exhausted)?;
        routes.insert(gsi, msg);
        if let Err(e) = self.apply(&routes) {
            routes.remove(&gsi);
            return Err(e);
        }
        Ok(gsi)
    }

    /// Points MSI route `gsi` at a new message.
    pub fn update_msi(&self, gsi: u32, msg: MsiMessage) -> Result<(), RouteError> {
        let mut routes = self.lock();
        let Some(old) = routes.insert(gsi, msg) else {
            routes.remove(&gsi);
            return Err(RouteError::NoSuchRoute(gsi));
        };
        if let Err(e) = self.apply(&routes) {
            routes.insert(gsi, old);
            return Err(e);
        }
        Ok(())
    }

    /// Removes MSI route `gsi`.
    pub fn remove_msi(&self, gsi: u32) {
        let mut routes = self.lock();
        if routes.remove(&gsi).is_some() {
            if let Err(e) = self.apply(&routes) {
                log::warn!("removing MSI route {gsi}: {e}");
            }
        }
    }

    /// MSI routes currently installed (for tests and diagnostics).
    pub fn msi_routes(&self) -> usize {
        self.lock().len()
    }

    fn apply(&self, msi: &BTreeMap<u32, MsiMessage>) -> Result<(), RouteError> {
        let entries = routing_entries(msi);
        let mut table = KvmIrqRouting::new(0).map_err(|_| RouteError::Table)?;
        for e in &entries {
            table.push(*e).map_err(|_| RouteError::Table)?;
        }
        self.vm
            .set_gsi_routing(&table)
            .map_err(|e| RouteError::Kvm(e.errno()))
    }
}

/// The full routing table: KVM's default irqchip routes, then `msi`.
pub(crate) fn routing_entries(msi: &BTreeMap<u32, MsiMessage>) -> Vec<kvm_irq_routing_entry> {
    let mut out = arch::irqchip_routes();
    out.reserve(msi.len());
    for (&gsi, msg) in msi {
        let mut e = kvm_irq_routing_entry {
            gsi,
            type_: KVM_IRQ_ROUTING_MSI,
            ..Default::default()
        };
        e.u.msi.address_lo = msg.address as u32;
        e.u.msi.address_hi = (msg.address >> 32) as u32;
        e.u.msi.data = msg.data;
        if arch::MSI_NEEDS_DEVID {
            e.flags = KVM_MSI_VALID_DEVID;
            e.u.msi.__bindgen_anon_1.devid = msg.devid;
        }
        out.push(e);
    }
    out
}

/// Why an MSI route could not be installed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    /// Every GSI up to the limit is taken.
    #[error("no free GSI for an MSI route")]
    Exhausted,
    /// The route to update does not exist.
    #[error("no MSI route on GSI {0}")]
    NoSuchRoute(u32),
    /// The table does not fit KVM's limit.
    #[error("routing table too large")]
    Table,
    /// KVM refused the table.
    #[error("KVM_SET_GSI_ROUTING failed: errno {0}")]
    Kvm(i32),
}

/// MSI-X messages injected with `KVM_SIGNAL_MSI` (the in-kernel local APICs
/// decode the address/data pair the guest programmed). The fallback when
/// irqfds or GSI routing are unavailable.
pub struct KvmMsiSender {
    vm: Arc<VmFd>,
    devid: u32,
}

impl KvmMsiSender {
    /// A sender into `vm` for the function with requester ID `devid`.
    pub fn new(vm: Arc<VmFd>, devid: u32) -> Self {
        KvmMsiSender { vm, devid }
    }

    fn signal(&self, address: u64, data: u32) {
        let mut msi = kvm_bindings::kvm_msi {
            address_lo: address as u32,
            address_hi: (address >> 32) as u32,
            data,
            ..Default::default()
        };
        if arch::MSI_NEEDS_DEVID {
            msi.flags = KVM_MSI_VALID_DEVID;
            msi.devid = self.devid;
        }
        if let Err(e) = self.vm.signal_msi(msi) {
            log::warn!("KVM_SIGNAL_MSI {address:#x}/{data:#x}: {e}");
        }
    }
}

impl crate::pci::MsiSender for KvmMsiSender {
    fn send(&self, _vector: u16, address: u64, data: u32) {
        self.signal(address, data);
    }
}

/// One MSI-X vector's irqfd and the route it was last pointed at.
struct VectorRoute {
    gsi: u32,
    fd: EventFd,
    address: u64,
    data: u32,
}

/// MSI-X messages of one PCI function, each vector through its own irqfd and
/// MSI route: the first message of a vector installs the route and the
/// irqfd, later ones only write the eventfd (no ioctl) unless the guest
/// reprogrammed the entry. Everything is undone when the function goes.
/// A vector whose route or irqfd KVM refuses falls back to `KVM_SIGNAL_MSI`.
pub struct IrqfdMsiSender {
    router: Arc<GsiRouter>,
    fallback: KvmMsiSender,
    vectors: Mutex<BTreeMap<u16, VectorRoute>>,
    log: crate::ratelimit::RateLimiter,
}

impl IrqfdMsiSender {
    /// A sender for the function with requester ID `devid` (`bus << 8 |
    /// devfn`) of `vm`, routing through `router`.
    pub fn new(vm: Arc<VmFd>, router: Arc<GsiRouter>, devid: u32) -> Self {
        IrqfdMsiSender {
            router,
            fallback: KvmMsiSender::new(vm, devid),
            vectors: Mutex::new(BTreeMap::new()),
            log: crate::ratelimit::RateLimiter::new(10),
        }
    }

    /// The route message of `address`/`data` from this function.
    fn message(&self, address: u64, data: u32) -> MsiMessage {
        MsiMessage {
            address,
            data,
            devid: self.fallback.devid,
        }
    }

    fn install(&self, address: u64, data: u32) -> Result<VectorRoute, String> {
        let fd = EventFd::new(EFD_NONBLOCK).map_err(|e| format!("eventfd: {e}"))?;
        let gsi = self
            .router
            .add_msi(self.message(address, data))
            .map_err(|e| e.to_string())?;
        if let Err(e) = self.fallback.vm.register_irqfd(&fd, gsi) {
            self.router.remove_msi(gsi);
            return Err(format!("irqfd on GSI {gsi}: {e}"));
        }
        Ok(VectorRoute {
            gsi,
            fd,
            address,
            data,
        })
    }
}

impl crate::pci::MsiSender for IrqfdMsiSender {
    fn send(&self, vector: u16, address: u64, data: u32) {
        let mut vectors = sync::lock(&self.vectors);
        let route = match vectors.entry(vector) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => match self.install(address, data) {
                Ok(route) => e.insert(route),
                Err(err) => {
                    if self.log.allow() {
                        log::warn!("MSI-X vector {vector}: {err}; using KVM_SIGNAL_MSI");
                    }
                    drop(vectors);
                    self.fallback.signal(address, data);
                    return;
                }
            },
        };
        if (route.address, route.data) != (address, data) {
            if let Err(e) = self
                .router
                .update_msi(route.gsi, self.message(address, data))
            {
                if self.log.allow() {
                    log::warn!("MSI-X vector {vector}: {e}; using KVM_SIGNAL_MSI");
                }
                drop(vectors);
                self.fallback.signal(address, data);
                return;
            }
            route.address = address;
            route.data = data;
        }
        if let Err(e) = route.fd.write(1) {
            log::error!("MSI-X vector {vector}: irqfd write: {e}");
        }
    }
}

impl Drop for IrqfdMsiSender {
    fn drop(&mut self) {
        let vectors = std::mem::take(sync::get_mut(&mut self.vectors));
        for route in vectors.values() {
            if let Err(e) = self.fallback.vm.unregister_irqfd(&route.fd, route.gsi) {
                log::warn!("unregister MSI irqfd on GSI {}: {e}", route.gsi);
            }
            self.router.remove_msi(route.gsi);
        }
    }
}

#[cfg(test)]
#[cfg(target_arch = "x86_64")]
mod tests {
    use super::*;
    use kvm_bindings::{
        KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP,
    };

    #[test]
    fn routing_table_keeps_kvms_default_irqchip_routes_before_msi_routes() {
        let mut msi = BTreeMap::new();
        let msg = |address, data| MsiMessage {
            address,
            data,
            devid: 0x0810,
        };
        msi.insert(24, msg(0xfee0_0000u64, 0x4021u32));
        msi.insert(30, msg(0x1_fee0_1000u64, 0x22u32));
        let e = routing_entries(&msi);
        assert_eq!(e.len(), 16 + 24 + 2);
        let chips: Vec<(u32, u32, u32)> = e[..40]
            .iter()
            .map(|r| {
                assert_eq!(r.type_, KVM_IRQ_ROUTING_IRQCHIP);
                // SAFETY: irqchip entries carry the irqchip member.
                let c = unsafe { r.u.irqchip };
                (r.gsi, c.irqchip, c.pin)
            })
            .collect();
        assert_eq!(chips[0], (0, KVM_IRQCHIP_PIC_MASTER, 0));
        assert_eq!(chips[9], (9, KVM_IRQCHIP_PIC_SLAVE, 1));
        assert_eq!(chips[16], (0, KVM_IRQCHIP_IOAPIC, 0));
        assert_eq!(chips[39], (23, KVM_IRQCHIP_IOAPIC, 23));
        let m = e[41];
        assert_eq!((m.gsi, m.type_), (30, KVM_IRQ_ROUTING_MSI));
        assert_eq!(m.flags, 0, "x86 routes carry no device ID");
        // SAFETY: MSI entries carry the msi member.
        let msi = unsafe { m.u.msi };
        assert_eq!(
            (msi.address_lo, msi.address_hi, msi.data),
            (0xfee0_1000, 1, 0x22)
        );
    }
}

#[cfg(test)]
#[cfg(target_arch = "aarch64")]
mod aarch64_tests {
    use super::*;

    #[test]
    fn aarch64_msi_routes_follow_the_spi_routes_and_carry_the_requester_id() {
        let mut msi = BTreeMap::new();
        msi.insert(
            arch::FIRST_MSI_GSI,
            MsiMessage {
                address: 0x0809_0040,
                data: 3,
                devid: 0x0810,
            },
        );
        let e = routing_entries(&msi);
        assert_eq!(e.len(), crate::platform::IRQ_LINES as usize + 1);
        let m = e[e.len() - 1];
        assert_eq!((m.gsi, m.type_), (arch::FIRST_MSI_GSI, KVM_IRQ_ROUTING_MSI));
        assert_eq!(m.flags, KVM_MSI_VALID_DEVID);
        // SAFETY: MSI entries carry the msi member, whose union holds the
        // device ID when KVM_MSI_VALID_DEVID is set.
        let (data, devid) = unsafe { (m.u.msi.data, m.u.msi.__bindgen_anon_1.devid) };
        assert_eq!((data, devid), (3, 0x0810));
    }
}
