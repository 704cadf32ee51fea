//! Benchmark driver (not a test): runs VMM commands round-robin inside the
//! nested rig and prints markdown tables with ratios against the peers. It
//! never asserts timings.
//!
//! ```text
//! cellvm-bench boot --runs 8 --mem-mib 256 --marker CELLVM-READY \
//!     --vmm 'cellvm=/cellvm/bin/cellvm run cell.toml' \
//!     --vmm 'qemu-microvm=qemu-system-x86_64 -M microvm ... -append "console=ttyS0 quiet"'
//! cellvm-bench blk --runs 5 --vmm 'cellvm=...' --vmm 'qemu=...'
//! ```
//! The first `--vmm` is the subject; ratios compare it with every other.
//! COMMAND is split into words like a shell would (whitespace, with '...'
//! and "..." quoting and backslash escapes; no variables or globs).
//!
//! - `boot` ([`boot`]): time from spawn to the guest's userspace marker on its
//!   console, the VMM's own boot-timer figure where it prints one, and VmRSS
//!   minus the resident guest RAM.
//! - `blk` ([`blk`]): the guest's `blkbench` result line (sequential read
//!   throughput, 4 KiB random-read IOPS at queue depth 1).
//! - `pages PID` and `text-order PAGES NM` ([`text_order`]): the resident
//!   pages of a process's own code and read-only data, and the functions on
//!   them, for the text-order profile.
//!
//! Exit status: 0 when every VMM produced at least one result, 1 when one
//! never did (its last output lines are printed), 2 on usage errors.

mod blk;
mod boot;
mod session;
mod text_order;

use std::process::ExitCode;
use std::time::Duration;

/// One VMM under test: a name for the table and its command.
pub struct Vmm {
    name: String,
    argv: Vec<String>,
}

/// Options every subcommand takes.
pub struct Common {
    runs: usize,
    timeout: Duration,
    vmms: Vec<Vmm>,
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: cellvm-bench boot [--runs N] [--mem-mib M] [--marker TEXT] [--scrub-mib S] [--timeout-s S] --vmm NAME=COMMAND ...\n       cellvm-bench blk [--runs N] [--timeout-s S] --vmm NAME=COMMAND ...\n       cellvm-bench pages PID\n       cellvm-bench text-order PAGES-FILE NM-FILE"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        return usage();
    };
    let profile = match (cmd.as_str(), &args[1..]) {
        ("pages", [pid]) => Some(text_order::pages(pid)),
        ("text-order", [pages, nm]) => Some(text_order::order(pages, nm)),
        ("pages" | "text-order", _) => return usage(),
        _ => None,
    };
    if let Some(result) = profile {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cellvm-bench {cmd}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let mut common = Common {
        runs: 8,
        timeout: Duration::from_secs(60),
        vmms: Vec::new(),
    };
    let mut extra = Vec::new();
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
                Ok(n) if n > 0 => common.runs = n,
                _ => return bad("need a positive number"),
            },
            "--timeout-s" => match v.parse() {
                Ok(s) if s > 0 => common.timeout = Duration::from_secs(s),
                _ => return bad("need whole seconds"),
            },
            "--vmm" => match v.split_once('=') {
                Some((name, cmd)) if !name.is_empty() => match split_words(cmd) {
                    Ok(argv) if !argv.is_empty() => common.vmms.push(Vmm {
                        name: name.to_string(),
                        argv,
                    }),
                    Ok(_) => return bad("empty command"),
                    Err(e) => return bad(&e),
                },
                _ => return bad("need NAME=COMMAND"),
            },
            _ => extra.push((a.clone(), v.clone())),
        }
    }
    if common.vmms.is_empty() {
        return usage();
    }
    let result = match cmd.as_str() {
        "boot" => boot::run(&common, &extra),
        "blk" => blk::run(&common, &extra),
        _ => return usage(),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("cellvm-bench: {e}");
            usage()
        }
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

/// The upper median (of an even count) of `v`, sorting it.
pub fn median<T: Copy + PartialOrd>(v: &mut [T]) -> Option<T> {
    v.sort_unstable_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len() / 2).copied()
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
    fn median_is_the_upper_middle() {
        assert_eq!(median(&mut [3, 1, 2, 4]), Some(3));
        assert_eq!(median(&mut [2.0, 1.0]), Some(2.0));
        assert_eq!(median::<u32>(&mut []), None);
    }
}
