//! `cellvm-bench blk`: each VMM boots a guest that runs `blkbench` on its
//! virtio disk (guest/tools/blkbench.c, guest mode `blkbench`) and prints
//! `BLKBENCH-RESULT bytes=B seq_ns=T reads=N rand_ns=T`; this turns those
//! into sequential read throughput and 4 KiB random-read IOPS (queue depth
//! 1, O_DIRECT in the guest), medians over round-robin rounds, and the
//! subject's ratio against every peer (higher is better for both).

use crate::session::Session;
use crate::{median, Common, Vmm};

/// One guest run's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlkResult {
    /// Sequential read throughput, MiB/s.
    pub seq_mib_s: f64,
    /// Random 4 KiB reads per second.
    pub rand_iops: f64,
}

/// Parses a `BLKBENCH-RESULT ...` line.
pub fn parse_result(line: &str) -> Option<BlkResult> {
    let rest = line.split_once("BLKBENCH-RESULT")?.1;
    let field = |name: &str| -> Option<f64> {
        rest.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?
            .parse::<u64>()
            .ok()
            .map(|v| v as f64)
    };
    let (bytes, seq_ns, reads, rand_ns) = (
        field("bytes")?,
        field("seq_ns")?,
        field("reads")?,
        field("rand_ns")?,
    );
    if seq_ns <= 0.0 || rand_ns <= 0.0 {
        return None;
    }
    Some(BlkResult {
        seq_mib_s: bytes / (1024.0 * 1024.0) / (seq_ns / 1e9),
        rand_iops: reads / (rand_ns / 1e9),
    })
}

#[derive(Default)]
struct Samples {
    seq: Vec<f64>,
    iops: Vec<f64>,
    failures: u32,
    last_error: Option<String>,
}

fn blk_once(vmm: &Vmm, common: &Common) -> Result<BlkResult, String> {
    let mut session = Session::spawn(vmm)?;
    let (_, line) = session.wait_line(&["BLKBENCH-RESULT", "BLKBENCH-ERROR"], common.timeout)?;
    parse_result(&line).ok_or_else(|| session.failure(format!("the guest said: {line}")))
}

/// Runs the block benchmark; `Ok(false)` if a VMM never produced a result.
pub fn run(common: &Common, extra: &[(String, String)]) -> Result<bool, String> {
    if let Some((k, _)) = extra.first() {
        return Err(format!("blk: unknown option {k}"));
    }
    let vmms = &common.vmms;
    let mut samples: Vec<Samples> = vmms.iter().map(|_| Samples::default()).collect();
    for round in 0..common.runs {
        for (vmm, s) in vmms.iter().zip(samples.iter_mut()) {
            match blk_once(vmm, common) {
                Ok(r) => {
                    eprintln!(
                        "bench: round {round} {}: sequential {:.1} MiB/s, random 4 KiB {:.0} IOPS",
                        vmm.name, r.seq_mib_s, r.rand_iops
                    );
                    s.seq.push(r.seq_mib_s);
                    s.iops.push(r.rand_iops);
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
        if s.seq.is_empty() {
            ok = false;
            eprintln!(
                "cellvm-bench: {} never produced a result; last error: {}",
                vmm.name,
                s.last_error.as_deref().unwrap_or("-")
            );
        }
    }
    Ok(ok)
}

fn range(v: &[f64], digits: usize) -> String {
    match (v.first(), v.last()) {
        (Some(a), Some(b)) => format!("[{a:.digits$}..{b:.digits$}]"),
        _ => "-".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    }
}

fn print_table(vmms: &[Vmm], samples: &mut [Samples], runs: usize) {
    println!();
    println!(
        "virtio-blk from the guest, O_DIRECT, queue depth 1, {runs} rounds round-robin (median [min..max]); \
         ratios = {} / VMM, higher is better",
        vmms[0].name
    );
    println!("| VMM | sequential read | [min..max] | 4 KiB random read | [min..max] | ok/runs | seq ratio | IOPS ratio |");
    println!("|---|---|---|---|---|---|---|---|");
    let subject_seq = median(&mut samples[0].seq.clone());
    let subject_iops = median(&mut samples[0].iops.clone());
    for (vmm, s) in vmms.iter().zip(samples.iter_mut()) {
        let seq = median(&mut s.seq);
        let iops = median(&mut s.iops);
        println!(
            "| {} | {} | {} | {} | {} | {}/{} | {} | {} |",
            vmm.name,
            seq.map_or("-".into(), |v| format!("{v:.1} MiB/s")),
            range(&s.seq, 1),
            iops.map_or("-".into(), |v| format!("{v:.0} IOPS")),
            range(&s.iops, 0),
            s.seq.len(),
            s.seq.len() + s.failures as usize,
            ratio(subject_seq, seq),
            ratio(subject_iops, iops),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_line_becomes_throughput_and_iops() {
        let r = parse_result(
            "BLKBENCH-RESULT bytes=67108864 seq_ns=500000000 reads=2000 rand_ns=1000000000",
        )
        .unwrap();
        assert_eq!(r.seq_mib_s, 128.0);
        assert_eq!(r.rand_iops, 2000.0);
    }

    #[test]
    fn incomplete_or_zero_time_results_are_refused() {
        assert_eq!(
            parse_result("BLKBENCH-RESULT bytes=1 seq_ns=1 reads=1"),
            None
        );
        assert_eq!(
            parse_result("BLKBENCH-RESULT bytes=1 seq_ns=0 reads=1 rand_ns=1"),
            None
        );
        assert_eq!(parse_result("BLKBENCH-ERROR open errno=2"), None);
    }
}
