//! The in-kernel GICv3 (KVM_DEV_TYPE_ARM_VGIC_V3): created with the VM
//! (distributor and redistributor addresses, number of interrupts), and
//! initialised once every vCPU exists (KVM refuses vCPUs after that, and
//! injections before it). With it the ITS (KVM_DEV_TYPE_ARM_VGIC_ITS), the
//! MSI target of PCI functions: MSI routes name the function's requester
//! ID as the ITS DeviceID.

use crate::platform::aarch64::{GIC_DIST_BASE, GIC_ITS_BASE, GIC_NR_IRQS, GIC_REDIST_BASE};
use crate::vmm::error::{KvmContext, VmmError};
use kvm_bindings::{
    kvm_create_device, kvm_device_attr, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_ITS,
    kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3, KVM_DEV_ARM_VGIC_CTRL_INIT,
    KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_DEV_ARM_VGIC_GRP_NR_IRQS,
    KVM_VGIC_ITS_ADDR_TYPE, KVM_VGIC_V3_ADDR_TYPE_DIST, KVM_VGIC_V3_ADDR_TYPE_REDIST,
};
use kvm_ioctls::{DeviceFd, VmFd};

/// The VM's GICv3 device and its ITS.
pub struct Gic {
    fd: DeviceFd,
    _its: DeviceFd,
}

/// Initialises a vGIC device (`KVM_DEV_ARM_VGIC_CTRL_INIT`).
fn init(fd: &DeviceFd, what: &'static str) -> Result<(), VmmError> {
    let attr = kvm_device_attr {
        group: KVM_DEV_ARM_VGIC_GRP_CTRL,
        attr: u64::from(KVM_DEV_ARM_VGIC_CTRL_INIT),
        addr: 0,
        flags: 0,
    };
    fd.set_device_attr(&attr).kvm(what)
}

/// Creates a KVM device of type `kind`.
fn create(vm: &VmFd, kind: u32, what: &'static str) -> Result<DeviceFd, VmmError> {
    let mut device = kvm_create_device {
        type_: kind,
        fd: 0,
        flags: 0,
    };
    vm.create_device(&mut device).kvm(what)
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
    /// [`GIC_NR_IRQS`] interrupts, and its ITS (initialised at once).
    pub fn create(vm: &VmFd) -> Result<Self, VmmError> {
        let fd = create(
            vm,
            kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3,
            "create the GICv3 (KVM_DEV_TYPE_ARM_VGIC_V3)",
        )?;
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
        let its = create(
            vm,
            kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_ITS,
            "create the GIC ITS (KVM_DEV_TYPE_ARM_VGIC_ITS)",
        )?;
        let its_base: u64 = GIC_ITS_BASE;
        set_attr(
            &its,
            KVM_DEV_ARM_VGIC_GRP_ADDR,
            KVM_VGIC_ITS_ADDR_TYPE,
            &its_base,
            "set the GIC ITS address",
        )?;
        init(&its, "initialise the GIC ITS")?;
        Ok(Gic { fd, _its: its })
    }

    /// Initialises the GIC: call once every vCPU is created and initialised.
    pub fn finalize(&self) -> Result<(), VmmError> {
        init(&self.fd, "initialise the GIC")
    }
}
