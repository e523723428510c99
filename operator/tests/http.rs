//! The operator's HTTP endpoints over a real socket on 127.0.0.1.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use zmq_proxy_operator::http::{HttpState, serve};
use zmq_proxy_operator::metrics::Metrics;

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .expect("response within 5 s")
        .expect("read");
    let code = response.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, response)
}

#[tokio::test]
async fn metrics_health_and_readiness_are_served_until_shutdown() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let metrics = Arc::new(Metrics::new());
    metrics.reconciled(Duration::from_millis(3));
    metrics.failed("ApplyFailed");
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        HttpState { metrics: metrics.clone(), ready: ready.clone() },
        async move {
            let _ = stop_rx.await;
        },
    ));

    let (code, body) = get(addr, "/metrics").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("zmq_proxy_operator_reconciles_total 1"), "{body}");
    assert!(
        body.contains("zmq_proxy_operator_reconcile_errors_total{error=\"ApplyFailed\"} 1"),
        "{body}"
    );
    assert!(body.contains("zmq_proxy_operator_reconcile_duration_seconds_count 1"), "{body}");
    assert_eq!(get(addr, "/healthz").await.0, 200);
    assert_eq!(get(addr, "/readyz").await.0, 503, "not ready before the API server answered");
    ready.store(true, Ordering::Relaxed);
    assert_eq!(get(addr, "/readyz").await.0, 200);

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stops on shutdown")
        .expect("server task")
        .expect("served without error");
}
