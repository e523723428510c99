//! ZMTP heartbeats (ZMTP 3.1 PING/PONG, RFC 37) with libzmq's ZMQ_HEARTBEAT_IVL, _TTL and _TIMEOUT
//! semantics, at run time: the per-connection [`Clock`] that says when to send a PING and when a
//! silent peer is dropped. The PING command's wire form is `wire/ping.rs`, the
//! `--<socket>-heartbeat-*` flags are `cli/heartbeat.rs`, and the settings as data (the manifest's
//! `heartbeat*` fields and the validated [`Heartbeat`]) are the api crate's `heartbeat.rs`.
//!
//! - Every `interval` each connection is sent a PING carrying our TTL (in deciseconds).
//! - After a PING, a connection with no inbound bytes for `timeout` (default: the interval, as
//!   libzmq) is dropped; its routing id and subscriptions go as for any disconnect.
//! - A peer's PING with a non-zero TTL starts a watch of that length: no inbound bytes before it
//!   ends drops the connection (libzmq does the same, whatever its own options say).
//! - Life is what arrives from the peer, as libzmq judges it (its engine cancels the timeout
//!   when it decodes anything from the peer): any inbound bytes, not only PONG, so a busy peer
//!   is never dropped for having its PONG queued behind data. The peer's kernel taking our
//!   messages is not life: a process frozen under load (SIGSTOP, a stuck runtime) accepts
//!   requests until its socket buffers fill, megabytes later, and would be fed half the work
//!   meanwhile. The hazard is libzmq's too: a consumer with a backlog reads our PING only after
//!   what was queued before it, so the timeout must cover the longest backlog a healthy peer
//!   works through.
//!
//! The read loop pays two relaxed stores per read batch ([`Liveness`]), never anything per
//! message; with heartbeats off and a peer that announces no TTL, no timer exists at all. Our
//! PINGs and their timeout ([`Clock`]) run beside the read loop, so PINGs go out even while it
//! is held back by a full pump; the peer's TTL ([`PeerTtl`]) is watched inside it. While the
//! read loop is not waiting for bytes (decoding, or held back), silence cannot be judged and a
//! deadline that falls then is not a drop: what the peer sent meanwhile sits in the socket
//! buffer and is read next.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use zmq_proxy_api::heartbeat::Heartbeat;

use crate::wire::ping::ping_body;

/// What the read loop tells the connection's [`Clock`]: inbound bytes, and whether the read
/// loop is waiting for them.
#[derive(Default)]
pub struct Liveness {
    /// Reads that returned bytes.
    arrivals: AtomicU64,
    /// The read loop waits for bytes right now (silence can be judged).
    waiting: AtomicBool,
}

/// Frames of messages written to a peer whole, counted by the connection's writer task (once
/// per write batch): beside the frames read from it, what a worker dropped by a heartbeat left
/// unanswered.
#[derive(Default)]
pub struct Delivered(AtomicU64);

impl Delivered {
    /// `frames` more were written whole.
    #[inline]
    pub fn add(&self, frames: u64) {
        self.0.fetch_add(frames, Relaxed);
    }

    pub fn frames(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

impl Liveness {
    /// The read loop starts waiting for bytes.
    #[inline]
    pub fn waiting(&self) {
        self.waiting.store(true, Relaxed);
    }

    /// A read returned (bytes, or the end, which ends the connection anyway).
    #[inline]
    pub fn arrived(&self) {
        self.waiting.store(false, Relaxed);
        self.arrivals.store(self.arrivals.load(Relaxed).wrapping_add(1), Relaxed);
    }

    pub fn seen(&self) -> Seen {
        Seen { arrivals: self.arrivals.load(Relaxed), waiting: self.waiting.load(Relaxed) }
    }
}

/// A snapshot of [`Liveness`], what the clock's decisions read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub arrivals: u64,
    pub waiting: bool,
}

/// Why a heartbeat dropped a connection: the `reason` label of
/// `zmq_proxy_heartbeat_timeouts_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// No inbound traffic for our timeout after our PING.
    Timeout,
    /// No inbound traffic for the TTL the peer's own PING announced.
    PeerTtl,
}

impl Expiry {
    pub fn reason(self) -> &'static str {
        match self {
            Expiry::Timeout => "timeout",
            Expiry::PeerTtl => "peer_ttl",
        }
    }

    /// Its key in the once-per-peer log limiter, distinct from the handshake refusals'.
    pub fn log_key(self) -> &'static str {
        match self {
            Expiry::Timeout => "heartbeat_timeout",
            Expiry::PeerTtl => "heartbeat_peer_ttl",
        }
    }
}

/// A silence deadline and what had happened when it was set: bytes since then cancel it.
#[derive(Clone, Copy, Debug)]
struct Watch {
    at: Instant,
    set: Seen,
}

impl Watch {
    /// Whether the watch ended in silence: no bytes from the peer since it was set, and the
    /// read loop waiting for some right now (see the module docs).
    fn silent(&self, seen: Seen) -> bool {
        !self.since(seen) && seen.waiting
    }

    /// Whether bytes arrived from the peer since the watch was set.
    fn since(&self, seen: Seen) -> bool {
        seen.arrivals != self.set.arrivals
    }
}

/// What a connection does when its clock is due.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Due {
    /// Send a PING now.
    pub ping: bool,
    /// Drop the connection.
    pub expired: Option<Expiry>,
}

/// The peer's TTL: set by each of its PINGs that announces one, cancelled by any bytes from the
/// peer after it (libzmq cancels the TTL timer on any traffic, the PING included, then sets it
/// again). A read loop too busy to judge postpones it by another TTL: what the peer sent
/// meanwhile waits unread.
/// Pure, like [`Clock`].
#[derive(Debug, Default)]
pub struct PeerTtl {
    watch: Option<Watch>,
    ttl: Duration,
}

/// What the peer's TTL watch says at its deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TtlDue {
    /// Not yet, or the peer spoke since its PING: nothing to do until the next PING.
    Nothing,
    /// Silent for the whole TTL: drop the peer.
    Expired,
    /// Not silent, but not heard from either: look again at this deadline.
    Again(Instant),
}

impl PeerTtl {
    /// The peer's PING announced `ttl`: silence for that long from `now` drops it. Returns the
    /// new deadline (`None` for a PING without a TTL, which sets nothing).
    pub fn pinged(&mut self, ttl: Duration, now: Instant, seen: Seen) -> Option<Instant> {
        if ttl.is_zero() {
            return None;
        }
        let at = now + ttl;
        self.watch = Some(Watch { at, set: seen });
        self.ttl = ttl;
        Some(at)
    }

    /// Whether a deadline is being watched.
    pub fn armed(&self) -> bool {
        self.watch.is_some()
    }

    /// What is due at `now` (see [`TtlDue`]).
    pub fn due(&mut self, now: Instant, seen: Seen) -> TtlDue {
        let Some(w) = self.watch.filter(|w| w.at <= now) else { return TtlDue::Nothing };
        if w.silent(seen) {
            self.watch = None;
            return TtlDue::Expired;
        }
        if seen.arrivals != w.set.arrivals {
            self.watch = None;
            return TtlDue::Nothing;
        }
        let at = now + self.ttl;
        self.watch = Some(Watch { at, set: seen });
        TtlDue::Again(at)
    }
}

/// One connection's own heartbeat timers: the next PING and the timeout after it. Pure (time and
/// [`Seen`] are passed in), so the rules are tested without sockets.
#[derive(Debug)]
pub struct Clock {
    cfg: Heartbeat,
    next_ping: Option<Instant>,
    timeout: Option<Watch>,
}

impl Clock {
    pub fn new(cfg: Heartbeat, now: Instant) -> Self {
        Clock { cfg, next_ping: cfg.interval.map(|i| now + i), timeout: None }
    }

    /// When [`Clock::due`] next has something to do (`None`: heartbeats are off).
    pub fn wake_at(&self) -> Option<Instant> {
        [self.next_ping, self.timeout.map(|w| w.at)].into_iter().flatten().min()
    }

    /// What is due at `now`: an expired timeout first (a silent peer gets no further PING),
    /// then the PING, which (re)starts the timeout unless one already runs in silence (libzmq
    /// does not restart a running timeout timer; traffic would have cancelled it).
    pub fn due(&mut self, now: Instant, seen: Seen) -> Due {
        if let Some(w) = self.timeout
            && w.at <= now
        {
            if w.silent(seen) {
                return Due { ping: false, expired: Some(Expiry::Timeout) };
            }
            self.timeout = None;
        }
        let mut due = Due::default();
        if let (Some(at), Some(interval)) = (self.next_ping, self.cfg.interval)
            && at <= now
        {
            due.ping = true;
            // A late wake-up does not make PINGs bunch up.
            self.next_ping = Some((at + interval).max(now));
            if let Some(timeout) = self.cfg.timeout {
                let running = self.timeout.is_some_and(|w| !w.since(seen));
                if !running {
                    self.timeout = Some(Watch { at: now + timeout, set: seen });
                }
            }
        }
        due
    }

    /// The PING body this clock's connection sends.
    pub fn ping(&self) -> Bytes {
        ping_body(self.cfg.ttl_deciseconds, &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn waiting(arrivals: u64) -> Seen {
        Seen { arrivals, waiting: true }
    }

    fn clock(interval: u64, timeout: Option<u64>, start: Instant) -> Clock {
        let cfg = Heartbeat {
            interval: Some(MS(interval)),
            ttl_deciseconds: 0,
            timeout: timeout.map(MS),
        };
        Clock::new(cfg, start)
    }

    #[test]
    fn a_silent_peer_expires_one_timeout_after_the_first_ping() {
        let t0 = Instant::now();
        let mut c = clock(1000, Some(1500), t0);
        assert_eq!(c.wake_at(), Some(t0 + MS(1000)));
        assert_eq!(c.due(t0 + MS(999), waiting(0)), Due::default());
        assert_eq!(c.due(t0 + MS(1000), waiting(0)), Due { ping: true, expired: None });
        // The second PING does not push the running timeout out.
        assert_eq!(c.wake_at(), Some(t0 + MS(2000)));
        assert_eq!(c.due(t0 + MS(2000), waiting(0)), Due { ping: true, expired: None });
        assert_eq!(c.wake_at(), Some(t0 + MS(2500)));
        let d = c.due(t0 + MS(2500), waiting(0));
        assert_eq!(d.expired, Some(Expiry::Timeout));
    }

    #[test]
    fn any_bytes_after_the_ping_cancel_the_timeout_and_the_next_ping_restarts_it() {
        let t0 = Instant::now();
        let mut c = clock(1000, Some(1500), t0);
        assert!(c.due(t0 + MS(1000), waiting(0)).ping);
        // Bytes arrived (the PONG, or any message) before the deadline.
        assert!(c.due(t0 + MS(2000), waiting(1)).ping);
        assert_eq!(c.wake_at(), Some(t0 + MS(3000)), "the silent watch was re-armed at 2000");
        assert_eq!(c.due(t0 + MS(3000), waiting(1)).expired, None);
        assert_eq!(c.due(t0 + MS(3500), waiting(1)).expired, Some(Expiry::Timeout));
    }

    #[test]
    fn a_read_loop_that_is_not_waiting_for_bytes_is_never_judged_silent() {
        let t0 = Instant::now();
        let mut c = clock(1000, Some(500), t0);
        assert!(c.due(t0 + MS(1000), waiting(4)).ping);
        // Held back by a full pump: what the peer sent sits unread in the socket buffer.
        let busy = Seen { arrivals: 4, waiting: false };
        assert_eq!(c.due(t0 + MS(1500), busy), Due::default());
        assert!(c.due(t0 + MS(2000), waiting(4)).ping);
        assert_eq!(c.due(t0 + MS(2500), waiting(4)).expired, Some(Expiry::Timeout));
    }

    #[test]
    fn without_a_timeout_pings_go_on_and_nothing_expires() {
        let t0 = Instant::now();
        let mut c = clock(100, None, t0);
        for n in 1..=50 {
            assert_eq!(c.due(t0 + MS(100 * n), waiting(0)), Due { ping: true, expired: None });
        }
        // A wake-up long overdue sends one PING, not the missed ones.
        assert!(c.due(t0 + MS(60_000), waiting(0)).ping);
        assert_eq!(c.wake_at(), Some(t0 + MS(60_000)));
        assert!(c.due(t0 + MS(60_000), waiting(0)).ping);
        assert_eq!(c.wake_at(), Some(t0 + MS(60_100)));
    }

    #[test]
    fn the_peers_ttl_drops_it_when_silent_and_each_ping_restarts_the_watch() {
        let t0 = Instant::now();
        assert_eq!(Clock::new(Heartbeat::default(), t0).wake_at(), None, "heartbeats off");
        let mut ttl = PeerTtl::default();
        assert_eq!(ttl.pinged(MS(3000), t0, waiting(1)), Some(t0 + MS(3000)));
        assert_eq!(ttl.pinged(MS(3000), t0 + MS(1000), waiting(2)), Some(t0 + MS(4000)));
        assert_eq!(ttl.due(t0 + MS(3999), waiting(2)), TtlDue::Nothing, "before the deadline");
        // Traffic after the PING cancels the watch (until the next PING).
        assert_eq!(ttl.due(t0 + MS(4000), waiting(3)), TtlDue::Nothing);
        assert!(!ttl.armed());
        ttl.pinged(MS(3000), t0 + MS(5000), waiting(4));
        // Not waiting for bytes (held back by the pump): not judged yet, looked at again.
        let busy = Seen { arrivals: 4, waiting: false };
        assert_eq!(ttl.due(t0 + MS(8000), busy), TtlDue::Again(t0 + MS(11_000)));
        // Waiting again and still nothing from the peer: dropped at the postponed deadline.
        assert_eq!(ttl.due(t0 + MS(11_000), waiting(4)), TtlDue::Expired);
        assert!(!ttl.armed());
        ttl.pinged(MS(3000), t0 + MS(15_000), waiting(5));
        assert_eq!(ttl.due(t0 + MS(18_000), waiting(5)), TtlDue::Expired);
        // A PING without a TTL starts nothing.
        let mut ttl = PeerTtl::default();
        assert_eq!(ttl.pinged(Duration::ZERO, t0, waiting(0)), None);
        assert!(!ttl.armed());
    }

    #[test]
    fn liveness_counts_arrivals_and_knows_when_the_read_loop_waits() {
        let live = Liveness::default();
        live.waiting();
        assert_eq!(live.seen(), Seen { arrivals: 0, waiting: true });
        live.arrived();
        assert_eq!(live.seen(), Seen { arrivals: 1, waiting: false });
        let delivered = Delivered::default();
        delivered.add(3);
        assert_eq!(delivered.frames(), 3);
    }

    #[test]
    fn a_peer_whose_kernel_takes_our_bytes_but_that_sends_nothing_is_dropped() {
        // A frozen worker: every write of ours succeeds, nothing comes back. Only arrivals
        // count, so it goes one timeout after the PING, as with libzmq.
        let t0 = Instant::now();
        let mut c = clock(1000, Some(500), t0);
        assert!(c.due(t0 + MS(1000), waiting(0)).ping);
        assert_eq!(c.due(t0 + MS(1500), waiting(0)).expired, Some(Expiry::Timeout));
    }
}
