//! The `zmq-proxy` binary: exit codes, one-line errors, signals and the drain, and the JSON
//! log events the contract names.

mod common;

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use common::*;
use zeromq::{PullSocket, PushSocket, Socket, SocketSend};

fn run_to_exit(args: &[&str]) -> (i32, Vec<String>) {
    let mut b = Bin::spawn(args);
    let code = b.wait_exit(DEADLINE);
    (code, b.rest())
}

#[test]
fn bad_flag_exits_2_with_one_line() {
    let cases: &[(&[&str], &str)] = &[
        (&["--bogus"], "--bogus"),
        (
            &[
                "--frontend-type",
                "ROUTER",
                "--frontend-bind",
                "tcp://nohost",
                "--backend-type",
                "DEALER",
                "--backend-bind",
                "tcp://127.0.0.1:1",
            ],
            "--frontend-bind",
        ),
        (
            &[
                "--frontend-type",
                "ROUTER",
                "--frontend-bind",
                "tcp://127.0.0.1:1",
                "--backend-type",
                "DEALER",
                "--backend-connect",
                "udp://x:1",
            ],
            "--backend-connect",
        ),
        (
            &[
                "--frontend-type",
                "ROUTER",
                "--frontend-bind",
                "tcp://127.0.0.1:1",
                "--backend-type",
                "PUSH",
                "--backend-bind",
                "tcp://127.0.0.1:2",
            ],
            "ROUTER/PUSH",
        ),
        (&["--frontend-type", "STREAM"], "STREAM"),
        (&["--config", "/nonexistent/zmq-proxy.yaml"], "--config"),
    ];
    for (args, names) in cases {
        let (code, lines) = run_to_exit(args);
        assert_eq!(code, 2, "{args:?}: {lines:?}");
        assert_eq!(lines.len(), 1, "{args:?}: exactly one line: {lines:?}");
        assert!(lines[0].starts_with("zmq-proxy: error: "), "{lines:?}");
        assert!(lines[0].contains(names), "{args:?} should name {names}: {lines:?}");
    }
}

#[test]
fn manifest_errors_name_the_field() {
    let dir = std::env::temp_dir().join(format!("zmq-proxy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        "apiVersion: zmqproxy.io/v1alpha1\nkind: ZmqProxy\nspec:\n  frontend: {type: ROUTER, port: 5555}\n  backend: {type: DEALER, port: 5555}\n",
    )
    .expect("write manifest");
    let (code, lines) = run_to_exit(&["--config", path.to_str().unwrap_or_default()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 2);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("spec.backend.port"), "{lines:?}");
}

#[test]
fn port_in_use_exits_nonzero_naming_endpoint() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let ep = format!("tcp://127.0.0.1:{port}");
    let back = format!("tcp://127.0.0.1:{}", free_port());
    let (code, lines) = run_to_exit(&[
        "--frontend-type",
        "ROUTER",
        "--frontend-bind",
        &ep,
        "--backend-type",
        "DEALER",
        "--backend-bind",
        &back,
    ]);
    assert_eq!(code, 1, "{lines:?}");
    let err: Vec<&String> = lines.iter().filter(|l| l.starts_with("zmq-proxy: error:")).collect();
    assert_eq!(err.len(), 1, "{lines:?}");
    assert!(err[0].contains(&ep) && err[0].contains("address in use"), "{err:?}");
}

fn pipeline_bin(drain: &str) -> (Bin, String, String) {
    let front = format!("tcp://127.0.0.1:{}", free_port());
    let back = format!("tcp://127.0.0.1:{}", free_port());
    let mut b = Bin::spawn(&[
        "--frontend-type",
        "PULL",
        "--frontend-bind",
        &front,
        "--backend-type",
        "PUSH",
        "--backend-bind",
        &back,
        "--log-format",
        "json",
        "--drain-timeout",
        drain,
    ]);
    b.wait_line("proxy running");
    (b, front, back)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero() {
    let (mut b, front, back) = pipeline_bin("5");
    let mut producer = PushSocket::new();
    producer.connect(&front).await.expect("producer connects");
    let mut w = PullSocket::new();
    w.connect(&back).await.expect("worker connects");
    for i in 0..2000u32 {
        producer.send(msg(&[&i.to_be_bytes(), &[0u8; 512]])).await.expect("task");
    }
    b.signal("TERM");
    // Everything the proxy read before the signal still reaches the worker, in order.
    let mut got = 0u32;
    let stopped = loop {
        if let Some(m) = recv_within(&mut w, Duration::from_millis(200)).await {
            assert_eq!(frames(&m)[0], got.to_be_bytes());
            got += 1;
            continue;
        }
        if let Ok(l) = b.try_line()
            && l.contains("proxy stopped")
        {
            break l;
        }
    };
    while recv_within(&mut w, Duration::from_millis(100)).await.is_some() {
        got += 1;
    }
    assert_eq!(b.wait_exit(DEADLINE), 0);
    assert!(b.seen.iter().any(|l| l.contains("\"draining\"")), "{:?}", b.seen);
    let read = field(&stopped, "frontend_recv_msgs");
    assert_eq!(field(&stopped, "backend_sent_msgs"), read);
    assert_eq!(field(&stopped, "undelivered_msgs"), 0);
    assert_eq!(u64::from(got) * 2, read, "every message read was delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_signal_exits_at_once() {
    let front = format!("tcp://127.0.0.1:{}", free_port());
    let back = format!("tcp://127.0.0.1:{}", free_port());
    let cap = format!("tcp://127.0.0.1:{}", free_port());
    let mut b = Bin::spawn(&[
        "--frontend-type",
        "PULL",
        "--frontend-bind",
        &front,
        "--backend-type",
        "PUSH",
        "--backend-bind",
        &back,
        "--capture-type",
        "PUB",
        "--capture-bind",
        &cap,
        "--log-format",
        "json",
        "--drain-timeout",
        "60",
    ]);
    b.wait_line("proxy running");
    // A capture subscriber that never reads: once its buffers and queue are full, the drain
    // has copies it cannot deliver and would wait the whole 60 s.
    let mut tap =
        RawPeer::handshake_small_buffer(&cap, zmq_proxy_api::socket::SocketType::Sub).await;
    tap.send(&[b"\x01"]).await;
    let mut producer = PushSocket::new();
    producer.connect(&front).await.expect("producer connects");
    let mut w = PullSocket::new();
    w.connect(&back).await.expect("worker connects");
    // Probe until the tap's subscription is in effect (its first copy arrives).
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < DEADLINE, "the tap never got a copy");
        producer.send(msg(&[b"probe"])).await.expect("probe");
        recv(&mut w).await;
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(20), tap.stream.read(&mut byte));
        if let Ok(Ok(1)) = read.await {
            break;
        }
    }
    // More copies (8 MiB) than the kernel buffers (at most 4 MiB send buffer here) and the
    // tap's queue (1000 messages) hold. The worker's receipt proves the proxy read them.
    const TASKS: u32 = 8000;
    for i in 0..TASKS {
        producer.send(msg(&[&i.to_be_bytes(), &[0u8; 1024]])).await.expect("task");
    }
    for _ in 0..TASKS {
        recv(&mut w).await;
    }
    b.signal("TERM");
    b.wait_line("draining");
    let started = Instant::now();
    b.signal("INT");
    let code = b.wait_exit(Duration::from_secs(5));
    let stopped = b.wait_line("proxy stopped");
    assert_eq!(code, 130, "{:?}", b.seen);
    assert!(started.elapsed() < Duration::from_secs(2), "exited at once");
    assert!(field(&stopped, "frontend_recv_msgs") > 2 * TASKS as u64);
    assert!(field(&stopped, "dropped_capture") > 0, "the tap's copies were pending");
    assert_eq!(field(&stopped, "undelivered_msgs"), 0, "the tasks themselves were delivered");
    assert_eq!(field(&stopped, "dropped_msgs"), 0, "capture drops are not proxy drops");
    drop(tap);
}

#[test]
fn environment_variables_configure_the_proxy() {
    let front = format!("tcp://127.0.0.1:{}", free_port());
    let back = format!("tcp://127.0.0.1:{}", free_port());
    let mut b = Bin::spawn_env(
        &[],
        &[
            ("ZMQ_PROXY_FRONTEND_TYPE", "xsub"),
            ("ZMQ_PROXY_FRONTEND_BIND", &front),
            ("ZMQ_PROXY_BACKEND_TYPE", "XPUB"),
            ("ZMQ_PROXY_BACKEND_BIND", &back),
            ("ZMQ_PROXY_DRAIN_TIMEOUT", "1.5"),
            ("ZMQ_PROXY_LOG_FORMAT", "json"),
        ],
    );
    let running = b.wait_line("proxy running");
    assert!(running.contains(&front) && running.contains(&back), "{running}");
    assert!(running.contains("\"drain_timeout_secs\":1.5"), "{running}");
    b.signal("TERM");
    assert_eq!(b.wait_exit(DEADLINE), 0);
}
