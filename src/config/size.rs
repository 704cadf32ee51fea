//! Size strings: `"4096"`, `"64K"`, `"256M"`, `"256MiB"`, `"1G"`, `"1GiB"`.
//!
//! `K`, `M` and `G` are binary multiples (KiB, MiB, GiB); the `KiB`/`MiB`/`GiB`
//! spellings mean the same. Suffixes are case-sensitive and follow the number
//! directly; `_` may separate digits (`"1_048_576"`), as in TOML integers.

use std::fmt;
use thiserror::Error;

/// 1 KiB.
pub const KIB: u64 = 1 << 10;
/// 1 MiB.
pub const MIB: u64 = 1 << 20;
/// 1 GiB.
pub const GIB: u64 = 1 << 30;

/// Why a size string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SizeError {
    /// The string is empty (or only whitespace).
    #[error("empty size")]
    Empty,
    /// The string does not start with a decimal number.
    #[error("expected a decimal number, optionally followed by K, M, G, KiB, MiB or GiB")]
    NoNumber,
    /// The suffix after the number is not one we know.
    #[error("unknown suffix {0:?} (use K, M, G, KiB, MiB or GiB)")]
    BadSuffix(String),
    /// The value does not fit in 64 bits.
    #[error("too large for a 64-bit size")]
    Overflow,
}

/// Parses a size string into bytes.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(SizeError::Empty);
    }
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits_end);
    if !number.starts_with(|c: char| c.is_ascii_digit()) || number.ends_with('_') {
        return Err(SizeError::NoNumber);
    }
    let mut value: u64 = 0;
    for c in number.chars().filter(|&c| c != '_') {
        let digit = u64::from(c.to_digit(10).ok_or(SizeError::NoNumber)?);
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(digit))
            .ok_or(SizeError::Overflow)?;
    }
    let multiplier = match suffix {
        "" => 1,
        "K" | "KiB" => KIB,
        "M" | "MiB" => MIB,
        "G" | "GiB" => GIB,
        other => return Err(SizeError::BadSuffix(other.to_string())),
    };
    value.checked_mul(multiplier).ok_or(SizeError::Overflow)
}

/// A size for humans: `"16 MiB"` when it is an exact multiple of a binary
/// unit, otherwise `"12345 bytes"`.
pub fn human_size(bytes: u64) -> HumanSize {
    HumanSize(bytes)
}

/// Display adapter returned by [`human_size`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanSize(pub u64);

impl fmt::Display for HumanSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b == 0 {
            return f.write_str("0 bytes");
        }
        for (unit, name) in [(GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")] {
            if b.is_multiple_of(unit) {
                return write!(f, "{} {name}", b / unit);
            }
        }
        if b == 1 {
            f.write_str("1 byte")
        } else {
            write!(f, "{b} bytes")
        }
    }
}
