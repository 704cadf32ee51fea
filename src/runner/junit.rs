//! Results for CI systems: a JUnit XML report of one run (`--junit FILE`),
//! with one test case for the boot and one per KTAP (kunit) result line
//! the console carried.
//!
//! - The boot case passes when the run's exit status is 0; otherwise it
//!   fails with the stop reason as its message and the console tail as its
//!   text.
//! - KTAP (docs: Documentation/dev-tools/ktap.rst): `ok N desc`, `not ok N
//!   desc`, `# SKIP` directives, nesting by four-space indentation, and
//!   `# Subtest: NAME` lines naming the suite of the lines at their
//!   depth. The kernel's printk timestamp (`[    1.234567] `) is ignored.
//!   A case's classname is `ktap.` followed by its enclosing suites.
//! - Text is escaped for XML, and characters XML 1.0 cannot carry are
//!   replaced with U+FFFD.

use super::watch::Transcript;

/// A KTAP result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KtapResult {
    /// `ok`.
    Passed,
    /// `not ok`.
    Failed,
    /// `# SKIP`, with its reason.
    Skipped(String),
}

/// One KTAP test case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KtapCase {
    /// The enclosing suites, outermost first.
    pub suites: Vec<String>,
    /// The case's description.
    pub name: String,
    /// Its result.
    pub result: KtapResult,
}

/// `line` without the kernel's printk timestamp.
fn without_timestamp(line: &str) -> &str {
    let t = line.trim_start();
    if let Some(rest) = t.strip_prefix('[') {
        if let Some(end) = rest.find("] ") {
            let stamp = rest[..end].trim();
            if !stamp.is_empty() && stamp.chars().all(|c| c.is_ascii_digit() || c == '.') {
                return &rest[end + 2..];
            }
        }
    }
    line
}

/// Whether `line` (as the console showed it) is a KTAP line.
pub fn is_ktap_line(line: &str) -> bool {
    let t = without_timestamp(line).trim_start();
    t.starts_with("KTAP version")
        || t.starts_with("TAP version")
        || t.starts_with("ok ")
        || t.starts_with("not ok ")
        || t.starts_with("# ")
        || (t.starts_with("1..") && t[3..].chars().all(|c| c.is_ascii_digit()))
}

/// The test cases of KTAP `lines`.
pub fn ktap_cases(lines: &[String]) -> Vec<KtapCase> {
    // The suite named at each depth (`# Subtest:` sits at the depth of the
    // lines it names).
    let mut suites: Vec<Option<String>> = Vec::new();
    let mut cases = Vec::new();
    for line in lines {
        let body = without_timestamp(line);
        let trimmed = body.trim_start();
        let depth = (body.len() - trimmed.len()) / 4;
        if let Some(name) = trimmed.strip_prefix("# Subtest: ") {
            suites.truncate(depth);
            suites.resize(depth, None);
            suites.push(Some(name.trim().to_string()));
            continue;
        }
        let (passed, rest) = if let Some(r) = trimmed.strip_prefix("ok ") {
            (true, r)
        } else if let Some(r) = trimmed.strip_prefix("not ok ") {
            (false, r)
        } else {
            continue;
        };
        // "N desc # DIRECTIVE"; the number is optional in old TAP.
        let rest = rest.trim_start();
        let rest = rest
            .split_once(' ')
            .filter(|(n, _)| n.chars().all(|c| c.is_ascii_digit()))
            .map_or(rest, |(_, d)| d);
        let (desc, directive) = match rest.split_once(" # ") {
            Some((d, dir)) => (d.trim(), Some(dir.trim())),
            None => (rest.trim(), None),
        };
        let desc = desc.trim_start_matches("- ");
        // `get`, not indexing: the console is the guest's, byte 4 may sit
        // inside a character.
        let skip = directive.and_then(|d| {
            d.get(..4)
                .filter(|w| w.eq_ignore_ascii_case("skip"))
                .and_then(|_| d.get(4..))
        });
        let result = match skip {
            Some(why) => KtapResult::Skipped(why.trim().to_string()),
            None if passed => KtapResult::Passed,
            _ => KtapResult::Failed,
        };
        // Deeper suites are over once a result at this depth comes.
        suites.truncate(depth + 1);
        cases.push(KtapCase {
            suites: suites.iter().flatten().cloned().collect(),
            name: desc.to_string(),
            result,
        });
    }
    cases
}

/// Text escaped for an XML attribute or element.
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// How the run ended, for the report.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The cell's name.
    pub cell: String,
    /// The exit status.
    pub status: u8,
    /// Why it stopped, in one line.
    pub reason: String,
    /// Wall time of the run.
    pub seconds: f64,
}

/// The JUnit XML report of one run.
pub fn report(run: &RunResult, transcript: &Transcript) -> String {
    let ktap = ktap_cases(&transcript.ktap);
    let failures = usize::from(run.status != 0)
        + ktap
            .iter()
            .filter(|c| c.result == KtapResult::Failed)
            .count();
    let skipped = ktap
        .iter()
        .filter(|c| matches!(c.result, KtapResult::Skipped(_)))
        .count();
    let tests = 1 + ktap.len();
    let cell = xml_escape(&run.cell);
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x += &format!(
        "<testsuites name=\"cellvm\" tests=\"{tests}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{:.3}\">\n",
        run.seconds
    );
    x += &format!(
        "  <testsuite name=\"cellvm.{cell}\" tests=\"{tests}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{:.3}\">\n",
        run.seconds
    );
    x += &format!(
        "    <testcase classname=\"cellvm.{cell}\" name=\"boot\" time=\"{:.3}\">\n",
        run.seconds
    );
    if run.status != 0 {
        let tail: Vec<&str> = transcript.tail.iter().map(String::as_str).collect();
        x += &format!(
            "      <failure message=\"{}\" type=\"exit status {}\">{}</failure>\n",
            xml_escape(&run.reason),
            run.status,
            xml_escape(&tail.join("\n"))
        );
    }
    x += &format!(
        "      <system-out>{}</system-out>\n",
        xml_escape(&format!(
            "cellvm: {} (exit status {})",
            run.reason, run.status
        ))
    );
    x += "    </testcase>\n";
    for c in &ktap {
        let class = std::iter::once("ktap".to_string())
            .chain(c.suites.iter().cloned())
            .collect::<Vec<_>>()
            .join(".");
        x += &format!(
            "    <testcase classname=\"{}\" name=\"{}\"",
            xml_escape(&class),
            xml_escape(&c.name)
        );
        match &c.result {
            KtapResult::Passed => x += "/>\n",
            KtapResult::Failed => x += "><failure message=\"not ok\"/></testcase>\n",
            KtapResult::Skipped(why) => {
                x += &format!("><skipped message=\"{}\"/></testcase>\n", xml_escape(why));
            }
        }
    }
    if transcript.ktap_dropped > 0 {
        x += &format!(
            "    <!-- {} KTAP lines beyond the first {} were not read -->\n",
            transcript.ktap_dropped,
            super::watch::MAX_KTAP_LINES
        );
    }
    x += "  </testsuite>\n</testsuites>\n";
    x
}

#[cfg(test)]
#[path = "junit_tests.rs"]
mod tests;
