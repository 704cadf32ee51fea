//! The nested boot-test rig, seen from the host: boot L1 once with every
//! scenario, split its console into per-scenario sections.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// One scenario's output and status, as reported by L1's init.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub output: String,
    pub rc: i32,
}

/// The whole L1 run.
#[derive(Debug)]
pub struct RigRun {
    pub log: String,
    pub scenarios: BTreeMap<String, Scenario>,
}

impl RigRun {
    /// The named scenario, which must have exited with 0. Otherwise the test
    /// fails with a message that leads with the status (124: L1's
    /// per-scenario watchdog killed it) and the output's last lines, then the
    /// whole output: a summary that keeps only the head and tail of a long
    /// message still shows why.
    pub fn succeeded(&self, name: &str) -> &Scenario {
        let s = self.scenario(name);
        if s.rc != 0 {
            let why = match s.rc {
                124 => " (timed out: L1's per-scenario watchdog killed it)",
                -1 => " (no status: L1 never finished it)",
                _ => "",
            };
            let lines: Vec<&str> = s.output.lines().collect();
            let tail = lines[lines.len().saturating_sub(25)..].join("\n");
            panic!(
                "scenario {name} exited with {}{why}; its last lines:\n{tail}\n\
                 --- its whole output ---\n{}",
                s.rc, s.output
            );
        }
        s
    }

    /// The named scenario; fails the test with L1's log tail if it is missing.
    pub fn scenario(&self, name: &str) -> &Scenario {
        match self.scenarios.get(name) {
            Some(s) => s,
            None => {
                let tail: String = self
                    .log
                    .lines()
                    .rev()
                    .take(60)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                panic!(
                    "scenario {name} did not run in L1; ran {:?}. L1 log tail:\n{tail}",
                    self.scenarios.keys().collect::<Vec<_>>()
                )
            }
        }
    }
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Splits L1's console log into scenarios.
pub fn parse_log(log: &str) -> BTreeMap<String, Scenario> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for raw in log.lines() {
        let line = raw.trim_end_matches('\r');
        if let Some(name) = line.strip_prefix("@@CELLVM-SCENARIO-BEGIN ") {
            current = Some((name.trim().to_string(), String::new()));
        } else if let Some(rest) = line.strip_prefix("@@CELLVM-SCENARIO-END ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().unwrap_or_default().to_string();
            let rc = parts
                .find_map(|p| p.strip_prefix("rc="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(-1);
            if let Some((cur, output)) = current.take() {
                if cur == name {
                    out.insert(name, Scenario { output, rc });
                }
            }
        } else if let Some((_, output)) = current.as_mut() {
            output.push_str(line);
            output.push('\n');
        }
    }
    out
}

static RIG: OnceLock<Result<RigRun, String>> = OnceLock::new();
static ARM64_RIG: OnceLock<Result<RigRun, String>> = OnceLock::new();

/// Which nested rig: the x86_64 one (QEMU TCG with SVM) or the arm64 one
/// (qemu-system-aarch64 with virtualization=on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Arm64,
}

impl Arch {
    /// The L1 image's directory under build/.
    fn l1_dir(self) -> &'static str {
        match self {
            Arch::X86_64 => "build/l1",
            Arch::Arm64 => "build/l1-arm64",
        }
    }

    /// The variable naming the scenarios to run (all when unset).
    fn scenarios_var(self) -> &'static str {
        match self {
            Arch::X86_64 => "CELLVM_SCENARIOS",
            Arch::Arm64 => "CELLVM_ARM64_SCENARIOS",
        }
    }

    /// The setup command that builds the rig.
    fn setup(self) -> &'static str {
        match self {
            Arch::X86_64 => "scripts/setup.sh",
            Arch::Arm64 => "scripts/setup.sh --arch arm64",
        }
    }

    /// Extra arguments of scripts/run-l1.sh.
    fn run_args(self) -> &'static [&'static str] {
        match self {
            Arch::X86_64 => &[],
            Arch::Arm64 => &["--arch", "arm64"],
        }
    }
}

/// Boots L1 once (per test binary) with all scenarios (or those
/// `CELLVM_SCENARIOS` names, `a,b`: for running a few tests while
/// developing; a test of a scenario left out fails). A failed L1 run is
/// remembered too: every test then fails with its message at once, instead
/// of each booting L1 again (one hung L1 must not cost one timeout per test).
pub fn rig() -> &'static RigRun {
    match RIG.get_or_init(|| run_rig(Arch::X86_64)) {
        Ok(run) => run,
        Err(e) => panic!("{e}"),
    }
}

/// The arm64 rig, booted once per test binary like [`rig`]
/// (`CELLVM_ARM64_SCENARIOS` picks scenarios).
pub fn arm64_rig() -> &'static RigRun {
    match ARM64_RIG.get_or_init(|| run_rig(Arch::Arm64)) {
        Ok(run) => run,
        Err(e) => panic!("{e}"),
    }
}

fn run_rig(arch: Arch) -> Result<RigRun, String> {
    let root = repo_root();
    for file in ["vmlinuz", "initramfs.cpio.gz"] {
        let needed = format!("{}/{file}", arch.l1_dir());
        if !root.join(&needed).exists() {
            return Err(format!(
                "{needed} is missing: run {} first (the README's test command, scripts/test.sh, does)",
                arch.setup()
            ));
        }
    }
    let requested = std::env::var(arch.scenarios_var()).unwrap_or_else(|_| "all".to_string());
    // The arm64 image's `all` is its own scenarios plus shared.list's: one
    // L1 for them (4-7 minutes).
    if arch == Arch::Arm64 {
        return run_shard(arch, &requested, None);
    }
    let costs = scenario_costs(&root.join("tests/nested/scenarios"), &requested)?;
    let shards = split_into_shards(&costs, shard_count()?);
    if shards.len() <= 1 {
        return run_shard(arch, &requested, None);
    }
    // One L1 per shard, all at once: each is one single-threaded QEMU TCG
    // vCPU, so two of them use a 2-core host's cores.
    let handles: Vec<_> = shards
        .iter()
        .enumerate()
        .map(|(i, names)| {
            let list = names.join(",");
            let dir = format!("{}/shard-{i}", arch.l1_dir());
            std::thread::spawn(move || {
                let result = run_shard(arch, &list, Some(&dir));
                (list, result)
            })
        })
        .collect();
    let mut run = RigRun {
        log: String::new(),
        scenarios: BTreeMap::new(),
    };
    let mut failures = Vec::new();
    for handle in handles {
        let (list, result) = handle
            .join()
            .map_err(|_| "a rig shard's thread panicked".to_string())?;
        match result {
            Ok(shard) => {
                run.log.push_str(&format!("==== L1 shard: {list}\n"));
                run.log.push_str(&shard.log);
                run.scenarios.extend(shard.scenarios);
            }
            Err(e) => failures.push(format!("the L1 shard running {list}: {e}")),
        }
    }
    if failures.is_empty() {
        Ok(run)
    } else {
        Err(failures.join("\n\n"))
    }
}

/// How many L1s run the x86_64 scenarios at once: `CELLVM_L1_SHARDS`, else
/// one per host CPU, at most 2 (each L1 keeps one CPU busy).
fn shard_count() -> Result<usize, String> {
    match std::env::var("CELLVM_L1_SHARDS") {
        Ok(v) => match v.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(format!(
                "CELLVM_L1_SHARDS must be a whole number >= 1, got {v:?}"
            )),
        },
        Err(_) => Ok(std::thread::available_parallelism().map_or(1, |n| n.get().min(2))),
    }
}

/// One L1 boot (scripts/run-l1.sh) running `scenarios`, its logs in
/// `run_dir` (default: the image's directory).
fn run_shard(arch: Arch, scenarios: &str, run_dir: Option<&str>) -> Result<RigRun, String> {
    let root = repo_root();
    let script = root.join("scripts/run-l1.sh");
    let mut cmd = Command::new(&script);
    cmd.args(arch.run_args()).args(["--scenarios", scenarios]);
    if let Some(dir) = run_dir {
        cmd.args(["--run-dir", dir]);
    }
    let out = cmd
        .current_dir(&root)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let log = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "{} failed with {}:\nstderr:\n{}\nlog tail:\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            log.lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    let scenarios = parse_log(&log);
    Ok(RigRun { log, scenarios })
}

/// The scenarios `requested` names (`all`: every `*.sh` in `dir`, sorted),
/// each with its cost: the seconds its `# cellvm-cost: SECS` line declares
/// (measured in one idle run), else 10.
pub fn scenario_costs(dir: &Path, requested: &str) -> Result<Vec<(String, u64)>, String> {
    let names: Vec<String> = if requested == "all" {
        let entries =
            std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".sh").map(str::to_string)
            })
            .collect();
        names.sort();
        names
    } else {
        requested
            .split(',')
            .filter(|n| !n.is_empty())
            .map(|n| n.trim_end_matches(".sh").to_string())
            .collect()
    };
    Ok(names
        .into_iter()
        .map(|name| {
            let cost = std::fs::read_to_string(dir.join(format!("{name}.sh")))
                .ok()
                .and_then(|text| declared_cost(&text))
                .unwrap_or(10);
            (name, cost)
        })
        .collect())
}

/// The seconds a scenario's `# cellvm-cost: SECS` line declares.
pub fn declared_cost(script: &str) -> Option<u64> {
    script
        .lines()
        .find_map(|l| l.strip_prefix("# cellvm-cost:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Splits scenarios into at most `n` non-empty shards of about equal cost:
/// the costliest first, each onto the shard with the least so far. Each
/// shard keeps the scenarios in their given order.
pub fn split_into_shards(scenarios: &[(String, u64)], n: usize) -> Vec<Vec<String>> {
    let n = n.clamp(1, scenarios.len().max(1));
    let mut order: Vec<usize> = (0..scenarios.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(scenarios[i].1));
    let mut load = vec![0u64; n];
    let mut owner = vec![0usize; scenarios.len()];
    for i in order {
        let lightest = (0..n).min_by_key(|&s| load[s]).unwrap_or(0);
        load[lightest] += scenarios[i].1;
        owner[i] = lightest;
    }
    (0..n)
        .map(|s| {
            scenarios
                .iter()
                .zip(&owner)
                .filter(|(_, &o)| o == s)
                .map(|((name, _), _)| name.clone())
                .collect()
        })
        .filter(|shard: &Vec<String>| !shard.is_empty())
        .collect()
}

/// Key/value lines between CELLVM-REPORT-BEGIN and CELLVM-REPORT-END.
pub fn report_lines(output: &str) -> Vec<String> {
    output
        .lines()
        .skip_while(|l| !l.contains("CELLVM-REPORT-BEGIN"))
        .skip(1)
        .take_while(|l| !l.contains("CELLVM-REPORT-END"))
        .map(|l| l.trim().to_string())
        .collect()
}

/// Flattens a DTB into (path/property, bytes), as /proc/device-tree shows it.
pub fn flatten_dtb(dtb: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let be32 = |off: usize| u32::from_be_bytes(dtb[off..off + 4].try_into().unwrap()) as usize;
    assert_eq!(be32(0), 0xd00d_feed, "not a DTB");
    let struct_off = be32(8);
    let strings_off = be32(12);
    let mut out = BTreeMap::new();
    let mut path: Vec<String> = Vec::new();
    let mut pos = struct_off;
    loop {
        let token = be32(pos);
        pos += 4;
        match token {
            1 => {
                let end = pos + dtb[pos..].iter().position(|b| *b == 0).unwrap();
                let name = String::from_utf8_lossy(&dtb[pos..end]).into_owned();
                path.push(name);
                pos = (end + 1 + 3) & !3;
            }
            2 => {
                path.pop();
            }
            3 => {
                let len = be32(pos);
                let nameoff = be32(pos + 4);
                pos += 8;
                let value = dtb[pos..pos + len].to_vec();
                pos = (pos + len + 3) & !3;
                let s = strings_off + nameoff;
                let e = s + dtb[s..].iter().position(|b| *b == 0).unwrap();
                let pname = String::from_utf8_lossy(&dtb[s..e]).into_owned();
                let mut key: Vec<&str> = path.iter().skip(1).map(String::as_str).collect();
                key.push(&pname);
                out.insert(key.join("/"), value);
            }
            4 => {}
            9 => break,
            other => panic!("bad DTB token {other}"),
        }
    }
    out
}

/// Hex string of bytes, lowercase, no separators.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Loads a cell config from cells/ (without checking kernel files) and builds its DTB.
pub fn cell_dtb(cell: &Path) -> Vec<u8> {
    let cfg = cellvm::config::load(cell, &cellvm::config::LoadOptions { check_files: false })
        .unwrap_or_else(|e| panic!("{e}"));
    let layout = cellvm::layout::CellLayout::new(&cfg).unwrap();
    cellvm::fdt::build_base_dtb(&cfg, &layout).unwrap()
}
