//! ZMTP heartbeats (ZMTP 3.1 PING/PONG, RFC 37) with libzmq's ZMQ_HEARTBEAT_IVL, _TTL and
//! _TIMEOUT semantics, at run time: the `--<socket>-heartbeat-*` flags, the PING command's wire
//! form, and the per-connection [`Clock`] that says when to send a PING and when a silent peer is
//! dropped. The settings as data (the manifest's `heartbeat*` fields and the validated
//! [`Heartbeat`]) are the api crate's `heartbeat.rs`.
//!
//! - Every `interval` each connection is sent a PING carrying our TTL (in deciseconds).
//! - After a PING, a connection with no inbound bytes for `timeout` (default: the interval, as
//!   libzmq) is dropped; its routing id and subscriptions go as for any disconnect.
//! - A peer's PING with a non-zero TTL starts a watch of that length: no inbound bytes before it
//!   ends drops the connection (libzmq does the same, whatever its own options say).
//! - Any inbound bytes count as life, not only PONG: a busy peer is never dropped for having
//!   its PONG queued behind data. So does the peer taking our messages (a write of messages
//!   that made progress; our own PINGs and PONGs do not count): a consumer that only reads and
//!   has a backlog answers our PING only once it has read everything queued before it, which
//!   under load can take longer than any timeout (a PULL worker fed at full rate, for one;
//!   libzmq has the same hazard). A vanished peer
//!   stops taking bytes once the socket buffers are full, so it is still dropped, one send
//!   buffer's worth later.
//!
//! The read loop pays two relaxed stores per read batch ([`Liveness`]), never anything per
//! message; with heartbeats off and a peer that announces no TTL, no timer exists at all. Our
//! PINGs and their timeout ([`Clock`]) run beside the read loop, so PINGs go out even while it
//! is held back by a full pump; the peer's TTL ([`PeerTtl`]) is watched inside it. While the
//! read loop is not waiting for bytes (decoding, or held back), silence cannot be judged and a
//! deadline that falls then is not a drop: what the peer sent meanwhile sits in the socket
//! buffer and is read next.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::time::Instant;
use zmq_proxy_api::heartbeat::{FieldNames, Heartbeat, HeartbeatSpec, TTL_UNIT_MS};

use crate::zmtp::Command;
/// Longest PING context a PONG echoes (ZMTP 3.1); libzmq truncates to this as well.
pub const MAX_PING_CONTEXT: usize = 16;

/// The PING command's body (name length, name, TTL in deciseconds, context of at most
/// [`MAX_PING_CONTEXT`] bytes), unframed: sent as [`crate::sockets::Out::Command`], which frames
/// or seals it like PONG. libzmq sends no context; a PONG echoes whatever there was.
pub fn ping_body(ttl_deciseconds: u16, context: &[u8]) -> Bytes {
    let context = &context[..context.len().min(MAX_PING_CONTEXT)];
    let mut body = BytesMut::with_capacity(7 + context.len());
    body.put_u8(4);
    body.put_slice(b"PING");
    body.put_u16(ttl_deciseconds);
    body.put_slice(context);
    body.freeze()
}

/// The TTL a peer's PING announces (zero when none, or when the PING is too short to carry one,
/// which libzmq would read past the frame for), or `None` for any other command.
pub fn ping_ttl(cmd: &Command) -> Option<Duration> {
    if &cmd.name[..] != b"PING" {
        return None;
    }
    let ds = match &cmd.body[..] {
        [hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
        _ => 0,
    };
    // In 32 bits: libzmq's 16-bit product wraps above 6553 deciseconds; this does not.
    Some(Duration::from_millis(u64::from(ds) * TTL_UNIT_MS as u64))
}

/// What the read loop and the writer tell the connection's [`Clock`]: inbound bytes, whether
/// the read loop is waiting for them, and outbound bytes the peer took ([`Progress`]).
#[derive(Default)]
pub struct Liveness {
    /// Reads that returned bytes.
    arrivals: AtomicU64,
    /// The read loop waits for bytes right now (silence can be judged).
    waiting: AtomicBool,
    written: Progress,
}

/// Writes of messages to the peer that made progress, counted by the connection's writer task.
#[derive(Clone, Default)]
pub struct Progress(Arc<AtomicU64>);

impl Progress {
    /// A write moved bytes into the kernel (once per system call, never per message).
    #[inline]
    pub fn wrote(&self) {
        self.0.store(self.0.load(Relaxed).wrapping_add(1), Relaxed);
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

    /// The writer's end of this connection's [`Progress`].
    pub fn progress(&self) -> Progress {
        self.written.clone()
    }

    pub fn seen(&self) -> Seen {
        let arrivals = self.arrivals.load(Relaxed);
        let written = self.written.0.load(Relaxed);
        Seen { arrivals, written, waiting: self.waiting.load(Relaxed) }
    }
}

/// A snapshot of [`Liveness`], what the clock's decisions read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub arrivals: u64,
    pub written: u64,
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
    /// Whether the watch ended in silence: no bytes either way since it was set, and the read
    /// loop waiting for some right now (see the module docs).
    fn silent(&self, seen: Seen) -> bool {
        !self.since(seen) && seen.waiting
    }

    /// Whether bytes moved either way since the watch was set.
    fn since(&self, seen: Seen) -> bool {
        (seen.arrivals, seen.written) != (self.set.arrivals, self.set.written)
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
/// again). The peer taking our messages, or a read loop too busy to judge, only postpones it by
/// another TTL: otherwise a peer that froze while we were still writing to it would escape.
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

/// The `--<socket>-heartbeat-*` flags (each also read from `ZMQ_PROXY_<FLAG>`), as text: the
/// refusal of a bad value names the flag (see [`HeartbeatFlags::spec`]).
#[derive(clap::Args, Debug, Default, Clone)]
pub struct HeartbeatFlags {
    /// frontend: milliseconds between ZMTP PINGs to each peer (ZMQ_HEARTBEAT_IVL); 0 = none [default: 0].
    #[arg(
        long,
        env = "ZMQ_PROXY_FRONTEND_HEARTBEAT_INTERVAL",
        value_name = "MS",
        help_heading = "Frontend socket",
        allow_hyphen_values = true
    )]
    pub frontend_heartbeat_interval: Option<String>,
    /// frontend: TTL our PINGs announce, a multiple of 100 ms (ZMQ_HEARTBEAT_TTL) [default: 0].
    #[arg(
        long,
        env = "ZMQ_PROXY_FRONTEND_HEARTBEAT_TTL",
        value_name = "MS",
        help_heading = "Frontend socket",
        allow_hyphen_values = true
    )]
    pub frontend_heartbeat_ttl: Option<String>,
    /// frontend: silence after a PING that drops a peer (ZMQ_HEARTBEAT_TIMEOUT) [default: the interval].
    #[arg(
        long,
        env = "ZMQ_PROXY_FRONTEND_HEARTBEAT_TIMEOUT",
        value_name = "MS",
        help_heading = "Frontend socket",
        allow_hyphen_values = true
    )]
    pub frontend_heartbeat_timeout: Option<String>,
    /// backend: milliseconds between ZMTP PINGs to each peer (ZMQ_HEARTBEAT_IVL); 0 = none [default: 0].
    #[arg(
        long,
        env = "ZMQ_PROXY_BACKEND_HEARTBEAT_INTERVAL",
        value_name = "MS",
        help_heading = "Backend socket",
        allow_hyphen_values = true
    )]
    pub backend_heartbeat_interval: Option<String>,
    /// backend: TTL our PINGs announce, a multiple of 100 ms (ZMQ_HEARTBEAT_TTL) [default: 0].
    #[arg(
        long,
        env = "ZMQ_PROXY_BACKEND_HEARTBEAT_TTL",
        value_name = "MS",
        help_heading = "Backend socket",
        allow_hyphen_values = true
    )]
    pub backend_heartbeat_ttl: Option<String>,
    /// backend: silence after a PING that drops a peer (ZMQ_HEARTBEAT_TIMEOUT) [default: the interval].
    #[arg(
        long,
        env = "ZMQ_PROXY_BACKEND_HEARTBEAT_TIMEOUT",
        value_name = "MS",
        help_heading = "Backend socket",
        allow_hyphen_values = true
    )]
    pub backend_heartbeat_timeout: Option<String>,
    /// capture: milliseconds between ZMTP PINGs to each peer (ZMQ_HEARTBEAT_IVL); 0 = none [default: 0].
    #[arg(
        long,
        env = "ZMQ_PROXY_CAPTURE_HEARTBEAT_INTERVAL",
        value_name = "MS",
        help_heading = "Capture socket",
        allow_hyphen_values = true
    )]
    pub capture_heartbeat_interval: Option<String>,
    /// capture: TTL our PINGs announce, a multiple of 100 ms (ZMQ_HEARTBEAT_TTL) [default: 0].
    #[arg(
        long,
        env = "ZMQ_PROXY_CAPTURE_HEARTBEAT_TTL",
        value_name = "MS",
        help_heading = "Capture socket",
        allow_hyphen_values = true
    )]
    pub capture_heartbeat_ttl: Option<String>,
    /// capture: silence after a PING that drops a peer (ZMQ_HEARTBEAT_TIMEOUT) [default: the interval].
    #[arg(
        long,
        env = "ZMQ_PROXY_CAPTURE_HEARTBEAT_TIMEOUT",
        value_name = "MS",
        help_heading = "Capture socket",
        allow_hyphen_values = true
    )]
    pub capture_heartbeat_timeout: Option<String>,
}

impl HeartbeatFlags {
    fn texts(&self, socket: &str) -> [&Option<String>; 3] {
        match socket {
            "frontend" => [
                &self.frontend_heartbeat_interval,
                &self.frontend_heartbeat_ttl,
                &self.frontend_heartbeat_timeout,
            ],
            "backend" => [
                &self.backend_heartbeat_interval,
                &self.backend_heartbeat_ttl,
                &self.backend_heartbeat_timeout,
            ],
            _ => [
                &self.capture_heartbeat_interval,
                &self.capture_heartbeat_ttl,
                &self.capture_heartbeat_timeout,
            ],
        }
    }

    /// The first flag given, if any (`--config` refuses them: the manifest defines heartbeats).
    pub fn first_given(&self) -> Option<String> {
        ["frontend", "backend", "capture"].into_iter().find_map(|socket| {
            let names = FieldNames::flags(socket);
            let [i, t, o] = self.texts(socket);
            [(i, names.interval), (t, names.ttl), (o, names.timeout)]
                .into_iter()
                .find_map(|(v, name)| v.is_some().then_some(name))
        })
    }

    /// One socket's flags as a [`HeartbeatSpec`] (validated by [`HeartbeatSpec::resolve`]).
    pub fn spec(&self, socket: &str) -> Result<HeartbeatSpec, String> {
        let names = FieldNames::flags(socket);
        let number = |v: &Option<String>, name: &str| match v {
            None => Ok(None),
            Some(s) => s
                .trim()
                .parse::<i32>()
                .map(Some)
                .map_err(|_| format!("{name}: expected whole milliseconds, got {s:?}")),
        };
        let [i, t, o] = self.texts(socket);
        Ok(HeartbeatSpec {
            interval: number(i, &names.interval)?,
            ttl: number(t, &names.ttl)?,
            timeout: number(o, &names.timeout)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zmtp::parse_command;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn ping_carries_the_ttl_big_endian_and_at_most_sixteen_bytes_of_context() {
        assert_eq!(&ping_body(0x1234, &[])[..], b"\x04PING\x12\x34");
        let long = [7u8; 40];
        let body = ping_body(30, &long);
        assert_eq!(body.len(), 7 + MAX_PING_CONTEXT);
        let cmd = parse_command(body.clone()).expect("command");
        assert_eq!(ping_ttl(&cmd), Some(MS(3000)));
        // The PONG echoes the context, not the TTL.
        let pong = crate::zmtp::pong_body(&cmd).expect("pong");
        assert_eq!(&pong[..], [&b"\x04PONG"[..], &[7u8; MAX_PING_CONTEXT]].concat());
        // Above libzmq's 16-bit wrap (6554 ds), and a PING too short to carry a TTL.
        let cmd = parse_command(ping_body(u16::MAX, &[])).expect("command");
        assert_eq!(ping_ttl(&cmd), Some(MS(6_553_500)));
        let short = parse_command(Bytes::from_static(b"\x04PING\x01")).expect("command");
        assert_eq!(ping_ttl(&short), Some(Duration::ZERO));
        let pong = parse_command(Bytes::from_static(b"\x04PONG")).expect("command");
        assert_eq!(ping_ttl(&pong), None);
    }

    fn waiting(arrivals: u64) -> Seen {
        Seen { arrivals, written: 0, waiting: true }
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
        let busy = Seen { arrivals: 4, written: 0, waiting: false };
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
        let busy = Seen { arrivals: 4, written: 0, waiting: false };
        assert_eq!(ttl.due(t0 + MS(8000), busy), TtlDue::Again(t0 + MS(11_000)));
        // Taking our messages postpones it too, but a peer that then stops is dropped.
        let took = Seen { arrivals: 4, written: 9, waiting: true };
        assert_eq!(ttl.due(t0 + MS(11_000), took), TtlDue::Again(t0 + MS(14_000)));
        assert_eq!(ttl.due(t0 + MS(14_000), took), TtlDue::Expired);
        assert!(!ttl.armed());
        ttl.pinged(MS(3000), t0 + MS(15_000), waiting(5));
        assert_eq!(ttl.due(t0 + MS(18_000), waiting(5)), TtlDue::Expired);
        // A PING without a TTL starts nothing.
        let mut ttl = PeerTtl::default();
        assert_eq!(ttl.pinged(Duration::ZERO, t0, waiting(0)), None);
        assert!(!ttl.armed());
    }

    #[test]
    fn liveness_counts_arrivals_and_writes_and_knows_when_the_read_loop_waits() {
        let live = Liveness::default();
        live.waiting();
        assert_eq!(live.seen(), Seen { arrivals: 0, written: 0, waiting: true });
        live.arrived();
        live.progress().wrote();
        assert_eq!(live.seen(), Seen { arrivals: 1, written: 1, waiting: false });
    }

    #[test]
    fn a_peer_taking_our_bytes_is_alive_though_its_pong_is_behind_them() {
        let t0 = Instant::now();
        let mut c = clock(1000, Some(500), t0);
        let mut seen = waiting(0);
        assert!(c.due(t0 + MS(1000), seen).ping);
        seen.written = 7;
        assert_eq!(c.due(t0 + MS(1500), seen).expired, None);
        assert!(c.due(t0 + MS(2000), seen).ping);
        assert_eq!(c.due(t0 + MS(2500), seen).expired, Some(Expiry::Timeout));
    }

    #[test]
    fn bad_flag_texts_name_the_flag() {
        let flags = HeartbeatFlags {
            backend_heartbeat_ttl: Some("soon".into()),
            ..HeartbeatFlags::default()
        };
        assert_eq!(flags.spec("frontend"), Ok(HeartbeatSpec::default()));
        let e = flags.spec("backend").unwrap_err();
        assert_eq!(e, "--backend-heartbeat-ttl: expected whole milliseconds, got \"soon\"");
        assert_eq!(flags.first_given().as_deref(), Some("--backend-heartbeat-ttl"));
    }
}
