//! Where a data socket connects: `spec.<socket>.connect`, a list of [`ConnectTarget`]s, each
//! exactly one of a Service of the object's namespace (`service` + `port`), the pods a label
//! selector chooses (`selector` + `port`, through a headless Service the operator owns) or any
//! `tcp://HOST:PORT` (`endpoint`), with `addresses: all` (every address the name resolves to,
//! followed by DNS; the default) or `first` (libzmq's one address).
//!
//! ```yaml
//! spec:
//!   backend:
//!     type: DEALER
//!     connect:
//!       - selector: {matchLabels: {app: worker}}
//!         port: 6000
//!       - service: legacy-workers
//!         port: 6000
//!         addresses: first
//!       - endpoint: tcp://workers.example.com:6000
//! ```
//!
//! The rules of one entry are CEL rules on the entry's schema, rendered here beside
//! [`ConnectTarget::validate`] from the same words; the rules that tie `connect` to the rest of
//! its socket (a socket binds or connects, CURVE clients) are in `cel.rs` and `manifest.rs`.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::schema_rule::{add_rules, cel_rule};

pub use crate::defaults::{DEFAULT_CONNECT_ADDRESSES, MAX_CONNECT_TARGETS, MAX_SELECTOR_LABELS};
use crate::endpoint::{Direction, Endpoint};
use crate::error::SocketSpecError;

/// Which of the addresses a name resolves to a socket connects to: `all` (the default) or
/// `first`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AddressMode {
    /// Every address (A and AAAA), one connection each, re-resolved as pods come and go.
    #[default]
    All,
    /// The first address that accepts a connection, kept (libzmq's behaviour).
    First,
}

impl AddressMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            AddressMode::All => "all",
            AddressMode::First => "first",
        }
    }
}

/// Pods chosen by their labels: every label given must be equal (a Service's selector).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = selector_rules)]
pub struct ConnectSelector {
    /// Labels the pods carry, each with this value. Only ready pods are connected to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_SELECTOR_LABELS))]
    pub match_labels: BTreeMap<String, String>,
}

impl fmt::Display for ConnectSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let labels: Vec<String> =
            self.match_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.write_str(&labels.join(","))
    }
}

/// One place a socket connects to: exactly one of `service`, `selector` and `endpoint`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = target_rules)]
pub struct ConnectTarget {
    /// A Service of the object's namespace, by name: `tcp://<service>.<namespace>.svc:<port>`.
    /// A headless Service's name lists every ready pod behind it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = SERVICE_NAME_PATTERN))]
    pub service: Option<String>,
    /// Pods of the object's namespace chosen by label: the operator keeps a headless Service
    /// with this selector (only ready pods) and the proxy follows its DNS name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<ConnectSelector>,
    /// Any address, as `tcp://HOST:PORT` (a host name or an IP literal, IPv6 in brackets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_ENDPOINT_LEN))]
    pub endpoint: Option<String>,
    /// The port the Service's or the pods' sockets bind (with `service` or `selector` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// `all` (default): every address the name resolves to, one connection each, followed as
    /// it changes; `first`: the first address that answers, as libzmq connects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<AddressMode>,
}

/// Longest `endpoint`: `tcp://`, a 253-character host name, `:` and five digits.
pub const MAX_ENDPOINT_LEN: usize = 6 + 253 + 6;
/// A Service name: a DNS-1035 label.
pub const SERVICE_NAME_PATTERN: &str = r"^[a-z]([-a-z0-9]*[a-z0-9])?$";
/// `tcp://HOST:PORT` with a host name, an IPv4 literal or a bracketed IPv6 literal, and a port
/// of 1-65535 (RE2, as the API server's CEL `matches` reads it).
pub const ENDPOINT_PATTERN: &str = r"^tcp://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?):([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$";

/// The words of every refusal of a connect entry, shared by the Rust checks and the CEL rules.
pub mod words {
    pub const EXACTLY_ONE: &str = "exactly one of service, selector and endpoint: each connect entry names one Service, one set of pods or one address";
    pub const PORT_REQUIRED: &str =
        "port is required with service or selector: the port their sockets bind (1-65535)";
    pub const PORT_WITH_ENDPOINT: &str =
        "port must not be given with endpoint: the endpoint carries its own (tcp://HOST:PORT)";
    pub const ENDPOINT_FORM: &str = "endpoint must be tcp://HOST:PORT: a host name, an IPv4 address or an IPv6 address in brackets, and a port of 1-65535";
    pub const SELECTOR_EMPTY: &str = "selector.matchLabels needs at least one label: an empty selector would choose every pod of the namespace";
}

/// The CEL rules of one connect entry (`self` is the entry).
pub fn target_cel_rules() -> Vec<Value> {
    let count =
        "(has(self.service) ? 1 : 0) + (has(self.selector) ? 1 : 0) + (has(self.endpoint) ? 1 : 0)";
    vec![
        cel_rule(&format!("{count} == 1"), words::EXACTLY_ONE, None, "FieldValueInvalid"),
        cel_rule(
            "!(has(self.service) || has(self.selector)) || has(self.port)",
            words::PORT_REQUIRED,
            Some(".port"),
            "FieldValueRequired",
        ),
        cel_rule(
            "!has(self.endpoint) || !has(self.port)",
            words::PORT_WITH_ENDPOINT,
            Some(".port"),
            "FieldValueForbidden",
        ),
        cel_rule(
            &format!(
                "!has(self.endpoint) || self.endpoint.matches('{}')",
                ENDPOINT_PATTERN.replace('\\', "\\\\")
            ),
            words::ENDPOINT_FORM,
            Some(".endpoint"),
            "FieldValueInvalid",
        ),
    ]
}

/// The CEL rule of a selector (`self` is the selector).
pub fn selector_cel_rules() -> Vec<Value> {
    vec![cel_rule(
        "has(self.matchLabels) && size(self.matchLabels) > 0",
        words::SELECTOR_EMPTY,
        Some(".matchLabels"),
        "FieldValueRequired",
    )]
}

fn target_rules(schema: &mut schemars::Schema) {
    add_rules(schema, target_cel_rules());
}

fn selector_rules(schema: &mut schemars::Schema) {
    add_rules(schema, selector_cel_rules());
}

/// What a connect entry names, once checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    Service { name: &'a str, port: u16 },
    Selector { selector: &'a ConnectSelector, port: u16 },
    Endpoint(Endpoint),
}

impl ConnectTarget {
    /// The addresses mode, defaulted.
    pub fn address_mode(&self) -> AddressMode {
        self.addresses.unwrap_or_default()
    }

    /// Every rule of the entry's schema and CEL again; `prefix` is where the entry sits
    /// (`spec.backend.connect[0]`), so errors name the field.
    pub fn validate(&self, prefix: &str) -> Result<Target<'_>, SocketSpecError> {
        let fail = |field: &str, reason: &str| SocketSpecError {
            field: if field.is_empty() { prefix.to_string() } else { format!("{prefix}.{field}") },
            reason: reason.to_string(),
        };
        let given = [self.service.is_some(), self.selector.is_some(), self.endpoint.is_some()];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(fail("", words::EXACTLY_ONE));
        }
        let port = || -> Result<u16, SocketSpecError> {
            let p = self.port.ok_or_else(|| fail("port", words::PORT_REQUIRED))?;
            u16::try_from(p)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| fail("port", &format!("port {p} is outside 1-65535")))
        };
        if let Some(name) = &self.service {
            if !is_service_name(name) {
                return Err(fail("service", "not a Service name (a DNS-1035 label)"));
            }
            return Ok(Target::Service { name, port: port()? });
        }
        if let Some(selector) = &self.selector {
            if selector.match_labels.is_empty() {
                return Err(fail("selector.matchLabels", words::SELECTOR_EMPTY));
            }
            if selector.match_labels.len() > MAX_SELECTOR_LABELS {
                return Err(fail(
                    "selector.matchLabels",
                    &format!("at most {MAX_SELECTOR_LABELS} labels"),
                ));
            }
            return Ok(Target::Selector { selector, port: port()? });
        }
        let endpoint = self.endpoint.as_deref().unwrap_or_default();
        if self.port.is_some() {
            return Err(fail("port", words::PORT_WITH_ENDPOINT));
        }
        match Endpoint::parse(endpoint, Direction::Connect) {
            Ok(ep) if endpoint.len() <= MAX_ENDPOINT_LEN && is_endpoint_host(&ep.host) => {
                Ok(Target::Endpoint(ep))
            }
            _ => Err(fail("endpoint", words::ENDPOINT_FORM)),
        }
    }
}

/// `name` matches [`SERVICE_NAME_PATTERN`] within 63 characters.
pub fn is_service_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1] != b'-'
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// The hosts [`ENDPOINT_PATTERN`] accepts: an IPv6 literal (parsed already), or letters,
/// digits, `-` and `.` neither starting nor ending with `-` or `.`.
fn is_endpoint_host(host: &str) -> bool {
    if host.contains(':') {
        return true;
    }
    let b = host.as_bytes();
    let edge = |c: u8| c.is_ascii_alphanumeric();
    !b.is_empty()
        && edge(b[0])
        && edge(b[b.len() - 1])
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'.')
}

/// A connect list's own rules: at most [`MAX_CONNECT_TARGETS`] entries, each valid.
pub fn validate_list<'a>(
    targets: &'a [ConnectTarget],
    prefix: &str,
) -> Result<Vec<Target<'a>>, SocketSpecError> {
    if targets.len() > MAX_CONNECT_TARGETS {
        return Err(SocketSpecError {
            field: prefix.to_string(),
            reason: format!("must have at most {MAX_CONNECT_TARGETS} items"),
        });
    }
    targets.iter().enumerate().map(|(i, t)| t.validate(&format!("{prefix}[{i}]"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(yaml: &str) -> ConnectTarget {
        serde_yaml::from_str(yaml).expect("yaml")
    }

    fn refusal(yaml: &str) -> (String, String) {
        match target(yaml).validate("spec.backend.connect[0]") {
            Ok(t) => panic!("accepted {t:?}"),
            Err(e) => (e.field, e.reason),
        }
    }

    #[test]
    fn each_form_is_accepted_and_defaults_to_every_address() {
        let t = target("{service: workers, port: 6000}");
        assert_eq!(t.validate("x"), Ok(Target::Service { name: "workers", port: 6000 }));
        assert_eq!(t.address_mode(), AddressMode::All);
        let t = target("{selector: {matchLabels: {app: worker}}, port: 6000, addresses: first}");
        assert!(matches!(t.validate("x"), Ok(Target::Selector { port: 6000, .. })));
        assert_eq!(t.address_mode(), AddressMode::First);
        let t = target("{endpoint: 'tcp://[::1]:7000'}");
        assert!(matches!(t.validate("x"), Ok(Target::Endpoint(ep)) if ep.port == 7000));
    }

    #[test]
    fn refusals_name_the_field_with_the_cel_words() {
        let at = |f: &str| format!("spec.backend.connect[0]{f}");
        let cases = [
            ("{service: a, endpoint: 'tcp://b:1', port: 1}", at(""), words::EXACTLY_ONE),
            ("{port: 1}", at(""), words::EXACTLY_ONE),
            ("{service: a}", at(".port"), words::PORT_REQUIRED),
            ("{selector: {matchLabels: {a: b}}}", at(".port"), words::PORT_REQUIRED),
            ("{endpoint: 'tcp://b:1', port: 1}", at(".port"), words::PORT_WITH_ENDPOINT),
            ("{endpoint: 'b:1'}", at(".endpoint"), words::ENDPOINT_FORM),
            ("{endpoint: 'tcp://*:1'}", at(".endpoint"), words::ENDPOINT_FORM),
            ("{endpoint: 'tcp://b:0'}", at(".endpoint"), words::ENDPOINT_FORM),
            ("{endpoint: 'tcp://-b:1'}", at(".endpoint"), words::ENDPOINT_FORM),
            ("{selector: {}, port: 1}", at(".selector.matchLabels"), words::SELECTOR_EMPTY),
        ];
        for (yaml, field, reason) in cases {
            assert_eq!(refusal(yaml), (field, reason.to_string()), "{yaml}");
        }
        let (field, reason) = refusal("{service: Workers, port: 1}");
        assert_eq!(field, at(".service"), "{reason}");
    }

    #[test]
    fn the_endpoint_pattern_agrees_with_the_rust_check() {
        // The rule's regex, checked against the cases above by hand-written equivalents: a
        // pattern that stopped matching a valid endpoint would refuse at admission what the
        // proxy runs.
        for ok in ["tcp://a:1", "tcp://10.0.0.1:65535", "tcp://[fe80::1]:6000", "tcp://a.b-c:80"] {
            assert!(target(&format!("{{endpoint: '{ok}'}}")).validate("x").is_ok(), "{ok}");
        }
        assert!(ENDPOINT_PATTERN.contains("6553[0-5]"));
        assert_eq!(AddressMode::default().as_str(), DEFAULT_CONNECT_ADDRESSES);
    }

    #[test]
    fn a_list_is_bounded() {
        let many = vec![target("{service: a, port: 1}"); MAX_CONNECT_TARGETS + 1];
        let e = validate_list(&many, "spec.backend.connect").err().map(|e| e.field);
        assert_eq!(e.as_deref(), Some("spec.backend.connect"));
    }
}
