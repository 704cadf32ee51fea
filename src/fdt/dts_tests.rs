//! The overlay-source reader: accepted files and located errors.

use super::dts::{located, parse_overlay_source, Target};
use super::tree::{Cell, Chunk};

const GOOD: &str = "\
/dts-v1/;
/plugin/;

// A clock and a LED the add-on has.
&j1 {
\tosc: clock-24m {
\t\tcompatible = \"fixed-clock\";
\t\t#clock-cells = <0>;
\t\tclock-frequency = <24000000>;
\t};
\tuser {
\t\tclocks = <&osc>;
\t\tlabel = \"sensor\", \"board\";
\t};
};

&{/connector-bus@d1000000/user} {
\tnote = [01 02];
};
";

#[test]
fn an_overlay_source_gives_one_fragment_per_block_with_its_target() {
    let frags = parse_overlay_source("board.dtso", GOOD).expect("parses");
    assert_eq!(frags.len(), 2);
    assert_eq!(frags[0].target, Target::Label("j1".into()));
    assert_eq!((frags[0].line, frags[0].column), (5, 1));
    let clock = frags[0].body.child("clock-24m").expect("clock node");
    assert_eq!(clock.label(), Some("osc"));
    let user = frags[0].body.child("user").expect("user node");
    assert_eq!(
        user.property("clocks").map(|p| p.value.clone()),
        Some(vec![Chunk::Cells(vec![Cell::Ref("osc".into())])])
    );
    assert_eq!(
        frags[1].target,
        Target::Path("/connector-bus@d1000000/user".into())
    );
    assert_eq!(
        frags[1].body.property("note").map(|p| p.value.clone()),
        Some(vec![Chunk::Bytes(vec![1, 2])])
    );
}

#[track_caller]
fn assert_error(text: &str, expected: &str) {
    match parse_overlay_source("board.dtso", text) {
        Ok(f) => panic!("accepted: {f:?}"),
        Err(e) => assert_eq!(located(&e), expected),
    }
}

#[test]
fn an_overlay_source_needs_the_dts_and_plugin_headers() {
    assert_error("&j1 { };", "board.dtso:1:1: expected /dts-v1/;");
    assert_error("/dts-v1/;\n&j1 { };", "board.dtso:2:1: expected /plugin/;");
    assert_error(
        "/dts-v1/;\n/plugin/;\n",
        "board.dtso:3:1: expected a &label { ... }; block",
    );
}

#[test]
fn overlay_source_errors_carry_line_and_column() {
    assert_error(
        "/dts-v1/;\n/plugin/;\n&j1 {\n\tx {\n\t\treg = <0x1 0xfoo>;\n\t};\n};\n",
        "board.dtso:5:14: invalid number \"0xfoo\" (use decimal or 0x-prefixed hexadecimal)",
    );
    assert_error(
        "/dts-v1/;\n/plugin/;\n&j1 {\n  s = \"open;\n};\n",
        "board.dtso:4:7: unterminated string literal",
    );
    assert_error(
        "/dts-v1/;\n/plugin/;\n&j1 {\n  n { a = <1>; }\n};\n",
        "board.dtso:5:1: unexpected '}', expected ';' after '}'",
    );
}

#[test]
fn preprocessor_root_nodes_and_delete_directives_are_refused_where_they_stand() {
    assert_error(
        "/dts-v1/;\n/plugin/;\n#include <dt-bindings/gpio/gpio.h>\n",
        "board.dtso:3:1: the C preprocessor (#include, #define: cellvm runs no cpp) is not supported",
    );
    assert_error(
        "/dts-v1/;\n/plugin/;\n/ { fragment@0 { }; };\n",
        "board.dtso:3:1: a root node or directive here (write the overlay as &label { ... }; blocks) is not supported",
    );
    assert_error(
        "/dts-v1/;\n/plugin/;\n&j1 {\n  /delete-node/ x;\n};\n",
        "board.dtso:4:3: /delete-node/, /delete-property/ and other directives is not supported",
    );
    assert_error(
        "/dts-v1/;\n/plugin/;\n&j1 {\n  a = /bits/ 64 <1>;\n};\n",
        "board.dtso:4:7: /bits/ and other directives is not supported",
    );
}

#[test]
fn bad_targets_are_refused_where_they_stand() {
    assert_error(
        "/dts-v1/;\n/plugin/;\n&{j1} { };\n",
        "board.dtso:3:3: invalid path \"j1\" (a path reference is absolute: &{/node@1/child})",
    );
    assert_error(
        "/dts-v1/;\n/plugin/;\n& { };\n",
        "board.dtso:3:2: unexpected ' ', expected a label or '{' after '&'",
    );
}

#[test]
fn the_reader_survives_arbitrary_bytes() {
    for text in [
        "/dts-v1/;/plugin/;&",
        "/dts-v1/;/plugin/;&{",
        "/dts-v1/;/plugin/;&a{",
        "\u{fffd}&",
        "",
    ] {
        assert!(parse_overlay_source("f", text).is_err(), "{text:?}");
    }
}

#[test]
fn fragments_are_located_on_their_own_line_and_column_wherever_they_start() {
    let text = "/dts-v1/;\n/plugin/;\n&j1 { a { }; }; &j1 {\n};\n\n  &{/x} { };\n";
    let frags = parse_overlay_source("f.dtso", text).expect("parses");
    let at: Vec<(usize, usize)> = frags.iter().map(|f| (f.line, f.column)).collect();
    assert_eq!(at, [(3, 1), (3, 17), (6, 3)]);
}
