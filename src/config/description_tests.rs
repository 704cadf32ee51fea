//! Device descriptions: one device table of a cell file, read by the same
//! validator as the cell file.

use super::*;
use std::path::Path;

const NO_FILES: LoadOptions = LoadOptions { check_files: false };

use super::tests::HEAD;

fn cell_with(table: &str) -> Result<CellConfig, ConfigError> {
    parse(
        &format!("{HEAD}{table}"),
        Some(Path::new("cells/x.toml")),
        Path::new("/cells"),
        &NO_FILES,
    )
}

fn description(text: &str) -> Result<DeviceConfig, ConfigError> {
    parse_device(
        text,
        Some(Path::new("cells/dev.toml")),
        Path::new("/cells"),
        &NO_FILES,
    )
    .map(|d| d.device)
}

/// `error` without its `file:line:column: ` and its line number.
fn located(error: &ConfigError) -> (usize, String, String) {
    let at = error.location().expect("a location");
    let text = error.to_string();
    let rest = text
        .split_once(&format!("{at}: "))
        .map_or(text.as_str(), |(_, r)| r)
        .to_string();
    (at.line, error.field().to_string(), rest)
}

const TABLES: [&str; 4] = [
    "[[virtio_mmio]]\nid = \"disk1\"\nkind = \"block\"\npath = \"data.img\"\nread_only = true\n",
    "[[pci_bridge]]\nid = \"hot0\"\nkind = \"cam\"\nbus_start = 8\nmmio32 = { size = \"32M\" }\n\
     [[pci_bridge.device]]\nslot = 1\nkind = \"test\"\n\
     [[pci_bridge.device]]\nslot = 2\nkind = \"virtio\"\nvirtio = \"console\"\nsocket = \"c.sock\"\n",
    "[[uart]]\nid = \"com2\"\nport = 0x2f8\nirq = 3\npath = \"com2.log\"\n",
    "[[virtio_mmio]]\nid = \"rng1\"\nkind = \"rng\"\nbase = 0xd0104000\nirq = 12\n",
];

#[test]
fn a_table_reads_the_same_in_a_cell_file_and_in_a_description() {
    for table in TABLES {
        let cfg = cell_with(table).unwrap_or_else(|e| panic!("cell: {e}"));
        let from_cell = cfg.devices();
        let dev = description(table).unwrap_or_else(|e| panic!("description: {e}"));
        assert_eq!(from_cell, [dev], "{table}");
    }
}

#[test]
fn the_same_bad_table_gives_the_same_error_in_a_cell_file_and_a_description() {
    let bad = [
        "[[virtio_mmio]]\nid = \"d\"\nkind = \"block\"\n",
        "[[virtio_mmio]]\nid = \"d\"\nkind = \"disk\"\n",
        "[[virtio_mmio]]\nid = \"r\"\nkind = \"rng\"\nbase = 0xd0100800\n",
        "[[virtio_mmio]]\nid = \"r\"\nkind = \"rng\"\nirq = 24\n",
        "[[virtio_mmio]]\nid = \"r\"\nkind = \"rng\"\npath = \"x\"\n",
        "[[virtio_mmio]]\nid = \"bad id\"\nkind = \"rng\"\n",
        "[[pci_bridge]]\nid = \"b\"\nkind = \"ecam\"\nbus_start = 4\nbus_end = 3\n",
        "[[pci_bridge]]\nid = \"b\"\nkind = \"ecam\"\nmmio32 = { base = 0xc0000000, size = \"3M\" }\n",
        "[[pci_bridge]]\nid = \"b\"\nkind = \"ecam\"\n[[pci_bridge.device]]\nslot = 32\nkind = \"test\"\n",
        "[[pci_bridge]]\nid = \"b\"\nkind = \"ecam\"\n[[pci_bridge.device]]\nslot = 1\nkind = \"ivshmem\"\nregion = \"r\"\npeer_id = 0\nrw_size = 100\n",
        "[[pci_bridge]]\nid = \"b\"\nkind = \"ecam\"\n[[pci_bridge.device]]\nslot = 1\nfunction = 1\nkind = \"test\"\n",
        "[[uart]]\nid = \"u\"\nport = 0x2f9\n",
        "[[uart]]\nport = 0x2f8\n",
        "[[uart]]\nid = \"u\"\nbaud = 9600\n",
    ];
    for table in bad {
        let in_cell = cell_with(table).expect_err(table);
        let alone = description(table).expect_err(table);
        let (cell_line, cell_field, cell_rest) = located(&in_cell);
        let (line, field, rest) = located(&alone);
        assert_eq!(
            (cell_line, cell_field, cell_rest),
            (line + HEAD.lines().count(), field, rest),
            "{table}"
        );
        assert!(alone.to_string().starts_with("cells/dev.toml:"), "{alone}");
    }
}

#[test]
fn a_description_holds_exactly_one_device_table() {
    for text in [
        "",
        "[[uart]]\nid = \"a\"\n[[uart]]\nid = \"b\"\n",
        "[[uart]]\nid = \"a\"\n[[virtio_mmio]]\nid = \"r\"\nkind = \"rng\"\n",
    ] {
        let e = description(text).expect_err(text);
        assert!(
            e.to_string()
                .contains("a device description holds exactly one device table"),
            "{e}"
        );
    }
    let e = description("name = \"t\"\n").expect_err("a cell key");
    assert_eq!(e.field(), "name");
}

#[test]
fn relative_paths_resolve_against_the_description_directory() {
    let dev = description(TABLES[0]).expect("valid");
    let DeviceConfig::VirtioMmio(v) = dev else {
        panic!("{dev:?}")
    };
    assert_eq!(
        v.backend.path.as_deref(),
        Some(Path::new("/cells/data.img"))
    );
}

#[test]
fn a_json_description_reads_as_its_toml_twin() {
    let json = serde_json::json!({"pci_bridge": [{
        "id": "hot0", "kind": "cam", "bus_start": 8, "mmio32": {"size": "32M"},
        "device": [
            {"slot": 1, "kind": "test"},
            {"slot": 2, "kind": "virtio", "virtio": "console", "socket": "c.sock"}
        ]
    }]});
    let value = toml::Value::try_from(json).expect("a TOML value");
    let dev = device_from_value(value, "dev.json", Some(Path::new("/cells")), &NO_FILES)
        .expect("valid")
        .device;
    assert_eq!(dev, description(TABLES[1]).expect("valid"));
}

#[test]
fn json_errors_name_the_field_but_no_line() {
    let value = toml::Value::try_from(serde_json::json!({"uart": [{"id": "u", "irq": 99}]}))
        .expect("value");
    let e = device_from_value(value, "<request>", None, &NO_FILES).expect_err("bad pin");
    assert_eq!(
        e.to_string(),
        "<request>: uart[0].irq: IOAPIC pin 99 does not exist (pins are 0 to 23)"
    );
}

#[test]
fn without_a_directory_only_absolute_paths_are_accepted() {
    let table = |path: &str| {
        toml::Value::try_from(serde_json::json!({"uart": [{"id": "u", "path": path}]}))
            .expect("value")
    };
    let e = device_from_value(table("u.log"), "<request>", None, &NO_FILES).expect_err("relative");
    assert!(e.to_string().contains("give an absolute path"), "{e}");
    let ok =
        device_from_value(table("/tmp/u.log"), "<request>", None, &NO_FILES).expect("absolute");
    let DeviceConfig::Uart(u) = ok.device else {
        panic!("not a uart")
    };
    assert_eq!(u.path.as_deref(), Some(Path::new("/tmp/u.log")));
}

#[test]
fn a_description_sent_as_its_value_validates_to_the_same_device() {
    for table in TABLES {
        let d = parse_device(table, None, Path::new("/cells"), &NO_FILES).expect("valid");
        let value = d.to_value().expect("serialisable");
        let again = device_from_value(value, "<request>", Some(Path::new("/cells")), &NO_FILES)
            .expect("valid again");
        assert_eq!(again.device, d.device, "{table}");
    }
}

#[test]
fn load_device_picks_json_by_extension_and_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml_path = dir.path().join("rng.toml");
    std::fs::write(&toml_path, "[[virtio_mmio]]\nid = \"r\"\nkind = \"rng\"\n").expect("write");
    let json_path = dir.path().join("rng.json");
    std::fs::write(
        &json_path,
        r#"{"virtio_mmio": [{"id": "r", "kind": "rng"}]}"#,
    )
    .expect("write");
    let a = load_device(&toml_path, &NO_FILES).expect("toml");
    let b = load_device(&json_path, &NO_FILES).expect("json");
    assert_eq!(a.device, b.device);
    std::fs::write(&json_path, "{\"virtio_mmio\": [").expect("write");
    let e = load_device(&json_path, &NO_FILES).expect_err("syntax");
    assert!(
        e.to_string()
            .starts_with(&format!("{}:1:", json_path.display())),
        "{e}"
    );
}
