//! vCPU threads: run KVM_RUN, dispatch exits to the buses, stop on request.
//!
//! Pausing: each vCPU passes the cell's [`RunGate`] before every `KVM_RUN`
//! and parks there while the cell is paused (`vmm::gate`).
//!
//! Stopping: the control thread records a [`StopReason`] and sends each vCPU
//! thread [`kick_signal`]. The handler sets `immediate_exit` in that thread's
//! `kvm_run`, so a kick that lands just before `KVM_RUN` is not lost.

use super::gate::RunGate;
use crate::devices::Bus;
use crate::stop::{StopHandle, StopReason};
use kvm_bindings::kvm_run;
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

thread_local! {
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// The real-time signal used to kick vCPU threads out of `KVM_RUN`.
pub fn kick_signal() -> i32 {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn handle_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let run = KVM_RUN.with(|c| c.get());
    if !run.is_null() {
        // SAFETY: the pointer is set by this thread's vCPU loop to its own
        // live kvm_run mapping and cleared before the VcpuFd is dropped; the
        // handler runs on the same thread, so the mapping is alive here. A
        // volatile byte store is async-signal-safe.
        unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
    }
}

/// Installs the kick handler (process-wide; idempotent).
pub fn install_kick_handler() -> Result<(), vmm_sys_util::errno::Error> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), handle_kick)
}

/// One vCPU's exits by kind, for `cellvm stats`, benchmarks and
/// diagnostics.
#[derive(Debug, Default)]
pub struct ExitCounters {
    /// Port I/O exits.
    pub pio: AtomicU64,
    /// MMIO exits.
    pub mmio: AtomicU64,
    /// HLT exits.
    pub hlt: AtomicU64,
    /// `KVM_RUN` returns for a kick (pause, stop).
    pub interrupted: AtomicU64,
    /// Accesses no device served.
    pub unhandled: AtomicU64,
}

/// What a vCPU thread needs.
pub struct VcpuContext {
    /// vCPU index.
    pub index: usize,
    /// Host CPU to pin to.
    pub pin: Option<usize>,
    /// MMIO bus.
    pub mmio: Arc<Bus>,
    /// PIO bus.
    pub pio: Arc<Bus>,
    /// Stop handle.
    pub stop: StopHandle,
    /// This vCPU's exit statistics.
    pub counters: Arc<ExitCounters>,
    /// The cell's run gate (pause/resume).
    pub gate: Arc<RunGate>,
}

fn pin_to(cpu: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write inside it
    // (CPU_SET ignores out-of-range CPUs, which were rejected by the caller).
    let ret = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The vCPU thread body: runs until a stop is requested.
pub fn run_vcpu(mut vcpu: VcpuFd, ctx: VcpuContext) {
    if let Some(cpu) = ctx.pin {
        if let Err(e) = pin_to(cpu) {
            ctx.stop.stop(StopReason::Error(format!(
                "pinning vCPU {} to host CPU {cpu}: {e}",
                ctx.index
            )));
        }
    }
    let run_ptr: *mut kvm_run = vcpu.get_kvm_run();
    KVM_RUN.with(|c| c.set(run_ptr));
    ctx.gate.register_current();
    while !ctx.stop.is_stopped() {
        ctx.gate.pass();
        if ctx.stop.is_stopped() {
            break;
        }
        match vcpu.run() {
            Ok(exit) => {
                let io_size = if matches!(exit, VcpuExit::IoIn(..) | VcpuExit::IoOut(..)) {
                    // SAFETY: `run_ptr` is this vCPU's kvm_run mapping, alive
                    // as long as `vcpu`; KVM reported KVM_EXIT_IO, so `io` is
                    // the union member in use. The byte is copied through the
                    // raw pointer without making a reference; the only live
                    // reference into the mapping, the exit's data slice, lies
                    // at `io.data_offset` (the next page), not over `io`.
                    usize::from(unsafe {
                        std::ptr::addr_of!((*run_ptr).__bindgen_anon_1.io.size).read_volatile()
                    })
                } else {
                    0
                };
                handle_exit(exit, io_size, &ctx)
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                ctx.counters.interrupted.fetch_add(1, Ordering::Relaxed);
                vcpu.set_kvm_immediate_exit(0);
            }
            Err(e) => ctx.stop.stop(StopReason::Error(format!(
                "vCPU {}: KVM_RUN failed: {e}",
                ctx.index
            ))),
        }
    }
    KVM_RUN.with(|c| c.set(std::ptr::null_mut()));
}

/// Serves one exit. `io_size` is the width of a port I/O exit's accesses
/// (KVM's `io.size`): a string instruction (`rep ins`/`rep outs`) exits once
/// with `io.count` accesses back to back in the data buffer, and the device
/// must see each of them, in order, not one wide access.
fn handle_exit(exit: VcpuExit<'_>, io_size: usize, ctx: &VcpuContext) {
    // KVM's widths are 1, 2 or 4; 0 serves the buffer as one access.
    let width = |len: usize| if io_size == 0 { len.max(1) } else { io_size };
    let served = match exit {
        VcpuExit::IoIn(port, data) => {
            ctx.counters.pio.fetch_add(1, Ordering::Relaxed);
            let size = width(data.len());
            let mut served = true;
            for access in data.chunks_mut(size) {
                served &= ctx.pio.read(u64::from(port), access);
            }
            served
        }
        VcpuExit::IoOut(port, data) => {
            ctx.counters.pio.fetch_add(1, Ordering::Relaxed);
            let size = width(data.len());
            let mut served = true;
            for access in data.chunks(size) {
                served &= ctx.pio.write(u64::from(port), access);
            }
            served
        }
        VcpuExit::MmioRead(addr, data) => {
            ctx.counters.mmio.fetch_add(1, Ordering::Relaxed);
            ctx.mmio.read(addr, data)
        }
        VcpuExit::MmioWrite(addr, data) => {
            ctx.counters.mmio.fetch_add(1, Ordering::Relaxed);
            ctx.mmio.write(addr, data)
        }
        VcpuExit::Hlt => {
            ctx.counters.hlt.fetch_add(1, Ordering::Relaxed);
            true
        }
        VcpuExit::Shutdown => {
            ctx.stop.stop(StopReason::GuestCrash(format!(
                "vCPU {}: triple fault (KVM_EXIT_SHUTDOWN)",
                ctx.index
            )));
            true
        }
        VcpuExit::SystemEvent(kind, _) => {
            let reason = match kind {
                kvm_bindings::KVM_SYSTEM_EVENT_RESET => StopReason::GuestReset,
                kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => StopReason::GuestPowerOff,
                other => StopReason::GuestCrash(format!("KVM system event {other}")),
            };
            ctx.stop.stop(reason);
            true
        }
        VcpuExit::FailEntry(reason, cpu) => {
            ctx.stop.stop(StopReason::GuestCrash(format!(
                "vCPU {}: VM entry failed (reason {reason:#x}, host CPU {cpu})",
                ctx.index
            )));
            true
        }
        VcpuExit::InternalError => {
            ctx.stop.stop(StopReason::GuestCrash(format!(
                "vCPU {}: KVM internal error (often an instruction KVM cannot emulate)",
                ctx.index
            )));
            true
        }
        other => {
            ctx.stop.stop(StopReason::GuestCrash(format!(
                "vCPU {}: unexpected exit {other:?}",
                ctx.index
            )));
            true
        }
    };
    if !served {
        ctx.counters.unhandled.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::{BusDevice, BusKind};
    use std::sync::Mutex;

    /// Records every access: (is_write, bytes); reads return 1, 2, 3, ...
    #[derive(Default)]
    struct Recorder {
        log: Vec<(bool, Vec<u8>)>,
        next: u8,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, _offset: u64, data: &mut [u8]) {
            for b in data.iter_mut() {
                self.next += 1;
                *b = self.next;
            }
            self.log.push((false, data.to_vec()));
        }
        fn write(&mut self, _offset: u64, data: &[u8]) {
            self.log.push((true, data.to_vec()));
        }
    }

    fn context() -> (VcpuContext, Arc<Mutex<Recorder>>) {
        let pio = Arc::new(Bus::new(BusKind::Pio));
        let dev = Arc::new(Mutex::new(Recorder::default()));
        pio.insert("rec", 0x3f8, 8, dev.clone()).unwrap();
        let ctx = VcpuContext {
            index: 0,
            pin: None,
            mmio: Arc::new(Bus::new(BusKind::Mmio)),
            pio,
            stop: StopHandle::new().unwrap(),
            counters: Arc::new(ExitCounters::default()),
            gate: Arc::new(RunGate::new(false, 1)),
        };
        (ctx, dev)
    }

    #[test]
    fn rep_outsb_reaches_the_device_as_one_write_per_byte() {
        let (ctx, dev) = context();
        handle_exit(VcpuExit::IoOut(0x3f8, b"abcd"), 1, &ctx);
        let log = &dev.lock().unwrap().log;
        let expect: Vec<(bool, Vec<u8>)> = b"abcd".iter().map(|b| (true, vec![*b])).collect();
        assert_eq!(*log, expect);
        assert_eq!(ctx.counters.pio.load(Ordering::Relaxed), 1);
        assert_eq!(ctx.counters.unhandled.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn rep_insw_fills_the_buffer_with_one_read_per_word() {
        let (ctx, dev) = context();
        let mut buf = [0u8; 6];
        handle_exit(VcpuExit::IoIn(0x3f8, &mut buf), 2, &ctx);
        assert_eq!(buf, [1, 2, 3, 4, 5, 6]);
        let sizes: Vec<usize> = dev.lock().unwrap().log.iter().map(|a| a.1.len()).collect();
        assert_eq!(sizes, vec![2, 2, 2]);
    }

    #[test]
    fn single_port_access_is_one_access_of_its_width() {
        let (ctx, dev) = context();
        handle_exit(VcpuExit::IoOut(0x3f8, &[1, 2, 3, 4]), 4, &ctx);
        assert_eq!(dev.lock().unwrap().log, vec![(true, vec![1, 2, 3, 4])]);
    }
}
