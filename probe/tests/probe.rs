//! The probe against the real `zmq-proxy` binary on 127.0.0.1: one test per pattern the
//! end-to-end suite runs in the cluster, plus the cases that prove the probe can fail (lost and
//! corrupted messages, an unreachable peer, bad arguments). If these pass, a failing probe Job
//! in the cluster points at the deployment, not at the probe.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use zeromq::{PullSocket, PushSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

const PROBE: &str = env!("CARGO_BIN_EXE_zmq-proxy-probe");

/// The `zmq-proxy` binary cargo built beside the probe: another package's binary has no
/// `CARGO_BIN_EXE_*`, and `cargo test --workspace` builds both.
fn proxy_bin() -> std::path::PathBuf {
    let path = std::path::Path::new(PROBE).with_file_name("zmq-proxy");
    assert!(
        path.is_file(),
        "{} is missing: build it first (cargo build -p zmq-proxy)",
        path.display()
    );
    path
}

/// A port nobody listens on right now. The proxy binds it moments later; another process taking
/// it in between would make the proxy exit 1 naming the endpoint, which the test reports.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port on 127.0.0.1");
    listener.local_addr().expect("local address").port()
}

fn ep(port: u16) -> String {
    format!("tcp://127.0.0.1:{port}")
}

/// A running zmq-proxy, killed on drop so a failing assertion never leaks a process.
struct Proxy {
    child: Child,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts zmq-proxy with `args` and waits until every port in `ports` accepts connections.
fn start_proxy(args: &[String], ports: &[u16]) -> Proxy {
    let child = Command::new(proxy_bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn zmq-proxy");
    let mut proxy = Proxy { child };
    let deadline = Instant::now() + Duration::from_secs(20);
    for &port in ports {
        loop {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut e) = proxy.child.stderr.take() {
                    let _ = e.read_to_string(&mut stderr);
                }
                panic!("zmq-proxy {args:?} exited with {status} before listening: {stderr}");
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "zmq-proxy {args:?} did not listen on port {port} within 20s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    proxy
}

/// A proxy binding `front` and `back` on fresh ports: (frontend port, backend port, proxy).
fn start_pair(front: &str, back: &str) -> (u16, u16, Proxy) {
    let (f, b) = (free_port(), free_port());
    let mut args = socket_args("frontend", front, f);
    args.extend(socket_args("backend", back, b));
    let proxy = start_proxy(&args, &[f, b]);
    (f, b, proxy)
}

fn socket_args(role: &str, kind: &str, port: u16) -> Vec<String> {
    vec![format!("--{role}-type"), kind.to_string(), format!("--{role}-bind"), ep(port)]
}

fn run_probe(args: &[String]) -> (Output, Value) {
    let output = Command::new(PROBE)
        .args(args)
        .args(["--output", "json"])
        .stdin(Stdio::null())
        .output()
        .expect("run zmq-proxy-probe");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str::<Value>(line).ok())
        .unwrap_or(Value::Null);
    (output, report)
}

fn field(report: &Value, name: &str) -> u64 {
    report
        .get(name)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("report has no integer {name}: {report}"))
}

fn assert_passed(output: &Output, report: &Value, count: u64) {
    assert!(
        output.status.success(),
        "probe failed: {report}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(report["ok"], Value::Bool(true), "{report}");
    assert_eq!(field(report, "sent"), count, "{report}");
    assert_eq!(field(report, "received"), count, "{report}");
    assert_eq!(field(report, "intact"), count, "{report}");
    assert_eq!(field(report, "corrupted"), 0, "{report}");
    assert_eq!(field(report, "duplicates"), 0, "{report}");
    assert_eq!(field(report, "unexpected"), 0, "{report}");
}

fn probe_args_within(
    pattern: &str,
    frontend: u16,
    backend: u16,
    count: u64,
    timeout: &str,
) -> Vec<String> {
    vec![
        "--pattern".into(),
        pattern.into(),
        "--frontend".into(),
        ep(frontend),
        "--backend".into(),
        ep(backend),
        "--count".into(),
        count.to_string(),
        "--timeout".into(),
        timeout.into(),
    ]
}

fn probe_args(pattern: &str, frontend: u16, backend: u16, count: u64) -> Vec<String> {
    probe_args_within(pattern, frontend, backend, count, "30s")
}

#[test]
fn shared_queue_round_trips_come_back_to_their_sender_intact() {
    let (f, b, _proxy) = start_pair("ROUTER", "DEALER");

    let (output, report) = run_probe(&probe_args("shared-queue", f, b, 1000));
    assert_passed(&output, &report, 1000);
}

#[test]
fn forwarder_delivers_the_subscribed_topic_and_nothing_else() {
    let (f, b, _proxy) = start_pair("XSUB", "XPUB");

    let (output, report) = run_probe(&probe_args("forwarder", f, b, 1000));
    assert_passed(&output, &report, 1000);
    // One off-topic message went out per on-topic one; `unexpected == 0` above says none leaked.
    assert_eq!(field(&report, "unsubscribed_sent"), 1000, "{report}");
}

#[test]
fn pipeline_delivers_every_pushed_message_once() {
    let (f, b, _proxy) = start_pair("PULL", "PUSH");

    let (output, report) = run_probe(&probe_args("pipeline", f, b, 2000));
    assert_passed(&output, &report, 2000);
}

#[test]
fn pub_capture_sees_every_request_and_every_reply() {
    let (f, b, c) = (free_port(), free_port(), free_port());
    let mut args = socket_args("frontend", "ROUTER", f);
    args.extend(socket_args("backend", "DEALER", b));
    args.extend(socket_args("capture", "PUB", c));
    let _proxy = start_proxy(&args, &[f, b, c]);

    let mut probe = probe_args("shared-queue", f, b, 500);
    probe.extend(["--capture".into(), ep(c), "--capture-socket".into(), "sub".into()]);
    let (output, report) = run_probe(&probe);
    assert_passed(&output, &report, 500);
    assert_eq!(field(&report, "capture_expected"), 1000, "{report}");
    assert_eq!(field(&report, "captured"), 1000, "{report}");
}

#[test]
fn push_capture_of_a_pipeline_counts_each_message_once() {
    let (f, b, c) = (free_port(), free_port(), free_port());
    let mut args = socket_args("frontend", "PULL", f);
    args.extend(socket_args("backend", "PUSH", b));
    args.extend(socket_args("capture", "PUSH", c));
    let _proxy = start_proxy(&args, &[f, b, c]);

    let mut probe = probe_args("pipeline", f, b, 500);
    probe.extend(["--capture".into(), ep(c), "--capture-socket".into(), "pull".into()]);
    let (output, report) = run_probe(&probe);
    assert_passed(&output, &report, 500);
    assert_eq!(field(&report, "captured"), 500, "{report}");
}

/// A pipeline device that loses every 10th message and flips one byte of the 5th: the probe must
/// notice both, or a passing probe in the cluster would mean nothing.
async fn lossy_pipeline(front: u16, back: u16, messages: u64) {
    let mut pull = PullSocket::new();
    pull.bind(&ep(front)).await.expect("bind lossy frontend");
    let mut push = PushSocket::new();
    push.bind(&ep(back)).await.expect("bind lossy backend");
    // Bounded by count (warm-ups are not sent without --capture) and by the test's timeout.
    for n in 0..messages {
        let Ok(Ok(message)) = tokio::time::timeout(Duration::from_secs(20), pull.recv()).await
        else {
            return;
        };
        if n % 10 == 9 {
            continue;
        }
        let message = if n == 4 {
            let mut frame = message.iter().last().cloned().unwrap_or_default().to_vec();
            if let Some(last) = frame.last_mut() {
                *last ^= 0x20;
            }
            ZmqMessage::from(frame)
        } else {
            message
        };
        if push.send(message).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_fails_and_counts_lost_and_corrupted_messages() {
    let (f, b) = (free_port(), free_port());
    let device = tokio::spawn(lossy_pipeline(f, b, 100));
    // The loss is certain, so a short deadline keeps the test quick.
    let args = probe_args_within("pipeline", f, b, 100, "3s");
    let (output, report) =
        tokio::task::spawn_blocking(move || run_probe(&args)).await.expect("probe thread");
    device.abort();

    assert_eq!(output.status.code(), Some(1), "{report}");
    assert_eq!(report["ok"], Value::Bool(false), "{report}");
    assert_eq!(field(&report, "sent"), 100, "{report}");
    assert_eq!(field(&report, "received"), 90, "{report}");
    assert_eq!(field(&report, "corrupted"), 1, "{report}");
    assert_eq!(field(&report, "intact"), 89, "{report}");
}

#[test]
fn probe_fails_with_the_endpoint_named_when_nothing_listens() {
    let (f, b) = (free_port(), free_port());
    let args = probe_args_within("pipeline", f, b, 10, "1s");
    let started = Instant::now();
    let (output, report) = run_probe(&args);
    assert_eq!(output.status.code(), Some(1), "{report}");
    let error = report["error"].as_str().unwrap_or_default();
    assert!(error.contains(&ep(b)), "error should name {}: {report}", ep(b));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "probe overran its 1s deadline: {:?}",
        started.elapsed()
    );
}

#[test]
fn probe_rejects_bad_arguments_with_exit_code_2() {
    for bad in [
        vec![
            "--pattern",
            "pair",
            "--frontend",
            "tcp://127.0.0.1:1",
            "--backend",
            "tcp://127.0.0.1:2",
        ],
        vec![
            "--pattern",
            "pipeline",
            "--frontend",
            "tcp://127.0.0.1:1",
            "--backend",
            "tcp://127.0.0.1:2",
            "--count",
            "0",
        ],
        vec![
            "--pattern",
            "pipeline",
            "--frontend",
            "tcp://127.0.0.1:1",
            "--backend",
            "tcp://127.0.0.1:2",
            "--timeout",
            "soon",
        ],
        vec!["--pattern", "pipeline", "--frontend", "tcp://127.0.0.1:1"],
    ] {
        let output = Command::new(PROBE)
            .args(&bad)
            .stdin(Stdio::null())
            .output()
            .expect("run zmq-proxy-probe");
        assert_eq!(output.status.code(), Some(2), "{bad:?} should be refused");
        assert!(!output.stderr.is_empty(), "{bad:?} should say why on stderr");
    }
}
