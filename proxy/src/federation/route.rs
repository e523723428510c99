//! The routing decisions of a federated replica, as pure functions over plain data: which
//! replicas a publication goes to, and what a subscription change means for the other replicas
//! and for this replica's own publishers.
//!
//! The one rule behind all of them is NATS's one-hop rule: what a replica reads from its own
//! peers may go to other replicas; what it reads from another replica goes to its own peers
//! only. A message therefore crosses at most one link, so no topology of links can loop it or
//! deliver it twice.

use bytes::Bytes;

use crate::policy::subscriptions::{PeerId, SubscriptionTable};

/// An inbound link connection: the announcements it carried are held under this id, so a
/// reconnecting replica's old and new connections never release each other's topics.
pub type LinkId = u64;

/// Where a message came from, as seen by the replica handling it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Read from one of this replica's own peers.
    Local,
    /// Read from a link: it entered the federation at another replica.
    Replica,
}

impl Origin {
    /// The one-hop rule.
    pub fn may_cross_a_link(self) -> bool {
        self == Origin::Local
    }
}

/// Whether a replica that announced `topics` wants a publication whose first frame is `first`
/// (ZeroMQ's prefix match).
pub fn wants(topics: &[Bytes], first: &[u8]) -> bool {
    topics.iter().any(|t| first.starts_with(t))
}

/// Indexes of the replicas a publication goes to: none for one that came from a replica,
/// otherwise every replica whose announced topics match it.
pub fn publication_targets(
    origin: Origin,
    first: &[u8],
    replicas: &[&[Bytes]],
    out: &mut Vec<usize>,
) {
    out.clear();
    if !origin.may_cross_a_link() {
        return;
    }
    out.extend(replicas.iter().enumerate().filter(|(_, t)| wants(t, first)).map(|(i, _)| i));
}

/// What one subscription change asks for: a message to every other replica (`announce`) and a
/// (un)subscribe upstream to this replica's publishers (`upstream`), each `(subscribe, topic)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    pub announce: Option<(bool, Bytes)>,
    pub upstream: Option<(bool, Bytes)>,
}

/// The subscriptions a federated XPUB/XSUB replica holds: its own subscribers' (refcounted per
/// subscriber, as without federation) and each link's announcements. Upstream, the publishers
/// are subscribed to the union; the other replicas are told only the replica's own.
#[derive(Debug, Default)]
pub struct Interest {
    local: SubscriptionTable,
    /// The links' announcements, refcounted per link as subscribers' are per subscriber.
    remote: SubscriptionTable,
}

impl Interest {
    /// A subscriber of this replica subscribed (or unsubscribed).
    pub fn local(&mut self, peer: PeerId, subscribe: bool, topic: Bytes) -> Effects {
        let changed = if subscribe {
            self.local.subscribe(peer, topic.clone())
        } else {
            self.local.unsubscribe(peer, &topic)
        };
        if !changed {
            return Effects::default();
        }
        let upstream = (!self.remote.holds(&topic)).then(|| (subscribe, topic.clone()));
        Effects { announce: Some((subscribe, topic)), upstream }
    }

    /// A subscriber of this replica left: its topics nobody else here holds are cancelled.
    pub fn local_left(&mut self, peer: PeerId) -> Vec<Effects> {
        let released = self.local.remove_peer(peer);
        released
            .into_iter()
            .map(|t| {
                let upstream = (!self.remote.holds(&t)).then(|| (false, t.clone()));
                Effects { announce: Some((false, t)), upstream }
            })
            .collect()
    }

    /// A replica announced (or cancelled) a subscription of its own subscribers: it changes
    /// what this replica's publishers are asked for, and is never announced further.
    pub fn remote(&mut self, link: LinkId, subscribe: bool, topic: Bytes) -> Option<(bool, Bytes)> {
        let first_or_last = if subscribe {
            self.remote.subscribe(link, topic.clone())
        } else {
            self.remote.unsubscribe(link, &topic)
        };
        (first_or_last && !self.local.holds(&topic)).then_some((subscribe, topic))
    }

    /// A link connection ended: what it announced is released; returns the cancels upstream.
    pub fn link_gone(&mut self, link: LinkId) -> Vec<Bytes> {
        let released = self.remote.remove_peer(link);
        released.into_iter().filter(|t| !self.local.holds(t)).collect()
    }

    /// The topics this replica's own subscribers hold: what a replica that just linked to this
    /// one is told first.
    pub fn local_topics(&self) -> Vec<Bytes> {
        self.local.topics()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    fn sub(s: &'static str) -> Option<(bool, Bytes)> {
        Some((true, t(s)))
    }

    fn cancel(s: &'static str) -> Option<(bool, Bytes)> {
        Some((false, t(s)))
    }

    /// A publication read from a replica never goes to another replica, whatever they
    /// announced: with it, a mesh cannot loop or duplicate a message.
    #[test]
    fn only_local_publications_cross_a_link_and_only_to_replicas_that_want_them() {
        let (a, b, none) = ([t("wea")], [t("x"), t("weather.")], []);
        let replicas: [&[Bytes]; 3] = [&a, &b, &none];
        let mut out = Vec::new();
        publication_targets(Origin::Local, b"weather.oslo", &replicas, &mut out);
        assert_eq!(out, [0, 1]);
        publication_targets(Origin::Local, b"news", &replicas, &mut out);
        assert!(out.is_empty());
        publication_targets(Origin::Replica, b"weather.oslo", &replicas, &mut out);
        assert!(out.is_empty(), "the one-hop rule");
        let all = [Bytes::new()];
        publication_targets(Origin::Local, b"", &[&all], &mut out);
        assert_eq!(out, [0], "the empty topic matches everything");
    }

    #[test]
    fn own_subscriptions_are_announced_once_and_asked_upstream_unless_a_replica_already_did() {
        let mut i = Interest::default();
        assert_eq!(i.local(1, true, t("a")), Effects { announce: sub("a"), upstream: sub("a") });
        assert_eq!(i.local(2, true, t("a")), Effects::default(), "not the first subscriber");
        assert_eq!(i.remote(100, true, t("b")), sub("b"), "a replica's topic goes upstream");
        assert_eq!(i.remote(101, true, t("b")), None, "once");
        let e = i.local(1, true, t("b"));
        assert_eq!(e, Effects { announce: sub("b"), upstream: None }, "upstream already has b");
        assert_eq!(i.local(1, false, t("b")), Effects { announce: cancel("b"), upstream: None });
        assert_eq!(i.remote(100, false, t("b")), None, "link 101 still holds b");
        assert_eq!(i.remote(101, false, t("b")), cancel("b"));
        assert_eq!(i.local(1, false, t("a")), Effects::default(), "subscriber 2 holds a");
        assert_eq!(i.local_topics(), vec![t("a")]);
    }

    /// What a replica announced is never announced on: only `upstream` can come of it.
    #[test]
    fn a_replicas_subscription_is_never_announced_to_other_replicas() {
        let mut i = Interest::default();
        assert_eq!(i.remote(7, true, t("x")), sub("x"));
        assert!(i.local_topics().is_empty());
        assert_eq!(i.remote(7, true, t("x")), None, "a repeat is no second reference");
        assert_eq!(i.remote(7, false, t("x")), cancel("x"));
        assert_eq!(i.remote(7, false, t("x")), None, "nothing left to cancel");
    }

    #[test]
    fn a_leaving_subscriber_and_a_closed_link_release_only_what_nobody_else_holds() {
        let mut i = Interest::default();
        i.local(1, true, t("a"));
        i.local(1, true, t("b"));
        i.remote(9, true, t("b"));
        i.remote(9, true, t("c"));
        i.remote(8, true, t("c"));
        let left = i.local_left(1);
        let mut announced: Vec<_> = left.iter().map(|e| e.announce.clone()).collect();
        announced.sort();
        assert_eq!(announced, [cancel("a"), cancel("b")]);
        let upstream: Vec<_> = left.iter().filter_map(|e| e.upstream.clone()).collect();
        assert_eq!(upstream, [(false, t("a"))], "link 9 still wants b");
        let mut gone = i.link_gone(9);
        gone.sort();
        assert_eq!(gone, [t("b")], "link 8 still wants c");
        assert_eq!(i.link_gone(8), [t("c")]);
        assert!(i.link_gone(8).is_empty());
    }
}
