//! The in-kernel GICv3 (KVM_DEV_TYPE_ARM_VGIC_V3): created with the VM
//! (distributor and redistributor addresses, number of interrupts), and
//! initialised once every vCPU exists (KVM refuses vCPUs after that, and
//! injections before it).

use crate::platform::aarch64::{GIC_DIST_BASE, GIC_NR_IRQS, GIC_REDIST_BASE};
use crate::vmm::error::{KvmContext, VmmError};
use kvm_bindings::{
    kvm_create_device, kvm_device_attr, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3,
    KVM_DEV_ARM_VGIC_CTRL_INIT, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_DEV_ARM_VGIC_GRP_CTRL,
    KVM_DEV_ARM_VGIC_GRP_NR_IRQS, KVM_VGIC_V3_ADDR_TYPE_DIST, KVM_VGIC_V3_ADDR_TYPE_REDIST,
};
use kvm_ioctls::{DeviceFd, VmFd};

/// The VM's GICv3 device.
pub struct Gic {
    fd: DeviceFd,
}

/// Sets one attribute whose value KVM reads from `value`.
fn set_attr<T>(
    fd: &DeviceFd,
    group: u32,
    attr: u32,
    value: &T,
    what: &'static str,
) -> Result<(), VmmError> {
    let attr = kvm_device_attr {
        group,
        attr: u64::from(attr),
        addr: value as *const T as u64,
        flags: 0,
    };
    fd.set_device_attr(&attr).kvm(what)
}

impl Gic {
    /// Creates the GICv3 of `vm` at the platform's addresses with
    /// [`GIC_NR_IRQS`] interrupts.
    pub fn create(vm: &VmFd) -> Result<Self, VmmError> {
        let mut device = kvm_create_device {
            type_: kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3,
            fd: 0,
            flags: 0,
        };
        let fd = vm
            .create_device(&mut device)
            .kvm("create the GICv3 (KVM_DEV_TYPE_ARM_VGIC_V3)")?;
        let dist: u64 = GIC_DIST_BASE;
        let redist: u64 = GIC_REDIST_BASE;
        let nr_irqs: u32 = GIC_NR_IRQS;
        set_attr(
            &fd,
            KVM_DEV_ARM_VGIC_GRP_ADDR,
            KVM_VGIC_V3_ADDR_TYPE_DIST,
            &dist,
            "set the GIC distributor address",
        )?;
        set_attr(
            &fd,
            KVM_DEV_ARM_VGIC_GRP_ADDR,
            KVM_VGIC_V3_ADDR_TYPE_REDIST,
            &redist,
            "set the GIC redistributor address",
        )?;
        set_attr(
            &fd,
            KVM_DEV_ARM_VGIC_GRP_NR_IRQS,
            0,
            &nr_irqs,
            "set the GIC's number of interrupts",
        )?;
        Ok(Gic { fd })
    }

    /// Initialises the GIC: call once every vCPU is created and initialised.
    pub fn finalize(&self) -> Result<(), VmmError> {
        let attr = kvm_device_attr {
            group: KVM_DEV_ARM_VGIC_GRP_CTRL,
            attr: u64::from(KVM_DEV_ARM_VGIC_CTRL_INIT),
            addr: 0,
            flags: 0,
        };
        self.fd.set_device_attr(&attr).kvm("initialise the GIC")
    }
}
