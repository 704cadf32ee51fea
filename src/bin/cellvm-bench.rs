//! Benchmark driver (not a test): boots each VMM command round-robin, times
//! spawn → the guest's userspace marker on its console, samples the VMM's
//! RSS minus the resident guest RAM, and prints a table with ratios against
//! the fastest peer. It never asserts timings.
//!
//! ```text
//! cellvm-bench boot --runs 8 --mem-mib 256 --marker CELLVM-READY \
//!     --vmm 'cellvm=/cellvm/bin/cellvm run cell.toml' \
//!     --vmm 'qemu-microvm=qemu-system-x86_64 -M microvm ...'
//! ```
//! The first `--vmm` is the subject; ratios compare it with every other.

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

struct Vmm {
    name: String,
    argv: Vec<String>,
}

#[derive(Default)]
struct Samples {
    boot: Vec<Duration>,
    overhead_kib: Vec<u64>,
    failures: u32,
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: cellvm-bench boot [--runs N] [--mem-mib M] [--marker TEXT] [--timeout-s S] --vmm NAME=COMMAND ..."
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("boot") {
        return usage();
    }
    let mut runs = 8usize;
    let mut mem_mib = 256u64;
    let mut marker = "CELLVM-READY".to_string();
    let mut timeout = Duration::from_secs(60);
    let mut vmms = Vec::new();
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let Some(v) = it.next() else {
            return usage();
        };
        match a.as_str() {
            "--runs" => runs = v.parse().unwrap_or(runs),
            "--mem-mib" => mem_mib = v.parse().unwrap_or(mem_mib),
            "--marker" => marker = v.clone(),
            "--timeout-s" => timeout = Duration::from_secs(v.parse().unwrap_or(60)),
            "--vmm" => match v.split_once('=') {
                Some((name, cmd)) => vmms.push(Vmm {
                    name: name.to_string(),
                    argv: cmd.split_whitespace().map(str::to_string).collect(),
                }),
                None => return usage(),
            },
            _ => return usage(),
        }
    }
    if vmms.is_empty() || vmms.iter().any(|v| v.argv.is_empty()) {
        return usage();
    }

    let mut samples: Vec<Samples> = vmms.iter().map(|_| Samples::default()).collect();
    for round in 0..runs {
        for (vmm, s) in vmms.iter().zip(samples.iter_mut()) {
            match boot_once(vmm, &marker, mem_mib, timeout) {
                Ok((t, kib)) => {
                    eprintln!(
                        "bench: round {round} {}: {:.3} s, overhead {kib} KiB",
                        vmm.name,
                        t.as_secs_f64()
                    );
                    s.boot.push(t);
                    s.overhead_kib.push(kib);
                }
                Err(e) => {
                    eprintln!("bench: round {round} {}: FAILED: {e}", vmm.name);
                    s.failures += 1;
                }
            }
        }
    }
    print_table(&vmms, &mut samples, runs);
    ExitCode::SUCCESS
}

fn boot_once(
    vmm: &Vmm,
    marker: &str,
    mem_mib: u64,
    timeout: Duration,
) -> Result<(Duration, u64), String> {
    let start = Instant::now();
    let mut child = Command::new(&vmm.argv[0])
        .args(&vmm.argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", vmm.argv[0]))?;
    let pid = child.id();
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let marker_owned = marker.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(&marker_owned) {
                let _ = tx.send(Instant::now());
            }
        }
    });
    let result = match rx.recv_timeout(timeout) {
        Ok(at) => {
            let boot = at.duration_since(start);
            overhead_kib(pid, mem_mib).map(|kib| (boot, kib))
        }
        Err(_) => Err(format!("no '{marker}' within {timeout:?}")),
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// VmRSS minus the resident part of the guest RAM mapping (the largest
/// mapping between mem and mem + 4 MiB in size), in KiB.
fn overhead_kib(pid: u32, mem_mib: u64) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("read status: {e}"))?;
    let vmrss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .ok_or("no VmRSS")?;
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .map_err(|e| format!("read smaps: {e}"))?;
    let (lo, hi) = (mem_mib * 1024, mem_mib * 1024 + 4096);
    let mut guest_rss = 0u64;
    let mut size = 0u64;
    for line in smaps.lines() {
        if let Some(v) = line.strip_prefix("Size:") {
            size = v
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Rss:") {
            if (lo..=hi).contains(&size) {
                let rss = v
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                guest_rss = guest_rss.max(rss);
            }
        }
    }
    Ok(vmrss.saturating_sub(guest_rss))
}

fn median<T: Copy + Ord>(v: &mut [T]) -> Option<T> {
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

fn print_table(vmms: &[Vmm], samples: &mut [Samples], runs: usize) {
    println!();
    println!("boot to userspace marker, {runs} rounds round-robin (median [min..max]); overhead = VmRSS - resident guest RAM");
    println!(
        "| VMM | boot median | [min..max] | overhead median | failures | boot ratio vs {} |",
        vmms[0].name
    );
    println!("|---|---|---|---|---|---|");
    let subject = median(&mut samples[0].boot.clone());
    for (vmm, s) in vmms.iter().zip(samples.iter_mut()) {
        let med = median(&mut s.boot);
        let min = s.boot.first().copied();
        let max = s.boot.last().copied();
        let oh = median(&mut s.overhead_kib);
        let ratio = match (subject, med) {
            (Some(a), Some(b)) if !b.is_zero() => {
                format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64())
            }
            _ => "-".into(),
        };
        let secs =
            |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.3} s", d.as_secs_f64()));
        println!(
            "| {} | {} | [{}..{}] | {} | {} | {} |",
            vmm.name,
            secs(med),
            secs(min),
            secs(max),
            oh.map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
            s.failures,
            ratio
        );
    }
    println!(
        "targets: {} boot <= 0.75x the fastest peer; overhead <= 2 MiB",
        vmms[0].name
    );
}
