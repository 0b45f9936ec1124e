//! The event type (`process::event`) against serde_json: the same bytes parse alike (both or
//! neither), to the same tree (keys in the same order, found by `get`), printed as the same
//! text, which parses back to the same event (floats aside, see [`skiff_fuzz::same_json`]).

#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_agent::process::Value;

fuzz_target!(|data: &[u8]| {
    let ours = serde_json::from_slice::<Value>(data);
    let theirs = serde_json::from_slice::<serde_json::Value>(data);
    let (ours, theirs) = match (ours, theirs) {
        (Ok(ours), Ok(theirs)) => (ours, theirs),
        (Err(_), Err(_)) => return,
        (ours, theirs) => {
            panic!("the event type and serde_json disagree: {ours:?} against {theirs:?}")
        }
    };
    assert!(ours == theirs, "{ours:?} differs from {theirs:?}");
    // The sorted entries are searched by their keys' prefixes: every key must be found.
    if let (Value::Object(object), serde_json::Value::Object(map)) = (&ours, &theirs) {
        for (key, value) in map {
            assert!(
                object.get(key).is_some_and(|found| found == value),
                "key {key:?} not found"
            );
        }
    }
    let text = serde_json::to_string(&ours).unwrap();
    assert_eq!(text, serde_json::to_string(&theirs).unwrap());
    let again: Value = serde_json::from_str(&text).unwrap();
    assert!(
        skiff_fuzz::same_json(&again, &ours),
        "the printed event parses to another one: {again:?}"
    );
    // The conversion configuration values and tests go through, not the parse above.
    let converted = Value::from(theirs);
    assert!(converted == ours, "From<serde_json::Value> differs");
});
