//! The text-order profile (`scripts/profile-text-order.sh`): which of
//! cellvm's functions running cells execute, so the linker can put them
//! next to each other (lld `--symbol-ordering-file`, `scripts/text-order.txt`).
//! The kernel maps a file's pages 64 KiB at a time around each fault
//! (fault-around), so a running cell's resident code is every 64 KiB window
//! that holds one function it runs; packed together, those functions fill
//! few windows.
//!
//! `cellvm-bench pages PID` reads `/proc/PID/maps` for the mappings of `/proc/PID/exe` without write
//! permission (code and read-only data) and `/proc/PID/pagemap` for each of
//! their pages, and prints one line per resident page:
//!
//! ```text
//! PAGE r-xp 0xd3000
//! ```
//!
//! with the page's ELF virtual address (the runtime address minus the load
//! bias, taken from the mapping at file offset 0), so a symbol table of the
//! same binary names what is on it. Run it with the kernel's fault-around
//! set to one page (`/sys/kernel/debug/fault_around_bytes`), or every fault
//! makes 16 pages resident and the profile says little. The process's
//! owner may read it (only the pagemap's present bit is used, not the page
//! frame numbers, which need root). The bias assumes a position-independent
//! executable, whose first segment is linked at 0 (cellvm's static build
//! is static-pie).

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Seek, SeekFrom};

/// One mapping of the executable from `/proc/PID/maps`.
#[derive(Debug, PartialEq, Eq)]
struct Mapping {
    start: u64,
    end: u64,
    perms: String,
    offset: u64,
}

/// Parses the lines of `maps` that map `exe`.
fn exe_mappings(maps: &str, exe: &str) -> Vec<Mapping> {
    maps.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (range, perms, offset) = (f.next()?, f.next()?, f.next()?);
            let path = f.nth(2)?;
            if path != exe {
                return None;
            }
            let (s, e) = range.split_once('-')?;
            Some(Mapping {
                start: u64::from_str_radix(s, 16).ok()?,
                end: u64::from_str_radix(e, 16).ok()?,
                perms: perms.to_string(),
                offset: u64::from_str_radix(offset, 16).ok()?,
            })
        })
        .collect()
}

/// The load bias (runtime address minus ELF virtual address), from the
/// mapping of file offset 0: the first `PT_LOAD`, which lld and ld place at
/// vaddr 0 in a PIE.
fn load_bias(maps: &[Mapping]) -> Option<u64> {
    maps.iter()
        .find(|m| m.offset == 0)
        .map(|m| m.start - m.offset)
}

/// Prints the resident read-only pages of process `pid`'s executable.
pub fn pages(pid: &str) -> Result<(), String> {
    let pages = resident_pages(pid)?;
    for (perms, vaddr) in &pages {
        println!("PAGE {perms} {vaddr:#x}");
    }
    eprintln!(
        "cellvm-bench pages: {} resident read-only pages of /proc/{pid}/exe",
        pages.len()
    );
    Ok(())
}

/// The resident pages of process `pid`'s executable's read-only mappings:
/// (permissions, ELF virtual address).
fn resident_pages(pid: &str) -> Result<Vec<(String, u64)>, String> {
    let proc = format!("/proc/{pid}");
    let exe = fs::read_link(format!("{proc}/exe")).map_err(|e| format!("{proc}/exe: {e}"))?;
    let exe = exe.to_string_lossy().into_owned();
    let maps =
        fs::read_to_string(format!("{proc}/maps")).map_err(|e| format!("{proc}/maps: {e}"))?;
    let mappings = exe_mappings(&maps, &exe);
    let bias =
        load_bias(&mappings).ok_or_else(|| format!("no mapping of {exe} at file offset 0"))?;
    let mut pagemap =
        fs::File::open(format!("{proc}/pagemap")).map_err(|e| format!("{proc}/pagemap: {e}"))?;
    let page = 4096u64;
    let mut resident = Vec::new();
    for m in mappings.iter().filter(|m| !m.perms.contains('w')) {
        let pages = usize::try_from((m.end - m.start) / page).map_err(|e| e.to_string())?;
        let mut entries = vec![0u8; pages * 8];
        pagemap
            .seek(SeekFrom::Start(m.start / page * 8))
            .and_then(|_| pagemap.read_exact(&mut entries))
            .map_err(|e| format!("{proc}/pagemap at {:#x}: {e}", m.start))?;
        for (i, e) in entries.chunks_exact(8).enumerate() {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(e);
            let vaddr = (m.start + i as u64 * page).checked_sub(bias);
            if let (true, Some(vaddr)) = (u64::from_le_bytes(raw) >> 63 == 1, vaddr) {
                resident.push((m.perms.clone(), vaddr));
            }
        }
    }
    Ok(resident)
}

/// `cellvm-bench text-order PAGES NM`: the linker's symbol ordering file.
/// PAGES is `pages` output of one or more runs, each line prefixed with a
/// tag naming the run (`boot PAGE r-xp 0xd3000`); NM is `nm --defined-only
/// -S` output of the profiled binary. The code symbols overlapping a page of
/// the first tag come first, then those of the second tag not yet listed,
/// and so on, each group in address order: the code every running cell
/// needs packs into the fewest pages, what only some operations run follows.
pub fn order(pages_file: &str, nm_file: &str) -> Result<(), String> {
    let pages = fs::read_to_string(pages_file).map_err(|e| format!("{pages_file}: {e}"))?;
    let nm = fs::read_to_string(nm_file).map_err(|e| format!("{nm_file}: {e}"))?;
    let syms = code_symbols(&nm);
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    for (tag, hot) in hot_pages(&pages)? {
        let names: Vec<&str> = hot_symbols(&syms, &hot)
            .into_iter()
            .filter(|n| seen.insert(*n))
            .collect();
        eprintln!(
            "cellvm-bench text-order: {tag}: {} code pages, {} more symbols",
            hot.len(),
            names.len()
        );
        total += names.len();
        for n in names {
            println!("{n}");
        }
    }
    eprintln!("cellvm-bench text-order: {total} symbols");
    Ok(())
}

/// The code page numbers (address / 4096) of the `TAG PAGE PERMS ADDR`
/// lines of `text` with executable permissions, per tag in order of first
/// appearance.
fn hot_pages(text: &str) -> Result<Vec<(String, BTreeSet<u64>)>, String> {
    let mut tags: Vec<(String, BTreeSet<u64>)> = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [tag, "PAGE", perms, addr] = f.as_slice() else {
            continue;
        };
        if !perms.contains('x') {
            continue;
        }
        let hex = addr.trim_start_matches("0x");
        let a =
            u64::from_str_radix(hex, 16).map_err(|e| format!("bad address in '{line}': {e}"))?;
        let i = match tags.iter().position(|(t, _)| t == tag) {
            Some(i) => i,
            None => {
                tags.push((tag.to_string(), BTreeSet::new()));
                tags.len() - 1
            }
        };
        tags[i].1.insert(a / 4096);
    }
    Ok(tags)
}

/// A code symbol of `nm -S` output: address, size (at least 1), name.
type Symbol<'a> = (u64, u64, &'a str);

/// The code symbols (`t`, `T`, `W`, `w`) of `nm -S` output, by address.
fn code_symbols(nm: &str) -> Vec<Symbol<'_>> {
    let mut syms: Vec<Symbol<'_>> = nm
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (addr, size, kind, name) = (f.next()?, f.next()?, f.next()?, f.next()?);
            if !matches!(kind, "t" | "T" | "W" | "w") {
                return None;
            }
            let addr = u64::from_str_radix(addr, 16).ok()?;
            let size = u64::from_str_radix(size, 16).ok()?.max(1);
            Some((addr, size, name))
        })
        .collect();
    syms.sort_unstable();
    syms
}

/// The names of `syms` (by address) that overlap a page of `hot`.
fn hot_symbols<'a>(syms: &[Symbol<'a>], hot: &BTreeSet<u64>) -> Vec<&'a str> {
    syms.iter()
        .filter(|(addr, size, _)| {
            hot.range(addr / 4096..=addr.saturating_add(size - 1) / 4096)
                .next()
                .is_some()
        })
        .map(|(_, _, name)| *name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
5555a000-5555b000 r--p 00000000 00:10 42 /cellvm/bin/cellvm
5555b000-5555f000 r-xp 00001000 00:10 42 /cellvm/bin/cellvm
5555f000-55560000 rw-p 00005000 00:10 42 /cellvm/bin/cellvm
55560000-55561000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000001000 r-xp 00000000 00:10 43 /lib/other.so
";

    #[test]
    fn only_the_executables_mappings_are_taken() {
        let m = exe_mappings(MAPS, "/cellvm/bin/cellvm");
        assert_eq!(m.len(), 3);
        assert_eq!(
            m[1],
            Mapping {
                start: 0x5555_b000,
                end: 0x5555_f000,
                perms: "r-xp".into(),
                offset: 0x1000
            }
        );
    }

    #[test]
    fn the_bias_comes_from_the_mapping_at_offset_zero() {
        let m = exe_mappings(MAPS, "/cellvm/bin/cellvm");
        assert_eq!(load_bias(&m), Some(0x5555_a000));
        assert_eq!(load_bias(&m[1..]), None);
    }

    #[test]
    fn only_code_pages_count_grouped_by_tag_in_order() {
        let hot = hot_pages("boot PAGE r-xp 0xd3000\nboot PAGE r--p 0x5000\nnoise\nattach PAGE r-xp 0xd5000\nboot PAGE r-xp 0xd3010\n").unwrap();
        let want: Vec<(String, BTreeSet<u64>)> = vec![
            ("boot".into(), [0xd3].into_iter().collect()),
            ("attach".into(), [0xd5].into_iter().collect()),
        ];
        assert_eq!(hot, want);
        assert!(hot_pages("boot PAGE r-xp 0xzz").is_err());
    }

    #[test]
    fn code_symbols_overlapping_a_hot_page_are_listed_in_address_order() {
        let nm = "\
00000000000d2ff0 0000000000000020 t straddles_into_d3
00000000000d4000 0000000000000100 T cold
00000000000d5800 0000000000000010 W hot_weak
00000000000d3100 0000000000000010 t inside_d3
00000000000d5000 0000000000000008 r data_on_hot_page
";
        let syms = code_symbols(nm);
        let hot = [0xd3, 0xd5].into_iter().collect();
        assert_eq!(
            hot_symbols(&syms, &hot),
            ["straddles_into_d3", "inside_d3", "hot_weak"]
        );
    }

    #[test]
    fn this_process_has_resident_code() {
        // The test binary is running this very code: some of its code
        // pages are resident, at addresses inside its own image.
        let pages = resident_pages(&std::process::id().to_string()).unwrap();
        let code: Vec<_> = pages.iter().filter(|(p, _)| p.contains('x')).collect();
        assert!(!code.is_empty(), "{pages:?}");
        let maps = fs::read_to_string("/proc/self/maps").unwrap();
        let exe = fs::read_link("/proc/self/exe").unwrap();
        let bias = load_bias(&exe_mappings(&maps, &exe.to_string_lossy())).unwrap();
        let here = (this_process_has_resident_code as *const () as usize as u64 - bias) & !0xfff;
        assert!(
            code.iter().any(|(_, v)| *v == here),
            "{here:#x} not in {code:?}"
        );
    }
}
