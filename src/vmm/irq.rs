//! Level-triggered interrupt lines into KVM's in-kernel IOAPIC.

use crate::pci::InterruptLine;
use kvm_ioctls::VmFd;
use std::sync::Arc;

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
        if let Err(e) = self.vm.set_irq_line(self.gsi, level) {
            log::error!("KVM_IRQ_LINE {} <- {level}: {e}", self.gsi);
        }
    }
}

/// MSI-X messages injected with `KVM_SIGNAL_MSI` (the in-kernel local APICs
/// decode the address/data pair the guest programmed).
pub struct KvmMsiSender {
    vm: Arc<VmFd>,
}

impl KvmMsiSender {
    /// A sender into `vm`.
    pub fn new(vm: Arc<VmFd>) -> Self {
        KvmMsiSender { vm }
    }
}

impl crate::pci::MsiSender for KvmMsiSender {
    fn send(&self, address: u64, data: u32) {
        let msi = kvm_bindings::kvm_msi {
            address_lo: address as u32,
            address_hi: (address >> 32) as u32,
            data,
            ..Default::default()
        };
        match self.vm.signal_msi(msi) {
            Ok(_) => {}
            Err(e) => log::warn!("KVM_SIGNAL_MSI {address:#x}/{data:#x}: {e}"),
        }
    }
}
