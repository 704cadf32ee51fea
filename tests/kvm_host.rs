//! Fast KVM tests: tiny hand-assembled guests on the host's /dev/kvm.
//!
//! These need a working /dev/kvm (any flavour, including the software
//! kvm-pvm of the development machines). A missing /dev/kvm fails every
//! test with a clear message; nothing is skipped.

// Test and benchmark code: a failed step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use cellvm::config::{
    CellConfig, ConsoleConfig, ConsoleInput, ConsoleOutput, CpuConfig, KernelConfig, KernelFormat,
    MemoryRegion, PciBridgeConfig, PciHostKind,
};
use cellvm::stop::StopReason;
use cellvm::vmm::{Cell, CellIo, RunOutcome};
use common::guest::{virtio_mmio_driver_setup, write_elf, Asm, VQ_AVAIL, VQ_BUF, VQ_DESC, VQ_USED};
use std::io::Write;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

fn require_kvm() {
    assert!(
        std::path::Path::new("/dev/kvm").exists(),
        "/dev/kvm is missing: the fast KVM tests need KVM (load kvm_intel/kvm_amd or run them where KVM exists)"
    );
}

/// A cell name no other test of this process uses: cells claim their
/// names host-wide (docs/partitioning.md) and these tests run in parallel.
fn unique_name() -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("kvm-test-{}-{n}", std::process::id())
}

fn config_for(kernel: std::path::PathBuf, vcpus: u8) -> CellConfig {
    CellConfig {
        name: unique_name(),
        source: None,
        cpus: CpuConfig {
            count: vcpus,
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
            path: kernel,
            format: KernelFormat::Elf,
            initrd: None,
            cmdline: String::new(),
            acpi: false,
        },
        console: ConsoleConfig {
            output: ConsoleOutput::Stdout,
            input: ConsoleInput::None,
        },
        virtio_mmio: vec![],
        pci_bridges: vec![],
        uarts: vec![],
        connectors: vec![],
        origins: Default::default(),
    }
}

/// Console sink that records bytes and reports the first one.
#[derive(Clone)]
struct Capture {
    bytes: Arc<Mutex<Vec<u8>>>,
    first: Arc<Mutex<Option<mpsc::Sender<()>>>>,
}

impl Capture {
    fn new() -> (Self, mpsc::Receiver<()>) {
        let (tx, rx) = mpsc::channel();
        (
            Capture {
                bytes: Arc::default(),
                first: Arc::new(Mutex::new(Some(tx))),
            },
            rx,
        )
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().unwrap()).into_owned()
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.lock().unwrap().extend_from_slice(buf);
        if let Some(tx) = self.first.lock().unwrap().take() {
            let _ = tx.send(());
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn io(capture: &Capture, input: Option<std::fs::File>) -> CellIo {
    CellIo {
        console_out: Box::new(capture.clone()),
        console_in: input,
        handle_signals: false,
        stop: None,
        timeout: None,
        api_socket: None,
        // Every test runs its cell as cellvm does: filtered.
        seccomp: true,
        claims: None,
    }
}

/// Runs `cell` on a thread of its own (seccomp leaves the thread that ran
/// the control loop under the control filter) and returns how it ended.
fn run_cell(cell: Cell) -> RunOutcome {
    std::thread::Builder::new()
        .name("cell-control".into())
        .spawn(move || cell.run().expect("run cell"))
        .unwrap()
        .join()
        .expect("the cell's control thread panicked")
}

fn run_program(asm: &Asm, vcpus: u8) -> (RunOutcome, String) {
    run_with_config(asm, |cfg| cfg.cpus.count = vcpus)
}

fn run_with_config(asm: &Asm, tweak: impl FnOnce(&mut CellConfig)) -> (RunOutcome, String) {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let elf = write_elf(dir.path(), "guest.elf", asm);
    let mut cfg = config_for(elf, 1);
    tweak(&mut cfg);
    let (capture, _first) = Capture::new();
    let cell = Cell::new(cfg, io(&capture, None), Instant::now()).expect("build cell");
    let outcome = run_cell(cell);
    (outcome, capture.text())
}

#[test]
fn console_output_reaches_the_sink_and_debug_exit_sets_the_code() {
    let mut asm = Asm::new();
    asm.puts("hello from a cell\n").exit(42);
    let (outcome, console) = run_program(&asm, 1);
    assert_eq!(console, "hello from a cell\n");
    assert_eq!(outcome.reason, StopReason::DebugExit(42));
    assert_eq!(outcome.reason.exit_code(), 42);
}

#[test]
fn rep_outsb_to_the_console_port_delivers_every_byte() {
    const TEXT: u64 = 0x28_0000;
    let mut asm = Asm::new();
    asm.write32(TEXT, u32::from_le_bytes(*b"abcd"))
        .mov_rsi(TEXT)
        .mov_ecx(4)
        .mov_dx(0x3f8)
        .rep_outsb()
        .exit(0);
    let (outcome, console) = run_program(&asm, 1);
    assert_eq!(outcome.reason, StopReason::DebugExit(0));
    assert_eq!(console, "abcd");
}

#[test]
fn rep_insb_reads_the_port_once_per_byte() {
    // KVM batches `rep ins` into one exit of several accesses. The UART's
    // line status register reads 0x60 (transmitter empty) each time; one
    // 8-byte access instead would read 0x60 and seven zeros.
    const BUF: u64 = 0x28_0000;
    let mut asm = Asm::new();
    asm.mov_rdi(BUF)
        .mov_ecx(8)
        .mov_dx(0x3fd)
        .rep_insb()
        .print32(BUF)
        .print32(BUF + 4)
        .exit(0);
    let (outcome, console) = run_program(&asm, 1);
    assert_eq!(outcome.reason, StopReason::DebugExit(0));
    assert_eq!(console.as_bytes(), [0x60; 8]);
    assert_eq!(outcome.unhandled_exits, 0);
}

#[test]
fn unmapped_mmio_reads_return_all_ones_to_the_guest() {
    let mut asm = Asm::new();
    asm.mov_rbx(0xdead_0000).load32_eax_rbx().exit_with_al();
    let (outcome, _) = run_program(&asm, 1);
    assert_eq!(outcome.reason, StopReason::DebugExit(0xff));
    assert!(outcome.unhandled_exits >= 1);
}

#[test]
fn unmapped_port_reads_return_all_ones_to_the_guest() {
    let mut asm = Asm::new();
    asm.mov_dx(0x1234).in_al_dx().exit_with_al();
    let (outcome, _) = run_program(&asm, 1);
    assert_eq!(outcome.reason, StopReason::DebugExit(0xff));
}

#[test]
fn odd_sized_and_straddling_accesses_do_not_stop_the_cell() {
    let mut asm = Asm::new();
    // 8-byte write straddling the end of the debug-exit window into the boot timer.
    asm.mov_rbx(0xd000_0ffc)
        .mov_rax(0x1111_2222_3333_4444)
        .store64_rbx_rax();
    // 8-byte and 2-byte reads of the UART ports, 4-byte port read straddling its end.
    asm.mov_rbx(0xd000_0ff8).load64_rax_rbx();
    asm.mov_dx(0x3fe).in_eax_dx();
    asm.mov_dx(0x3ff).mov_rax(0xabcd).out_dx_ax();
    // Unaligned and wide accesses to unmapped MMIO and to a device's middle.
    asm.mov_rbx(0xdead_0003).load16_ax_rbx().store16_rbx_ax();
    asm.mov_rbx(0xd000_1001).load32_eax_rbx().store32_rbx_eax();
    asm.puts("survived\n").exit(7);
    let (outcome, console) = run_program(&asm, 1);
    assert_eq!(console, "survived\n");
    assert_eq!(outcome.reason, StopReason::DebugExit(7));
    assert!(outcome.unhandled_exits >= 3, "{outcome:?}");
}

#[test]
fn triple_fault_stops_the_cell_as_a_guest_crash() {
    let mut asm = Asm::new();
    asm.ud2();
    let (outcome, _) = run_program(&asm, 1);
    assert!(
        matches!(outcome.reason, StopReason::GuestCrash(ref why) if why.contains("triple fault")),
        "{:?}",
        outcome.reason
    );
    assert_eq!(outcome.reason.exit_code(), 3);
}

#[test]
fn i8042_reset_stops_the_cell_as_a_reset() {
    let mut asm = Asm::new();
    asm.mov_dx(0x64).mov_al(0xfe).out_dx_al().spin();
    let (outcome, _) = run_program(&asm, 1);
    assert_eq!(outcome.reason, StopReason::GuestReset);
    assert_eq!(outcome.reason.exit_code(), 0);
}

#[test]
fn boot_timer_write_is_recorded() {
    let mut asm = Asm::new();
    asm.mov_rbx(0xd000_1000)
        .mov_rax(0x1234_5678)
        .store32_rbx_eax()
        .exit(0);
    let (outcome, _) = run_program(&asm, 1);
    assert_eq!(outcome.boot_marks.len(), 1);
    assert_eq!(outcome.reason, StopReason::DebugExit(0));
}

#[test]
fn boot_timer_ignores_wrong_values_and_sizes() {
    let mut asm = Asm::new();
    asm.mov_rbx(0xd000_1000)
        .mov_rax(0x1234_5679)
        .store32_rbx_eax();
    asm.mov_rax(0x1234_5678).store64_rbx_rax();
    asm.exit(0);
    let (outcome, _) = run_program(&asm, 1);
    assert!(outcome.boot_marks.is_empty());
}

#[test]
fn console_input_sent_while_the_guest_polls_reaches_its_uart() {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let mut asm = Asm::new();
    asm.putc(b'?').getc().exit_with_al();
    let elf = write_elf(dir.path(), "echo.elf", &asm);
    let cfg = config_for(elf, 1);
    let (reader, mut writer) = std::io::pipe().unwrap();
    let (capture, first_byte) = Capture::new();
    let input = std::fs::File::from(std::os::fd::OwnedFd::from(reader));
    let cell = Cell::new(cfg, io(&capture, Some(input)), Instant::now()).unwrap();
    let runner = std::thread::spawn(move || cell.run());
    // Send only once the guest has printed its prompt and is polling LSR.
    first_byte.recv().unwrap();
    writer.write_all(b"A").unwrap();
    let outcome = runner.join().unwrap().unwrap();
    assert_eq!(outcome.reason, StopReason::DebugExit(b'A'));
}

#[test]
fn external_stop_kicks_every_vcpu_out_of_kvm_run() {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let mut asm = Asm::new();
    asm.putc(b'!').spin();
    let elf = write_elf(dir.path(), "spin.elf", &asm);
    let cfg = config_for(elf, 2);
    let (capture, first_byte) = Capture::new();
    let cell = Cell::new(cfg, io(&capture, None), Instant::now()).unwrap();
    let stop = cell.stop_handle();
    let runner = std::thread::spawn(move || cell.run());
    // The guest is running once it has printed; then stop it from outside.
    first_byte.recv().unwrap();
    stop.stop(StopReason::Signal(libc::SIGTERM));
    let outcome = runner.join().unwrap().unwrap();
    assert_eq!(outcome.reason, StopReason::Signal(libc::SIGTERM));
    assert_eq!(outcome.reason.exit_code(), 143);
}

#[test]
fn empty_pci_config_space_reads_all_ones() {
    let mut asm = Asm::new();
    // Vendor ID of bus 0 device 0 through the bridge's ECAM window.
    asm.mov_rbx(0xe000_0000).load32_eax_rbx().exit_with_al();
    let (outcome, _) = run_with_config(&asm, |cfg| {
        cfg.pci_bridges.push(PciBridgeConfig {
            id: "pci0".into(),
            state: cellvm::config::DeviceState::Okay,
            kind: PciHostKind::Ecam,
            config_base: Some(0xe000_0000),
            bus_start: 0,
            bus_end: 0,
            mmio32: None,
            mmio64: None,
            devices: vec![],
        })
    });
    assert_eq!(outcome.reason, StopReason::DebugExit(0xff));
    assert_eq!(outcome.unhandled_exits, 0);
}

/// Walks a bridge's config space from the guest: IDs, BAR sizing, BAR
/// programming, memory decode, the test device's registers and INTx.
fn pci_walk(kind: PciHostKind, config_base: u64, devfn_shift: u32) {
    use cellvm::config::{PciDeviceConfig, PciDeviceKind};
    require_kvm();
    let f1 = config_base + (1 << devfn_shift); // 00:01.0
    let f2 = config_base + (2 << devfn_shift); // 00:02.0 (absent)
    let bar_addr = 0xc000_0000u64;
    let mut asm = Asm::new();
    asm.print32(f1); // vendor/device
    asm.print32(f2); // absent: all ones
    asm.write32(f1 + 0x10, 0xffff_ffff).print32(f1 + 0x10); // BAR0 size mask
    asm.write32(f1 + 0x10, bar_addr as u32);
    asm.print32(bar_addr); // decode still off: unmapped, all ones
    asm.write32(f1 + 0x04, 0x2); // memory decode on
    asm.print32(bar_addr); // magic
    asm.write32(bar_addr + 4, 0xabcd_1234).print32(bar_addr + 4); // scratch
    asm.print32(bar_addr + 0xc); // write counter
    asm.write32(bar_addr + 8, 1); // raise INTx
    asm.print32(f1 + 0x04); // command, and the status register's interrupt bit
    asm.exit(0);

    let dir = tempfile::tempdir().unwrap();
    let elf = write_elf(dir.path(), "pci.elf", &asm);
    let mut cfg = config_for(elf, 1);
    cfg.pci_bridges.push(PciBridgeConfig {
        id: "pci0".into(),
        state: cellvm::config::DeviceState::Okay,
        kind,
        config_base: Some(config_base),
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
    });
    let (capture, _) = Capture::new();
    let cell = Cell::new(cfg, io(&capture, None), Instant::now()).unwrap();
    let bridge = cell.pci_bridges()[0].clone();
    let outcome = run_cell(cell);
    assert_eq!(outcome.reason, StopReason::DebugExit(0));
    let bytes = capture.bytes.lock().unwrap().clone();
    let words: Vec<u32> = bytes
        .chunks(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(
        words,
        vec![
            0x00ce_1b36,
            0xffff_ffff,
            0xffff_f000,
            0xffff_ffff,
            u32::from_le_bytes(*b"CVTD"),
            0xabcd_1234,
            1,
            // Status: capabilities (bit 4) and interrupt (bit 3); command:
            // memory decode.
            0x0018_0002,
        ]
    );
    let bridge = bridge.lock().unwrap();
    // An ECAM window is read from its mirror where KVM has read-only
    // slots: the reads above (the status bit set by the device and the
    // absent 00:02.0 included) came from it. CAM functions are smaller than
    // a page: never mirrored.
    let readonly = kvm_ioctls::Kvm::new()
        .unwrap()
        .check_extension(kvm_ioctls::Cap::ReadonlyMem);
    assert_eq!(
        bridge.is_mirrored(cellvm::pci::PciAddress::new(0, 1, 0).unwrap()),
        kind == PciHostKind::Ecam && readonly && cfg!(target_arch = "x86_64")
    );
    // Swizzle: INTA of device 1 lands on the bridge's second pin.
    assert!(bridge.intx_level(1), "INTA of slot 1 should be asserted");
    assert!(!bridge.intx_level(0));
    assert_eq!(bridge.bad_accesses(), 0);
}

#[test]
fn guest_enumerates_and_drives_the_test_device_through_ecam() {
    pci_walk(PciHostKind::Ecam, 0xe000_0000, 15);
}

#[test]
fn guest_enumerates_and_drives_the_test_device_through_cam() {
    pci_walk(PciHostKind::Cam, 0xe010_0000, 11);
}

/// Programs an ivshmem function at 00:01.0 (BAR0 registers, BAR2 shared
/// memory) and enables memory decode.
fn ivshmem_setup(asm: &mut Asm, ecam: u64, bar0: u64, bar2: u64) {
    let f = ecam + (1 << 15);
    asm.write32(f + 0x10, bar0 as u32);
    asm.write32(f + 0x18, bar2 as u32);
    asm.write32(f + 0x1c, 0);
    asm.write32(f + 0x04, 0x2);
}

/// Spins until the dword at `addr` is non-zero; leaves it in EAX.
fn wait_nonzero(asm: &mut Asm, addr: u64) {
    asm.mov_rbx(addr);
    let spin = asm.code.len();
    asm.load32_eax_rbx();
    asm.code.extend_from_slice(&[0x85, 0xc0]); // test eax, eax
    let back = spin as i64 - (asm.code.len() as i64 + 2);
    asm.code.extend_from_slice(&[0x74, back as i8 as u8]); // jz spin
}

fn ivshmem_cell(elf: std::path::PathBuf, region: &str, peer: u16) -> CellConfig {
    use cellvm::config::{IvshmemConfig, PciDeviceConfig, PciDeviceKind};
    let mut cfg = config_for(elf, 1);
    cfg.pci_bridges.push(PciBridgeConfig {
        id: "pci0".into(),
        state: cellvm::config::DeviceState::Okay,
        kind: PciHostKind::Ecam,
        config_base: Some(0xe000_0000),
        bus_start: 0,
        bus_end: 0,
        mmio32: None,
        mmio64: None,
        devices: vec![PciDeviceConfig {
            bus: 0,
            slot: 1,
            function: 0,
            kind: PciDeviceKind::Ivshmem(IvshmemConfig {
                region: region.into(),
                peer_id: peer,
                max_peers: 2,
                rw_size: 0x1_0000,
                output_size: 0x1000,
            }),
        }],
    });
    cfg
}

#[test]
fn two_cells_share_ivshmem_memory_and_see_each_others_state() {
    require_kvm();
    let (bar0, bar2) = (0xc000_0000u64, 0xc010_0000u64);
    let region = format!("kvmtest-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();

    // Peer 0: publish state 1, write a marker into the R/W section, wait
    // for peer 1's acknowledgement (a stopping peer's state drops to 0).
    let mut a = Asm::new();
    ivshmem_setup(&mut a, 0xe000_0000, bar0, bar2);
    a.write32(bar0 + 0x10, 1);
    a.write32(bar2 + 0x1000, 0x600d_cafe);
    wait_nonzero(&mut a, bar2 + 0x1004);
    a.exit(0);
    // Peer 1: wait for the marker, print it, peer 0's state from the state
    // table and its own ID register, then acknowledge.
    let mut b = Asm::new();
    ivshmem_setup(&mut b, 0xe000_0000, bar0, bar2);
    wait_nonzero(&mut b, bar2 + 0x1000);
    b.put_eax();
    b.print32(bar2); // state of peer 0
    b.print32(bar0); // own ID register
    b.write32(bar2 + 0x1004, 1);
    b.exit(0);

    let cell_a = ivshmem_cell(write_elf(dir.path(), "a.elf", &a), &region, 0);
    let cell_b = ivshmem_cell(write_elf(dir.path(), "b.elf", &b), &region, 1);
    let (cap_a, _) = Capture::new();
    let (cap_b, _) = Capture::new();
    let a = Cell::new(cell_a, io(&cap_a, None), Instant::now()).unwrap();
    let b = Cell::new(cell_b, io(&cap_b, None), Instant::now()).unwrap();
    let tb = std::thread::spawn(move || b.run());
    let ta = std::thread::spawn(move || a.run());
    assert_eq!(ta.join().unwrap().unwrap().reason, StopReason::DebugExit(0));
    assert_eq!(tb.join().unwrap().unwrap().reason, StopReason::DebugExit(0));
    let bytes = cap_b.bytes.lock().unwrap().clone();
    let words: Vec<u32> = bytes
        .chunks(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(words, vec![0x600d_cafe, 1, 1]);
}

// ---- virtio fast path: queue notifications through ioeventfds ----

/// One 16-byte device-writable buffer in descriptor 0, offered on the
/// available ring (guest RAM writes: no exits).
fn offer_one_buffer(asm: &mut Asm) {
    asm.write32(VQ_DESC, VQ_BUF as u32);
    asm.write32(VQ_DESC + 4, 0);
    asm.write32(VQ_DESC + 8, 16); // len
    asm.write32(VQ_DESC + 12, 2); // flags WRITE, next 0
    asm.write32(VQ_AVAIL + 4, 0); // ring[0] = descriptor 0
    asm.write32(VQ_AVAIL, 1 << 16); // flags 0, idx 1
}

/// Waits until the used ring's index moved, prints the used length (4
/// bytes) and exits with 0.
fn collect_and_exit(asm: &mut Asm) {
    wait_nonzero(asm, VQ_USED);
    asm.print32(VQ_USED + 8);
    asm.exit(0);
}

fn rng_cell_config(asm: &Asm, dir: &std::path::Path) -> CellConfig {
    use cellvm::config::{VirtioBackendConfig, VirtioKind, VirtioMmioConfig};
    let mut cfg = config_for(write_elf(dir, "virtio.elf", asm), 1);
    cfg.virtio_mmio.push(VirtioMmioConfig {
        id: "rng0".into(),
        state: cellvm::config::DeviceState::Okay,
        kind: VirtioKind::Rng,
        base: Some(0xd010_0000),
        irq: None,
        backend: VirtioBackendConfig::default(),
    });
    cfg
}

fn run_config(cfg: CellConfig) -> (RunOutcome, Vec<u8>) {
    require_kvm();
    let (capture, _first) = Capture::new();
    let cell = Cell::new(cfg, io(&capture, None), Instant::now()).expect("build cell");
    let outcome = run_cell(cell);
    let bytes = capture.bytes.lock().unwrap().clone();
    (outcome, bytes)
}

#[test]
fn virtio_mmio_queue_notify_is_served_without_an_exit_to_cellvm() {
    let base = 0xd010_0000u64;
    let mut asm = Asm::new();
    virtio_mmio_driver_setup(&mut asm, base);
    offer_one_buffer(&mut asm);
    asm.write32(base + 0x050, 0); // QUEUE_NOTIFY: queue 0, caught by KVM
    collect_and_exit(&mut asm);
    let dir = tempfile::tempdir().unwrap();
    let (outcome, console) = run_config(rng_cell_config(&asm, dir.path()));
    assert_eq!(outcome.reason, StopReason::DebugExit(0));
    assert_eq!(
        console,
        16u32.to_le_bytes(),
        "used length of the rng buffer"
    );
    // The 12 register writes and the debug-exit write exited; the notify
    // did not (it would make 14).
    assert_eq!(outcome.mmio_exits, 13, "{outcome:?}");
}

#[test]
fn virtio_pci_notify_ioeventfds_follow_bar0_where_the_guest_maps_it() {
    use cellvm::config::{
        PciDeviceConfig, PciDeviceKind, VirtioBackendConfig, VirtioKind, VirtioPciConfig,
    };
    let ecam = 0xe000_0000u64;
    let f = ecam + (1 << 15); // 00:01.0
    let bar0 = 0xc000_0000u64;
    let mut asm = Asm::new();
    let mut mmio_writes = 0u64;
    let mut w32 = |asm: &mut Asm, addr: u64, v: u32| {
        asm.write32(addr, v);
        mmio_writes += 1;
    };
    // BAR0 first at another address, then moved: the ioeventfds must follow.
    w32(&mut asm, f + 0x10, 0xc000_8000);
    w32(&mut asm, f + 0x04, 0x6); // memory decode + bus master
    w32(&mut asm, f + 0x04, 0x0);
    w32(&mut asm, f + 0x10, bar0 as u32);
    w32(&mut asm, f + 0x04, 0x6);
    let w8 = |asm: &mut Asm, addr: u64, v: u8| {
        asm.mov_rbx(addr).mov_al(v).store8_rbx_al();
    };
    let w16 = |asm: &mut Asm, addr: u64, v: u16| {
        asm.mov_rbx(addr).mov_rax(u64::from(v)).store16_rbx_ax();
    };
    w8(&mut asm, bar0 + 0x14, 1); // device_status
    w8(&mut asm, bar0 + 0x14, 3);
    w32(&mut asm, bar0 + 0x08, 1); // driver_feature_select
    w32(&mut asm, bar0 + 0x0c, 1); // VERSION_1
    w8(&mut asm, bar0 + 0x14, 0xb);
    w16(&mut asm, bar0 + 0x16, 0); // queue_select
    w16(&mut asm, bar0 + 0x18, 16); // queue_size
    w32(&mut asm, bar0 + 0x20, VQ_DESC as u32);
    w32(&mut asm, bar0 + 0x28, VQ_AVAIL as u32);
    w32(&mut asm, bar0 + 0x30, VQ_USED as u32);
    w16(&mut asm, bar0 + 0x1c, 1); // queue_enable
    w8(&mut asm, bar0 + 0x14, 0xf);
    offer_one_buffer(&mut asm);
    // The driver's notification: a 16-bit write of the queue index.
    asm.mov_rbx(bar0 + 0x3000).mov_rax(0).store16_rbx_ax();
    collect_and_exit(&mut asm);
    let byte_and_word_writes = 7;

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config_for(write_elf(dir.path(), "virtio-pci.elf", &asm), 1);
    cfg.pci_bridges.push(PciBridgeConfig {
        id: "pci0".into(),
        state: cellvm::config::DeviceState::Okay,
        kind: PciHostKind::Ecam,
        config_base: Some(ecam),
        bus_start: 0,
        bus_end: 0,
        mmio32: None,
        mmio64: None,
        devices: vec![PciDeviceConfig {
            bus: 0,
            slot: 1,
            function: 0,
            kind: PciDeviceKind::Virtio(VirtioPciConfig {
                kind: VirtioKind::Rng,
                backend: VirtioBackendConfig::default(),
            }),
        }],
    });
    let (outcome, console) = run_config(cfg);
    assert_eq!(outcome.reason, StopReason::DebugExit(0));
    assert_eq!(
        console,
        16u32.to_le_bytes(),
        "used length of the rng buffer"
    );
    // Every register write and the debug-exit write exited; the notify did not.
    assert_eq!(
        outcome.mmio_exits,
        mmio_writes + byte_and_word_writes + 1,
        "{outcome:?}"
    );
}

#[test]
fn virtio_mmio_queue_notify_exits_to_cellvm_with_ioeventfd_off() {
    let base = 0xd010_0000u64;
    let mut asm = Asm::new();
    virtio_mmio_driver_setup(&mut asm, base);
    offer_one_buffer(&mut asm);
    asm.write32(base + 0x050, 0);
    collect_and_exit(&mut asm);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = rng_cell_config(&asm, dir.path());
    cfg.virtio_mmio[0].backend.ioeventfd = false;
    let (outcome, console) = run_config(cfg);
    assert_eq!(outcome.reason, StopReason::DebugExit(0));
    assert_eq!(
        console,
        16u32.to_le_bytes(),
        "served on the vCPU thread instead"
    );
    // 12 register writes, the notify and the debug-exit write.
    assert_eq!(outcome.mmio_exits, 14, "{outcome:?}");
}

#[test]
fn channel_mailboxes_are_guest_memory_and_the_host_mailbox_is_read_only() {
    use cellvm::channel::protocol as proto;
    use cellvm::platform::CHANNEL_BASE;
    let h2g = CHANNEL_BASE + proto::H2G_OFFSET;
    let g2h = CHANNEL_BASE + proto::G2H_OFFSET;
    let mut asm = Asm::new();
    asm.mov_rbx(g2h).mov_rax(0x5a).store64_rbx_rax(); // memory: no exit
    asm.mov_rbx(h2g).mov_rax(0x1234_5678).store64_rbx_rax(); // read-only slot: one exit, ignored
    for i in 0..16 {
        asm.mov_rbx(h2g + 8 * i).load64_rax_rbx(); // memory: no exits
    }
    asm.print32(h2g); // what the guest reads back: the host's bytes (zero)
    asm.mov_rbx(g2h).load8_al_rbx().exit_with_al();
    let (outcome, console) = run_program(&asm, 1);
    assert_eq!(outcome.reason, StopReason::DebugExit(0x5a));
    assert_eq!(
        console.as_bytes(),
        [0u8; 4],
        "the guest's write to the host mailbox stuck"
    );
    // The store to the read-only host→guest mailbox and the debug-exit write;
    // the 16 mailbox loads, the guest→host store and load did not exit.
    assert_eq!(outcome.mmio_exits, 2, "{outcome:?}");
}

#[test]
fn a_boot_time_uart_table_serves_its_port_and_writes_its_output_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("com2.log");
    let mut asm = Asm::new();
    for b in b"to com2" {
        asm.mov_dx(0x2f8).mov_al(*b).out_dx_al();
    }
    asm.exit(0);
    let path = out.clone();
    let (outcome, _) = run_with_config(&asm, move |cfg| {
        cfg.uarts.push(cellvm::config::UartConfig {
            id: "com2".into(),
            state: cellvm::config::DeviceState::Okay,
            port: None,
            irq: None,
            path: Some(path),
        });
    });
    assert_eq!(outcome.reason.exit_code(), 0);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "to com2");
}

/// Runs a halting guest with its control API at `socket` on a thread; the
/// returned handle stops it.
fn serve_halting_cell(
    socket: &std::path::Path,
    elf_dir: &std::path::Path,
) -> (
    cellvm::stop::StopHandle,
    std::thread::JoinHandle<RunOutcome>,
) {
    require_kvm();
    let mut asm = Asm::new();
    asm.halt_forever();
    let elf = write_elf(elf_dir, "guest.elf", &asm);
    let cfg = config_for(elf, 1);
    let (capture, _first) = Capture::new();
    let mut cell_io = io(&capture, None);
    cell_io.api_socket = Some(socket.to_path_buf());
    let cell = Cell::new(cfg, cell_io, Instant::now()).expect("build cell");
    let stop = cell.stop_handle();
    let runner = std::thread::spawn(move || cell.run().expect("run cell"));
    // Wait (bounded) until the API answers.
    let ready = (0..500).any(|_| {
        let ok = cellvm::api::client::call(
            socket,
            &cellvm::api::Request::Status {},
            std::time::Duration::from_secs(1),
        )
        .is_ok();
        if !ok {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        ok
    });
    assert!(ready, "the control API never answered");
    (stop, runner)
}

#[test]
fn a_refused_attach_leaves_no_file_behind_and_keeps_files_it_did_not_create() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run").join("cell.sock");
    let (stop, runner) = serve_halting_cell(&socket, dir.path());
    let attach = |device: serde_json::Value| {
        cellvm::api::client::call(
            &socket,
            &cellvm::api::Request::Attach {
                device: toml::Value::try_from(device).unwrap(),
                base_dir: Some(dir.path().to_path_buf()),
                timeout_ms: Some(500),
            },
            std::time::Duration::from_secs(10),
        )
        .unwrap()
    };
    // No agent in this guest: every attach is refused after its model was
    // built (files created), and must be rolled back.
    let r = attach(serde_json::json!({"uart": [{"id": "u1", "path": "u1.out"}]}));
    assert!(!r.ok, "{r:?}");
    let r = attach(
        serde_json::json!({"virtio_mmio": [{"id": "c1", "kind": "console", "socket": "c1.sock"}]}),
    );
    assert!(!r.ok, "{r:?}");
    let r = attach(
        serde_json::json!({"virtio_mmio": [{"id": "c2", "kind": "console", "path": "c2.log"}]}),
    );
    assert!(!r.ok, "{r:?}");
    for f in ["u1.out", "c1.sock", "c2.log"] {
        assert!(!dir.path().join(f).exists(), "{f} was left behind");
    }
    // A file that was there before is the user's: kept.
    std::fs::write(dir.path().join("mine.log"), "keep me").unwrap();
    let r = attach(serde_json::json!({"uart": [{"id": "u2", "path": "mine.log"}]}));
    assert!(!r.ok);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("mine.log")).unwrap(),
        "keep me"
    );
    stop.stop(StopReason::Error("test over".into()));
    runner.join().unwrap();
    assert!(!socket.exists(), "the control socket goes with the cell");
}
