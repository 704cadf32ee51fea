//! Device-tree node templates: a small DTS subset with `${name}` placeholders.
//!
//! A template is the text of exactly one node:
//!
//! ```text
//! // comment              /* block comment */
//! label: name@${unit} {
//!     flag-property;
//!     cells = <1 0x2 &label ${more_cells}>;
//!     strings = "one", "two";
//!     compatible = ${compatible};
//!     bytes = [00 11 2233];
//!     child { ... };
//! };
//! ```
//!
//! * Placeholders `${name}` (`name` = `[A-Za-z_][A-Za-z0-9_]*`) are replaced
//!   textually, before parsing, by the rendering of a [`Value`]; they are not
//!   recognised inside comments or string literals. A placeholder may stand
//!   for a unit address, any number of cells, a whole (quoted) string or
//!   string list, or raw DTS text. Every placeholder used must have a value
//!   and every value given must be used, else the error names the template
//!   and the placeholder.
//! * Cells are 32-bit: decimal (no leading zeros: dtc reads those as octal)
//!   or `0x` hexadecimal, or `&label` references.
//! * Strings accept the escapes `\\ \" \' \n \t \r \xHH` (no NUL).
//! * Not supported (reported as such): `/dts-v1/;`, `/bits/`, expressions,
//!   character literals, `&{/path}` and property-level `&label` references,
//!   `/delete-node/` and the other directives.
//! * The top-level node may be the root, written `/ { ... };`.
//!
//! Errors carry the template name and the 1-based line of the template; an
//! error inside a placeholder's value names the placeholder. The parser never
//! panics, whatever the input.

use super::dts::{SourceFragment, Target};
use super::tree::{Cell, Chunk, Node, Property};
use super::{FdtError, SyntaxError};
use std::collections::{BTreeMap, BTreeSet};
use std::num::IntErrorKind;

/// Deepest node nesting a template may have.
pub const MAX_DEPTH: usize = 16;

/// A template: a name (for messages) and its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Template {
    name: &'static str,
    text: &'static str,
}

impl Template {
    /// A template called `name` with text `text`.
    pub const fn new(name: &'static str, text: &'static str) -> Self {
        Template { name, text }
    }

    /// The template's name (its file name).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The template's text.
    pub fn text(&self) -> &'static str {
        self.text
    }

    /// Substitutes `vars` and parses the result into a node.
    pub fn instantiate(&self, vars: &Vars) -> Result<Node, FdtError> {
        instantiate(self.name, self.text, vars)
    }
}

/// What a placeholder expands to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Bare lowercase hexadecimal digits, for unit addresses: `d0000000`.
    Hex(u64),
    /// Space-separated cells for use inside `< >`: `0x0 0xd0000000 &ioapic`.
    Cells(Vec<Cell>),
    /// One complete, quoted and escaped string literal.
    Str(String),
    /// Comma-separated quoted string literals.
    Strings(Vec<String>),
    /// DTS text inserted as it is.
    Raw(String),
}

impl Value {
    /// The text that replaces the placeholder.
    pub fn render(&self) -> String {
        match self {
            Value::Hex(v) => format!("{v:x}"),
            Value::Cells(cells) => cells
                .iter()
                .map(|c| match c {
                    Cell::Num(v) => format!("{v:#x}"),
                    Cell::Ref(l) => format!("&{l}"),
                })
                .collect::<Vec<_>>()
                .join(" "),
            Value::Str(s) => quote(s),
            Value::Strings(list) => list.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", "),
            Value::Raw(s) => s.clone(),
        }
    }
}

/// Quotes `s` as a DTS string literal.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Placeholder values for one instantiation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vars {
    map: BTreeMap<String, Value>,
}

impl Vars {
    /// No values.
    pub fn new() -> Self {
        Vars::default()
    }

    /// Sets `name` to `value`.
    pub fn set(mut self, name: impl Into<String>, value: Value) -> Self {
        self.map.insert(name.into(), value);
        self
    }

    /// Sets `name` to bare hex digits (a unit address).
    pub fn hex(self, name: impl Into<String>, v: u64) -> Self {
        self.set(name, Value::Hex(v))
    }

    /// Sets `name` to a list of cells.
    pub fn cells<C: Into<Cell>>(
        self,
        name: impl Into<String>,
        cells: impl IntoIterator<Item = C>,
    ) -> Self {
        self.set(
            name,
            Value::Cells(cells.into_iter().map(Into::into).collect()),
        )
    }

    /// Sets `name` to a quoted string.
    pub fn string(self, name: impl Into<String>, s: impl Into<String>) -> Self {
        self.set(name, Value::Str(s.into()))
    }

    /// Sets `name` to a list of quoted strings.
    pub fn strings(self, name: impl Into<String>, list: &[&str]) -> Self {
        self.set(
            name,
            Value::Strings(list.iter().map(|s| s.to_string()).collect()),
        )
    }

    /// Sets `name` to raw DTS text.
    pub fn raw(self, name: impl Into<String>, text: impl Into<String>) -> Self {
        self.set(name, Value::Raw(text.into()))
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.map.get(name)
    }
}

/// Substitutes `vars` into `text` and parses the result; `template` names it
/// in errors.
pub fn instantiate(template: &str, text: &str, vars: &Vars) -> Result<Node, FdtError> {
    let expanded = expand(template, text, vars)?;
    Parser {
        text: &expanded.text,
        src: expanded.text.as_bytes(),
        pos: 0,
        expanded: &expanded,
        template,
        overlay_source: false,
    }
    .parse_file()
}

/// Parses `text` as a device-tree overlay source (`dts.rs`); `file` names
/// it in errors.
pub(super) fn parse_overlay(file: &str, text: &str) -> Result<Vec<SourceFragment>, FdtError> {
    let expanded = Expanded::verbatim(text);
    Parser {
        text: &expanded.text,
        src: expanded.text.as_bytes(),
        pos: 0,
        expanded: &expanded,
        template: file,
        overlay_source: true,
    }
    .parse_overlay_file()
}

/// Parses `text` as a template without placeholders.
pub fn parse(template: &str, text: &str) -> Result<Node, FdtError> {
    instantiate(template, text, &Vars::new())
}

/// A run of the expanded text that came from one place.
#[derive(Debug)]
struct Segment {
    /// Offset in the expanded text where the run starts.
    start: usize,
    /// Template line at the start of the run.
    line: usize,
    /// The placeholder the run is the value of, or `None` for template text.
    placeholder: Option<String>,
}

/// Marks a [`Value::Cells`] placeholder in the expanded text: `SPLICE`,
/// the index into [`Expanded::splices`] in decimal, `SPLICE`. The cells go
/// into the property as they are instead of being written out as text and
/// parsed back (a PCI bridge's interrupt-map is over 1,000 cells, and that
/// round trip was most of an attach's planning). Not a DTS character: a
/// user's file that holds one is refused like any other stray byte.
const SPLICE: u8 = 0x01;

/// Template text after substitution, with where each part came from.
#[derive(Debug)]
struct Expanded {
    text: String,
    segments: Vec<Segment>,
    /// The cells of each `Value::Cells` placeholder, in order.
    splices: Vec<Vec<Cell>>,
}

impl Expanded {
    /// `text` as it is, with no placeholders: a DTS file.
    fn verbatim(text: &str) -> Self {
        Expanded {
            text: text.to_string(),
            segments: vec![Segment {
                start: 0,
                line: 1,
                placeholder: None,
            }],
            splices: Vec::new(),
        }
    }

    /// The 1-based column, in characters, of offset `at` of the text.
    fn column(&self, at: usize) -> usize {
        let at = at.min(self.text.len());
        let line_start = self
            .text
            .get(..at)
            .and_then(|t| t.rfind('\n'))
            .map_or(0, |i| i + 1);
        self.text
            .get(line_start..at)
            .map_or(1, |t| t.chars().count() + 1)
    }

    /// The template line and placeholder (if any) of expanded offset `at`.
    fn locate(&self, at: usize) -> (usize, Option<String>) {
        let at = at.min(self.text.len());
        let seg = self.segments.iter().rev().find(|s| s.start <= at);
        match seg {
            None => (1, None),
            Some(s) if s.placeholder.is_some() => (s.line, s.placeholder.clone()),
            Some(s) => {
                let newlines = self
                    .text
                    .as_bytes()
                    .get(s.start..at)
                    .unwrap_or_default()
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count();
                (s.line + newlines, None)
            }
        }
    }
}

/// `(offset, line, column)` of `at`, counted on from `from` (an earlier
/// position of the same text, with its line and column).
fn advance(text: &str, from: (usize, usize, usize), at: usize) -> (usize, usize, usize) {
    let (start, line, column) = from;
    let between = text.get(start..at).unwrap_or_default();
    match between.rfind('\n') {
        Some(i) => (
            at,
            line + between.matches('\n').count(),
            between.get(i + 1..).map_or(0, |t| t.chars().count()) + 1,
        ),
        None => (at, line, column + between.chars().count()),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum LexState {
    Code,
    LineComment,
    BlockComment,
    Str,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Replaces every `${name}` outside comments and strings.
fn expand(template: &str, text: &str, vars: &Vars) -> Result<Expanded, FdtError> {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut segments = vec![Segment {
        start: 0,
        line: 1,
        placeholder: None,
    }];
    let mut used = BTreeSet::new();
    let mut splices = Vec::new();
    let mut state = LexState::Code;
    let mut line = 1;
    let mut run_start = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == b'\n' {
            line += 1;
        }
        match state {
            LexState::Code => match (c, next) {
                (b'$', Some(b'{')) => {
                    let name_start = i + 2;
                    let mut j = name_start;
                    while j < b.len() && is_ident(b[j]) {
                        j += 1;
                    }
                    let name = text.get(name_start..j).unwrap_or_default();
                    let well_formed = b.get(j) == Some(&b'}')
                        && name.as_bytes().first().is_some_and(|&f| is_ident_start(f));
                    if !well_formed {
                        return Err(FdtError::Syntax {
                            template: template.to_string(),
                            line,
                            column: 1 + i
                                - text
                                    .get(..i)
                                    .and_then(|t| t.rfind('\n'))
                                    .map_or(0, |n| n + 1),
                            placeholder: None,
                            kind: SyntaxError::BadPlaceholder,
                        });
                    }
                    let Some(value) = vars.get(name) else {
                        return Err(FdtError::MissingPlaceholder {
                            template: template.to_string(),
                            name: name.to_string(),
                            line,
                        });
                    };
                    used.insert(name.to_string());
                    out.push_str(text.get(run_start..i).unwrap_or_default());
                    segments.push(Segment {
                        start: out.len(),
                        line,
                        placeholder: Some(name.to_string()),
                    });
                    match value {
                        Value::Cells(cells) => {
                            out.push(char::from(SPLICE));
                            out.push_str(&splices.len().to_string());
                            out.push(char::from(SPLICE));
                            splices.push(cells.clone());
                        }
                        value => out.push_str(&value.render()),
                    }
                    segments.push(Segment {
                        start: out.len(),
                        line,
                        placeholder: None,
                    });
                    i = j + 1;
                    run_start = i;
                    continue;
                }
                (b'"', _) => state = LexState::Str,
                (b'/', Some(b'/')) => {
                    state = LexState::LineComment;
                    i += 1;
                }
                (b'/', Some(b'*')) => {
                    state = LexState::BlockComment;
                    i += 1;
                }
                _ => {}
            },
            LexState::LineComment => {
                if c == b'\n' {
                    state = LexState::Code;
                }
            }
            LexState::BlockComment => {
                if c == b'*' && next == Some(b'/') {
                    state = LexState::Code;
                    i += 1;
                }
            }
            LexState::Str => match c {
                b'\\' => {
                    if next == Some(b'\n') {
                        line += 1;
                    }
                    i += 1;
                }
                b'"' | b'\n' => state = LexState::Code,
                _ => {}
            },
        }
        i += 1;
    }
    out.push_str(text.get(run_start..).unwrap_or_default());
    if let Some(name) = vars.map.keys().find(|k| !used.contains(k.as_str())) {
        return Err(FdtError::UnknownPlaceholder {
            template: template.to_string(),
            name: name.clone(),
        });
    }
    Ok(Expanded {
        text: out,
        segments,
        splices,
    })
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b',' | b'.' | b'_' | b'+' | b'-' | b'#' | b'?' | b'@')
}

fn is_node_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b',' | b'.' | b'_' | b'+' | b'-')
}

/// `name[@unit]` per the DT spec (name starts with a letter, at most 31 chars).
fn valid_node_name(s: &str) -> bool {
    let (base, unit) = match s.split_once('@') {
        Some((b, u)) => (b, Some(u)),
        None => (s, None),
    };
    let base_ok = (1..=31).contains(&base.len())
        && base.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
        && base.bytes().all(is_node_char);
    let unit_ok = unit.is_none_or(|u| !u.is_empty() && u.bytes().all(is_node_char));
    base_ok && unit_ok
}

fn valid_property_name(s: &str) -> bool {
    (1..=31).contains(&s.len())
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b',' | b'.' | b'_' | b'+' | b'?' | b'#' | b'-')
        })
}

fn valid_label(s: &str) -> bool {
    s.as_bytes().first().is_some_and(|&b| is_ident_start(b)) && s.bytes().all(is_ident)
}

pub(super) struct Parser<'a> {
    text: &'a str,
    src: &'a [u8],
    pos: usize,
    expanded: &'a Expanded,
    template: &'a str,
    /// Reading a user's overlay file rather than a template (changes how
    /// unsupported syntax is named).
    overlay_source: bool,
}

impl Parser<'_> {
    fn err(&self, at: usize, kind: SyntaxError) -> FdtError {
        let (line, placeholder) = self.expanded.locate(at);
        let kind = match kind {
            SyntaxError::Unsupported(what) if self.overlay_source => {
                SyntaxError::UnsupportedInOverlay(what)
            }
            kind => kind,
        };
        FdtError::Syntax {
            template: self.template.to_string(),
            line,
            column: self.expanded.column(at),
            placeholder,
            kind,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn char_at(&self, at: usize) -> char {
        self.text
            .get(at..)
            .and_then(|s| s.chars().next())
            .unwrap_or('\u{fffd}')
    }

    /// "Unexpected X, expected `expected`" at the current position.
    fn unexpected(&self, expected: &'static str) -> FdtError {
        match self.peek() {
            None => self.err(self.pos, SyntaxError::UnexpectedEnd(expected)),
            Some(_) => self.err(
                self.pos,
                SyntaxError::Unexpected {
                    found: self.char_at(self.pos),
                    expected,
                },
            ),
        }
    }

    fn expect(&mut self, b: u8, expected: &'static str) -> Result<(), FdtError> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected(expected))
        }
    }

    /// Skips whitespace and comments.
    fn skip_ws(&mut self) -> Result<(), FdtError> {
        loop {
            match (self.peek(), self.src.get(self.pos + 1).copied()) {
                (Some(b), _) if b.is_ascii_whitespace() => self.pos += 1,
                (Some(b'/'), Some(b'/')) => {
                    while self.peek().is_some_and(|b| b != b'\n') {
                        self.pos += 1;
                    }
                }
                (Some(b'/'), Some(b'*')) => {
                    let start = self.pos;
                    self.pos += 2;
                    loop {
                        match self.peek() {
                            None => return Err(self.err(start, SyntaxError::UnterminatedComment)),
                            Some(b'*') if self.src.get(self.pos + 1) == Some(&b'/') => {
                                self.pos += 2;
                                break;
                            }
                            Some(_) => self.pos += 1,
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    /// Reads a run of name characters (possibly empty).
    fn read_name(&mut self) -> String {
        let start = self.pos;
        while self.peek().is_some_and(is_name_char) {
            self.pos += 1;
        }
        self.text
            .get(start..self.pos)
            .unwrap_or_default()
            .to_string()
    }

    fn parse_file(mut self) -> Result<Node, FdtError> {
        self.skip_ws()?;
        let node = if self.peek() == Some(b'/') {
            self.pos += 1;
            self.parse_node_rest(None, "/".to_string(), 1)?
        } else {
            let at = self.pos;
            let name = self.read_name();
            if name.is_empty() {
                return Err(self.unexpected("a node name or '/'"));
            }
            self.skip_ws()?;
            if self.peek() == Some(b':') {
                self.labelled_node(name, at, 1)?
            } else {
                self.check_node_name(&name, at)?;
                self.parse_node_rest(None, name, 1)?
            }
        };
        self.skip_ws()?;
        match self.peek() {
            None => Ok(node),
            Some(_) => Err(self.err(self.pos, SyntaxError::TrailingInput(self.char_at(self.pos)))),
        }
    }

    /// `directive` (such as `/dts-v1/;`) at the current position, or a
    /// [`SyntaxError::Missing`] naming it.
    fn directive(&mut self, directive: &'static str) -> Result<(), FdtError> {
        self.skip_ws()?;
        if self
            .text
            .get(self.pos..)
            .is_some_and(|t| t.starts_with(directive))
        {
            self.pos += directive.len();
            Ok(())
        } else {
            Err(self.err(self.pos, SyntaxError::Missing(directive)))
        }
    }

    /// An overlay source: `/dts-v1/; /plugin/;` then `&target { ... };`
    /// blocks.
    fn parse_overlay_file(mut self) -> Result<Vec<SourceFragment>, FdtError> {
        self.directive("/dts-v1/;")?;
        self.directive("/plugin/;")?;
        let mut fragments = Vec::new();
        // Where the previous fragment began (offset, line, column): each
        // position is found from the one before, never from the start, so
        // locating thousands of fragments stays linear in the text.
        let mut cursor = (0usize, 1usize, 1usize);
        loop {
            self.skip_ws()?;
            let at = self.pos;
            match self.peek() {
                None if fragments.is_empty() => {
                    return Err(self.err(at, SyntaxError::Missing("a &label { ... }; block")))
                }
                None => return Ok(fragments),
                Some(b'&') => {}
                Some(b'#') => {
                    return Err(self.err(
                        at,
                        SyntaxError::UnsupportedInOverlay(
                            "the C preprocessor (#include, #define: cellvm runs no cpp)",
                        ),
                    ))
                }
                Some(b'/') => {
                    return Err(self.err(
                        at,
                        SyntaxError::UnsupportedInOverlay(
                            "a root node or directive here (write the overlay as &label { ... }; blocks)",
                        ),
                    ))
                }
                Some(_) => return Err(self.unexpected("'&label {' or the end of the file")),
            }
            self.pos += 1;
            let target = if self.peek() == Some(b'{') {
                self.pos += 1;
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|b| b != b'}' && !b.is_ascii_whitespace())
                {
                    self.pos += 1;
                }
                let path = self
                    .text
                    .get(start..self.pos)
                    .unwrap_or_default()
                    .to_string();
                self.expect(b'}', "'}' after the path")?;
                if !path.starts_with('/') {
                    return Err(self.err(start, SyntaxError::BadPath(path)));
                }
                Target::Path(path)
            } else {
                let start = self.pos;
                while self.peek().is_some_and(is_ident) {
                    self.pos += 1;
                }
                let label = self
                    .text
                    .get(start..self.pos)
                    .unwrap_or_default()
                    .to_string();
                if label.is_empty() {
                    return Err(self.unexpected("a label or '{' after '&'"));
                }
                if !valid_label(&label) {
                    return Err(self.err(start, SyntaxError::BadLabel(label)));
                }
                Target::Label(label)
            };
            let name = match &target {
                Target::Label(l) => l.clone(),
                Target::Path(p) => p.clone(),
            };
            let body = self.parse_node_rest(None, name, 1)?;
            cursor = advance(self.text, cursor, at);
            fragments.push(SourceFragment {
                target,
                line: cursor.1,
                column: cursor.2,
                body,
            });
        }
    }

    fn check_node_name(&self, name: &str, at: usize) -> Result<(), FdtError> {
        if valid_node_name(name) {
            Ok(())
        } else {
            Err(self.err(at, SyntaxError::BadNodeName(name.to_string())))
        }
    }

    /// After `label` (read at `at`) with the parser on the `:`.
    fn labelled_node(&mut self, label: String, at: usize, depth: usize) -> Result<Node, FdtError> {
        if !valid_label(&label) {
            return Err(self.err(at, SyntaxError::BadLabel(label)));
        }
        self.pos += 1;
        self.skip_ws()?;
        let name_at = self.pos;
        let name = self.read_name();
        if name.is_empty() {
            return Err(self.unexpected("a node name after the label"));
        }
        self.check_node_name(&name, name_at)?;
        let mut node = self.parse_node_rest(None, name, depth)?;
        node.set_label(Some(label));
        Ok(node)
    }

    /// After the node name: `{ body } ;`.
    fn parse_node_rest(
        &mut self,
        label: Option<String>,
        name: String,
        depth: usize,
    ) -> Result<Node, FdtError> {
        if depth > MAX_DEPTH {
            return Err(self.err(self.pos, SyntaxError::TooDeep(MAX_DEPTH)));
        }
        let mut node = Node::new(name);
        node.set_label(label);
        self.skip_ws()?;
        self.expect(b'{', "'{'")?;
        loop {
            self.skip_ws()?;
            match self.peek() {
                None => return Err(self.unexpected("'}'")),
                Some(b'}') => {
                    self.pos += 1;
                    break;
                }
                Some(_) => self.parse_item(&mut node, depth)?,
            }
        }
        self.skip_ws()?;
        self.expect(b';', "';' after '}'")?;
        Ok(node)
    }

    /// A property or a child node inside a node body.
    fn parse_item(&mut self, node: &mut Node, depth: usize) -> Result<(), FdtError> {
        let at = self.pos;
        if self.peek() == Some(b'/') {
            return Err(self.err(
                at,
                SyntaxError::Unsupported("/delete-node/, /delete-property/ and other directives"),
            ));
        }
        let name = self.read_name();
        if name.is_empty() {
            return Err(self.unexpected("a property name, a node name or '}'"));
        }
        self.skip_ws()?;
        match self.peek() {
            Some(b':') => {
                let child = self.labelled_node(name, at, depth + 1)?;
                self.add_child(node, child, at)
            }
            Some(b'{') => {
                self.check_node_name(&name, at)?;
                let child = self.parse_node_rest(None, name, depth + 1)?;
                self.add_child(node, child, at)
            }
            Some(b'=') | Some(b';') => {
                if !valid_property_name(&name) {
                    return Err(self.err(at, SyntaxError::BadPropertyName(name)));
                }
                let value = if self.peek() == Some(b'=') {
                    self.pos += 1;
                    self.parse_value()?
                } else {
                    self.pos += 1;
                    Vec::new()
                };
                if node.property(&name).is_some() {
                    return Err(self.err(at, SyntaxError::DuplicateProperty(name)));
                }
                node.set_property(Property { name, value });
                Ok(())
            }
            _ => Err(self.unexpected("'=', ';', '{' or ':'")),
        }
    }

    fn add_child(&self, node: &mut Node, child: Node, at: usize) -> Result<(), FdtError> {
        if node.child(child.name()).is_some() {
            return Err(self.err(at, SyntaxError::DuplicateNode(child.name().to_string())));
        }
        node.add_child(child)
    }

    /// After `=`: chunks separated by `,`, ending with `;`.
    fn parse_value(&mut self) -> Result<Vec<Chunk>, FdtError> {
        let mut chunks = Vec::new();
        loop {
            self.skip_ws()?;
            let chunk = match self.peek() {
                Some(b'<') => self.parse_cells()?,
                Some(b'"') => Chunk::Str(self.parse_string()?),
                Some(b'[') => self.parse_bytes()?,
                Some(b'&') => {
                    return Err(self.err(
                        self.pos,
                        SyntaxError::Unsupported("a reference outside < > (a path reference)"),
                    ))
                }
                Some(b'/') => {
                    return Err(self.err(
                        self.pos,
                        SyntaxError::Unsupported("/bits/ and other directives"),
                    ))
                }
                _ => return Err(self.unexpected("'<', '\"' or '['")),
            };
            chunks.push(chunk);
            self.skip_ws()?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b';') => {
                    self.pos += 1;
                    return Ok(chunks);
                }
                _ => return Err(self.unexpected("',' or ';'")),
            }
        }
    }

    fn parse_cells(&mut self) -> Result<Chunk, FdtError> {
        self.pos += 1;
        let mut cells = Vec::new();
        loop {
            self.skip_ws()?;
            match self.peek() {
                Some(b'>') => {
                    self.pos += 1;
                    return Ok(Chunk::Cells(cells));
                }
                Some(b'&') => {
                    self.pos += 1;
                    if self.peek() == Some(b'{') {
                        return Err(self.err(
                            self.pos,
                            SyntaxError::Unsupported("a path reference &{...}"),
                        ));
                    }
                    let at = self.pos;
                    while self.peek().is_some_and(is_ident) {
                        self.pos += 1;
                    }
                    let label = self.text.get(at..self.pos).unwrap_or_default().to_string();
                    if label.is_empty() {
                        return Err(self.unexpected("a label after '&'"));
                    }
                    if !valid_label(&label) {
                        return Err(self.err(at, SyntaxError::BadLabel(label)));
                    }
                    cells.push(Cell::Ref(label));
                }
                Some(b) if b.is_ascii_digit() => cells.push(Cell::Num(self.parse_number()?)),
                Some(SPLICE) => cells.extend_from_slice(self.parse_splice()?),
                Some(b'(') => {
                    return Err(self.err(self.pos, SyntaxError::Unsupported("an expression")))
                }
                Some(b'\'') => {
                    return Err(self.err(self.pos, SyntaxError::Unsupported("a character literal")))
                }
                _ => return Err(self.unexpected("a number, '&label' or '>'")),
            }
        }
    }

    /// The cells of a `Value::Cells` placeholder (see [`SPLICE`]).
    fn parse_splice(&mut self) -> Result<&[Cell], FdtError> {
        let at = self.pos;
        self.pos += 1;
        let digits = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        let index = self
            .text
            .get(digits..self.pos)
            .and_then(|d| d.parse::<usize>().ok());
        let cells = index.and_then(|i| self.expanded.splices.get(i));
        match (cells, self.peek()) {
            (Some(cells), Some(SPLICE)) => {
                self.pos += 1;
                Ok(cells)
            }
            _ => {
                self.pos = at;
                Err(self.unexpected("a number, '&label' or '>'"))
            }
        }
    }

    fn parse_number(&mut self) -> Result<u32, FdtError> {
        let at = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_alphanumeric()) {
            self.pos += 1;
        }
        let tok = self.text.get(at..self.pos).unwrap_or_default();
        let bad = || self.err(at, SyntaxError::BadNumber(tok.to_string()));
        let (digits, radix) = match tok.strip_prefix("0x").or_else(|| tok.strip_prefix("0X")) {
            Some(hex) => (hex, 16),
            None => (tok, 10),
        };
        let well_formed = !digits.is_empty()
            && digits.chars().all(|c| c.is_digit(radix))
            && !(radix == 10 && digits.len() > 1 && digits.starts_with('0'));
        if !well_formed {
            return Err(bad());
        }
        u32::from_str_radix(digits, radix).map_err(|e| match e.kind() {
            IntErrorKind::PosOverflow => self.err(at, SyntaxError::NumberTooLarge(tok.to_string())),
            _ => bad(),
        })
    }

    fn parse_string(&mut self) -> Result<String, FdtError> {
        let start = self.pos;
        self.pos += 1;
        let mut bytes = Vec::new();
        loop {
            match self.peek() {
                None | Some(b'\n') => return Err(self.err(start, SyntaxError::UnterminatedString)),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(0) => return Err(self.err(self.pos, SyntaxError::NulInString)),
                Some(b'\\') => {
                    let esc_at = self.pos;
                    self.pos += 1;
                    let b = match self.peek() {
                        None | Some(b'\n') => {
                            return Err(self.err(start, SyntaxError::UnterminatedString))
                        }
                        Some(b'n') => b'\n',
                        Some(b't') => b'\t',
                        Some(b'r') => b'\r',
                        Some(b'\\') => b'\\',
                        Some(b'"') => b'"',
                        Some(b'\'') => b'\'',
                        Some(b'0') => return Err(self.err(esc_at, SyntaxError::NulInString)),
                        Some(b'x') => {
                            let hex_at = self.pos + 1;
                            let mut end = hex_at;
                            while end < hex_at + 2
                                && self.src.get(end).is_some_and(|b| b.is_ascii_hexdigit())
                            {
                                end += 1;
                            }
                            let hex = self.text.get(hex_at..end).unwrap_or_default();
                            let v = u8::from_str_radix(hex, 16).map_err(|_| {
                                self.err(esc_at, SyntaxError::BadEscape("x".to_string()))
                            })?;
                            if v == 0 {
                                return Err(self.err(esc_at, SyntaxError::NulInString));
                            }
                            if v >= 0x80 {
                                return Err(
                                    self.err(esc_at, SyntaxError::BadEscape(format!("x{hex}")))
                                );
                            }
                            self.pos = end - 1;
                            v
                        }
                        Some(_) => {
                            return Err(self.err(
                                esc_at,
                                SyntaxError::BadEscape(self.char_at(self.pos).to_string()),
                            ))
                        }
                    };
                    bytes.push(b);
                    self.pos += 1;
                }
                Some(b) => {
                    bytes.push(b);
                    self.pos += 1;
                }
            }
        }
        // Only whole UTF-8 sequences and ASCII escapes were copied.
        String::from_utf8(bytes).map_err(|_| self.err(start, SyntaxError::UnterminatedString))
    }

    fn parse_bytes(&mut self) -> Result<Chunk, FdtError> {
        self.pos += 1;
        let mut bytes = Vec::new();
        loop {
            self.skip_ws()?;
            match self.peek() {
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Chunk::Bytes(bytes));
                }
                Some(b) if b.is_ascii_alphanumeric() => {
                    let at = self.pos;
                    while self.peek().is_some_and(|b| b.is_ascii_alphanumeric()) {
                        self.pos += 1;
                    }
                    let tok = self.text.get(at..self.pos).unwrap_or_default();
                    if tok.len() % 2 != 0 || !tok.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(self.err(at, SyntaxError::BadBytes(tok.to_string())));
                    }
                    for pair in tok.as_bytes().chunks(2) {
                        let s = std::str::from_utf8(pair).unwrap_or_default();
                        let v = u8::from_str_radix(s, 16)
                            .map_err(|_| self.err(at, SyntaxError::BadBytes(tok.to_string())))?;
                        bytes.push(v);
                    }
                }
                _ => return Err(self.unexpected("hex digits or ']'")),
            }
        }
    }
}
