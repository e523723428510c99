//! One task per connection: accepting and connecting (with retries), the ZMTP handshake, then
//! the read loop that hands messages and subscription changes to the pump, the write loop that
//! drains the peer's queue in batches, and the heartbeat clock, all three polled by that one
//! task (see [`crate::engine::heartbeat`]). Whatever a peer does costs only its own connection;
//! an idle one holds its task, its registry entry and nothing else (no buffer, no queue block,
//! and no read or write loop: each starts, boxed, once it has work).

use super::*;
use crate::engine::alarm::Alarm;
use crate::engine::budget::Share;
use heartbeat::{Clock, Delivered, Expiry, Liveness, PeerTtl, TtlDue};
use std::future::Future;
use std::pin::Pin;
use tokio::time::{Instant, Sleep};

pub(super) async fn accept_loop(
    shared: Arc<Shared>,
    listener: Listener,
    inbound: mpsc::Sender<Inbound>,
    mut life: Lifecycle,
) {
    // A Unix peer has no address: its logs name the socket it came through.
    let shown = listener.endpoint().unwrap_or_default();
    loop {
        tokio::select! {
            _ = raised(&mut life.stop) => break,
            r = listener.accept() => match r {
                Ok(stream) => {
                    // Out of room: closed at once (the peer sees its connection end and
                    // retries), so the descriptors left serve the peers already connected.
                    let Some(seat) = shared.room.admit(shared.name) else {
                        shared.counters.connection_refused(shared.name, "fd_limit");
                        continue;
                    };
                    let mech = shared.security.accepted.clone();
                    let peer = stream.peer(&shown);
                    let (shared, inbound, life) = (shared.clone(), inbound.clone(), life.clone());
                    // The connection's future is the task's: one held by a wrapper would
                    // keep the wrapper's copies of its arguments as long as it lasts.
                    tokio::spawn(serve(seat, shared, stream, peer, mech, inbound, life, None));
                }
                Err(e) if fd_room::is_exhaustion(&e) => {
                    shared.room.exhausted(shared.name);
                    tokio::select! {
                        _ = raised(&mut life.stop) => break,
                        _ = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::select! {
                        _ = raised(&mut life.stop) => break,
                        _ = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => {}
                    }
                }
            }
        }
    }
}

/// What a connect loop dials: a name resolved again on every attempt (a plain
/// `--<socket>-connect`), one address of a name followed by [`super::follow`], or a Unix
/// socket (`ipc://`).
pub(super) enum Target {
    Name(String, u16),
    Addr(SocketAddr),
    Ipc(IpcEndpoint),
}

impl Target {
    async fn connect(&self) -> std::io::Result<Stream> {
        match self {
            // Resolved again on every attempt, each address tried in order (`crate::engine::net`).
            Target::Name(host, port) => {
                crate::engine::net::connect(host, *port).await.map(Stream::Tcp)
            }
            Target::Addr(addr) => TcpStream::connect(addr).await.map(Stream::Tcp),
            Target::Ipc(ep) => crate::engine::ipc::connect(ep).map(Stream::Ipc),
        }
    }

    /// The endpoint as the logs name it.
    fn shown(&self) -> String {
        match self {
            Target::Name(host, port) => format!("{host}:{port}"),
            Target::Addr(addr) => addr.to_string(),
            Target::Ipc(ep) => ep.to_string(),
        }
    }
}

/// Connects `target` and reconnects whenever the connection ends, as zmq_connect does: after
/// each attempt that did not complete a handshake the delay doubles (from reconnectInterval up
/// to reconnectIntervalMax, when set); a connection that was served starts over at the
/// interval. A host name is resolved again on every attempt, so a Service or a pod whose
/// address changed is found. Ends when the proxy stops or `retire` is raised (the address left
/// its name: its connection is drained first, see [`super::follow`]); `slot` shows each state.
pub(super) async fn connect_loop(
    shared: Arc<Shared>,
    target: Target,
    slot: follow::Slot,
    mut retire: watch::Receiver<bool>,
    bound: std::time::Duration,
    mut inbound: mpsc::Sender<Inbound>,
    mut life: Lifecycle,
) {
    let opts = &shared.options;
    let mut failures = 0u32;
    loop {
        slot.set(follow::AddrState::Connecting, None);
        let connect = target.connect();
        let attempt = tokio::select! {
            _ = raised(&mut life.stop) => return,
            _ = follow::retired(&mut retire) => return,
            r = async {
                if opts.connect_timeout.is_zero() {
                    return connect.await;
                }
                match tokio::time::timeout(opts.connect_timeout, connect).await {
                    Ok(r) => r,
                    Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
                }
            } => r,
        };
        match attempt {
            // The connection hands the inbound sender back only if the proxy still runs:
            // holding a copy here during a drain would keep the pump from seeing its end.
            Ok(stream) => {
                let seat = shared.room.seat();
                let mech = shared.security.connected.clone();
                let peer = stream.peer(&target.shown());
                let out = Box::new(follow::Outgoing { slot: &slot, retire: retire.clone(), bound });
                let (shared, life) = (shared.clone(), life.clone());
                let end = serve(seat, shared, stream, peer, mech, inbound, life, Some(out)).await;
                let Some(tx) = end.inbound else { return };
                inbound = tx;
                if *retire.borrow() {
                    return;
                }
                failures = if end.served { 0 } else { failures.saturating_add(1) };
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::debug!(endpoint = %target.shown(), error = %e, "connect failed");
            }
        }
        slot.set(follow::AddrState::BackingOff, None);
        let jitter = f64::from(rand_u32()) / f64::from(u32::MAX);
        let delay = opts.reconnect_delay(failures.saturating_sub(1), jitter);
        tokio::select! {
            _ = raised(&mut life.stop) => return,
            _ = follow::retired(&mut retire) => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// How a connection ended: the inbound sender back (unless the proxy is being killed or its
/// pump is gone), and whether the handshake completed (a served peer resets the backoff).
struct ConnectionEnd {
    inbound: Option<mpsc::Sender<Inbound>>,
    served: bool,
}

enum ReadEnd {
    /// The pump that reads this socket is gone (the proxy is being killed).
    Stopped,
    /// The peer closed, reset, broke the protocol, or the writer failed.
    Closed,
    /// The peer was silent past a heartbeat deadline (ours or its own TTL).
    Silent(Expiry),
}

/// One connection from handshake to close, holding its seat (its file descriptor's place in
/// the room) throughout.
#[allow(clippy::too_many_arguments)]
async fn serve(
    _seat: fd_room::Seat,
    shared: Arc<Shared>,
    stream: Stream,
    peer_addr: Option<Peer>,
    mech: Mechanism,
    inbound: mpsc::Sender<Inbound>,
    mut life: Lifecycle,
    // Boxed: only connections a connect loop made have one, and every task holds the room
    // of its arguments for as long as it runs.
    out: Option<Box<follow::Outgoing<'_>>>,
) -> ConnectionEnd {
    let _open = drain::OpenConnection::new(&shared);
    stream.tune(&shared.options);
    let (mut rd, mut wr) = stream.into_split();
    // The handshake reserves what it reads; the read loop takes a buffer only when data comes.
    let mut buf = BytesMut::new();
    let max_bytes = shared.options.max_message_bytes();
    // In a block of its own: what the handshake returned is not kept beside the connection's
    // loops once its parts are taken out.
    let (entry, revision, sealer, opener, listed) = {
        // Boxed: the handshake's state (CURVE's above all) is freed once it is done, instead
        // of sizing the connection's task for as long as the connection lasts.
        let hs = Box::pin(async {
            tokio::select! {
                _ = raised(&mut life.stop) => None,
                r = tokio::time::timeout(
                    HANDSHAKE_TIMEOUT,
                    curve::handshake(&mech, &mut rd, &mut wr, shared.kind, &mut buf, max_bytes),
                ) => Some(r.unwrap_or(Err(WireError::Timeout(HANDSHAKE_TIMEOUT)))),
            }
        })
        .await;
        let Some(hs) = hs else { return ConnectionEnd { inbound: None, served: false } };
        let (info, session) = match hs {
            Ok(done) => (done.peer, done.session),
            Err(e) => {
                shared.refused(&mech, &e, peer_addr);
                return ConnectionEnd { inbound: Some(inbound), served: false };
            }
        };
        let Some(entry) = shared.register(&info) else {
            shared.refused(&mech, &WireError::DuplicateIdentity, peer_addr);
            return ConnectionEnd { inbound: Some(inbound), served: false };
        };
        let (sealer, opener, listed) = match session {
            // Boxed: a NULL connection's task holds two empty pointers, not their room.
            Some(s) => (Some(Box::new(s.sealer)), Some(Box::new(s.opener)), s.client_key),
            None => (None, None, None),
        };
        (entry, info.revision, sealer, opener, listed)
    };
    if let Some(o) = &out {
        o.slot.set(follow::AddrState::Connected, peer_addr.as_ref().and_then(Peer::tcp));
    }
    tracing::debug!(socket = shared.label(), peer = ?peer_addr, id = entry.id, "peer connected");
    let dead = Arc::new(Alarm::default());
    shared.live_writers.fetch_add(1, Ordering::AcqRel);
    let live = Liveness::default();
    // A reader not started yet is waiting for bytes: the heartbeat clock may judge silence.
    live.waiting();
    // Frames written to the peer whole, and frames read from it: what a worker dropped by a
    // heartbeat left unanswered.
    let delivered = Delivered::default();
    let received = Delivered::default();
    // The reader and the writer run in this task, one task per connection, and each starts
    // (boxed) once it has work: the reader when the peer sends (or sent behind its handshake),
    // the writer when its queue fills. An idle connection's task so holds neither loop's
    // state, only what starts them. Once started, a loop lasts as long as the connection.
    let mut idle_writer = Some((wr, sealer, LiveWriter(&shared)));
    let mut writer = None;
    let mut writer_done = false;
    let mut inbound = Some(inbound);
    // ZMTP 2.0 has no PING: such a peer's connection runs no heartbeat clock.
    let heartbeat = if revision.has_commands() { shared.heartbeat } else { Default::default() };
    let mut clock = Clock::new(heartbeat, Instant::now());
    let end = {
        let Some(tx) = inbound.as_ref() else {
            return ConnectionEnd { inbound: None, served: true };
        };
        // Bytes the peer sent behind its handshake start the reader at once; an empty
        // buffer is given back (the handshake reserved one for its own reads).
        let mut start_reader = !buf.is_empty();
        if !start_reader {
            buf = BytesMut::new();
        }
        let mut idle_reader = Some((rd, opener, buf));
        let mut reader = None;
        // What only some connections wait for is boxed when they start waiting, so an idle
        // connection's task holds none of it: the allow-list watch (CURVE with one), the
        // retirement of an address (connections a connect loop made), the drain (once the
        // proxy stops) and the timers.
        let mut revoked = listed.map(|l| Box::pin(curve::revoked(Some(l))));
        let fin_bound = out.as_ref().map(|o| o.bound).unwrap_or_default();
        let mut retire = out.map(|o| {
            Box::pin(follow::retire_due(&shared, &entry, Some(*o), &delivered, &received))
        });
        let mut close_due: Option<Pin<Box<_>>> = None;
        let mut beat: Option<Pin<Box<Sleep>>> = None;
        // Set once a retired address sent its FIN: the connection ends then at the latest.
        let mut fin_due: Option<Pin<Box<Sleep>>> = None;
        let mut stopping = false;
        let mut closing = false;
        // Reading goes on through a drain until the peer closes (see `sockets/drain.rs`).
        loop {
            if start_reader && let Some((rd, opener, buf)) = idle_reader.take() {
                let read = read_loop(
                    &shared, &entry, &mech, rd, &peer_addr, buf, opener, tx, &dead, &live,
                    &received,
                );
                reader = Some(Box::pin(read));
            }
            match (clock.wake_at(), &mut beat) {
                (None, _) => beat = None,
                (Some(at), Some(t)) if t.deadline() != at => t.as_mut().reset(at),
                (Some(_), Some(_)) => {}
                (Some(at), None) => beat = Some(Box::pin(tokio::time::sleep_until(at))),
            }
            tokio::select! {
                end = unless_none(&mut reader) => break Some(end),
                _ = readable(&idle_reader) => start_reader = true,
                () = unless_none(&mut writer), if !writer_done => writer_done = true,
                _ = entry.queue.inbox.filled(), if idle_writer.is_some() => {
                    if let Some((wr, sealer, running)) = idle_writer.take() {
                        let kill = life.kill.clone();
                        let w = write_loop(&shared, &entry.queue, wr, &delivered, sealer, &dead, kill, running);
                        writer = Some(Box::pin(w));
                    }
                }
                _ = raised(&mut life.kill) => break None,
                _ = unless_none(&mut revoked) => {
                    tracing::info!(socket = shared.name, peer = ?peer_addr, id = entry.id, "CURVE client key removed from the allow-list; disconnecting");
                    break Some(ReadEnd::Closed);
                }
                _ = unless_none(&mut retire) => {
                    tracing::debug!(socket = shared.label(), peer = ?peer_addr, id = entry.id, "retired address: closing the write side");
                    retire = None;
                    fin_due = Some(Box::pin(tokio::time::sleep(fin_bound)));
                    closing = true;
                    drain::begin_close(&shared, &entry);
                }
                _ = unless_none(&mut fin_due) => break Some(ReadEnd::Closed),
                _ = raised(&mut life.stop), if !stopping => {
                    stopping = true;
                    if !closing {
                        close_due = Some(Box::pin(drain::close_due(&shared, &entry)));
                    }
                }
                _ = unless_none(&mut close_due) => {
                    close_due = None;
                    if !closing {
                        closing = true;
                        tracing::debug!(socket = shared.label(), peer = ?peer_addr, id = entry.id, "drain: closing the write side");
                        drain::begin_close(&shared, &entry);
                    }
                }
                _ = unless_none(&mut beat) => {
                    if let Some(expiry) = heartbeat_due(&shared, &entry, &mut clock, &live) {
                        break Some(ReadEnd::Silent(expiry));
                    }
                }
            }
        }
    };
    dead.raise();
    // A writer that never started wrote nothing: it ends here, its write half with it.
    drop(idle_writer);
    let Some(end) = end else {
        // Killed: the writer settles what the kernel took of its last write, at once.
        if let Some(w) = writer.as_mut().filter(|_| !writer_done) {
            w.await;
        }
        return ConnectionEnd { inbound: None, served: true };
    };
    if let ReadEnd::Stopped = end {
        inbound = None;
    }
    shared.deregister(&entry);
    // Counted once its routing id is free again, so whoever sees the count may reuse it.
    if let ReadEnd::Silent(expiry) = end {
        silent(&shared, &entry, expiry, peer_addr.clone());
    }
    // Ends at once: `dead` is raised.
    if let Some(w) = writer.as_mut().filter(|_| !writer_done) {
        w.await;
    }
    if let ReadEnd::Silent(_) = end
        && shared.kind == SocketType::Dealer
        && !shared.capture
    {
        // A worker behind a DEALER answers each request with a reply of as many frames (the
        // envelope comes back whole), so what was written and never matched by a reply is
        // what it took with it. Already counted as sent: a reason of its own, outside
        // dropped_msgs.
        let unanswered = delivered.frames().saturating_sub(received.frames());
        shared.counters.dropped(DropReason::Unanswered, unanswered);
    }
    tracing::debug!(socket = shared.label(), peer = ?peer_addr, id = entry.id, "peer disconnected");
    if *life.kill.borrow() {
        return ConnectionEnd { inbound: None, served: true };
    }
    entry.queue.inbox.close();
    let mut left: Vec<Msg> = Vec::new();
    while let Some(batch) = entry.queue.inbox.try_recv() {
        for m in batch {
            shared.pending.frames.fetch_sub(m.frames().len() as i64, Ordering::AcqRel);
            shared.pending.bytes.fetch_sub(m.payload_len() as i64, Ordering::AcqRel);
            left.extend(m.into_msg());
        }
    }
    if !left.is_empty() {
        tracing::debug!(count = left.len(), "messages queued to a closed peer");
        shared.undeliverable(left);
        shared.changed.notify_waiters();
    }
    if shared.kind == SocketType::Xpub
        && shared.delivers
        && let Some(tx) = &inbound
    {
        tokio::select! {
            _ = tx.send(Inbound::PeerLeft(entry.id)) => {}
            _ = raised(&mut life.kill) => {}
        }
    }
    ConnectionEnd { inbound, served: true }
}

/// The connection's heartbeat clock is due: sends the PING, or tells that the peer was silent
/// past our timeout.
fn heartbeat_due(
    shared: &Shared,
    entry: &PeerEntry,
    clock: &mut Clock,
    live: &Liveness,
) -> Option<Expiry> {
    let due = clock.due(Instant::now(), live.seen());
    // A closing connection's write side is shut or about to be: nothing more goes out.
    if due.ping && !entry.queue.closing.load(Ordering::Acquire) {
        let _ = shared.enqueue(&entry.queue, vec![Out::Command(clock.ping())], 0);
    }
    due.expired
}

/// Counts a connection dropped by a heartbeat, logged once per peer address and reason a minute.
fn silent(shared: &Shared, entry: &PeerEntry, expiry: Expiry, peer: Option<Peer>) {
    let reason = expiry.reason();
    shared.counters.heartbeat_expired(shared.name, reason);
    if peer.as_ref().is_none_or(|p| shared.refusals.first(p.log_key(), expiry.log_key())) {
        let shown = peer.map(|p| p.to_string()).unwrap_or_else(|| "unknown".into());
        tracing::info!(socket = shared.name, peer = %shown, id = entry.id, reason, "peer silent past its heartbeat deadline; disconnecting");
    }
}

/// Counts a peer disconnected for its memory budget or the proxy's (`frames` of its unfinished
/// message go with it), logged once per peer address a minute.
fn over_budget(
    shared: &Shared,
    entry: &PeerEntry,
    why: &dyn std::fmt::Display,
    frames: usize,
    peer: Option<Peer>,
) {
    shared.counters.dropped(DropReason::OverBudget, frames as u64);
    if peer.as_ref().is_none_or(|p| shared.refusals.first(p.log_key(), "over_budget")) {
        let shown = peer.map(|p| p.to_string()).unwrap_or_else(|| "unknown".into());
        tracing::warn!(socket = shared.name, peer = %shown, id = entry.id, frames, error = %why, "peer over its memory budget; disconnecting");
    }
}

/// Why the proxy-wide budget closed a connection, as its log line says it.
struct ProxyBudgetSpent(Option<u64>);

impl std::fmt::Display for ProxyBudgetSpent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let limit = self.0.map(|l| l.to_string()).unwrap_or_else(|| "unlimited".into());
        write!(
            f,
            "the proxy's memory budget (--max-memory {limit} bytes) is spent and this peer's unfinished message was the largest"
        )
    }
}

/// Reads the connection until it ends; a connection the proxy's memory budget closed is
/// counted with the frames of the message it was sending.
#[allow(clippy::too_many_arguments)]
async fn read_loop(
    shared: &Shared,
    entry: &PeerEntry,
    mech: &Mechanism,
    mut rd: ReadHalf,
    peer: &Option<Peer>,
    mut buf: BytesMut,
    opener: Option<Box<curve::Opener>>,
    inbound: &mpsc::Sender<Inbound>,
    dead: &Arc<Alarm>,
    live: &Liveness,
    received: &Delivered,
) -> ReadEnd {
    // This connection's part of the proxy's memory budget: closing it (`dead`) is how the
    // budget makes the heaviest assembler leave. Joined by the reader, as only a reader
    // assembles messages.
    let mut share = shared.budget.join(dead.clone());
    let mut dec = zmtp::Decoder::for_revision(shared.options.max_message_bytes(), entry.revision)
        .with_max_frames(shared.options.max_message_frames());
    if let Some(o) = opener {
        dec.set_opener(o);
    }
    let end = read_messages(
        shared, entry, mech, &mut rd, peer, &mut buf, &mut dec, inbound, dead, live, received,
        &mut share,
    )
    .await;
    if share.evicted() {
        let why = ProxyBudgetSpent(shared.budget.limit());
        over_budget(shared, entry, &why, dec.frames(), peer.clone());
    }
    end
}

/// Resolves once the socket of a reader not started yet turns readable; never once started.
async fn readable(idle: &Option<(ReadHalf, Option<Box<curve::Opener>>, BytesMut)>) {
    match idle {
        // An error is the reader's to find: it starts either way.
        Some((rd, ..)) => {
            let _ = std::future::poll_fn(|cx| rd.poll_data(cx)).await;
        }
        None => std::future::pending().await,
    }
}

/// Resolves as `f` does when there is one (a timer, a rarely needed wait); never without one.
async fn unless_none<F: Future + Unpin>(f: &mut Option<F>) -> F::Output {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

#[allow(clippy::too_many_arguments)]
async fn read_messages(
    shared: &Shared,
    entry: &PeerEntry,
    mech: &Mechanism,
    rd: &mut ReadHalf,
    peer: &Option<Peer>,
    buf: &mut BytesMut,
    dec: &mut zmtp::Decoder,
    inbound: &mpsc::Sender<Inbound>,
    dead: &Alarm,
    live: &Liveness,
    received: &Delivered,
    share: &mut Share,
) -> ReadEnd {
    let router = shared.kind == SocketType::Router;
    let subscriptions = matches!(shared.kind, SocketType::Xpub | SocketType::Pub);
    // The receive high-water mark: at most this many messages of this peer wait for the pump.
    let limit = shared.options.receive_limit();
    let window = Arc::new(window::ReadWindow::default());
    let hand_over = |batch: Vec<Msg>| {
        let credit = window.take(batch.len());
        Inbound::Batch(batch, credit)
    };
    // The TTL of the peer's own PINGs; its timer exists only once a PING announced one.
    let mut peer_ttl = PeerTtl::default();
    let mut ttl_due: Option<Pin<Box<Sleep>>> = None;
    loop {
        if !window.wait_room(limit, dead).await {
            return ReadEnd::Closed;
        }
        let mut budget = window.room(limit);
        // Set when the window filled before the buffer was decoded: decode the rest once the
        // pump made room, before reading more.
        let mut window_full = false;
        let mut batch: Vec<Msg> = Vec::new();
        let mut unanswerable: Vec<Msg> = Vec::new();
        loop {
            if batch.len() >= budget {
                window_full = true;
                break;
            }
            if router {
                dec.prefix(&entry.routing_id);
            }
            let change = match dec.decode(buf) {
                Ok(None) => break,
                Ok(Some(Item::Message(m))) => {
                    let sub = if subscriptions { zmtp::subscription_of_message(&m) } else { None };
                    match sub {
                        Some(s) => s,
                        None => {
                            if router && entry.queue.closing.load(Ordering::Acquire) {
                                unanswerable.push(m);
                            } else if shared.delivers {
                                batch.push(m);
                                if router {
                                    entry.queue.outstanding.fetch_add(1, Ordering::AcqRel);
                                    entry.queue.reads.fetch_add(1, Ordering::AcqRel);
                                }
                            }
                            continue;
                        }
                    }
                }
                Ok(Some(Item::Command(raw))) => {
                    let Ok(cmd) = zmtp::parse_command(raw) else {
                        shared.counters.protocol_errors.fetch_add(1, Ordering::Relaxed);
                        return ReadEnd::Closed;
                    };
                    if &cmd.name[..] == b"ERROR" {
                        return ReadEnd::Closed;
                    }
                    if let Some(pong) = zmtp::pong_body(&cmd) {
                        let ttl = crate::wire::ping::ping_ttl(&cmd).unwrap_or_default();
                        if let Some(at) = peer_ttl.pinged(ttl, Instant::now(), live.seen()) {
                            match &mut ttl_due {
                                Some(timer) => timer.as_mut().reset(at),
                                None => ttl_due = Some(Box::pin(tokio::time::sleep_until(at))),
                            }
                        }
                        // Heartbeats (ZMQ_HEARTBEAT_IVL on the peer) are answered whatever
                        // the queue's fill level; a PONG is not a message.
                        let _ = shared.enqueue(&entry.queue, vec![Out::Command(pong)], 0);
                        continue;
                    }
                    match zmtp::subscription_of_command(&cmd) {
                        Some(s) if subscriptions => s,
                        _ => continue,
                    }
                }
                Err(e) => {
                    if let WireError::Mechanism { .. } = e {
                        shared.refused(mech, &e, peer.clone());
                    } else if let WireError::TooManyFrames { .. } = e {
                        over_budget(shared, entry, &e, dec.frames() + 1, peer.clone());
                    } else {
                        shared.counters.protocol_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(id = entry.id, error = %e, "dropping peer");
                    }
                    // The complete messages read before the bad frame go on (for CURVE each
                    // was authenticated); nothing of the offending message does: its frames
                    // so far were only collected in the decoder, which goes down here.
                    if !batch.is_empty() && inbound.send(hand_over(batch)).await.is_err() {
                        return ReadEnd::Stopped;
                    }
                    return ReadEnd::Closed;
                }
            };
            // Kept for as long as the subscription lasts: a copy of its own, so it never
            // keeps a read buffer (and whatever else was read into it) alive.
            let (subscribe, topic) = (change.0, Bytes::copy_from_slice(&change.1));
            shared.update_topics(entry.id, subscribe, &topic);
            if shared.kind == SocketType::Xpub && shared.delivers {
                budget -= batch.len();
                if !batch.is_empty() && inbound.send(hand_over(batch)).await.is_err() {
                    return ReadEnd::Stopped;
                }
                batch = Vec::new();
                let ev = Inbound::Subscription { peer: entry.id, subscribe, topic };
                if inbound.send(ev).await.is_err() {
                    return ReadEnd::Stopped;
                }
            }
        }
        // Once per read, not per frame: what the unfinished message weighs now.
        share.assembling(dec.assembling());
        if !batch.is_empty() {
            received.add(batch.iter().map(|m| m.len() as u64).sum());
            if inbound.send(hand_over(batch)).await.is_err() {
                return ReadEnd::Stopped;
            }
        }
        if !unanswerable.is_empty()
            && inbound.send(Inbound::Unanswerable(unanswerable)).await.is_err()
        {
            return ReadEnd::Stopped;
        }
        if window_full {
            continue;
        }
        live.waiting();
        tokio::select! {
            biased;
            _ = dead.raised() => return ReadEnd::Closed,
            r = rd.read_lazily(buf, READ_CHUNK_BYTES) => match r {
                Ok(0) | Err(_) => return ReadEnd::Closed,
                Ok(_) => live.arrived(),
            },
            _ = unless_none(&mut ttl_due), if peer_ttl.armed() => {
                match peer_ttl.due(Instant::now(), live.seen()) {
                    TtlDue::Expired => return ReadEnd::Silent(Expiry::PeerTtl),
                    TtlDue::Again(at) => {
                        if let Some(timer) = &mut ttl_due {
                            timer.as_mut().reset(at);
                        }
                    }
                    TtlDue::Nothing => {}
                }
            }
        }
    }
}

/// Writes the peer's queue in batches until the connection is dead, the write fails, or the
/// drain's Close was written; what it leaves queued, the connection takes back.
#[allow(clippy::too_many_arguments)]
async fn write_loop(
    shared: &Shared,
    queue: &PeerQueue,
    mut wr: WriteHalf,
    delivered: &Delivered,
    mut sealer: Option<Box<Sealer>>,
    dead: &Alarm,
    kill: watch::Receiver<bool>,
    _running: LiveWriter<'_>,
) {
    // Grown on demand: reserving a full batch per connection up front cost idle and
    // short-lived peers 256 KiB each and fragmented the heap under connection churn.
    let mut out = BytesMut::new();
    let mut ends: Vec<WrittenUpTo> = Vec::new();
    loop {
        let first = tokio::select! {
            biased;
            m = queue.inbox.recv() => m,
            _ = dead.raised() => break,
        };
        let first = drain::unrecalled(shared, queue, first);
        if first.is_empty() {
            continue;
        }
        // Where each message ends in `out`, so a write cut short by a kill releases exactly the
        // messages the kernel took whole.
        ends.clear();
        // Returns whether the batch held the drain's Close: nothing after it joins this write.
        let mut sealed = Ok(());
        let mut encode = |batch: Vec<Out>, out: &mut BytesMut| {
            let mut close = false;
            for m in batch {
                close |= matches!(m, Out::Close);
                match &mut sealer {
                    None => m.encode(out),
                    Some(s) => {
                        if sealed.is_ok() {
                            sealed = m.encode_sealed(out, s);
                        }
                    }
                }
                // One look at the message's form for both counts.
                let frames = m.frames();
                ends.push(WrittenUpTo {
                    end: out.len(),
                    frames: frames.len() as i64,
                    bytes: frames.iter().map(Bytes::len).sum::<usize>() as i64,
                });
            }
            close
        };
        let mut close = encode(first, &mut out);
        let limit = write_batch_bytes(shared.live_writers.load(Ordering::Relaxed));
        while out.len() < limit && !close {
            match queue.inbox.try_recv() {
                Some(batch) => close = encode(drain::unrecalled(shared, queue, batch), &mut out),
                None => break,
            }
        }
        if close {
            // The last bytes and the FIN leave in one segment, so the peer's kernel holds the
            // end of stream as soon as it holds the reply (see `drain::after_reply`).
            wr.cork();
        }
        let mut written = 0usize;
        // Messages of this write already settled as the kernel took them whole.
        let mut settled = 0usize;
        let settle = |upto: usize, settled: &mut usize| {
            let (msgs, frames, bytes) = ends[*settled..upto.max(*settled)]
                .iter()
                .fold((0usize, 0i64, 0i64), |(m, f, b), e| (m + 1, f + e.frames, b + e.bytes));
            *settled = upto.max(*settled);
            queue.queued.fetch_sub(msgs, Ordering::AcqRel);
            delivered.add(frames.max(0) as u64);
            shared.pending.frames.fetch_sub(frames, Ordering::AcqRel);
            shared.pending.bytes.fetch_sub(bytes, Ordering::AcqRel);
            msgs
        };
        let r = tokio::select! {
            r = write_settling(&mut wr, &out, &mut written, |w| {
                // Room for the messages the kernel holds whole: the high-water mark bounds the
                // messages not yet handed to the kernel, as libzmq's pipe does, and not those
                // behind the unwritten rest of one large write to a slow peer.
                if settle(ends.partition_point(|e| e.end <= w), &mut settled) > 0 {
                    shared.changed.notify_waiters();
                }
            }) => r,
            _ = dead.raised() => Err(std::io::ErrorKind::ConnectionAborted.into()),
        };
        // Written whole: every message on success; on a kill or when the peer died, those the
        // kernel took whole (a live peer still reads them; a dead one went down with them, as
        // with any write before).
        let done = match &r {
            Ok(()) => ends.len(),
            Err(_) => ends.partition_point(|e| e.end <= written),
        };
        settle(done, &mut settled);
        let done = settled;
        if r.is_err() && *kill.borrow() {
            // Killed mid-write: the messages not fully written stay in the backlog that the
            // shutdown counts as undelivered.
            break;
        }
        if out.capacity() > 4 * limit {
            out = BytesMut::new();
        } else {
            out.clear();
        }
        shared.changed.notify_waiters();
        if r.is_ok() && close {
            // Drain: the FIN follows everything written; the reader goes on until the peer's
            // own FIN. A failed shutdown means the peer is gone, which the reader sees too.
            let _ = wr.shutdown().await;
            break;
        }
        if r.is_err() {
            let (lost_frames, lost_bytes) =
                ends[done..].iter().fold((0i64, 0i64), |(f, b), e| (f + e.frames, b + e.bytes));
            queue.queued.fetch_sub(ends.len() - done, Ordering::AcqRel);
            shared.pending.frames.fetch_sub(lost_frames, Ordering::AcqRel);
            shared.pending.bytes.fetch_sub(lost_bytes, Ordering::AcqRel);
            shared.counters.dropped(shared.lost_reason(), lost_frames.max(0) as u64);
            dead.raise();
            break;
        }
    }
}

/// Counts a running writer; dropping it (return, panic or abort) signals the drain.
struct LiveWriter<'a>(&'a Shared);

impl Drop for LiveWriter<'_> {
    fn drop(&mut self) {
        self.0.live_writers.fetch_sub(1, Ordering::AcqRel);
        self.0.writers_gone.notify_waiters();
    }
}

/// The end of one encoded message in a write batch, with what it counts for.
struct WrittenUpTo {
    end: usize,
    frames: i64,
    bytes: i64,
}

/// `write_all` that records how far it got, so a cancelled or failed write still tells how
/// many bytes the kernel accepted, and reports each partial write to `progress` (the bytes
/// written so far).
async fn write_settling(
    wr: &mut WriteHalf,
    buf: &[u8],
    written: &mut usize,
    mut progress: impl FnMut(usize),
) -> std::io::Result<()> {
    while *written < buf.len() {
        match wr.write(&buf[*written..]).await {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => *written += n,
            Err(e) => return Err(e),
        }
        if *written < buf.len() {
            progress(*written);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `f` returns (a future, here), without calling it.
    fn returned<A, R>(_: impl FnOnce(A) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    type ServeArgs = (
        fd_room::Seat,
        Arc<Shared>,
        Stream,
        Option<Peer>,
        Mechanism,
        mpsc::Sender<Inbound>,
        Lifecycle,
        Option<Box<follow::Outgoing<'static>>>,
    );

    /// An idle connection costs its task, whose size is that of this future (the runtime
    /// rounds the task up to whole cache lines, the allocator to its size classes): the
    /// reader's and the writer's state are boxed when they start, and what stays must not
    /// grow back unnoticed. A debug build's future, which is larger than a release build's.
    #[test]
    fn an_idle_connections_task_stays_small() {
        let task = returned(|a: ServeArgs| serve(a.0, a.1, a.2, a.3, a.4, a.5, a.6, a.7));
        assert!(task <= 1344, "a connection's future takes {task} bytes");
    }
}
