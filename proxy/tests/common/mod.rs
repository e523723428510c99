//! Helpers shared by the integration tests: an in-process proxy on 127.0.0.1 ports chosen by
//! the OS, condition polling with deadlines, raw ZMTP peers for misbehaviour, and the built
//! binary with its stderr lines.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zeromq::{SocketRecv, ZmqMessage};
use zmq_proxy::{Proxy, zmtp};
use zmq_proxy::{ProxyConfig, SocketConfig};
use zmq_proxy_api::endpoint::Endpoint;
use zmq_proxy_api::socket::SocketType;

pub const DEADLINE: Duration = Duration::from_secs(10);

pub fn local_socket(t: SocketType) -> SocketConfig {
    SocketConfig::new(t, vec![Endpoint { host: "127.0.0.1".into(), port: 0 }.into()], vec![])
}

pub fn config(front: SocketType, back: SocketType) -> ProxyConfig {
    ProxyConfig::new(local_socket(front), local_socket(back))
}

/// The send high-water mark of the frontend and the backend (`--*-sndhwm`).
pub fn set_sndhwm(cfg: &mut ProxyConfig, hwm: u64) {
    cfg.frontend.options.sndhwm = hwm;
    cfg.backend.options.sndhwm = hwm;
}

pub async fn start(cfg: ProxyConfig) -> Proxy {
    Proxy::start(&cfg).await.expect("proxy starts")
}

pub fn ep(addrs: &[std::net::SocketAddr]) -> String {
    format!("tcp://{}", addrs[0])
}

/// Polls `cond` every few milliseconds until it holds, failing the test at the deadline.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn recv<S: SocketRecv>(s: &mut S) -> ZmqMessage {
    tokio::time::timeout(DEADLINE, s.recv())
        .await
        .expect("message within the deadline")
        .expect("recv succeeds")
}

/// Whether a message arrives within `d` (for asserting that nothing arrives).
pub async fn recv_within<S: SocketRecv>(s: &mut S, d: Duration) -> Option<ZmqMessage> {
    tokio::time::timeout(d, s.recv()).await.ok().and_then(|r| r.ok())
}

pub fn msg(frames: &[&[u8]]) -> ZmqMessage {
    let v: Vec<Bytes> = frames.iter().map(|f| Bytes::copy_from_slice(f)).collect();
    ZmqMessage::try_from(v).expect("non-empty")
}

pub fn frames(m: &ZmqMessage) -> Vec<Vec<u8>> {
    m.iter().map(|f| f.to_vec()).collect()
}

/// A hand-driven ZMTP peer: completes the greeting and READY as `socket_type`, then lets the
/// test write whatever bytes it wants (partial frames, lies, resets).
pub struct RawPeer {
    pub stream: TcpStream,
}

impl RawPeer {
    pub async fn connect(addr: &str) -> RawPeer {
        let addr = addr.trim_start_matches("tcp://");
        RawPeer { stream: TcpStream::connect(addr).await.expect("connect") }
    }

    pub async fn handshake(addr: &str, socket_type: SocketType) -> RawPeer {
        let p = RawPeer::connect(addr).await;
        p.finish_handshake(socket_type).await
    }

    /// A peer with a tiny receive buffer, so that not reading backs up the proxy quickly.
    pub async fn handshake_small_buffer(addr: &str, socket_type: SocketType) -> RawPeer {
        let sa: std::net::SocketAddr =
            addr.trim_start_matches("tcp://").parse().expect("socket address");
        let s = tokio::net::TcpSocket::new_v4().expect("socket");
        s.set_recv_buffer_size(2048).expect("rcvbuf");
        let p = RawPeer { stream: s.connect(sa).await.expect("connect") };
        p.finish_handshake(socket_type).await
    }

    async fn finish_handshake(mut self, socket_type: SocketType) -> RawPeer {
        let p = &mut self;
        p.stream.write_all(&zmtp::greeting()).await.expect("greeting");
        p.stream.write_all(&zmtp::ready_frame(socket_type)).await.expect("ready");
        // The proxy's greeting (64 bytes) and its READY follow; read both before going on.
        let mut g = [0u8; zmtp::GREETING_LEN];
        p.stream.read_exact(&mut g).await.expect("proxy greeting");
        let mut hdr = [0u8; 2];
        p.stream.read_exact(&mut hdr).await.expect("ready header");
        let mut body = vec![0u8; hdr[1] as usize];
        p.stream.read_exact(&mut body).await.expect("ready body");
        self
    }

    pub async fn send(&mut self, frames: &[&[u8]]) {
        let v: Vec<Bytes> = frames.iter().map(|f| Bytes::copy_from_slice(f)).collect();
        let mut out = BytesMut::new();
        zmtp::encode_message(&v, &mut out);
        self.stream.write_all(&out).await.expect("write");
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Closes with RST instead of FIN, like a crashed peer.
    pub fn reset(self) {
        let _ = self.stream.set_zero_linger();
        drop(self.stream);
    }
}

/// The built binary, with its stderr lines collected on a thread.
pub struct Bin {
    pub child: Child,
    lines: std_mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Bin {
    pub fn spawn(args: &[&str]) -> Bin {
        Bin::spawn_env(args, &[])
    }

    pub fn spawn_env(args: &[&str], env: &[(&str, &str)]) -> Bin {
        let mut child = Command::new(env!("CARGO_BIN_EXE_zmq-proxy"))
            .args(args)
            .envs(env.iter().copied())
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn zmq-proxy");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Bin { child, lines: rx, seen: Vec::new() }
    }

    /// Waits for a stderr line containing `needle`; returns it.
    pub fn wait_line(&mut self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let left = DEADLINE.checked_sub(start.elapsed()).unwrap_or_default();
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!("no line with {needle:?}; saw {:?}", self.seen),
            }
        }
    }

    /// Every remaining line, once the process has closed stderr.
    pub fn rest(&mut self) -> Vec<String> {
        let start = Instant::now();
        let mut out = Vec::new();
        loop {
            let left = DEADLINE.checked_sub(start.elapsed()).unwrap_or_default();
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    out.push(l);
                }
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return out,
                Err(std_mpsc::RecvTimeoutError::Timeout) => panic!("stderr stayed open"),
            }
        }
    }

    /// A line already read, if any, without waiting.
    pub fn try_line(&mut self) -> Result<String, std_mpsc::TryRecvError> {
        let l = self.lines.try_recv()?;
        self.seen.push(l.clone());
        Ok(l)
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// Waits for the exit code, failing at the deadline.
    pub fn wait_exit(&mut self, within: Duration) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st.code().unwrap_or(-1);
            }
            assert!(start.elapsed() < within, "zmq-proxy did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Bin {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A JSON log line's integer field.
pub fn field(line: &str, name: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(line).expect("json log line");
    v["fields"][name].as_u64().unwrap_or_else(|| panic!("no integer field {name} in {line}"))
}

/// A port that was free a moment ago (for the binary, which binds its own).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
