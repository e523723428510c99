//! One CEL rule as the CRD's JSON carries it, for the sections whose types hold their own rules
//! (`security.rs`, `connect.rs`); the spec-wide rules are `cel.rs`'s.

use serde_json::{Value, json};

/// One CEL rule in the CRD's JSON: `rule`, a static `message`, `fieldPath` (relative to the
/// object the rule sits on; `None` blames the object itself) and `reason`.
pub fn cel_rule(rule: &str, message: &str, field_path: Option<&str>, reason: &str) -> Value {
    let mut r = json!({"rule": rule, "message": message, "reason": reason});
    if let Some(path) = field_path {
        r["fieldPath"] = json!(path);
    }
    r
}

/// Puts `rules` on `schema` as its `x-kubernetes-validations`.
pub fn add_rules(schema: &mut schemars::Schema, rules: Vec<Value>) {
    schema.insert("x-kubernetes-validations".to_string(), Value::Array(rules));
}
