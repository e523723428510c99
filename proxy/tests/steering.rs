//! The control socket in process, driven by the `zeromq` crate's REQ socket (the pytest tier
//! drives it with libzmq's): PAUSE holds traffic and RESUME releases it without loss,
//! STATISTICS is exact and little-endian, an unknown command is refused without effect,
//! TERMINATE ends the proxy's run.

mod common;

use std::time::Duration;

use common::*;
use zeromq::{PullSocket, PushSocket, ReqSocket, Socket, SocketSend, ZmqMessage};
use zmq_proxy::Ops;
use zmq_proxy::{Proxy, ProxyState};
use zmq_proxy_api::endpoint::Endpoint;
use zmq_proxy_api::socket::SocketType;

struct Rig {
    proxy: Proxy,
    ops: Ops,
    control: ReqSocket,
    producer: PushSocket,
    consumer: PullSocket,
}

async fn rig() -> Rig {
    let mut cfg = config(SocketType::Pull, SocketType::Push);
    cfg.control_bind = Some(Endpoint { host: "127.0.0.1".into(), port: 0 });
    let proxy = start(cfg.clone()).await;
    let ops = Ops::start(&cfg, &proxy).await.expect("control binds");
    let mut control = ReqSocket::new();
    let addr = ops.control_addr().expect("control bound");
    control.connect(&format!("tcp://{addr}")).await.expect("control connects");
    let mut consumer = PullSocket::new();
    consumer.connect(&ep(&proxy.backend_addrs)).await.expect("consumer connects");
    let mut producer = PushSocket::new();
    producer.connect(&ep(&proxy.frontend_addrs)).await.expect("producer connects");
    let backend = proxy.backend().clone();
    wait_until("consumer handshake", || backend.peer_count() == 1).await;
    Rig { proxy, ops, control, producer, consumer }
}

async fn request(c: &mut ReqSocket, cmd: &str) -> Vec<Vec<u8>> {
    c.send(ZmqMessage::from(cmd)).await.expect("request sent");
    frames(&recv(c).await)
}

#[tokio::test]
async fn pause_holds_messages_and_resume_delivers_them_all() {
    let mut r = rig().await;
    assert_eq!(request(&mut r.control, "PAUSE").await, vec![Vec::<u8>::new()]);
    assert_eq!(*r.proxy.state().borrow(), ProxyState::Paused);
    assert!(r.ops.observed.paused());
    for i in 0..100u32 {
        r.producer.send(msg(&[&i.to_be_bytes()])).await.expect("send");
    }
    assert!(
        recv_within(&mut r.consumer, Duration::from_millis(300)).await.is_none(),
        "a message crossed a paused proxy"
    );
    assert_eq!(r.proxy.counters().statistics()[0], 0, "nothing is read while paused");
    assert_eq!(request(&mut r.control, "RESUME").await, vec![Vec::<u8>::new()]);
    for i in 0..100u32 {
        assert_eq!(frames(&recv(&mut r.consumer).await), vec![i.to_be_bytes().to_vec()]);
    }
}

#[tokio::test]
async fn statistics_reply_is_eight_little_endian_counters() {
    let mut r = rig().await;
    r.producer.send(msg(&[b"abc", b"", b"defgh"])).await.expect("send");
    recv(&mut r.consumer).await;
    let reply = request(&mut r.control, "STATISTICS").await;
    let got: Vec<u64> = reply
        .iter()
        .map(|f| u64::from_le_bytes(f.as_slice().try_into().expect("8-byte frame")))
        .collect();
    assert_eq!(got, vec![3, 8, 0, 0, 0, 0, 3, 8]);
}

#[tokio::test]
async fn unknown_command_is_refused_and_changes_nothing() {
    let mut r = rig().await;
    let before = r.proxy.counters().statistics();
    let reply = request(&mut r.control, "PAUSED").await;
    assert_eq!(reply.len(), 1);
    assert!(reply[0].starts_with(b"ERROR"), "{:?}", String::from_utf8_lossy(&reply[0]));
    assert_eq!(*r.proxy.state().borrow(), ProxyState::Active);
    assert_eq!(r.proxy.counters().statistics(), before);
    r.producer.send(msg(&[b"flows"])).await.expect("send");
    assert_eq!(frames(&recv(&mut r.consumer).await), vec![b"flows".to_vec()]);
}

#[tokio::test]
async fn terminate_replies_then_ends_the_run() {
    let mut r = rig().await;
    assert_eq!(request(&mut r.control, "TERMINATE").await, vec![Vec::<u8>::new()]);
    tokio::time::timeout(DEADLINE, r.proxy.terminated()).await.expect("terminated");
    // A stopping proxy stays stopping whatever the control socket is told next.
    assert_eq!(request(&mut r.control, "RESUME").await, vec![Vec::<u8>::new()]);
    assert_eq!(*r.proxy.state().borrow(), ProxyState::Terminated);
}

#[tokio::test]
async fn control_bind_failure_names_the_endpoint() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let mut cfg = config(SocketType::Pull, SocketType::Push);
    cfg.control_bind = Some(Endpoint { host: "127.0.0.1".into(), port });
    let proxy = start(cfg.clone()).await;
    let Err(e) = Ops::start(&cfg, &proxy).await else { panic!("bind must fail") };
    assert_eq!(e.to_string(), format!("cannot bind tcp://127.0.0.1:{port}: address in use"));
}

/// A requester that claims a 2^46-byte frame (the packet that aborts the `zeromq` crate's
/// sockets) loses its own connection; the control socket keeps answering everyone else.
#[tokio::test]
async fn oversized_control_frame_drops_only_that_requester() {
    let mut r = rig().await;
    let addr = r.ops.control_addr().expect("control bound");
    let mut hostile = RawPeer::handshake(&format!("tcp://{addr}"), SocketType::Req).await;
    let mut header = vec![0x02u8];
    header.extend_from_slice(&(1u64 << 46).to_be_bytes());
    header.extend_from_slice(b"abc");
    hostile.write(&header).await;
    assert_eq!(request(&mut r.control, "PAUSE").await, vec![Vec::<u8>::new()]);
    assert_eq!(*r.proxy.state().borrow(), ProxyState::Paused);
    assert_eq!(request(&mut r.control, "STATISTICS").await.len(), 8);
}
