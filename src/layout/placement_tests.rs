//! Placement errors of cell files: `place_cell` points each at the file,
//! line, column and key that caused it.

use super::place_cell;
use crate::config::tests::{bridge_cell, head, memory_cell};
use crate::config::{parse, LoadOptions};
use std::path::Path;

#[track_caller]
fn assert_err(text: &str, expected: &str) {
    let opts = LoadOptions { check_files: false };
    let cfg = parse(
        text,
        Some(Path::new("cells/x.toml")),
        Path::new("/cells"),
        &opts,
    )
    .unwrap_or_else(|e| panic!("not valid: {e}"));
    match place_cell(&cfg) {
        Ok(_) => panic!("placed: {text}"),
        Err(e) => assert_eq!(e.to_string(), expected),
    }
}

#[test]
fn rejects_mmio32_window_over_a_virtio_device() {
    assert_err(
        &head(
            "[[virtio_mmio]]\nid = \"r\"\nkind = \"rng\"\nbase = 0xd0100000\n\
             [[pci_bridge]]\nid = \"p\"\nkind = \"ecam\"\nmmio32 = { base = 0xd0000000, size = \"16M\" }\n",
        ),
        "cells/x.toml:15:10: pci_bridge[0].mmio32: pci bridge p mmio32 window at \
         0xd0000000..0xd1000000 collides with debug-exit",
    );
}

#[test]
fn rejects_mmio64_window_over_ram_naming_the_region_as_in_the_file() {
    // memory[0] in the file is the high region; layout sorts it second.
    assert_err(
        &memory_cell(
            "[[memory]]\nbase = 0x100000000\nsize = \"4G\"\n[[memory]]\nbase = 0\nsize = \"256M\"\n",
        )
        .replace(
            "path = \"bzImage\"\n",
            "path = \"bzImage\"\n[[pci_bridge]]\nid = \"p\"\nkind = \"ecam\"\n\
             mmio64 = { base = 0x100000000, size = \"1G\" }\n",
        ),
        "cells/x.toml:15:10: pci_bridge[0].mmio64: pci bridge p mmio64 window at \
         0x100000000..0x140000000 collides with memory[0]",
    );
}

#[test]
fn rejects_pci_config_space_inside_ram() {
    assert_err(
        &bridge_cell("ecam", "config_base = 0x8000000\n"),
        "cells/x.toml:11:15: pci_bridge[0].config_base: pci bridge pci0 config space at \
         0x8000000..0x8100000 collides with memory[0]",
    );
}

#[test]
fn rejects_two_bridges_with_the_same_bus_start() {
    assert_err(
        &bridge_cell(
            "ecam",
            "[[pci_bridge]]\nid = \"pci1\"\nkind = \"cam\"\nbus_start = 0\nbus_end = 3\n",
        ),
        "cells/x.toml:14:13: pci_bridge[1].bus_start: bus 0 is already the first bus of \
         pci bridge pci0; host bridges need distinct bus_start values",
    );
    // Defaulted bus_start: reported at the second bridge's table.
    assert_err(
        &bridge_cell("ecam", "[[pci_bridge]]\nid = \"pci1\"\nkind = \"cam\"\n"),
        "cells/x.toml:11:1: pci_bridge[1].bus_start: bus 0 is already the first bus of \
         pci bridge pci0; host bridges need distinct bus_start values",
    );
}

#[test]
fn rejects_two_virtio_devices_at_the_same_base() {
    assert_err(
        &head(
            "[[virtio_mmio]]\nid = \"a\"\nkind = \"rng\"\nbase = 0xd0100000\n\
             [[virtio_mmio]]\nid = \"b\"\nkind = \"rng\"\nbase = 0xd0100000\n",
        ),
        "cells/x.toml:15:8: virtio_mmio[1].base: virtio-mmio b at 0xd0100000..0xd0101000 \
         collides with virtio-mmio a",
    );
}

#[test]
fn rejects_virtio_base_colliding_with_a_platform_device() {
    assert_err(
        &head("[[virtio_mmio]]\nid = \"r\"\nkind = \"rng\"\nbase = 0xd0000000\n"),
        "cells/x.toml:11:8: virtio_mmio[0].base: virtio-mmio r at 0xd0000000..0xd0001000 \
         collides with debug-exit",
    );
}

#[test]
fn rejects_virtio_irq_already_in_use() {
    assert_err(
        &head("[[virtio_mmio]]\nid = \"r\"\nkind = \"rng\"\nirq = 4\n"),
        "cells/x.toml:11:7: virtio_mmio[0].irq: IOAPIC pin 4 for virtio-mmio r is already used by console",
    );
}

#[test]
fn rejects_uart_port_colliding_with_the_console_at_its_port_key() {
    assert_err(
        &head("[[uart]]\nid = \"u\"\nport = 0x3f8\n"),
        "cells/x.toml:10:8: uart[0].port: uart u at ports 0x3f8..0x400 collides with console",
    );
}
