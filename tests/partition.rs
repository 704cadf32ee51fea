//! Host resources claimed by running cells (docs/partitioning.md), end to
//! end with the `cellvm` binary on the host's KVM and tiny guests: a second
//! cell on a held image or CPU is refused naming the running cell, readers
//! share, a killed cell's claims go with it, a refused attach keeps nothing.

// Test and benchmark code: a failed step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::host_cells::{stop, wait_ready, Rig};

fn disk(read_only: bool) -> String {
    format!(
        "[[virtio_mmio]]\nid = \"d\"\nkind = \"block\"\npath = \"disk.img\"\n\
         read_only = {read_only}\n"
    )
}

#[test]
fn a_second_cell_on_a_written_image_is_refused_naming_the_running_cell_and_creates_nothing() {
    let rig = Rig::new();
    let a = rig.start(&rig.cell("a", "", &disk(false)));
    let console = "[console]\noutput = \"file\"\npath = \"b.log\"\n";
    let b = rig.cell("b", "", &format!("{console}{}", disk(false)));
    let err = rig.refused(&b);
    let image = std::fs::canonicalize(rig.path("disk.img")).unwrap();
    assert!(
        err.contains(&format!(
            "disk image {} (d.path) is in use by cell a (pid {}); use another image, or say \
             read_only = true in every cell that uses it",
            image.display(),
            a.id()
        )),
        "{err}"
    );
    assert!(
        !rig.path("b.log").exists(),
        "a refused cell created its console file"
    );
    assert!(
        !rig.path("b.sock").exists(),
        "a refused cell created its socket"
    );
    stop(a);
}

#[test]
fn cells_that_read_an_image_share_it_and_cells_lists_the_claims() {
    let rig = Rig::new();
    let a = rig.start(&rig.cell("a", "", &disk(true)));
    let b = rig.start(&rig.cell("b", "pin = [0]", &disk(true)));
    let cells = rig.cellvm(&["cells"]);
    let listed = String::from_utf8_lossy(&cells.stdout);
    let meta = std::fs::metadata(rig.path("disk.img")).unwrap();
    let image = format!(
        "image {}:{} read-only {}",
        std::os::unix::fs::MetadataExt::dev(&meta),
        std::os::unix::fs::MetadataExt::ino(&meta),
        rig.path("disk.img").display()
    );
    assert!(
        listed.contains(&format!(
            "claims:\n  cell a (pid {}): {image}\n  cell b (pid {}): cpu 0 exclusive, {image}\n",
            a.id(),
            b.id()
        )),
        "{listed}"
    );
    let err = rig.refused(&rig.cell("c", "", &disk(false)));
    assert!(err.contains("is in use by cell a (pid"), "{err}");
    assert!(err.contains(", cell b (pid"), "{err}");
    stop(a);
    stop(b);
}

#[test]
fn a_pinned_cpu_held_by_a_killed_cell_is_free_again() {
    let rig = Rig::new();
    let mut a = rig.start(&rig.cell("a", "pin = [1]", ""));
    let b = rig.cell("b", "pin = [1]", "");
    let err = rig.refused(&b);
    assert!(
        err.contains(&format!(
            "host CPU 1 (cpus.pin[0]) is in use by cell a (pid {})",
            a.id()
        )),
        "{err}"
    );
    a.kill().unwrap();
    a.wait().unwrap();
    stop(rig.start(&b));
}

#[test]
fn a_cell_name_is_claimed_even_without_a_control_socket() {
    let rig = Rig::new();
    let cell = rig.cell("a", "", "");
    let mut child = rig.spawn(&cell, &["--no-api"]);
    wait_ready(&mut child);
    let err = rig.refused(&cell);
    assert!(
        err.contains("cell name \"a\" (name) is in use by cell a (pid"),
        "{err}"
    );
    stop(child);
}

#[test]
fn an_attach_of_a_held_image_is_refused_and_a_refused_attach_keeps_no_claim() {
    let rig = Rig::new();
    let hot = rig.path("hot.toml");
    std::fs::write(
        &hot,
        "[[virtio_mmio]]\nid = \"hot\"\nkind = \"block\"\npath = \"disk.img\"\n",
    )
    .unwrap();
    // The tiny guest has no agent: the attach claims the image, is
    // refused for want of an agent, and must release the image.
    let a = rig.start(&rig.cell("a", "", ""));
    let out = rig.cellvm(&["attach", "a", hot.to_str().unwrap(), "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let b = rig.start(&rig.cell("b", "", &disk(false)));
    // Now b writes the image: an attach to a names b.
    let out = rig.cellvm(&["attach", "a", hot.to_str().unwrap(), "--timeout", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("(hot.path) is in use by cell b (pid {})", b.id())),
        "{err}"
    );
    stop(a);
    stop(b);
}

/// `Vm...` field `key` of /proc/PID/status, in KiB.
fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("{key} missing from /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn prefaulted_memory_is_resident_and_locked_memory_is_locked_before_the_guest_runs() {
    let rig = Rig::new();
    let plain = rig.start(&rig.cell("plain", "", ""));
    let plain_rss = proc_status_kib(plain.id(), "VmRSS:");
    stop(plain);
    assert!(
        plain_rss < 48 * 1024,
        "a plain 64M cell has {plain_rss} KiB resident"
    );

    let path = rig.path("static.toml");
    std::fs::write(
        &path,
        format!(
            "name = \"static\"\n[cpus]\ncount = 1\n[[memory]]\nsize = \"64M\"\nprefault = true\n\
             lock = true\n[kernel]\npath = \"{}\"\n",
            rig.elf.display()
        ),
    )
    .unwrap();
    let cell = rig.start(&path);
    let rss = proc_status_kib(cell.id(), "VmRSS:");
    let locked = proc_status_kib(cell.id(), "VmLck:");
    stop(cell);
    assert!(rss >= 64 * 1024, "prefaulted: {rss} KiB resident");
    assert!(locked >= 64 * 1024, "locked: {locked} KiB");
}

#[test]
fn an_attach_of_an_image_reached_through_dotdot_is_claimed_without_killing_the_cell() {
    let rig = Rig::new();
    let sub = rig.path("sub");
    std::fs::create_dir(&sub).unwrap();
    let hot = sub.join("hot.toml");
    std::fs::write(
        &hot,
        "[[virtio_mmio]]\nid = \"hot\"\nkind = \"block\"\npath = \"../disk.img\"\n",
    )
    .unwrap();
    let a = rig.start(&rig.cell("a", "", ""));
    // No agent in the tiny guest: the attach claims, fails and releases.
    let out = rig.cellvm(&["attach", "a", hot.to_str().unwrap(), "--timeout", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no_agent"), "{err}");
    let status = rig.cellvm(&["status", "a"]);
    assert!(status.status.success(), "the cell died: {status:?}");
    stop(a);
}

#[test]
fn a_cell_that_reserves_an_image_another_owns_starts_and_shows_it_reserved() {
    let rig = Rig::new();
    let a = rig.start(&rig.cell("a", "", &disk(false)));
    let reserved = format!("{}state = \"reserved\"\n", disk(false));
    let b = rig.start(&rig.cell("b", "", &reserved));
    let devices = rig.cellvm(&["devices", "b", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&devices.stdout).unwrap();
    let d = list
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "d")
        .unwrap_or_else(|| panic!("no device d in {list}"));
    assert_eq!(d["state"], "reserved", "{list}");
    let cells = rig.cellvm(&["cells"]);
    let listed = String::from_utf8_lossy(&cells.stdout);
    assert!(
        listed.contains(&format!("cell b (pid {}): its name only", b.id())),
        "{listed}"
    );
    stop(a);
    stop(b);
}
