//! The socket vocabulary of a proxy, owned here once: socket types, which frontend/backend pairs
//! the proxy supports, which capture types it accepts, and the socket section of a `ZmqProxy`
//! manifest. The operator reuses these types as the CRD's types and derives its CEL rules from
//! [`allowed_pairs`] and [`CAPTURE_TYPES`], so a rule is never written twice.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A ZeroMQ socket type, spelled as in libzmq (`ZMQ_ROUTER` is `ROUTER`).
///
/// PAIR is listed because `zmq_proxy(3)` names it for the capture socket; it is refused with a
/// reason (the `zeromq` crate has no PAIR socket) rather than being an unknown word.
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
            "capture type PAIR is not supported: the zeromq crate has no PAIR socket; use one of {}",
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
    let allowed: Vec<String> = allowed_pairs().map(|(a, b)| format!("{a}/{b}")).collect();
    Some(format!(
        "unsupported socket pair {frontend}/{backend} (frontend/backend); allowed pairs: {}",
        allowed.join(", ")
    ))
}

fn list(types: &[SocketType]) -> String {
    types.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
}

/// One socket of a manifest: its type and the TCP port it binds on all interfaces.
///
/// The port is an `i32` with an explicit range rather than a `u16`, because a `u16` would put
/// `format: uint16` in the CRD schema, which the API server does not know.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SocketSpec {
    #[serde(rename = "type")]
    pub socket_type: SocketType,
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

/// The steering socket of a manifest (`zmq_proxy_steerable`'s control socket, a REP).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ControlSpec {
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

/// The socket section of a `ZmqProxy` manifest's `spec`. The operator flattens it into the
/// CRD's spec; `zmq-proxy --config` reads it from the same YAML a user applies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxySockets {
    pub frontend: SocketSpec,
    pub backend: SocketSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<SocketSpec>,
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
                    reason: format!(
                        "port {port} is already used by {other}; ports must be distinct"
                    ),
                });
            }
        }
        Ok(())
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
            frontend: SocketSpec { socket_type: SocketType::Pull, port: 5000 },
            backend: SocketSpec { socket_type: SocketType::Push, port: 5001 },
            capture: Some(SocketSpec { socket_type: SocketType::Pub, port: 5000 }),
            control: None,
        };
        let err = s.validate("spec").err().map(|e| e.field);
        assert_eq!(err.as_deref(), Some("spec.capture.port"));
    }

    #[test]
    fn out_of_range_port_is_refused() {
        let s = ProxySockets {
            frontend: SocketSpec { socket_type: SocketType::Pull, port: 0 },
            backend: SocketSpec { socket_type: SocketType::Push, port: 5001 },
            capture: None,
            control: None,
        };
        assert_eq!(
            s.validate("spec").err().map(|e| e.field).as_deref(),
            Some("spec.frontend.port")
        );
    }
}
