//! Per-vCPU architectural state: CPUID, MSRs, LAPIC LINT pins, and the
//! 64-bit long-mode entry state of the boot vCPU.

use super::boot::{addrs, EntryPoint};
use crate::vmm::error::{KvmContext, VmmError};
use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, CpuId, Msrs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MISC_ENABLE_FAST_STRING: u64 = 1;
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_EXTINT: u32 = 0x7;
const APIC_MODE_NMI: u32 = 0x4;

/// Boot GDT selectors, as the 64-bit boot protocol asks (__BOOT_CS/__BOOT_DS).
const BOOT_CS: u16 = 0x10;
const BOOT_DS: u16 = 0x18;
const BOOT_TSS: u16 = 0x20;

/// Patches KVM's supported CPUID for vCPU `id` of `count`: APIC IDs, the
/// hypervisor bit (else no kvm-clock), TSC-deadline (KVM never reports it)
/// and ARAT (with both, Linux never needs the PIT, which a DT-described IOAPIC
/// cannot route).
pub fn patch_cpuid(cpuid: &mut CpuId, id: u8, count: u8) {
    for e in cpuid.as_mut_slice() {
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | (u32::from(id) << 24) | (u32::from(count) << 16);
                e.ecx |= 1 << 31; // hypervisor
                e.ecx |= 1 << 24; // TSC-deadline
                if count > 1 {
                    e.edx |= 1 << 28; // HTT: several logical processors
                }
            }
            6 => e.eax |= 1 << 2, // ARAT
            0xb | 0x1f => e.edx = u32::from(id),
            0x8000_001e => e.eax = u32::from(id),
            _ => {}
        }
    }
}

/// Sets MSRs, FPU state and the LAPIC LINT pins shared by every vCPU.
pub fn setup_common(vcpu: &VcpuFd) -> Result<(), VmmError> {
    let msrs = Msrs::from_entries(&[kvm_msr_entry {
        index: MSR_IA32_MISC_ENABLE,
        data: MISC_ENABLE_FAST_STRING,
        ..Default::default()
    }])
    .map_err(|e| VmmError::Boot(format!("MSR list: {e:?}")))?;
    let written = vcpu.set_msrs(&msrs).kvm("set MSRs")?;
    if written != 1 {
        return Err(VmmError::Boot("KVM refused IA32_MISC_ENABLE".into()));
    }
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).kvm("set FPU state")?;

    let mut lapic = vcpu.get_lapic().kvm("get LAPIC")?;
    set_lvt_mode(&mut lapic.regs, APIC_LVT0, APIC_MODE_EXTINT);
    set_lvt_mode(&mut lapic.regs, APIC_LVT1, APIC_MODE_NMI);
    vcpu.set_lapic(&lapic).kvm("set LAPIC")?;
    Ok(())
}

fn set_lvt_mode(regs: &mut [std::os::raw::c_char; 1024], offset: usize, mode: u32) {
    let Some(bytes) = regs.get_mut(offset..offset + 4) else {
        return;
    };
    let mut raw = [0u8; 4];
    for (r, b) in raw.iter_mut().zip(bytes.iter()) {
        *r = *b as u8;
    }
    let value = (u32::from_le_bytes(raw) & !0x700) | (mode << 8);
    for (b, v) in bytes.iter_mut().zip(value.to_le_bytes()) {
        *b = v as std::os::raw::c_char;
    }
}

/// Writes the GDT and the 0..4 GiB identity map into guest memory.
pub fn write_boot_tables(mem: &GuestMemoryMmap) -> Result<(), VmmError> {
    let err = |e: vm_memory::GuestMemoryError| VmmError::Memory(e.to_string());
    let gdt: [u64; 5] = [
        0,
        0,
        gdt_entry(0xa09b, 0, 0xfffff), // 64-bit code
        gdt_entry(0xc093, 0, 0xfffff), // data
        gdt_entry(0x808b, 0, 0xfffff), // TSS
    ];
    for (i, e) in gdt.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(addrs::GDT + 8 * i as u64))
            .map_err(err)?;
    }
    mem.write_obj(0u64, GuestAddress(addrs::IDT)).map_err(err)?;

    mem.write_obj(addrs::PDPT | 0x3, GuestAddress(addrs::PML4))
        .map_err(err)?;
    for gib in 0..4u64 {
        let pd = addrs::PD + gib * 0x1000;
        mem.write_obj(pd | 0x3, GuestAddress(addrs::PDPT + gib * 8))
            .map_err(err)?;
        for i in 0..512u64 {
            let frame = (gib << 30) | (i << 21);
            mem.write_obj(frame | 0x83, GuestAddress(pd + i * 8))
                .map_err(err)?;
        }
    }
    Ok(())
}

fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((u64::from(base) & 0xff00_0000) << 32)
        | ((u64::from(flags) & 0x0000_f0ff) << 40)
        | ((u64::from(limit) & 0x000f_0000) << 32)
        | ((u64::from(base) & 0x00ff_ffff) << 16)
        | (u64::from(limit) & 0x0000_ffff)
}

fn segment(selector: u16, type_: u8, s: u8, l: u8, db: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db,
        s,
        l,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Puts the boot vCPU in 64-bit long mode at `entry`, as the Linux 64-bit
/// boot protocol (and cellvm's bare-metal ELF convention) expects.
pub fn setup_boot_vcpu(vcpu: &VcpuFd, entry: &EntryPoint) -> Result<(), VmmError> {
    let mut sregs = vcpu.get_sregs().kvm("get special registers")?;
    let code = segment(BOOT_CS, 0xb, 1, 1, 0);
    let data = segment(BOOT_DS, 0x3, 1, 0, 1);
    let mut tss = segment(BOOT_TSS, 0xb, 0, 0, 0);
    tss.g = 0;
    tss.limit = 0x67;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.gdt.base = addrs::GDT;
    sregs.gdt.limit = (5 * 8 - 1) as u16;
    sregs.idt.base = addrs::IDT;
    sregs.idt.limit = 7;
    sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
    sregs.cr3 = addrs::PML4;
    sregs.cr4 = CR4_PAE;
    sregs.efer = EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs).kvm("set special registers")?;

    let regs = kvm_regs {
        rip: entry.rip,
        rsi: entry.rsi,
        rdi: entry.rdi,
        rsp: entry.rsp,
        rbp: entry.rsp,
        rflags: 0x2,
        ..Default::default()
    };
    vcpu.set_regs(&regs).kvm("set registers")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_match_the_canonical_flat_descriptors() {
        assert_eq!(gdt_entry(0xa09b, 0, 0xfffff), 0x00af_9b00_0000_ffff);
        assert_eq!(gdt_entry(0xc093, 0, 0xfffff), 0x00cf_9300_0000_ffff);
    }

    #[test]
    fn lvt_mode_is_written_little_endian_and_keeps_other_bits() {
        let mut regs = [0 as std::os::raw::c_char; 1024];
        regs[APIC_LVT0] = 0x30;
        regs[APIC_LVT0 + 1] = 0x7f;
        set_lvt_mode(&mut regs, APIC_LVT0, APIC_MODE_EXTINT);
        assert_eq!(regs[APIC_LVT0] as u8, 0x30);
        assert_eq!(regs[APIC_LVT0 + 1] as u8, 0x7f & !0x7 | 0x7);
    }
}
