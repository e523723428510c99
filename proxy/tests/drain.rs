//! The drain's state machine with hand-driven ZMTP peers: a drain with a request outstanding
//! waits for its reply and closes the client right behind it; a drain with nothing outstanding
//! ends at once; a peer that ignores the FIN is cut at the timeout, and what it sent after the
//! FIN is read and counted.

mod common;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::{RawPeer, config, ep, start};
use tokio::io::AsyncReadExt;
use zmq_proxy::zmtp::{Decoder, Item};
use zmq_proxy::{Ending, Snapshot};
use zmq_proxy_api::socket::SocketType;

const STEP: Duration = Duration::from_secs(5);

/// What a raw peer reads next: a message, or the end of the stream (the proxy's FIN).
#[derive(Debug, PartialEq)]
enum Next {
    Message(Vec<Bytes>),
    End,
}

struct Reader {
    peer: RawPeer,
    buf: BytesMut,
    dec: Decoder,
}

impl Reader {
    fn new(peer: RawPeer) -> Reader {
        Reader { peer, buf: BytesMut::new(), dec: Decoder::new(1 << 20) }
    }

    async fn next(&mut self) -> Next {
        let read = async {
            loop {
                match self.dec.decode(&mut self.buf).expect("valid ZMTP from the proxy") {
                    Some(Item::Message(m)) => return Next::Message(m),
                    Some(Item::Command(_)) => continue,
                    None => {}
                }
                let n = self.peer.stream.read_buf(&mut self.buf).await.expect("read");
                if n == 0 {
                    return Next::End;
                }
            }
        };
        tokio::time::timeout(STEP, read).await.expect("the proxy sent something in time")
    }

    async fn send(&mut self, frames: &[&[u8]]) {
        self.peer.send(frames).await;
    }
}

fn exact(s: &Snapshot) {
    let recv = s.frontend_recv_msgs + s.backend_recv_msgs;
    let sent = s.frontend_sent_msgs + s.backend_sent_msgs;
    assert_eq!(recv, sent + s.dropped_msgs + s.undelivered_msgs, "{s:?}");
}

#[tokio::test]
async fn outstanding_request_is_answered_and_the_client_closed_behind_its_reply() {
    let proxy = start(config(SocketType::Router, SocketType::Dealer)).await;
    let (front, back) = (ep(&proxy.frontend_addrs), ep(&proxy.backend_addrs));
    let mut worker = Reader::new(RawPeer::handshake(&back, SocketType::Rep).await);
    let mut client = Reader::new(RawPeer::handshake(&front, SocketType::Req).await);
    client.send(&[b"", b"slow request"]).await;
    let Next::Message(request) = worker.next().await else {
        panic!("no request reached the worker")
    };
    assert_eq!(request.last().map(|f| &f[..]), Some(&b"slow request"[..]));

    let drain = tokio::spawn(proxy.shutdown(Duration::from_secs(5), std::future::pending()));
    // The drain must not end (nor close the worker) while the request is outstanding.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!drain.is_finished(), "the drain ended with a request outstanding");
    let mut reply: Vec<&[u8]> = request.iter().map(|f| &f[..]).collect();
    if let Some(last) = reply.last_mut() {
        *last = b"slow reply";
    }
    worker.send(&reply).await;

    let got = client.next().await;
    assert_eq!(got, Next::Message(vec![Bytes::new(), Bytes::from_static(b"slow reply")]));
    assert_eq!(client.next().await, Next::End, "no FIN behind the client's last reply");
    drop(client);
    assert_eq!(
        worker.next().await,
        Next::End,
        "the worker was not closed once the client was done"
    );
    drop(worker);
    let started = Instant::now();
    let (ending, s) = drain.await.expect("drain task");
    assert_eq!(ending, Ending::Drained, "{s:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the drain lingered after every peer closed"
    );
    assert_eq!((s.frontend_recv_msgs, s.frontend_sent_msgs), (3, 3), "{s:?}");
    assert_eq!(s.dropped_msgs + s.undelivered_msgs, 0, "{s:?}");
    exact(&s);
}

#[tokio::test]
async fn drain_with_nothing_outstanding_ends_at_once() {
    let proxy = start(config(SocketType::Router, SocketType::Dealer)).await;
    let (front, back) = (ep(&proxy.frontend_addrs), ep(&proxy.backend_addrs));
    let mut peers = Vec::new();
    for (addr, t) in
        [(&front, SocketType::Req), (&front, SocketType::Dealer), (&back, SocketType::Rep)]
    {
        peers.push(Reader::new(RawPeer::handshake(addr, t).await));
    }
    common::wait_until("three peers registered", || {
        proxy.frontend().peer_count() == 2 && proxy.backend().peer_count() == 1
    })
    .await;
    let started = Instant::now();
    let drain = tokio::spawn(proxy.shutdown(Duration::from_secs(30), std::future::pending()));
    // Every peer gets a FIN and, like libzmq, closes on it.
    for mut p in peers {
        assert_eq!(p.next().await, Next::End);
    }
    let (ending, s) = drain.await.expect("drain task");
    assert_eq!(ending, Ending::Drained);
    assert!(started.elapsed() < Duration::from_secs(1), "idle drain took {:?}", started.elapsed());
    exact(&s);
}

#[tokio::test]
async fn peer_that_ignores_the_fin_is_cut_at_the_timeout_and_what_it_sent_is_counted() {
    let proxy = start(config(SocketType::Pull, SocketType::Push)).await;
    let (front, back) = (ep(&proxy.frontend_addrs), ep(&proxy.backend_addrs));
    let mut consumer = Reader::new(RawPeer::handshake(&back, SocketType::Pull).await);
    let mut sender = Reader::new(RawPeer::handshake(&front, SocketType::Push).await);
    sender.send(&[b"before"]).await;
    assert_eq!(consumer.next().await, Next::Message(vec![Bytes::from_static(b"before")]));

    let started = Instant::now();
    let drain = tokio::spawn(proxy.shutdown(Duration::from_secs(1), std::future::pending()));
    assert_eq!(sender.next().await, Next::End, "a sender gets a FIN when the drain begins");
    // It keeps its side open and keeps sending: the proxy still reads and delivers.
    for i in 0..10u8 {
        sender.send(&[b"after", &[i]]).await;
    }
    for i in 0..10u8 {
        let got = consumer.next().await;
        assert_eq!(got, Next::Message(vec![Bytes::from_static(b"after"), Bytes::from(vec![i])]));
    }
    let (ending, s) = drain.await.expect("drain task");
    let took = started.elapsed();
    assert_eq!(ending, Ending::TimedOut, "{s:?}");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "{took:?}");
    assert_eq!(s.frontend_recv_msgs, 21, "1 + 10 two-frame messages read: {s:?}");
    assert_eq!(s.backend_sent_msgs, 21, "{s:?}");
    exact(&s);
    drop(sender);
}
