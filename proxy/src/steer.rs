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
//! The socket is the `zeromq` crate's RepSocket: one requester at a time, no per-peer policy
//! to control, so none of the reasons the data sockets have their own engine apply here.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zeromq::{RepSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

use crate::config::{CONTROL_ERROR_BACKOFF, CONTROL_REPLY_TIMEOUT};
use crate::counters::Counters;
use crate::endpoint::Endpoint;
use crate::forward::ProxyState;
use crate::sockets::OpenError;

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
    state.send_if_modified(|s| {
        if *s == ProxyState::Terminated || *s == to {
            return false;
        }
        *s = to;
        true
    });
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
        state: watch::Sender<ProxyState>,
        counters: Arc<Counters>,
    ) -> Result<Control, OpenError> {
        let open_err = |reason: String| OpenError { endpoint: ep.to_string(), reason };
        // Bound here rather than by the crate so a failure reads like the data sockets' and
        // the port-0 address is known.
        let listener = std::net::TcpListener::bind((ep.socket_host(), ep.port))
            .map_err(|e| open_err(describe(&e)))?;
        let local_addr = listener.local_addr().map_err(|e| open_err(e.to_string()))?;
        listener.set_nonblocking(true).map_err(|e| open_err(e.to_string()))?;
        let mut rep = RepSocket::new();
        rep.bind_listener(listener).await.map_err(|e| open_err(e.to_string()))?;
        let task = tokio::spawn(serve(rep, state, counters));
        Ok(Control { local_addr, task })
    }
}

fn describe(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => "address in use".into(),
        std::io::ErrorKind::AddrNotAvailable => "address not available".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

async fn serve(mut rep: RepSocket, state: watch::Sender<ProxyState>, counters: Arc<Counters>) {
    // Runs for the life of the process (STATISTICS stays available during a drain); the
    // task is aborted when the proxy exits.
    loop {
        let request = match rep.recv().await {
            Ok(m) => m,
            Err(e) => {
                // A requester that vanished or sent something REP cannot parse: that
                // requester's problem, not the socket's.
                tracing::debug!(error = %e, "control request failed");
                tokio::time::sleep(CONTROL_ERROR_BACKOFF).await;
                continue;
            }
        };
        let frames = request.into_vec();
        let (cmd, reply) = apply(&frames, &state, &counters);
        match cmd {
            // Monitoring polls STATISTICS; only state changes are worth an info line.
            Some(Command::Statistics) => tracing::debug!("control command STATISTICS"),
            Some(c) => tracing::info!(command = ?c, "control command"),
            None => tracing::warn!(
                reply = %String::from_utf8_lossy(&reply[0]),
                "control command refused"
            ),
        }
        // Never empty: `apply` always returns at least one frame.
        let Ok(msg) = ZmqMessage::try_from(reply) else { continue };
        match tokio::time::timeout(CONTROL_REPLY_TIMEOUT, rep.send(msg)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "control reply not delivered"),
            Err(_) => tracing::debug!("control reply timed out"),
        }
        if cmd == Some(Command::Terminate) {
            state.send_replace(ProxyState::Terminated);
        }
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
        c.frontend.add_recv(3, 300);
        c.frontend.add_sent(5, 0x0102_0304_0506_0708);
        c.backend.add_recv(7, 70);
        c.backend.add_sent(9, 90);
        c.capture_sent_msgs.fetch_add(1000, Relaxed);
        let (_, r) = apply(&req(&["STATISTICS"]), &tx, &c);
        let got: Vec<u64> =
            r.iter().map(|f| u64::from_le_bytes(f[..].try_into().expect("8 bytes"))).collect();
        assert_eq!(got, vec![3, 300, 5, 0x0102_0304_0506_0708, 7, 70, 9, 90]);
        assert_eq!(r[3][0], 0x08, "little-endian");
    }
}
