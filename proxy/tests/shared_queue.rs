//! ROUTER/DEALER shared queue: misbehaving clients and workers never stop the proxy, and each
//! misbehaviour test ends with a normal round trip.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use common::*;
use zeromq::{DealerSocket, Socket, SocketSend, SubSocket};
use zmq_proxy::Proxy;
use zmq_proxy_api::socket::SocketType;

async fn shared_queue() -> Proxy {
    start(config(SocketType::Router, SocketType::Dealer)).await
}

async fn client(p: &Proxy) -> DealerSocket {
    let mut c = DealerSocket::new();
    c.connect(&ep(&p.frontend_addrs)).await.expect("client connects");
    c
}

async fn worker(p: &Proxy) -> DealerSocket {
    let mut w = DealerSocket::new();
    w.connect(&ep(&p.backend_addrs)).await.expect("worker connects");
    w
}

/// Client request -> worker -> reply -> client; the worker echoes with a prefix.
async fn round_trip(c: &mut DealerSocket, w: &mut DealerSocket, body: &[u8]) {
    c.send(msg(&[body])).await.expect("send request");
    let req = recv(w).await;
    let f = frames(&req);
    assert_eq!(f.len(), 2, "routing id + body: {f:?}");
    assert_eq!(f[1], body);
    w.send(msg(&[&f[0], b"re:", body])).await.expect("send reply");
    let rep = recv(c).await;
    assert_eq!(frames(&rep), vec![b"re:".to_vec(), body.to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_to_vanished_client_is_dropped_and_counted() {
    let p = shared_queue().await;
    let counters = p.counters();
    let mut w = worker(&p).await;
    // A raw client, whose close is immediate (a zeromq-crate socket closes lazily).
    let mut gone = RawPeer::handshake(&ep(&p.frontend_addrs), SocketType::Dealer).await;
    gone.send(&[b"who is there"]).await;
    let req = recv(&mut w).await;
    let id = frames(&req)[0].clone();
    drop(gone);
    wait_until("the client's disconnect is seen", || p.frontend().peer_count() == 0).await;
    w.send(msg(&[&id, b"too late"])).await.expect("reply");
    wait_until("the reply is dropped", || counters.dropped_unroutable.load(Relaxed) == 2).await;
    assert_eq!(counters.snapshot().dropped_msgs, 2, "routing id + body frames");

    let mut c = client(&p).await;
    round_trip(&mut c, &mut w, b"still serving").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_before_any_worker_waits_and_is_delivered() {
    let p = shared_queue().await;
    let counters = p.counters();
    let mut c = client(&p).await;
    c.send(msg(&[b"early"])).await.expect("request");
    wait_until("the proxy read the request", || counters.frontend.recv_frames.load(Relaxed) == 2)
        .await;
    assert_eq!(counters.backend.sent_frames.load(Relaxed), 0, "nobody to send to yet");

    let mut w = worker(&p).await;
    let req = recv(&mut w).await;
    assert_eq!(frames(&req)[1], b"early");
    w.send(msg(&[&frames(&req)[0], b"late worker"])).await.expect("reply");
    assert_eq!(frames(&recv(&mut c).await), vec![b"late worker".to_vec()]);
    assert_eq!(counters.snapshot().dropped_msgs, 0);
    round_trip(&mut c, &mut w, b"next").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_reset_mid_message_does_not_stop_proxy() {
    let p = shared_queue().await;
    let counters = p.counters();
    let mut w = worker(&p).await;
    let mut c = client(&p).await;
    round_trip(&mut c, &mut w, b"before").await;

    // A client and a worker each announce a 100-byte frame, send 10 bytes of it, and reset.
    for (addr, t) in
        [(ep(&p.frontend_addrs), SocketType::Dealer), (ep(&p.backend_addrs), SocketType::Dealer)]
    {
        let mut raw = RawPeer::handshake(&addr, t).await;
        raw.write(&[0x00, 100]).await;
        raw.write(&[b'x'; 10]).await;
        raw.reset();
    }
    // And one that dies (FIN) in the middle of a multipart message.
    let mut raw = RawPeer::handshake(&ep(&p.frontend_addrs), SocketType::Dealer).await;
    raw.write(&[0x01, 3, b'a', b'b', b'c']).await;
    drop(raw);

    wait_until("the broken peers are gone", || {
        p.frontend().peer_count() == 1 && p.backend().peer_count() == 1
    })
    .await;
    round_trip(&mut c, &mut w, b"after").await;
    assert_eq!(counters.frontend.recv_frames.load(Relaxed), 4, "partial messages are not counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_flow_while_requests_are_backpressured() {
    let mut cfg = config(SocketType::Router, SocketType::Dealer);
    set_sndhwm(&mut cfg, 4);
    let p = start(cfg).await;
    let counters = p.counters();
    let mut w = worker(&p).await;
    let mut b = client(&p).await;
    b.send(msg(&[b"b's request"])).await.expect("request");
    let b_id = frames(&recv(&mut w).await)[0].clone();

    // The worker stops reading; client A floods until its requests back up in the proxy.
    let mut a = client(&p).await;
    let big = vec![7u8; 256 * 1024];
    let mut sent = 0u64;
    let started = std::time::Instant::now();
    let stuck = |last: &mut u64| {
        // Stuck: the worker's queue is full (4 messages of 2 frames), the pump holds a read
        // request, and nothing reached the worker since the last look.
        let sent_now = counters.backend.sent_frames.load(Relaxed);
        let is = p.backend().backlog() >= 8
            && counters.frontend.recv_frames.load(Relaxed) > sent_now
            && sent_now == *last;
        *last = sent_now;
        is
    };
    // Ten looks 20 ms apart without progress: on a loaded machine a few looks can fall between
    // two of the proxy's writes and mistake a slow pump for a held request.
    let mut last = u64::MAX;
    let mut stuck_looks = 0;
    while stuck_looks < 10 {
        assert!(started.elapsed() < DEADLINE, "requests never backed up");
        if stuck(&mut last) {
            stuck_looks += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        stuck_looks = 0;
        a.send(msg(&[&big])).await.expect("flood");
        sent += 1;
    }
    let held_before =
        counters.frontend.recv_frames.load(Relaxed) - counters.backend.sent_frames.load(Relaxed);

    // Requests are stuck behind the stalled worker, yet its reply to B goes through.
    w.send(msg(&[&b_id, b"reply to b"])).await.expect("reply");
    assert_eq!(frames(&recv(&mut b).await), vec![b"reply to b".to_vec()]);
    let held_after =
        counters.frontend.recv_frames.load(Relaxed) - counters.backend.sent_frames.load(Relaxed);
    assert!(
        held_before >= 2 && held_after >= 2,
        "requests were still held: {held_before} {held_after}"
    );
    eprintln!("flooded {sent} requests of 256 KiB before the proxy held them");

    // Once the worker reads again every flooded request arrives; nothing was dropped.
    for _ in 0..sent {
        assert_eq!(frames(&recv(&mut w).await)[1].len(), big.len());
    }
    assert_eq!(counters.snapshot().dropped_msgs, 0);
    round_trip(&mut a, &mut w, b"after the flood").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_peer_is_dropped_others_served() {
    let p = shared_queue().await;
    let counters = p.counters();
    let mut w = worker(&p).await;
    let mut c = client(&p).await;

    // Plain garbage, a truncated greeting that then stalls, and a valid peer whose first frame
    // header claims 2^62 bytes: each costs only its own connection.
    let mut garbage = RawPeer::connect(&ep(&p.frontend_addrs)).await;
    garbage.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut truncated = RawPeer::connect(&ep(&p.backend_addrs)).await;
    truncated.write(&zmq_proxy::zmtp::greeting()[..20]).await;
    let mut liar = RawPeer::handshake(&ep(&p.frontend_addrs), SocketType::Dealer).await;
    let mut hdr = vec![0x02];
    hdr.extend_from_slice(&(1u64 << 62).to_be_bytes());
    liar.write(&hdr).await;

    wait_until("garbage and the liar are refused", || {
        counters.handshake_failures.load(Relaxed) == 1
            && counters.protocol_errors.load(Relaxed) == 1
    })
    .await;
    round_trip(&mut c, &mut w, b"served while a handshake stalls").await;
    drop(truncated);
    round_trip(&mut c, &mut w, b"and after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_sees_both_directions() {
    let mut cfg = config(SocketType::Router, SocketType::Dealer);
    cfg.capture = Some(local_socket(SocketType::Pub));
    let p = start(cfg).await;
    let counters = p.counters();
    let mut tap = SubSocket::new();
    tap.connect(&ep(&p.capture_addrs)).await.expect("tap connects");
    tap.subscribe("").await.expect("subscribe");
    wait_until("the tap's subscription is in", || {
        p.capture().is_some_and(|c| c.subscriber_topics() == 1)
    })
    .await;

    let mut w = worker(&p).await;
    let mut c = client(&p).await;
    round_trip(&mut c, &mut w, b"ping").await;

    let req = frames(&recv(&mut tap).await);
    assert_eq!(req.len(), 2, "request with its routing id: {req:?}");
    assert_eq!(req[1], b"ping");
    let rep = frames(&recv(&mut tap).await);
    assert_eq!(rep, vec![req[0].clone(), b"re:".to_vec(), b"ping".to_vec()]);
    let s = counters.snapshot();
    assert_eq!(s.capture_sent_msgs, 5);
    assert_eq!(s.capture_sent_msgs, s.frontend_recv_msgs + s.backend_recv_msgs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_counts_what_could_not_be_delivered() {
    let p = shared_queue().await;
    let counters = p.counters();
    let mut c = client(&p).await;
    c.send(msg(&[b"nobody will take this"])).await.expect("request");
    wait_until("the proxy read the request", || counters.frontend.recv_frames.load(Relaxed) == 2)
        .await;
    let started = std::time::Instant::now();
    let (ending, s) = p.shutdown(Duration::from_millis(300), std::future::pending()).await;
    assert_eq!(ending, zmq_proxy::Ending::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(s.undelivered_msgs, 2, "routing id + body");
    assert_eq!(s.frontend_recv_msgs, s.backend_sent_msgs + s.dropped_msgs + s.undelivered_msgs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_answers_every_request_it_read_and_ends_drained() {
    let p = shared_queue().await;
    let counters = p.counters();
    let mut w = worker(&p).await;
    let mut c = client(&p).await;
    round_trip(&mut c, &mut w, b"warm up").await;
    for i in 0..200u32 {
        c.send(msg(&[&i.to_be_bytes()])).await.expect("request");
    }
    wait_until("the proxy read every request", || {
        counters.frontend.recv_frames.load(Relaxed) == 2 + 400
    })
    .await;
    // The drain keeps the client's connection and the worker's open until every request it
    // read has its reply, which the worker sends only now. (The crate's sockets never close on
    // the FIN that follows, so the drain then runs to its timeout: the ending is not checked.)
    let drain = tokio::spawn(p.shutdown(Duration::from_secs(2), std::future::pending()));
    for i in 0..200u32 {
        let f = frames(&recv(&mut w).await);
        assert_eq!(f[1], i.to_be_bytes());
        w.send(msg(&[&f[0], b"re:", &f[1]])).await.expect("reply");
    }
    for i in 0..200u32 {
        assert_eq!(frames(&recv(&mut c).await), vec![b"re:".to_vec(), i.to_be_bytes().to_vec()]);
    }
    let (_, s) = drain.await.expect("drain task");
    assert_eq!((s.undelivered_msgs, s.dropped_msgs), (0, 0));
    assert_eq!(s.frontend_sent_msgs, 3 + 600, "every reply went out: {s:?}");
}
