//! Host-side cost of planning an attach (placement, the overlay built and
//! checked against the cell's current tree) with 0, 4 and 12 devices
//! already attached: `attach::plan`, which rebuilds the current tree from
//! the base and every attached overlay, against `attach::plan_on` with the
//! tree kept from the previous attach (what a running cell does). How the
//! part of an attach cellvm computes grows as devices accumulate; no KVM,
//! no guest (scripts/bench-attach.sh measures those). Prints a table;
//! never asserts.
//!
//! Run: `cargo bench --bench attach_plan`.

// Benchmark code: a failed step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cellvm::attach::{self, AttachedDevice};
use cellvm::config::{self, LoadOptions};
use cellvm::layout::CellLayout;
use std::path::Path;
use std::time::Instant;

const ROUNDS: u32 = 200;

fn device(text: &str) -> config::DeviceConfig {
    config::parse_device(
        text,
        None,
        Path::new("/"),
        &LoadOptions { check_files: false },
    )
    .expect("valid description")
    .device
}

fn virtio(i: usize) -> config::DeviceConfig {
    device(&format!(
        "[[virtio_mmio]]\nid = \"rng{i}\"\nkind = \"rng\"\n"
    ))
}

fn bridge() -> config::DeviceConfig {
    device("[[pci_bridge]]\nid = \"bench0\"\nkind = \"ecam\"\nbus_start = 8\n[[pci_bridge.device]]\nslot = 1\nkind = \"test\"\n")
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cfg = config::load(
        &root.join("cells/test-agent.toml"),
        &LoadOptions { check_files: false },
    )
    .expect("cell file");
    let base_layout = CellLayout::new(&cfg).expect("layout");
    let base = cellvm::fdt::build_base_tree(&cfg, &base_layout).expect("base tree");
    println!("| already attached | plan, tree rebuilt (median) | plan, tree kept (median) | kept vs 0 attached |");
    println!("|---|---|---|---|");
    let mut first = None;
    for already in [0usize, 4, 12] {
        let mut layout = base_layout.clone();
        let mut attached: Vec<AttachedDevice> = Vec::new();
        let mut kept = attach::current_tree(&base, &attached).expect("tree");
        for i in 0..already {
            let mut p =
                attach::plan_on(&virtio(i), &layout, &base, &attached, kept.clone()).expect("plan");
            kept = p.take_tree().expect("tree");
            p.commit(&mut layout, &mut attached).expect("commit");
        }
        let dev = bridge();
        let median = |f: &dyn Fn()| {
            let mut ns: Vec<u128> = (0..ROUNDS)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed().as_nanos()
                })
                .collect();
            ns.sort_unstable();
            ns[ns.len() / 2] as f64 / 1e6
        };
        let rebuilt = median(&|| {
            attach::plan(&dev, &layout, &base, &attached).expect("plan");
        });
        let with_kept = median(&|| {
            attach::plan_on(&dev, &layout, &base, &attached, kept.clone()).expect("plan");
        });
        let base_ms = *first.get_or_insert(with_kept);
        println!(
            "| {already} | {rebuilt:.3} ms | {with_kept:.3} ms | {:.2}x |",
            with_kept / base_ms
        );
    }
}
