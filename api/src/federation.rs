//! Which proxies federate: the patterns whose replicas link to each other and act as one proxy
//! (docs/federation.md). The proxy refuses `--federation-bind` for any other pattern, and the
//! operator runs `replicas > 1` as a federation for these patterns only, so both read this list.

use crate::socket::SocketType;

/// The federated patterns, frontend type first, as the proxy names them in its HELLO and on
/// `/federation`; either way round counts (an XPUB frontend with an XSUB backend is XSUB/XPUB).
pub const FEDERATED_PATTERNS: [(SocketType, SocketType, &str); 3] = [
    (SocketType::Xsub, SocketType::Xpub, "XSUB/XPUB"),
    (SocketType::Pull, SocketType::Push, "PULL/PUSH"),
    (SocketType::Router, SocketType::Dealer, "ROUTER/DEALER"),
];

/// The federated pattern of a proxy with these sockets (`"XSUB/XPUB"`, `"PULL/PUSH"`,
/// `"ROUTER/DEALER"`), or `None` when its replicas cannot federate.
pub fn federated_pattern(frontend: SocketType, backend: SocketType) -> Option<&'static str> {
    FEDERATED_PATTERNS
        .iter()
        .find(|(a, b, _)| (*a, *b) == (frontend, backend) || (*b, *a) == (frontend, backend))
        .map(|(_, _, name)| *name)
}

/// Every `FRONTEND/BACKEND` spelling of a federated pattern, both orders: what a CEL rule
/// compares `frontend.type + '/' + backend.type` with.
pub fn federated_pairs() -> impl Iterator<Item = String> {
    FEDERATED_PATTERNS.into_iter().flat_map(|(a, b, _)| [format!("{a}/{b}"), format!("{b}/{a}")])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_patterns_federate_either_way_round_and_no_other() {
        use SocketType::*;
        assert_eq!(federated_pattern(Xsub, Xpub), Some("XSUB/XPUB"));
        assert_eq!(federated_pattern(Xpub, Xsub), Some("XSUB/XPUB"));
        assert_eq!(federated_pattern(Push, Pull), Some("PULL/PUSH"));
        assert_eq!(federated_pattern(Dealer, Router), Some("ROUTER/DEALER"));
        for (a, b) in [(Sub, Pub), (Pair, Pair), (Router, Router), (Rep, Req), (Xsub, Pub)] {
            assert_eq!(federated_pattern(a, b), None, "{a}/{b}");
        }
        assert_eq!(federated_pairs().count(), 6);
        assert!(federated_pairs().any(|p| p == "DEALER/ROUTER"));
    }
}
