use super::*;
use std::fs;
use std::path::{Path, PathBuf};

/// Parses without touching the file system, as `cells/x.toml`.
const NO_FILES: LoadOptions = LoadOptions { check_files: false };
const SRC: &str = "cells/x.toml";

/// A valid cell in seven lines; tests append tables after line 7.
pub(crate) const HEAD: &str = "\
name = \"t\"
[cpus]
count = 1
[[memory]]
size = \"256M\"
[kernel]
path = \"bzImage\"
";

/// Everything after `[cpus]`: memory and kernel (four lines).
const AFTER_CPUS: &str = "\
[[memory]]
size = \"256M\"
[kernel]
path = \"bzImage\"
";

fn parse_text(text: &str) -> Result<CellConfig, ConfigError> {
    parse(text, Some(Path::new(SRC)), Path::new("/cells"), &NO_FILES)
}

fn ok(text: &str) -> CellConfig {
    match parse_text(text) {
        Ok(cfg) => cfg,
        Err(e) => panic!("rejected: {e}"),
    }
}

#[track_caller]
fn assert_err(text: &str, expected: &str) {
    match parse_text(text) {
        Ok(cfg) => panic!("accepted: {cfg:?}"),
        Err(e) => assert_eq!(e.to_string(), expected),
    }
}

/// `HEAD` plus `tail`.
pub(crate) fn head(tail: &str) -> String {
    format!("{HEAD}{tail}")
}

/// A fake bzImage: 4 KiB of zeros with "HdrS" at 0x202.
fn bzimage_bytes() -> Vec<u8> {
    let mut image = vec![0u8; 0x1000];
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image
}

/// A valid 64-byte ELF64 x86_64 executable header (no program headers).
fn elf_bytes() -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[0..4].copy_from_slice(b"\x7fELF");
    h[4] = 2; // ELFCLASS64
    h[5] = 1; // little endian
    h[6] = 1; // EV_CURRENT
    h[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    h[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h[24..32].copy_from_slice(&0x10_0000u64.to_le_bytes()); // e_entry
    h[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    h[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    h[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    h[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
    h
}

/// An ELF64 x86_64 image with one PT_NOTE segment holding a note owned by
/// `owner` (a `vmlinux` has notes owned by "Linux").
fn elf_with_note(owner: &str) -> Vec<u8> {
    let mut f = elf_bytes();
    f[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    let notes_at = 64 + 56;
    let mut ph = vec![0u8; 56];
    ph[0..4].copy_from_slice(&4u32.to_le_bytes()); // PT_NOTE
    ph[8..16].copy_from_slice(&(notes_at as u64).to_le_bytes()); // p_offset
    let mut name = owner.as_bytes().to_vec();
    name.push(0);
    let mut note = Vec::new();
    note.extend_from_slice(&(name.len() as u32).to_le_bytes());
    note.extend_from_slice(&4u32.to_le_bytes()); // descsz
    note.extend_from_slice(&0x100u32.to_le_bytes()); // type
    note.extend_from_slice(&name);
    note.resize(note.len().next_multiple_of(4), 0);
    note.extend_from_slice(&[1, 2, 3, 4]);
    ph[32..40].copy_from_slice(&(note.len() as u64).to_le_bytes()); // p_filesz
    f.extend_from_slice(&ph);
    f.extend_from_slice(&note);
    f
}

/// A temp dir holding `bzImage`, `kernel.elf`, `vmlinux`, `initrd.img` and
/// `junk.bin`.
fn kernel_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("bzImage"), bzimage_bytes()).expect("write");
    fs::write(dir.path().join("kernel.elf"), elf_with_note("GNU")).expect("write");
    fs::write(dir.path().join("vmlinux"), elf_with_note("Linux")).expect("write");
    fs::write(dir.path().join("initrd.img"), b"initrd").expect("write");
    fs::write(dir.path().join("junk.bin"), vec![0x5au8; 0x1000]).expect("write");
    dir
}

/// A cell whose `[kernel]` table is `kernel` (which starts on line 6).
fn kernel_cell(kernel: &str) -> String {
    format!("name = \"t\"\n[cpus]\ncount = 1\n[[memory]]\nsize = \"256M\"\n{kernel}")
}

fn parse_in(dir: &Path, text: &str) -> Result<CellConfig, ConfigError> {
    parse(text, Some(Path::new(SRC)), dir, &LoadOptions::default())
}

#[track_caller]
fn assert_err_in(dir: &Path, text: &str, expected: &str) {
    match parse_in(dir, text) {
        Ok(cfg) => panic!("accepted: {cfg:?}"),
        Err(e) => assert_eq!(e.to_string(), expected),
    }
}

// ---------------------------------------------------------------------------
// Good forms

#[test]
fn accepts_minimal_config_with_defaults() {
    let cfg = ok(HEAD);
    assert_eq!(
        cfg,
        CellConfig {
            name: "t".into(),
            source: Some(PathBuf::from(SRC)),
            cpus: CpuConfig {
                count: 1,
                pin: None,
                shared: false,
            },
            memory: vec![MemoryRegion {
                base: 0,
                size: 256 << 20,
                prefault: false,
                lock: false,
            }],
            kernel: KernelConfig {
                path: PathBuf::from("/cells/bzImage"),
                format: KernelFormat::BzImage,
                initrd: None,
                cmdline: "console=ttyS0".into(),
                acpi: true,
            },
            console: ConsoleConfig {
                output: ConsoleOutput::Stdout,
                input: ConsoleInput::Stdin,
            },
            virtio_mmio: vec![],
            pci_bridges: vec![],
            uarts: vec![],
            connectors: vec![],
            origins: cfg.origins.clone(),
        }
    );
    assert_eq!(cfg.kernel.cmdline, DEFAULT_CMDLINE);
    let region = cfg.origins.memory(0).expect("origin of memory[0]");
    assert_eq!(region.at.to_string(), "cells/x.toml:4:1");
    assert_eq!(region.field, "memory[0]");
}

#[test]
fn load_options_default_to_checking_files() {
    assert!(LoadOptions::default().check_files);
}

#[test]
fn parses_size_strings() {
    let cases = [
        ("4096", 4096),
        ("64K", 64 << 10),
        ("64KiB", 64 << 10),
        ("256M", 256 << 20),
        ("256MiB", 256 << 20),
        ("1G", 1 << 30),
        ("1GiB", 1 << 30),
        (" 16M ", 16 << 20),
        ("1_048_576", 1 << 20),
        ("0", 0),
    ];
    for (text, bytes) in cases {
        assert_eq!(parse_size(text), Ok(bytes), "{text}");
    }
}

#[test]
fn rejects_malformed_size_strings() {
    assert_eq!(parse_size(""), Err(SizeError::Empty));
    assert_eq!(parse_size("M"), Err(SizeError::NoNumber));
    assert_eq!(parse_size("-1M"), Err(SizeError::NoNumber));
    assert_eq!(parse_size("1_"), Err(SizeError::NoNumber));
    assert_eq!(parse_size("12X"), Err(SizeError::BadSuffix("X".into())));
    assert_eq!(parse_size("1MB"), Err(SizeError::BadSuffix("MB".into())));
    assert_eq!(parse_size("1 M"), Err(SizeError::BadSuffix(" M".into())));
    assert_eq!(parse_size("17179869184G"), Err(SizeError::Overflow));
    assert_eq!(parse_size("99999999999999999999"), Err(SizeError::Overflow));
}

#[test]
fn formats_human_sizes() {
    assert_eq!(human_size(0).to_string(), "0 bytes");
    assert_eq!(human_size(1).to_string(), "1 byte");
    assert_eq!(human_size(1000).to_string(), "1000 bytes");
    assert_eq!(human_size(8 << 10).to_string(), "8 KiB");
    assert_eq!(human_size(8 << 20).to_string(), "8 MiB");
    assert_eq!(human_size(3 << 30).to_string(), "3 GiB");
}

#[test]
fn accepts_integer_and_string_memory_sizes_and_hex_bases() {
    let cfg = ok("\
name = \"t\"
[cpus]
count = 1
[[memory]]
size = 268435456
[[memory]]
base = 0x1_0000_0000
size = \"1GiB\"
[[memory]]
base = 0x2_0000_0000
size = \"64K\"
[kernel]
path = \"bzImage\"
");
    assert_eq!(
        cfg.memory,
        vec![
            MemoryRegion {
                base: 0,
                size: 0x1000_0000,
                prefault: false,
                lock: false,
            },
            MemoryRegion {
                base: 0x1_0000_0000,
                size: 0x4000_0000,
                prefault: false,
                lock: false,
            },
            MemoryRegion {
                base: 0x2_0000_0000,
                size: 0x1_0000,
                prefault: false,
                lock: false,
            },
        ]
    );
}

#[test]
fn sorts_memory_regions_by_base() {
    let cfg = ok("\
name = \"t\"
[cpus]
count = 1
[[memory]]
base = 0x1_0000_0000
size = \"1G\"
[[memory]]
base = 0
size = \"256M\"
[kernel]
path = \"bzImage\"
");
    let bases: Vec<u64> = cfg.memory.iter().map(|r| r.base).collect();
    assert_eq!(bases, vec![0, 0x1_0000_0000]);
}

#[test]
fn accepts_pins_one_per_vcpu() {
    let cfg = ok(&format!(
        "name = \"t\"\n[cpus]\ncount = 3\npin = [2, 0, 5]\n{AFTER_CPUS}"
    ));
    assert_eq!(
        cfg.cpus,
        CpuConfig {
            count: 3,
            pin: Some(vec![2, 0, 5]),
            shared: false,
        }
    );
}

#[test]
fn accepts_shared_pinned_cpus() {
    let cfg = ok(&format!(
        "name = \"t\"\n[cpus]\ncount = 1\npin = [1]\nshared = true\n{AFTER_CPUS}"
    ));
    assert!(cfg.cpus.shared);
}

#[test]
fn rejects_shared_cpus_without_pins() {
    assert_err(
        &format!("name = \"t\"\n[cpus]\ncount = 1\nshared = true\n{AFTER_CPUS}"),
        "cells/x.toml:4:10: cpus.shared: only pinned host CPUs can be shared: \
         give cpus.pin too, or drop cpus.shared",
    );
}

#[test]
fn accepts_prefaulted_and_locked_memory_per_region() {
    let cfg = ok(
        "name = \"t\"\n[cpus]\ncount = 1\n[[memory]]\nsize = \"256M\"\nprefault = true\n\
         lock = true\n[kernel]\npath = \"bzImage\"\n",
    );
    assert_eq!(
        cfg.memory,
        [MemoryRegion {
            base: 0,
            size: 256 << 20,
            prefault: true,
            lock: true,
        }]
    );
}

#[test]
fn device_tables_take_a_state_okay_by_default() {
    let cfg = ok(&head(
        "[[virtio_mmio]]\nid = \"a\"\nkind = \"rng\"\n[[virtio_mmio]]\nid = \"b\"\nkind = \"rng\"\n\
         state = \"reserved\"\n[[pci_bridge]]\nid = \"p\"\nkind = \"ecam\"\nstate = \"disabled\"\n\
         [[uart]]\nid = \"u\"\nstate = \"okay\"\n",
    ));
    let states: Vec<(String, DeviceState)> = cfg
        .devices()
        .iter()
        .map(|d| (d.id().to_string(), d.state()))
        .collect();
    assert_eq!(
        states,
        [
            ("a".to_string(), DeviceState::Okay),
            ("b".to_string(), DeviceState::Reserved),
            ("p".to_string(), DeviceState::Disabled),
            ("u".to_string(), DeviceState::Okay),
        ]
    );
}

#[test]
fn rejects_an_unknown_device_state_at_its_value() {
    assert_err(
        &head("[[virtio_mmio]]\nid = \"a\"\nkind = \"rng\"\nstate = \"off\"\n"),
        "cells/x.toml:11:9: virtio_mmio[0].state: \"off\" is not a device state (expected \
         \"okay\", \"reserved\" or \"disabled\")",
    );
}

#[test]
fn accepts_max_vcpus() {
    let cfg = ok(&format!("name = \"t\"\n[cpus]\ncount = 64\n{AFTER_CPUS}"));
    assert_eq!(cfg.cpus.count, MAX_VCPUS);
}

#[test]
fn accepts_dotted_keys_and_inline_tables() {
    let cfg = ok("\
name = \"t\"
cpus.count = 2
memory = [{ size = \"256M\" }]
kernel = { path = \"bzImage\", cmdline = \"console=ttyS0 quiet\" }
console.output = \"none\"
");
    assert_eq!(cfg.cpus.count, 2);
    assert_eq!(cfg.kernel.cmdline, "console=ttyS0 quiet");
    assert_eq!(cfg.console.output, ConsoleOutput::None);
}

#[test]
fn resolves_relative_paths_against_base_dir() {
    let cfg = ok(&head(
        "initrd = \"../build/initrd.img\"\n[console]\noutput = \"file\"\npath = \"logs/console.log\"\ninput = \"none\"\n",
    ));
    assert_eq!(cfg.kernel.path, PathBuf::from("/cells/bzImage"));
    assert_eq!(
        cfg.kernel.initrd,
        Some(PathBuf::from("/cells/../build/initrd.img"))
    );
    assert_eq!(
        cfg.console,
        ConsoleConfig {
            output: ConsoleOutput::File(PathBuf::from("/cells/logs/console.log")),
            input: ConsoleInput::None,
        }
    );
}

#[test]
fn keeps_absolute_paths() {
    let cfg = ok(&kernel_cell("[kernel]\npath = \"/boot/vmlinuz\"\n"));
    assert_eq!(cfg.kernel.path, PathBuf::from("/boot/vmlinuz"));
}

#[test]
fn load_resolves_paths_against_the_config_files_directory() {
    let dir = kernel_dir();
    let cells = dir.path().join("cells");
    fs::create_dir(&cells).expect("mkdir");
    let file = cells.join("c.toml");
    fs::write(
        &file,
        "name = \"c\"\n[cpus]\ncount = 1\n[[memory]]\nsize = \"256M\"\n\
         [kernel]\npath = \"../bzImage\"\ninitrd = \"../initrd.img\"\n",
    )
    .expect("write");
    let cfg = load(&file, &LoadOptions::default()).expect("load");
    assert_eq!(cfg.kernel.path, cells.join("../bzImage"));
    assert_eq!(cfg.kernel.initrd, Some(cells.join("../initrd.img")));
    assert_eq!(cfg.kernel.format, KernelFormat::BzImage);
    assert_eq!(cfg.source, Some(file));
}

#[test]
fn detects_bzimage_format_from_the_file() {
    let dir = kernel_dir();
    let cfg = parse_in(
        dir.path(),
        &kernel_cell("[kernel]\npath = \"bzImage\"\ninitrd = \"initrd.img\"\n"),
    )
    .expect("valid");
    assert_eq!(cfg.kernel.format, KernelFormat::BzImage);
    assert_eq!(cfg.kernel.initrd, Some(dir.path().join("initrd.img")));
}

#[test]
fn detects_elf_format_from_the_file() {
    let dir = kernel_dir();
    let cfg = parse_in(
        dir.path(),
        &kernel_cell("[kernel]\npath = \"kernel.elf\"\n"),
    )
    .expect("valid");
    assert_eq!(cfg.kernel.format, KernelFormat::Elf);
    assert_eq!(cfg.kernel.path, dir.path().join("kernel.elf"));
}

#[test]
fn accepts_a_format_that_matches_the_file() {
    let dir = kernel_dir();
    let elf = parse_in(
        dir.path(),
        &kernel_cell("[kernel]\npath = \"kernel.elf\"\nformat = \"elf\"\n"),
    )
    .expect("valid");
    assert_eq!(elf.kernel.format, KernelFormat::Elf);
    let bz = parse_in(
        dir.path(),
        &kernel_cell("[kernel]\npath = \"bzImage\"\nformat = \"bzimage\"\n"),
    )
    .expect("valid");
    assert_eq!(bz.kernel.format, KernelFormat::BzImage);
}

#[test]
fn detects_a_vmlinux_by_its_linux_notes_and_accepts_an_initrd_with_it() {
    let dir = kernel_dir();
    let cfg = parse_in(
        dir.path(),
        &kernel_cell("[kernel]\npath = \"vmlinux\"\ninitrd = \"initrd.img\"\n"),
    )
    .expect("valid");
    assert_eq!(cfg.kernel.format, KernelFormat::Vmlinux);
    assert_eq!(cfg.kernel.initrd, Some(dir.path().join("initrd.img")));
    let given = parse_in(
        dir.path(),
        &kernel_cell("[kernel]\npath = \"vmlinux\"\nformat = \"vmlinux\"\n"),
    )
    .expect("valid");
    assert_eq!(given.kernel.format, KernelFormat::Vmlinux);
}

#[test]
fn rejects_vmlinux_format_for_a_bare_metal_elf() {
    let dir = kernel_dir();
    assert_err_in(
        dir.path(),
        &kernel_cell("[kernel]\npath = \"kernel.elf\"\nformat = \"vmlinux\"\n"),
        &format!(
            "cells/x.toml:8:10: kernel.format: \"vmlinux\" given, but {} is an ELF64 image \
             without \"Linux\" notes (a bare-metal ELF)",
            dir.path().join("kernel.elf").display()
        ),
    );
}

#[test]
fn rejects_elf_format_for_a_vmlinux() {
    let dir = kernel_dir();
    assert_err_in(
        dir.path(),
        &kernel_cell("[kernel]\npath = \"vmlinux\"\nformat = \"elf\"\n"),
        &format!(
            "cells/x.toml:8:10: kernel.format: \"elf\" given, but {} is a Linux vmlinux \
             (an ELF64 image with \"Linux\" notes)",
            dir.path().join("vmlinux").display()
        ),
    );
}

#[test]
fn without_file_checks_format_defaults_to_bzimage_or_the_given_one() {
    assert_eq!(ok(HEAD).kernel.format, KernelFormat::BzImage);
    let cfg = ok(&head("format = \"elf\"\n"));
    assert_eq!(cfg.kernel.format, KernelFormat::Elf);
}

#[test]
fn detect_kernel_format_reads_files() {
    let dir = kernel_dir();
    let d = dir.path();
    assert_eq!(
        detect_kernel_format(&d.join("bzImage")).expect("bz"),
        KernelFormat::BzImage
    );
    assert_eq!(
        detect_kernel_format(&d.join("kernel.elf")).expect("elf"),
        KernelFormat::Elf
    );
    assert_eq!(
        detect_kernel_format(&d.join("vmlinux")).expect("vmlinux"),
        KernelFormat::Vmlinux
    );
    let junk = d.join("junk.bin");
    assert_eq!(
        detect_kernel_format(&junk).map_err(|e| e.to_string()),
        Err(format!(
            "{} is neither a bzImage (\"HdrS\" at 0x202), an ELF64 x86_64 image nor an arm64 \
             Image (\"ARM\\x64\" at 0x38)",
            junk.display()
        ))
    );
    let missing = d.join("nope");
    assert_eq!(
        detect_kernel_format(&missing).map_err(|e| e.to_string()),
        Err(format!("kernel image {} does not exist", missing.display()))
    );
}

#[test]
fn rejects_elf_headers_for_other_machines() {
    let mut arm = elf_bytes();
    arm[18..20].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
    assert_eq!(kernel_format_from_header(&arm), None);
    let mut elf32 = elf_bytes();
    elf32[4] = 1; // ELFCLASS32
    assert_eq!(kernel_format_from_header(&elf32), None);
    assert_eq!(kernel_format_from_header(&[]), None);
}

#[test]
fn accepts_console_file_and_none() {
    let cfg = ok(&head("[console]\noutput = \"none\"\ninput = \"none\"\n"));
    assert_eq!(
        cfg.console,
        ConsoleConfig {
            output: ConsoleOutput::None,
            input: ConsoleInput::None
        }
    );
}

#[test]
fn accepts_virtio_devices_and_pci_bridges() {
    let cfg = ok(&head(
        "\
[[virtio_mmio]]
id = \"rng0\"
kind = \"rng\"
base = 0xd0100000
irq = 10
[[virtio_mmio]]
id = \"blk-0\"
kind = \"block\"
path = \"disk.img\"
[[virtio_mmio]]
id = \"con_0\"
kind = \"console\"
[[pci_bridge]]
id = \"pci0\"
kind = \"ecam\"
config_base = 0xe0000000
bus_start = 0
bus_end = 1
mmio32 = { base = 0xc0000000, size = \"16M\" }
mmio64 = { size = \"1G\" }
[[pci_bridge]]
id = \"pci1\"
kind = \"cam\"
config_base = 0xe0210000
bus_start = 4
mmio64 = { base = 0x80_0000_0000, size = \"1G\" }
",
    ));
    assert_eq!(
        cfg.virtio_mmio,
        vec![
            VirtioMmioConfig {
                id: "rng0".into(),
                state: crate::config::DeviceState::Okay,
                kind: VirtioKind::Rng,
                base: Some(0xd010_0000),
                irq: Some(10),
                backend: Default::default(),
            },
            VirtioMmioConfig {
                id: "blk-0".into(),
                state: crate::config::DeviceState::Okay,
                kind: VirtioKind::Block,
                base: None,
                irq: None,
                backend: VirtioBackendConfig {
                    path: Some(PathBuf::from("/cells/disk.img")),
                    ..Default::default()
                },
            },
            VirtioMmioConfig {
                id: "con_0".into(),
                state: crate::config::DeviceState::Okay,
                kind: VirtioKind::Console,
                base: None,
                irq: None,
                backend: Default::default(),
            },
        ]
    );
    assert_eq!(
        cfg.pci_bridges,
        vec![
            PciBridgeConfig {
                id: "pci0".into(),
                state: crate::config::DeviceState::Okay,
                kind: PciHostKind::Ecam,
                config_base: Some(0xe000_0000),
                bus_start: 0,
                bus_end: 1,
                mmio32: Some(Window {
                    base: 0xc000_0000,
                    size: 16 << 20
                }),
                mmio64: Some(Window {
                    base: 0,
                    size: 1 << 30
                }),
                devices: vec![],
            },
            PciBridgeConfig {
                id: "pci1".into(),
                state: crate::config::DeviceState::Okay,
                kind: PciHostKind::Cam,
                config_base: Some(0xe021_0000),
                bus_start: 4,
                bus_end: 4,
                mmio32: None,
                mmio64: Some(Window {
                    base: 0x80_0000_0000,
                    size: 1 << 30
                }),
                devices: vec![],
            },
        ]
    );
}

#[test]
fn records_source_or_none() {
    let cfg = parse(HEAD, None, Path::new("."), &NO_FILES).expect("valid");
    assert_eq!(cfg.source, None);
}

#[test]
fn parses_every_file_in_cells_dir() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("cells");
    let mut seen = 0;
    for entry in fs::read_dir(&dir).expect("cells/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        if let Err(e) = load(&path, &NO_FILES) {
            panic!("{e}");
        }
        seen += 1;
    }
    assert!(seen >= 2, "expected at least linux-demo and linux-2cpu");
}

#[test]
fn linux_demo_cells_have_the_documented_shape() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("cells");
    let demo = load(&dir.join("linux-demo.toml"), &NO_FILES).expect("linux-demo");
    assert_eq!(demo.name, "linux-demo");
    assert_eq!(demo.cpus.count, 1);
    assert_eq!(
        demo.memory,
        vec![MemoryRegion {
            base: 0,
            size: 256 << 20,
            prefault: false,
            lock: false,
        }]
    );
    assert_eq!(demo.kernel.path, dir.join("../build/guest/bzImage"));
    assert_eq!(
        demo.kernel.initrd,
        Some(dir.join("../build/guest/initramfs.cpio.gz"))
    );
    assert_eq!(
        demo.kernel.cmdline,
        "console=ttyS0 quiet cellvm.mode=showcase"
    );
    assert!(demo.virtio_mmio.is_empty());
    assert_eq!(demo.pci_bridges.len(), 1);
    let two = load(&dir.join("linux-2cpu.toml"), &NO_FILES).expect("linux-2cpu");
    assert_eq!(two.name, "linux-2cpu");
    assert_eq!(two.cpus.count, 2);
    assert_eq!(two.kernel.cmdline, "console=ttyS0 quiet cellvm.mode=report");
    assert_eq!(two.pci_bridges, demo.pci_bridges);
}

#[test]
fn errors_expose_location_and_field() {
    let e = parse_text(&format!("name = \"t\"\n[cpus]\ncount = 0\n{AFTER_CPUS}"))
        .expect_err("zero vCPUs");
    assert_eq!(
        e.location(),
        Some(&Location {
            file: SRC.into(),
            line: 3,
            column: 9
        })
    );
    assert_eq!(e.field(), "cpus.count");
}

#[test]
fn names_the_source_config_when_there_is_no_file() {
    let e = parse("name = 1\n", None, Path::new("."), &NO_FILES).expect_err("bad");
    assert_eq!(
        e.to_string(),
        "<config>:1:8: name: invalid type: integer `1`, expected a string"
    );
}

#[test]
fn columns_count_characters_not_bytes() {
    assert_err(
        "name = \"t\" # é\n[cpus]\ncount = 1 # ééé\nbogus = 1\n",
        "cells/x.toml:4:1: cpus.bogus: unknown key (expected one of `count`, `pin`, `shared`)",
    );
    let at = Location::from_offset("f", "ééx", 4);
    assert_eq!((at.line, at.column), (1, 3));
}

// ---------------------------------------------------------------------------
// The config file itself

#[test]
fn rejects_unreadable_config_file_naming_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("missing.toml");
    let e = load(&path, &NO_FILES).expect_err("missing");
    assert!(matches!(e, ConfigError::Io { .. }));
    assert_eq!(
        e.to_string(),
        format!(
            "{}:1:1: <file>: cannot read config file: No such file or directory (os error 2)",
            path.display()
        )
    );
}

// ---------------------------------------------------------------------------
// Syntax, unknown keys, missing keys, wrong types

#[test]
fn rejects_toml_syntax_error_with_line_and_table() {
    assert_err(
        "name = \"t\"\n[cpus\ncount = 1\n",
        "cells/x.toml:2:6: cpus: invalid TOML: invalid table header: expected `.`, `]`",
    );
}

#[test]
fn rejects_bad_value_syntax_with_line_and_key() {
    assert_err(
        "name = \"t\"\n[cpus]\ncount = 1x\n",
        "cells/x.toml:3:10: cpus.count: invalid TOML: expected newline, `#`",
    );
}

#[test]
fn rejects_duplicate_table_as_syntax_error() {
    assert_err(
        &head("[cpus]\ncount = 2\n"),
        "cells/x.toml:8:1: cpus: invalid TOML: invalid table header: duplicate key `cpus` in document root",
    );
}

#[test]
fn rejects_unknown_top_level_key() {
    assert_err(
        &format!("name = \"t\"\ncolour = \"red\"\n[cpus]\ncount = 1\n{AFTER_CPUS}"),
        "cells/x.toml:2:1: colour: unknown key (expected one of `name`, `cpus`, `memory`, \
         `kernel`, `console`, `virtio_mmio`, `pci_bridge`, `uart`, `connector`)",
    );
}

#[test]
fn rejects_unknown_key_in_table() {
    assert_err(
        &format!("name = \"t\"\n[cpus]\ncount = 1\nthreads = 2\n{AFTER_CPUS}"),
        "cells/x.toml:4:1: cpus.threads: unknown key (expected one of `count`, `pin`, `shared`)",
    );
}

#[test]
fn rejects_unknown_key_in_array_of_tables() {
    assert_err(
        &head("[[memory]]\nbsae = 0x100000000\nsize = \"1G\"\n"),
        "cells/x.toml:9:1: memory[1].bsae: unknown key (expected one of `base`, `size`, `prefault`, `lock`)",
    );
}

#[test]
fn rejects_unknown_key_in_inline_table() {
    assert_err(
        &head("[[pci_bridge]]\nid = \"p\"\nkind = \"ecam\"\nmmio32 = { base = 0xc0000000, szie = \"16M\" }\n"),
        "cells/x.toml:11:31: pci_bridge[0].mmio32.szie: unknown key (expected `base` or `size`)",
    );
}

#[test]
fn rejects_missing_name() {
    assert_err(
        &HEAD.replace("name = \"t\"\n", ""),
        "cells/x.toml:1:1: name: missing required key",
    );
}

#[test]
fn rejects_missing_cpus_table() {
    assert_err(
        &format!("name = \"t\"\n{AFTER_CPUS}"),
        "cells/x.toml:1:1: cpus: missing required key",
    );
}

#[test]
fn rejects_missing_vcpu_count_at_its_table() {
    assert_err(
        &format!("name = \"t\"\n[cpus]\npin = [0]\n{AFTER_CPUS}"),
        "cells/x.toml:2:1: cpus.count: missing required key",
    );
}

#[test]
fn rejects_missing_vcpu_count_in_dotted_table() {
    assert_err(
        &format!("name = \"t\"\ncpus.pin = [0]\n{AFTER_CPUS}"),
        "cells/x.toml:2:1: cpus.count: missing required key",
    );
}

#[test]
fn rejects_missing_kernel_table() {
    assert_err(
        "name = \"t\"\n[cpus]\ncount = 1\n[[memory]]\nsize = \"256M\"\n",
        "cells/x.toml:1:1: kernel: missing required key",
    );
}

#[test]
fn rejects_missing_kernel_path() {
    assert_err(
        &kernel_cell("[kernel]\ncmdline = \"quiet\"\n"),
        "cells/x.toml:6:1: kernel.path: missing required key",
    );
}

#[test]
fn rejects_missing_memory_size() {
    assert_err(
        "name = \"t\"\n[cpus]\ncount = 1\n[[memory]]\nbase = 0\n[kernel]\npath = \"bzImage\"\n",
        "cells/x.toml:4:1: memory[0].size: missing required key",
    );
}

#[test]
fn rejects_missing_base_on_second_memory_region() {
    assert_err(
        &head("[[memory]]\nsize = \"1G\"\n"),
        "cells/x.toml:8:1: memory[1].base: missing required key \
         (only the first [[memory]] region may omit it)",
    );
}

#[test]
fn rejects_missing_device_id_and_kind() {
    assert_err(
        &head("[[virtio_mmio]]\nkind = \"rng\"\n"),
        "cells/x.toml:8:1: virtio_mmio[0].id: missing required key",
    );
    assert_err(
        &head("[[pci_bridge]]\nid = \"p\"\n"),
        "cells/x.toml:8:1: pci_bridge[0].kind: missing required key",
    );
}

#[test]
fn accepts_mmio32_window_with_only_a_size_for_the_layout_to_place() {
    let cfg = ok(&head(
        "[[pci_bridge]]\nid = \"p\"\nkind = \"ecam\"\nmmio32 = { size = \"32M\" }\n",
    ));
    assert_eq!(
        cfg.pci_bridges[0].mmio32,
        Some(Window {
            base: 0,
            size: 32 << 20
        })
    );
}

#[test]
fn rejects_string_vcpu_count_as_wrong_type() {
    assert_err(
        &format!("name = \"t\"\n[cpus]\ncount = \"2\"\n{AFTER_CPUS}"),
        "cells/x.toml:3:9: cpus.count: invalid type: string \"2\", expected an integer",
    );
}

#[test]
fn rejects_integer_name_as_wrong_type() {
    assert_err(
        &HEAD.replace("name = \"t\"", "name = 7"),
        "cells/x.toml:1:8: name: invalid type: integer `7`, expected a string",
    );
}

#[test]
fn rejects_boolean_size_as_wrong_type() {
    assert_err(
        &HEAD.replace("size = \"256M\"", "size = true"),
        "cells/x.toml:5:8: memory[0].size: invalid type: boolean `true`, \
         expected a size (integer bytes or a string such as \"256M\")",
    );
}

#[test]
fn rejects_string_pin_entry_as_wrong_type() {
    assert_err(
        &format!("name = \"t\"\n[cpus]\ncount = 2\npin = [0, \"1\"]\n{AFTER_CPUS}"),
        "cells/x.toml:4:11: cpus.pin[1]: invalid type: string \"1\", expected an integer",
    );
}

#[test]
fn rejects_single_bracket_device_table_as_wrong_type() {
    assert_err(
        &head("[virtio_mmio]\nid = \"rng0\"\nkind = \"rng\"\n"),
        "cells/x.toml:8:1: virtio_mmio: invalid type: table, expected an array",
    );
}

#[test]
fn rejects_datetime_where_an_integer_belongs() {
    assert_err(
        &format!("name = \"t\"\n[cpus]\ncount = 1979-05-27\n{AFTER_CPUS}"),
        "cells/x.toml:3:9: cpus.count: invalid type: datetime, expected an integer",
    );
}

#[test]
fn rejects_scalar_where_a_table_belongs() {
    assert_err(
        &format!("name = \"t\"\ncpus = 2\n{AFTER_CPUS}"),
        "cells/x.toml:2:8: cpus: invalid type: integer `2`, expected a table",
    );
}

// ---------------------------------------------------------------------------
// name and cpus

#[test]
fn rejects_name_with_bad_characters() {
    assert_err(
        &HEAD.replace("name = \"t\"", "name = \"my cell\""),
        "cells/x.toml:1:8: name: must be 1-32 characters of A-Z, a-z, 0-9, '_' and '-', \
         got \"my cell\"",
    );
}

#[test]
fn rejects_name_longer_than_32_characters() {
    let long = "a".repeat(33);
    assert_err(
        &HEAD.replace("name = \"t\"", &format!("name = \"{long}\"")),
        &format!(
            "cells/x.toml:1:8: name: must be 1-32 characters of A-Z, a-z, 0-9, '_' and '-', \
             got \"{long}\""
        ),
    );
}

#[test]
fn rejects_empty_name() {
    assert_err(
        &HEAD.replace("name = \"t\"", "name = \"\""),
        "cells/x.toml:1:8: name: must be 1-32 characters of A-Z, a-z, 0-9, '_' and '-', got \"\"",
    );
}

#[test]
fn rejects_zero_vcpus_with_line_and_field() {
    assert_err(
        &format!("name = \"t\"\n[cpus]\ncount = 0\n{AFTER_CPUS}"),
        "cells/x.toml:3:9: cpus.count: a cell needs at least 1 vCPU, got 0",
    );
}

#[test]
fn rejects_negative_vcpus() {
    assert_err(
        &format!("name = \"t\"\n[cpus]\ncount = -2\n{AFTER_CPUS}"),
        "cells/x.toml:3:9: cpus.count: a cell needs at least 1 vCPU, got -2",
    );
}

#[test]
fn rejects_more_than_max_vcpus() {
    assert_err(
        &format!("name = \"t\"\n[cpus]\ncount = 65\n{AFTER_CPUS}"),
        "cells/x.toml:3:9: cpus.count: a cell can have at most 64 vCPUs, got 65",
    );
    assert_err(
        &format!("name = \"t\"\n[cpus]\ncount = 1000\n{AFTER_CPUS}"),
        "cells/x.toml:3:9: cpus.count: a cell can have at most 64 vCPUs, got 1000",
    );
}

#[test]
fn rejects_pin_list_shorter_than_vcpu_count() {
    assert_err(
        &format!("name = \"t\"\n[cpus]\ncount = 2\npin = [3]\n{AFTER_CPUS}"),
        "cells/x.toml:4:7: cpus.pin: lists 1 host CPU but cpus.count is 2; \
         give exactly one host CPU per vCPU",
    );
}

#[test]
fn rejects_pin_list_longer_than_vcpu_count() {
    assert_err(
        &format!("name = \"t\"\n[cpus]\ncount = 1\npin = [3, 4]\n{AFTER_CPUS}"),
        "cells/x.toml:4:7: cpus.pin: lists 2 host CPUs but cpus.count is 1; \
         give exactly one host CPU per vCPU",
    );
}

#[test]
fn rejects_duplicate_pins_at_the_second_one() {
    assert_err(
        &format!("name = \"t\"\n[cpus]\ncount = 3\npin = [1, 2, 1]\n{AFTER_CPUS}"),
        "cells/x.toml:4:14: cpus.pin[2]: host CPU 1 is already used by cpus.pin[0]",
    );
}

#[test]
fn rejects_pin_beyond_cpu_set_size() {
    assert_err(
        &format!("name = \"t\"\n[cpus]\ncount = 1\npin = [1024]\n{AFTER_CPUS}"),
        "cells/x.toml:4:8: cpus.pin[0]: host CPU 1024 is out of range (at most 1023)",
    );
}

#[test]
fn rejects_negative_pin() {
    assert_err(
        &format!("name = \"t\"\n[cpus]\ncount = 1\npin = [-1]\n{AFTER_CPUS}"),
        "cells/x.toml:4:8: cpus.pin[0]: must not be negative, got -1",
    );
}

// ---------------------------------------------------------------------------
// memory

/// A cell whose memory tables are `memory` (starting on line 4).
pub(crate) fn memory_cell(memory: &str) -> String {
    format!("name = \"t\"\n[cpus]\ncount = 1\n{memory}[kernel]\npath = \"bzImage\"\n")
}

#[test]
fn rejects_config_without_memory() {
    assert_err(
        "name = \"t\"\n[cpus]\ncount = 1\n[kernel]\npath = \"bzImage\"\n",
        "cells/x.toml:1:1: memory: a cell needs at least one [[memory]] region",
    );
}

#[test]
fn rejects_empty_memory_array() {
    assert_err(
        "name = \"t\"\nmemory = []\n[cpus]\ncount = 1\n[kernel]\npath = \"bzImage\"\n",
        "cells/x.toml:2:10: memory: a cell needs at least one [[memory]] region",
    );
}

#[test]
fn rejects_zero_memory_size() {
    assert_err(
        &memory_cell("[[memory]]\nsize = 0\n"),
        "cells/x.toml:5:8: memory[0].size: must not be 0",
    );
}

#[test]
fn rejects_invalid_size_string() {
    assert_err(
        &memory_cell("[[memory]]\nsize = \"256MB\"\n"),
        "cells/x.toml:5:8: memory[0].size: invalid size \"256MB\": \
         unknown suffix \"MB\" (use K, M, G, KiB, MiB or GiB)",
    );
}

#[test]
fn rejects_size_string_too_large_for_64_bits() {
    assert_err(
        &memory_cell("[[memory]]\nsize = \"17179869184G\"\n"),
        "cells/x.toml:5:8: memory[0].size: invalid size \"17179869184G\": \
         too large for a 64-bit size",
    );
}

#[test]
fn rejects_negative_memory_size_and_base() {
    assert_err(
        &memory_cell("[[memory]]\nsize = -4096\n"),
        "cells/x.toml:5:8: memory[0].size: must not be negative, got -4096",
    );
    assert_err(
        &memory_cell("[[memory]]\nsize = \"256M\"\n[[memory]]\nbase = -4096\nsize = 4096\n"),
        "cells/x.toml:7:8: memory[1].base: must not be negative, got -4096",
    );
}

#[test]
fn rejects_unaligned_memory_base() {
    assert_err(
        &memory_cell("[[memory]]\nsize = \"256M\"\n[[memory]]\nbase = 0x10000800\nsize = \"1M\"\n"),
        "cells/x.toml:7:8: memory[1].base: 0x10000800 is not a multiple of 4 KiB",
    );
}

#[test]
fn rejects_unaligned_memory_size() {
    assert_err(
        &memory_cell("[[memory]]\nsize = 16781313\n"),
        "cells/x.toml:5:8: memory[0].size: 0x1001001 is not a multiple of 4 KiB",
    );
}

#[test]
fn rejects_lowest_region_not_at_zero() {
    assert_err(
        &memory_cell("[[memory]]\nbase = 0x1000000\nsize = \"256M\"\n"),
        "cells/x.toml:5:8: memory[0].base: the lowest memory region must start at 0x0, \
         got 0x1000000",
    );
}

#[test]
fn rejects_region_at_zero_smaller_than_16_mib() {
    assert_err(
        &memory_cell("[[memory]]\nsize = \"8M\"\n[[memory]]\nbase = 0x1000000\nsize = \"64M\"\n"),
        "cells/x.toml:5:8: memory[0].size: the region at 0x0 must be at least 16 MiB, got 8 MiB",
    );
}

#[test]
fn rejects_less_than_16_mib_in_total() {
    assert_err(
        &memory_cell("[[memory]]\nsize = \"4M\"\n[[memory]]\nbase = 0x1000000\nsize = \"4M\"\n"),
        "cells/x.toml:4:1: memory: a cell needs at least 16 MiB of RAM in total, got 8 MiB",
    );
}

#[test]
fn rejects_overlapping_memory_regions() {
    assert_err(
        &memory_cell(
            "[[memory]]\nsize = \"256M\"\n[[memory]]\nbase = 0x8000000\nsize = \"256M\"\n",
        ),
        "cells/x.toml:7:8: memory[1]: 0x8000000..0x18000000 overlaps memory[0] (0x0..0x10000000)",
    );
}

#[test]
fn rejects_memory_overlapping_the_device_window() {
    assert_err(
        &memory_cell("[[memory]]\nsize = \"3328M\"\n"),
        "cells/x.toml:4:1: memory[0]: 0x0..0xd0000000 overlaps the device window \
         0xc0000000..0x100000000",
    );
    assert_err(
        &memory_cell("[[memory]]\nsize = \"256M\"\n[[memory]]\nbase = 0xf0000000\nsize = \"1G\"\n"),
        "cells/x.toml:7:8: memory[1]: 0xf0000000..0x130000000 overlaps the device window \
         0xc0000000..0x100000000",
    );
}

#[test]
fn rejects_memory_ending_above_256_gib() {
    assert_err(
        &memory_cell(
            "[[memory]]\nsize = \"256M\"\n[[memory]]\nbase = 0x3fc0000000\nsize = \"2G\"\n",
        ),
        "cells/x.toml:7:8: memory[1]: 0x3fc0000000..0x4040000000 ends above the 256 GiB limit \
         (0x4000000000)",
    );
}

#[test]
fn rejects_memory_base_plus_size_overflow_without_panicking() {
    assert_err(
        &memory_cell(
            "[[memory]]\nsize = \"256M\"\n[[memory]]\nbase = 0x7ffffffffffff000\nsize = \"17179869183G\"\n",
        ),
        "cells/x.toml:7:8: memory[1]: base 0x7ffffffffffff000 + size 0xffffffffc0000000 \
         overflows the 64-bit address space",
    );
}

// ---------------------------------------------------------------------------
// kernel

#[test]
fn rejects_missing_kernel_file_naming_the_resolved_path() {
    let dir = kernel_dir();
    let path = dir.path().join("sub/vmlinuz");
    assert_err_in(
        dir.path(),
        &kernel_cell("[kernel]\npath = \"sub/vmlinuz\"\n"),
        &format!(
            "cells/x.toml:7:8: kernel.path: kernel image {} does not exist",
            path.display()
        ),
    );
}

#[test]
fn rejects_unreadable_kernel_file() {
    let dir = kernel_dir();
    fs::create_dir(dir.path().join("adir")).expect("mkdir");
    assert_err_in(
        dir.path(),
        &kernel_cell("[kernel]\npath = \"adir\"\n"),
        &format!(
            "cells/x.toml:7:8: kernel.path: cannot read kernel image {}: \
             Is a directory (os error 21)",
            dir.path().join("adir").display()
        ),
    );
}

#[test]
fn rejects_kernel_of_unknown_format() {
    let dir = kernel_dir();
    assert_err_in(
        dir.path(),
        &kernel_cell("[kernel]\npath = \"junk.bin\"\n"),
        &format!(
            "cells/x.toml:7:8: kernel.path: {} is neither a bzImage (\"HdrS\" at 0x202), \
             an ELF64 x86_64 image nor an arm64 Image (\"ARM\\x64\" at 0x38)",
            dir.path().join("junk.bin").display()
        ),
    );
}

#[test]
fn rejects_elf_format_given_for_a_bzimage() {
    let dir = kernel_dir();
    assert_err_in(
        dir.path(),
        &kernel_cell("[kernel]\npath = \"bzImage\"\nformat = \"elf\"\n"),
        &format!(
            "cells/x.toml:8:10: kernel.format: \"elf\" given, but {} is a bzImage",
            dir.path().join("bzImage").display()
        ),
    );
}

#[test]
fn rejects_bzimage_format_given_for_an_elf() {
    let dir = kernel_dir();
    assert_err_in(
        dir.path(),
        &kernel_cell("[kernel]\npath = \"kernel.elf\"\nformat = \"bzimage\"\n"),
        &format!(
            "cells/x.toml:8:10: kernel.format: \"bzimage\" given, but {} is an ELF64 x86_64 image",
            dir.path().join("kernel.elf").display()
        ),
    );
}

#[test]
fn rejects_given_format_for_a_file_of_unknown_format() {
    let dir = kernel_dir();
    assert_err_in(
        dir.path(),
        &kernel_cell("[kernel]\npath = \"junk.bin\"\nformat = \"bzimage\"\n"),
        &format!(
            "cells/x.toml:8:10: kernel.format: \"bzimage\" given, but {} has no bzImage header \
             (\"HdrS\" at 0x202)",
            dir.path().join("junk.bin").display()
        ),
    );
}

#[test]
fn rejects_unknown_format_name() {
    assert_err(
        &head("format = \"pe\"\n"),
        "cells/x.toml:8:10: kernel.format: unknown format \"pe\", expected \"bzimage\", \"vmlinux\" or \"elf\"",
    );
}

#[test]
fn rejects_initrd_with_detected_elf_kernel() {
    let dir = kernel_dir();
    assert_err_in(
        dir.path(),
        &kernel_cell("[kernel]\npath = \"kernel.elf\"\ninitrd = \"initrd.img\"\n"),
        "cells/x.toml:8:10: kernel.initrd: an initrd needs a Linux kernel \
         (bzImage or vmlinux), but this kernel is a bare-metal ELF image",
    );
}

#[test]
fn rejects_initrd_with_elf_format_without_file_checks() {
    assert_err(
        &head("format = \"elf\"\ninitrd = \"initrd.img\"\n"),
        "cells/x.toml:9:10: kernel.initrd: an initrd needs a Linux kernel \
         (bzImage or vmlinux), but this kernel is a bare-metal ELF image",
    );
}

#[test]
fn acpi_tables_default_on_for_linux_kernels_and_off_for_bare_metal_ones() {
    assert!(ok(&head("")).kernel.acpi);
    assert!(!ok(&head("acpi = false\n")).kernel.acpi);
    assert!(!ok(&head("format = \"elf\"\n")).kernel.acpi);
    assert!(!ok(&head("format = \"elf\"\nacpi = false\n")).kernel.acpi);
}

#[test]
fn rejects_acpi_tables_for_a_bare_metal_kernel() {
    assert_err(
        &head("format = \"elf\"\nacpi = true\n"),
        "cells/x.toml:9:8: kernel.acpi: ACPI tables are for Linux kernels \
         (bzImage or vmlinux), but this kernel is a bare-metal ELF image",
    );
}

#[test]
fn rejects_missing_initrd_file() {
    let dir = kernel_dir();
    assert_err_in(
        dir.path(),
        &kernel_cell("[kernel]\npath = \"bzImage\"\ninitrd = \"nope.img\"\n"),
        &format!(
            "cells/x.toml:8:10: kernel.initrd: initrd {} does not exist",
            dir.path().join("nope.img").display()
        ),
    );
}

#[test]
fn rejects_empty_kernel_path() {
    assert_err(
        &kernel_cell("[kernel]\npath = \"\"\n"),
        "cells/x.toml:7:8: kernel.path: must not be empty",
    );
}

#[test]
fn rejects_non_printable_cmdline() {
    assert_err(
        &head("cmdline = \"console=ttyS0\\tquiet\"\n"),
        "cells/x.toml:8:11: kernel.cmdline: character '\\t' at byte 13 is not printable ASCII",
    );
    assert_err(
        &head("cmdline = \"café\"\n"),
        "cells/x.toml:8:11: kernel.cmdline: character 'é' at byte 3 is not printable ASCII",
    );
}

#[test]
fn rejects_cmdline_longer_than_2047_bytes() {
    let long = "a".repeat(2048);
    assert_err(
        &head(&format!("cmdline = \"{long}\"\n")),
        "cells/x.toml:8:11: kernel.cmdline: is 2048 bytes long; the limit is 2047",
    );
    let max = "a".repeat(2047);
    assert_eq!(
        ok(&head(&format!("cmdline = \"{max}\"\n"))).kernel.cmdline,
        max
    );
}

// ---------------------------------------------------------------------------
// console

#[test]
fn rejects_file_output_without_path() {
    assert_err(
        &head("[console]\noutput = \"file\"\n"),
        "cells/x.toml:8:1: console.path: missing required key \
         (console.output = \"file\" needs a path)",
    );
}

#[test]
fn rejects_console_path_without_file_output() {
    assert_err(
        &head("[console]\npath = \"console.log\"\n"),
        "cells/x.toml:9:8: console.path: only allowed with console.output = \"file\" \
         (output is \"stdout\")",
    );
    assert_err(
        &head("[console]\noutput = \"none\"\npath = \"console.log\"\n"),
        "cells/x.toml:10:8: console.path: only allowed with console.output = \"file\" \
         (output is \"none\")",
    );
}

#[test]
fn rejects_unknown_console_output_and_input() {
    assert_err(
        &head("[console]\noutput = \"stderr\"\n"),
        "cells/x.toml:9:10: console.output: unknown output \"stderr\", \
         expected \"stdout\", \"file\" or \"none\"",
    );
    assert_err(
        &head("[console]\ninput = \"tty\"\n"),
        "cells/x.toml:9:9: console.input: unknown input \"tty\", expected \"stdin\" or \"none\"",
    );
}

// ---------------------------------------------------------------------------
// virtio_mmio

#[test]
fn rejects_duplicate_virtio_id_at_the_second_one() {
    assert_err(
        &head("[[virtio_mmio]]\nid = \"dev\"\nkind = \"rng\"\n[[virtio_mmio]]\nid = \"dev\"\nkind = \"block\"\npath = \"disk.img\"\n"),
        "cells/x.toml:12:6: virtio_mmio[1].id: duplicate id \"dev\" (already used by virtio_mmio[0])",
    );
}

#[test]
fn rejects_id_shared_by_bridge_and_virtio_device_at_the_later_one() {
    assert_err(
        &head("[[pci_bridge]]\nid = \"dev\"\nkind = \"ecam\"\n[[virtio_mmio]]\nid = \"dev\"\nkind = \"rng\"\n"),
        "cells/x.toml:12:6: virtio_mmio[0].id: duplicate id \"dev\" (already used by pci_bridge[0])",
    );
}

#[test]
fn rejects_bad_virtio_id() {
    assert_err(
        &head("[[virtio_mmio]]\nid = \"rng 0\"\nkind = \"rng\"\n"),
        "cells/x.toml:9:6: virtio_mmio[0].id: must be 1-32 characters of A-Z, a-z, 0-9, \
         '_' and '-', got \"rng 0\"",
    );
}

#[test]
fn rejects_unknown_virtio_kind() {
    assert_err(
        &head("[[virtio_mmio]]\nid = \"n\"\nkind = \"net\"\n"),
        "cells/x.toml:10:8: virtio_mmio[0].kind: unknown kind \"net\", \
         expected \"rng\", \"block\" or \"console\"",
    );
}

#[test]
fn rejects_unaligned_virtio_base() {
    assert_err(
        &head("[[virtio_mmio]]\nid = \"r\"\nkind = \"rng\"\nbase = 0xd0100800\n"),
        "cells/x.toml:11:8: virtio_mmio[0].base: 0xd0100800 is not a multiple of 4 KiB",
    );
}

#[test]
fn rejects_virtio_base_outside_the_window() {
    assert_err(
        &head("[[virtio_mmio]]\nid = \"r\"\nkind = \"rng\"\nbase = 0x90000000\n"),
        "cells/x.toml:11:8: virtio_mmio[0].base: 0x90000000..0x90001000 is outside the \
         virtio-mmio window 0xc0000000..0xfec00000",
    );
    assert_err(
        &head("[[virtio_mmio]]\nid = \"r\"\nkind = \"rng\"\nbase = 0xfec00000\n"),
        "cells/x.toml:11:8: virtio_mmio[0].base: 0xfec00000..0xfec01000 is outside the \
         virtio-mmio window 0xc0000000..0xfec00000",
    );
}

#[test]
fn rejects_virtio_irq_above_23() {
    assert_err(
        &head("[[virtio_mmio]]\nid = \"r\"\nkind = \"rng\"\nirq = 24\n"),
        "cells/x.toml:11:7: virtio_mmio[0].irq: IOAPIC pin 24 does not exist (pins are 0 to 23)",
    );
}

// ---------------------------------------------------------------------------
// pci_bridge

/// `HEAD` plus one bridge `pci0` with extra `lines` (from line 11).
pub(crate) fn bridge_cell(kind: &str, lines: &str) -> String {
    head(&format!(
        "[[pci_bridge]]\nid = \"pci0\"\nkind = \"{kind}\"\n{lines}"
    ))
}

#[test]
fn rejects_unknown_bridge_kind() {
    assert_err(
        &bridge_cell("pcie", ""),
        "cells/x.toml:10:8: pci_bridge[0].kind: unknown kind \"pcie\", expected \"ecam\" or \"cam\"",
    );
}

#[test]
fn rejects_bus_end_below_bus_start() {
    assert_err(
        &bridge_cell("ecam", "bus_start = 2\nbus_end = 1\n"),
        "cells/x.toml:12:11: pci_bridge[0].bus_end: 1 is below bus_start 2",
    );
}

#[test]
fn rejects_bus_numbers_above_255() {
    assert_err(
        &bridge_cell("ecam", "bus_start = 256\n"),
        "cells/x.toml:11:13: pci_bridge[0].bus_start: bus numbers are 0 to 255, got 256",
    );
}

#[test]
fn rejects_config_window_ending_above_4_gib() {
    assert_err(
        &bridge_cell("ecam", "config_base = 0xfff00000\nbus_end = 1\n"),
        "cells/x.toml:11:15: pci_bridge[0].config_base: config space 0xfff00000..0x100100000 \
         (2 buses) ends above 4 GiB",
    );
    assert_err(
        &bridge_cell("cam", "config_base = 0x100000000\n"),
        "cells/x.toml:11:15: pci_bridge[0].config_base: config space 0x100000000..0x100010000 \
         (1 bus) ends above 4 GiB",
    );
}

#[test]
fn rejects_misaligned_config_base() {
    assert_err(
        &bridge_cell("ecam", "config_base = 0xe0010000\n"),
        "cells/x.toml:11:15: pci_bridge[0].config_base: 0xe0010000 is not a multiple of 1 MiB \
         as ECAM requires",
    );
    assert_err(
        &bridge_cell("cam", "config_base = 0xe0001000\n"),
        "cells/x.toml:11:15: pci_bridge[0].config_base: 0xe0001000 is not a multiple of 64 KiB \
         as CAM requires",
    );
}

#[test]
fn rejects_window_size_not_a_power_of_two() {
    assert_err(
        &bridge_cell("ecam", "mmio32 = { base = 0xc0000000, size = \"24M\" }\n"),
        "cells/x.toml:11:38: pci_bridge[0].mmio32.size: 24 MiB (0x1800000) is not a power of two",
    );
    assert_err(
        &bridge_cell("ecam", "mmio64 = { size = \"3G\" }\n"),
        "cells/x.toml:11:19: pci_bridge[0].mmio64.size: 3 GiB (0xc0000000) is not a power of two",
    );
}

#[test]
fn rejects_window_smaller_than_1_mib() {
    assert_err(
        &bridge_cell("ecam", "mmio32 = { base = 0xc0000000, size = \"64K\" }\n"),
        "cells/x.toml:11:38: pci_bridge[0].mmio32.size: must be at least 1 MiB, got 64 KiB",
    );
}

#[test]
fn rejects_window_base_not_aligned_to_its_size() {
    assert_err(
        &bridge_cell("ecam", "mmio32 = { base = 0xc0800000, size = \"16M\" }\n"),
        "cells/x.toml:11:19: pci_bridge[0].mmio32.base: 0xc0800000 is not aligned to the \
         window size (16 MiB)",
    );
    assert_err(
        &bridge_cell("ecam", "mmio64 = { base = 0x100100000, size = \"1G\" }\n"),
        "cells/x.toml:11:19: pci_bridge[0].mmio64.base: 0x100100000 is not aligned to the \
         window size (1 GiB)",
    );
}

#[test]
fn rejects_mmio32_window_ending_above_4_gib() {
    assert_err(
        &bridge_cell("ecam", "mmio32 = { base = 0x100000000, size = \"16M\" }\n"),
        "cells/x.toml:11:10: pci_bridge[0].mmio32: window 0x100000000..0x101000000 ends above 4 GiB",
    );
}

#[test]
fn rejects_mmio64_window_below_4_gib() {
    assert_err(
        &bridge_cell("ecam", "mmio64 = { base = 0x80000000, size = \"1G\" }\n"),
        "cells/x.toml:11:19: pci_bridge[0].mmio64.base: 0x80000000 is below 4 GiB; \
         a 64-bit window must lie above it",
    );
}

#[test]
fn every_error_is_one_line_starting_with_file_line_column_field() {
    let texts = [
        "name = \"t\"\n[cpus\n".to_string(),
        "x = [\n1,\n2\n".to_string(),
        "name = \"t\"\n[a]\n[a]\n".to_string(),
        head("[console]\noutput = \"file\"\n"),
        head("cmdline = \"a\\nb\"\n"),
        "name = \"t\"\n\"quoted key\" = 1\n".to_string(),
    ];
    for text in &texts {
        let e = parse_text(text).expect_err("bad config").to_string();
        assert!(!e.contains('\n'), "{e}");
        let mut parts = e.splitn(5, ':');
        assert_eq!(parts.next(), Some("cells/x.toml"), "{e}");
        assert!(
            parts.next().is_some_and(|l| l.parse::<usize>().is_ok()),
            "{e}"
        );
        assert!(
            parts.next().is_some_and(|c| c.parse::<usize>().is_ok()),
            "{e}"
        );
        assert!(parts.next().is_some_and(|f| !f.trim().is_empty()), "{e}");
    }
}

#[test]
fn names_the_right_field_between_interleaved_array_tables() {
    assert_err(
        "name = \"t\"\n[cpus]\ncount = 1\n[[memory]]\nsize = \"256M\"\n[kernel]\npath = 3\n\
         [[memory]]\nbase = 0x100000000\nsize = \"1G\"\n",
        "cells/x.toml:7:8: kernel.path: invalid type: integer `3`, expected a string",
    );
}

#[test]
fn names_array_table_entries_in_syntax_errors() {
    assert_err(
        &head("[[memory]]\nbase = 0x100000000\nsize = 1G\n"),
        "cells/x.toml:10:9: memory[1].size: invalid TOML: expected newline, `#`",
    );
}

#[test]
fn the_full_example_in_docs_config_md_is_valid() {
    let doc = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/config.md"))
        .expect("docs/config.md");
    let example = doc
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a toml block");
    let cfg = parse(example, None, Path::new("/cells"), &NO_FILES).expect("valid example");
    assert_eq!(cfg.name, "linux-demo");
    assert_eq!(cfg.memory.len(), 2);
    assert_eq!(cfg.virtio_mmio.len(), 2);
    assert_eq!(cfg.pci_bridges.len(), 2);
}

fn device_cell(devices: &str) -> String {
    bridge_cell("ecam", devices)
}

#[test]
fn accepts_test_and_ivshmem_devices_behind_a_bridge() {
    let cfg = ok(&device_cell(
        "[[pci_bridge.device]]\nslot = 1\nkind = \"test\"\n\
         [[pci_bridge.device]]\nslot = 2\nkind = \"ivshmem\"\nregion = \"shm0\"\npeer_id = 1\nrw_size = \"64K\"\noutput_size = \"4K\"\n",
    ));
    let devices = &cfg.pci_bridges[0].devices;
    assert_eq!(
        devices[0],
        PciDeviceConfig {
            bus: 0,
            slot: 1,
            function: 0,
            kind: PciDeviceKind::Test
        }
    );
    assert_eq!(
        devices[1].kind,
        PciDeviceKind::Ivshmem(IvshmemConfig {
            region: "shm0".into(),
            peer_id: 1,
            max_peers: 2,
            rw_size: 64 << 10,
            output_size: 4 << 10,
        })
    );
}

#[test]
fn rejects_pci_slot_above_31() {
    assert_err(
        &device_cell("[[pci_bridge.device]]\nslot = 32\nkind = \"test\"\n"),
        "cells/x.toml:12:8: pci_bridge[0].device[0].slot: 32 is not a PCI device number (0..=31)",
    );
}

#[test]
fn rejects_two_devices_in_the_same_slot_and_function() {
    assert_err(
        &device_cell(
            "[[pci_bridge.device]]\nslot = 3\nkind = \"test\"\n[[pci_bridge.device]]\nslot = 3\nkind = \"test\"\n",
        ),
        "cells/x.toml:15:8: pci_bridge[0].device[1].slot: 00:03.0 is already used by pci_bridge[0].device[0]",
    );
}

#[test]
fn rejects_function_without_function_zero() {
    assert_err(
        &device_cell("[[pci_bridge.device]]\nslot = 3\nfunction = 2\nkind = \"test\"\n"),
        "cells/x.toml:12:8: pci_bridge[0].device[0].function: function 2 of slot 3 needs a function 0 in the same slot (Linux only scans further functions of a present function 0)",
    );
}

#[test]
fn rejects_unknown_pci_device_kind() {
    assert_err(
        &device_cell("[[pci_bridge.device]]\nslot = 1\nkind = \"nvme\"\n"),
        "cells/x.toml:13:8: pci_bridge[0].device[0].kind: unknown kind \"nvme\", expected \"test\", \"ivshmem\", \"virtio\" or \"pci-bridge\"",
    );
}

#[test]
fn rejects_ivshmem_keys_on_a_test_device() {
    assert_err(
        &device_cell("[[pci_bridge.device]]\nslot = 1\nkind = \"test\"\nregion = \"x\"\n"),
        "cells/x.toml:14:10: pci_bridge[0].device[0].region: only ivshmem devices take this key",
    );
}

#[test]
fn rejects_ivshmem_peer_id_not_below_max_peers() {
    assert_err(
        &device_cell(
            "[[pci_bridge.device]]\nslot = 1\nkind = \"ivshmem\"\nregion = \"r\"\npeer_id = 2\nrw_size = \"4K\"\n",
        ),
        "cells/x.toml:15:11: pci_bridge[0].device[0].peer_id: 2 is not below max_peers (2)",
    );
}

#[test]
fn rejects_ivshmem_without_shared_memory() {
    assert_err(
        &device_cell(
            "[[pci_bridge.device]]\nslot = 1\nkind = \"ivshmem\"\nregion = \"r\"\npeer_id = 0\n",
        ),
        "cells/x.toml:11:1: pci_bridge[0].device[0].rw_size: an ivshmem device needs rw_size or output_size (or both) above 0",
    );
}

#[test]
fn rejects_ivshmem_section_not_page_sized() {
    assert_err(
        &device_cell(
            "[[pci_bridge.device]]\nslot = 1\nkind = \"ivshmem\"\nregion = \"r\"\npeer_id = 0\nrw_size = 100\n",
        ),
        "cells/x.toml:16:11: pci_bridge[0].device[0].rw_size: 0x64 must be a multiple of 4 KiB and at most 1 GiB",
    );
}

#[test]
fn rejects_block_device_without_an_image() {
    assert_err(
        &head("[[virtio_mmio]]\nid = \"d\"\nkind = \"block\"\n"),
        "cells/x.toml:8:1: virtio_mmio[0].path: missing required key (a block device needs the path of its raw disk image)",
    );
}

#[test]
fn rejects_backend_keys_of_another_kind() {
    assert_err(
        &head("[[virtio_mmio]]\nid = \"r\"\nkind = \"rng\"\npath = \"x\"\n"),
        "cells/x.toml:11:8: virtio_mmio[0].path: a rng device takes no \"path\" key",
    );
}

#[test]
fn rejects_console_with_both_path_and_socket() {
    assert_err(
        &head("[[virtio_mmio]]\nid = \"c\"\nkind = \"console\"\npath = \"a\"\nsocket = \"b\"\n"),
        "cells/x.toml:12:10: virtio_mmio[0].socket: a console takes one of path, socket or pty",
    );
}

#[test]
fn accepts_block_backend_keys() {
    let cfg = ok(&head(
        "[[virtio_mmio]]\nid = \"d\"\nkind = \"block\"\npath = \"img\"\nread_only = true\nserial = \"SN1\"\n",
    ));
    let b = &cfg.virtio_mmio[0].backend;
    assert_eq!(b.path, Some(PathBuf::from("/cells/img")));
    assert!(b.read_only);
    assert_eq!(b.serial.as_deref(), Some("SN1"));
}

#[test]
fn accepts_virtio_pci_devices_with_their_backends() {
    let cfg = ok(&device_cell(
        "[[pci_bridge.device]]\nslot = 1\nkind = \"virtio\"\nvirtio = \"block\"\npath = \"img\"\nqueue_size = 64\n\
         [[pci_bridge.device]]\nslot = 2\nkind = \"virtio\"\nvirtio = \"console\"\npty = \"con.pty\"\n",
    ));
    let devices = &cfg.pci_bridges[0].devices;
    let PciDeviceKind::Virtio(blk) = &devices[0].kind else {
        panic!("{devices:?}");
    };
    assert_eq!(blk.kind, VirtioKind::Block);
    assert_eq!(blk.backend.path, Some(PathBuf::from("/cells/img")));
    assert_eq!(blk.backend.queue_size, Some(64));
    let PciDeviceKind::Virtio(con) = &devices[1].kind else {
        panic!("{devices:?}");
    };
    assert_eq!(con.backend.pty, Some(PathBuf::from("/cells/con.pty")));
}

#[test]
fn rejects_virtio_pci_device_without_a_device_type() {
    assert_err(
        &device_cell("[[pci_bridge.device]]\nslot = 1\nkind = \"virtio\"\n"),
        "cells/x.toml:11:1: pci_bridge[0].device[0].virtio: missing required key (the device type: \"rng\", \"block\" or \"console\")",
    );
}

#[test]
fn rejects_unknown_virtio_pci_device_type() {
    assert_err(
        &device_cell("[[pci_bridge.device]]\nslot = 1\nkind = \"virtio\"\nvirtio = \"net\"\n"),
        "cells/x.toml:14:10: pci_bridge[0].device[0].virtio: unknown virtio device \"net\", expected \"rng\", \"block\" or \"console\"",
    );
}

#[test]
fn rejects_virtio_keys_on_an_ivshmem_or_test_device() {
    assert_err(
        &device_cell("[[pci_bridge.device]]\nslot = 1\nkind = \"test\"\npath = \"x\"\n"),
        "cells/x.toml:14:8: pci_bridge[0].device[0].path: only virtio devices take this key",
    );
    assert_err(
        &device_cell("[[pci_bridge.device]]\nslot = 1\nkind = \"virtio\"\nvirtio = \"rng\"\nregion = \"r\"\n"),
        "cells/x.toml:15:10: pci_bridge[0].device[0].region: only ivshmem devices take this key",
    );
}

#[test]
fn ioeventfd_is_on_unless_a_virtio_device_turns_it_off() {
    let cfg = ok(&device_cell(
        "[[pci_bridge.device]]\nslot = 1\nkind = \"virtio\"\nvirtio = \"rng\"\nioeventfd = false\n\
         [[pci_bridge.device]]\nslot = 2\nkind = \"virtio\"\nvirtio = \"rng\"\n",
    ));
    let flags: Vec<bool> = cfg.pci_bridges[0]
        .devices
        .iter()
        .map(|d| match &d.kind {
            PciDeviceKind::Virtio(v) => v.backend.ioeventfd,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(flags, [false, true]);
    let mmio = ok(&head(
        "[[virtio_mmio]]\nid = \"r\"\nkind = \"rng\"\nioeventfd = false\n",
    ));
    assert!(!mmio.virtio_mmio[0].backend.ioeventfd);
}

#[test]
fn rejects_ioeventfd_that_is_not_a_boolean_or_not_on_a_virtio_device() {
    assert_err(
        &head("[[virtio_mmio]]\nid = \"r\"\nkind = \"rng\"\nioeventfd = 1\n"),
        "cells/x.toml:11:13: virtio_mmio[0].ioeventfd: invalid type: integer `1`, expected a boolean",
    );
    assert_err(
        &device_cell("[[pci_bridge.device]]\nslot = 1\nkind = \"test\"\nioeventfd = false\n"),
        "cells/x.toml:14:13: pci_bridge[0].device[0].ioeventfd: only virtio devices take this key",
    );
}

#[test]
fn rejects_queue_size_that_is_not_a_power_of_two_in_range() {
    for (size, col) in [("100", 14), ("8", 14), ("2048", 14), ("-1", 14)] {
        assert_err(
            &head(&format!(
                "[[virtio_mmio]]\nid = \"r\"\nkind = \"rng\"\nqueue_size = {size}\n"
            )),
            &format!(
                "cells/x.toml:11:{col}: virtio_mmio[0].queue_size: {size} is not a power of two from 16 to 1024"
            ),
        );
    }
}

#[test]
fn rejects_console_with_both_socket_and_pty() {
    assert_err(
        &head("[[virtio_mmio]]\nid = \"c\"\nkind = \"console\"\nsocket = \"a\"\npty = \"b\"\n"),
        "cells/x.toml:12:7: virtio_mmio[0].pty: a console takes one of path, socket or pty",
    );
}

#[test]
fn rejects_pty_on_a_block_device() {
    assert_err(
        &head("[[virtio_mmio]]\nid = \"d\"\nkind = \"block\"\npath = \"i\"\npty = \"p\"\n"),
        "cells/x.toml:12:7: virtio_mmio[0].pty: a block device takes no \"pty\" key",
    );
}

// ---------------------------------------------------------------------------
// What only the host can tell (checked with LoadOptions::check_files)

#[test]
fn a_pin_to_a_host_cpu_that_does_not_exist_is_refused_when_the_host_is_checked() {
    let dir = kernel_dir();
    let text = "name = \"t\"\n[cpus]\ncount = 1\npin = [1023]\n[[memory]]\nsize = \"256M\"\n[kernel]\npath = \"bzImage\"\n";
    let host = host_cpu_count();
    assert!(
        host < 1024,
        "this test needs a host with fewer than 1024 CPUs"
    );
    assert_err_in(
        dir.path(),
        text,
        &format!(
            "cells/x.toml:4:8: cpus.pin[0]: host CPU 1023 does not exist: this host has {host} CPUs (0..={})",
            host - 1
        ),
    );
    // Without the host checks (cellvm dtb) the pin is only range-checked.
    ok(&text.replace("bzImage", "/k/bzImage"));
}

#[test]
fn an_output_file_in_a_directory_that_does_not_exist_is_refused_when_the_host_is_checked() {
    let dir = kernel_dir();
    let cell = |tail: &str| {
        format!("name = \"t\"\n[cpus]\ncount = 1\n[[memory]]\nsize = \"256M\"\n[kernel]\npath = \"bzImage\"\n{tail}")
    };
    assert_err_in(
        dir.path(),
        &cell("[console]\noutput = \"file\"\npath = \"nodir/console.log\"\n"),
        &format!(
            "cells/x.toml:10:8: console.path: directory {}/nodir does not exist",
            dir.path().display()
        ),
    );
    assert_err_in(
        dir.path(),
        &cell("[[uart]]\nid = \"u\"\npath = \"nodir/u.out\"\n"),
        &format!(
            "cells/x.toml:10:8: uart[0].path: directory {}/nodir does not exist",
            dir.path().display()
        ),
    );
    assert_err_in(
        dir.path(),
        &cell("[[virtio_mmio]]\nid = \"c\"\nkind = \"console\"\nsocket = \"nodir/c.sock\"\n"),
        &format!(
            "cells/x.toml:11:10: virtio_mmio[0].socket: directory {}/nodir does not exist",
            dir.path().display()
        ),
    );
    parse_in(
        dir.path(),
        &cell("[console]\noutput = \"file\"\npath = \"console.log\"\n"),
    )
    .expect("an output file next to the config is fine");
}

#[test]
fn a_path_with_a_newline_gives_a_one_line_error() {
    let dir = kernel_dir();
    let text = "name = \"t\"\n[cpus]\ncount = 1\n[[memory]]\nsize = \"256M\"\n[kernel]\npath = \"bz\\nImage\"\n";
    let e = parse_in(dir.path(), text)
        .expect_err("no such kernel")
        .to_string();
    assert!(!e.contains('\n'), "{e}");
    assert!(e.contains("bz\\nImage does not exist"), "{e}");
    let e = load(Path::new("/no/such\ndir/x.toml"), &NO_FILES)
        .expect_err("no such file")
        .to_string();
    assert!(!e.contains('\n'), "{e}");
}

// ---------------------------------------------------------------------------
// Connectors

#[test]
fn a_connector_defaults_to_one_mib_and_four_pins() {
    let cfg = ok(&head("[[connector]]\nid = \"j1\"\n"));
    assert_eq!(
        cfg.connectors,
        vec![ConnectorConfig {
            id: "j1".into(),
            size: 1 << 20,
            irqs: 4
        }]
    );
}

#[test]
fn a_connector_takes_a_size_and_a_pin_count() {
    let cfg = ok(&head(
        "[[connector]]\nid = \"j1\"\nsize = \"4M\"\nirqs = 8\n",
    ));
    assert_eq!(cfg.connectors[0].size, 4 << 20);
    assert_eq!(cfg.connectors[0].irqs, 8);
}

#[test]
fn a_connector_id_must_be_a_lowercase_label() {
    assert_err(
        &head("[[connector]]\nid = \"J-1\"\n"),
        "cells/x.toml:9:6: connector[0].id: must be 1-31 characters of a-z, 0-9 and '_' \
         starting with a letter (it is the connector's device-tree label), got \"J-1\"",
    );
}

#[test]
fn a_connector_size_must_be_a_power_of_two_in_range() {
    assert_err(
        &head("[[connector]]\nid = \"j1\"\nsize = \"3M\"\n"),
        "cells/x.toml:10:8: connector[0].size: must be a power of two from 64 KiB to 64 MiB, got 3 MiB",
    );
    assert_err(
        &head("[[connector]]\nid = \"j1\"\nsize = \"4K\"\n"),
        "cells/x.toml:10:8: connector[0].size: must be a power of two from 64 KiB to 64 MiB, got 4 KiB",
    );
}

#[test]
fn a_connector_pin_count_is_one_to_eight() {
    assert_err(
        &head("[[connector]]\nid = \"j1\"\nirqs = 9\n"),
        "cells/x.toml:10:8: connector[0].irqs: must be 1 to 8, got 9",
    );
}

#[test]
fn a_connector_id_may_not_repeat_a_device_id() {
    assert_err(
        &head("[[uart]]\nid = \"j1\"\n[[connector]]\nid = \"j1\"\n"),
        "cells/x.toml:11:6: connector[0].id: duplicate id \"j1\" (already used by uart[0])",
    );
}

#[cfg(target_arch = "x86_64")]
#[test]
fn an_arm64_image_is_recognised_and_refused_on_x86_64() {
    let dir = kernel_dir();
    let mut image = vec![0u8; 0x1000];
    image[0x38..0x3c].copy_from_slice(b"ARM\x64");
    std::fs::write(dir.path().join("Image"), &image).unwrap();
    assert_err_in(
        dir.path(),
        &kernel_cell("[kernel]\npath = \"Image\"\n"),
        &format!(
            "cells/x.toml:7:8: kernel.path: {} is \"image\", which this cellvm (x86_64) cannot \
             boot: it boots \"bzimage\", \"vmlinux\" or \"elf\"",
            dir.path().join("Image").display()
        ),
    );
}
