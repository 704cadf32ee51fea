//! `cellvm-bench boot`: time from spawn to the guest's userspace marker,
//! the VMM's own boot-timer figure, and VmRSS minus the resident guest RAM.

use crate::session::Session;
use crate::{median, Common, Vmm};
use std::time::Duration;

#[derive(Default)]
struct Samples {
    boot: Vec<Duration>,
    /// The VMM's own boot-timer figure, where it prints one.
    boot_timer: Vec<Duration>,
    overhead_kib: Vec<u64>,
    failures: u32,
    last_error: Option<String>,
}

struct Boot {
    wall: Duration,
    boot_timer: Option<Duration>,
    overhead_kib: u64,
}

/// Runs the boot benchmark; `Ok(false)` if a VMM never booted.
pub fn run(common: &Common, extra: &[(String, String)]) -> Result<bool, String> {
    let mut mem_mib = 256u64;
    let mut scrub_mib = 0usize;
    let mut marker = "CELLVM-READY".to_string();
    for (k, v) in extra {
        match k.as_str() {
            "--mem-mib" => {
                mem_mib = v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(format!("bad --mem-mib '{v}'"))?
            }
            "--marker" => marker = v.clone(),
            "--scrub-mib" => {
                scrub_mib = v
                    .parse()
                    .ok()
                    .filter(|n| *n <= MAX_SCRUB_MIB)
                    .ok_or(format!("bad --scrub-mib '{v}' (0 to {MAX_SCRUB_MIB})"))?
            }
            _ => return Err(format!("boot: unknown option {k}")),
        }
    }
    let vmms = &common.vmms;
    let mut samples: Vec<Samples> = vmms.iter().map(|_| Samples::default()).collect();
    for round in 0..common.runs {
        for (vmm, s) in vmms.iter().zip(samples.iter_mut()) {
            scrub(scrub_mib);
            match boot_once(vmm, &marker, mem_mib, common.timeout) {
                Ok(b) => {
                    let timer = b.boot_timer.map_or(String::new(), |t| {
                        format!(" (boot-timer {:.3} s)", t.as_secs_f64())
                    });
                    eprintln!(
                        "bench: round {round} {}: {:.3} s{timer}, overhead {} KiB",
                        vmm.name,
                        b.wall.as_secs_f64(),
                        b.overhead_kib
                    );
                    s.boot.push(b.wall);
                    s.boot_timer.extend(b.boot_timer);
                    s.overhead_kib.push(b.overhead_kib);
                }
                Err(e) => {
                    eprintln!("bench: round {round} {}: FAILED: {e}", vmm.name);
                    s.failures += 1;
                    s.last_error = Some(e);
                }
            }
        }
    }
    print_table(vmms, &mut samples, common.runs);
    let mut ok = true;
    for (vmm, s) in vmms.iter().zip(&samples) {
        if s.boot.is_empty() {
            ok = false;
            eprintln!(
                "cellvm-bench: {} never reached '{marker}'; last error: {}",
                vmm.name,
                s.last_error.as_deref().unwrap_or("-")
            );
        }
    }
    Ok(ok)
}

/// The largest scrub `--scrub-mib` takes (64 GiB).
const MAX_SCRUB_MIB: usize = 64 << 10;

/// Faults in `mib` MiB of fresh anonymous memory, one write per page, and
/// frees it again, before a boot (untimed): every VMM then starts on pages
/// the host kernel has just zeroed, whatever ran before it. In the nested
/// rig this matters: L1 runs under QEMU TCG, which keeps translated code
/// for a page after the page is freed and sends writes to such a page
/// down its slow self-modifying-code path, so a VMM that got the pages a
/// previous guest had executed code in boots seconds slower than one that
/// got clean pages (docs/benchmarks.md, "The rig's memory state").
fn scrub(mib: usize) {
    if mib == 0 {
        return;
    }
    let started = std::time::Instant::now();
    let len = mib << 20;
    // calloc'd: untouched until written, so each write below faults in a
    // page the kernel zeroes.
    let mut pages = vec![0u8; len];
    for i in (0..len).step_by(4096) {
        pages[i] = 1;
    }
    std::hint::black_box(&pages);
    drop(pages);
    eprintln!(
        "bench: scrubbed {mib} MiB in {:.3} s",
        started.elapsed().as_secs_f64()
    );
}

/// `... boot-timer: guest reached userspace after 1234.567 ms` → 1.234567 s.
fn parse_boot_timer(line: &str) -> Option<Duration> {
    let rest = line.split_once("boot-timer:")?.1;
    let ms = rest.split_once(" after ")?.1.trim().strip_suffix("ms")?;
    let ms: f64 = ms.trim().parse().ok()?;
    (ms.is_finite() && ms >= 0.0).then(|| Duration::from_secs_f64(ms / 1000.0))
}

fn boot_once(vmm: &Vmm, marker: &str, mem_mib: u64, timeout: Duration) -> Result<Boot, String> {
    let mut session = Session::spawn(vmm)?;
    let (wall, _) = session.wait_line(&[marker], timeout)?;
    // Sample while the guest still runs (it waits after the marker).
    let overhead_kib = overhead_kib(session.pid(), mem_mib).map_err(|e| session.failure(e))?;
    // The guest pokes the boot timer before it prints the marker, so the
    // stderr line is normally already there.
    let boot_timer = session.find_stderr(Duration::from_millis(200), parse_boot_timer);
    Ok(Boot {
        wall,
        boot_timer,
        overhead_kib,
    })
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

fn secs(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.3} s", d.as_secs_f64()))
}

fn mib(k: Option<u64>) -> String {
    k.map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn print_table(vmms: &[Vmm], samples: &mut [Samples], runs: usize) {
    println!();
    println!(
        "boot to userspace marker, {runs} rounds round-robin (median [min..max]); \
         overhead = VmRSS - resident guest RAM, sampled at the marker"
    );
    println!(
        "| VMM | boot median | [min..max] | VMM boot-timer median | overhead median | [min..max] | ok/runs | boot ratio {} / VMM |",
        vmms[0].name
    );
    println!("|---|---|---|---|---|---|---|---|");
    let subject = median(&mut samples[0].boot.clone());
    let mut medians = Vec::new();
    for (vmm, s) in vmms.iter().zip(samples.iter_mut()) {
        let med = median(&mut s.boot);
        let oh = median(&mut s.overhead_kib);
        let timer = median(&mut s.boot_timer);
        let ratio = match (subject, med) {
            (Some(a), Some(b)) if !b.is_zero() => {
                format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64())
            }
            _ => "-".into(),
        };
        println!(
            "| {} | {} | [{}..{}] | {} | {} | [{}..{}] | {}/{} | {} |",
            vmm.name,
            secs(med),
            secs(s.boot.first().copied()),
            secs(s.boot.last().copied()),
            secs(timer),
            mib(oh),
            mib(s.overhead_kib.first().copied()),
            mib(s.overhead_kib.last().copied()),
            s.boot.len(),
            s.boot.len() + s.failures as usize,
            ratio
        );
        medians.push((vmm.name.as_str(), med, oh));
    }
    // Rows named cellvm* are cellvm variants (e.g. cellvm-vmlinux); the
    // others are the peers every variant is compared with.
    let is_cellvm = |n: &str| n.starts_with("cellvm");
    let fastest = medians
        .iter()
        .filter(|&&(n, _, _)| !is_cellvm(n))
        .filter_map(|&(n, m, _)| m.map(|m| (n, m)))
        .min_by_key(|&(_, m)| m);
    for &(name, med, oh) in medians.iter().filter(|&&(n, _, _)| is_cellvm(n)) {
        match (med, fastest) {
            (Some(a), Some((peer, b))) if !b.is_zero() => println!(
                "{name} / fastest peer ({peer}): {:.2}x boot (target <= 0.75x); {name} overhead {} (target <= 2 MiB)",
                a.as_secs_f64() / b.as_secs_f64(),
                mib(oh)
            ),
            _ => println!(
                "{name} / fastest peer: - (no peer booted); {name} overhead {} (target <= 2 MiB)",
                mib(oh)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_timer_line() {
        let t = parse_boot_timer("cellvm: boot-timer: guest reached userspace after 1234.500 ms");
        assert_eq!(t, Some(Duration::from_micros(1_234_500)));
        assert_eq!(parse_boot_timer("cellvm: something else"), None);
    }
}
