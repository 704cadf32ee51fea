//! The crate's module graph stays one-way (docs/architecture.md): each
//! top-level module of src/ may only use the modules listed for it below,
//! and the graph has no cycle. Read from the source text: every
//! `crate::MODULE` path outside test files and `#[cfg(test)]` blocks.

// Test code: a failed step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// What each module may use. A new edge is a design decision: add it here
/// and to the graph in docs/architecture.md together.
const ALLOWED: &[(&str, &[&str])] = &[
    ("platform", &[]),
    ("sync", &[]),
    ("ratelimit", &[]),
    ("heap", &[]),
    ("logger", &[]),
    ("seccomp", &[]),
    ("stop", &["sync"]),
    ("config", &["platform"]),
    ("layout", &["config", "platform"]),
    ("devices", &["platform", "ratelimit", "stop", "sync"]),
    ("pci", &["config", "devices", "layout", "ratelimit", "sync"]),
    ("fdt", &["config", "layout", "pci", "platform"]),
    ("channel", &["devices", "ratelimit", "sync"]),
    (
        "ivshmem",
        &["config", "devices", "pci", "ratelimit", "sync"],
    ),
    ("virtio", &["devices", "pci", "ratelimit"]),
    ("attach", &["config", "fdt", "layout"]),
    ("partition", &["config", "sync"]),
    ("api", &["seccomp", "sync"]),
    ("runner", &["api", "stop", "sync"]),
    (
        "vmm",
        &[
            "api",
            "attach",
            "channel",
            "config",
            "devices",
            "fdt",
            "heap",
            "ivshmem",
            "layout",
            "partition",
            "pci",
            "platform",
            "ratelimit",
            "seccomp",
            "stop",
            "sync",
            "virtio",
        ],
    ),
    (
        "cli",
        &[
            "api",
            "attach",
            "config",
            "fdt",
            "layout",
            "logger",
            "partition",
            "runner",
            "seccomp",
            "stop",
            "sync",
            "vmm",
        ],
    ),
];

/// `text` without comments and without an inline test module (`#[cfg(test)]`
/// followed by `mod tests {`, which by convention ends the file).
fn code(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(line.split("//").next().unwrap_or(""));
        out.push('\n');
    }
    match out.find("#[cfg(test)]\nmod tests {") {
        Some(i) => out[..i].to_string(),
        None => out,
    }
}

/// The top-level modules a source text names with `crate::`.
fn used(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let names: Vec<&str> = if let Some(body) = rest.strip_prefix('{') {
            let end = body.find('}').unwrap_or(body.len());
            body[..end].split(',').map(str::trim).collect()
        } else {
            vec![rest]
        };
        for n in names {
            let name: String = n
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if modules.contains(&name) {
                found.insert(name);
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name != "tests.rs" && !name.ends_with("_tests.rs") {
                out.push(path);
            }
        }
    }
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules: BTreeSet<String> = ALLOWED.iter().map(|(m, _)| m.to_string()).collect();
    let mut graph = BTreeMap::new();
    for module in &modules {
        let mut files = Vec::new();
        let dir = src.join(module);
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        } else {
            files.push(src.join(format!("{module}.rs")));
        }
        let mut deps = BTreeSet::new();
        for f in files {
            deps.extend(used(&code(&std::fs::read_to_string(&f).unwrap()), &modules));
        }
        deps.remove(module);
        graph.insert(module.clone(), deps);
    }
    graph
}

#[test]
fn every_module_uses_only_the_modules_it_is_allowed_to() {
    let graph = graph();
    let mut extra = Vec::new();
    for (module, allowed) in ALLOWED {
        for dep in &graph[*module] {
            if !allowed.contains(&dep.as_str()) {
                extra.push(format!("{module} -> {dep}"));
            }
        }
    }
    assert!(extra.is_empty(), "edges not in ALLOWED: {extra:?}");
    // The edges the design forbids explicitly (docs/architecture.md).
    for (from, to) in [("config", "layout"), ("pci", "fdt"), ("channel", "pci")] {
        assert!(!graph[from].contains(to), "{from} must not use {to}");
    }
}

#[test]
fn the_module_graph_has_no_cycle() {
    let graph = graph();
    // Kahn: repeatedly remove modules whose dependencies are all removed.
    let mut left: BTreeMap<&String, &BTreeSet<String>> = graph.iter().collect();
    while !left.is_empty() {
        let ready: Vec<&String> = left
            .iter()
            .filter(|(_, deps)| deps.iter().all(|d| !left.contains_key(d)))
            .map(|(m, _)| *m)
            .collect();
        assert!(!ready.is_empty(), "a cycle among {:?}", left.keys());
        for m in ready {
            left.remove(m);
        }
    }
}

#[test]
fn every_top_level_module_has_an_entry() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let listed: BTreeSet<&str> = ALLOWED.iter().map(|(m, _)| *m).collect();
    for line in lib.lines() {
        if let Some(name) = line.trim().strip_prefix("pub mod ") {
            let name = name.trim_end_matches(';');
            assert!(listed.contains(name), "module {name} is not in ALLOWED");
        }
    }
}

#[test]
fn the_reader_sees_a_forbidden_import_as_an_edge() {
    let modules: BTreeSet<String> = ["layout", "pci"].map(String::from).into();
    let text = code("use crate::{layout::CellLayout, pci};\n// crate::fdt\n");
    assert_eq!(used(&text, &modules), modules);
}
