//! Benchmark driver (not a test): boots each VMM command round-robin, times
//! spawn → the guest's userspace marker on its console, samples the VMM's
//! RSS minus the resident guest RAM, and prints a table with ratios against
//! the fastest peer. It never asserts timings.
//!
//! ```text
//! cellvm-bench boot --runs 8 --mem-mib 256 --marker CELLVM-READY \
//!     --vmm 'cellvm=/cellvm/bin/cellvm run cell.toml' \
//!     --vmm 'qemu-microvm=qemu-system-x86_64 -M microvm ... -append "console=ttyS0 quiet"'
//! ```
//! The first `--vmm` is the subject; ratios compare it with every other.
//! COMMAND is split into words like a shell would (whitespace, with '...'
//! and "..." quoting and backslash escapes; no variables or globs).
//!
//! Besides the wall-clock time to the marker, the table shows the VMM's own
//! boot-timer figure where it prints one on stderr
//! (`cellvm: boot-timer: guest reached userspace after N ms`, written when
//! the guest's /init pokes the boot-timer device, before it prints the
//! marker); VMMs without one get "-".
//!
//! Exit status: 0 when every VMM booted at least once, 1 when one never
//! did (its last output lines are printed), 2 on usage errors.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lines of a failed VMM's stdout/stderr kept for the error message.
const TAIL_LINES: usize = 12;

struct Vmm {
    name: String,
    argv: Vec<String>,
}

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
        let bad = |what: &str| {
            eprintln!("cellvm-bench: bad {a} value '{v}': {what}");
            usage()
        };
        match a.as_str() {
            "--runs" => match v.parse() {
                Ok(n) if n > 0 => runs = n,
                _ => return bad("need a positive number"),
            },
            "--mem-mib" => match v.parse() {
                Ok(n) if n > 0 => mem_mib = n,
                _ => return bad("need a positive number"),
            },
            "--marker" => marker = v.clone(),
            "--timeout-s" => match v.parse() {
                Ok(s) if s > 0 => timeout = Duration::from_secs(s),
                _ => return bad("need whole seconds"),
            },
            "--vmm" => match v.split_once('=') {
                Some((name, cmd)) if !name.is_empty() => match split_words(cmd) {
                    Ok(argv) if !argv.is_empty() => vmms.push(Vmm {
                        name: name.to_string(),
                        argv,
                    }),
                    Ok(_) => return bad("empty command"),
                    Err(e) => return bad(&e),
                },
                _ => return bad("need NAME=COMMAND"),
            },
            _ => return usage(),
        }
    }
    if vmms.is_empty() {
        return usage();
    }

    let mut samples: Vec<Samples> = vmms.iter().map(|_| Samples::default()).collect();
    for round in 0..runs {
        for (vmm, s) in vmms.iter().zip(samples.iter_mut()) {
            match boot_once(vmm, &marker, mem_mib, timeout) {
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
    print_table(&vmms, &mut samples, runs);
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
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Splits a command line into words: whitespace separates, '...' quotes
/// literally, "..." quotes with `\"` and `\\` escapes, a backslash outside
/// quotes escapes the next character.
fn split_words(cmd: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = cmd.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unterminated '".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("unterminated \"".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("unterminated \"".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.push(chars.next().ok_or("trailing backslash")?);
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

type Tail = Arc<Mutex<VecDeque<String>>>;

fn remember(tail: &Tail, line: &str) {
    let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
    if t.len() == TAIL_LINES {
        t.pop_front();
    }
    t.push_back(line.to_string());
}

/// Reads `r` line by line (lossy UTF-8: consoles print anything), keeping
/// the last lines in `tail` and calling `f` on each.
fn read_lines(r: impl Read, tail: Tail, mut f: impl FnMut(&str)) {
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']);
                remember(&tail, line);
                f(line);
            }
        }
    }
}

/// `... boot-timer: guest reached userspace after 1234.567 ms` → 1.234567 s.
fn parse_boot_timer(line: &str) -> Option<Duration> {
    let rest = line.split_once("boot-timer:")?.1;
    let ms = rest.split_once(" after ")?.1.trim().strip_suffix("ms")?;
    let ms: f64 = ms.trim().parse().ok()?;
    (ms.is_finite() && ms >= 0.0).then(|| Duration::from_secs_f64(ms / 1000.0))
}

fn boot_once(vmm: &Vmm, marker: &str, mem_mib: u64, timeout: Duration) -> Result<Boot, String> {
    let start = Instant::now();
    let mut child = Command::new(&vmm.argv[0])
        .args(&vmm.argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", vmm.argv[0]))?;
    let pid = child.id();
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let out_tail: Tail = Arc::default();
    let err_tail: Tail = Arc::default();

    let (tx, rx) = mpsc::channel();
    let marker_owned = marker.to_string();
    let tail = out_tail.clone();
    let out_reader = std::thread::spawn(move || {
        read_lines(stdout, tail, |line| {
            if line.contains(&marker_owned) {
                let _ = tx.send(Instant::now());
            }
        })
    });
    let (timer_tx, timer_rx) = mpsc::channel();
    let tail = err_tail.clone();
    let err_reader = std::thread::spawn(move || {
        read_lines(stderr, tail, |line| {
            if let Some(t) = parse_boot_timer(line) {
                let _ = timer_tx.send(t);
            }
        })
    });

    let result = match rx.recv_timeout(timeout) {
        Ok(at) => {
            let wall = at.duration_since(start);
            // Sample while the guest still runs (it waits after the marker).
            overhead_kib(pid, mem_mib).map(|overhead_kib| {
                // The guest pokes the boot timer before it prints the marker,
                // so the stderr line is normally already here.
                let boot_timer = timer_rx.recv_timeout(Duration::from_millis(200)).ok();
                Boot {
                    wall,
                    boot_timer,
                    overhead_kib,
                }
            })
        }
        Err(mpsc::RecvTimeoutError::Timeout) => Err(format!("no '{marker}' within {timeout:?}")),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let status = child.wait().map_or("?".into(), |s| s.to_string());
            Err(format!("exited ({status}) before printing '{marker}'"))
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = out_reader.join();
    let _ = err_reader.join();
    result.map_err(|e| {
        let join = |t: &Tail| {
            let t = t.lock().unwrap_or_else(|e| e.into_inner());
            t.iter().map(|l| format!("\n    | {l}")).collect::<String>()
        };
        format!(
            "{e}\n  last stdout lines:{}\n  last stderr lines:{}",
            join(&out_tail),
            join(&err_tail)
        )
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

fn median<T: Copy + Ord>(v: &mut [T]) -> Option<T> {
    v.sort_unstable();
    v.get(v.len() / 2).copied()
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
    let (subject_name, _, subject_oh) = medians[0];
    let fastest = medians[1..]
        .iter()
        .filter_map(|&(n, m, _)| m.map(|m| (n, m)))
        .min_by_key(|&(_, m)| m);
    match (subject, fastest) {
        (Some(a), Some((peer, b))) if !b.is_zero() => println!(
            "{subject_name} / fastest peer ({peer}): {:.2}x boot (target <= 0.75x); {subject_name} overhead {} (target <= 2 MiB)",
            a.as_secs_f64() / b.as_secs_f64(),
            mib(subject_oh)
        ),
        _ => println!(
            "{subject_name} / fastest peer: - (no peer booted); {subject_name} overhead {} (target <= 2 MiB)",
            mib(subject_oh)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        let w = split_words(r#"q -append "console=ttyS0 quiet" -x 'a b' c\ d  "e\"f""#).unwrap();
        assert_eq!(
            w,
            [
                "q",
                "-append",
                "console=ttyS0 quiet",
                "-x",
                "a b",
                "c d",
                "e\"f"
            ]
        );
        assert!(split_words("a 'b").is_err());
        assert_eq!(split_words("  ").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn boot_timer_line() {
        let t = parse_boot_timer("cellvm: boot-timer: guest reached userspace after 1234.500 ms");
        assert_eq!(t, Some(Duration::from_micros(1_234_500)));
        assert_eq!(parse_boot_timer("cellvm: something else"), None);
    }
}
