//! Seccomp filters end to end (docs/security.md). A violation ends the whole
//! process, so every case runs in a child process: this test binary again,
//! running only [`child_scenario`] with the scenario in an environment
//! variable. The parent checks how the child ended and what it printed.
//!
//! The vCPU-thread cases use the same spawn helper as cellvm's vCPU threads
//! (`seccomp::spawn` with the vCPU filter); the last two run a real cell on
//! the host's /dev/kvm and read every thread's seccomp state from /proc.

// Test code: a failed step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use cellvm::seccomp::{self, Filters, ThreadKind, EXIT_BAD_SYSCALL};
use std::process::{Command, Output};
use std::sync::Arc;

const SCENARIO: &str = "CELLVM_SECCOMP_SCENARIO";

/// An eventfd made before any filter, as the VMM makes them at setup.
static EVENT: std::sync::OnceLock<vmm_sys_util::eventfd::EventFd> = std::sync::OnceLock::new();

/// Runs `scenario` in a child process.
fn child(scenario: &str) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_scenario",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SCENARIO, scenario)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that `out` is a child stopped by its filter for system call `nr`
/// on a `kind` thread, before it could report surviving the call.
fn assert_stopped(out: &Output, kind: ThreadKind, nr: i64) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(i32::from(EXIT_BAD_SYSCALL)),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let line = format!("cellvm: seccomp: forbidden system call {nr} on a {kind} thread; stopping (exit status 159, docs/security.md)");
    assert!(stderr.contains(&line), "no {line:?} in:\n{stderr}");
    assert!(!stdout.contains("survived"), "{stdout}");
}

/// Asserts that `out` is a child that finished its scenario.
fn assert_finished(out: &Output) -> String {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("scenario done"), "{stdout}");
    stdout
}

/// What a filtered thread does in the child.
fn act(action: &str) {
    match action {
        // Outside every list (the API allows AF_UNIX sockets only).
        "inet-socket" => {
            // SAFETY: plain system call; the descriptor is leaked.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            println!("survived: socket returned {fd}");
        }
        "unix-socket" => {
            // SAFETY: plain system call; the descriptor is leaked.
            let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
            assert!(fd >= 0);
        }
        // What a vCPU thread does between exits: console output, the clock,
        // the allocator, locks, an eventfd it was given.
        "vcpu-work" => {
            let v: Vec<String> = (0..1000).map(|i| format!("{i}")).collect();
            let m = std::sync::Mutex::new(v.len());
            let e = EVENT.get().unwrap();
            e.write(*m.lock().unwrap() as u64).unwrap();
            assert_eq!(e.read().unwrap(), 1000);
            let _ = std::time::Instant::now().elapsed();
            println!("vcpu work done");
        }
        // An ioctl that is not one of the vCPU's KVM requests.
        "tty-ioctl" => {
            // SAFETY: termios is plain data the kernel fills (or not).
            let mut t: libc::termios = unsafe { std::mem::zeroed() };
            // SAFETY: valid pointer to a termios.
            let r = unsafe { libc::ioctl(0, libc::TCGETS, &mut t) };
            println!("survived: ioctl returned {r}");
        }
        // Making memory executable.
        "exec-memory" => {
            let page = Box::new([0u8; 8192]);
            let addr = (page.as_ptr() as usize + 4095) & !4095;
            // SAFETY: a page inside our own allocation; were it allowed,
            // only its protection would change.
            let r = unsafe {
                libc::mprotect(
                    addr as *mut libc::c_void,
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                )
            };
            println!("survived: mprotect returned {r}");
        }
        // A signal other than the vCPU kick.
        "other-signal" => {
            // SAFETY: plain system calls; SIGUSR1 to ourselves would end
            // the process with another status if it were allowed.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_tgkill,
                    libc::getpid(),
                    libc::gettid(),
                    libc::SIGUSR1,
                )
            };
            println!("survived: tgkill returned {r}");
        }
        // What an attach of an ECAM bridge does for its config-space
        // mirror: the window (the first one creates the all-ones memfd) and
        // a function's page placed in it and taken back.
        "mirror-window" => {
            let window = cellvm::pci::MirrorWindow::new(1 << 20).unwrap();
            let page = cellvm::pci::MirrorPage::new().unwrap();
            page.store(0, 0x00ce_1b36);
            window.place(0x8000, &page).unwrap();
            assert_eq!(window.load(0x8000), 0x00ce_1b36);
            window.clear(0x8000).unwrap();
            assert_eq!(window.load(0x8000), u32::MAX);
            println!("mirror window built");
        }
        other => panic!("unknown action {other}"),
    }
}

/// The body of every child process (does nothing in a normal test run).
/// Scenario `KIND:ACTION` spawns a thread under KIND's filter that does
/// ACTION; `api-then-worker:ACTION` starts, from a thread under the API
/// filter, a thread that stacks the virtio-worker filter and does ACTION;
/// `cell-threads:on|off` runs a cell and prints its threads' seccomp state.
#[test]
fn child_scenario() {
    let Ok(scenario) = std::env::var(SCENARIO) else {
        return;
    };
    let (what, action) = scenario.split_once(':').unwrap();
    let action = action.to_string();
    EVENT.get_or_init(|| vmm_sys_util::eventfd::EventFd::new(0).unwrap());
    let filters = Arc::new(Filters::compile(libc::SIGRTMIN()).unwrap());
    match what {
        "cell-threads" => cell_threads(action == "on"),
        "api-then-worker" => {
            let inner = filters.clone();
            seccomp::spawn(
                std::thread::Builder::new().name("api".into()),
                ThreadKind::Api,
                Some(&filters),
                move || {
                    // Started under the API filter (clone3 answers ENOSYS,
                    // glibc falls back to clone with CLONE_THREAD).
                    seccomp::spawn(
                        std::thread::Builder::new().name("worker".into()),
                        ThreadKind::VirtioWorker,
                        Some(&inner),
                        move || act(&action),
                    )
                    .unwrap()
                    .join()
                    .unwrap();
                },
            )
            .unwrap()
            .join()
            .unwrap();
        }
        kind => {
            let kind = ThreadKind::ALL
                .into_iter()
                .find(|k| k.name() == kind)
                .unwrap();
            seccomp::spawn(
                std::thread::Builder::new(),
                kind,
                Some(&filters),
                move || act(&action),
            )
            .unwrap()
            .join()
            .unwrap();
        }
    }
    println!("scenario done");
}

#[test]
fn a_forbidden_system_call_on_a_vcpu_thread_ends_the_process_with_status_159() {
    assert_stopped(
        &child("vcpu:inet-socket"),
        ThreadKind::Vcpu,
        libc::SYS_socket,
    );
}

#[test]
fn a_vcpu_thread_does_its_work_under_its_filter() {
    let out = assert_finished(&child("vcpu:vcpu-work"));
    assert!(out.contains("vcpu work done"), "{out}");
}

#[test]
fn every_thread_kind_stops_a_network_socket() {
    for kind in ThreadKind::ALL {
        let out = child(&format!("{}:inet-socket", kind.name()));
        assert_stopped(&out, kind, libc::SYS_socket);
    }
}

#[test]
fn the_api_filter_allows_unix_sockets_only() {
    assert_finished(&child("api:unix-socket"));
    assert_stopped(&child("api:inet-socket"), ThreadKind::Api, libc::SYS_socket);
}

#[test]
fn the_api_filter_lets_an_attach_build_a_pci_config_mirror() {
    let out = assert_finished(&child("api:mirror-window"));
    assert!(out.contains("mirror window built"), "{out}");
}

#[test]
fn the_vcpu_filter_allows_kvm_ioctls_only() {
    assert_stopped(&child("vcpu:tty-ioctl"), ThreadKind::Vcpu, libc::SYS_ioctl);
}

#[test]
fn no_thread_may_make_memory_executable() {
    for kind in ThreadKind::ALL {
        let out = child(&format!("{}:exec-memory", kind.name()));
        assert_stopped(&out, kind, libc::SYS_mprotect);
    }
}

#[test]
fn the_control_thread_may_send_only_the_vcpu_kick() {
    assert_stopped(
        &child("control:other-signal"),
        ThreadKind::Control,
        libc::SYS_tgkill,
    );
}

#[test]
fn a_worker_started_from_an_api_thread_stacks_its_own_narrower_filter() {
    // The worker's thread starts under the API filter (thread creation must
    // pass it) and then installs its own: what the API may do but a worker
    // may not (an AF_UNIX socket) stops it.
    assert_stopped(
        &child("api-then-worker:unix-socket"),
        ThreadKind::VirtioWorker,
        libc::SYS_socket,
    );
    let out = assert_finished(&child("api-then-worker:vcpu-work"));
    assert!(out.contains("vcpu work done"), "{out}");
}

// ---- every thread of a running cell ----

/// One line per thread of the cell: `thread NAME seccomp=MODE filters=N`,
/// from /proc/self/task/*/status.
fn thread_states() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let Ok(name) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(dir.join("status")) else {
            continue;
        };
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        out.push((
            name.trim().to_string(),
            field("Seccomp:"),
            field("Seccomp_filters:"),
        ));
    }
    out.sort();
    out
}

const CELL_THREADS: [&str; 5] = ["api", "cell-control", "console-in", "virtio-rng0", "vcpu0"];

/// Runs a halting cell with the control API, console input and a virtio
/// device, and prints the seccomp state of its threads once every one of
/// them is started and (with `on`) filtered.
fn cell_threads(on: bool) {
    use cellvm::vmm::{Cell, CellIo};
    let dir = tempfile::tempdir().unwrap();
    let mut asm = common::guest::Asm::new();
    asm.halt_forever();
    common::guest::write_elf(dir.path(), "guest.elf", &asm);
    let file = dir.path().join("cell.toml");
    // Cells claim their names host-wide (docs/partitioning.md) and these
    // child processes may run at the same time: one name each.
    std::fs::write(
        &file,
        format!(
            "name = \"seccomp-threads-{}\"\n[cpus]\ncount = 1\n[[memory]]\nsize = \"64M\"\n\
             [kernel]\npath = \"guest.elf\"\n[console]\noutput = \"none\"\ninput = \"none\"\n\
             [[virtio_mmio]]\nid = \"rng0\"\nkind = \"rng\"\n",
            std::process::id()
        ),
    )
    .unwrap();
    let cfg =
        cellvm::config::load(&file, &cellvm::config::LoadOptions { check_files: true }).unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    let io = CellIo {
        console_out: Box::new(std::io::sink()),
        console_in: Some(std::fs::File::from(std::os::fd::OwnedFd::from(reader))),
        handle_signals: false,
        stop: None,
        timeout: None,
        api_socket: Some(dir.path().join("cell.sock")),
        seccomp: on,
        claims: None,
    };
    let cell = Cell::new(cfg, io, std::time::Instant::now()).unwrap();
    let stop = cell.stop_handle();
    let runner = std::thread::Builder::new()
        .name("cell-control".into())
        .spawn(move || cell.run().unwrap())
        .unwrap();
    // The control thread filters itself after starting every other thread
    // (each of which is filtered before its spawn returns): wait, bounded,
    // until all are there and, with seccomp on, the control thread is
    // filtered too. There is no event to wait for from outside the cell.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let ready = |states: &[(String, String, String)]| {
        CELL_THREADS.iter().all(|name| {
            states
                .iter()
                .any(|(n, mode, _)| n == name && (!on || mode == "2"))
        })
    };
    let mut states = thread_states();
    while !ready(&states) {
        assert!(
            std::time::Instant::now() < deadline,
            "cell threads never all started: {states:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
        states = thread_states();
    }
    for (name, mode, filters) in &states {
        if CELL_THREADS.contains(&name.as_str()) {
            println!("thread {name} seccomp={mode} filters={filters}");
        }
    }
    stop.stop(cellvm::stop::StopReason::Error("test over".into()));
    drop(writer);
    let outcome = runner.join().unwrap();
    assert_eq!(outcome.reason.exit_code(), 1);
}

#[test]
fn every_thread_of_a_running_cell_is_under_its_kinds_filter() {
    assert!(std::path::Path::new("/dev/kvm").exists(), "needs /dev/kvm");
    let out = assert_finished(&child("cell-threads:on"));
    // The API thread has two programs (clone3 answers ENOSYS, then its
    // allow list); every other thread one.
    for (name, filters) in [
        ("api", 2),
        ("cell-control", 1),
        ("console-in", 1),
        ("virtio-rng0", 1),
        ("vcpu0", 1),
    ] {
        let line = format!("thread {name} seccomp=2 filters={filters}");
        assert!(out.contains(&line), "no {line:?} in:\n{out}");
    }
}

#[test]
fn with_seccomp_off_no_thread_is_filtered() {
    assert!(std::path::Path::new("/dev/kvm").exists(), "needs /dev/kvm");
    let out = assert_finished(&child("cell-threads:off"));
    for name in CELL_THREADS {
        let line = format!("thread {name} seccomp=0 filters=0");
        assert!(out.contains(&line), "no {line:?} in:\n{out}");
    }
}
