//! The proxy's rules on a manifest's socket section (`socket.rs`, `manifest.rs`, `options.rs`)
//! rendered as Kubernetes CEL validation rules (`x-kubernetes-validations`): rules across
//! sockets for a schema whose `self` is a manifest's `spec`, rules of one socket for that
//! socket's schema ([`socket_rules`]). The operator's CRD carries these strings, so the API
//! server refuses what `ProxySockets::validate` refuses, with the same words, and a rule is never
//! written twice. Each rule comes with the `fieldPath` it blames, relative to its `self`.

use crate::manifest::{port_clash_text, words};
use crate::options::{NODROP_CAPTURE_REFUSAL, NODROP_TYPES, nodrop_type_refusal};
use crate::socket::{
    CAPTURE_TYPES, Role, SocketType, allowed_pairs, capture_type_refusal, pair_refusal_text,
};

/// One CEL rule: `rule` must hold; otherwise `message_expression` is the error text and
/// `field_path` (relative to `spec`, e.g. `.backend.type`) the field the error names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CelRule {
    pub rule: String,
    pub message_expression: String,
    pub field_path: String,
}

/// A CEL string literal. Single quotes and backslashes are the only characters that need
/// escaping in the texts rendered here.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn string_list<I: IntoIterator<Item = String>>(items: I) -> String {
    format!("[{}]", items.into_iter().map(|s| quote(&s)).collect::<Vec<_>>().join(", "))
}

/// A CEL string expression that renders `text` with each placeholder replaced by its CEL
/// expression (concatenated, so the API server fills in the values the user wrote).
fn splice(text: &str, subs: &[(&str, &str)]) -> String {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some((at, (placeholder, expr))) = subs
        .iter()
        .filter_map(|sub| rest.find(sub.0).map(|at| (at, *sub)))
        .min_by_key(|(at, _)| *at)
    {
        if at > 0 {
            parts.push(quote(&rest[..at]));
        }
        parts.push(expr.to_string());
        rest = &rest[at + placeholder.len()..];
    }
    if !rest.is_empty() || parts.is_empty() {
        parts.push(quote(rest));
    }
    parts.join(" + ")
}

/// The frontend/backend pair must be one of [`allowed_pairs`] (blames `.backend.type`, as
/// `ProxySockets::validate` does).
pub fn pair_rule() -> CelRule {
    let pairs = string_list(allowed_pairs().map(|(a, b)| format!("{a}/{b}")));
    let pair = "self.frontend.type + '/' + self.backend.type";
    const PLACEHOLDER: &str = "\u{0}";
    CelRule {
        rule: format!("({pair}) in {pairs}"),
        message_expression: splice(&pair_refusal_text(PLACEHOLDER), &[(PLACEHOLDER, pair)]),
        field_path: ".backend.type".to_string(),
    }
}

/// The capture socket's type must be one of [`CAPTURE_TYPES`]; the message is
/// [`capture_type_refusal`]'s for the type given (PAIR gets its own reason). `self` is the
/// capture socket.
fn capture_type_rule() -> CelRule {
    let allowed = string_list(CAPTURE_TYPES.iter().map(|t| t.to_string()));
    let refusals: Vec<String> = SocketType::ALL
        .into_iter()
        .filter_map(|t| {
            capture_type_refusal(t).map(|why| format!("{}: {}", quote(t.as_str()), quote(&why)))
        })
        .collect();
    CelRule {
        rule: format!("self.type in {allowed}"),
        message_expression: format!("{{{}}}[self.type]", refusals.join(", ")),
        field_path: ".type".to_string(),
    }
}

/// `nodrop` only on a PUB/XPUB frontend or backend and never on the capture socket, with
/// the words of `SocketOptionsSpec::resolve`. `self` is the socket.
fn nodrop_rule(role: Role) -> CelRule {
    if role == Role::Capture {
        return CelRule {
            rule: "!has(self.nodrop) || !self.nodrop".to_string(),
            message_expression: quote(NODROP_CAPTURE_REFUSAL),
            field_path: ".nodrop".to_string(),
        };
    }
    let types = string_list(NODROP_TYPES.iter().map(|t| t.to_string()));
    const PLACEHOLDER: &str = "\u{0}";
    CelRule {
        rule: format!("!has(self.nodrop) || !self.nodrop || self.type in {types}"),
        message_expression: splice(
            &nodrop_type_refusal(PLACEHOLDER),
            &[(PLACEHOLDER, "self.type")],
        ),
        field_path: ".nodrop".to_string(),
    }
}

/// A port-carrying field of the spec: its name as errors say it, the CEL expression of its
/// port, and the CEL test of its presence (`None` when it is always present).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortField {
    pub name: String,
    pub port: String,
    pub present: Option<String>,
    pub field_path: String,
}

/// The socket ports of a spec in `ProxySockets::named_ports`
/// order: frontend, backend, capture (optional), control (optional). A data socket's port is
/// optional (a socket may only connect); the control socket's is required.
pub fn socket_port_fields() -> Vec<PortField> {
    Role::ALL
        .into_iter()
        .map(|role| {
            let name = role.as_str();
            let present = match role {
                Role::Frontend | Role::Backend => format!("has(self.{name}.port)"),
                Role::Capture => format!("(has(self.{name}) && has(self.{name}.port))"),
                Role::Control => format!("has(self.{name})"),
            };
            PortField {
                name: name.to_string(),
                port: format!("self.{name}.port"),
                present: Some(present),
                field_path: format!(".{name}.port"),
            }
        })
        .collect()
}

/// The rules whose `self` is one socket (`field_path` relative to it): they sit on that
/// socket's schema, not on the spec's. The API server evaluates every rule of an object on
/// each write, status writes included, and a field looked up on the spec costs it a copy of
/// every one of the spec's property schemas; on the socket it costs the socket's only.
///
/// For a data socket: the capture type, `nodrop`, and the rules that tie `port`, `connect` and
/// the CURVE keys together, with the words of `SocketSpec::validate_connects`; for the control
/// socket: a CURVE server only. Only `has()` and `size()` of a bounded list: the cost estimate
/// stays small.
pub fn socket_rules(role: Role) -> Vec<CelRule> {
    let name = role.as_str();
    let mut rules = Vec::new();
    let c = "self.security.curve";
    if role == Role::Control {
        let guard = "!has(self.security)";
        rules.push(CelRule {
            rule: format!("{guard} || has({c}.serverKey)"),
            message_expression: quote(words::CONTROL_SERVER_KEY),
            field_path: ".security.curve.serverKey".to_string(),
        });
        rules.push(CelRule {
            rule: format!(
                "{guard} || !(has({c}.serverPublicKey) || has({c}.serverPublicKeyRef) || has({c}.clientKey))"
            ),
            message_expression: quote(words::CONTROL_CLIENT),
            field_path: ".security.curve".to_string(),
        });
        return rules;
    }
    if role == Role::Capture {
        rules.push(capture_type_rule());
    }
    rules.push(nodrop_rule(role));
    let binds = "(has(self.port) || has(self.ipc))";
    let connects = "(has(self.connect) && size(self.connect) > 0)";
    let sec = "!has(self.security)";
    let public = format!("(has({c}.serverPublicKey) || has({c}.serverPublicKeyRef))");
    let mut rule = |rule: String, message: String, field: &str| {
        rules.push(CelRule {
            rule,
            message_expression: quote(&message),
            field_path: field.to_string(),
        });
    };
    rule(format!("{binds} || {connects}"), words::binds_or_connects(name), ".port");
    rule(
        "!has(self.ipc) || (self.ipc.startsWith('/') && !self.ipc.endsWith('/'))".to_string(),
        words::IPC_PATH.to_string(),
        ".ipc",
    );
    rule(
        format!("{sec} || !{binds} || has({c}.serverKey)"),
        words::server_key_required(name),
        ".security.curve.serverKey",
    );
    rule(
        format!("{sec} || {binds} || !has({c}.serverKey)"),
        words::server_key_without_bind(name),
        ".security.curve.serverKey",
    );
    rule(
        format!("{sec} || !{connects} || {public}"),
        words::public_key_required(name),
        ".security.curve.serverPublicKey",
    );
    rule(
        format!("{sec} || {connects} || !({public} || has({c}.clientKey))"),
        words::client_without_connect(name),
        ".security.curve",
    );
    rules
}

/// Every port must differ from the ports before it; a clash blames the later field and names
/// the earlier one, as `ProxySockets::validate` does.
/// `fields` is usually [`socket_port_fields`] plus ports the caller adds (a metrics port).
pub fn distinct_port_rules(fields: &[PortField]) -> Vec<CelRule> {
    let guarded = |f: &PortField, cond: String| match &f.present {
        Some(present) => format!("({present} && {cond})"),
        None => format!("({cond})"),
    };
    fields
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, field)| {
            let earlier = &fields[..i];
            let clashes: Vec<String> = earlier
                .iter()
                .map(|e| guarded(e, format!("{} == {}", e.port, field.port)))
                .collect();
            let rule = match &field.present {
                Some(present) => format!("!{present} || !({})", clashes.join(" || ")),
                None => format!("!({})", clashes.join(" || ")),
            };
            // The first earlier field that clashes names the clash; the last is the fallback
            // because the message is only evaluated when some clash exists. Every branch is
            // a literal, so the estimated cost stays that of the comparisons.
            let words = |e: &PortField| quote(&port_clash_text(None, &e.name));
            let mut message_expression = words(&earlier[i - 1]);
            for (e, clash) in earlier.iter().zip(&clashes).rev().skip(1) {
                message_expression = format!("({clash} ? {} : {message_expression})", words(e));
            }
            CelRule { rule, message_expression, field_path: field.field_path.clone() }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::pair_refusal;

    #[test]
    fn cel_renderings_reuse_the_refusal_words() {
        let pair = pair_rule();
        assert!(pair.rule.contains("'ROUTER/DEALER'") && pair.rule.contains("'PUSH/PULL'"));
        let words = pair_refusal(SocketType::Router, SocketType::Push).unwrap_or_default();
        let allowed = words.split("; ").nth(1).unwrap_or_default();
        assert!(pair.message_expression.contains(allowed), "{}", pair.message_expression);
        let capture = capture_type_rule();
        let pair_words = capture_type_refusal(SocketType::Pair).unwrap_or_default();
        assert!(capture.message_expression.contains(&pair_words));
        assert!(!capture.message_expression.contains("'PUB':"), "accepted types need no message");
        let ports = distinct_port_rules(&socket_port_fields());
        let fields: Vec<&str> = ports.iter().map(|r| r.field_path.as_str()).collect();
        assert_eq!(fields, [".backend.port", ".capture.port", ".control.port"]);
        assert_eq!(quote("it's"), "'it\\'s'");
    }
}
