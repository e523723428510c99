//! The socket vocabulary of a proxy: socket types, which frontend/backend pairs the proxy
//! supports, which capture types it accepts, the words of both refusals, and the [`Role`] each
//! socket plays. The operator's CRD and its CEL rules (`cel.rs`) are derived from these, so a
//! rule is never written twice.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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

/// The words of [`pair_refusal`], shared with its CEL rendering in `cel.rs`.
pub(crate) fn pair_refusal_text(pair: &str) -> String {
    let allowed: Vec<String> = allowed_pairs().map(|(a, b)| format!("{a}/{b}")).collect();
    format!(
        "unsupported socket pair {pair} (frontend/backend); allowed pairs: {}",
        allowed.join(", ")
    )
}

pub(crate) fn list(types: &[SocketType]) -> String {
    types.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
}

/// The part a socket plays in a proxy. Its word is the one flags (`--frontend-type`), manifest
/// fields (`spec.frontend`), metric labels and log lines use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Frontend,
    Backend,
    Capture,
    Control,
}

impl Role {
    /// Every role, in the order a manifest lists the sockets.
    pub const ALL: [Role; 4] = [Role::Frontend, Role::Backend, Role::Capture, Role::Control];
    /// The sockets that carry messages (every role but the control socket).
    pub const DATA: [Role; 3] = [Role::Frontend, Role::Backend, Role::Capture];

    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Frontend => "frontend",
            Role::Backend => "backend",
            Role::Capture => "capture",
            Role::Control => "control",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
    fn roles_are_spelled_as_flags_and_manifests_spell_them() {
        let words: Vec<String> = Role::ALL.iter().map(Role::to_string).collect();
        assert_eq!(words, ["frontend", "backend", "capture", "control"]);
        assert!(!Role::DATA.contains(&Role::Control));
    }
}
