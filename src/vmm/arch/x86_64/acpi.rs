//! Hardware-reduced ACPI tables, for guest kernels built without
//! `CONFIG_OF` and without an MP table parser (Debian's cloud kernel is
//! one): they learn their CPUs, the IOAPIC, the console and the boot
//! virtio-mmio devices from here, and power off and reset through the
//! registers the FADT names. Cloud Hypervisor and Firecracker boot stock
//! kernels the same way. A kernel without ACPI (cellvm's guest kernel)
//! never looks at them; a kernel with both ACPI and a device tree would see
//! both, which is why a cell can turn them off (`kernel.acpi = false`).
//!
//! The tables, built with rust-vmm's `acpi_tables` crate, are written into
//! the BIOS area below the MP table (both reserved in the e820 map):
//! - the RSDP (revision 2) at [`RSDP_ADDR`] (0xe0000, where Linux scans);
//! - then, each 16-byte aligned: the DSDT, the FADT, the MADT and the XSDT
//!   that lists FADT and MADT, all below [`TABLES_END`].
//!
//! Contents:
//! - **FADT**: `HW_REDUCED_ACPI` (no PM timer, no SCI, no legacy PIC or
//!   PIT: the guest uses the local APIC's TSC deadline timer, as on the
//!   device-tree path) and `RESET_REG_SUP`; the sleep control and status
//!   registers and the reset register are the ACPI power device's ports
//!   ([`crate::devices::acpi_power`]); the IA-PC boot flags declare no VGA
//!   and no i8042 keyboard (Linux then does not probe one).
//! - **MADT**: one enabled local APIC per vCPU (UID = APIC ID = vCPU
//!   index), the IOAPIC (ID = vCPUs + 1, GSI base 0; the same ID as in the
//!   MP table); no interrupt source overrides (no PIT, ISA IRQ N = GSI N).
//! - **DSDT**: `\_S5_` (soft off, sleep type
//!   [`crate::devices::acpi_power::SLEEP_TYPE_S5`]), a `PNP0501` device per
//!   UART (port, 8 ports, its IRQ, edge, active high) and an `LNRO0005`
//!   device per virtio-mmio device present at boot (its window, its IRQ,
//!   edge, active high), which Linux's `virtio_mmio` driver binds. PCI host
//!   bridges and the paravirtual channel are described by the device tree
//!   only.

use crate::config::{CellConfig, DeviceState};
use crate::devices::acpi_power::{RESET_OFFSET, RESET_VALUE, SLEEP_OFFSET, SLEEP_TYPE_S5};
use crate::layout::CellLayout;
use crate::platform::{ACPI_POWER_PORT, IOAPIC_BASE, LAPIC_BASE, UART_IRQ, UART_PORT};
use crate::vmm::error::VmmError;
use acpi_tables::aml;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::{Aml, AmlSink};
use std::collections::HashSet;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Guest-physical address of the RSDP.
pub const RSDP_ADDR: u64 = 0xe_0000;
/// End (exclusive) of the area the tables may use: the MP table's start.
pub const TABLES_END: u64 = super::mptable::CONFIG_TABLE;
/// Most vCPUs the MADT describes (8-bit APIC IDs; the IOAPIC takes the ID
/// after the last CPU's).
pub const MAX_CPUS: usize = 254;

const OEM_ID: [u8; 6] = *b"CELLVM";
const OEM_TABLE_ID: [u8; 8] = *b"CELLVM  ";
const OEM_REVISION: u32 = 1;
const DSDT_REVISION: u8 = 6;
/// IA-PC boot architecture flag: VGA not present.
const IAPC_NO_VGA: u16 = 1 << 2;

/// A UART the DSDT describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcpiUart {
    /// First I/O port.
    pub port: u16,
    /// IOAPIC pin (GSI).
    pub irq: u32,
}

/// A virtio-mmio device the DSDT describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcpiVirtioMmio {
    /// Base of its register window.
    pub base: u64,
    /// Size of the window.
    pub size: u64,
    /// IOAPIC pin (GSI).
    pub irq: u32,
}

/// What the tables describe.
#[derive(Debug, Clone, Default)]
pub struct AcpiPlatform {
    /// vCPU count.
    pub cpus: usize,
    /// The console first, then extra UARTs.
    pub uarts: Vec<AcpiUart>,
    /// Virtio-mmio devices present at boot.
    pub virtio_mmio: Vec<AcpiVirtioMmio>,
}

impl AcpiPlatform {
    /// What a cell's tables describe: its vCPUs, the console and every
    /// extra UART and virtio-mmio device present at boot (state `okay`).
    pub fn of(cfg: &CellConfig, layout: &CellLayout) -> AcpiPlatform {
        let present: HashSet<String> = cfg
            .devices()
            .iter()
            .filter(|d| d.state() == DeviceState::Okay)
            .map(|d| d.id().to_string())
            .collect();
        let console = AcpiUart {
            port: UART_PORT,
            irq: UART_IRQ,
        };
        let uarts = layout
            .uarts
            .iter()
            .filter(|u| present.contains(&u.id) && u.mmio.is_none())
            .map(|u| AcpiUart {
                port: u.port,
                irq: u.irq,
            });
        let virtio_mmio = layout
            .virtio_mmio
            .iter()
            .filter(|v| present.contains(&v.id))
            .map(|v| AcpiVirtioMmio {
                base: v.window.base,
                size: v.window.size,
                irq: v.irq,
            })
            .collect();
        AcpiPlatform {
            cpus: usize::from(cfg.cpus.count),
            uarts: std::iter::once(console).chain(uarts).collect(),
            virtio_mmio,
        }
    }
}

/// Why no tables were built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcpiError {
    /// The vCPU count is 0 or above [`MAX_CPUS`].
    #[error("{0} vCPUs cannot be described (1 to {MAX_CPUS})")]
    Cpus(usize),
    /// A device lies above 4 GiB, which a 32-bit memory descriptor cannot
    /// name.
    #[error("virtio-mmio window at {0:#x} is above 4 GiB")]
    Above4G(u64),
    /// The tables do not fit between [`RSDP_ADDR`] and [`TABLES_END`].
    #[error("ACPI tables of {0} bytes exceed their area")]
    TooLarge(u64),
}

/// The tables as (guest address, bytes) pairs, RSDP first.
pub fn build(platform: &AcpiPlatform) -> Result<Vec<(u64, Vec<u8>)>, AcpiError> {
    if platform.cpus == 0 || platform.cpus > MAX_CPUS {
        return Err(AcpiError::Cpus(platform.cpus));
    }
    let mut next = align(RSDP_ADDR + Rsdp::len() as u64);
    let mut place = |bytes: Vec<u8>, out: &mut Vec<(u64, Vec<u8>)>| {
        let at = next;
        next = align(at + bytes.len() as u64);
        out.push((at, bytes));
        at
    };
    let mut tables = Vec::new();
    let dsdt = place(dsdt(platform)?, &mut tables);
    let fadt = place(aml_bytes(&fadt(dsdt)), &mut tables);
    let madt = place(aml_bytes(&madt(platform.cpus)), &mut tables);
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(fadt);
    xsdt.add_entry(madt);
    let xsdt = place(aml_bytes(&xsdt), &mut tables);
    if next > TABLES_END {
        return Err(AcpiError::TooLarge(next - RSDP_ADDR));
    }
    let mut out = vec![(RSDP_ADDR, aml_bytes(&Rsdp::new(OEM_ID, xsdt)))];
    out.extend(tables);
    Ok(out)
}

/// Writes the tables for `platform` into `mem`. Skipped, with a log line,
/// when they cannot describe the cell or RAM does not cover their area (a
/// kernel with a device tree does not need them).
pub fn write(mem: &GuestMemoryMmap, platform: &AcpiPlatform) -> Result<(), VmmError> {
    let blobs = match build(platform) {
        Ok(blobs) => blobs,
        Err(e) => {
            log::info!("no ACPI tables: {e}");
            return Ok(());
        }
    };
    let covered = mem.address_in_range(GuestAddress(RSDP_ADDR))
        && mem.address_in_range(GuestAddress(TABLES_END - 1));
    if !covered {
        log::info!("no ACPI tables: guest RAM does not cover {RSDP_ADDR:#x}..{TABLES_END:#x}");
        return Ok(());
    }
    for (at, bytes) in &blobs {
        mem.write_slice(bytes, GuestAddress(*at))
            .map_err(|e| VmmError::Memory(format!("ACPI table at {at:#x}: {e}")))?;
    }
    Ok(())
}

fn align(addr: u64) -> u64 {
    addr.next_multiple_of(16)
}

fn aml_bytes(table: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    table.to_aml_bytes(&mut bytes);
    bytes
}

fn power_register(offset: u64) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(ACPI_POWER_PORT) + offset,
    )
}

fn fadt(dsdt: u64) -> acpi_tables::fadt::FADT {
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_64(dsdt)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup);
    fadt.iapc_boot_arch = IAPC_NO_VGA.into();
    fadt.sleep_control_reg = power_register(SLEEP_OFFSET);
    fadt.sleep_status_reg = power_register(SLEEP_OFFSET);
    fadt.reset_reg = power_register(RESET_OFFSET);
    fadt.reset_value = RESET_VALUE;
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(*b"CELLVM\0\0").into();
    fadt.finalize()
}

fn madt(cpus: usize) -> MADT {
    let mut madt = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
        LocalInterruptController::Address(LAPIC_BASE as u32),
    );
    // `build` keeps cpus within MAX_CPUS, so every ID fits a byte.
    let ids = (0..cpus).filter_map(|id| u8::try_from(id).ok());
    for id in ids {
        madt.add_structure(ProcessorLocalApic::new(id, id, EnabledStatus::Enabled));
    }
    let ioapic_id = u8::try_from(cpus + 1).unwrap_or(u8::MAX);
    madt.add_structure(IoApic::new(ioapic_id, IOAPIC_BASE as u32, 0));
    madt
}

fn dsdt(platform: &AcpiPlatform) -> Result<Vec<u8>, AcpiError> {
    let mut body = Vec::new();
    // \_S5_: Package (SLP_TYPa, SLP_TYPb, reserved, reserved).
    let s5 = aml::Package::new(vec![&SLEEP_TYPE_S5, &SLEEP_TYPE_S5, &0u8, &0u8]);
    aml::Name::new("_S5_".into(), &s5).to_aml_bytes(&mut body);
    let mut devices = Vec::new();
    for (uid, uart) in platform.uarts.iter().enumerate() {
        devices.push(uart_device(uid, uart));
    }
    for (uid, dev) in platform.virtio_mmio.iter().enumerate() {
        devices.push(virtio_device(uid, dev)?);
    }
    let children: Vec<&dyn Aml> = devices.iter().map(|d| d as &dyn Aml).collect();
    aml::Scope::new("_SB_".into(), children).to_aml_bytes(&mut body);

    let length = 36 + body.len();
    let mut sdt = Sdt::new(
        *b"DSDT",
        36,
        DSDT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    sdt.append_slice(&body);
    debug_assert_eq!(sdt.len(), length);
    Ok(sdt.as_slice().to_vec())
}

/// A device's AML, kept as bytes so that a scope can hold many.
struct RawAml(Vec<u8>);

impl Aml for RawAml {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(&self.0);
    }
}

fn uart_device(uid: usize, uart: &AcpiUart) -> RawAml {
    let io = aml::IO::new(uart.port, uart.port, 1, 8);
    let irq = aml::Interrupt::new(true, true, false, false, uart.irq);
    let crs = aml::ResourceTemplate::new(vec![&io, &irq]);
    let name = format!("U{:03X}", uid & 0xfff);
    device(&name, &aml::EISAName::new("PNP0501"), uid, &crs)
}

fn virtio_device(uid: usize, dev: &AcpiVirtioMmio) -> Result<RawAml, AcpiError> {
    let base = u32::try_from(dev.base).map_err(|_| AcpiError::Above4G(dev.base))?;
    let size = u32::try_from(dev.size).map_err(|_| AcpiError::Above4G(dev.base))?;
    let mem = aml::Memory32Fixed::new(true, base, size);
    let irq = aml::Interrupt::new(true, true, false, false, dev.irq);
    let crs = aml::ResourceTemplate::new(vec![&mem, &irq]);
    let name = format!("V{:03X}", uid & 0xfff);
    Ok(device(&name, &"LNRO0005", uid, &crs))
}

/// `Device (NAME) { _HID, _UID, _CRS }`; `name` is four characters.
fn device(name: &str, hid: &dyn Aml, uid: usize, crs: &dyn Aml) -> RawAml {
    let hid = aml::Name::new("_HID".into(), hid);
    let uid = aml::Name::new("_UID".into(), &uid);
    let crs = aml::Name::new("_CRS".into(), crs);
    RawAml(aml_bytes(&aml::Device::new(
        name.into(),
        vec![&hid, &uid, &crs],
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(cpus: usize) -> AcpiPlatform {
        AcpiPlatform {
            cpus,
            uarts: vec![AcpiUart {
                port: 0x3f8,
                irq: 4,
            }],
            virtio_mmio: vec![AcpiVirtioMmio {
                base: 0xd010_0000,
                size: 0x1000,
                irq: 6,
            }],
        }
    }

    fn checksum_ok(bytes: &[u8]) -> bool {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    fn table(blobs: &[(u64, Vec<u8>)], at: u64) -> &[u8] {
        &blobs.iter().find(|(a, _)| *a == at).unwrap().1
    }

    #[test]
    fn the_rsdp_leads_through_the_xsdt_to_a_fadt_and_a_madt() {
        let blobs = build(&platform(2)).unwrap();
        let rsdp = table(&blobs, RSDP_ADDR);
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert!(checksum_ok(&rsdp[..20]) && checksum_ok(rsdp));
        let xsdt = table(&blobs, u64_at(rsdp, 24));
        assert_eq!(&xsdt[..4], b"XSDT");
        let entries: Vec<u64> = (36..xsdt.len())
            .step_by(8)
            .map(|o| u64_at(xsdt, o))
            .collect();
        let signatures: Vec<&[u8]> = entries.iter().map(|a| &table(&blobs, *a)[..4]).collect();
        assert_eq!(signatures, [&b"FACP"[..], &b"APIC"[..]]);
        for (at, bytes) in &blobs[1..] {
            assert_eq!(u32_at(bytes, 4) as usize, bytes.len(), "length at {at:#x}");
            assert!(checksum_ok(bytes), "checksum at {at:#x}");
            assert_eq!(at % 16, 0);
            assert!(at + bytes.len() as u64 <= TABLES_END);
        }
    }

    #[test]
    fn the_fadt_is_hardware_reduced_and_names_the_power_ports() {
        let blobs = build(&platform(1)).unwrap();
        let fadt = blobs.iter().find(|(_, b)| &b[..4] == b"FACP").unwrap();
        let fadt = &fadt.1;
        let flags = u32_at(fadt, 112);
        assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
        assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
        // Reset register: GAS at 116 (I/O space, address at +4), value at 128.
        assert_eq!(fadt[116], 1);
        assert_eq!(u64_at(fadt, 120), u64::from(ACPI_POWER_PORT) + RESET_OFFSET);
        assert_eq!(fadt[128], RESET_VALUE);
        // X_DSDT at 140 points at the DSDT.
        let dsdt = table(&blobs, u64_at(fadt, 140));
        assert_eq!(&dsdt[..4], b"DSDT");
        // Sleep control and status registers at 244 and 256.
        for at in [244, 256] {
            assert_eq!(fadt[at], 1);
            assert_eq!(u64_at(fadt, at + 4), u64::from(ACPI_POWER_PORT));
        }
    }

    #[test]
    fn the_madt_has_a_local_apic_per_vcpu_and_the_ioapic() {
        let blobs = build(&platform(3)).unwrap();
        let madt = &blobs.iter().find(|(_, b)| &b[..4] == b"APIC").unwrap().1;
        assert_eq!(u32_at(madt, 36), LAPIC_BASE as u32);
        assert_eq!(u32_at(madt, 40), 0, "no 8259 (PCAT_COMPAT clear)");
        let mut at = 44;
        let mut lapics = Vec::new();
        let mut ioapics = Vec::new();
        while at < madt.len() {
            match madt[at] {
                0 => lapics.push((madt[at + 2], madt[at + 3], u32_at(madt, at + 4))),
                1 => ioapics.push((madt[at + 2], u32_at(madt, at + 4), u32_at(madt, at + 8))),
                other => panic!("unexpected MADT entry type {other}"),
            }
            at += usize::from(madt[at + 1]);
        }
        assert_eq!(lapics, [(0, 0, 1), (1, 1, 1), (2, 2, 1)]);
        assert_eq!(ioapics, [(4, IOAPIC_BASE as u32, 0)]);
    }

    #[test]
    fn the_dsdt_names_s5_the_uarts_and_the_virtio_mmio_devices() {
        let blobs = build(&platform(1)).unwrap();
        let dsdt = &blobs.iter().find(|(_, b)| &b[..4] == b"DSDT").unwrap().1;
        let has = |needle: &[u8]| dsdt.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"_S5_"));
        assert!(has(b"U000") && has(b"V000"));
        assert!(has(b"LNRO0005\0"));
        // PNP0501 as a compressed EISA id.
        assert!(has(&[0x41, 0xd0, 0x05, 0x01]));
        // The virtio window and the IRQs in the resource templates:
        // Memory32Fixed's base, and extended IRQ descriptors for 4 and 6.
        assert!(has(&0xd010_0000u32.to_le_bytes()));
        assert!(has(&[0x89, 6, 0, 0b0011, 1, 4, 0, 0, 0]));
        assert!(has(&[0x89, 6, 0, 0b0011, 1, 6, 0, 0, 0]));
    }

    #[test]
    fn cells_the_tables_cannot_describe_get_no_tables() {
        assert_eq!(build(&platform(0)), Err(AcpiError::Cpus(0)));
        assert_eq!(build(&platform(255)), Err(AcpiError::Cpus(255)));
        let mut high = platform(1);
        high.virtio_mmio[0].base = 0x40_0000_0000;
        assert_eq!(build(&high), Err(AcpiError::Above4G(0x40_0000_0000)));
    }

    #[test]
    fn sixty_four_devices_fit_in_the_area() {
        let mut p = platform(MAX_CPUS);
        p.virtio_mmio = (0..64)
            .map(|i| AcpiVirtioMmio {
                base: 0xd010_0000 + i * 0x1000,
                size: 0x1000,
                irq: 6,
            })
            .collect();
        let blobs = build(&p).unwrap();
        let dsdt = &blobs.iter().find(|(_, b)| &b[..4] == b"DSDT").unwrap().1;
        assert!(dsdt.windows(4).any(|w| w == b"V03F"));
    }
}
