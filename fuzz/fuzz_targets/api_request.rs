//! The control API's request parser (`api::protocol::parse_request`), on
//! arbitrary request lines.
//!
//! Checks: no panic; every failure is a `bad_request`; a request that parses
//! serialises back to a line that parses to the same request (floats within
//! an ulp or so: serde_json, without its `float_roundtrip` feature, may read
//! a long decimal one ulp off; no request field takes a float); an attach
//! request's description goes through `device_from_value` as the cell
//! would take it.

#![no_main]

mod common;

use cellvm::api::protocol::{parse_request, ErrorKind, Request};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Equal, but for floats a few ulps apart.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            x == y || (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let req = match parse_request(line) {
        Ok(req) => req,
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::BadRequest, "{e:?}");
            return;
        }
    };
    let again = serde_json::to_string(&req).expect("a parsed request serialises");
    let back = parse_request(&again)
        .unwrap_or_else(|e| panic!("re-serialised request {again} does not parse: {e:?}"));
    if back != req {
        let (a, b) = (
            serde_json::to_value(&req).unwrap(),
            serde_json::to_value(&back).unwrap(),
        );
        assert!(
            same(&a, &b),
            "the request changed through {again}: {req:?} became {back:?}"
        );
    }
    if let Request::Attach {
        device, base_dir, ..
    } = req
    {
        let _ = cellvm::config::device_from_value(
            device,
            "<request>",
            base_dir.as_deref(),
            &common::NO_FILES,
        )
        .map_err(|e| e.to_string());
    }
});
