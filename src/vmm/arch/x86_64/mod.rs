//! x86_64: an in-kernel IOAPIC, PIC and LAPICs; the console on I/O port
//! 0x3f8 with the i8042 (reset), CMOS and ACPI power ports; the Linux boot
//! protocol (bzImage, vmlinux) or a bare-metal ELF entered in long mode;
//! the MP table and, on request, ACPI tables.

pub mod acpi;
pub mod boot;
pub mod cpu;
pub mod mptable;

use crate::config::{CellConfig, KernelFormat};
use crate::devices::acpi_power::AcpiPower;
use crate::devices::legacy::{Cmos, I8042};
use crate::devices::serial::SerialConsole;
use crate::devices::Bus;
use crate::fdt::Node;
use crate::layout::CellLayout;
use crate::platform;
use crate::stop::StopHandle;
use crate::vmm::error::{KvmContext, VmmError};
use kvm_bindings::{
    kvm_irq_routing_entry, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
    KVM_IRQ_ROUTING_IRQCHIP,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use std::sync::{Arc, Mutex};
use vm_memory::GuestMemoryMmap;

pub use boot::EntryPoint;

/// Address KVM needs for the TSS on Intel hosts (three pages).
const KVM_TSS_ADDR: u64 = 0xfffb_d000;
/// Address KVM needs for the EPT identity map on Intel hosts (one page).
const KVM_IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;
/// KVM's limit for KVM_GET_SUPPORTED_CPUID entries.
const MAX_CPUID_ENTRIES: usize = 80;
/// Pins of KVM's in-kernel IOAPIC (GSIs 0..24 route to them).
const IOAPIC_PINS: u32 = 24;
/// Pins the two in-kernel 8259s cover (GSIs 0..16 also route to them).
const PIC_PINS: u32 = 16;

/// The first GSI free for MSI routes (the IOAPIC's come first).
pub const FIRST_MSI_GSI: u32 = IOAPIC_PINS;
/// Whether MSI routes and `KVM_SIGNAL_MSI` carry the sender's device ID:
/// the LAPICs decode address and data alone.
pub const MSI_NEEDS_DEVID: bool = false;

/// The in-kernel interrupt controllers: nothing to keep beyond the VM.
pub struct Irqchip;

/// Creates the VM with the in-kernel IOAPIC, PICs and LAPICs.
pub fn create_vm(kvm: &Kvm, _cfg: &CellConfig) -> Result<(VmFd, Irqchip), VmmError> {
    let vm = kvm.create_vm().kvm("create VM")?;
    vm.set_identity_map_address(KVM_IDENTITY_MAP_ADDR)
        .kvm("set identity map address")?;
    vm.set_tss_address(KVM_TSS_ADDR as usize)
        .kvm("set TSS address")?;
    vm.create_irq_chip().kvm("create in-kernel irqchip")?;
    zap_only_deleted_slots(&vm);
    Ok((vm, Irqchip))
}

/// `KVM_X86_QUIRK_SLOT_ZAP_ALL` (Linux 6.12 and later).
const QUIRK_SLOT_ZAP_ALL: u64 = 1 << 7;

/// Asks KVM to drop only a deleted memory slot's mappings, not every
/// mapping of the guest (`KVM_X86_QUIRK_SLOT_ZAP_ALL`, on by default: kept
/// for guests with an assigned GPU, which cells never have). Without this,
/// each slot a device model removes (a detached bridge's config-space
/// mirrors, an unmapped ivshmem BAR) makes the guest fault all of its RAM
/// back in. Kernels without the quirk (before 6.12) only zap the slot: then
/// there is nothing to do.
fn zap_only_deleted_slots(vm: &VmFd) {
    let supported = vm.check_extension_raw(kvm_bindings::KVM_CAP_DISABLE_QUIRKS2.into());
    if supported <= 0 || u64::from(supported.unsigned_abs()) & QUIRK_SLOT_ZAP_ALL == 0 {
        return;
    }
    let cap = kvm_bindings::kvm_enable_cap {
        cap: kvm_bindings::KVM_CAP_DISABLE_QUIRKS2,
        args: [QUIRK_SLOT_ZAP_ALL, 0, 0, 0],
        ..Default::default()
    };
    if let Err(e) = vm.enable_cap(&cap) {
        log::warn!("KVM: disabling the slot-zap-all quirk failed ({e}): deleting a slot refaults all guest memory");
    }
}

/// The console UART at its I/O port, and the i8042 (reset), CMOS and ACPI
/// power ports.
pub fn add_platform_devices(
    _mmio: &Bus,
    pio: &Bus,
    console: Arc<Mutex<SerialConsole>>,
    stop: &StopHandle,
) -> Result<(), VmmError> {
    pio.insert(
        "console",
        u64::from(platform::UART_PORT),
        u64::from(platform::UART_PORT_COUNT),
        console,
    )?;
    pio.insert(
        "i8042",
        I8042::BASE,
        I8042::LEN,
        Arc::new(Mutex::new(I8042::new(stop.clone()))),
    )?;
    pio.insert(
        "cmos",
        Cmos::BASE,
        Cmos::LEN,
        Arc::new(Mutex::new(Cmos::default())),
    )?;
    pio.insert(
        "acpi-power",
        u64::from(platform::ACPI_POWER_PORT),
        u64::from(platform::ACPI_POWER_PORT_COUNT),
        Arc::new(Mutex::new(AcpiPower::new(stop.clone()))),
    )?;
    Ok(())
}

/// Writes the boot tables (GDT, page tables, MP table, ACPI when asked),
/// loads the kernel and the initrd and passes the device tree as
/// `setup_data`.
pub fn load(
    memory: &GuestMemoryMmap,
    cfg: &CellConfig,
    layout: &CellLayout,
    tree: &mut Node,
) -> Result<EntryPoint, VmmError> {
    let dtb = crate::fdt::emit::to_dtb(tree)?;
    cpu::write_boot_tables(memory)?;
    if cfg.kernel.format != KernelFormat::Elf {
        // For kernels without CONFIG_OF; a DT kernel ignores it.
        mptable::write(memory, usize::from(cfg.cpus.count))?;
    }
    if cfg.kernel.acpi {
        acpi::write(memory, &acpi::AcpiPlatform::of(cfg, layout))?;
    }
    boot::load(memory, &cfg.kernel, &layout.memory, &dtb)
}

/// Creates `count` vCPUs with their CPUID, MSRs and LAPIC set; the
/// secondaries wait for the guest's SIPI, vCPU 0 for [`set_boot_entry`].
pub fn create_vcpus(
    kvm: &Kvm,
    vm: &VmFd,
    _irqchip: &Irqchip,
    count: u8,
) -> Result<Vec<VcpuFd>, VmmError> {
    let supported = kvm
        .get_supported_cpuid(MAX_CPUID_ENTRIES)
        .kvm("get supported CPUID")?;
    let mut vcpus = Vec::with_capacity(usize::from(count));
    for id in 0..count {
        let vcpu = vm.create_vcpu(u64::from(id)).kvm("create vCPU")?;
        let mut cpuid = supported.clone();
        cpu::patch_cpuid(&mut cpuid, id, count);
        vcpu.set_cpuid2(&cpuid).kvm("set CPUID")?;
        cpu::setup_common(&vcpu)?;
        vcpus.push(vcpu);
    }
    Ok(vcpus)
}

/// Puts the boot vCPU at `entry` in 64-bit long mode.
pub fn set_boot_entry(vcpu: &VcpuFd, entry: &EntryPoint) -> Result<(), VmmError> {
    cpu::setup_boot_vcpu(vcpu, entry)
}

/// The `KVM_IRQ_LINE` number of IOAPIC pin `line`: the GSI itself.
pub fn kvm_irq_line(line: u32) -> u32 {
    line
}

/// KVM's default irqchip routes, which a routing table must keep: GSIs
/// 0..16 to the PICs, 0..24 to the IOAPIC.
pub fn irqchip_routes() -> Vec<kvm_irq_routing_entry> {
    let irqchip = |gsi: u32, chip: u32, pin: u32| {
        let mut e = kvm_irq_routing_entry {
            gsi,
            type_: KVM_IRQ_ROUTING_IRQCHIP,
            ..Default::default()
        };
        e.u.irqchip.irqchip = chip;
        e.u.irqchip.pin = pin;
        e
    };
    let mut out = Vec::with_capacity((IOAPIC_PINS + PIC_PINS) as usize);
    for gsi in 0..PIC_PINS {
        let (chip, pin) = if gsi < 8 {
            (KVM_IRQCHIP_PIC_MASTER, gsi)
        } else {
            (KVM_IRQCHIP_PIC_SLAVE, gsi - 8)
        };
        out.push(irqchip(gsi, chip, pin));
    }
    for gsi in 0..IOAPIC_PINS {
        out.push(irqchip(gsi, KVM_IRQCHIP_IOAPIC, gsi));
    }
    out
}
