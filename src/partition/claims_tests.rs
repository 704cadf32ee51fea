use super::claims::{running_cells, CellClaims, ClaimError};
use crate::config::{parse, CellConfig, DeviceConfig, LoadOptions};
use std::path::Path;

const NO_FILES: LoadOptions = LoadOptions { check_files: false };

/// A cell `name` with `cpus` lines (after `count = 1`) and device tables.
fn cell(name: &str, cpus: &str, tables: &str) -> CellConfig {
    let text = format!(
        "name = \"{name}\"\n[cpus]\ncount = 1\n{cpus}\n[[memory]]\nsize = \"64M\"\n\
         [kernel]\npath = \"k\"\n{tables}"
    );
    match parse(&text, Some(Path::new("c.toml")), Path::new("/"), &NO_FILES) {
        Ok(c) => c,
        Err(e) => panic!("rejected: {e}"),
    }
}

fn disk(id: &str, image: &Path, read_only: bool) -> String {
    format!(
        "[[virtio_mmio]]\nid = \"{id}\"\nkind = \"block\"\npath = \"{}\"\nread_only = {read_only}\n",
        image.display()
    )
}

/// A claims directory and a 4 KiB image in a fresh temporary directory.
fn setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("claims");
    std::fs::create_dir(&dir).unwrap();
    let image = tmp.path().join("disk.img");
    std::fs::write(&image, vec![0u8; 4096]).unwrap();
    (tmp, dir, image)
}

/// `DEV:INO` of `path`, as records name images.
fn id(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap();
    format!("{}:{}", m.dev(), m.ino())
}

fn refusal(r: Result<CellClaims, ClaimError>) -> String {
    match r {
        Ok(c) => panic!("admitted: {:?}", c.lines()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_second_cell_with_a_running_cells_name_is_refused_naming_it() {
    let (_tmp, dir, _) = setup();
    let _a = CellClaims::take(&cell("a", "", ""), &dir).unwrap();
    let err = refusal(CellClaims::take(&cell("a", "", ""), &dir));
    assert_eq!(
        err,
        format!(
            "cell name \"a\" (name) is in use by cell a (pid {}); a cell with this name is \
             already running",
            std::process::id()
        )
    );
}

#[test]
fn a_pinned_cpu_is_held_exclusively_unless_every_user_shares_it() {
    let (_tmp, dir, _) = setup();
    let a = CellClaims::take(&cell("a", "pin = [1]", ""), &dir).unwrap();
    let err = refusal(CellClaims::take(&cell("b", "pin = [1]", ""), &dir));
    assert!(
        err.starts_with("host CPU 1 (cpus.pin[0]) is in use by cell a (pid "),
        "{err}"
    );
    drop(a);
    let shared = "pin = [1]\nshared = true";
    let _a = CellClaims::take(&cell("a", shared, ""), &dir).unwrap();
    let _b = CellClaims::take(&cell("b", shared, ""), &dir).unwrap();
    let err = refusal(CellClaims::take(&cell("c", "pin = [1]", ""), &dir));
    assert!(err.contains("is in use by cell a (pid"), "{err}");
    assert!(err.contains(", cell b (pid"), "{err}");
}

#[test]
fn a_refused_start_releases_what_it_had_claimed() {
    let (_tmp, dir, _) = setup();
    let _a = CellClaims::take(&cell("a", "pin = [1]", ""), &dir).unwrap();
    refusal(CellClaims::take(&cell("b", "pin = [1]", ""), &dir));
    // b's name was claimed before its CPU was refused; it is free again.
    let _b = CellClaims::take(&cell("b", "pin = [0]", ""), &dir).unwrap();
}

#[test]
fn an_image_written_by_a_running_cell_is_refused_to_writers_and_readers() {
    let (_tmp, dir, image) = setup();
    let _a = CellClaims::take(&cell("a", "", &disk("d", &image, false)), &dir).unwrap();
    let err = refusal(CellClaims::take(
        &cell("b", "", &disk("d", &image, false)),
        &dir,
    ));
    assert!(
        err.starts_with(&format!(
            "disk image {} (d.path) is in use by cell a (pid",
            image.display()
        )),
        "{err}"
    );
    assert!(
        err.ends_with("use another image, or say read_only = true in every cell that uses it"),
        "{err}"
    );
    refusal(CellClaims::take(
        &cell("c", "", &disk("d", &image, true)),
        &dir,
    ));
}

#[test]
fn an_image_read_by_running_cells_is_shared_with_readers_not_writers() {
    let (_tmp, dir, image) = setup();
    let _a = CellClaims::take(&cell("a", "", &disk("d", &image, true)), &dir).unwrap();
    let _b = CellClaims::take(&cell("b", "", &disk("d", &image, true)), &dir).unwrap();
    let err = refusal(CellClaims::take(
        &cell("c", "", &disk("d", &image, false)),
        &dir,
    ));
    assert!(err.contains("in use by cell a (pid"), "{err}");
    assert!(err.contains(", cell b (pid"), "{err}");
}

#[test]
fn a_released_device_frees_its_image() {
    let (_tmp, dir, image) = setup();
    let a = CellClaims::take(&cell("a", "", ""), &dir).unwrap();
    let dev: DeviceConfig = cell("x", "", &disk("hot", &image, false)).devices()[0].clone();
    a.claim_device(&dev).unwrap();
    assert_eq!(
        a.lines(),
        [format!(
            "image {} read-write {}",
            id(&image),
            image.display()
        )]
    );
    refusal(CellClaims::take(
        &cell("b", "", &disk("d", &image, false)),
        &dir,
    ));
    a.release_device("hot");
    assert_eq!(a.lines(), Vec::<String>::new());
    let _b = CellClaims::take(&cell("b", "", &disk("d", &image, false)), &dir).unwrap();
}

#[test]
fn releasing_a_bridge_releases_the_functions_added_to_it_and_nothing_else() {
    let (_tmp, dir, image) = setup();
    let other = image.with_file_name("other.img");
    std::fs::write(&other, b"x").unwrap();
    let a = CellClaims::take(&cell("a", "", ""), &dir).unwrap();
    let mut part = cell("x", "", &disk("hot0", &image, false)).devices()[0].clone();
    if let DeviceConfig::VirtioMmio(v) = &mut part {
        v.id = "hot0/08:04.0".into();
    }
    let mut unrelated = cell("x", "", &disk("hot0x", &other, false)).devices()[0].clone();
    if let DeviceConfig::VirtioMmio(v) = &mut unrelated {
        v.id = "hot0x/08:04.0".into();
    }
    a.claim_device(&part).unwrap();
    a.claim_device(&unrelated).unwrap();
    a.release_device("hot0");
    assert_eq!(
        a.lines(),
        [format!(
            "image {} read-write {}",
            id(&other),
            other.display()
        )],
        "hot0's function went, hot0x's stayed"
    );
}

#[test]
fn an_image_locked_by_another_program_is_refused_without_a_cell_name() {
    let (_tmp, dir, image) = setup();
    // What QEMU holds on an image it writes: bytes 100, 101 and 201.
    let qemu = std::fs::File::open(&image).unwrap();
    for byte in [100, 101, 201] {
        lock_byte(&qemu, byte);
    }
    let err = refusal(CellClaims::take(
        &cell("b", "", &disk("d", &image, true)),
        &dir,
    ));
    assert!(
        err.contains("in use by another process (not a cell"),
        "{err}"
    );
}

fn lock_byte(file: &std::fs::File, byte: i64) {
    use std::os::fd::AsRawFd;
    // SAFETY: flock is plain data.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_RDLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = byte;
    fl.l_len = 1;
    // SAFETY: one valid flock struct on an open fd.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    assert_eq!(r, 0);
}

#[test]
fn running_cells_lists_live_records_with_their_claims_and_skips_stale_ones() {
    let (_tmp, dir, image) = setup();
    let a = CellClaims::take(&cell("a", "pin = [0]", &disk("d", &image, true)), &dir).unwrap();
    let b = CellClaims::take(&cell("b", "", ""), &dir).unwrap();
    drop(b);
    let cells = running_cells(&dir);
    assert_eq!(cells.len(), 1, "{cells:?}");
    assert_eq!(cells[0].cell, "a");
    assert_eq!(cells[0].pid, std::process::id());
    assert_eq!(
        cells[0].claims,
        [
            "cpu 0 exclusive".to_string(),
            format!("image {} read-only {}", id(&image), image.display())
        ]
    );
    drop(a);
    assert!(running_cells(&dir).is_empty());
    // Lock files stay: cellvm never deletes them.
    assert!(dir.join("name-a.lock").exists());
}

#[test]
fn a_refusal_never_names_the_refused_cell_from_its_previous_run() {
    let (_tmp, dir, _) = setup();
    // b ran before and claimed CPU 1; its record stays on disk.
    drop(CellClaims::take(&cell("b", "pin = [1]", ""), &dir).unwrap());
    let _a = CellClaims::take(&cell("a", "pin = [1]", ""), &dir).unwrap();
    let err = refusal(CellClaims::take(&cell("b", "pin = [1]", ""), &dir));
    assert!(err.contains("is in use by cell a (pid"), "{err}");
    assert!(!err.contains("cell b"), "{err}");
}

#[test]
fn one_image_reached_by_another_path_is_the_same_image() {
    let (tmp, dir, image) = setup();
    let sub = tmp.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let detour = sub.join("..").join("disk.img");
    let link = tmp.path().join("link.img");
    std::os::unix::fs::symlink(&image, &link).unwrap();
    let _a = CellClaims::take(&cell("a", "", &disk("d", &detour, false)), &dir).unwrap();
    let err = refusal(CellClaims::take(
        &cell("b", "", &disk("d", &link, false)),
        &dir,
    ));
    assert!(err.contains("is in use by cell a (pid"), "{err}");
}

#[test]
fn a_handover_claim_holds_the_image_through_the_move_and_confirms_once_the_giver_lets_go() {
    let (_tmp, dir, image) = setup();
    let a = CellClaims::take(&cell("a", "", &disk("d", &image, false)), &dir).unwrap();
    let b_cfg = cell(
        "b",
        "",
        &(disk("d", &image, false) + "state = \"reserved\"\n"),
    );
    let b = CellClaims::take(&b_cfg, &dir).unwrap();
    let dev = b_cfg.devices()[0].clone();
    b.claim_device_from(&dev, "a").unwrap();
    // While a still has it, b cannot confirm...
    let err = b.claim_device(&dev).unwrap_err().to_string();
    assert!(err.contains("is in use by cell a (pid"), "{err}");
    drop(a);
    // ...and once a let go, no third cell gets in before b confirms.
    let err = refusal(CellClaims::take(
        &cell("c", "", &disk("d", &image, true)),
        &dir,
    ));
    assert!(err.contains("is in use by cell b (pid"), "{err}");
    b.claim_device(&dev).unwrap();
    assert_eq!(
        b.lines(),
        [format!(
            "image {} read-write {}",
            id(&image),
            image.display()
        )]
    );
}

#[test]
fn a_handover_from_a_cell_that_does_not_hold_the_image_is_refused() {
    let (_tmp, dir, image) = setup();
    let _a = CellClaims::take(&cell("a", "", &disk("d", &image, false)), &dir).unwrap();
    let b_cfg = cell(
        "b",
        "",
        &(disk("d", &image, false) + "state = \"reserved\"\n"),
    );
    let b = CellClaims::take(&b_cfg, &dir).unwrap();
    let dev = b_cfg.devices()[0].clone();
    let err = b.claim_device_from(&dev, "x").unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "disk image {} (d.path) is not held by cell x: there is nothing to hand over",
            image.display()
        )
    );
    assert_eq!(b.lines(), Vec::<String>::new());
}
