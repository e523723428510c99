//! CURVE refusals only a hand-made client can cause (libzmq never sends them): a MESSAGE that
//! fails authentication and a replayed nonce, against the in-process proxy. Each is dropped,
//! counted by reason, nothing of it forwarded, and an honest client still gets through.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zeromq::{PullSocket, Socket};
use zmq_proxy::curve::{self, Allow, CurveClient, CurveServer, Mechanism, SecretKey, Security};
use zmq_proxy_api::socket::SocketType;

use common::*;

const SERVER_SECRET: &str = "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6";
const CLIENT_SECRET: &str = "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs";

fn client() -> Mechanism {
    let secret = SecretKey::from_z85(CLIENT_SECRET).expect("client key");
    let server = SecretKey::from_z85(SERVER_SECRET).expect("server key").public_key();
    Mechanism::Client(Arc::new(CurveClient {
        public: secret.public_key(),
        secret,
        server,
        ephemeral: false,
    }))
}

/// A CURVE PUSH peer made from the proxy's own client side: handshake, then raw frames.
async fn curve_push(addr: std::net::SocketAddr) -> (TcpStream, curve::Sealer) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = s.split();
    let mut buf = BytesMut::new();
    let done = curve::handshake(&client(), &mut rd, &mut wr, SocketType::Push, &mut buf, 1 << 20)
        .await
        .expect("handshake");
    (s, done.session.expect("session").sealer)
}

async fn closed_by_proxy(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 256];
    for _ in 0..100 {
        match tokio::time::timeout(DEADLINE, s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
    false
}

#[tokio::test]
async fn tampered_and_replayed_messages_drop_the_connection_and_are_counted() {
    let secret = SecretKey::from_z85(SERVER_SECRET).expect("server key");
    let mut cfg = config(SocketType::Pull, SocketType::Push);
    cfg.frontend.security = Security {
        accepted: Mechanism::Server(Arc::new(CurveServer {
            public: secret.public_key(),
            secret,
            allow: Allow::Any,
        })),
        connected: Mechanism::Null,
    };
    let proxy = start(cfg).await;
    let mut consumer = PullSocket::new();
    Socket::connect(&mut consumer, &ep(&proxy.backend_addrs)).await.expect("connect");
    let counters = proxy.counters();
    let count = |reason: &str| {
        counters
            .handshake_failures_by()
            .iter()
            .filter(|((s, m, r), _)| *s == "frontend" && *m == "CURVE" && *r == reason)
            .map(|(_, v)| *v)
            .sum::<u64>()
    };

    // Tampered: one flipped bit in the box.
    let (mut s, mut sealer) = curve_push(proxy.frontend_addrs[0]).await;
    let mut out = BytesMut::new();
    sealer.seal_message(&[Bytes::from_static(b"honest")], &mut out).expect("seal");
    let mut bad = BytesMut::new();
    sealer.seal_message(&[Bytes::from_static(b"forged")], &mut bad).expect("seal");
    let last = bad.len() - 1;
    bad[last] ^= 0x40;
    out.extend_from_slice(&bad);
    s.write_all(&out).await.expect("write");
    assert!(closed_by_proxy(&mut s).await, "proxy kept a connection with a forged MESSAGE");
    wait_until("message_auth_failed counted", || count("message_auth_failed") == 1).await;
    let m = recv(&mut consumer).await;
    assert_eq!(m.get(0).map(|f| &f[..]), Some(&b"honest"[..]));

    // Replayed: the same sealed frame twice.
    let (mut s, mut sealer) = curve_push(proxy.frontend_addrs[0]).await;
    let mut one = BytesMut::new();
    sealer.seal_message(&[Bytes::from_static(b"once")], &mut one).expect("seal");
    let twice = [one.clone(), one].concat();
    s.write_all(&twice).await.expect("write");
    assert!(closed_by_proxy(&mut s).await, "proxy kept a connection replaying a nonce");
    wait_until("bad_nonce counted", || count("bad_nonce") == 1).await;
    let m = recv(&mut consumer).await;
    assert_eq!(m.get(0).map(|f| &f[..]), Some(&b"once"[..]));
    assert!(recv_within(&mut consumer, Duration::from_millis(200)).await.is_none());

    // An honest client still gets through.
    let (mut s, mut sealer) = curve_push(proxy.frontend_addrs[0]).await;
    let mut out = BytesMut::new();
    sealer.seal_message(&[Bytes::from_static(b"after"), Bytes::new()], &mut out).expect("seal");
    s.write_all(&out).await.expect("write");
    let m = recv(&mut consumer).await;
    assert_eq!(m.get(0).map(|f| &f[..]), Some(&b"after"[..]));
    assert_eq!(counters.snapshot().handshake_failures, 2);
}
