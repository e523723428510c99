//! Link heartbeats: both ends of each link connection send a ZMTP 3.1 PING every
//! [`FEDERATION_HEARTBEAT_INTERVAL`] and answer the other's PINGs with PONG; a connection whose
//! other end has sent nothing for [`FEDERATION_HEARTBEAT_TIMEOUT`] after a PING of ours, while
//! its read loop waited for bytes, is closed (and counted, and dialed again). The timers are the
//! sockets' own ([`Clock`], [`Liveness`]): a replica frozen with its kernel still taking our
//! bytes, or a network that drops them silently, is noticed within the interval plus the
//! timeout, and a read loop held back by a full pump is never judged silent.

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;
use zmq_proxy_api::heartbeat::Heartbeat;

use crate::engine::curve::{CurveError, Sealer};
use crate::engine::heartbeat::{Clock, Liveness};
use crate::engine::tunables::{FEDERATION_HEARTBEAT_INTERVAL, FEDERATION_HEARTBEAT_TIMEOUT};
use crate::wire::zmtp::{self, Item};

/// The links' heartbeat settings. Our PINGs carry no TTL: each end keeps its own timeout.
pub fn settings() -> Heartbeat {
    Heartbeat {
        interval: Some(FEDERATION_HEARTBEAT_INTERVAL),
        ttl_deciseconds: 0,
        timeout: Some(FEDERATION_HEARTBEAT_TIMEOUT),
    }
}

/// Sends a PING through `send` every interval; resolves when the other end has been silent
/// past the timeout (see the module docs). Never resolves otherwise: run it beside the
/// connection's read and write loops.
pub async fn keep(live: &Liveness, mut send: impl FnMut(Bytes)) {
    let mut clock = Clock::new(settings(), Instant::now());
    while let Some(at) = clock.wake_at() {
        tokio::time::sleep_until(at).await;
        let due = clock.due(Instant::now(), live.seen());
        if due.expired.is_some() {
            return;
        }
        if due.ping {
            send(clock.ping());
        }
    }
    std::future::pending().await
}

/// The PONG answering a decoded item, if it is a PING.
pub fn answer(item: &Item) -> Option<Bytes> {
    let Item::Command(raw) = item else { return None };
    zmtp::pong_body(&zmtp::parse_command(raw.clone()).ok()?)
}

/// Appends one command (PING or PONG body) in ZMTP framing, or sealed in a CURVE MESSAGE box.
pub fn encode(
    body: &[u8],
    out: &mut BytesMut,
    sealer: Option<&mut Sealer>,
) -> Result<(), CurveError> {
    match sealer {
        None => {
            zmtp::encode_command(body, out);
            Ok(())
        }
        Some(s) => s.seal_frame(false, true, body, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::zmtp::Decoder;

    #[test]
    fn a_ping_is_answered_with_a_pong_and_nothing_else_is() {
        let mut buf = BytesMut::new();
        encode(&Clock::new(settings(), Instant::now()).ping(), &mut buf, None).expect("plain");
        let item = Decoder::new(1024).decode(&mut buf).expect("valid").expect("one command");
        let pong = answer(&item).expect("a PING is answered");
        assert_eq!(&pong[..5], b"\x04PONG");
        let mut buf = BytesMut::new();
        encode(&pong, &mut buf, None).expect("plain");
        let item = Decoder::new(1024).decode(&mut buf).expect("valid").expect("one command");
        assert_eq!(answer(&item), None, "a PONG is not answered");
        assert_eq!(answer(&Item::Message(vec![Bytes::from_static(b"PING")])), None);
    }
}
