//! Prints docs/reference.md, the field reference of the ZmqProxy CRD, from crds/zmqproxy.yaml:
//!
//! ```sh
//! cargo run -p zmq-proxy-operator --bin crddoc > docs/reference.md
//! ```
//!
//! It reads the generated YAML rather than the Rust types so that the page documents exactly what
//! the API server is given (schemars' output, CEL rules included). The output depends only on
//! that file: keys keep the file's order, so the page is stable byte for byte, and
//! `operator/tests/crddoc.rs` fails when it is stale.
use serde_yaml::Value;
use std::fmt::Write as _;
use std::process::ExitCode;

const DEFAULT_CRD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/zmqproxy.yaml");

fn main() -> ExitCode {
    let path = std::env::args().nth(1).unwrap_or_else(|| DEFAULT_CRD.to_string());
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("crddoc: cannot read {path}: {e}");
            return ExitCode::from(1);
        }
    };
    match serde_yaml::from_str::<Value>(&text)
        .map_err(|e| e.to_string())
        .and_then(|crd| render(&crd))
    {
        Ok(page) => {
            print!("{page}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crddoc: {path}: {e}");
            ExitCode::from(1)
        }
    }
}

/// One row of a field table.
struct Field {
    path: String,
    node: Value,
    required: bool,
}

/// A CEL rule with the path of the schema node that carries it.
struct Rule {
    at: String,
    rule: Value,
}

fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_mapping().and_then(|m| m.get(key))
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    get(v, key).and_then(Value::as_str)
}

fn render(crd: &Value) -> Result<String, String> {
    let spec = get(crd, "spec").ok_or("no spec")?;
    let names = get(spec, "names").ok_or("no spec.names")?;
    let group = str_of(spec, "group").ok_or("no spec.group")?;
    let kind = str_of(names, "kind").ok_or("no spec.names.kind")?;
    let versions = get(spec, "versions").and_then(Value::as_sequence).ok_or("no spec.versions")?;

    let mut out = String::new();
    let _ = writeln!(out, "# {kind} reference\n");
    let _ = writeln!(
        out,
        "<!-- Generated from crds/zmqproxy.yaml by `cargo run -p zmq-proxy-operator --bin crddoc > docs/reference.md`; do not edit by hand. -->\n"
    );
    let _ = writeln!(
        out,
        "Every field of the `{kind}` custom resource as the API server validates it: type, default, \
         bounds, whether it is required, and its description. Generated from \
         [`crds/zmqproxy.yaml`](../crds/zmqproxy.yaml), which is generated from the operator's Rust \
         types; `cargo test -p zmq-proxy-operator --test crddoc` fails when this page is stale.\n"
    );
    let list = |key: &str| -> String {
        get(names, key)
            .and_then(Value::as_sequence)
            .map(|s| {
                s.iter()
                    .filter_map(Value::as_str)
                    .map(|x| format!("`{x}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let _ = writeln!(out, "| | |\n| --- | --- |");
    let _ = writeln!(out, "| group | `{group}` |");
    let _ = writeln!(out, "| kind | `{kind}` |");
    let _ = writeln!(out, "| plural | `{}` |", str_of(names, "plural").unwrap_or(""));
    let _ = writeln!(out, "| singular | `{}` |", str_of(names, "singular").unwrap_or(""));
    let _ = writeln!(out, "| short names | {} |", list("shortNames"));
    let _ = writeln!(out, "| categories | {} |", list("categories"));
    let _ = writeln!(out, "| scope | {} |", str_of(spec, "scope").unwrap_or(""));

    for version in versions {
        render_version(&mut out, group, kind, version)?;
    }
    Ok(out)
}

fn render_version(
    out: &mut String,
    group: &str,
    kind: &str,
    version: &Value,
) -> Result<(), String> {
    let name = str_of(version, "name").ok_or("a version has no name")?;
    let schema = get(version, "schema")
        .and_then(|s| get(s, "openAPIV3Schema"))
        .ok_or_else(|| format!("version {name} has no openAPIV3Schema"))?;
    let flags: Vec<&str> = [("served", "served"), ("storage", "stored")]
        .iter()
        .filter(|(k, _)| get(version, k).and_then(Value::as_bool).unwrap_or(false))
        .map(|(_, word)| *word)
        .collect();
    let _ = writeln!(out, "\n## {group}/{name}\n");
    let _ = writeln!(out, "`apiVersion: {group}/{name}`, `kind: {kind}` ({}).", flags.join(", "));
    if let Some(d) = str_of(schema, "description") {
        let _ = writeln!(out, "\n{}", text(d));
    }

    if let Some(sub) = get(version, "subresources").and_then(Value::as_mapping) {
        let _ = writeln!(out, "\n### Subresources\n");
        for (k, v) in sub {
            let k = k.as_str().unwrap_or("");
            match k {
                "scale" => {
                    let _ = writeln!(
                        out,
                        "- `scale`: replicas at `{}`, observed at `{}`, pods selected by `{}` (`kubectl scale` works).",
                        str_of(v, "specReplicasPath").unwrap_or(""),
                        str_of(v, "statusReplicasPath").unwrap_or(""),
                        str_of(v, "labelSelectorPath").unwrap_or("")
                    );
                }
                "status" => {
                    let _ = writeln!(out, "- `status`: written by the operator only.");
                }
                other => {
                    let _ = writeln!(out, "- `{other}`");
                }
            }
        }
    }

    if let Some(cols) = get(version, "additionalPrinterColumns").and_then(Value::as_sequence) {
        let _ = writeln!(out, "\n### Printer columns\n");
        let _ = writeln!(
            out,
            "`kubectl get` shows the columns of priority 0; `-o wide` adds the others.\n"
        );
        let _ =
            writeln!(out, "| column | JSON path | type | priority |\n| --- | --- | --- | --- |");
        for c in cols {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                cell(str_of(c, "name").unwrap_or("")),
                code(str_of(c, "jsonPath").unwrap_or("")),
                cell(str_of(c, "type").unwrap_or("")),
                get(c, "priority").and_then(Value::as_i64).unwrap_or(0)
            );
        }
    }

    // One table per top-level field of the object (spec, status) and per object directly under
    // them, so each section stays readable and embedded Kubernetes types (affinity) stay apart.
    let mut rules = Vec::new();
    collect_rules("", schema, &mut rules);
    let top = properties(schema);
    for (top_name, top_node) in top {
        let top_required = required(schema).contains(&top_name);
        let _ = writeln!(out, "\n### {top_name}\n");
        if let Some(d) = str_of(&top_node, "description") {
            let _ = writeln!(out, "{}\n", text(d));
        }
        if top_required {
            let _ = writeln!(out, "`{top_name}` is required.\n");
        }
        let mut direct = Vec::new();
        let mut nested = Vec::new();
        for (name, node) in properties(&top_node) {
            let path = format!("{top_name}.{name}");
            let req = required(&top_node).contains(&name);
            if has_children(&node) {
                nested.push((path.clone(), node.clone()));
            }
            direct.push(Field { path, node, required: req });
        }
        table(out, &direct);
        for (path, node) in nested {
            let _ = writeln!(out, "\n### {path}\n");
            if let Some(d) = str_of(&node, "description") {
                let _ = writeln!(out, "{}\n", text(d));
            }
            let mut fields = Vec::new();
            descendants(&path, &node, &mut fields);
            table(out, &fields);
        }
    }

    if !rules.is_empty() {
        let _ = writeln!(out, "\n### Validation rules\n");
        let _ = writeln!(
            out,
            "CEL rules (`x-kubernetes-validations`) the API server evaluates on create and update. \
             A refusal names the field (the rule's place plus its field path) and gives the message.\n"
        );
        let _ = writeln!(out, "| field | message | rule |\n| --- | --- | --- |");
        for Rule { at, rule } in &rules {
            let field = format!("{at}{}", str_of(rule, "fieldPath").unwrap_or(""));
            let field = field.trim_start_matches('.');
            let field = if field.is_empty() { "(the object)" } else { field };
            let message = match (str_of(rule, "message"), str_of(rule, "messageExpression")) {
                (Some(m), _) => cell(m),
                (None, Some(e)) => format!("computed: {}", code(e)),
                (None, None) => String::new(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                code(field),
                message,
                code(str_of(rule, "rule").unwrap_or(""))
            );
        }
    }
    Ok(())
}

fn properties(node: &Value) -> Vec<(String, Value)> {
    get(node, "properties")
        .and_then(Value::as_mapping)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.clone()))).collect())
        .unwrap_or_default()
}

fn required(node: &Value) -> Vec<String> {
    get(node, "required")
        .and_then(Value::as_sequence)
        .map(|s| s.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

/// The node an array's items or a map's values are described by, when they are objects.
fn element(node: &Value) -> Option<(&'static str, &Value)> {
    if let Some(items) = get(node, "items") {
        return Some(("[]", items));
    }
    match get(node, "additionalProperties") {
        Some(v @ Value::Mapping(_)) => Some((".*", v)),
        _ => None,
    }
}

fn has_children(node: &Value) -> bool {
    !properties(node).is_empty() || element(node).is_some_and(|(_, e)| has_children(e))
}

/// Every field below `node`, depth first, in the file's order.
fn descendants(path: &str, node: &Value, out: &mut Vec<Field>) {
    if let Some((suffix, e)) = element(node)
        && has_children(e)
    {
        descendants(&format!("{path}{suffix}"), e, out);
    }
    let req = required(node);
    for (name, child) in properties(node) {
        let child_path = format!("{path}.{name}");
        out.push(Field {
            path: child_path.clone(),
            node: child.clone(),
            required: req.contains(&name),
        });
        descendants(&child_path, &child, out);
    }
}

fn collect_rules(path: &str, node: &Value, out: &mut Vec<Rule>) {
    if let Some(rules) = get(node, "x-kubernetes-validations").and_then(Value::as_sequence) {
        for r in rules {
            out.push(Rule { at: path.to_string(), rule: r.clone() });
        }
    }
    if let Some((suffix, e)) = element(node) {
        collect_rules(&format!("{path}{suffix}"), e, out);
    }
    for (name, child) in properties(node) {
        collect_rules(&format!("{path}.{name}"), &child, out);
    }
}

fn table(out: &mut String, fields: &[Field]) {
    if fields.is_empty() {
        return;
    }
    let _ = writeln!(out, "| field | type | default | bounds | required | description |");
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- |");
    for f in fields {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            code(&f.path),
            type_of(&f.node),
            get(&f.node, "default").map(|d| code(&inline(d))).unwrap_or_default(),
            bounds(&f.node),
            if f.required { "yes" } else { "" },
            str_of(&f.node, "description").map(text).unwrap_or_default()
        );
    }
}

fn type_of(node: &Value) -> String {
    if get(node, "x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
        return "integer or string".into();
    }
    let base = str_of(node, "type").unwrap_or("");
    let t = match (base, str_of(node, "format")) {
        ("array", _) => {
            let inner = get(node, "items").map(type_of).unwrap_or_default();
            format!("[]{inner}")
        }
        ("object", _) => match get(node, "additionalProperties") {
            Some(v @ Value::Mapping(_)) => format!("map[string]{}", type_of(v)),
            _ if get(node, "x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool)
                == Some(true) =>
            {
                "object (fields kept as written)".into()
            }
            _ => "object".into(),
        },
        (t, Some(f)) => format!("{t} ({f})"),
        (t, None) => t.to_string(),
    };
    if t.is_empty() { "any".into() } else { t }
}

fn number(v: &Value) -> String {
    match v {
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e18 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        other => inline(other),
    }
}

fn bounds(node: &Value) -> String {
    let mut parts = Vec::new();
    for (key, word) in [
        ("minimum", "min"),
        ("maximum", "max"),
        ("multipleOf", "multiple of"),
        ("minLength", "minLength"),
        ("maxLength", "maxLength"),
        ("minItems", "minItems"),
        ("maxItems", "maxItems"),
    ] {
        if let Some(v) = get(node, key) {
            parts.push(format!("{word} {}", number(v)));
        }
    }
    if let Some(values) = get(node, "enum").and_then(Value::as_sequence) {
        let list: Vec<String> = values.iter().map(|v| code(&inline(v))).collect();
        parts.push(format!("one of {}", list.join(", ")));
    }
    if let Some(items) = get(node, "items")
        && let Some(values) = get(items, "enum").and_then(Value::as_sequence)
    {
        let list: Vec<String> = values.iter().map(|v| code(&inline(v))).collect();
        parts.push(format!("items one of {}", list.join(", ")));
    }
    if let Some(p) = str_of(node, "pattern") {
        parts.push(format!("pattern {}", code(p)));
    }
    if let Some(kind) = str_of(node, "x-kubernetes-list-type") {
        let keys = get(node, "x-kubernetes-list-map-keys")
            .and_then(Value::as_sequence)
            .map(|s| s.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        if keys.is_empty() {
            parts.push(format!("list type {kind}"));
        } else {
            parts.push(format!("list type {kind} (keys: {keys})"));
        }
    }
    parts.join("; ")
}

/// A scalar or small value on one line, as YAML flow would write it.
fn inline(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(_) => number(v),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

/// Inline code that survives a table cell: backticks widen the fence, pipes are escaped.
fn code(s: &str) -> String {
    let s = s.replace('|', "\\|");
    if s.contains('`') { format!("`` {s} ``") } else { format!("`{s}`") }
}

/// Table-cell text of a description: one line, pipes escaped, angle brackets outside code spans
/// escaped so that `<name>` shows instead of vanishing as an HTML tag.
fn cell(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in s.split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        if i % 2 == 1 {
            out.push_str(part);
        } else {
            out.push_str(&part.replace('<', "&lt;").replace('>', "&gt;"));
        }
    }
    out.replace('|', "\\|")
}

/// A description as one paragraph: the CRD keeps the doc comments' line breaks.
fn text(d: &str) -> String {
    let joined: Vec<&str> = d.split_whitespace().collect();
    cell(&joined.join(" "))
}
