//! The proxy's counters, shared between the pumps that update them and whoever reports them
//! (the "proxy stopped" log line, the STATISTICS control command and /metrics). Traffic is
//! counted twice: in messages (a multipart message once) and in frames; bytes are payload
//! bytes. Drops and undelivered traffic are counted in frames. The log line's and STATISTICS'
//! `*_msgs` values are the frame counts: those names are their contract.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::stream::PeerKey;
use crate::wire::zmtp::CLOSED_BEFORE_GREETING;

/// Traffic of one proxy socket (frontend or backend), as the proxy sees it.
#[derive(Debug, Default)]
pub struct SocketCounters {
    /// Messages read, a multipart message once.
    pub recv_messages: AtomicU64,
    pub recv_frames: AtomicU64,
    pub recv_bytes: AtomicU64,
    /// Messages handed to peers, a multipart message once.
    pub sent_messages: AtomicU64,
    pub sent_frames: AtomicU64,
    pub sent_bytes: AtomicU64,
}

impl SocketCounters {
    pub fn add_recv(&self, messages: u64, frames: u64, bytes: u64) {
        self.recv_messages.fetch_add(messages, Relaxed);
        self.recv_frames.fetch_add(frames, Relaxed);
        self.recv_bytes.fetch_add(bytes, Relaxed);
    }

    pub fn add_sent(&self, messages: u64, frames: u64, bytes: u64) {
        self.sent_messages.fetch_add(messages, Relaxed);
        self.sent_frames.fetch_add(frames, Relaxed);
        self.sent_bytes.fetch_add(bytes, Relaxed);
    }

    /// Un-counts messages that were queued (and so counted as sent) but never written.
    pub fn take_back_sent(&self, messages: u64, frames: u64, bytes: u64) {
        let sub = |c: &AtomicU64, n: u64| {
            let _ = c.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(n)));
        };
        sub(&self.sent_messages, messages);
        sub(&self.sent_frames, frames);
        sub(&self.sent_bytes, bytes);
    }
}

/// Why a message was dropped on purpose (each counted in frames).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// A ROUTER reply whose routing id names no connected peer (the client vanished).
    Unroutable,
    /// The destination peer's queue was at its high-water mark (slow client or subscriber).
    PeerFull,
    /// A peer's connection died with messages still queued to it that cannot be re-routed
    /// (a reply for that client, a publication for that subscriber).
    PeerGone,
    /// A message the destination socket type cannot carry (e.g. a ROUTER reply with no
    /// routing-id frame).
    Invalid,
    /// A capture copy with no capture peer able to take it.
    Capture,
    /// Requests written to a DEALER's worker that a heartbeat then dropped before it answered
    /// them (already counted as sent, so outside `dropped_msgs`).
    Unanswered,
    /// The frames of an unfinished message whose peer went over its memory budget (too many
    /// frames, or past `--max-memory`) and was disconnected (never received whole, so outside
    /// `dropped_msgs`).
    OverBudget,
}

#[derive(Debug, Default)]
pub struct Counters {
    pub frontend: SocketCounters,
    pub backend: SocketCounters,
    /// Capture copies written, in frames (`capture_sent_msgs` of the log line) and messages.
    pub capture_sent_msgs: AtomicU64,
    pub capture_sent_messages: AtomicU64,
    pub capture_sent_bytes: AtomicU64,
    pub dropped_unroutable: AtomicU64,
    pub dropped_peer_full: AtomicU64,
    pub dropped_peer_gone: AtomicU64,
    pub dropped_invalid: AtomicU64,
    pub dropped_capture: AtomicU64,
    pub dropped_unanswered: AtomicU64,
    pub dropped_over_budget: AtomicU64,
    /// Read but not delivered when the drain timeout expired (or at a second signal).
    pub undelivered_msgs: AtomicU64,
    /// Connections refused during the handshake (garbage, wrong socket type, timeout, a CURVE
    /// refusal), or dropped afterwards by the security mechanism (a CURVE MESSAGE that fails
    /// authentication or repeats a nonce): the sum of [`Counters::handshake_failures_by`].
    pub handshake_failures: AtomicU64,
    /// The same, by (socket, mechanism, reason): the labels of
    /// `zmq_proxy_handshake_failures_total`.
    handshake_by: Mutex<BTreeMap<(&'static str, &'static str, &'static str), u64>>,
    /// Connections dropped after the handshake for a protocol violation (oversized message,
    /// malformed command).
    pub protocol_errors: AtomicU64,
    /// Connections dropped by heartbeats (silent past our timeout or the peer's own TTL): the
    /// sum of [`Counters::heartbeat_timeouts_by`].
    pub heartbeat_timeouts: AtomicU64,
    /// The same, by (socket, reason): the labels of `zmq_proxy_heartbeat_timeouts_total`.
    heartbeat_by: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Connections that closed before sending a byte of the ZMTP greeting (a port check, a TCP
    /// health probe), by socket: no handshake was attempted, so none failed.
    closed_before_greeting_by: Mutex<BTreeMap<&'static str, u64>>,
    /// Connections closed on accept for want of room, by (socket, reason): the labels of
    /// `zmq_proxy_connections_refused_total` (reason `fd_limit`, see `engine::fd_room`).
    refused_by: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

/// A point-in-time copy of [`Counters`], with the contract's names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub frontend_recv_msgs: u64,
    pub frontend_recv_bytes: u64,
    pub frontend_sent_msgs: u64,
    pub frontend_sent_bytes: u64,
    pub backend_recv_msgs: u64,
    pub backend_recv_bytes: u64,
    pub backend_sent_msgs: u64,
    pub backend_sent_bytes: u64,
    pub capture_sent_msgs: u64,
    pub capture_sent_bytes: u64,
    /// Messages (a multipart message once); the `*_msgs` fields above count frames.
    pub frontend_recv_messages: u64,
    pub frontend_sent_messages: u64,
    pub backend_recv_messages: u64,
    pub backend_sent_messages: u64,
    pub capture_sent_messages: u64,
    pub dropped_msgs: u64,
    pub dropped_unroutable: u64,
    pub dropped_peer_full: u64,
    pub dropped_peer_gone: u64,
    pub dropped_invalid: u64,
    pub dropped_capture: u64,
    pub dropped_unanswered: u64,
    pub dropped_over_budget: u64,
    pub undelivered_msgs: u64,
    pub handshake_failures: u64,
    pub protocol_errors: u64,
    pub heartbeat_timeouts: u64,
}

impl Counters {
    /// Counts one refused connection of `socket` (frontend, backend, capture, control). A
    /// connection that closed before its greeting (reason `closed_before_greeting`) is counted
    /// on its own instead: it never tried a handshake.
    pub fn handshake_failed(
        &self,
        socket: &'static str,
        mechanism: &'static str,
        reason: &'static str,
    ) {
        if reason == CLOSED_BEFORE_GREETING {
            let mut m = self.closed_before_greeting_by.lock().unwrap_or_else(|p| p.into_inner());
            *m.entry(socket).or_insert(0) += 1;
            return;
        }
        self.handshake_failures.fetch_add(1, Relaxed);
        let mut m = self.handshake_by.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((socket, mechanism, reason)).or_insert(0) += 1;
    }

    /// Counts one connection of `socket` closed on accept (`reason`: fd_limit).
    pub fn connection_refused(&self, socket: &'static str, reason: &'static str) {
        let mut m = self.refused_by.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((socket, reason)).or_insert(0) += 1;
    }

    /// Every (socket, reason) with a connection closed on accept so far, and its count.
    pub fn connections_refused_by(&self) -> Vec<((&'static str, &'static str), u64)> {
        let m = self.refused_by.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Every socket with a connection closed before its greeting so far, and their count.
    pub fn closed_before_greeting_by(&self) -> Vec<(&'static str, u64)> {
        let m = self.closed_before_greeting_by.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Every (socket, mechanism, reason) with a refusal so far, and its count.
    pub fn handshake_failures_by(&self) -> Vec<((&'static str, &'static str, &'static str), u64)> {
        let m = self.handshake_by.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Counts one connection of `socket` dropped by a heartbeat (`reason`: timeout, peer_ttl).
    pub fn heartbeat_expired(&self, socket: &'static str, reason: &'static str) {
        self.heartbeat_timeouts.fetch_add(1, Relaxed);
        let mut m = self.heartbeat_by.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((socket, reason)).or_insert(0) += 1;
    }

    /// Every (socket, reason) with a heartbeat drop so far, and its count.
    pub fn heartbeat_timeouts_by(&self) -> Vec<((&'static str, &'static str), u64)> {
        let m = self.heartbeat_by.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(k, v)| (*k, *v)).collect()
    }

    pub fn dropped(&self, reason: DropReason, frames: u64) {
        let c = match reason {
            DropReason::Unroutable => &self.dropped_unroutable,
            DropReason::PeerFull => &self.dropped_peer_full,
            DropReason::PeerGone => &self.dropped_peer_gone,
            DropReason::Invalid => &self.dropped_invalid,
            DropReason::Capture => &self.dropped_capture,
            DropReason::Unanswered => &self.dropped_unanswered,
            DropReason::OverBudget => &self.dropped_over_budget,
        };
        c.fetch_add(frames, Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let g = |a: &AtomicU64| a.load(Relaxed);
        let mut s = Snapshot {
            frontend_recv_msgs: g(&self.frontend.recv_frames),
            frontend_recv_bytes: g(&self.frontend.recv_bytes),
            frontend_sent_msgs: g(&self.frontend.sent_frames),
            frontend_sent_bytes: g(&self.frontend.sent_bytes),
            backend_recv_msgs: g(&self.backend.recv_frames),
            backend_recv_bytes: g(&self.backend.recv_bytes),
            backend_sent_msgs: g(&self.backend.sent_frames),
            backend_sent_bytes: g(&self.backend.sent_bytes),
            capture_sent_msgs: g(&self.capture_sent_msgs),
            capture_sent_bytes: g(&self.capture_sent_bytes),
            frontend_recv_messages: g(&self.frontend.recv_messages),
            frontend_sent_messages: g(&self.frontend.sent_messages),
            backend_recv_messages: g(&self.backend.recv_messages),
            backend_sent_messages: g(&self.backend.sent_messages),
            capture_sent_messages: g(&self.capture_sent_messages),
            dropped_unroutable: g(&self.dropped_unroutable),
            dropped_peer_full: g(&self.dropped_peer_full),
            dropped_peer_gone: g(&self.dropped_peer_gone),
            dropped_invalid: g(&self.dropped_invalid),
            dropped_capture: g(&self.dropped_capture),
            dropped_unanswered: g(&self.dropped_unanswered),
            dropped_over_budget: g(&self.dropped_over_budget),
            undelivered_msgs: g(&self.undelivered_msgs),
            handshake_failures: g(&self.handshake_failures),
            protocol_errors: g(&self.protocol_errors),
            heartbeat_timeouts: g(&self.heartbeat_timeouts),
            dropped_msgs: 0,
        };
        // Capture copies are not counted as dropped proxy traffic: the message itself went on.
        // Unanswered requests were sent, and an over-budget message was never received whole,
        // so neither belongs in `recv = sent + dropped + undelivered`.
        s.dropped_msgs =
            s.dropped_unroutable + s.dropped_peer_full + s.dropped_peer_gone + s.dropped_invalid;
        s
    }

    /// libzmq's STATISTICS reply: frontend then backend, each msgs in, bytes in, msgs out,
    /// bytes out.
    pub fn statistics(&self) -> [u64; 8] {
        let s = self.snapshot();
        [
            s.frontend_recv_msgs,
            s.frontend_recv_bytes,
            s.frontend_sent_msgs,
            s.frontend_sent_bytes,
            s.backend_recv_msgs,
            s.backend_recv_bytes,
            s.backend_sent_msgs,
            s.backend_sent_bytes,
        ]
    }
}

/// Remembers which peers a refusal was logged for, so a client that reconnects every 100 ms
/// with the wrong key costs one log line per [`OncePerPeer::quiet`], not one per attempt.
/// Bounded: when full, the oldest half is forgotten.
pub struct OncePerPeer {
    seen: Mutex<HashMap<(PeerKey, &'static str), Instant>>,
    quiet: Duration,
    cap: usize,
}

impl OncePerPeer {
    pub fn new(quiet: Duration, cap: usize) -> Self {
        OncePerPeer { seen: Mutex::new(HashMap::new()), quiet, cap }
    }

    /// Whether this (peer, reason) should be logged now.
    pub fn first(&self, peer: impl Into<PeerKey>, reason: &'static str) -> bool {
        let peer = peer.into();
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = seen.get(&(peer, reason))
            && now.duration_since(*at) < self.quiet
        {
            return false;
        }
        if seen.len() >= self.cap {
            let mut times: Vec<Instant> = seen.values().copied().collect();
            times.sort();
            let cut = times[times.len() / 2];
            seen.retain(|_, t| *t > cut);
        }
        seen.insert((peer, reason), now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    /// One line per peer address and reason per quiet period: a reconnecting peer's repeats are
    /// quiet, another reason or another address is logged, and the same pair is logged again
    /// once the period has passed.
    #[test]
    fn once_per_peer_and_reason_per_quiet_period() {
        let once = OncePerPeer::new(Duration::from_millis(50), 16);
        let peer = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7));
        assert!(once.first(peer, "zmtp2_on_curve"));
        assert!(!once.first(peer, "zmtp2_on_curve"));
        assert!(once.first(peer, "bad_greeting"));
        assert!(once.first(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 8)), "zmtp2_on_curve"));
        std::thread::sleep(Duration::from_millis(60));
        assert!(once.first(peer, "zmtp2_on_curve"));
    }

    /// Bounded: however many addresses refuse, the table holds at most its cap, forgetting the
    /// oldest first (so a flood of new addresses cannot grow memory, and the newest stay quiet).
    #[test]
    fn the_table_is_bounded_and_forgets_the_oldest() {
        let once = OncePerPeer::new(Duration::from_secs(60), 8);
        let ip = |n: u32| IpAddr::V4(Ipv4Addr::from(n));
        for n in 0..1000 {
            assert!(once.first(ip(n), "timeout"));
            let len = once.seen.lock().map(|m| m.len()).unwrap_or(usize::MAX);
            assert!(len <= 8, "{len} entries");
        }
        assert!(!once.first(ip(999), "timeout"), "the newest is remembered");
        assert!(once.first(ip(0), "timeout"), "the oldest was forgotten");
    }
}
