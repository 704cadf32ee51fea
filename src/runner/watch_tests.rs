use super::*;
use std::sync::Arc;

/// A sink whose bytes a test reads back.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        crate::sync::lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn watch(patterns: Patterns) -> (ConsoleWatch, StopHandle, Shared, Shared) {
    let stop = StopHandle::new().unwrap();
    let (sink, log) = (Shared::default(), Shared::default());
    let w = ConsoleWatch::new(
        Box::new(sink.clone()),
        Some(Box::new(log.clone())),
        patterns,
        stop.clone(),
    );
    (w, stop, sink, log)
}

#[test]
fn every_byte_reaches_the_sink_and_the_log() {
    let (mut w, stop, sink, log) = watch(Patterns::new(None, &[], false).unwrap());
    w.write_all(b"hello\r\nworld").unwrap();
    assert_eq!(&*crate::sync::lock(&sink.0), b"hello\r\nworld");
    assert_eq!(&*crate::sync::lock(&log.0), b"hello\r\nworld");
    assert!(!stop.is_stopped());
    let t = w.transcript();
    assert_eq!(crate::sync::lock(&t).tail, ["hello"]);
}

#[test]
fn an_expected_line_stops_the_cell_as_a_pass_even_when_it_arrives_in_pieces() {
    let (mut w, stop, _, _) = watch(Patterns::new(Some("^TEST (PASS|OK)$"), &[], false).unwrap());
    w.write_all(b"TEST ").unwrap();
    assert!(!stop.is_stopped());
    w.write_all(b"PASS\r\n").unwrap();
    assert_eq!(
        stop.reason(),
        Some(StopReason::ConsoleExpected {
            pattern: "^TEST (PASS|OK)$".into()
        })
    );
}

#[test]
fn default_fail_on_catches_a_kernel_warning_and_wins_over_expect() {
    let (mut w, stop, _, _) = watch(Patterns::new(Some("WARNING"), &[], false).unwrap());
    w.write_all(b"[    2.1] WARNING: CPU: 0 PID: 1 at x.c:3\n")
        .unwrap();
    assert!(matches!(
        stop.reason(),
        Some(StopReason::ConsoleFailure { pattern, line })
            if pattern == "WARNING:" && line.contains("x.c:3")
    ));
}

#[test]
fn no_default_fail_on_leaves_only_the_users_patterns() {
    let p = Patterns::new(None, &["FAIL-[0-9]+".into()], true).unwrap();
    let (mut w, stop, _, _) = watch(p);
    w.write_all(b"Kernel panic - not syncing\n").unwrap();
    assert!(!stop.is_stopped());
    w.write_all(b"FAIL-12\n").unwrap();
    assert!(matches!(
        stop.reason(),
        Some(StopReason::ConsoleFailure { .. })
    ));
}

#[test]
fn a_bad_pattern_is_an_error_naming_its_flag() {
    let e = Patterns::new(Some("(unclosed"), &[], false).unwrap_err();
    assert!(e.to_string().starts_with("--expect '(unclosed'"), "{e}");
    let e = Patterns::new(None, &["[".into()], false).unwrap_err();
    assert!(e.to_string().starts_with("--fail-on '['"), "{e}");
}

#[test]
fn an_endless_line_is_matched_in_pieces_and_kept_bounded() {
    let (mut w, stop, _, _) = watch(Patterns::new(Some("needle"), &[], true).unwrap());
    let mut hay = vec![b'x'; 3 * MAX_LINE];
    hay.extend_from_slice(b"needle");
    w.write_all(&hay).unwrap();
    w.write_all(b"\n").unwrap();
    assert!(matches!(
        stop.reason(),
        Some(StopReason::ConsoleExpected { .. })
    ));
    let t = w.transcript();
    assert!(crate::sync::lock(&t)
        .tail
        .iter()
        .all(|l| l.len() <= MAX_LINE));
}

#[test]
fn the_tail_keeps_the_last_lines_only() {
    let (mut w, _, _, _) = watch(Patterns::new(None, &[], true).unwrap());
    for i in 0..(TAIL_LINES + 10) {
        writeln!(w, "line {i}").unwrap();
    }
    let t = w.transcript();
    let t = crate::sync::lock(&t);
    assert_eq!(t.tail.len(), TAIL_LINES);
    assert_eq!(t.tail.back().map(String::as_str), Some("line 59"));
}

#[test]
fn invalid_utf8_is_matched_lossily_without_failing() {
    let (mut w, stop, _, _) = watch(Patterns::new(Some("ok"), &[], true).unwrap());
    w.write_all(b"\xff\xfe ok\n").unwrap();
    assert!(stop.is_stopped());
}
