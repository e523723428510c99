//! The socket vocabulary of a proxy, owned here once: socket types, which frontend/backend pairs
//! the proxy supports, which capture types it accepts, and the socket section of a `ZmqProxy`
//! manifest. The operator reuses these types as the CRD's types and derives its CEL rules from
//! [`allowed_pairs`] and [`CAPTURE_TYPES`], so a rule is never written twice.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::heartbeat::HeartbeatSpec;
use crate::options::SocketOptionsSpec;
use crate::security::SocketSecurity;

// PAIR is a known word because zmq_proxy(3) names it for the capture socket, so a manifest
// that asks for it is refused with a reason rather than as an unknown word.
/// A ZeroMQ socket type, spelled as in libzmq (ZMQ_ROUTER is ROUTER).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum SocketType {
    Router,
    Dealer,
    Xsub,
    Xpub,
    Sub,
    Pub,
    Pull,
    Push,
    Req,
    Rep,
    Pair,
}

impl SocketType {
    pub const ALL: [SocketType; 11] = [
        SocketType::Router,
        SocketType::Dealer,
        SocketType::Xsub,
        SocketType::Xpub,
        SocketType::Sub,
        SocketType::Pub,
        SocketType::Pull,
        SocketType::Push,
        SocketType::Req,
        SocketType::Rep,
        SocketType::Pair,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            SocketType::Router => "ROUTER",
            SocketType::Dealer => "DEALER",
            SocketType::Xsub => "XSUB",
            SocketType::Xpub => "XPUB",
            SocketType::Sub => "SUB",
            SocketType::Pub => "PUB",
            SocketType::Pull => "PULL",
            SocketType::Push => "PUSH",
            SocketType::Req => "REQ",
            SocketType::Rep => "REP",
            SocketType::Pair => "PAIR",
        }
    }
}

impl fmt::Display for SocketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown socket type {given:?}; expected one of {}", list(&SocketType::ALL))]
pub struct UnknownSocketType {
    pub given: String,
}

impl FromStr for SocketType {
    type Err = UnknownSocketType;

    /// Case-insensitive, so `router` on a command line works like `ROUTER` in a manifest.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SocketType::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownSocketType { given: s.to_string() })
    }
}

/// The frontend/backend pairs the proxy forwards, written frontend-first. The proxy is
/// symmetric, so each pair is also accepted the other way round (see [`allowed_pairs`]).
///
/// - ROUTER/DEALER: shared queue (requests one way, replies routed back by identity).
/// - XSUB/XPUB: forwarder; subscriptions flow from subscribers upstream to publishers.
/// - SUB/PUB: forwarder that subscribes to everything upstream.
/// - PULL/PUSH: pipeline, one direction only.
pub const SUPPORTED_PAIRS: [(SocketType, SocketType); 4] = [
    (SocketType::Router, SocketType::Dealer),
    (SocketType::Xsub, SocketType::Xpub),
    (SocketType::Sub, SocketType::Pub),
    (SocketType::Pull, SocketType::Push),
];

/// Every accepted (frontend, backend) pair, both orientations.
pub fn allowed_pairs() -> impl Iterator<Item = (SocketType, SocketType)> {
    SUPPORTED_PAIRS.into_iter().flat_map(|(a, b)| [(a, b), (b, a)])
}

pub fn is_allowed_pair(frontend: SocketType, backend: SocketType) -> bool {
    allowed_pairs().any(|p| p == (frontend, backend))
}

/// Capture socket types the proxy can write a copy of every message to.
pub const CAPTURE_TYPES: [SocketType; 3] = [SocketType::Pub, SocketType::Dealer, SocketType::Push];

/// Why a capture type is refused, or `None` when it is accepted.
pub fn capture_type_refusal(t: SocketType) -> Option<String> {
    match t {
        _ if CAPTURE_TYPES.contains(&t) => None,
        SocketType::Pair => Some(format!(
            "capture type PAIR is not supported: PAIR talks to exactly one peer and this proxy has no PAIR socket; use one of {}",
            list(&CAPTURE_TYPES)
        )),
        other => Some(format!(
            "capture type {other} is not supported; use one of {}",
            list(&CAPTURE_TYPES)
        )),
    }
}

/// Why a frontend/backend pair is refused, or `None` when it is accepted.
pub fn pair_refusal(frontend: SocketType, backend: SocketType) -> Option<String> {
    if is_allowed_pair(frontend, backend) {
        return None;
    }
    Some(pair_refusal_text(&format!("{frontend}/{backend}")))
}

/// The words of [`pair_refusal`], shared with its CEL rendering in [`cel::pair_message_expression`].
fn pair_refusal_text(pair: &str) -> String {
    let allowed: Vec<String> = allowed_pairs().map(|(a, b)| format!("{a}/{b}")).collect();
    format!(
        "unsupported socket pair {pair} (frontend/backend); allowed pairs: {}",
        allowed.join(", ")
    )
}

/// The words of a port clash, shared with its CEL rendering in [`cel::distinct_port_rules`].
/// The CEL rendering passes no port: the API server's cost estimator treats `string()` of an
/// integer as unbounded and refuses the whole CRD, so its messages are static per clash.
fn port_clash_text(port: Option<i32>, other: &str) -> String {
    match port {
        Some(port) => format!("port {port} is already used by {other}; ports must be distinct"),
        None => format!("port is already used by {other}; ports must be distinct"),
    }
}

fn list(types: &[SocketType]) -> String {
    types.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
}

// The port is an i32 with an explicit range rather than a u16: a u16 would put
// `format: uint16` in the CRD schema, which the API server does not know.
/// One socket of a proxy: its type, the TCP port it binds on all interfaces and, on
/// Kubernetes, its security (NULL when unset).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SocketSpec {
    #[serde(rename = "type")]
    pub socket_type: SocketType,
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// CurveZMQ for this socket, from a Secret (the server's key) and a Secret or ConfigMap
    /// (the allowed clients) that the operator mounts into the pod. Unset: NULL, no security.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<SocketSecurity>,
    /// libzmq's per-socket options (`sndhwm`, `maxMsgSize`, ...; see `options.rs`).
    #[serde(flatten)]
    pub options: SocketOptionsSpec,
    /// ZMTP heartbeats: `heartbeatInterval`, `heartbeatTtl`, `heartbeatTimeout`.
    #[serde(flatten)]
    pub heartbeat: HeartbeatSpec,
}

impl SocketSpec {
    /// A socket without security or heartbeats, with default options.
    pub fn new(socket_type: SocketType, port: i32) -> Self {
        SocketSpec {
            socket_type,
            port,
            security: None,
            options: SocketOptionsSpec::default(),
            heartbeat: HeartbeatSpec::default(),
        }
    }
}

/// The steering socket (zmq_proxy_steerable's control socket, a REP): PAUSE, RESUME,
/// TERMINATE and STATISTICS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ControlSpec {
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// CurveZMQ for the control socket; give it its own allow-list (whoever may connect here
    /// can PAUSE and TERMINATE the proxy). Unset: NULL, no security.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<SocketSecurity>,
}

/// The socket section of a `ZmqProxy` manifest's `spec`. The operator flattens it into the
/// CRD's spec; `zmq-proxy --config` reads it from the same YAML a user applies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxySockets {
    /// The frontend socket: clients (shared queue), publishers (forwarder) or producers
    /// (pipeline) connect here.
    pub frontend: SocketSpec,
    /// The backend socket: workers, subscribers or consumers connect here. With the frontend
    /// it must form ROUTER/DEALER, XSUB/XPUB, SUB/PUB or PULL/PUSH, either way round.
    pub backend: SocketSpec,
    /// Optional capture socket (PUB, DEALER or PUSH): a copy of every message, all frames,
    /// in both directions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<SocketSpec>,
    /// Optional steering socket (zmq_proxy_steerable): PAUSE, RESUME, TERMINATE, STATISTICS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<ControlSpec>,
}

/// A problem with a socket section, naming the field as a user would write it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SocketSpecError {
    pub field: String,
    pub reason: String,
}

impl ProxySockets {
    /// The named ports of this proxy in a stable order: frontend, backend, capture, control.
    pub fn named_ports(&self) -> Vec<(&'static str, i32)> {
        let mut ports = vec![("frontend", self.frontend.port), ("backend", self.backend.port)];
        if let Some(c) = &self.capture {
            ports.push(("capture", c.port));
        }
        if let Some(c) = &self.control {
            ports.push(("control", c.port));
        }
        ports
    }

    /// The security section of each socket, in [`ProxySockets::named_ports`] order (capture and
    /// control only when present); `None` is NULL.
    pub fn named_security(&self) -> Vec<(&'static str, Option<&SocketSecurity>)> {
        let mut all = vec![
            ("frontend", self.frontend.security.as_ref()),
            ("backend", self.backend.security.as_ref()),
        ];
        if let Some(c) = &self.capture {
            all.push(("capture", c.security.as_ref()));
        }
        if let Some(c) = &self.control {
            all.push(("control", c.security.as_ref()));
        }
        all
    }

    /// Every rule the proxy enforces on a socket section. `field_prefix` is where the section
    /// sits in the document (`spec` for a manifest), so errors name the field a user wrote.
    pub fn validate(&self, field_prefix: &str) -> Result<(), SocketSpecError> {
        let field = |name: &str| format!("{field_prefix}.{name}");
        for (name, port) in self.named_ports() {
            if !(1..=65535).contains(&port) {
                return Err(SocketSpecError {
                    field: field(&format!("{name}.port")),
                    reason: format!("port {port} is outside 1-65535"),
                });
            }
        }
        if let Some(reason) = pair_refusal(self.frontend.socket_type, self.backend.socket_type) {
            return Err(SocketSpecError { field: field("backend.type"), reason });
        }
        if let Some(capture) = &self.capture
            && let Some(reason) = capture_type_refusal(capture.socket_type)
        {
            return Err(SocketSpecError { field: field("capture.type"), reason });
        }
        let ports = self.named_ports();
        for (i, (name, port)) in ports.iter().enumerate() {
            if let Some((other, _)) = ports[..i].iter().find(|(_, p)| p == port) {
                return Err(SocketSpecError {
                    field: field(&format!("{name}.port")),
                    reason: port_clash_text(Some(*port), other),
                });
            }
        }
        for (name, security) in self.named_security() {
            if let Some(security) = security {
                security.validate(&field(&format!("{name}.security")))?;
            }
        }
        self.socket_options(field_prefix)?;
        Ok(())
    }

    /// Each socket's options, validated, in [`ProxySockets::named_ports`] order (frontend,
    /// backend, capture when present; the control socket has none).
    pub fn socket_options(
        &self,
        field_prefix: &str,
    ) -> Result<Vec<crate::options::SocketOptions>, SocketSpecError> {
        let mut all = vec![("frontend", &self.frontend), ("backend", &self.backend)];
        all.extend(self.capture.iter().map(|c| ("capture", c)));
        all.into_iter()
            .map(|(name, s)| {
                let spelling = crate::options::Spelling::Manifest(field_prefix, name);
                s.options
                    .resolve(spelling, s.socket_type, name == "capture")
                    .map_err(|e| SocketSpecError { field: e.field, reason: e.reason })
            })
            .collect()
    }
}

/// The rules above rendered as Kubernetes CEL validation rules (`x-kubernetes-validations`) for a
/// schema whose `self` is a manifest's `spec`. The operator's CRD carries these strings, so the API
/// server refuses what [`ProxySockets::validate`] refuses, with the same words, and a rule is never
/// written twice. Each rule comes with the spec-relative `fieldPath` it blames.
pub mod cel {
    use super::{
        CAPTURE_TYPES, SocketType, allowed_pairs, capture_type_refusal, pair_refusal_text,
        port_clash_text,
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
    /// [`ProxySockets::validate`](super::ProxySockets::validate) does).
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

    /// The capture type, when there is a capture socket, must be one of [`CAPTURE_TYPES`]; the
    /// message is [`capture_type_refusal`]'s for the type given (PAIR gets its own reason).
    pub fn capture_rule() -> CelRule {
        let allowed = string_list(CAPTURE_TYPES.iter().map(|t| t.to_string()));
        let refusals: Vec<String> = SocketType::ALL
            .into_iter()
            .filter_map(|t| {
                capture_type_refusal(t).map(|why| format!("{}: {}", quote(t.as_str()), quote(&why)))
            })
            .collect();
        CelRule {
            rule: format!("!has(self.capture) || self.capture.type in {allowed}"),
            message_expression: format!("{{{}}}[self.capture.type]", refusals.join(", ")),
            field_path: ".capture.type".to_string(),
        }
    }

    /// `nodrop` only on a PUB/XPUB frontend or backend and never on the capture socket, with
    /// the words of [`crate::options::SocketOptionsSpec::resolve`].
    pub fn nodrop_rules() -> Vec<CelRule> {
        use crate::options::{NODROP_CAPTURE_REFUSAL, NODROP_TYPES, nodrop_type_refusal};
        let types = string_list(NODROP_TYPES.iter().map(|t| t.to_string()));
        const PLACEHOLDER: &str = "\u{0}";
        let mut rules: Vec<CelRule> = ["frontend", "backend"]
            .into_iter()
            .map(|name| {
                let s = format!("self.{name}");
                let ty = format!("{s}.type");
                CelRule {
                    rule: format!("!has({s}.nodrop) || !{s}.nodrop || {ty} in {types}"),
                    message_expression: splice(
                        &nodrop_type_refusal(PLACEHOLDER),
                        &[(PLACEHOLDER, ty.as_str())],
                    ),
                    field_path: format!(".{name}.nodrop"),
                }
            })
            .collect();
        rules.push(CelRule {
            rule: "!has(self.capture) || !has(self.capture.nodrop) || !self.capture.nodrop"
                .to_string(),
            message_expression: quote(NODROP_CAPTURE_REFUSAL),
            field_path: ".capture.nodrop".to_string(),
        });
        rules
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

    /// The socket ports of a spec in [`ProxySockets::named_ports`](super::ProxySockets::named_ports)
    /// order: frontend, backend, capture (optional), control (optional).
    pub fn socket_port_fields() -> Vec<PortField> {
        ["frontend", "backend", "capture", "control"]
            .into_iter()
            .map(|name| PortField {
                name: name.to_string(),
                port: format!("self.{name}.port"),
                present: matches!(name, "capture" | "control").then(|| format!("has(self.{name})")),
                field_path: format!(".{name}.port"),
            })
            .collect()
    }

    /// Every port must differ from the ports before it; a clash blames the later field and names
    /// the earlier one, as [`ProxySockets::validate`](super::ProxySockets::validate) does.
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_accepted_in_both_orientations() {
        for (a, b) in SUPPORTED_PAIRS {
            assert!(is_allowed_pair(a, b), "{a}/{b}");
            assert!(is_allowed_pair(b, a), "{b}/{a}");
        }
        assert_eq!(allowed_pairs().count(), 8);
    }

    #[test]
    fn refused_pair_names_the_pair_and_lists_the_allowed_ones() {
        let msg = pair_refusal(SocketType::Router, SocketType::Push).unwrap_or_default();
        assert!(msg.contains("ROUTER/PUSH"), "{msg}");
        assert!(msg.contains("ROUTER/DEALER") && msg.contains("XSUB/XPUB"), "{msg}");
    }

    #[test]
    fn pair_capture_is_refused_with_the_reason() {
        let msg = capture_type_refusal(SocketType::Pair).unwrap_or_default();
        assert!(msg.contains("no PAIR socket"), "{msg}");
        assert!(capture_type_refusal(SocketType::Pub).is_none());
        assert!(capture_type_refusal(SocketType::Router).is_some());
    }

    #[test]
    fn socket_type_parses_case_insensitively_and_rejects_unknown_words() {
        assert_eq!("router".parse::<SocketType>(), Ok(SocketType::Router));
        assert_eq!("XPUB".parse::<SocketType>(), Ok(SocketType::Xpub));
        let err = "STREAM".parse::<SocketType>().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("STREAM") && err.contains("ROUTER"), "{err}");
    }

    #[test]
    fn manifest_section_round_trips_through_yaml() {
        let yaml = "frontend: {type: ROUTER, port: 5555}\nbackend: {type: DEALER, port: 5556}\n";
        let s: ProxySockets = serde_yaml::from_str(yaml).expect("valid yaml");
        assert_eq!(s.frontend.socket_type, SocketType::Router);
        assert_eq!(s.backend.port, 5556);
        assert!(s.capture.is_none());
        assert_eq!(s.validate("spec"), Ok(()));
    }

    #[test]
    fn duplicate_ports_name_the_second_field() {
        let s = ProxySockets {
            frontend: SocketSpec::new(SocketType::Pull, 5000),
            backend: SocketSpec::new(SocketType::Push, 5001),
            capture: Some(SocketSpec::new(SocketType::Pub, 5000)),
            control: None,
        };
        let err = s.validate("spec").err().map(|e| e.field);
        assert_eq!(err.as_deref(), Some("spec.capture.port"));
    }

    #[test]
    fn cel_renderings_reuse_the_refusal_words() {
        let pair = cel::pair_rule();
        assert!(pair.rule.contains("'ROUTER/DEALER'") && pair.rule.contains("'PUSH/PULL'"));
        let words = pair_refusal(SocketType::Router, SocketType::Push).unwrap_or_default();
        let allowed = words.split("; ").nth(1).unwrap_or_default();
        assert!(pair.message_expression.contains(allowed), "{}", pair.message_expression);
        let capture = cel::capture_rule();
        let pair_words = capture_type_refusal(SocketType::Pair).unwrap_or_default();
        assert!(capture.message_expression.contains(&pair_words));
        assert!(!capture.message_expression.contains("'PUB':"), "accepted types need no message");
        let ports = cel::distinct_port_rules(&cel::socket_port_fields());
        let fields: Vec<&str> = ports.iter().map(|r| r.field_path.as_str()).collect();
        assert_eq!(fields, [".backend.port", ".capture.port", ".control.port"]);
        assert_eq!(cel::quote("it's"), "'it\\'s'");
    }

    #[test]
    fn out_of_range_port_is_refused() {
        let s = ProxySockets {
            frontend: SocketSpec::new(SocketType::Pull, 0),
            backend: SocketSpec::new(SocketType::Push, 5001),
            capture: None,
            control: None,
        };
        assert_eq!(
            s.validate("spec").err().map(|e| e.field).as_deref(),
            Some("spec.frontend.port")
        );
    }
}
