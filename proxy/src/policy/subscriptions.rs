//! Subscription refcounting for the XSUB/XPUB forwarder, as libzmq's XPUB does it: a topic is
//! forwarded upstream on its first subscriber and cancelled upstream when its last subscriber
//! unsubscribes or disconnects. Each subscriber holds a topic at most once (a repeated
//! subscribe from the same subscriber is not a second reference).

use std::collections::{HashMap, HashSet};

use bytes::Bytes;

pub type PeerId = u64;

/// A table that emptied gives its memory back: hash tables keep their largest capacity, so
/// without this a subscriber that held 100 000 topics would leave their slots behind. Shrinks
/// only below a quarter of the capacity, so the cost stays a constant per removal.
pub(crate) trait Shrink {
    fn shrink_when_sparse(&mut self);
}

impl<K: Eq + std::hash::Hash> Shrink for HashSet<K> {
    fn shrink_when_sparse(&mut self) {
        if self.capacity() > 64 && self.len() < self.capacity() / 4 {
            self.shrink_to_fit();
        }
    }
}

impl<K: Eq + std::hash::Hash, V> Shrink for HashMap<K, V> {
    fn shrink_when_sparse(&mut self) {
        if self.capacity() > 64 && self.len() < self.capacity() / 4 {
            self.shrink_to_fit();
        }
    }
}

#[derive(Debug, Default)]
pub struct SubscriptionTable {
    refs: HashMap<Bytes, usize>,
    by_peer: HashMap<PeerId, HashSet<Bytes>>,
}

impl SubscriptionTable {
    /// Records a subscribe; true when it is the topic's first subscriber (forward upstream).
    pub fn subscribe(&mut self, peer: PeerId, topic: Bytes) -> bool {
        if !self.by_peer.entry(peer).or_default().insert(topic.clone()) {
            return false;
        }
        let n = self.refs.entry(topic).or_insert(0);
        *n += 1;
        *n == 1
    }

    /// Records an unsubscribe; true when it removed the topic's last subscriber (forward
    /// the cancel upstream). An unsubscribe for a topic the peer does not hold is ignored.
    pub fn unsubscribe(&mut self, peer: PeerId, topic: &Bytes) -> bool {
        let held = self.by_peer.get_mut(&peer).is_some_and(|set| {
            let removed = set.remove(topic);
            set.shrink_when_sparse();
            removed
        });
        held && self.release(topic)
    }

    /// Forgets a disconnected subscriber; returns the topics nobody holds any more.
    pub fn remove_peer(&mut self, peer: PeerId) -> Vec<Bytes> {
        let Some(topics) = self.by_peer.remove(&peer) else { return Vec::new() };
        let gone = topics.into_iter().filter(|t| self.release(t)).collect();
        self.by_peer.shrink_when_sparse();
        gone
    }

    fn release(&mut self, topic: &Bytes) -> bool {
        match self.refs.get_mut(topic) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                self.refs.remove(topic);
                self.refs.shrink_when_sparse();
                true
            }
            None => false,
        }
    }

    /// Whether any subscriber holds `topic`.
    pub fn holds(&self, topic: &[u8]) -> bool {
        self.refs.contains_key(topic)
    }

    /// Every topic some subscriber holds.
    pub fn topics(&self) -> Vec<Bytes> {
        self.refs.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn first_subscribe_and_last_unsubscribe_are_forwarded() {
        let mut s = SubscriptionTable::default();
        assert!(s.subscribe(1, t("a")));
        assert!(!s.subscribe(2, t("a")));
        assert!(!s.subscribe(1, t("a")), "a repeat is not a second reference");
        assert!(!s.unsubscribe(1, &t("a")));
        assert!(!s.unsubscribe(1, &t("a")), "peer 1 no longer holds a");
        assert!(s.holds(b"a"));
        assert!(s.unsubscribe(2, &t("a")));
        assert!(!s.holds(b"a"));
    }

    #[test]
    fn disconnect_releases_only_topics_nobody_else_holds() {
        let mut s = SubscriptionTable::default();
        s.subscribe(1, t("a"));
        s.subscribe(1, t("b"));
        s.subscribe(2, t("b"));
        assert_eq!(s.remove_peer(1), vec![t("a")]);
        assert_eq!(s.remove_peer(2), vec![t("b")]);
        assert!(s.remove_peer(3).is_empty());
    }
}
