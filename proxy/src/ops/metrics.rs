//! What the proxy reports about itself: the [`Observed`] view (counters, sockets, pump
//! liveness, readiness and drain flags), the Prometheus collector that reads it on each
//! scrape (the forwarding path only bumps atomics), and the periodic drop summary log line.
//!
//! Metric names (Prometheus text; counters end in `_total`); docs/operations.md's table is
//! checked against a scrape, HELP texts included:
//! - `zmq_proxy_received_messages_total{socket}` (a multipart message once),
//!   `zmq_proxy_received_frames_total{socket}`, `zmq_proxy_received_bytes_total{socket}`:
//!   frontend, backend (frames and bytes are the first STATISTICS values of each).
//! - `zmq_proxy_sent_messages_total{socket}`, `zmq_proxy_sent_frames_total{socket}`,
//!   `zmq_proxy_sent_bytes_total{socket}`: frontend, backend, capture.
//! - `zmq_proxy_dropped_frames_total{reason}`: unroutable, peer_full, peer_gone, invalid,
//!   capture, unanswered (requests a heartbeat-dropped worker took with it), over_budget (the
//!   unfinished message of a peer disconnected for its memory budget);
//!   `zmq_proxy_undelivered_frames_total` (left when a drain timed out).
//! - `zmq_proxy_closed_before_greeting_total{socket}`: connections that closed without sending
//!   a byte (port checks, TCP probes); they are no handshake failure and no drop.
//! - `zmq_proxy_handshake_failures_total{socket, mechanism, reason}`: socket frontend, backend,
//!   capture or control; mechanism NULL or CURVE; reason e.g. bad_greeting, timeout, closed,
//!   incompatible_socket_type, mechanism_mismatch, wrong_server_key, unknown_client_key,
//!   malformed_hello, malformed_initiate, bad_cookie, bad_vouch, bad_nonce,
//!   message_auth_failed (see `WireError::reason` and `CurveError::reason`). Only series that
//!   counted something are present.
//! - `zmq_proxy_connections_refused_total{socket, reason}`: connections closed on accept,
//!   reason `fd_limit` (no room left below RLIMIT_NOFILE, see `engine::fd_room`). Only series
//!   that counted something are present.
//! - `zmq_proxy_protocol_errors_total`.
//! - `zmq_proxy_heartbeat_timeouts_total{socket, reason}`: connections dropped by heartbeats,
//!   reason `timeout` (silent past our heartbeat timeout after a PING) or `peer_ttl` (silent past
//!   the TTL of the peer's own PING). Only series that counted something are present.
//! - `zmq_proxy_connect_addresses{socket, endpoint, state}` (gauge) and
//!   `zmq_proxy_resolve_failures_total{socket, endpoint}`: each `--<socket>-connect-all`
//!   endpoint's resolved addresses by state (connected, connecting, backing_off, draining; every
//!   state, 0 included) and its lookups that gave no address.
//! - gauges `zmq_proxy_connected_peers{socket}`, `zmq_proxy_queued_frames{socket}`,
//!   `zmq_proxy_paused`, `zmq_proxy_draining`, `zmq_proxy_ready`,
//!   `zmq_proxy_build_info{version}` (always 1).
//! - A federated replica only (docs/federation.md's table, checked against a scrape too):
//!   `zmq_proxy_federation_members`, `zmq_proxy_federation_link_up{member, direction}`,
//!   `zmq_proxy_federation_relayed_messages_total{direction}`,
//!   `zmq_proxy_federation_dropped_messages_total{reason}`,
//!   `zmq_proxy_federation_protocol_errors_total`, and per other replica
//!   `zmq_proxy_federation_link_relayed_messages_total{member, direction}`,
//!   `zmq_proxy_federation_link_dropped_messages_total{member, reason}`,
//!   `zmq_proxy_federation_heartbeat_timeouts_total{member}`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::engine::counters::{Counters, Snapshot};
use crate::federation::Federation;
use crate::policy::sockets::{AddrState, ConnectReport, SocketHandle};
use crate::proxy::forward::Proxy;
use crate::proxy::state::ProxyState;
use zmq_proxy_api::socket::SocketType;

/// Everything the probes, the metrics and the drop summary read, shared with the HTTP task.
pub struct Observed {
    counters: Arc<Counters>,
    state: watch::Receiver<ProxyState>,
    sockets: Vec<(&'static str, SocketHandle)>,
    pumps: Vec<AbortHandle>,
    ready: AtomicBool,
    draining: AtomicBool,
    federation: Option<Federation>,
}

impl Observed {
    pub fn of(proxy: &Proxy) -> Arc<Observed> {
        let mut sockets = vec![("frontend", proxy.frontend().clone())];
        sockets.push(("backend", proxy.backend().clone()));
        if let Some(c) = proxy.capture() {
            sockets.push(("capture", c.clone()));
        }
        Arc::new(Observed {
            counters: proxy.counters(),
            state: proxy.state().subscribe(),
            sockets,
            pumps: proxy.pump_handles(),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            federation: proxy.federation().cloned(),
        })
    }

    /// Every bind is up: from now on /readyz says 200 (until the drain starts).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// The drain started: /readyz says 503 from now on, so no new peer is sent here.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// The forwarding loop runs: every pump is alive, or the proxy is draining (pumps end
    /// normally once they delivered everything).
    pub fn live(&self) -> bool {
        self.draining() || self.pumps.iter().all(|p| !p.is_finished())
    }

    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
            && !self.draining()
            && self.live()
            && !self.strands_work()
    }

    /// A PULL/PUSH replica with producers attached, no worker of its own and no link out up
    /// (or a ROUTER/DEALER one with clients): the tasks or requests it reads can only wait, so
    /// new producers or clients are better sent to another replica.
    pub fn strands_work(&self) -> bool {
        let Some(f) = self.federation.as_ref() else { return false };
        let (sources, workers) = match f.pattern() {
            "PULL/PUSH" => (SocketType::Pull, SocketType::Push),
            "ROUTER/DEALER" => (SocketType::Router, SocketType::Dealer),
            _ => return false,
        };
        let attached = |kind: SocketType| -> usize {
            let data = self.sockets.iter().filter(|(n, _)| *n != "capture");
            data.filter(|(_, h)| h.socket_type() == kind).map(|(_, h)| h.peer_count()).sum()
        };
        attached(sources) > 0 && attached(workers) == 0 && f.snapshot().links_out_up == 0
    }

    /// The federation this proxy is a replica of, if any.
    pub fn federation(&self) -> Option<&Federation> {
        self.federation.as_ref()
    }

    pub fn paused(&self) -> bool {
        *self.state.borrow() == ProxyState::Paused
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Every connect endpoint of every socket, in socket order (`GET /connects`).
    pub fn connects(&self) -> Vec<ConnectReport> {
        self.sockets.iter().flat_map(|(_, h)| h.connects()).collect()
    }

    /// A registry holding one collector that reads this view on each scrape.
    pub fn registry(self: &Arc<Self>) -> Registry {
        let mut r = Registry::default();
        r.register_collector(Box::new(ProxyCollector(self.clone())));
        r
    }
}

struct ProxyCollector(Arc<Observed>);

impl std::fmt::Debug for ProxyCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProxyCollector")
    }
}

fn family<V: Copy>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    key: &str,
    values: &[(&str, V)],
    one: impl Fn(V, prometheus_client::encoding::MetricEncoder) -> std::fmt::Result,
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (label, v) in values {
        let labels = [(key, *label)];
        one(*v, m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(v: u64, m: prometheus_client::encoding::MetricEncoder) -> std::fmt::Result {
    ConstCounter::new(v).encode(m)
}

fn gauge(v: i64, m: prometheus_client::encoding::MetricEncoder) -> std::fmt::Result {
    ConstGauge::new(v).encode(m)
}

fn single(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    counter(v, m)
}

fn flag(enc: &mut DescriptorEncoder, name: &str, help: &str, on: bool) -> std::fmt::Result {
    let m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    gauge(i64::from(on), m)
}

impl Collector for ProxyCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let o = &self.0;
        let s = o.counters.snapshot();
        let (c, g) = (MetricType::Counter, MetricType::Gauge);
        let fb = |f: u64, b: u64| [("frontend", f), ("backend", b)];
        let recv_m = fb(s.frontend_recv_messages, s.backend_recv_messages);
        let recv_f = fb(s.frontend_recv_msgs, s.backend_recv_msgs);
        let recv_b = fb(s.frontend_recv_bytes, s.backend_recv_bytes);
        let mut sent_m = fb(s.frontend_sent_messages, s.backend_sent_messages).to_vec();
        let mut sent_f = fb(s.frontend_sent_msgs, s.backend_sent_msgs).to_vec();
        let mut sent_b = fb(s.frontend_sent_bytes, s.backend_sent_bytes).to_vec();
        if o.sockets.iter().any(|(n, _)| *n == "capture") {
            sent_m.push(("capture", s.capture_sent_messages));
            sent_f.push(("capture", s.capture_sent_msgs));
            sent_b.push(("capture", s.capture_sent_bytes));
        }
        let e = &mut enc;
        let sock = "socket";
        let help = "Messages received, a multipart message once";
        family(e, "zmq_proxy_received_messages", help, c, sock, &recv_m, counter)?;
        let help = "Frames received, each part of a multipart message";
        family(e, "zmq_proxy_received_frames", help, c, sock, &recv_f, counter)?;
        family(e, "zmq_proxy_received_bytes", "Payload bytes received", c, sock, &recv_b, counter)?;
        let help = "Messages sent, a multipart message once";
        family(e, "zmq_proxy_sent_messages", help, c, sock, &sent_m, counter)?;
        let help = "Frames sent, each part of a multipart message";
        family(e, "zmq_proxy_sent_frames", help, c, sock, &sent_f, counter)?;
        family(e, "zmq_proxy_sent_bytes", "Payload bytes sent", c, sock, &sent_b, counter)?;
        let dropped = [
            ("unroutable", s.dropped_unroutable),
            ("peer_full", s.dropped_peer_full),
            ("peer_gone", s.dropped_peer_gone),
            ("invalid", s.dropped_invalid),
            ("capture", s.dropped_capture),
            ("unanswered", s.dropped_unanswered),
            ("over_budget", s.dropped_over_budget),
        ];
        let help = "Frames dropped on purpose, by reason";
        family(e, "zmq_proxy_dropped_frames", help, c, "reason", &dropped, counter)?;
        let help = "Frames read but not delivered when the drain timeout expired";
        single(e, "zmq_proxy_undelivered_frames", help, s.undelivered_msgs)?;
        let help =
            "Connections closed before sending a greeting (port checks, TCP probes), by socket";
        let closed = o.counters.closed_before_greeting_by();
        family(e, "zmq_proxy_closed_before_greeting", help, c, sock, &closed, counter)?;
        let help = "Connections refused in the ZMTP handshake or dropped by the security mechanism, by socket, mechanism and reason";
        let mut m = e.encode_descriptor("zmq_proxy_handshake_failures", help, None, c)?;
        for ((socket, mechanism, reason), v) in o.counters.handshake_failures_by() {
            let labels = [("socket", socket), ("mechanism", mechanism), ("reason", reason)];
            counter(v, m.encode_family(&labels)?)?;
        }
        let help = "Connections closed on accept for want of room (fd_limit: RLIMIT_NOFILE), by socket and reason";
        let mut m = e.encode_descriptor("zmq_proxy_connections_refused", help, None, c)?;
        for ((socket, reason), v) in o.counters.connections_refused_by() {
            counter(v, m.encode_family(&[("socket", socket), ("reason", reason)])?)?;
        }
        let help = "Connections dropped for a ZMTP protocol violation";
        single(e, "zmq_proxy_protocol_errors", help, s.protocol_errors)?;
        let help =
            "Connections dropped by ZMTP heartbeats (no traffic in time), by socket and reason";
        let mut m = e.encode_descriptor("zmq_proxy_heartbeat_timeouts", help, None, c)?;
        for ((socket, reason), v) in o.counters.heartbeat_timeouts_by() {
            counter(v, m.encode_family(&[("socket", socket), ("reason", reason)])?)?;
        }
        let peers: Vec<(&str, i64)> =
            o.sockets.iter().map(|(n, h)| (*n, h.peer_count() as i64)).collect();
        family(e, "zmq_proxy_connected_peers", "Peers connected", g, sock, &peers, gauge)?;
        let queued: Vec<(&str, i64)> = o.sockets.iter().map(|(n, h)| (*n, h.backlog())).collect();
        let help = "Frames queued to peers and not yet written";
        family(e, "zmq_proxy_queued_frames", help, g, sock, &queued, gauge)?;
        connect_families(e, o)?;
        let help = "1 while paused (a PAUSE command, --pause-file or the manifest's paused)";
        flag(e, "zmq_proxy_paused", help, o.paused())?;
        flag(e, "zmq_proxy_draining", "1 once the drain started", o.draining())?;
        flag(e, "zmq_proxy_ready", "1 while /readyz answers 200", o.ready())?;
        let version = [(env!("CARGO_PKG_VERSION"), 1)];
        let help = "Build of this proxy (always 1)";
        family(e, "zmq_proxy_build_info", help, g, "version", &version, gauge)?;
        match &o.federation {
            Some(f) => encode_federation(e, f),
            None => Ok(()),
        }
    }
}

/// The federation's families (a federated replica only).
fn encode_federation(e: &mut DescriptorEncoder, f: &Federation) -> std::fmt::Result {
    let (c, g) = (MetricType::Counter, MetricType::Gauge);
    let s = f.snapshot();
    let m = e.encode_descriptor(
        "zmq_proxy_federation_members",
        "Other replicas this replica has linked with",
        None,
        g,
    )?;
    gauge(s.members as i64, m)?;
    let help = "1 while the link to (out) or from (in) that replica is up, by member and direction";
    let mut m = e.encode_descriptor("zmq_proxy_federation_link_up", help, None, g)?;
    for (id, out, inbound) in f.link_states() {
        for (direction, up) in [("out", out), ("in", inbound)] {
            let labels = [("member", &*id), ("direction", direction)];
            gauge(i64::from(up), m.encode_family(&labels)?)?;
        }
    }
    let relayed = [("out", s.relayed_out), ("in", s.relayed_in)];
    let help = "Messages relayed to (out, per copy) and from (in) other replicas";
    family(e, "zmq_proxy_federation_relayed_messages", help, c, "direction", &relayed, counter)?;
    let dropped = [("link_full", s.dropped_link_full), ("link_down", s.dropped_link_down)];
    let help = "Messages for another replica dropped, by reason";
    family(e, "zmq_proxy_federation_dropped_messages", help, c, "reason", &dropped, counter)?;
    let help = "Links closed for a malformed message or one that broke the one-hop rule";
    single(e, "zmq_proxy_federation_protocol_errors", help, s.protocol_errors)?;
    member_families(e, f)
}

/// The per-link families, by `member`: one label value per other replica, a handful.
fn member_families(e: &mut DescriptorEncoder, f: &Federation) -> std::fmt::Result {
    let c = MetricType::Counter;
    let members = f.member_counts();
    let help = "Messages relayed to (out, per copy) and from (in) one other replica, by member";
    let mut m = e.encode_descriptor("zmq_proxy_federation_link_relayed_messages", help, None, c)?;
    for (id, n) in &members {
        for (direction, v) in [("out", n.relayed_out), ("in", n.relayed_in)] {
            counter(v, m.encode_family(&[("member", &**id), ("direction", direction)])?)?;
        }
    }
    let help = "Messages for one other replica dropped, by member and reason";
    let mut m = e.encode_descriptor("zmq_proxy_federation_link_dropped_messages", help, None, c)?;
    for (id, n) in &members {
        for (reason, v) in [("link_full", n.dropped_link_full), ("link_down", n.dropped_link_down)]
        {
            counter(v, m.encode_family(&[("member", &**id), ("reason", reason)])?)?;
        }
    }
    let help = "Link connections to or from one other replica closed because it went silent past the heartbeat bound, by member";
    let mut m = e.encode_descriptor("zmq_proxy_federation_heartbeat_timeouts", help, None, c)?;
    for (id, n) in &members {
        counter(n.heartbeat_timeouts, m.encode_family(&[("member", &**id)])?)?;
    }
    Ok(())
}

/// The addresses of each connect-all endpoint by state (every state, 0 included) and its failed
/// lookups.
fn connect_families(e: &mut DescriptorEncoder, o: &Observed) -> std::fmt::Result {
    let all: Vec<ConnectReport> = o.connects().into_iter().filter(|r| r.all).collect();
    let help = "Resolved addresses of each --<socket>-connect-all endpoint, by state";
    let mut m =
        e.encode_descriptor("zmq_proxy_connect_addresses", help, None, MetricType::Gauge)?;
    for r in &all {
        for state in AddrState::ALL {
            let n = r.addresses.iter().filter(|a| a.state == state).count() as i64;
            let labels = [
                ("socket", r.socket),
                ("endpoint", r.endpoint.as_str()),
                ("state", state.as_str()),
            ];
            gauge(n, m.encode_family(&labels)?)?;
        }
    }
    let help = "Lookups of a --<socket>-connect-all name that gave no address, by endpoint";
    let mut m =
        e.encode_descriptor("zmq_proxy_resolve_failures", help, None, MetricType::Counter)?;
    for r in &all {
        let labels = [("socket", r.socket), ("endpoint", r.endpoint.as_str())];
        counter(r.resolve_failures, m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Frames dropped since the previous summary, by reason; `None` when nothing was dropped.
pub fn drop_delta(prev: &Snapshot, now: &Snapshot) -> Option<[(&'static str, u64); 7]> {
    let d = |a: u64, b: u64| b.saturating_sub(a);
    let delta = [
        ("unroutable", d(prev.dropped_unroutable, now.dropped_unroutable)),
        ("peer_full", d(prev.dropped_peer_full, now.dropped_peer_full)),
        ("peer_gone", d(prev.dropped_peer_gone, now.dropped_peer_gone)),
        ("invalid", d(prev.dropped_invalid, now.dropped_invalid)),
        ("capture", d(prev.dropped_capture, now.dropped_capture)),
        ("unanswered", d(prev.dropped_unanswered, now.dropped_unanswered)),
        ("over_budget", d(prev.dropped_over_budget, now.dropped_over_budget)),
    ];
    delta.iter().any(|(_, v)| *v > 0).then_some(delta)
}

/// Connections refused in the handshake and dropped for protocol errors since the previous
/// summary; `None` when there were none. A connection closed before its greeting is neither.
pub fn refusal_delta(prev: &Snapshot, now: &Snapshot) -> Option<(u64, u64)> {
    let d = |a: u64, b: u64| b.saturating_sub(a);
    let delta = (
        d(prev.handshake_failures, now.handshake_failures),
        d(prev.protocol_errors, now.protocol_errors),
    );
    (delta != (0, 0)).then_some(delta)
}

/// Logs one "messages dropped" line per `every` in which frames were dropped, and one
/// "connections refused" line per `every` in which connections were refused or dropped for a
/// protocol error, with the counts since the previous line and the totals.
/// The first snapshot is taken on the call, not when the task first runs, so drops in between
/// are not missed.
pub fn drop_summary(
    observed: Arc<Observed>,
    every: Duration,
) -> impl std::future::Future<Output = ()> + Send {
    let mut prev = observed.counters.snapshot();
    async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = observed.counters.snapshot();
            if let Some(d) = drop_delta(&prev, &now) {
                let [unroutable, peer_full, peer_gone, invalid, capture, unanswered, over_budget] =
                    d.map(|(_, v)| v);
                tracing::warn!(
                    interval_secs = every.as_secs_f64(),
                    unroutable,
                    peer_full,
                    peer_gone,
                    invalid,
                    capture,
                    unanswered,
                    over_budget,
                    total_dropped_frames = now.dropped_msgs,
                    total_dropped_capture_frames = now.dropped_capture,
                    "messages dropped"
                );
            }
            if let Some((handshake, protocol)) = refusal_delta(&prev, &now) {
                tracing::warn!(
                    interval_secs = every.as_secs_f64(),
                    handshake_failures = handshake,
                    protocol_errors = protocol,
                    "connections refused"
                );
            }
            prev = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_delta_is_none_without_drops_and_counts_each_reason() {
        let a = Snapshot::default();
        let mut b = a;
        b.frontend_recv_msgs = 10;
        assert!(drop_delta(&a, &b).is_none(), "traffic alone is not a drop");
        b.dropped_peer_full = 7;
        b.dropped_unroutable = 2;
        let d = drop_delta(&a, &b).expect("drops");
        assert_eq!(d[0], ("unroutable", 2));
        assert_eq!(d[1], ("peer_full", 7));
        assert_eq!(drop_delta(&b, &b), None);
        b.dropped_over_budget = 3;
        let d = drop_delta(&a, &b).expect("drops");
        assert_eq!(d[6], ("over_budget", 3));
    }
}
