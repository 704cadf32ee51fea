//! ECAM access cost: a config-space read/write through cellvm (bus dispatch,
//! ECAM decode, PCI function) against a raw KVM MMIO exit with no device
//! logic, same guest loop, same run. Prints a table; never asserts.
//!
//! Run: `cargo bench --bench ecam` (needs /dev/kvm). Each figure is
//! (t(2N) - t(N)) / N, which cancels VM setup and boot.

// Test and benchmark code: a failed step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../tests/common/guest.rs"]
mod guest;

use cellvm::config::{
    CellConfig, ConsoleConfig, ConsoleInput, ConsoleOutput, CpuConfig, KernelConfig, KernelFormat,
    MemoryRegion, PciBridgeConfig, PciDeviceConfig, PciDeviceKind, PciHostKind,
};
use cellvm::vmm::arch::x86_64::{boot, cpu};
use cellvm::vmm::{Cell, CellIo};
use guest::{elf_image, Asm, LOAD_ADDR};
use kvm_ioctls::{Kvm, VcpuExit};
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

const ECAM: u64 = 0xe000_0000;
const VENDOR_00_01_0: u64 = ECAM + (1 << 15);
const COMMAND_00_01_0: u64 = ECAM + (1 << 15) + 4;
const RAW_TARGET: u64 = 0xd800_0000;

#[derive(Clone, Copy)]
enum Op {
    Read,
    Write,
}

/// `n` accesses to `addr`, then a write to the debug-exit device.
fn loop_program(addr: u64, op: Op, n: u64) -> Asm {
    let mut asm = Asm::new();
    asm.mov_rbx(addr).mov_rax(0);
    asm.code.extend_from_slice(&[0x48, 0xb9]); // movabs rcx, n
    asm.code.extend_from_slice(&n.to_le_bytes());
    let body: &[u8] = match op {
        Op::Read => &[0x8b, 0x03],  // mov eax, [rbx]
        Op::Write => &[0x89, 0x03], // mov [rbx], eax
    };
    asm.code.extend_from_slice(body);
    asm.code.extend_from_slice(&[0x48, 0xff, 0xc9]); // dec rcx
    let back = -(body.len() as i8 + 3 + 2);
    asm.code.extend_from_slice(&[0x75, back as u8]); // jnz body
    asm.exit(0);
    asm
}

fn cellvm_run(addr: u64, op: Op, n: u64) -> Duration {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.elf");
    std::fs::write(&path, elf_image(&loop_program(addr, op, n).code)).expect("write ELF");
    let cfg = CellConfig {
        name: "bench".into(),
        source: None,
        cpus: CpuConfig {
            count: 1,
            pin: None,
            shared: false,
        },
        memory: vec![MemoryRegion {
            base: 0,
            size: 64 << 20,
            prefault: false,
            lock: false,
        }],
        kernel: KernelConfig {
            path,
            format: KernelFormat::Elf,
            initrd: None,
            cmdline: String::new(),
            acpi: false,
        },
        console: ConsoleConfig {
            output: ConsoleOutput::None,
            input: ConsoleInput::None,
        },
        virtio_mmio: vec![],
        pci_bridges: vec![PciBridgeConfig {
            id: "pci0".into(),
            state: cellvm::config::DeviceState::Okay,
            kind: PciHostKind::Ecam,
            config_base: Some(ECAM),
            bus_start: 0,
            bus_end: 0,
            mmio32: None,
            mmio64: None,
            devices: vec![PciDeviceConfig {
                bus: 0,
                slot: 1,
                function: 0,
                kind: PciDeviceKind::Test,
            }],
        }],
        uarts: vec![],
        connectors: vec![],
        origins: Default::default(),
    };
    let io = CellIo {
        console_out: Box::new(std::io::sink()),
        console_in: None,
        handle_signals: false,
        api_socket: None,
        // Measured as cells run: with their seccomp filters.
        seccomp: true,
        claims: None,
        stop: None,
        timeout: None,
    };
    let start = Instant::now();
    let cell = Cell::new(cfg, io, start).expect("build cell");
    // On a thread of its own: run() leaves its caller under the control
    // filter, and the next measurement needs this one unfiltered.
    std::thread::spawn(move || cell.run().expect("run cell"))
        .join()
        .expect("cell thread");
    start.elapsed()
}

/// The same guest on a bare KVM VM whose exit handler does nothing.
fn raw_run(op: Op, n: u64) -> Duration {
    let start = Instant::now();
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 64 << 20)]).expect("memory");
    let kvm = Kvm::new().expect("open /dev/kvm");
    let vm = kvm.create_vm().expect("create VM");
    let host = mem.get_host_address(GuestAddress(0)).expect("host address");
    let region = kvm_bindings::kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: 64 << 20,
        userspace_addr: host as u64,
    };
    // SAFETY: `mem` outlives the VM: both live until the end of this function
    // and `vm` is declared after `mem`, so it is dropped first.
    unsafe { vm.set_user_memory_region(region) }.expect("memory slot");
    let code = loop_program(RAW_TARGET, op, n).code;
    mem.write_slice(&code, GuestAddress(LOAD_ADDR))
        .expect("load code");
    cpu::write_boot_tables(&mem).expect("boot tables");
    let mut vcpu = vm.create_vcpu(0).expect("vCPU");
    let entry = boot::EntryPoint {
        rip: LOAD_ADDR,
        rsi: 0,
        rdi: 0,
        rsp: boot::addrs::ELF_STACK_TOP,
    };
    cpu::setup_boot_vcpu(&vcpu, &entry).expect("vCPU state");
    loop {
        match vcpu.run().expect("KVM_RUN") {
            VcpuExit::MmioRead(_, data) => data.fill(0),
            VcpuExit::MmioWrite(0xd000_0000, _) => break,
            VcpuExit::MmioWrite(..) => {}
            other => panic!("unexpected exit {other:?}"),
        }
    }
    start.elapsed()
}

fn per_access(f: impl Fn(u64) -> Duration, n: u64) -> f64 {
    // Median of 3 differences t(2N) - t(N).
    let mut v: Vec<f64> = (0..3)
        .map(|_| {
            let a = f(n);
            let b = f(2 * n);
            b.saturating_sub(a).as_secs_f64() / n as f64
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[1]
}

fn main() {
    assert!(
        std::path::Path::new("/dev/kvm").exists(),
        "/dev/kvm is missing: this benchmark needs KVM"
    );
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this
    // binary without it, and then a short smoke run is enough.
    let full = std::env::args().any(|a| a == "--bench");
    let n: u64 = std::env::var("CELLVM_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 20_000 } else { 200 });
    if full {
        println!("ECAM access vs raw MMIO exit, {n} accesses per step, same run");
    } else {
        println!(
            "ECAM access vs raw MMIO exit: SMOKE RUN ({n} accesses, whatever profile cargo test built); \
             the ratio below is noise, run `cargo bench --bench ecam` for the numbers"
        );
    }
    println!("| access | raw KVM MMIO exit | cellvm ECAM | ratio (target <= 1.10) |");
    println!("|---|---|---|---|");
    for (name, op, addr) in [
        ("config read (vendor ID)", Op::Read, VENDOR_00_01_0),
        ("config write (command)", Op::Write, COMMAND_00_01_0),
    ] {
        let raw = per_access(|k| raw_run(op, k), n);
        let ours = per_access(|k| cellvm_run(addr, op, k), n);
        println!(
            "| {name} | {:.2} us | {:.2} us | {:.3}x |",
            raw * 1e6,
            ours * 1e6,
            ours / raw
        );
    }
}
