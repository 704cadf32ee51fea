//! scripts/l1-watchdog.py against a fake QEMU human monitor: it wakes a vCPU
//! halted with a deliverable interrupt pending (QEMU TCG's lost wake-up,
//! docs/rig.md) and leaves a merely idle one alone; it pokes L1 whose
//! heartbeat stopped, halted or not, and quits QEMU when it stays silent.

// Test and benchmark code: a failed step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const PROMPT: &str = "(qemu) ";

/// What the fake vCPU looks like.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cpu {
    /// HLT=1, IF=1, IRR 236, nothing in service.
    LostWakeup,
    /// HLT=1, IF=1, nothing pending.
    Idle,
    /// Running.
    Running,
}

fn registers(cpu: Cpu) -> String {
    let (rfl, hlt) = match cpu {
        Cpu::LostWakeup | Cpu::Idle => ("00000206", 1),
        Cpu::Running => ("00000287", 0),
    };
    format!(
        "CPU#0\r\nRAX=0000000000000000\r\nRIP=ffffffff9a693f8f RFL={rfl} [-----P-] CPL=0 II=0 A20=1 SMM=0 HLT={hlt}\r\n"
    )
}

fn lapic(cpu: Cpu) -> String {
    let irr = if cpu == Cpu::LostWakeup {
        "236 "
    } else {
        "(none)"
    };
    format!("dumping local APIC state for CPU 0 \r\n\r\nISR\t (none)\r\nIRR\t {irr}\r\n\r\nAPR 0x00 TPR 0x10 DFR 0x0f LDR 0x00 PPR 0x10\r\n")
}

/// Serves one monitor connection: answers as a vCPU in state `cpu` until
/// a `sendkey` makes it run, reports each command on `seen`, and hangs up
/// after `polls` `info registers` requests.
fn serve(stream: UnixStream, mut cpu: Cpu, polls: usize, seen: mpsc::Sender<String>) {
    let mut out = stream.try_clone().expect("clone stream");
    write!(
        out,
        "QEMU 7.2.22 monitor - type 'help' for more information\r\n{PROMPT}"
    )
    .unwrap();
    let mut lines = BufReader::new(stream);
    let mut regs = 0;
    let mut line = String::new();
    while lines.read_line(&mut line).unwrap_or(0) > 0 {
        let cmd = line.trim().to_string();
        line.clear();
        let answer = match cmd.as_str() {
            "info cpus" => "* CPU #0: thread_id=4242\r\n".to_string(),
            "info registers" => {
                regs += 1;
                registers(cpu)
            }
            "info lapic" => lapic(cpu),
            "sendkey shift" => {
                cpu = Cpu::Running;
                String::new()
            }
            "quit" => {
                let _ = seen.send(cmd);
                return;
            }
            _ => String::new(),
        };
        let _ = seen.send(cmd);
        if write!(out, "{answer}{PROMPT}").is_err() || regs >= polls {
            return;
        }
    }
}

fn start(cpu: Cpu, polls: usize) -> (Child, mpsc::Receiver<String>, tempfile::TempDir) {
    start_with(cpu, polls, |_| Vec::new())
}

/// As [`start`], with extra watchdog arguments made from the temporary
/// directory.
fn start_with(
    cpu: Cpu,
    polls: usize,
    extra: impl FnOnce(&std::path::Path) -> Vec<String>,
) -> (Child, mpsc::Receiver<String>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("monitor.sock");
    let listener = UnixListener::bind(&sock).expect("bind the fake monitor");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            serve(stream, cpu, polls, tx);
        }
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/l1-watchdog.py");
    let child = Command::new("python3")
        .arg(script)
        .arg(&sock)
        .args(["--interval", "0.05"])
        .args(extra(dir.path()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "python3 is needed by the nested rig's watchdog (scripts/install-deps.sh installs it)",
        );
    (child, rx, dir)
}

fn commands_until_hangup(rx: &mpsc::Receiver<String>) -> Vec<String> {
    let mut cmds = Vec::new();
    while let Ok(c) = rx.recv_timeout(Duration::from_secs(30)) {
        cmds.push(c);
    }
    cmds
}

fn stderr_of(child: Child) -> String {
    let out = child.wait_with_output().expect("watchdog exit");
    assert!(out.status.success(), "watchdog failed: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn watchdog_wakes_a_vcpu_halted_with_an_interrupt_pending() {
    let (child, rx, _dir) = start(Cpu::LostWakeup, 10);
    let cmds = commands_until_hangup(&rx);
    let keys = cmds.iter().filter(|c| *c == "sendkey shift").count();
    assert_eq!(keys, 1, "one wake-up, then the vCPU runs: {cmds:?}");
    let stderr = stderr_of(child);
    assert!(
        stderr.contains("vCPU 0 was halted with interrupt 236 pending")
            && stderr.contains("woke it (1 so far)"),
        "{stderr}"
    );
}

#[test]
fn watchdog_leaves_an_idle_vcpu_alone() {
    let (child, rx, _dir) = start(Cpu::Idle, 10);
    let cmds = commands_until_hangup(&rx);
    assert!(
        cmds.iter().filter(|c| *c == "info lapic").count() >= 5,
        "it looked at the halted vCPU's LAPIC: {cmds:?}"
    );
    assert!(!cmds.iter().any(|c| c.starts_with("sendkey")), "{cmds:?}");
    assert_eq!(stderr_of(child), "");
}

/// A heartbeat file that holds `beats` and never grows.
fn silent_heartbeat(dir: &std::path::Path, beats: &str) -> Vec<String> {
    let file = dir.join("heartbeat.log");
    std::fs::write(&file, beats).unwrap();
    vec!["--heartbeat".into(), file.display().to_string()]
}

/// Runs the watchdog on a vCPU in state `cpu` whose heartbeat stopped,
/// until its first key press; asserts it went on watching after it and
/// returns its report.
fn first_poke_on_a_silent_heartbeat(cpu: Cpu) -> String {
    let (child, rx, _dir) = start_with(cpu, 1000, |d| {
        let mut args = silent_heartbeat(d, "beat 1\n");
        args.extend(["--poke-after", "0.2", "--hung-after", "60"].map(String::from));
        args
    });
    // The first poke makes the fake vCPU run. The watchdog reports it before
    // its next look at the vCPU; then stop it.
    let cmds: Vec<String> = rx
        .iter()
        .take_while(|c| c != "sendkey shift")
        .take(10_000)
        .collect();
    assert!(
        cmds.iter().filter(|c| *c == "info registers").count() >= 1,
        "{cmds:?}"
    );
    assert!(
        rx.iter().any(|c| c == "info registers"),
        "it went on watching"
    );
    let mut child = child;
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The first poke on a silent heartbeat reports the vCPU as `state`.
fn assert_first_poke_reports(cpu: Cpu, state: &str) {
    let stderr = first_poke_on_a_silent_heartbeat(cpu);
    assert!(
        stderr.contains(&format!("(vCPU 0 {state}) with no heartbeat for"))
            && stderr.contains("poked it (1 so far)"),
        "{stderr}"
    );
}

#[test]
fn watchdog_pokes_a_halted_vcpu_whose_heartbeat_stopped() {
    assert_first_poke_reports(Cpu::Idle, "halted");
}

#[test]
fn watchdog_pokes_a_running_vcpu_whose_heartbeat_stopped() {
    assert_first_poke_reports(Cpu::Running, "running");
}

#[test]
fn watchdog_quits_qemu_when_the_heartbeat_stays_silent() {
    let (child, rx, _dir) = start_with(Cpu::Running, 1000, |d| {
        let mut args = silent_heartbeat(d, "beat 1\n");
        args.extend(["--hung-after", "0.5"].map(String::from));
        args
    });
    let cmds = commands_until_hangup(&rx);
    assert_eq!(cmds.last().map(String::as_str), Some("quit"), "{cmds:?}");
    assert!(
        !cmds.iter().any(|c| c.starts_with("sendkey")),
        "running: no poke: {cmds:?}"
    );
    let stderr = stderr_of(child);
    assert!(stderr.contains("L1 HUNG: no heartbeat for"), "{stderr}");
}

#[test]
fn watchdog_leaves_l1_alone_while_its_heartbeat_grows() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("beats");
    std::fs::write(&file, "").unwrap();
    let writer_file = file.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_writer = stop.clone();
    let writer = std::thread::spawn(move || {
        let mut n = 0;
        while !stop_writer.load(std::sync::atomic::Ordering::Relaxed) {
            n += 1;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&writer_file)
                .unwrap();
            writeln!(f, "beat {n}").unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let path = file.display().to_string();
    let (child, rx, _d) = start_with(Cpu::Idle, 40, move |_| {
        vec![
            "--heartbeat".into(),
            path,
            "--poke-after".into(),
            "0.3".into(),
            "--hung-after".into(),
            "0.6".into(),
        ]
    });
    let cmds = commands_until_hangup(&rx);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert!(
        !cmds.iter().any(|c| c.starts_with("sendkey") || c == "quit"),
        "{cmds:?}"
    );
    assert_eq!(stderr_of(child), "");
}
