//! The Intel MultiProcessor Specification 1.4 table, for guest kernels
//! built without `CONFIG_OF` (every x86 distribution kernel): without ACPI
//! and without a device tree, Linux learns its CPUs, the IOAPIC and the
//! ISA interrupt routing from here, as it does under Firecracker.
//!
//! cellvm writes it for every cell whose RAM covers the two places it
//! needs; a kernel with a device tree ignores it for its SMP setup (x86
//! Linux replaces MP parsing with the DT's once the DT is populated; the
//! early MP pass only reads the local APIC address, which is the same).
//!
//! Layout:
//! - the floating pointer (16 bytes) at [`FLOATING_POINTER`] (0x9fc00,
//!   where Linux scans: the last KiB of base memory);
//! - the configuration table at [`CONFIG_TABLE`] (0xf0000, in the BIOS
//!   area): a header, one processor entry per vCPU (APIC ID = vCPU index,
//!   the bootstrap processor first), one ISA bus, the IOAPIC (ID = vCPUs +
//!   1, at [`IOAPIC_BASE`]), an I/O interrupt entry per ISA IRQ (IRQ N →
//!   pin N, except the timer's IRQ 0 → pin 2 and no IRQ 2, the cascade: how
//!   a PC, and KVM's in-kernel PIC/IOAPIC pair, are wired), and the local
//!   interrupts (ExtINT on LINT0, NMI on LINT1).
//!
//! Both ranges are reserved in the e820 map (0x9fc00..0x100000).

use crate::platform::{IOAPIC_BASE, LAPIC_BASE};
use crate::vmm::error::VmmError;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Guest-physical address of the MP floating pointer.
pub const FLOATING_POINTER: u64 = 0x9_fc00;
/// Guest-physical address of the MP configuration table.
pub const CONFIG_TABLE: u64 = 0xf_0000;
/// Most vCPUs a table describes (APIC IDs are 8 bits; the IOAPIC takes the
/// ID after the last CPU's).
pub const MAX_CPUS: usize = 254;

const SPEC_REVISION: u8 = 4;
const LAPIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
/// Processor signature: family 6 (a P6-class CPU), as Firecracker reports.
const CPU_SIGNATURE: u32 = 0x600;
/// Processor feature flags: FPU and APIC present.
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;
const INT_VECTORED: u8 = 0;
const INT_NMI: u8 = 1;
const INT_EXTINT: u8 = 3;

/// The two blobs to write: (address, bytes).
pub type Blobs = [(u64, Vec<u8>); 2];

/// The MP floating pointer and configuration table for `cpus` vCPUs, or
/// `None` for a count the table cannot describe (0 or above [`MAX_CPUS`]).
pub fn build(cpus: usize) -> Option<Blobs> {
    if cpus == 0 || cpus > MAX_CPUS {
        return None;
    }
    let ioapic_id = u8::try_from(cpus + 1).ok()?;
    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    for id in 0..cpus {
        let flags = if id == 0 { 0b11 } else { 0b01 }; // enabled, bootstrap
        entries.extend_from_slice(&[ENTRY_PROCESSOR, id as u8, LAPIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&(IOAPIC_BASE as u32).to_le_bytes());
    count += 1;
    for (irq, pin) in isa_routes() {
        // Flags 0: polarity and trigger conform to the bus (ISA: edge, high).
        entries.extend_from_slice(&[
            ENTRY_IO_INTERRUPT,
            INT_VECTORED,
            0,
            0,
            0,
            irq,
            ioapic_id,
            pin,
        ]);
        count += 1;
    }
    for (kind, lint) in [(INT_EXTINT, 0u8), (INT_NMI, 1u8)] {
        entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, kind, 0, 0, 0, 0, 0xff, lint]);
        count += 1;
    }
    let length = u16::try_from(44 + entries.len()).ok()?;
    let mut table = Vec::with_capacity(usize::from(length));
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&length.to_le_bytes());
    table.extend_from_slice(&[SPEC_REVISION, 0]); // checksum below
    table.extend_from_slice(b"CELLVM  ");
    table.extend_from_slice(b"CELLVM-CELL ");
    table.extend_from_slice(&0u32.to_le_bytes()); // no OEM table
    table.extend_from_slice(&0u16.to_le_bytes());
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&(LAPIC_BASE as u32).to_le_bytes());
    table.extend_from_slice(&0u32.to_le_bytes()); // extended table: none
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut pointer = Vec::with_capacity(16);
    pointer.extend_from_slice(b"_MP_");
    pointer.extend_from_slice(&(CONFIG_TABLE as u32).to_le_bytes());
    // Length in 16-byte units, revision, checksum (below), then feature
    // bytes: 0 = a configuration table is present; virtual-wire mode.
    pointer.extend_from_slice(&[1, SPEC_REVISION, 0, 0, 0, 0, 0, 0]);
    pointer[10] = checksum(&pointer);
    Some([(FLOATING_POINTER, pointer), (CONFIG_TABLE, table)])
}

/// Writes the table for `cpus` vCPUs into `mem`. Skipped, with a log line,
/// when the vCPU count cannot be described or RAM does not cover both
/// places (a kernel with a device tree does not need it).
pub fn write(mem: &GuestMemoryMmap, cpus: usize) -> Result<(), VmmError> {
    let Some(blobs) = build(cpus) else {
        log::info!("no MP table: {cpus} vCPUs exceed its {MAX_CPUS}");
        return Ok(());
    };
    let covered = |(at, bytes): &(u64, Vec<u8>)| {
        mem.address_in_range(GuestAddress(*at))
            && mem.address_in_range(GuestAddress(at + bytes.len() as u64 - 1))
    };
    if !blobs.iter().all(covered) {
        log::info!(
            "no MP table: guest RAM does not cover {FLOATING_POINTER:#x} and {CONFIG_TABLE:#x}"
        );
        return Ok(());
    }
    for (at, bytes) in &blobs {
        mem.write_slice(bytes, GuestAddress(*at))
            .map_err(|e| VmmError::Memory(format!("MP table at {at:#x}: {e}")))?;
    }
    Ok(())
}

/// (ISA IRQ, IOAPIC pin) pairs: IRQ 0 (the timer) on pin 2, no IRQ 2.
fn isa_routes() -> impl Iterator<Item = (u8, u8)> {
    (0..16u8)
        .filter(|irq| *irq != 2)
        .map(|irq| (irq, if irq == 0 { 2 } else { irq }))
}

/// The byte that makes `bytes` sum to 0 (mod 256), its own slot being 0.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    #[test]
    fn both_structures_checksum_to_zero_and_point_at_each_other() {
        let [(fp_at, fp), (table_at, table)] = build(2).unwrap();
        assert_eq!((fp_at, table_at), (FLOATING_POINTER, CONFIG_TABLE));
        assert_eq!(&fp[..4], b"_MP_");
        assert_eq!(fp.len(), 16);
        assert_eq!(sum(&fp), 0);
        assert_eq!(
            u32::from_le_bytes(fp[4..8].try_into().unwrap()),
            CONFIG_TABLE as u32
        );
        assert_eq!(&table[..4], b"PCMP");
        assert_eq!(sum(&table), 0);
        assert_eq!(
            usize::from(u16::from_le_bytes([table[4], table[5]])),
            table.len()
        );
    }

    #[test]
    fn every_vcpu_is_a_processor_entry_and_the_first_is_the_bootstrap_one() {
        let [_, (_, table)] = build(3).unwrap();
        let cpus: Vec<(u8, u8)> = table[44..]
            .chunks(20)
            .take(3)
            .map(|e| {
                assert_eq!(e[0], ENTRY_PROCESSOR);
                (e[1], e[3])
            })
            .collect();
        assert_eq!(cpus, [(0, 0b11), (1, 0b01), (2, 0b01)]);
        // Entries: 3 CPUs, a bus, the IOAPIC, 15 ISA IRQs, 2 local ones.
        let count = u16::from_le_bytes([table[34], table[35]]);
        assert_eq!(count, 3 + 1 + 1 + 15 + 2);
        assert_eq!(table.len(), 44 + 3 * 20 + (1 + 1 + 15 + 2) * 8);
    }

    #[test]
    fn isa_interrupts_go_to_their_pins_and_the_timer_to_pin_2() {
        let [_, (_, table)] = build(1).unwrap();
        let ioapic = &table[44 + 20 + 8..44 + 20 + 16];
        assert_eq!(ioapic[0], ENTRY_IOAPIC);
        assert_eq!(ioapic[1], 2); // the ID after the last CPU's
        assert_eq!(
            u32::from_le_bytes(ioapic[4..8].try_into().unwrap()),
            0xfec0_0000
        );
        let routes: Vec<(u8, u8)> = table[44 + 20 + 16..]
            .chunks(8)
            .filter(|e| e[0] == ENTRY_IO_INTERRUPT)
            .map(|e| {
                assert_eq!((e[1], e[4], e[6]), (INT_VECTORED, 0, 2), "{e:?}");
                (e[5], e[7])
            })
            .collect();
        assert_eq!(routes[0], (0, 2));
        assert!(routes.contains(&(4, 4)), "the console's IRQ: {routes:?}");
        assert!(!routes.iter().any(|(irq, _)| *irq == 2), "{routes:?}");
        assert_eq!(routes.len(), 15);
    }

    #[test]
    fn counts_the_table_cannot_describe_get_no_table() {
        assert!(build(0).is_none());
        assert!(build(MAX_CPUS + 1).is_none());
        let [_, (_, table)] = build(MAX_CPUS).unwrap();
        assert_eq!(sum(&table), 0);
    }
}
