//! Which fields a `ZmqProxy` manifest may hold when `zmq-proxy --config` reads it (what the
//! Kubernetes-only ones mean on a laptop is decided in `zmq_proxy_api::local`). Serde skips what it does not know, and the socket
//! section's types flatten their options into one map (where `deny_unknown_fields` cannot
//! work), so the manifest is first walked against the JSON schema of those same types: a field
//! the schema does not name is refused with its path and the nearest known name. The shared
//! types stay as they are, so the CRD generated from them does not change.

use schemars::generate::SchemaSettings;
use serde_json::Value as Json;
use serde_yaml::Value;

use zmq_proxy_api::local::{LOCAL_SPEC_FIELDS, PLACEMENT_FIELDS, REFUSED_FIELDS};
use zmq_proxy_api::manifest::ProxySockets;
use zmq_proxy_api::security::CurveSpec;
use zmq_proxy_api::socket::{CAPTURE_TYPES, SUPPORTED_PAIRS, SocketType};

/// Top-level keys of a manifest: the Kubernetes object's own, of which only `spec` is read.
const TOP_LEVEL: [&str; 5] = ["apiVersion", "kind", "metadata", "spec", "status"];

/// The keys a manifest may hold at one place, and what each holds in turn.
#[derive(Debug, Clone)]
pub enum Shape {
    /// A map with these keys (any of them may be missing; serde says which are required).
    Object(Vec<(String, Shape)>),
    /// Anything: free-form maps (labels), lists, scalars, and what only Kubernetes reads.
    Any,
}

impl Shape {
    fn keys(&self) -> Vec<&str> {
        match self {
            Shape::Object(fields) => fields.iter().map(|(k, _)| k.as_str()).collect(),
            Shape::Any => Vec::new(),
        }
    }

    fn field_mut(&mut self, name: &str) -> Option<&mut Shape> {
        match self {
            Shape::Object(fields) => fields.iter_mut().find(|(k, _)| k == name).map(|(_, s)| s),
            Shape::Any => None,
        }
    }

    fn add(&mut self, name: &str, shape: Shape) {
        if let Shape::Object(fields) = self {
            fields.push((name.to_string(), shape));
        }
    }
}

/// The shape of a JSON schema with its subschemas inlined: the properties of the schema and of
/// its `allOf`/`anyOf`/`oneOf` branches (an `Option` is an `anyOf` with `null`).
fn shape_of(schema: &Json) -> Shape {
    let mut fields: Vec<(String, Shape)> = Vec::new();
    let mut found = false;
    if let Some(props) = schema.get("properties").and_then(Json::as_object) {
        found = true;
        for (k, v) in props {
            fields.push((k.clone(), shape_of(v)));
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        for branch in schema.get(key).and_then(Json::as_array).into_iter().flatten() {
            if let Shape::Object(more) = shape_of(branch) {
                found = true;
                fields.extend(more);
            }
        }
    }
    if found { Shape::Object(fields) } else { Shape::Any }
}

fn schema_shape<T: schemars::JsonSchema>() -> Shape {
    let settings = SchemaSettings::draft2020_12().with(|s| s.inline_subschemas = true);
    let schema = settings.into_generator().into_root_schema_for::<T>();
    shape_of(schema.as_value())
}

/// Every key `--config` reads or knows, from the socket section's own types (so a socket option
/// added there is known here at once) plus the local fields and the Kubernetes-only ones.
pub fn manifest_shape() -> Shape {
    let mut spec = schema_shape::<ProxySockets>();
    let curve = schema_shape::<CurveSpec>();
    for socket in ["frontend", "backend", "capture", "control"] {
        if let Some(s) = spec.field_mut(socket) {
            s.add("curve", curve.clone());
        }
    }
    for field in LOCAL_SPEC_FIELDS.into_iter().chain(PLACEMENT_FIELDS) {
        spec.add(field, Shape::Any);
    }
    for (field, _) in REFUSED_FIELDS {
        spec.add(field, Shape::Any);
    }
    let mut top = Shape::Object(Vec::new());
    for key in TOP_LEVEL {
        top.add(key, if key == "spec" { spec.clone() } else { Shape::Any });
    }
    top
}

/// The first key of `doc` (in document order, depth first) that `shape` does not name, as
/// `path: unknown field; did you mean X?` (or the keys known there when none is close).
pub fn check_fields(doc: &Value, shape: &Shape) -> Result<(), String> {
    walk(doc, shape, "")
}

fn walk(v: &Value, shape: &Shape, path: &str) -> Result<(), String> {
    let (Value::Mapping(map), Shape::Object(fields)) = (v, shape) else { return Ok(()) };
    for (k, child) in map {
        let key = match k {
            Value::String(s) => s.clone(),
            other => serde_yaml::to_string(other).unwrap_or_default().trim().to_string(),
        };
        let here = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        match fields.iter().find(|(name, _)| *name == key) {
            Some((_, inner)) => walk(child, inner, &here)?,
            None => return Err(unknown_field(&here, &key, &shape.keys())),
        }
    }
    Ok(())
}

fn unknown_field(path: &str, key: &str, known: &[&str]) -> String {
    match closest(key, known) {
        Some(best) => format!("{path}: unknown field; did you mean {best}?"),
        None => {
            let mut sorted = known.to_vec();
            sorted.sort_unstable();
            format!("{path}: unknown field; known here: {}", sorted.join(", "))
        }
    }
}

/// The known name nearest to `given`, if it is near enough to be what was meant: at most one
/// edit per three characters (case ignored; a swap of two neighbours is one edit).
pub fn closest<'a>(given: &str, known: &[&'a str]) -> Option<&'a str> {
    let g = given.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&g, &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d * 3 <= given.len().max(k.len()).max(3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and swaps of two
/// neighbouring characters each cost one.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for (i, row) in d.chunks_mut(w).enumerate() {
        row[0] = i;
    }
    for (j, cell) in d.iter_mut().take(w).enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = best;
        }
    }
    d[a.len() * w + b.len()]
}

/// The socket types valid for the frontend and backend: those of the supported pairs.
pub fn data_types() -> Vec<SocketType> {
    let mut all: Vec<SocketType> = SUPPORTED_PAIRS.iter().flat_map(|(a, b)| [*a, *b]).collect();
    all.dedup();
    all
}

/// An unknown socket type, worded with only the types valid at that place (`for_capture`: the
/// capture types; otherwise those of the supported pairs).
pub fn unknown_type(given: &str, for_capture: bool) -> String {
    let valid = if for_capture { CAPTURE_TYPES.to_vec() } else { data_types() };
    let list: Vec<&str> = valid.iter().map(|t| t.as_str()).collect();
    format!("unknown socket type {given:?}; expected one of {}", list.join(", "))
}

/// Parses a socket type of the frontend or backend (`for_capture` false) or of the capture
/// socket. A known type that is not valid there (REQ, PAIR) parses, so its own refusal can
/// say why; an unknown word lists only what is valid there.
pub fn parse_type_for(given: &str, for_capture: bool) -> Result<SocketType, String> {
    given.parse::<SocketType>().map_err(|_| unknown_type(given.trim(), for_capture))
}

/// Checks each socket's `type` word in a manifest's spec, before serde (whose message would
/// list every type the enum knows).
pub fn check_types(spec: &Value) -> Result<(), String> {
    for (socket, capture) in [("frontend", false), ("backend", false), ("capture", true)] {
        if let Some(Value::String(t)) = spec.get(socket).and_then(|s| s.get("type")) {
            parse_type_for(t, capture).map_err(|e| format!("spec.{socket}.type: {e}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<(), String> {
        let doc: Value = serde_yaml::from_str(yaml).expect("yaml");
        check_fields(&doc, &manifest_shape())
    }

    const OK: &str = "apiVersion: zmqproxy.io/v1alpha1\nkind: ZmqProxy\nmetadata: {name: t, labels: {a: b}}\nspec:\n  frontend: {type: XSUB, port: 1, sndhwm: 5, heartbeatInterval: 100, curve: {serverKeyFile: k}}\n  backend: {type: XPUB, port: 2, security: {curve: {serverKey: {secretName: s}}}}\n  control: {port: 3}\n  replicas: 1\n  nodeSelector: {anything: goes}\nstatus: {replicas: 1}\n";

    #[test]
    fn every_known_field_passes_at_every_level() {
        assert_eq!(check(OK), Ok(()));
    }

    #[test]
    fn unknown_fields_are_named_with_their_path_and_the_nearest_name() {
        let cases = [
            ("sndhwm: 5", "sndhwn: 5", "spec.frontend.sndhwn: unknown field; did you mean sndhwm?"),
            (
                "control: {port: 3}",
                "control: {prot: 3}",
                "spec.control.prot: unknown field; did you mean port?",
            ),
            (
                "serverKeyFile: k",
                "serverKeyFil: k",
                "spec.frontend.curve.serverKeyFil: unknown field; did you mean serverKeyFile?",
            ),
            (
                "secretName: s",
                "secretNam: s",
                "spec.backend.security.curve.serverKey.secretNam: unknown field; did you mean secretName?",
            ),
            (
                "replicas: 1",
                "drainTimeoutSecond: 1",
                "spec.drainTimeoutSecond: unknown field; did you mean drainTimeoutSeconds?",
            ),
            ("status:", "statuz:", "statuz: unknown field; did you mean status?"),
        ];
        for (from, to, want) in cases {
            assert_eq!(check(&OK.replace(from, to)), Err(want.to_string()), "{to}");
        }
        let far = check(&OK.replace("replicas: 1", "zzzzzzzz: 1")).unwrap_err();
        assert!(far.starts_with("spec.zzzzzzzz: unknown field; known here: "), "{far}");
        assert!(far.contains("frontend") && far.contains("metricsPort"), "{far}");
    }

    #[test]
    fn the_nearest_name_ignores_case_and_counts_a_swap_once() {
        assert_eq!(closest("SndHwm", &["sndhwm", "rcvhwm"]), Some("sndhwm"));
        assert_eq!(closest("prot", &["port", "type"]), Some("port"));
        assert_eq!(closest("colour", &["port", "type"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn unknown_types_list_only_what_is_valid_at_that_place() {
        let e = parse_type_for("STREAM", false).unwrap_err();
        assert_eq!(
            e,
            "unknown socket type \"STREAM\"; expected one of ROUTER, DEALER, XSUB, XPUB, SUB, PUB, PULL, PUSH"
        );
        let e = parse_type_for("STREAM", true).unwrap_err();
        assert_eq!(e, "unknown socket type \"STREAM\"; expected one of PUB, DEALER, PUSH");
        assert_eq!(
            parse_type_for("pair", true),
            Ok(SocketType::Pair),
            "refused later, with a reason"
        );
    }
}
