//! The HTTP listener in process: /metrics renders the counters and gauges, /readyz follows
//! readiness and the drain, /healthz fails when a pump is gone, and drops are summarised in
//! one log line per interval.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zmq_proxy::Ops;
use zmq_proxy::ProxyConfig;
use zmq_proxy_api::socket::SocketType;

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut out)).await.expect("reply").expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status line");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn http_config(front: SocketType, back: SocketType) -> ProxyConfig {
    let mut cfg = config(front, back);
    cfg.http_bind = Some("127.0.0.1:0".into());
    cfg
}

fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{body}"))
}

#[tokio::test]
async fn metrics_render_the_counters_and_gauges() {
    let cfg = http_config(SocketType::Router, SocketType::Dealer);
    let proxy = start(cfg.clone()).await;
    let ops = Ops::start(&cfg, &proxy).await.expect("http binds");
    let addr = ops.http_addr().expect("http bound");
    let c = proxy.counters();
    c.frontend.add_recv(4, 12, 3456);
    c.backend.add_sent(4, 12, 3456);
    c.dropped(zmq_proxy::DropReason::PeerFull, 5);
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(sample(&body, "zmq_proxy_received_messages_total{socket=\"frontend\"}"), 4.0);
    assert_eq!(sample(&body, "zmq_proxy_received_frames_total{socket=\"frontend\"}"), 12.0);
    assert_eq!(sample(&body, "zmq_proxy_sent_messages_total{socket=\"backend\"}"), 4.0);
    assert_eq!(sample(&body, "zmq_proxy_sent_frames_total{socket=\"backend\"}"), 12.0);
    assert_eq!(sample(&body, "zmq_proxy_received_bytes_total{socket=\"frontend\"}"), 3456.0);
    assert_eq!(sample(&body, "zmq_proxy_sent_bytes_total{socket=\"backend\"}"), 3456.0);
    assert_eq!(sample(&body, "zmq_proxy_dropped_frames_total{reason=\"peer_full\"}"), 5.0);
    assert_eq!(sample(&body, "zmq_proxy_connected_peers{socket=\"frontend\"}"), 0.0);
    assert_eq!(sample(&body, "zmq_proxy_paused"), 0.0);
    assert_eq!(sample(&body, "zmq_proxy_ready"), 1.0);
    assert!(body.contains("zmq_proxy_build_info{version=\""), "{body}");
    assert!(!body.contains("socket=\"capture\""), "no capture series without a capture socket");
    proxy.state().send_replace(zmq_proxy::ProxyState::Paused);
    assert_eq!(sample(&get(addr, "/metrics").await.1, "zmq_proxy_paused"), 1.0);
}

#[tokio::test]
async fn readyz_turns_503_when_draining_and_healthz_when_a_pump_is_gone() {
    let cfg = http_config(SocketType::Pull, SocketType::Push);
    let proxy = start(cfg.clone()).await;
    let ops = Ops::start(&cfg, &proxy).await.expect("http binds");
    let addr = ops.http_addr().expect("http bound");
    assert_eq!(get(addr, "/readyz").await, (200, "ready\n".into()));
    assert_eq!(get(addr, "/healthz").await.0, 200);
    // A pump that ends outside a drain (as a panic would end it): not live, not ready.
    for p in proxy.pump_handles() {
        p.abort();
    }
    let obs = ops.observed.clone();
    wait_until("pump ended", || !obs.live()).await;
    assert_eq!(get(addr, "/healthz").await.0, 503);
    assert_eq!(get(addr, "/readyz").await.0, 503);
    // During a drain pumps end normally: live, but not ready.
    ops.set_draining();
    assert_eq!(get(addr, "/healthz").await.0, 200);
    assert_eq!(get(addr, "/readyz").await, (503, "draining\n".into()));
    assert_eq!(get(addr, "/nope").await.0, 404);
}

#[tokio::test]
async fn http_bind_failure_names_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let mut cfg = config(SocketType::Pull, SocketType::Push);
    cfg.http_bind = Some(format!("127.0.0.1:{port}"));
    let proxy = start(cfg.clone()).await;
    let Err(e) = Ops::start(&cfg, &proxy).await else { panic!("bind must fail") };
    assert_eq!(e.to_string(), format!("cannot bind http://127.0.0.1:{port}: address in use"));
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self, needle: &str) -> Vec<String> {
        let buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&buf)
            .lines()
            .filter(|l| l.contains(needle))
            .map(String::from)
            .collect()
    }
}

// Single-threaded runtime: every task runs on this thread, under the test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn drops_are_summarised_once_per_interval_not_per_message() {
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let cfg = config(SocketType::Router, SocketType::Dealer);
    let proxy = start(cfg.clone()).await;
    let every = Duration::from_millis(100);
    let _ops = Ops::start_with(&cfg, &proxy, every).await.expect("starts");
    let c = proxy.counters();
    for _ in 0..500 {
        c.dropped(zmq_proxy::DropReason::Unroutable, 2);
    }
    wait_until("a drop summary", || !logs.lines("messages dropped").is_empty()).await;
    let first = logs.lines("messages dropped");
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].contains("unroutable=1000") && first[0].contains("WARN"), "{}", first[0]);
    // Quiet intervals log nothing.
    tokio::time::sleep(every * 4).await;
    assert_eq!(logs.lines("messages dropped").len(), 1);
}
