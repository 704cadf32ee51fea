use super::*;
use crate::config::{ConsoleInput, ConsoleOutput};

/// A directory with a minimal bzImage (`HdrS` at 0x202) and a disk.
fn files() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut k = vec![0u8; 0x400];
    k[0x202..0x206].copy_from_slice(b"HdrS");
    std::fs::write(dir.path().join("bzImage"), k).unwrap();
    std::fs::write(dir.path().join("disk.img"), vec![0u8; 4096]).unwrap();
    dir
}

fn args(dir: &Path) -> RunArgs {
    RunArgs {
        kernel: Some(dir.join("bzImage")),
        ..RunArgs::default()
    }
}

#[test]
fn without_a_file_the_kernel_flag_is_required() {
    let e = cell_config(&RunArgs::default()).unwrap_err();
    assert!(e.contains("give a cell file or --kernel"), "{e}");
}

#[test]
fn a_config_less_run_gets_one_vcpu_256_mib_and_the_console_on_stdout() {
    let dir = files();
    let cfg = cell_config(&args(dir.path())).unwrap();
    assert_eq!(cfg.cpus.count, 1);
    assert_eq!(cfg.memory.iter().map(|m| m.size).sum::<u64>(), 256 << 20);
    assert_eq!(cfg.console.output, ConsoleOutput::Stdout);
    assert!(cfg.name.starts_with("run-"), "{}", cfg.name);
    assert_eq!(cfg.kernel.cmdline, config::DEFAULT_CMDLINE);
    // In a test the console's input is not a terminal.
    assert_eq!(cfg.console.input, ConsoleInput::None);
}

#[test]
fn flags_describe_cpus_memory_disks_rng_and_the_command_line() {
    let dir = files();
    let a = RunArgs {
        name: Some("ci".into()),
        cpus: Some(2),
        memory: Some("512M".into()),
        cmdline: Some("console=ttyS0 quiet".into()),
        cmdline_append: Some("panic=-1".into()),
        disk: vec![format!("{}/disk.img,ro", dir.path().display())],
        rng: true,
        ..args(dir.path())
    };
    let cfg = cell_config(&a).unwrap();
    assert_eq!(cfg.name, "ci");
    assert_eq!(cfg.cpus.count, 2);
    assert_eq!(cfg.memory.iter().map(|m| m.size).sum::<u64>(), 512 << 20);
    assert_eq!(cfg.kernel.cmdline, "console=ttyS0 quiet panic=-1");
    let ids: Vec<String> = cfg.devices().iter().map(|d| d.id().to_string()).collect();
    assert_eq!(ids, ["disk0", "rng"]);
}

#[test]
fn a_run_writes_acpi_tables_unless_told_not_to() {
    let dir = files();
    assert!(cell_config(&args(dir.path())).unwrap().kernel.acpi);
    let a = RunArgs {
        no_acpi: true,
        ..args(dir.path())
    };
    assert!(!cell_config(&a).unwrap().kernel.acpi);
}

#[test]
fn a_bad_flag_value_is_reported_as_the_flags_fault() {
    let dir = files();
    let a = RunArgs {
        memory: Some("lots".into()),
        ..args(dir.path())
    };
    let e = cell_config(&a).unwrap_err();
    assert!(e.starts_with("the command-line flags: "), "{e}");
    assert!(e.contains("memory"), "{e}");
    let a = RunArgs {
        disk: vec!["/nonexistent/disk.img".into()],
        ..args(dir.path())
    };
    let e = cell_config(&a).unwrap_err();
    assert!(e.contains("/nonexistent/disk.img"), "{e}");
}

#[test]
fn flags_override_a_cell_file_and_its_errors_still_point_into_it() {
    let dir = files();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "name = \"c\"\n[cpus]\ncount = 1\n[[memory]]\nbase = 0\nsize = \"128M\"\n\
         [kernel]\npath = \"bzImage\"\ncmdline = \"console=ttyS0\"\n",
    )
    .unwrap();
    let a = RunArgs {
        cell: Some(file.clone()),
        cpus: Some(2),
        memory: Some("64M".into()),
        rng: true,
        ..RunArgs::default()
    };
    let cfg = cell_config(&a).unwrap();
    assert_eq!((cfg.name.as_str(), cfg.cpus.count), ("c", 2));
    assert_eq!(cfg.memory[0].size, 64 << 20);
    assert_eq!(cfg.devices().len(), 1);
    // A file error is the file's, at its line and column.
    std::fs::write(&file, "name = \"c\"\n[cpus]\ncount = 0\n").unwrap();
    let e = cell_config(&a).unwrap_err();
    assert!(e.contains("c.toml:3:"), "{e}");
}

#[test]
fn a_timeout_must_be_positive_and_finite() {
    assert_eq!(
        timeout(Some(1.5)).unwrap(),
        Some(Duration::from_millis(1500))
    );
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(timeout(Some(bad)).is_err(), "{bad}");
    }
}

#[test]
fn an_expectation_turns_an_unseen_pass_into_a_failure_and_leaves_the_rest() {
    let expect = Some("done");
    let seen = StopReason::ConsoleExpected {
        pattern: "done".into(),
    };
    assert_eq!(with_expectation(seen.clone(), expect), seen);
    let off = with_expectation(StopReason::GuestPowerOff, expect);
    assert_eq!(off.exit_code(), crate::stop::EXIT_EXPECT_NOT_SEEN);
    assert_eq!(
        with_expectation(StopReason::GuestPanic, expect),
        StopReason::GuestPanic
    );
    assert_eq!(
        with_expectation(StopReason::GuestPowerOff, None),
        StopReason::GuestPowerOff
    );
}

#[test]
fn an_existing_report_file_is_never_replaced() {
    let dir = files();
    let path = dir.path().join("disk.img");
    let e = create_report(&path).err().unwrap();
    assert!(e.contains("the file exists"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap().len(), 4096);
}

#[test]
fn a_report_the_run_never_wrote_is_removed_and_a_written_one_stays() {
    let dir = files();
    let path = dir.path().join("r.xml");
    drop(create_report(&path).unwrap());
    assert!(!path.exists());
    let mut r = create_report(&path).unwrap();
    r.write("<x/>").unwrap();
    drop(r);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "<x/>");
}
