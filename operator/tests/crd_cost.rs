//! An early guard against CEL rules that a real API server refuses for their estimated cost.
//!
//! The API server estimates each rule's worst-case cost from the schema before it accepts a CRD,
//! and refuses the whole CRD (so nothing installs) when a rule or message could be unbounded.
//! kube's client-side CEL evaluation, and cel-python in the chart checks, evaluate rules but do
//! not estimate cost, so a CRD that passes them can still be refused. The authority is the
//! envtest tier (`operator/tests/envtest`), which installs this CRD into a real kube-apiserver;
//! this test only catches the constructs known to make the estimator refuse, without a server:
//! - `string()` of a value: the estimator treats the result of converting a number as a string
//!   of unbounded length (a v1.36 server refused four port messages for exactly this);
//! - a rule that reads a string without `enum` or `maxLength`, a list without `maxItems`, or a
//!   map without `maxProperties`: the estimator then assumes the request's size limit.

use kube::CustomResourceExt;
use serde_json::Value;
use zmq_proxy_operator::crd::ZmqProxy;

fn schema() -> Value {
    let crd = serde_json::to_value(ZmqProxy::crd()).expect("CRD serializes");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Every CEL expression (rule or messageExpression) of the schema, with the schema node its
/// `self` is and the path of that node.
fn expressions<'a>(node: &'a Value, path: &str, out: &mut Vec<(String, &'a Value, String)>) {
    for rule in node["x-kubernetes-validations"].as_array().into_iter().flatten() {
        for key in ["rule", "messageExpression"] {
            if let Some(text) = rule[key].as_str() {
                out.push((format!("{path} {key}"), node, text.to_string()));
            }
        }
    }
    if let Some(props) = node["properties"].as_object() {
        for (name, child) in props {
            expressions(child, &format!("{path}.{name}"), out);
        }
    }
    for key in ["items", "additionalProperties"] {
        if node[key].is_object() {
            expressions(&node[key], &format!("{path}[{key}]"), out);
        }
    }
}

/// The field paths an expression reads: each maximal `self.a.b.c` chain (method calls such as
/// `.size()` end up as trailing segments, which [`resolve`] leaves unresolved).
fn self_paths(expr: &str) -> Vec<Vec<String>> {
    let bytes = expr.as_bytes();
    let mut paths = Vec::new();
    let mut i = 0;
    while let Some(at) = expr[i..].find("self") {
        let start = i + at;
        i = start + 4;
        let word_before =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if word_before {
            continue;
        }
        let mut segments = Vec::new();
        while i < bytes.len() && bytes[i] == b'.' {
            let seg_start = i + 1;
            let mut j = seg_start;
            while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                j += 1;
            }
            if j == seg_start {
                break;
            }
            segments.push(expr[seg_start..j].to_string());
            i = j;
        }
        paths.push(segments);
    }
    paths
}

/// The schema node a path leads to from `node`, and how many segments named properties (the
/// rest are method calls). `metadata` on the root is filled in by the API server, not the CRD.
fn resolve<'a>(mut node: &'a Value, path: &[String]) -> (&'a Value, usize) {
    for (n, seg) in path.iter().enumerate() {
        match node["properties"].get(seg) {
            Some(child) => node = child,
            None => return (node, n),
        }
    }
    (node, path.len())
}

/// Why the estimator would take the node read at `path` to be unbounded, if it would.
fn unbounded(node: &Value, path: &[String]) -> Option<String> {
    // The API server bounds metadata.name and metadata.generateName itself (ObjectMeta).
    if matches!(path, [m, n, ..] if m == "metadata" && (n == "name" || n == "generateName")) {
        return None;
    }
    let has = |k: &str| node.get(k).is_some();
    match node["type"].as_str() {
        Some("string") if !has("enum") && !has("maxLength") => {
            Some("a string without enum or maxLength".into())
        }
        Some("array") if !has("maxItems") => Some("a list without maxItems".into()),
        Some("object") if node["additionalProperties"].is_object() && !has("maxProperties") => {
            Some("a map without maxProperties".into())
        }
        _ => None,
    }
}

fn violations(schema: &Value) -> Vec<String> {
    let mut exprs = Vec::new();
    expressions(schema, "", &mut exprs);
    assert!(!exprs.is_empty(), "the CRD has CEL rules; none were found");
    let mut found = Vec::new();
    for (at, node, text) in &exprs {
        if text.contains("string(") {
            found.push(format!("{at}: string() has an unbounded estimated size: {text}"));
        }
        for path in self_paths(text) {
            let (target, resolved) = resolve(node, &path);
            if let Some(why) = unbounded(target, &path[..resolved]) {
                found.push(format!("{at}: self.{} is {why}: {text}", path[..resolved].join(".")));
            }
        }
    }
    found
}

#[test]
fn no_rule_uses_a_construct_the_cost_estimator_refuses() {
    let found = violations(&schema());
    assert!(found.is_empty(), "CEL constructs a real API server refuses:\n{}", found.join("\n"));
}

#[test]
fn the_guard_sees_the_constructs_it_looks_for() {
    // The rule a v1.36 server refused, an unbounded string, and an unbounded list.
    let bad = serde_json::json!({
        "type": "object",
        "properties": {
            "port": {"type": "integer"},
            "name": {"type": "string"},
            "kind": {"type": "string", "enum": ["a", "b"]},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}},
            "small": {"type": "array", "maxItems": 4, "items": {"type": "string", "maxLength": 8}},
        },
        "x-kubernetes-validations": [
            {"rule": "self.port > 0", "messageExpression": "'port ' + string(self.port)"},
            {"rule": "self.name.startsWith('a') && self.kind == 'a'", "message": "static"},
            {"rule": "self.tags.size() < 3 && self.small.size() < 3", "message": "static"},
        ],
    });
    let found = violations(&bad);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(found[0].contains("string()"), "{}", found[0]);
    assert!(found[1].contains("self.name is a string without"), "{}", found[1]);
    assert!(found[2].contains("self.tags is a list without maxItems"), "{}", found[2]);
}
