//! The `--control-bind` socket: libzmq's zmq_proxy_steerable protocol on a REP socket, so
//! the tools that steer a libzmq proxy steer this one unchanged.
//!
//! - `PAUSE`, `RESUME`, `TERMINATE`: the state change, then one empty frame as the reply.
//! - `STATISTICS`: eight frames, each a little-endian u64, in the order of
//!   [`Counters::statistics`] (frontend msgs in, bytes in, msgs out, bytes out, then the
//!   backend's four).
//! - Anything else (including a multipart request or a lowercase command) is answered with
//!   one frame starting `ERROR` and changes nothing. libzmq replies with an empty frame there;
//!   an explicit error is what tells an operator that a script sent a typo.
//!
//! The socket speaks ZMTP through the proxy's own [`crate::wire::zmtp`] layer, like the data
//! sockets: the `zeromq` crate's RepSocket sizes its buffer from a peer's frame header, so a
//! single packet claiming a 2^46-byte frame aborted the whole proxy (measured). Here frames are
//! bounded by [`CONTROL_MAX_BYTES`], each requester is its own task, and a bad requester only
//! ever loses its own connection.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::engine::counters::{Counters, OncePerPeer};
use crate::engine::curve::{self, Mechanism};
use crate::engine::net;
use crate::engine::tunables::{
    CONTROL_MAX_BYTES, CONTROL_MAX_CONNECTIONS, CONTROL_REPLY_TIMEOUT, HANDSHAKE_TIMEOUT,
    READ_CHUNK_BYTES,
};
use crate::engine::tunables::{REFUSAL_LOG_PEERS, REFUSAL_LOG_QUIET};
use crate::policy::sockets::OpenError;
use crate::proxy::state::{self, ProxyState};
use crate::wire::zmtp::{self, Item};
use zmq_proxy_api::endpoint::Endpoint;
use zmq_proxy_api::socket::SocketType;

/// A command of the zmq_proxy_steerable protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Pause,
    Resume,
    Terminate,
    Statistics,
}

/// Parses a request's frames. libzmq compares the bytes exactly, so case matters.
pub fn parse(frames: &[Bytes]) -> Result<Command, String> {
    let [frame] = frames else {
        return Err(format!("expected a single-frame command, got {} frames", frames.len()));
    };
    match &frame[..] {
        b"PAUSE" => Ok(Command::Pause),
        b"RESUME" => Ok(Command::Resume),
        b"TERMINATE" => Ok(Command::Terminate),
        b"STATISTICS" => Ok(Command::Statistics),
        other => Err(format!(
            "unknown command {:?}; expected PAUSE, RESUME, TERMINATE or STATISTICS",
            String::from_utf8_lossy(&other[..other.len().min(64)])
        )),
    }
}

/// The reply frames to a request, after applying it to `state`. A stopping proxy stays
/// stopping: PAUSE and RESUME are acknowledged but cannot take it out of Terminated.
pub fn apply(
    request: &[Bytes],
    state: &watch::Sender<ProxyState>,
    counters: &Counters,
) -> (Option<Command>, Vec<Bytes>) {
    let cmd = match parse(request) {
        Ok(c) => c,
        Err(e) => return (None, vec![Bytes::from(format!("ERROR {e}"))]),
    };
    let to = match cmd {
        Command::Statistics => {
            let frames = counters
                .statistics()
                .iter()
                .map(|v| Bytes::copy_from_slice(&v.to_le_bytes()))
                .collect();
            return (Some(cmd), frames);
        }
        Command::Pause => ProxyState::Paused,
        Command::Resume => ProxyState::Active,
        // Set by the caller once the reply is out, so the requester gets it before the exit.
        Command::Terminate => return (Some(cmd), vec![Bytes::new()]),
    };
    state::set(state, to);
    (Some(cmd), vec![Bytes::new()])
}

/// The running control socket; dropping it stops serving.
pub struct Control {
    pub local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Control {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Control {
    /// Binds the REP socket (failing with the endpoint named, like the data sockets) and
    /// starts answering requests.
    pub async fn bind(
        ep: &Endpoint,
        mech: Mechanism,
        state: watch::Sender<ProxyState>,
        counters: Arc<Counters>,
    ) -> Result<Control, OpenError> {
        let open_err = |reason: String| OpenError::bind(ep.to_string(), reason);
        // Bound here rather than by the crate so a failure reads like the data sockets' and
        // the port-0 address is known.
        let (listener, _) =
            net::bind(ep).await.map_err(|e| open_err(net::describe_bind_error(&e)))?;
        let local_addr = listener.local_addr().map_err(|e| open_err(e.to_string()))?;
        let task = tokio::spawn(serve(listener, mech, state, counters));
        Ok(Control { local_addr, task })
    }
}

async fn serve(
    listener: TcpListener,
    mech: Mechanism,
    state: watch::Sender<ProxyState>,
    counters: Arc<Counters>,
) {
    // Runs for the life of the process (STATISTICS stays available during a drain); the
    // task is aborted when the proxy exits. The semaphore bounds what idle or hostile
    // requesters can hold.
    let slots = Arc::new(Semaphore::new(CONTROL_MAX_CONNECTIONS));
    let once = Arc::new(OncePerPeer::new(REFUSAL_LOG_QUIET, REFUSAL_LOG_PEERS));
    // The allow-list watcher ends when this task does (its stop sender is dropped).
    let (_stop, stopped) = watch::channel(false);
    if let Mechanism::Server(s) = &mech
        && let curve::Allow::List(l) = &s.allow
    {
        tokio::spawn(l.clone().watch(crate::engine::tunables::ALLOW_LIST_POLL_INTERVAL, stopped));
    }
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "control accept failed");
                tokio::time::sleep(crate::engine::tunables::ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "control connection refused: too many requesters");
            continue;
        };
        let (state, counters, mech, once) =
            (state.clone(), counters.clone(), mech.clone(), once.clone());
        tokio::spawn(async move {
            match requester(stream, &mech, &state, &counters).await {
                Err(Refusal::Handshake(e)) => {
                    counters.handshake_failed("control", mech.name(), e.reason());
                    crate::policy::sockets::log_refusal(
                        &once,
                        "control",
                        &mech,
                        &e,
                        Some(peer.into()),
                    );
                }
                Err(Refusal::After(e @ zmtp::WireError::Mechanism { .. })) => {
                    counters.handshake_failed("control", mech.name(), e.reason());
                    crate::policy::sockets::log_refusal(
                        &once,
                        "control",
                        &mech,
                        &e,
                        Some(peer.into()),
                    );
                }
                Err(Refusal::After(e)) => {
                    tracing::debug!(%peer, error = %e, "control requester dropped")
                }
                Ok(()) => {}
            }
            drop(slot);
        });
    }
}

/// How a requester's connection ended badly: in its handshake (a refusal, counted), or later.
enum Refusal {
    Handshake(zmtp::WireError),
    After(zmtp::WireError),
}

impl From<zmtp::WireError> for Refusal {
    fn from(e: zmtp::WireError) -> Self {
        Refusal::After(e)
    }
}

/// One REQ (or DEALER) requester: REP semantics per connection, so each request's reply goes
/// back with the envelope it came with.
async fn requester(
    stream: TcpStream,
    mech: &Mechanism,
    state: &watch::Sender<ProxyState>,
    counters: &Counters,
) -> Result<(), Refusal> {
    crate::policy::sockets::tune(&stream, &zmq_proxy_api::options::SocketOptions::default());
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = BytesMut::with_capacity(1024);
    let shake =
        curve::handshake(mech, &mut rd, &mut wr, SocketType::Rep, &mut buf, CONTROL_MAX_BYTES);
    let done = tokio::time::timeout(HANDSHAKE_TIMEOUT, shake)
        .await
        .unwrap_or(Err(zmtp::WireError::Timeout(HANDSHAKE_TIMEOUT)))
        .map_err(Refusal::Handshake)?;
    let mut dec = zmtp::Decoder::for_revision(CONTROL_MAX_BYTES, done.peer.revision);
    let mut sealer = None;
    let mut listed = None;
    if let Some(session) = done.session {
        dec.set_opener(Box::new(session.opener));
        sealer = Some(session.sealer);
        listed = session.client_key;
    }
    // Whoever may connect here can PAUSE and TERMINATE the proxy: a requester whose key leaves
    // the allow-list is cut off at once, as on the data sockets.
    let serve = async {
        loop {
            while let Some(item) = dec.decode(&mut buf)? {
                let frames = match item {
                    Item::Command(raw) => {
                        let cmd = zmtp::parse_command(raw)?;
                        if let Some(pong) = zmtp::pong_body(&cmd) {
                            let mut out = BytesMut::new();
                            match &mut sealer {
                                None => zmtp::encode_command(&pong, &mut out),
                                Some(s) => s
                                    .seal_command(&pong, &mut out)
                                    .map_err(zmtp::WireError::from)?,
                            }
                            wr.write_all(&out).await.map_err(zmtp::WireError::from)?;
                        }
                        continue;
                    }
                    Item::Message(frames) => frames,
                };
                // The envelope runs up to the empty delimiter; without one the request is not
                // REQ-shaped and, as libzmq's REP does, is discarded.
                let Some(delim) = frames.iter().position(Bytes::is_empty) else { continue };
                let (envelope, body) = frames.split_at(delim + 1);
                let (cmd, reply) = apply(body, state, counters);
                log_command(cmd, &reply);
                let mut out = BytesMut::new();
                let frames: Vec<Bytes> = envelope.iter().cloned().chain(reply).collect();
                match &mut sealer {
                    None => zmtp::encode_message(&frames, &mut out),
                    Some(s) => s.seal_message(&frames, &mut out).map_err(zmtp::WireError::from)?,
                }
                // A requester that stops reading loses its reply, not the proxy's attention.
                let sent = tokio::time::timeout(CONTROL_REPLY_TIMEOUT, wr.write_all(&out)).await;
                if cmd == Some(Command::Terminate) {
                    state.send_replace(ProxyState::Terminated);
                }
                match sent {
                    Ok(r) => r.map_err(zmtp::WireError::from)?,
                    Err(_) => {
                        return Err(zmtp::WireError::Handshake("reply timed out".into()).into());
                    }
                }
            }
            buf.reserve(READ_CHUNK_BYTES.min(CONTROL_MAX_BYTES));
            let n = tokio::io::AsyncReadExt::read_buf(&mut rd, &mut buf)
                .await
                .map_err(zmtp::WireError::from)?;
            if n == 0 {
                return Ok(());
            }
        }
    };
    tokio::select! {
        served = serve => served,
        _ = curve::revoked(listed) => {
            tracing::info!("control requester's CURVE key removed from the allow-list; disconnecting");
            Ok(())
        }
    }
}

fn log_command(cmd: Option<Command>, reply: &[Bytes]) {
    match cmd {
        // Monitoring polls STATISTICS; only state changes are worth an info line.
        Some(Command::Statistics) => tracing::debug!("control command STATISTICS"),
        Some(c) => tracing::info!(command = ?c, "control command"),
        None => tracing::warn!(
            reply = %reply.first().map(|r| String::from_utf8_lossy(r)).unwrap_or_default(),
            "control command refused"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    fn req(s: &[&str]) -> Vec<Bytes> {
        s.iter().map(|f| Bytes::copy_from_slice(f.as_bytes())).collect()
    }

    #[test]
    fn commands_are_exact_single_frames() {
        assert_eq!(parse(&req(&["PAUSE"])), Ok(Command::Pause));
        assert_eq!(parse(&req(&["STATISTICS"])), Ok(Command::Statistics));
        assert!(parse(&req(&["pause"])).is_err());
        assert!(parse(&req(&["PAUSE "])).is_err());
        assert!(parse(&req(&["PAUSE", "x"])).is_err());
        assert!(parse(&req(&[""])).is_err());
        assert!(parse(&[]).is_err());
    }

    #[test]
    fn pause_resume_change_state_and_terminated_is_final() {
        let (tx, _rx) = watch::channel(ProxyState::Active);
        let c = Counters::default();
        let (_, r) = apply(&req(&["PAUSE"]), &tx, &c);
        assert_eq!(r, vec![Bytes::new()]);
        assert_eq!(*tx.borrow(), ProxyState::Paused);
        let (_, r) = apply(&req(&["BOGUS"]), &tx, &c);
        assert!(r.len() == 1 && r[0].starts_with(b"ERROR "), "{r:?}");
        assert_eq!(*tx.borrow(), ProxyState::Paused, "an unknown command changes nothing");
        apply(&req(&["RESUME"]), &tx, &c);
        assert_eq!(*tx.borrow(), ProxyState::Active);
        tx.send_replace(ProxyState::Terminated);
        apply(&req(&["PAUSE"]), &tx, &c);
        assert_eq!(*tx.borrow(), ProxyState::Terminated);
    }

    #[test]
    fn statistics_are_eight_little_endian_u64_in_libzmq_order() {
        let (tx, _rx) = watch::channel(ProxyState::Active);
        let c = Counters::default();
        c.frontend.add_recv(1, 3, 300);
        c.frontend.add_sent(1, 5, 0x0102_0304_0506_0708);
        c.backend.add_recv(1, 7, 70);
        c.backend.add_sent(1, 9, 90);
        c.capture_sent_msgs.fetch_add(1000, Relaxed);
        let (_, r) = apply(&req(&["STATISTICS"]), &tx, &c);
        let got: Vec<u64> =
            r.iter().map(|f| u64::from_le_bytes(f[..].try_into().expect("8 bytes"))).collect();
        assert_eq!(got, vec![3, 300, 5, 0x0102_0304_0506_0708, 7, 70, 9, 90]);
        assert_eq!(r[3][0], 0x08, "little-endian");
    }
}
