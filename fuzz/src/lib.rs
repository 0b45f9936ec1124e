//! What the fuzz targets share.

use skiff_agent::process::Value;

/// Whether `a` and `b` are the same JSON, floats aside, which may differ in their last digits:
/// serde_json without its `float_roundtrip` feature (the agent's) reads some decimal texts, such
/// as a 40-digit integer, a unit in the last place off, so a float printed does not always read
/// back as itself. Everything else (keys, their order, strings, integers) must be equal.
pub fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() && y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same_json(a, b))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .zip(b.iter())
                    .all(|((ka, va), (kb, vb))| ka == kb && same_json(va, vb))
        }
        _ => a == b,
    }
}
