use super::*;

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_string).collect()
}

const KUNIT: &str = "\
[    1.000000] KTAP version 1
[    1.000001] 1..2
[    1.000002]     KTAP version 1
[    1.000003]     # Subtest: example
[    1.000004]     # module: example_test
[    1.000005]     1..3
[    1.000006]     ok 1 example_simple_test
[    1.000007]     not ok 2 example_failing_test
[    1.000008]     ok 3 example_skip_test # SKIP this test should be skipped
[    1.000009] # example: pass:1 fail:1 skip:1 total:3
[    1.000010] not ok 1 example
[    1.000011] ok 2 other";

#[test]
fn kunit_output_becomes_one_case_per_result_line_in_its_suite() {
    let ktap: Vec<String> = lines(KUNIT)
        .into_iter()
        .filter(|l| is_ktap_line(l))
        .collect();
    let cases = ktap_cases(&ktap);
    let names: Vec<(String, String, KtapResult)> = cases
        .iter()
        .map(|c| (c.suites.join("."), c.name.clone(), c.result.clone()))
        .collect();
    assert_eq!(
        names,
        [
            (
                "example".into(),
                "example_simple_test".into(),
                KtapResult::Passed
            ),
            (
                "example".into(),
                "example_failing_test".into(),
                KtapResult::Failed
            ),
            (
                "example".into(),
                "example_skip_test".into(),
                KtapResult::Skipped("this test should be skipped".into())
            ),
            (String::new(), "example".into(), KtapResult::Failed),
            (String::new(), "other".into(), KtapResult::Passed),
        ]
    );
}

#[test]
fn ordinary_console_lines_are_not_ktap() {
    assert!(!is_ktap_line("[    0.1] Linux version 6.12"));
    assert!(!is_ktap_line("okay then"));
    assert!(!is_ktap_line("1..x"));
    assert!(is_ktap_line("1..12"));
    assert!(is_ktap_line("    ok 1 - a"));
}

fn transcript(console: &str) -> Transcript {
    let mut t = Transcript::default();
    for l in console.lines() {
        t.tail.push_back(l.to_string());
        if is_ktap_line(l) {
            t.ktap.push(l.to_string());
        }
    }
    t
}

#[test]
fn a_failed_boot_reports_its_reason_and_console_tail() {
    let run = RunResult {
        cell: "ci".into(),
        status: 124,
        reason: "timed out after 3 s".into(),
        seconds: 3.0,
    };
    let x = report(&run, &transcript("booting <x> & \"y\"\nstill booting"));
    assert!(x.starts_with("<?xml version=\"1.0\""), "{x}");
    assert!(
        x.contains("tests=\"1\" failures=\"1\" skipped=\"0\""),
        "{x}"
    );
    assert!(
        x.contains("<failure message=\"timed out after 3 s\" type=\"exit status 124\">"),
        "{x}"
    );
    assert!(
        x.contains("booting &lt;x&gt; &amp; &quot;y&quot;\nstill booting</failure>"),
        "{x}"
    );
}

#[test]
fn a_passed_boot_with_kunit_results_counts_every_case() {
    let run = RunResult {
        cell: "ci".into(),
        status: 0,
        reason: "console matched --expect 'done'".into(),
        seconds: 1.5,
    };
    let x = report(&run, &transcript(KUNIT));
    // boot + 5 KTAP cases; 2 failed, 1 skipped.
    assert!(
        x.contains("tests=\"6\" failures=\"2\" skipped=\"1\""),
        "{x}"
    );
    assert!(
        x.contains("<testcase classname=\"ktap.example\" name=\"example_failing_test\"><failure"),
        "{x}"
    );
    assert!(
        x.contains("<skipped message=\"this test should be skipped\"/>"),
        "{x}"
    );
    assert!(!x.contains("type=\"exit status"), "{x}");
}

#[test]
fn characters_xml_cannot_carry_are_replaced() {
    assert_eq!(xml_escape("a\u{1b}[0mb\u{0}"), "a\u{fffd}[0mb\u{fffd}");
    assert_eq!(xml_escape("tab\there"), "tab\there");
}

#[test]
fn a_directive_with_a_character_across_its_fourth_byte_is_no_skip_and_no_panic() {
    let cases = ktap_cases(&lines("ok 1 a # SK\u{e9}P why\nnot ok 2 b # \u{e9}\u{e9}"));
    assert_eq!(cases[0].result, KtapResult::Passed);
    assert_eq!(cases[1].result, KtapResult::Failed);
}
