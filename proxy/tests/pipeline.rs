//! PULL/PUSH pipeline: a worker that dies is noticed even though the proxy only writes to it,
//! and tasks queued to it are handed to the remaining workers.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use common::*;
use zeromq::{PullSocket, PushSocket, Socket, SocketSend};
use zmq_proxy::Proxy;
use zmq_proxy_api::socket::SocketType;

async fn pipeline(hwm: usize) -> Proxy {
    let mut cfg = config(SocketType::Pull, SocketType::Push);
    set_sndhwm(&mut cfg, hwm as u64);
    start(cfg).await
}

async fn worker(p: &Proxy) -> PullSocket {
    let mut w = PullSocket::new();
    w.connect(&ep(&p.backend_addrs)).await.expect("worker connects");
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_pull_worker_does_not_swallow_tasks() {
    let p = pipeline(1000).await;
    let counters = p.counters();
    let mut producer = PushSocket::new();
    producer.connect(&ep(&p.frontend_addrs)).await.expect("producer connects");
    // A raw peer, because dropping a zeromq-crate PullSocket does not close its connection.
    let dead = RawPeer::handshake(&ep(&p.backend_addrs), SocketType::Pull).await;
    let mut live = worker(&p).await;
    wait_until("both workers are in", || p.backend().peer_count() == 2).await;

    drop(dead);
    // The proxy never reads from a PULL worker, but it watches the connection anyway.
    wait_until("the dead worker is noticed", || p.backend().peer_count() == 1).await;
    for i in 0..100u32 {
        producer.send(msg(&[&i.to_be_bytes()])).await.expect("task");
    }
    for i in 0..100u32 {
        assert_eq!(frames(&recv(&mut live).await), vec![i.to_be_bytes().to_vec()]);
    }
    assert_eq!(counters.snapshot().dropped_msgs, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_queued_to_a_dead_worker_are_rerouted() {
    let p = pipeline(4).await;
    let counters = p.counters();
    let mut producer = PushSocket::new();
    producer.connect(&ep(&p.frontend_addrs)).await.expect("producer connects");
    let stalled = RawPeer::handshake_small_buffer(&ep(&p.backend_addrs), SocketType::Pull).await;
    wait_until("the stalled worker is in", || p.backend().peer_count() == 1).await;

    // Feed the stalled worker until its kernel buffers and its proxy queue are full.
    let task = vec![3u8; 64 * 1024];
    let mut total = 0u64;
    let mut last = u64::MAX;
    let mut still = 0;
    let started = std::time::Instant::now();
    while still < 3 {
        assert!(started.elapsed() < DEADLINE, "the stalled worker never filled up");
        let sent = counters.backend.sent_frames.load(Relaxed);
        if p.backend().backlog() >= 4
            && sent == last
            && counters.frontend.recv_frames.load(Relaxed) > sent
        {
            still += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        still = 0;
        last = sent;
        producer.send(msg(&[&task])).await.expect("task");
        total += 1;
    }
    let written_to_stalled =
        counters.backend.sent_frames.load(Relaxed) - p.backend().backlog() as u64;

    let mut live = worker(&p).await;
    wait_until("the live worker is in", || p.backend().peer_count() == 2).await;
    stalled.reset();
    wait_until("the stalled worker is gone", || p.backend().peer_count() == 1).await;
    // The batch the proxy was writing when the worker died is lost with it (and counted);
    // everything still queued behind it is re-routed.
    wait_until("the interrupted write is counted", || counters.dropped_peer_gone.load(Relaxed) > 0)
        .await;
    let lost = counters.dropped_peer_gone.load(Relaxed);
    let expected = total - written_to_stalled - lost;
    eprintln!("total {total}, written to the dead worker {written_to_stalled}, lost {lost}");
    for _ in 0..expected {
        assert_eq!(frames(&recv(&mut live).await)[0].len(), task.len());
    }
    wait_until("every task is accounted for", || p.backend().backlog() == 0).await;
    producer.send(msg(&[b"after"])).await.expect("task");
    assert_eq!(frames(&recv(&mut live).await), vec![b"after".to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reversed_orientation_forwards_backend_to_frontend() {
    let p = start(config(SocketType::Push, SocketType::Pull)).await;
    let mut producer = PushSocket::new();
    producer.connect(&ep(&p.backend_addrs)).await.expect("producer connects");
    let mut w = PullSocket::new();
    w.connect(&ep(&p.frontend_addrs)).await.expect("worker connects");
    producer.send(msg(&[b"task", b"two frames"])).await.expect("task");
    assert_eq!(frames(&recv(&mut w).await), vec![b"task".to_vec(), b"two frames".to_vec()]);
    let s = p.counters().snapshot();
    assert_eq!((s.backend_recv_msgs, s.frontend_sent_msgs), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_proxy_holds_messages_until_resumed() {
    let p = pipeline(1000).await;
    let counters = p.counters();
    let mut producer = PushSocket::new();
    producer.connect(&ep(&p.frontend_addrs)).await.expect("producer connects");
    let mut w = worker(&p).await;
    producer.send(msg(&[b"before"])).await.expect("task");
    assert_eq!(frames(&recv(&mut w).await), vec![b"before".to_vec()]);

    p.state().send_replace(zmq_proxy::ProxyState::Paused);
    producer.send(msg(&[b"while paused"])).await.expect("task");
    assert!(recv_within(&mut w, Duration::from_millis(200)).await.is_none(), "paused");
    assert_eq!(counters.frontend.recv_frames.load(Relaxed), 1, "not even read while paused");

    p.state().send_replace(zmq_proxy::ProxyState::Active);
    assert_eq!(frames(&recv(&mut w).await), vec![b"while paused".to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_endpoints_reach_bound_peers_and_drain_completes() {
    let mut w = PullSocket::new();
    let bound = w.bind("tcp://127.0.0.1:0").await.expect("worker binds");
    let zeromq::Endpoint::Tcp(_, port) = bound else { panic!("tcp endpoint") };
    let mut cfg = config(SocketType::Pull, SocketType::Push);
    cfg.backend.bind.clear();
    cfg.backend.connect =
        vec![zmq_proxy_api::endpoint::Endpoint { host: "127.0.0.1".into(), port }.into()];
    let p = start(cfg).await;
    let mut producer = PushSocket::new();
    producer.connect(&ep(&p.frontend_addrs)).await.expect("producer connects");
    for i in 0..50u32 {
        producer.send(msg(&[&i.to_be_bytes()])).await.expect("task");
    }
    for i in 0..50u32 {
        assert_eq!(frames(&recv(&mut w).await), vec![i.to_be_bytes().to_vec()]);
    }
    // The crate's PUSH never reads and its PULL never closes on end of stream, so neither sees
    // the drain's FIN: the producer leaves first, and the consumer's connection holds the drain
    // to its timeout with everything written out, which is what is checked here.
    drop(producer);
    common::wait_until("the producer's connection closed", || p.frontend().connection_count() == 0)
        .await;
    let started = std::time::Instant::now();
    let (_, s) = p.shutdown(Duration::from_secs(1), std::future::pending()).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a connect endpoint held the drain past its timeout"
    );
    assert_eq!((s.backend_sent_msgs, s.undelivered_msgs), (50, 0));
}
