//! Shared by the fuzz targets: the cell the device and overlay targets attach
//! to, built once per process.

#![allow(dead_code)]

use cellvm::config::{self, CellConfig, LoadOptions};
use cellvm::fdt::Node;
use cellvm::layout::CellLayout;
use std::path::Path;
use std::sync::OnceLock;

/// Options for parsing fuzz input: never touch the host's files.
pub const NO_FILES: LoadOptions = LoadOptions { check_files: false };

/// Directory relative paths resolve against (never read: `NO_FILES`).
pub fn base_dir() -> &'static Path {
    Path::new("/nonexistent/cellvm-fuzz")
}

/// A running cell as `attach` sees it: config, layout and booted base tree.
pub struct Cell {
    pub config: CellConfig,
    pub layout: CellLayout,
    pub tree: Node,
}

/// The cell of `cells/test-pci.toml` plus a UART, a virtio-mmio device and
/// connector j1, so attachments meet every kind of boot-time device and
/// add-on boards have somewhere to go.
const CELL: &str = concat!(
    include_str!("../../../cells/test-pci.toml"),
    r#"
[[uart]]
id = "com2"

[[virtio_mmio]]
id = "rng0"
kind = "rng"

[[connector]]
id = "j1"
size = "4M"
"#
);

/// The cell, parsed, laid out and turned into its base tree once.
pub fn cell() -> &'static Cell {
    static CELL_ONCE: OnceLock<Cell> = OnceLock::new();
    CELL_ONCE.get_or_init(|| {
        let config = config::parse(CELL, None, base_dir(), &NO_FILES).unwrap();
        let layout = cellvm::layout::place_cell(&config).unwrap();
        let tree = cellvm::fdt::build_base_tree(&config, &layout).unwrap();
        Cell {
            config,
            layout,
            tree,
        }
    })
}
