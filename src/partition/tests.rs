use super::*;
use crate::config::{parse, LoadOptions};

const NO_FILES: LoadOptions = LoadOptions { check_files: false };
const HOST: Host = Host { memory: 1 << 30 };

/// A cell named `name` from `cells/NAME.toml`: one vCPU, 128M, then `tail`.
fn cell(name: &str, tail: &str) -> CellConfig {
    let text = format!(
        "name = \"{name}\"\n[cpus]\ncount = 1\n{tail}\n[[memory]]\nsize = \"128M\"\n\
         [kernel]\npath = \"bzImage\"\n"
    );
    let src = format!("cells/{name}.toml");
    match parse(&text, Some(Path::new(&src)), Path::new("/cells"), &NO_FILES) {
        Ok(c) => c,
        Err(e) => panic!("rejected: {e}"),
    }
}

fn messages(cells: &[CellConfig]) -> Vec<String> {
    check_set(cells, HOST)
        .iter()
        .map(ToString::to_string)
        .collect()
}

const DISK: &str = "[[virtio_mmio]]\nid = \"d\"\nkind = \"block\"\npath = \"/img/data.img\"\n";
const DISK_RO: &str =
    "[[virtio_mmio]]\nid = \"d\"\nkind = \"block\"\npath = \"/img/data.img\"\nread_only = true\n";

fn ivshmem(peer_id: u32, rw_size: &str) -> String {
    format!(
        "[[pci_bridge]]\nid = \"pci0\"\nkind = \"ecam\"\n[[pci_bridge.device]]\nslot = 1\n\
         kind = \"ivshmem\"\nregion = \"r\"\npeer_id = {peer_id}\nrw_size = \"{rw_size}\"\n"
    )
}

#[test]
fn cells_that_share_nothing_can_share_a_host() {
    let cells = [cell("a", "pin = [0]"), cell("b", "pin = [1]")];
    assert_eq!(messages(&cells), Vec::<String>::new());
}

#[test]
fn a_host_cpu_pinned_by_two_cells_names_both_cells_and_places() {
    let cells = [cell("a", "pin = [1]"), cell("b", "pin = [1]")];
    assert_eq!(
        messages(&cells),
        [
            "cells/b.toml:4:8: cpus.pin[0]: host CPU 1 is pinned by cells a and b; pin it in one \
          cell only, or say cpus.shared = true in both; cell a (cells/a.toml:4:8: cpus.pin[0])"
        ]
    );
}

#[test]
fn a_host_cpu_shared_by_both_cells_is_fine() {
    let shared = "pin = [1]\nshared = true";
    assert_eq!(
        messages(&[cell("a", shared), cell("b", shared)]),
        Vec::<String>::new()
    );
}

#[test]
fn a_host_cpu_shared_by_one_cell_only_conflicts() {
    let cells = [
        cell("a", "pin = [1]\nshared = true"),
        cell("b", "pin = [1]"),
    ];
    assert_eq!(messages(&cells).len(), 1, "{:?}", messages(&cells));
}

#[test]
fn two_cells_with_one_name_conflict() {
    let mut b = cell("b", "");
    b.name = "a".to_string();
    let found = messages(&[cell("a", ""), b]);
    assert_eq!(
        found,
        [
            "cells/b.toml:1:8: name: cell name \"a\" is also the name of an earlier cell; \
          cell a (cells/a.toml:1:8: name)"
        ]
    );
}

#[test]
fn an_image_written_by_two_cells_conflicts() {
    let cells = [with_disk("a", DISK), with_disk("b", DISK)];
    assert_eq!(
        messages(&cells),
        [
            "cells/b.toml:15:8: virtio_mmio[0].path: disk image /img/data.img is used read-write \
          by cell b and read-write by cell a; only read-only users may share an image; \
          cell a (cells/a.toml:15:8: virtio_mmio[0].path)"
        ]
    );
}

#[test]
fn an_image_read_by_one_cell_and_written_by_another_conflicts() {
    let cells = [with_disk("a", DISK_RO), with_disk("b", DISK)];
    let found = messages(&cells);
    assert_eq!(found.len(), 1);
    assert!(
        found[0].contains("is used read-write by cell b and read-only by cell a"),
        "{found:?}"
    );
}

#[test]
fn an_image_read_by_two_cells_is_fine() {
    let cells = [with_disk("a", DISK_RO), with_disk("b", DISK_RO)];
    assert_eq!(messages(&cells), Vec::<String>::new());
}

/// `cell` with a device table after the kernel (tables must come last).
fn with_disk(name: &str, table: &str) -> CellConfig {
    let text = format!(
        "name = \"{name}\"\n[cpus]\ncount = 1\n[[memory]]\nsize = \"128M\"\n\
         [kernel]\npath = \"bzImage\"\n\n\n\n\n{table}"
    );
    let src = format!("cells/{name}.toml");
    match parse(&text, Some(Path::new(&src)), Path::new("/cells"), &NO_FILES) {
        Ok(c) => c,
        Err(e) => panic!("rejected: {e}"),
    }
}

#[test]
fn ivshmem_peers_that_disagree_on_a_size_conflict() {
    let cells = [
        with_disk("a", &ivshmem(0, "64K")),
        with_disk("b", &ivshmem(1, "128K")),
    ];
    let found = messages(&cells);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("cells/b.toml:20:11: pci_bridge[0].device[0].rw_size: ivshmem region \"r\" has rw_size 128 KiB here but 64 KiB in cell a"),
        "{found:?}"
    );
    assert!(
        found[0].ends_with("cell a (cells/a.toml:20:11: pci_bridge[0].device[0].rw_size)"),
        "{found:?}"
    );
}

#[test]
fn ivshmem_peers_with_one_peer_id_conflict() {
    let cells = [
        with_disk("a", &ivshmem(0, "64K")),
        with_disk("b", &ivshmem(0, "64K")),
    ];
    let found = messages(&cells);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0]
            .contains("peer_id: peer id 0 of ivshmem region \"r\" is also taken by cell a; cell a"),
        "{found:?}"
    );
}

#[test]
fn ivshmem_peers_that_agree_are_fine() {
    let cells = [
        with_disk("a", &ivshmem(0, "64K")),
        with_disk("b", &ivshmem(1, "64K")),
    ];
    assert_eq!(messages(&cells), Vec::<String>::new());
}

#[test]
fn cells_whose_ram_exceeds_the_host_name_the_cell_that_goes_over() {
    let cells = [cell("a", ""), cell("b", "")];
    let found: Vec<String> = check_set(&cells, Host { memory: 200 << 20 })
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("cells/b.toml:5:1: memory[0]"),
        "{found:?}"
    );
    assert!(
        found[0]
            .ends_with("cell b brings the cells' RAM to 256 MiB, more than this host's 200 MiB"),
        "{found:?}"
    );
}

#[test]
fn every_conflict_is_reported_not_only_the_first() {
    let cells = [
        with_disk("a", DISK),
        with_disk("b", DISK),
        with_disk("c", DISK),
    ];
    assert_eq!(messages(&cells).len(), 2);
}

#[test]
fn uses_lists_name_pinned_cpus_and_images_with_modes() {
    let c = with_disk("a", DISK_RO);
    let found: Vec<(Resource, Mode)> = uses(&c).into_iter().map(|u| (u.resource, u.mode)).collect();
    assert_eq!(
        found,
        [
            (Resource::Name("a".to_string()), Mode::Exclusive),
            (
                Resource::Image(PathBuf::from("/img/data.img")),
                Mode::Shared
            ),
        ]
    );
}

#[test]
fn a_reserved_device_uses_no_image_so_another_cell_may_own_it() {
    let reserved = DISK.to_string() + "state = \"reserved\"\n";
    let cells = [with_disk("a", DISK), with_disk("b", &reserved)];
    assert_eq!(messages(&cells), Vec::<String>::new());
    assert_eq!(uses(&cells[1]).len(), 1, "only the name");
}
