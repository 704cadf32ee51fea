//! Virtio request round trip on the host's KVM: a tiny guest driver offers
//! one buffer to a virtio-mmio rng, notifies, and spins on the used ring
//! until the device completed it, N times; cellvm with the notify served by
//! its ioeventfd + worker thread against the same cell with `ioeventfd =
//! false` (every notify exits to the vCPU thread), same run. Prints a
//! table; never asserts.
//!
//! Run: `cargo bench --bench virtio_notify` (needs /dev/kvm). Each figure is
//! (t(2N) - t(N)) / N, which cancels VM setup and boot; median of 3. The
//! guest spins while the device works, so with ioeventfds the vCPU and the
//! worker run on different host CPUs (the nested rig's L1 has one CPU; the
//! virtio-blk benchmark shows that case, docs/benchmarks.md).

// Test and benchmark code: a failed step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../tests/common/guest.rs"]
mod guest;

use cellvm::config::{
    CellConfig, ConsoleConfig, ConsoleInput, ConsoleOutput, CpuConfig, KernelConfig, KernelFormat,
    MemoryRegion, VirtioBackendConfig, VirtioKind, VirtioMmioConfig,
};
use cellvm::vmm::{Cell, CellIo};
use guest::{elf_image, virtio_mmio_driver_setup, Asm, VQ_AVAIL, VQ_BUF, VQ_DESC, VQ_USED};
use std::time::{Duration, Instant};

const BASE: u64 = 0xd010_0000;

/// Queue setup, descriptor 0 = the 16-byte buffer, then `n` times: publish
/// available index i (every ring entry is descriptor 0: guest RAM starts
/// zeroed), notify queue 0, spin until the used index is i.
fn program(n: u64) -> Asm {
    let mut asm = Asm::new();
    virtio_mmio_driver_setup(&mut asm, BASE);
    asm.write32(VQ_DESC, VQ_BUF as u32);
    asm.write32(VQ_DESC + 4, 0);
    asm.write32(VQ_DESC + 8, 16);
    asm.write32(VQ_DESC + 12, 2); // WRITE
    let c = &mut asm.code;
    c.extend_from_slice(&[0x48, 0xbf]); // movabs rdi, avail.idx
    c.extend_from_slice(&(VQ_AVAIL + 2).to_le_bytes());
    c.extend_from_slice(&[0x48, 0xbe]); // movabs rsi, QueueNotify
    c.extend_from_slice(&(BASE + 0x50).to_le_bytes());
    c.extend_from_slice(&[0x48, 0xbb]); // movabs rbx, used.idx
    c.extend_from_slice(&(VQ_USED + 2).to_le_bytes());
    c.extend_from_slice(&[0x48, 0xb9]); // movabs rcx, n
    c.extend_from_slice(&n.to_le_bytes());
    c.extend_from_slice(&[0x31, 0xd2, 0x31, 0xc0]); // xor edx, edx; xor eax, eax
    let body: &[u8] = &[
        0xff, 0xc0, // inc eax
        0x66, 0x89, 0x07, // mov [rdi], ax      (avail.idx)
        0x89, 0x16, // mov [rsi], edx           (notify queue 0)
        0x66, 0x39, 0x03, // cmp [rbx], ax      (used.idx)
        0x75, 0xfb, // jne cmp
        0x48, 0xff, 0xc9, // dec rcx
    ];
    c.extend_from_slice(body);
    let back = -(body.len() as i8 + 2);
    c.extend_from_slice(&[0x75, back as u8]); // jnz inc
    asm.exit(0);
    asm
}

fn run(ioeventfd: bool, n: u64) -> Duration {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.elf");
    std::fs::write(&path, elf_image(&program(n).code)).expect("write ELF");
    let cfg = CellConfig {
        name: "bench-notify".into(),
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
        virtio_mmio: vec![VirtioMmioConfig {
            id: "rng0".into(),
            state: cellvm::config::DeviceState::Okay,
            kind: VirtioKind::Rng,
            base: Some(BASE),
            irq: None,
            backend: VirtioBackendConfig {
                ioeventfd,
                ..VirtioBackendConfig::default()
            },
        }],
        pci_bridges: vec![],
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
    let outcome = std::thread::spawn(move || cell.run().expect("run cell"))
        .join()
        .expect("cell thread");
    assert_eq!(
        outcome.reason,
        cellvm::stop::StopReason::DebugExit(0),
        "the guest driver did not finish"
    );
    start.elapsed()
}

fn per_request(ioeventfd: bool, n: u64) -> f64 {
    let mut v: Vec<f64> = (0..3)
        .map(|_| {
            let a = run(ioeventfd, n);
            let b = run(ioeventfd, 2 * n);
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
    let full = std::env::args().any(|a| a == "--bench");
    let n: u64 = std::env::var("CELLVM_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 20_000 } else { 200 });
    if full {
        println!("virtio-mmio rng request round trip (notify -> used ring), {n} requests per step, same run");
    } else {
        println!(
            "virtio notify: SMOKE RUN ({n} requests, whatever profile cargo test built); \
             run `cargo bench --bench virtio_notify` for the numbers"
        );
    }
    let exit = per_request(false, n);
    let fast = per_request(true, n);
    println!("| notification path | per request | ratio to the exit path |");
    println!("|---|---|---|");
    println!(
        "| MMIO exit to the vCPU thread (ioeventfd = false) | {:.2} us | 1.00x |",
        exit * 1e6
    );
    println!(
        "| ioeventfd + worker thread (default) | {:.2} us | {:.2}x |",
        fast * 1e6,
        fast / exit
    );
}
