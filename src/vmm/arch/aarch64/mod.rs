//! aarch64: an in-kernel GICv3, PSCI 0.2 from KVM (secondary vCPUs start
//! powered off until the guest's CPU_ON), the console a memory-mapped 16550,
//! an arm64 `Image` booted with its device tree in x0 (docs/aarch64.md).

pub mod boot;
mod gic;

use crate::config::CellConfig;
use crate::devices::serial::SerialConsole;
use crate::devices::Bus;
use crate::fdt::Node;
use crate::layout::CellLayout;
use crate::platform::{self, UART_PORT_COUNT};
use crate::stop::StopHandle;
use crate::vmm::error::{KvmContext, VmmError};
use kvm_bindings::{
    kvm_irq_routing_entry, kvm_vcpu_init, KVM_ARM_IRQ_TYPE_SHIFT, KVM_ARM_IRQ_TYPE_SPI,
    KVM_ARM_VCPU_POWER_OFF, KVM_ARM_VCPU_PSCI_0_2, KVM_IRQ_ROUTING_IRQCHIP, KVM_REG_ARM64,
    KVM_REG_ARM_CORE, KVM_REG_SIZE_U64,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use std::sync::{Arc, Mutex};
use vm_memory::GuestMemoryMmap;

pub use boot::EntryPoint;
pub use gic::Gic as Irqchip;

/// The first GSI free for MSI routes (the SPIs' come first).
pub const FIRST_MSI_GSI: u32 = platform::IRQ_LINES;
/// Whether MSI routes and `KVM_SIGNAL_MSI` carry the sender's device ID:
/// the ITS translates (DeviceID, EventID) pairs.
pub const MSI_NEEDS_DEVID: bool = true;

/// INTID of the first SPI.
const SPI_BASE: u32 = 32;
/// PSTATE at entry: EL1h, with debug, SError, IRQ and FIQ masked.
const PSTATE_EL1H_MASKED: u64 = 0x3c5;
/// `kvm_regs` core register indices (offset in the structure / 4): x0, pc,
/// pstate (`struct user_pt_regs { regs[31], sp, pc, pstate }`).
const CORE_X0: u64 = 0;
const CORE_PC: u64 = 64;
const CORE_PSTATE: u64 = 66;

/// The `KVM_{GET,SET}_ONE_REG` id of 64-bit core register `index`.
fn core_reg(index: u64) -> u64 {
    KVM_REG_ARM64 | KVM_REG_SIZE_U64 | u64::from(KVM_REG_ARM_CORE) | index
}

/// Creates the VM and its GICv3 (initialised later, by [`create_vcpus`]).
pub fn create_vm(kvm: &Kvm, _cfg: &CellConfig) -> Result<(VmFd, Irqchip), VmmError> {
    let vm = kvm.create_vm().kvm("create VM")?;
    let gic = Irqchip::create(&vm)?;
    Ok((vm, gic))
}

/// The console UART in its page; aarch64 has no other legacy device.
pub fn add_platform_devices(
    mmio: &Bus,
    _pio: &Bus,
    console: Arc<Mutex<SerialConsole>>,
    _stop: &StopHandle,
) -> Result<(), VmmError> {
    mmio.insert(
        "console",
        platform::UART_MMIO_BASE,
        u64::from(UART_PORT_COUNT),
        console,
    )?;
    Ok(())
}

/// Loads the kernel, the initrd and the device tree.
pub fn load(
    memory: &GuestMemoryMmap,
    cfg: &CellConfig,
    layout: &CellLayout,
    tree: &mut Node,
) -> Result<EntryPoint, VmmError> {
    boot::load(memory, &cfg.kernel, &layout.memory, tree)
}

/// Creates `count` vCPUs with PSCI 0.2, the secondaries powered off (the
/// guest starts them with PSCI CPU_ON), then initialises the GIC: before
/// any irqfd is registered, since KVM routes GSIs to SPIs only from then.
pub fn create_vcpus(
    _kvm: &Kvm,
    vm: &VmFd,
    gic: &Irqchip,
    count: u8,
) -> Result<Vec<VcpuFd>, VmmError> {
    let mut init = kvm_vcpu_init::default();
    vm.get_preferred_target(&mut init)
        .kvm("get the preferred vCPU target")?;
    init.features[0] |= 1 << KVM_ARM_VCPU_PSCI_0_2;
    let mut vcpus = Vec::with_capacity(usize::from(count));
    for id in 0..count {
        let vcpu = vm.create_vcpu(u64::from(id)).kvm("create vCPU")?;
        let mut this = init;
        if id > 0 {
            this.features[0] |= 1 << KVM_ARM_VCPU_POWER_OFF;
        }
        vcpu.vcpu_init(&this).kvm("initialise vCPU")?;
        vcpus.push(vcpu);
    }
    gic.finalize()?;
    Ok(vcpus)
}

/// The boot vCPU's registers: pc, x0 = DTB, PSTATE EL1h masked.
pub fn set_boot_entry(vcpu: &VcpuFd, entry: &EntryPoint) -> Result<(), VmmError> {
    vcpu.set_one_reg(core_reg(CORE_PSTATE), &PSTATE_EL1H_MASKED.to_le_bytes())
        .kvm("set PSTATE")?;
    vcpu.set_one_reg(core_reg(CORE_PC), &entry.pc.to_le_bytes())
        .kvm("set PC")?;
    vcpu.set_one_reg(core_reg(CORE_X0), &entry.dtb.to_le_bytes())
        .kvm("set x0")?;
    Ok(())
}

/// The `KVM_IRQ_LINE` number of SPI `line`: type SPI, INTID = 32 + line.
pub fn kvm_irq_line(line: u32) -> u32 {
    (KVM_ARM_IRQ_TYPE_SPI << KVM_ARM_IRQ_TYPE_SHIFT) | (SPI_BASE + line)
}

/// KVM's default routes, which a routing table must keep: GSI n to SPI n.
pub fn irqchip_routes() -> Vec<kvm_irq_routing_entry> {
    (0..platform::IRQ_LINES)
        .map(|gsi| {
            let mut e = kvm_irq_routing_entry {
                gsi,
                type_: KVM_IRQ_ROUTING_IRQCHIP,
                ..Default::default()
            };
            e.u.irqchip.irqchip = 0;
            e.u.irqchip.pin = gsi;
            e
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aarch64_core_register_ids_match_the_kvm_abi() {
        // KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | offset/4.
        assert_eq!(core_reg(CORE_PC), 0x6030_0000_0010_0040);
        assert_eq!(core_reg(CORE_PSTATE), 0x6030_0000_0010_0042);
        assert_eq!(core_reg(CORE_X0), 0x6030_0000_0010_0000);
    }

    #[test]
    fn aarch64_spi_lines_are_named_as_kvm_irq_line_wants() {
        assert_eq!(kvm_irq_line(0), 0x0100_0020);
        assert_eq!(kvm_irq_line(5), 0x0100_0025);
        assert_eq!(irqchip_routes().len(), platform::IRQ_LINES as usize);
    }
}
