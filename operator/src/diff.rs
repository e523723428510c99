//! Decides, without a client, whether a child must be applied: the reconciler reads the child,
//! and writes only when this module says the observed object differs from the desired one.
//!
//! Two tests, because each alone misses a case:
//! - a fingerprint of the desired object, stored in an annotation, changes whenever the desired
//!   object does, including when a field is *removed* (which a subset test cannot see);
//! - a subset test (every desired field is present with the same value) catches drift made by
//!   someone else to a field the operator sets (an edited replica count, a deleted label).
//!
//! The subset test tolerates what the API server does to an object: added defaults, dropped
//! zero values (Go's `omitempty`), and quantities rewritten to canonical form (`0.5` -> `500m`).

use serde::Serialize;
use serde_json::Value;

/// Annotation holding the fingerprint of the desired object last applied.
pub const FINGERPRINT_ANNOTATION: &str = "zmqproxy.io/applied-fingerprint";

/// FNV-1a over the JSON of `desired`: stable across processes and Rust versions (unlike
/// `DefaultHasher`), so an operator restart does not rewrite every child.
pub fn fingerprint<T: Serialize>(desired: &T) -> String {
    let bytes = serde_json::to_vec(desired).unwrap_or_default();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// `desired` with the fingerprint annotation of its current content added.
pub fn stamp(mut desired: Value) -> Value {
    let print = fingerprint(&desired);
    if let Some(meta) = desired.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations =
            meta.entry("annotations").or_insert_with(|| Value::Object(Default::default()));
        if let Some(map) = annotations.as_object_mut() {
            map.insert(FINGERPRINT_ANNOTATION.to_string(), Value::String(print));
        }
    }
    desired
}

/// True when `observed` does not already hold `desired` (a stamped object).
pub fn needs_apply(desired: &Value, observed: &Value) -> bool {
    !is_subset(desired, observed)
}

/// Every field of `desired` is in `observed` with an equal value. Lists must match in length and
/// element by element; a desired zero value (false, 0, "", empty list or map, null) matches an
/// absent field; values of `limits`/`requests` maps compare as quantities.
pub fn is_subset(desired: &Value, observed: &Value) -> bool {
    subset(desired, observed, false)
}

/// `quantity_map` says `desired` is a `limits` or `requests` map, whose values are quantities.
fn subset(desired: &Value, observed: &Value, quantity_map: bool) -> bool {
    match (desired, observed) {
        (Value::Object(d), Value::Object(o)) => d.iter().all(|(k, dv)| match (dv, o.get(k)) {
            (_, None) => is_zero(dv),
            (Value::String(ds), Some(Value::String(os))) if quantity_map => {
                ds == os || quantities_equal(ds, os)
            }
            (_, Some(ov)) => subset(dv, ov, matches!(k.as_str(), "limits" | "requests")),
        }),
        (Value::Array(d), Value::Array(o)) => {
            d.len() == o.len() && d.iter().zip(o).all(|(dv, ov)| subset(dv, ov, false))
        }
        (Value::Number(d), Value::Number(o)) => d.as_f64() == o.as_f64(),
        (d, Value::Null) => is_zero(d),
        (d, o) => d == o,
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_zero),
    }
}

/// Two quantity strings denote the same amount (`1Gi` == `1024Mi`, `0.5` == `500m`). Strings
/// that are not quantities compare unequal, so a non-quantity difference is never hidden.
pub fn quantities_equal(a: &str, b: &str) -> bool {
    match (parse_quantity(a), parse_quantity(b)) {
        (Some(x), Some(y)) => {
            let scale = x.abs().max(y.abs()).max(f64::MIN_POSITIVE);
            ((x - y) / scale).abs() < 1e-9
        }
        _ => false,
    }
}

/// The value of a Kubernetes quantity: a decimal number with an optional binary suffix
/// (Ki..Ei), decimal suffix (n, u, m, k, M..E) or exponent (e3, E-2).
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    if number.is_empty() || !number.chars().any(|c| c.is_ascii_digit()) {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => 10f64.powi(exp[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    Some(value * factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_defaults_and_dropped_zero_values_are_not_drift() {
        let desired = json!({"spec": {"replicas": 1, "paused": false, "tolerations": [],
            "template": {"containers": [{"name": "proxy", "ports": [{"containerPort": 5555}]}]}}});
        let observed = json!({"spec": {"replicas": 1, "progressDeadlineSeconds": 600,
            "template": {"containers": [{"name": "proxy", "terminationMessagePath": "/dev/termination-log",
                "ports": [{"containerPort": 5555, "protocol": "TCP"}]}]}}});
        assert!(is_subset(&desired, &observed));
    }

    #[test]
    fn edited_or_removed_fields_are_drift() {
        let desired = json!({"spec": {"replicas": 1, "args": ["--a", "1"]}, "metadata": {"labels": {"x": "y"}}});
        let edited = json!({"spec": {"replicas": 3, "args": ["--a", "1"]}, "metadata": {"labels": {"x": "y"}}});
        let shorter =
            json!({"spec": {"replicas": 1, "args": ["--a"]}, "metadata": {"labels": {"x": "y"}}});
        let unlabelled = json!({"spec": {"replicas": 1, "args": ["--a", "1"]}, "metadata": {}});
        assert!(needs_apply(&desired, &edited));
        assert!(needs_apply(&desired, &shorter));
        assert!(needs_apply(&desired, &unlabelled));
    }

    #[test]
    fn quantities_compare_by_value_only_under_limits_and_requests() {
        let desired = json!({"resources": {"limits": {"cpu": "0.5", "memory": "1024Mi"}, "requests": {"cpu": "100m"}}});
        let observed = json!({"resources": {"limits": {"cpu": "500m", "memory": "1Gi"}, "requests": {"cpu": "0.1"}}});
        assert!(is_subset(&desired, &observed));
        let bigger = json!({"resources": {"limits": {"cpu": "600m", "memory": "1Gi"}, "requests": {"cpu": "0.1"}}});
        assert!(!is_subset(&desired, &bigger));
        // Elsewhere "1" and "1.0" are different strings.
        assert!(!is_subset(&json!({"labels": {"v": "1"}}), &json!({"labels": {"v": "1.0"}})));
    }

    #[test]
    fn quantity_parser_handles_suffixes_and_exponents() {
        assert_eq!(parse_quantity("2Ki"), Some(2048.0));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("250m"), Some(0.25));
        assert_eq!(parse_quantity("1.5G"), Some(1.5e9));
        assert_eq!(parse_quantity("abc"), None);
        assert_eq!(parse_quantity("1Xi"), None);
    }

    #[test]
    fn stamp_changes_with_content_and_is_stable() {
        let a = stamp(json!({"metadata": {"name": "x"}, "spec": {"replicas": 1}}));
        let again = stamp(json!({"metadata": {"name": "x"}, "spec": {"replicas": 1}}));
        let b = stamp(json!({"metadata": {"name": "x"}, "spec": {"replicas": 2}}));
        let print = |v: &Value| v["metadata"]["annotations"][FINGERPRINT_ANNOTATION].clone();
        assert_eq!(print(&a), print(&again));
        assert_ne!(print(&a), print(&b));
        assert!(print(&a).as_str().is_some_and(|s| s.len() == 16));
        // A removed field changes the fingerprint, which the subset test alone cannot see.
        let removed = stamp(json!({"metadata": {"name": "x"}, "spec": {}}));
        assert!(is_subset(&json!({"metadata": {"name": "x"}, "spec": {}}), &a));
        assert!(needs_apply(&removed, &a));
    }
}
