//! XSUB/XPUB forwarder: subscriptions are refcounted across subscribers like libzmq's XPUB,
//! and a stalled subscriber loses its own messages without slowing anyone else.

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use common::*;
use zeromq::{PubSocket, Socket, SocketSend, SubSocket, XPubSocket};
use zmq_proxy::Proxy;
use zmq_proxy_api::socket::SocketType;

async fn forwarder(hwm: usize) -> Proxy {
    let mut cfg = config(SocketType::Xsub, SocketType::Xpub);
    set_sndhwm(&mut cfg, hwm as u64);
    start(cfg).await
}

async fn subscriber(p: &Proxy, topic: &str) -> SubSocket {
    let mut s = SubSocket::new();
    s.connect(&ep(&p.backend_addrs)).await.expect("subscriber connects");
    s.subscribe(topic).await.expect("subscribe");
    s
}

/// The next subscription message the upstream publisher sees: (subscribe?, topic).
async fn upstream_sees(up: &mut XPubSocket) -> (bool, Vec<u8>) {
    let f = frames(&recv(up).await);
    assert_eq!(f.len(), 1, "{f:?}");
    (f[0][0] == 1, f[0][1..].to_vec())
}

async fn publish_until_received(up: &mut XPubSocket, s: &mut SubSocket, body: &[u8]) {
    // The subscription travels upstream asynchronously; publish until it has arrived.
    let start = std::time::Instant::now();
    loop {
        up.send(msg(&[body])).await.expect("publish");
        if let Some(m) = recv_within(s, Duration::from_millis(50)).await {
            assert_eq!(frames(&m), vec![body.to_vec()]);
            return;
        }
        assert!(start.elapsed() < DEADLINE, "publication never reached the subscriber");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_by_one_subscriber_keeps_topic_for_others() {
    let p = forwarder(1000).await;
    let mut up = XPubSocket::new();
    up.connect(&ep(&p.frontend_addrs)).await.expect("publisher connects");
    let mut s1 = subscriber(&p, "A").await;
    let mut s2 = subscriber(&p, "A").await;
    assert_eq!(upstream_sees(&mut up).await, (true, b"A".to_vec()), "first subscribe goes up");
    wait_until("both subscriptions are in", || p.backend().subscriber_topics() == 2).await;
    publish_until_received(&mut up, &mut s1, b"A1").await;
    assert_eq!(frames(&recv(&mut s2).await), vec![b"A1".to_vec()]);

    s1.unsubscribe("A").await.expect("unsubscribe");
    wait_until("s1's unsubscribe is in", || p.backend().subscriber_topics() == 1).await;
    // A later subscription is the next thing upstream sees: the cancel of A was not sent.
    s2.subscribe("Z").await.expect("subscribe Z");
    assert_eq!(upstream_sees(&mut up).await, (true, b"Z".to_vec()));
    up.send(msg(&[b"A2"])).await.expect("publish");
    assert_eq!(frames(&recv(&mut s2).await), vec![b"A2".to_vec()]);
    assert!(recv_within(&mut s1, Duration::from_millis(100)).await.is_none(), "s1 left A");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_disconnect_releases_its_topics_upstream() {
    let p = forwarder(1000).await;
    let mut up = XPubSocket::new();
    up.connect(&ep(&p.frontend_addrs)).await.expect("publisher connects");
    let s1 = subscriber(&p, "A").await;
    assert_eq!(upstream_sees(&mut up).await, (true, b"A".to_vec()));
    let mut s2 = subscriber(&p, "A").await;
    s2.subscribe("B").await.expect("subscribe B");
    assert_eq!(upstream_sees(&mut up).await, (true, b"B".to_vec()));

    // s2 vanishes without unsubscribing: B has no subscriber left, A still has s1.
    drop(s2);
    assert_eq!(upstream_sees(&mut up).await, (false, b"B".to_vec()));
    drop(s1);
    assert_eq!(upstream_sees(&mut up).await, (false, b"A".to_vec()));

    let mut s3 = subscriber(&p, "A").await;
    assert_eq!(upstream_sees(&mut up).await, (true, b"A".to_vec()));
    publish_until_received(&mut up, &mut s3, b"A3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_subscriber_does_not_stall_others() {
    let p = forwarder(16).await;
    let counters = p.counters();
    let mut up = PubSocket::new();
    up.connect(&ep(&p.frontend_addrs)).await.expect("publisher connects");
    let _stalled = subscriber(&p, "").await; // never reads
    let mut live = subscriber(&p, "").await;
    wait_until("both subscribers are in", || p.backend().subscriber_topics() == 2).await;
    // Publish until the (single, empty) subscription reached the publisher.
    let start = std::time::Instant::now();
    loop {
        up.send(msg(&[b"probe"])).await.expect("publish");
        if recv_within(&mut live, Duration::from_millis(50)).await.is_some() {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "subscription never reached the publisher");
    }
    while recv_within(&mut live, Duration::from_millis(20)).await.is_some() {}

    // Lock-step 64 KiB publications: the live subscriber gets every one, in order, while the
    // stalled one's buffers and queue fill and its copies are dropped. Counted on the counter,
    // not per publication: the stalled peer's socket buffers drain in bursts (the zeromq crate
    // reads into its own channel), so not every publication after the first drop is dropped.
    let body = vec![1u8; 64 * 1024];
    let mut i = 0u32;
    while counters.dropped_peer_full.load(Relaxed) < 20 {
        assert!(i < 5000, "the stalled subscriber's copies were never dropped 20 times");
        let mut m = i.to_be_bytes().to_vec();
        m.extend_from_slice(&body);
        up.send(msg(&[&m])).await.expect("publish");
        let got = frames(&recv(&mut live).await);
        assert_eq!(got[0][..4], i.to_be_bytes(), "live subscriber got message {i}");
        i += 1;
    }
    up.send(msg(&[b"still serving"])).await.expect("publish");
    assert_eq!(frames(&recv(&mut live).await), vec![b"still serving".to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_pub_forwarder_subscribes_to_everything() {
    let p = start(config(SocketType::Sub, SocketType::Pub)).await;
    let mut up = XPubSocket::new();
    up.connect(&ep(&p.frontend_addrs)).await.expect("publisher connects");
    assert_eq!(upstream_sees(&mut up).await, (true, b"".to_vec()));
    let mut s = subscriber(&p, "x").await;
    wait_until("the subscription is in", || p.backend().subscriber_topics() == 1).await;
    up.send(msg(&[b"y-not-wanted"])).await.expect("publish");
    up.send(msg(&[b"x-wanted"])).await.expect("publish");
    assert_eq!(frames(&recv(&mut s).await), vec![b"x-wanted".to_vec()]);
    let seen: HashSet<u64> = [p.counters().frontend.recv_frames.load(Relaxed)].into();
    assert!(seen.contains(&2), "both publications reached the proxy: {seen:?}");
}
