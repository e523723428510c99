//! Connect endpoints as the outside sees them, and `--<socket>-connect-all`: one connection to
//! every address a name resolves to, following the name as its addresses come and go.
//!
//! A follower task per connect-all endpoint looks the name up ([`crate::engine::resolve`]) on
//! the schedule of [`resolve::next_lookup`], runs one [`connect_loop`] per address (exactly what
//! a `--<socket>-connect` of that address runs: its reconnects, backoff, CURVE handshake) and
//! retires the loop of an address that a successful answer no longer holds. A failed lookup
//! (NXDOMAIN, an empty answer, a server that fails or stays silent) changes nothing: the name's
//! connections stay until an answer says otherwise. An IP literal is one address, connected as
//! a plain connect is.
//!
//! A retired address is drained, not cut: no new message is routed to it, what was queued to it
//! is still written, what it sends is still read and delivered, and, behind a DEALER (workers
//! answering requests) or a ROUTER, the connection stays until every request written to it was
//! answered, for at most the drain timeout; then the proxy sends its FIN and closes once the peer
//! closes too (or once another drain timeout has passed).
//!
//! Every connect endpoint, plain or connect-all, reports its addresses and their states
//! ([`ConnectStatus`]): the `/connects` document and the `zmq_proxy_connect_addresses` gauge.

use super::*;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::engine::resolve::{self, Followed, Resolver};
use crate::engine::tunables::DRAIN_POLL_INTERVAL;
use connection::{Target, connect_loop};
use heartbeat::Delivered;
use tokio::time::Instant;
use zmq_proxy_api::endpoint::Endpoint;

/// What following names needs, shared by every socket of the proxy.
#[derive(Clone)]
pub struct Follow {
    /// Built only when some socket connects to every address of a name.
    pub resolver: Option<Resolver>,
    /// `--resolve-interval`: the longest time between two lookups of a name.
    pub interval: Duration,
    /// How long a retired address may keep its connection for replies still owed (the drain
    /// timeout).
    pub drain_bound: Duration,
}

impl Default for Follow {
    fn default() -> Self {
        Follow {
            resolver: None,
            interval: zmq_proxy_api::defaults::DEFAULT_RESOLVE_INTERVAL,
            drain_bound: zmq_proxy_api::defaults::DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// Where one address of a connect endpoint stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AddrState {
    /// A TCP connect or a handshake is under way.
    Connecting,
    /// The handshake completed: the peer takes messages.
    Connected,
    /// The last attempt failed or the connection ended; waiting before the next attempt.
    BackingOff,
    /// The name no longer holds the address: its connection is closing.
    Draining,
}

impl AddrState {
    pub const ALL: [AddrState; 4] =
        [AddrState::Connected, AddrState::Connecting, AddrState::BackingOff, AddrState::Draining];

    pub fn as_str(self) -> &'static str {
        match self {
            AddrState::Connecting => "connecting",
            AddrState::Connected => "connected",
            AddrState::BackingOff => "backing_off",
            AddrState::Draining => "draining",
        }
    }
}

struct SlotEntry {
    id: u64,
    address: String,
    state: AddrState,
}

/// One connect endpoint's addresses and their states, updated by its connect loops.
pub struct ConnectStatus {
    socket: &'static str,
    endpoint: String,
    all: bool,
    slots: Mutex<Vec<SlotEntry>>,
    /// Addresses the last successful answer held (1 for a plain connect or an IP literal).
    resolved: AtomicUsize,
    resolve_failures: AtomicU64,
    next_slot: AtomicU64,
}

impl ConnectStatus {
    pub(super) fn new(socket: &'static str, endpoint: String, all: bool) -> Arc<ConnectStatus> {
        Arc::new(ConnectStatus {
            socket,
            endpoint,
            all,
            slots: Mutex::new(Vec::new()),
            resolved: AtomicUsize::new(usize::from(!all)),
            resolve_failures: AtomicU64::new(0),
            next_slot: AtomicU64::new(0),
        })
    }

    /// A place in the report for one connect loop, removed when the loop ends.
    pub(super) fn slot(self: &Arc<Self>, address: String) -> Slot {
        let id = self.next_slot.fetch_add(1, Ordering::Relaxed);
        lock(&self.slots).push(SlotEntry { id, address, state: AddrState::Connecting });
        Slot { status: self.clone(), id }
    }

    /// What `/connects` and the metrics show, addresses sorted.
    pub fn report(&self) -> ConnectReport {
        let mut addresses: Vec<AddressReport> = lock(&self.slots)
            .iter()
            .map(|s| AddressReport { address: s.address.clone(), state: s.state })
            .collect();
        let key = |a: &AddressReport| (a.address.parse::<SocketAddr>().ok(), a.address.clone());
        addresses.sort_by_key(key);
        ConnectReport {
            socket: self.socket,
            endpoint: self.endpoint.clone(),
            all: self.all,
            resolved: self.resolved.load(Ordering::Acquire),
            connected: addresses.iter().filter(|a| a.state == AddrState::Connected).count(),
            resolve_failures: self.resolve_failures.load(Ordering::Acquire),
            addresses,
        }
    }
}

/// One connect endpoint in `GET /connects`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ConnectReport {
    pub socket: &'static str,
    pub endpoint: String,
    /// Connects to every address of the name (`--<socket>-connect-all`).
    pub all: bool,
    pub resolved: usize,
    pub connected: usize,
    pub resolve_failures: u64,
    pub addresses: Vec<AddressReport>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct AddressReport {
    pub address: String,
    pub state: AddrState,
}

/// A connect loop's entry in its endpoint's report.
pub(super) struct Slot {
    status: Arc<ConnectStatus>,
    id: u64,
}

impl Slot {
    /// Records a new state, and the peer's address once a connection has one.
    pub(super) fn set(&self, state: AddrState, peer: Option<SocketAddr>) {
        let mut slots = lock(&self.status.slots);
        if let Some(s) = slots.iter_mut().find(|s| s.id == self.id) {
            // A draining connection stays draining until its loop ends.
            if s.state != AddrState::Draining || state == AddrState::Draining {
                s.state = state;
            }
            if let Some(p) = peer {
                s.address = p.to_string();
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.status.slots).retain(|s| s.id != self.id);
    }
}

/// Resolves once `rx` is raised; never when its sender is gone (a follower that stopped with
/// the proxy leaves its connections to the proxy's own drain).
pub(super) async fn retired(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A receiver that is never raised: the retire signal of a plain connect.
pub(super) fn never() -> watch::Receiver<bool> {
    watch::channel(false).1
}

/// What a connection made by a connect loop carries besides the stream.
pub(super) struct Outgoing<'a> {
    pub(super) slot: &'a Slot,
    pub(super) retire: watch::Receiver<bool>,
    pub(super) bound: Duration,
}

/// Resolves when a retired connection should send its FIN: at once for peers that owe the proxy
/// nothing; behind a DEALER once every request written to the worker was answered, behind a
/// ROUTER once every request read from the peer was answered, or when the bound passed. Never
/// for accepted connections.
pub(super) async fn retire_due(
    shared: &Shared,
    entry: &PeerEntry,
    out: Option<Outgoing<'_>>,
    delivered: &Delivered,
    received: &Delivered,
) {
    let Some(mut out) = out else { return std::future::pending().await };
    retired(&mut out.retire).await;
    out.slot.set(AddrState::Draining, None);
    let deadline = Instant::now() + out.bound;
    let owed: Box<dyn Fn() -> bool + Send + '_> = match shared.kind {
        _ if shared.capture => return,
        SocketType::Dealer => {
            // No new request goes to it; those queued are still written.
            shared.deregister(entry);
            Box::new(|| {
                entry.queue.queued.load(Ordering::Acquire) > 0
                    || received.frames() < delivered.frames()
            })
        }
        SocketType::Router => Box::new(|| entry.queue.outstanding.load(Ordering::Acquire) > 0),
        _ => return,
    };
    // Bounded by the deadline.
    while owed() && Instant::now() < deadline {
        let changed = shared.changed.notified();
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep(DRAIN_POLL_INTERVAL) => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// Follows `ep`'s name until the proxy stops: connects every address it resolves to, retires
/// those it stops resolving to.
pub(super) async fn follow_name(
    shared: Arc<Shared>,
    ep: Endpoint,
    status: Arc<ConnectStatus>,
    follow: Follow,
    inbound: mpsc::Sender<Inbound>,
    life: Lifecycle,
) {
    let mut stop = life.stop.clone();
    let spawn_loop = |ip: IpAddr, retire: watch::Receiver<bool>| {
        let addr = SocketAddr::new(ip, ep.port);
        let slot = status.slot(addr.to_string());
        let target = Target::Addr(addr);
        let bound = follow.drain_bound;
        let run = connect_loop(
            shared.clone(),
            target,
            slot,
            retire,
            bound,
            inbound.clone(),
            life.clone(),
        );
        tokio::spawn(run);
    };
    if let Ok(ip) = ep.host.parse::<IpAddr>() {
        status.resolved.store(1, Ordering::Release);
        spawn_loop(ip, never());
        return;
    }
    let Some(resolver) = follow.resolver.clone() else {
        tracing::error!(socket = shared.name, endpoint = %ep, "no DNS resolver: cannot follow the name");
        return;
    };
    let mut live: BTreeMap<IpAddr, watch::Sender<bool>> = BTreeMap::new();
    resolve::follow(&resolver, &ep.host, follow.interval, &mut stop, |ev| match ev {
        Followed::Changed { added, removed, recovered } => {
            if recovered {
                tracing::info!(socket = shared.name, endpoint = %ep, "{} resolves again", ep.host);
            }
            for ip in removed {
                if let Some(tx) = live.remove(&ip) {
                    tx.send_replace(true);
                }
                let address = SocketAddr::new(ip, ep.port);
                tracing::info!(socket = shared.name, endpoint = %ep, %address, "address gone from the name: draining its connection");
            }
            for ip in added {
                let (tx, rx) = watch::channel(false);
                spawn_loop(ip, rx);
                live.insert(ip, tx);
                let address = SocketAddr::new(ip, ep.port);
                tracing::info!(socket = shared.name, endpoint = %ep, %address, "address added to the name: connecting");
            }
            status.resolved.store(live.len(), Ordering::Release);
        }
        Followed::Failed { error, failures } => {
            status.resolve_failures.fetch_add(1, Ordering::AcqRel);
            if failures == 1 {
                let kept = live.len();
                tracing::info!(socket = shared.name, endpoint = %ep, error = %error, kept, "{} does not resolve: keeping its {kept} addresses, retrying", ep.host);
            } else {
                tracing::debug!(socket = shared.name, endpoint = %ep, error = %error, failures, "lookup failed again");
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use zmq_proxy_api::endpoint::Direction;

    #[test]
    fn a_report_sorts_addresses_counts_the_connected_and_forgets_ended_loops() {
        let ep = Endpoint::parse("tcp://workers:6000", Direction::Connect).expect("ep");
        let status = ConnectStatus::new("backend", ep.to_string(), true);
        let a = status.slot("127.0.0.10:6000".into());
        let b = status.slot("127.0.0.9:6000".into());
        let c = status.slot("[::1]:6000".into());
        a.set(AddrState::Connected, None);
        b.set(AddrState::Draining, None);
        // A draining connection stays draining, whatever its loop says next.
        b.set(AddrState::Connected, None);
        c.set(AddrState::BackingOff, None);
        let r = status.report();
        let shown: Vec<(&str, AddrState)> =
            r.addresses.iter().map(|a| (a.address.as_str(), a.state)).collect();
        assert_eq!(
            shown,
            [
                ("127.0.0.9:6000", AddrState::Draining),
                ("127.0.0.10:6000", AddrState::Connected),
                ("[::1]:6000", AddrState::BackingOff),
            ]
        );
        assert_eq!((r.all, r.connected, r.resolved), (true, 1, 0));
        let json = serde_json::to_string(&r.addresses[2]).expect("json");
        assert_eq!(json, r#"{"address":"[::1]:6000","state":"backing_off"}"#);
        drop(b);
        assert_eq!(status.report().addresses.len(), 2);
        // A plain connect targets one address at a time.
        assert_eq!(ConnectStatus::new("backend", ep.to_string(), false).report().resolved, 1);
    }
}
