//! Keeps the guest agent (`guest/agent/cellvm_agent.c`) and the host's wire
//! format ([`super::protocol`]) in step. The tests read both sources as text
//! and check, in both directions:
//!
//! - every numeric `#define CV_*` in the agent equals its Rust constant, and
//!   every `pub const` in `protocol.rs` has a C counterpart; the exceptions on
//!   either side are listed below with the reason;
//! - `CV_OP_*` and the [`Op`] enum name the same operations with the same
//!   values;
//! - `struct cv_hdr` and [`Header`] have the same fields, sizes and offsets
//!   (and `CV_HDR_LEN` is [`proto::HEADER_LEN`]);
//! - the agent matches the `compatible` the host writes into the device tree.
//!
//! A constant added, renamed or changed on one side only fails here.

use super::protocol::{self as proto, regs, Header, Op};
use std::collections::{BTreeMap, BTreeSet};

/// The agent's source, as the guest build compiles it.
const AGENT_C: &str = include_str!("../../guest/agent/cellvm_agent.c");
/// The host's wire format module.
const PROTOCOL_RS: &str = include_str!("protocol.rs");
/// The channel's device-tree template (its `compatible`).
const CHANNEL_DTS: &str = include_str!("../../fdt-templates/channel.dts");

/// `CV_*` name = Rust constant: `(C name, Rust path, Rust value)`.
macro_rules! pairs {
    ($($c:ident = $rust:path),* $(,)?) => {
        [$((stringify!($c), stringify!($rust), $rust as u64)),*]
    };
}

/// C defines and the Rust constants they must equal.
fn paired() -> Vec<(&'static str, &'static str, u64)> {
    pairs![
        CV_DEVICE_MAGIC = proto::DEVICE_MAGIC,
        CV_MSG_MAGIC = proto::MSG_MAGIC,
        CV_PROTOCOL_VERSION = proto::PROTOCOL_VERSION,
        CV_REG_MAGIC = regs::MAGIC,
        CV_REG_VERSION = regs::VERSION,
        CV_REG_HOST_CAPS = regs::HOST_CAPS,
        CV_REG_H2G_OFFSET = regs::H2G_OFFSET,
        CV_REG_H2G_SIZE = regs::H2G_SIZE,
        CV_REG_G2H_OFFSET = regs::G2H_OFFSET,
        CV_REG_G2H_SIZE = regs::G2H_SIZE,
        CV_REG_INT_STATUS = regs::INT_STATUS,
        CV_REG_INT_ACK = regs::INT_ACK,
        CV_REG_INT_ENABLE = regs::INT_ENABLE,
        CV_REG_H2G_STATE = regs::H2G_STATE,
        CV_REG_H2G_TICKET = regs::H2G_TICKET,
        CV_REG_H2G_DONE = regs::H2G_DONE,
        CV_REG_H2G_RESULT = regs::H2G_RESULT,
        CV_REG_G2H_DOORBELL = regs::G2H_DOORBELL,
        CV_REG_G2H_RESULT = regs::G2H_RESULT,
        CV_INT_H2G = proto::INT_H2G,
        CV_CAP_OVERLAY = proto::AGENT_CAP_OVERLAY,
        CV_CAP_PING = proto::AGENT_CAP_PING,
        CV_CAP_SHUTDOWN = proto::AGENT_CAP_SHUTDOWN,
        CV_CAP_CONNECTORS = proto::AGENT_CAP_CONNECTORS,
        CV_CAP_PCI_FUNCTIONS = proto::AGENT_CAP_PCI_FUNCTIONS,
        CV_HOST_CAP_POWER_OFF = proto::HOST_CAP_POWER_OFF,
        CV_HDR_LEN = proto::HEADER_LEN,
    ]
    .to_vec()
}

/// C defines with no Rust constant, and why. (`CV_OP_*` are checked against
/// [`Op`] instead.)
const GUEST_ONLY: &[(&str, &str)] = &[
    (
        "CV_AGENT_CAPS",
        "what this agent announces in HELLO; checked to be a subset of the AGENT_CAP_* bits",
    ),
    (
        "CV_CAPS_OVERLAYS",
        "the overlay part of CV_AGENT_CAPS (defines are one line each)",
    ),
];

/// `protocol.rs` constants with no C define, and why.
const HOST_ONLY: &[(&[&str], &str)] = &[
    (
        &["H2G_OFFSET", "H2G_SIZE", "G2H_OFFSET", "G2H_SIZE"],
        "the agent must read the mailbox layout from the registers (docs/channel.md)",
    ),
    (
        &["WINDOW_SIZE", "regs::PAGE_SIZE"],
        "the agent maps the window from the DT `reg`",
    ),
    (
        &["INT_ALL"],
        "host-side mask; the agent handles only CV_INT_H2G (and acks ~0)",
    ),
    (
        &["MAX_H2G_PAYLOAD", "MAX_G2H_PAYLOAD"],
        "the agent derives them: mailbox size register - CV_HDR_LEN",
    ),
];

/// `protocol::errno` constants: the agent uses the kernel's
/// `<linux/errno.h>`, so each must be the Linux value (`libc`'s).
macro_rules! linux_errnos {
    ($($e:ident),* $(,)?) => {
        [$((stringify!(errno::$e), proto::errno::$e, libc::$e)),*]
    };
}

/// `(Rust path, value)` of the `protocol::errno` constants, checked against
/// Linux.
fn errno_pairs() -> Vec<(&'static str, u64)> {
    linux_errnos![
        ENOENT,
        ESRCH,
        EINVAL,
        EPROTO,
        EBADMSG,
        EMSGSIZE,
        EPROTONOSUPPORT,
        EOPNOTSUPP,
        ETIMEDOUT,
        ECANCELED,
    ]
    .iter()
    .map(|&(rust, ours, linux)| {
        assert_eq!(
            ours,
            linux,
            "{} = {ours}, but Linux says {linux}",
            path(rust)
        );
        (rust, ours as u64)
    })
    .collect()
}

/// Rust paths as `stringify!` may space them (`regs :: MAGIC`) → `regs::MAGIC`.
fn path(s: &str) -> String {
    s.split_whitespace().collect()
}

/// A C integer literal (`0x1c`, `24`, `0x1u`).
fn c_literal(s: &str) -> Option<u64> {
    let s = s.trim_end_matches(['u', 'U', 'l', 'L']);
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// `struct NAME { ... } __packed;` of the agent: `(field, offset, size)`.
fn c_struct(name: &str) -> Vec<(String, usize, usize)> {
    let open = format!("struct {name} {{");
    let mut lines = AGENT_C.lines().skip_while(|l| l.trim() != open);
    assert!(lines.next().is_some(), "no `{open}` in cellvm_agent.c");
    let mut fields = Vec::new();
    let mut offset = 0;
    for line in lines.by_ref() {
        let line = line.trim();
        if line.starts_with('}') {
            assert_eq!(line, "} __packed;", "struct {name} must be __packed");
            return fields;
        }
        let (ty, field) = line
            .strip_suffix(';')
            .and_then(|l| l.split_once(' '))
            .unwrap_or_else(|| panic!("struct {name}: cannot parse field `{line}`"));
        let size = match ty {
            "__le64" | "u64" => 8,
            "__le32" | "u32" | "s32" => 4,
            "__le16" | "u16" => 2,
            "u8" => 1,
            _ => panic!("struct {name}: field type `{ty}` not known to this test"),
        };
        fields.push((field.to_string(), offset, size));
        offset += size;
    }
    panic!("struct {name} is not closed");
}

/// Every `#define CV_*` of the agent, evaluated: literals, `|` of literals
/// and earlier defines, and `sizeof(struct ...)`. Anything else fails, so no
/// define escapes the check.
fn c_defines() -> BTreeMap<String, u64> {
    let mut defs = BTreeMap::new();
    for line in AGENT_C.lines() {
        let Some(rest) = line.trim().strip_prefix("#define ") else {
            continue;
        };
        let rest = rest.split("/*").next().unwrap_or(rest).trim();
        let (name, expr) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        if !name.starts_with("CV_") {
            continue;
        }
        let expr = expr.trim();
        assert!(!expr.ends_with('\\'), "{name}: multi-line define");
        let value = if let Some(s) = expr
            .strip_prefix("sizeof(struct ")
            .and_then(|s| s.strip_suffix(')'))
        {
            c_struct(s).iter().map(|f| f.2).sum::<usize>() as u64
        } else {
            let inner = expr.trim_start_matches('(').trim_end_matches(')');
            inner
                .split('|')
                .map(|t| {
                    let t = t.trim();
                    c_literal(t)
                        .or_else(|| defs.get(t).copied())
                        .unwrap_or_else(|| panic!("{name}: cannot evaluate `{t}` in `{expr}`"))
                })
                .fold(0, |a, b| a | b)
        };
        assert!(
            defs.insert(name.to_string(), value).is_none(),
            "{name} defined twice"
        );
    }
    defs
}

/// Every `pub const` in `protocol.rs`, with its module (`regs::MAGIC`).
fn rust_consts() -> BTreeSet<String> {
    let mut module: Option<&str> = None;
    let mut out = BTreeSet::new();
    for line in PROTOCOL_RS.lines() {
        if let Some(m) = line
            .strip_prefix("pub mod ")
            .and_then(|l| l.strip_suffix(" {"))
        {
            module = Some(m);
        } else if line == "}" {
            module = None;
        } else if let Some(c) = line.trim().strip_prefix("pub const ") {
            let name = c.split(':').next().unwrap_or(c).trim();
            out.insert(match module {
                Some(m) => format!("{m}::{name}"),
                None => name.to_string(),
            });
        }
    }
    out
}

/// `NAME: TYPE` fields of the `pub struct NAME` in `protocol.rs`.
fn rust_struct(name: &str) -> Vec<(String, String)> {
    let open = format!("pub struct {name} {{");
    PROTOCOL_RS
        .lines()
        .skip_while(|l| *l != open)
        .skip(1)
        .take_while(|l| *l != "}")
        .filter_map(|l| l.trim().strip_prefix("pub "))
        .map(|l| {
            let (f, t) = l.split_once(':').unwrap_or((l, ""));
            (
                f.trim().to_string(),
                t.trim().trim_end_matches(',').to_string(),
            )
        })
        .collect()
}

/// `(variant, value)` of `pub enum Op` in `protocol.rs`.
fn rust_op_variants() -> Vec<(String, u16)> {
    PROTOCOL_RS
        .lines()
        .skip_while(|l| *l != "pub enum Op {")
        .take_while(|l| *l != "}")
        .filter(|l| !l.trim_start().starts_with("//"))
        .filter_map(|l| {
            let (v, n) = l.trim().strip_suffix(',')?.split_once(" = ")?;
            Some((v.to_string(), n.parse().ok()?))
        })
        .collect()
}

#[test]
fn every_agent_define_equals_its_rust_constant_and_every_rust_constant_has_one() {
    let c = c_defines();
    let mut errors = Vec::new();

    let paired = paired();
    for &(name, rust, value) in &paired {
        match c.get(name) {
            None => errors.push(format!(
                "{name} (= {}) missing in cellvm_agent.c",
                path(rust)
            )),
            Some(&v) if v != value => errors.push(format!(
                "{name} = {v:#x} in cellvm_agent.c, but {} = {value:#x}",
                path(rust)
            )),
            Some(_) => {}
        }
    }
    let known: BTreeSet<&str> = paired
        .iter()
        .map(|p| p.0)
        .chain(GUEST_ONLY.iter().map(|g| g.0))
        .collect();
    for name in c.keys() {
        if !name.starts_with("CV_OP_") && !known.contains(name.as_str()) {
            errors.push(format!(
                "{name} in cellvm_agent.c has no Rust counterpart: pair it in \
                 agent_protocol_tests.rs (or list it as GUEST_ONLY, with the reason)"
            ));
        }
    }
    for (name, why) in GUEST_ONLY {
        if !c.contains_key(*name) {
            errors.push(format!(
                "GUEST_ONLY {name} ({why}) is gone from cellvm_agent.c"
            ));
        }
    }

    // Rust → C: every pub const of protocol.rs is paired or explained.
    let covered: BTreeSet<String> = paired
        .iter()
        .map(|p| path(p.1).trim_start_matches("proto::").to_string())
        .chain(errno_pairs().iter().map(|e| path(e.0)))
        .chain(
            HOST_ONLY
                .iter()
                .flat_map(|h| h.0.iter().map(|n| n.to_string())),
        )
        .collect();
    let consts = rust_consts();
    for name in consts.difference(&covered) {
        errors.push(format!(
            "protocol.rs {name} has no C counterpart: add it to cellvm_agent.c and pair \
             it in agent_protocol_tests.rs (or list it as HOST_ONLY, with the reason)"
        ));
    }
    for name in covered.difference(&consts) {
        errors.push(format!(
            "{name} is paired or HOST_ONLY but not in protocol.rs"
        ));
    }

    // What the agent announces must be capabilities the host knows.
    let caps = paired
        .iter()
        .filter(|p| p.0.starts_with("CV_CAP_"))
        .fold(0, |a, p| a | p.2);
    if let Some(&announced) = c.get("CV_AGENT_CAPS") {
        if announced & !caps != 0 {
            errors.push(format!(
                "CV_AGENT_CAPS = {announced:#x} has bits outside the AGENT_CAP_* ({caps:#x})"
            ));
        }
    }

    assert!(
        errors.is_empty(),
        "agent/host drift:\n{}",
        errors.join("\n")
    );
}

#[test]
fn agent_operations_are_the_op_enum_with_the_same_values() {
    let c_ops: BTreeMap<String, u64> = c_defines()
        .into_iter()
        .filter_map(|(n, v)| Some((n.strip_prefix("CV_OP_")?.to_string(), v)))
        .collect();
    let variants = rust_op_variants();
    assert!(variants.len() >= 8, "parsed only {variants:?} from enum Op");
    let mut rust_ops = BTreeMap::new();
    for (variant, value) in &variants {
        let op = Op::from_u16(*value).unwrap_or_else(|| {
            panic!("Op::{variant} = {value}, but Op::from_u16({value}) is None")
        });
        assert_eq!(op as u16, *value, "Op::from_u16({value}) is {op:?}");
        rust_ops.insert(op.name().to_string(), u64::from(*value));
    }
    for v in 0..=u16::MAX {
        if let Some(op) = Op::from_u16(v) {
            assert_eq!(rust_ops.get(op.name()), Some(&u64::from(v)), "{op:?}");
        }
    }
    assert_eq!(
        c_ops, rust_ops,
        "CV_OP_* of cellvm_agent.c (left) differ from protocol::Op (right)"
    );
}

#[test]
fn agent_header_struct_has_the_rust_header_fields_sizes_and_offsets() {
    let c = c_struct("cv_hdr");
    let rust: Vec<(String, usize)> = rust_struct("Header")
        .into_iter()
        .map(|(f, t)| {
            let size = match t.as_str() {
                "u16" => 2,
                "u32" | "i32" => 4,
                _ => panic!("Header.{f}: type {t} not known to this test"),
            };
            (f, size)
        })
        .collect();
    let c_fields: Vec<(String, usize)> = c.iter().map(|(f, _, s)| (f.clone(), *s)).collect();
    assert_eq!(
        c_fields, rust,
        "struct cv_hdr (left) and protocol::Header (right) differ"
    );
    assert_eq!(c.iter().map(|f| f.2).sum::<usize>(), proto::HEADER_LEN);

    // The offsets the agent uses are the ones Header::encode writes.
    for (field, offset, size) in &c {
        let mut h = Header {
            magic: 0,
            version: 0,
            op: 0,
            seq: 0,
            status: 0,
            len: 0,
            reserved: 0,
        };
        match field.as_str() {
            "magic" => h.magic = u32::MAX,
            "version" => h.version = u16::MAX,
            "op" => h.op = u16::MAX,
            "seq" => h.seq = u32::MAX,
            "status" => h.status = -1,
            "len" => h.len = u32::MAX,
            "reserved" => h.reserved = u32::MAX,
            _ => panic!("cv_hdr.{field} has no Header field"),
        }
        let bytes = h.encode();
        let set: Vec<usize> = (0..bytes.len()).filter(|&i| bytes[i] != 0).collect();
        let want: Vec<usize> = (*offset..offset + size).collect();
        assert_eq!(set, want, "cv_hdr.{field}: C offset {offset}, size {size}");
        assert_eq!(Header::decode(&bytes), Some(h));
    }
}

#[test]
fn agent_matches_the_compatible_of_the_channel_dt_node() {
    let quoted = |src: &str, key: &str| -> Vec<String> {
        src.lines()
            .filter_map(|l| l.trim().strip_prefix(key))
            .filter_map(|l| Some(l.split('"').nth(1)?.to_string()))
            .collect()
    };
    let dts = quoted(CHANNEL_DTS, "compatible = ");
    let agent = quoted(AGENT_C, "{ .compatible = ");
    assert_eq!(dts.len(), 1, "channel.dts compatible: {dts:?}");
    assert_eq!(agent, dts, "cellvm_agent.c of_match table vs channel.dts");
}
