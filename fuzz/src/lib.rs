//! The fuzz targets' bodies: each takes the bytes libFuzzer made and drives one of the proxy's
//! parsers the way a connection task drives it, then checks what must hold whatever a peer sends
//! (no panic, nothing beyond the socket's limits, no buffer grown on a header's word).
//!
//! The bodies live here rather than in `fuzz_targets/`, one function per target, so the targets
//! stay one line each and the CURVE pair shares its relay.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;
use zmq_proxy::curve::{
    self, Allow, AllowList, CurveClient, CurveServer, Established, Mechanism, SecretKey,
};
use zmq_proxy::fuzzing::steer;
use zmq_proxy::fuzzing::zmtp::{self, Decoder, Item, Revision, WireError};
use zmq_proxy::fuzzing::{CONTROL_MAX_BYTES, Counters, ProxyState, heartbeat, parse_manifest};
use zmq_proxy_api::socket::SocketType;

/// libzmq's test keys (tests/testutil_security.cpp): public, used by the seed capture too, so a
/// captured libzmq HELLO opens under the server key the targets use.
pub const SERVER_SECRET: &str = "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6";
pub const CLIENT_SECRET: &str = "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs";

/// The socket types a first byte selects (`sel % 11`).
fn socket_type(sel: u8) -> SocketType {
    SocketType::ALL[usize::from(sel) % SocketType::ALL.len()]
}

/// The maxMsgSize a selector picks: tiny (so limits are hit), small, the handshake bound, and
/// "unlimited" (where only overflow protection stands between a header and an allocation).
fn limit(sel: u8) -> usize {
    [64, 4096, zmtp::HANDSHAKE_MAX_BYTES, usize::MAX][usize::from(sel) & 3]
}

/// One runtime per fuzzing thread, its clock paused: a handshake left waiting on a peer that
/// never answers times out at once instead of hanging the fuzzer.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a current-thread runtime");
    }
    RT.with(|rt| rt.block_on(f))
}

/// Decodes everything in `chunks` as it would arrive from the network, checking the decoder's
/// promises: no message or command beyond `max` payload bytes, and the buffer never grown by a
/// header's claim (only by the bytes appended here).
fn decode_all(dec: &mut Decoder, buf: &mut BytesMut, chunks: &[&[u8]], max: usize) {
    let mut chunks = chunks.iter();
    loop {
        let before = buf.capacity();
        match dec.decode(buf) {
            Ok(Some(Item::Message(parts))) => {
                let size: usize = parts.iter().map(Bytes::len).sum();
                assert!(size <= max, "a message of {size} bytes passed a limit of {max}");
            }
            Ok(Some(Item::Command(raw))) => {
                assert!(raw.len() <= max, "a command of {} bytes passed {max}", raw.len());
                commands(&raw);
            }
            Ok(None) => {
                assert!(buf.capacity() <= before, "the decoder grew the buffer");
                match chunks.next() {
                    Some(c) => buf.extend_from_slice(c),
                    None => return,
                }
            }
            Err(_) => return,
        }
    }
}

/// Splits `data` into network-sized reads whose sizes come from `sel` (1 byte at a time, small
/// reads, or everything at once), so frames straddle reads in every way.
fn reads(data: &[u8], sel: u8) -> Vec<&[u8]> {
    let step = match sel & 3 {
        0 => data.len().max(1),
        1 => 1,
        2 => 7,
        _ => 61,
    };
    data.chunks(step).collect()
}

/// Target `frames`: the bytes a peer sends to a NULL socket, greeting first. The first byte picks
/// our socket type, the message limit and how the rest is cut into reads. The greeting check,
/// the NULL handshake (greeting, READY) and then the frame decoder see the rest; the decoder also
/// sees the whole input on its own, so it is fuzzed without a handshake in front of it.
pub fn frames(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else { return };
    let ours = socket_type(sel);
    let max = limit(sel >> 4);
    let _ = zmtp::check_greeting(rest);
    let _ = zmtp::greeting_mechanism(rest);

    let mut dec = Decoder::new(max);
    let mut buf = BytesMut::new();
    decode_all(&mut dec, &mut buf, &reads(rest, sel >> 6), max);

    let mut rd = rest;
    let mut buf = BytesMut::new();
    let shaken = block_on(zmtp::handshake(&mut rd, &mut tokio::io::sink(), ours, &mut buf, max));
    if let Ok(peer) = shaken {
        assert!(zmtp::compatible(ours, &peer.socket_type));
        // ZMTP 2.0 and 3.x peers are served; 1.0 and unknown revisions are refused.
        assert!(peer.revision.major >= 2);
        let mut dec = Decoder::for_revision(max, peer.revision);
        decode_all(&mut dec, &mut buf, &reads(rd, sel >> 6), max);
    }
}

/// Target `commands`: one command frame's body (name length, name, data), as the connection
/// task and the handshakes read it: READY metadata against every socket type, SUBSCRIBE and
/// CANCEL, PING (its TTL and the PONG it earns) and PONG. Then the same bytes as a subscription
/// message, which must carry the same subscription as the command made from it.
pub fn commands(data: &[u8]) {
    let raw = Bytes::copy_from_slice(data);
    if let Ok(cmd) = zmtp::parse_command(raw.clone()) {
        assert_eq!(1 + cmd.name.len() + cmd.body.len(), raw.len());
        if let Some(pong) = zmtp::pong_body(&cmd) {
            assert!(pong.len() <= 5 + 16, "a PONG echoes at most 16 bytes of context");
            let echoed = zmtp::parse_command(pong).expect("our PONG parses");
            assert_eq!(&echoed.name[..], b"PONG");
            assert!(heartbeat::ping_ttl(&cmd).is_some());
        }
        let _ = zmtp::pong_for(&cmd);
        let _ = heartbeat::ping_ttl(&cmd);
        if let Some((_, topic)) = zmtp::subscription_of_command(&cmd) {
            assert_eq!(topic, cmd.body);
        }
        for ours in SocketType::ALL {
            for revision in [Revision::V3_0, Revision::V3_1] {
                if let Ok(peer) = zmtp::peer_info(ours, cmd.body.clone(), revision) {
                    assert!(zmtp::compatible(ours, &peer.socket_type));
                }
            }
        }
    }
    if let Ok(props) = zmtp::parse_properties(raw.clone()) {
        let listed: usize = props.iter().map(|(k, v)| k.len().min(1) + v.len()).sum();
        assert!(listed <= raw.len());
    }
    // A subscription message and the SUBSCRIBE/CANCEL command made of it say the same thing.
    let frame = [raw.clone()];
    if let Some(sub) = zmtp::subscription_of_message(&frame) {
        let body = zmtp::subscription_command_body(&raw);
        let cmd = zmtp::parse_command(body).expect("our command parses");
        assert_eq!(zmtp::subscription_of_command(&cmd), Some(sub));
        let mut out = BytesMut::new();
        zmtp::encode_subscription_command(&raw, &mut out);
        let mut dec = Decoder::new(usize::MAX);
        match dec.decode(&mut out) {
            Ok(Some(Item::Command(back))) => {
                assert_eq!(back, zmtp::subscription_command_body(&raw))
            }
            _ => panic!("our SUBSCRIBE/CANCEL frame does not decode"),
        }
    }
}

/// Target `manifest`: a `--config` file's text.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(cfg) = parse_manifest(text) {
        for (_, socket) in cfg.named_sockets() {
            let _ = socket.endpoints();
        }
    }
}

/// Target `steering`: what a requester sends to the control socket (`--control-bind`), greeting
/// first, read as the control socket reads it (REP, NULL, [`CONTROL_MAX_BYTES`]); every
/// REQ-shaped request is applied to a proxy state. A stopping proxy stays stopping, whatever
/// follows. The bytes are also tried as a `--pause-file`'s content.
pub fn steering(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = zmq_proxy::fuzzing::state::parse(text);
    }
    let mut rd = data;
    let mut buf = BytesMut::new();
    let max = CONTROL_MAX_BYTES;
    let sink = &mut tokio::io::sink();
    if block_on(zmtp::handshake(&mut rd, sink, SocketType::Rep, &mut buf, max)).is_err() {
        // Without a handshake in front, the bytes are one request's frames split at NULs.
        let frames: Vec<Bytes> = data.split(|&b| b == 0).map(Bytes::copy_from_slice).collect();
        let _ = steer::parse(&frames);
        return;
    }
    buf.extend_from_slice(rd);
    let (state, _watch) = watch::channel(ProxyState::Active);
    let counters = Counters::default();
    let mut dec = Decoder::new(max);
    let mut stopping = false;
    while let Ok(Some(item)) = dec.decode(&mut buf) {
        let Item::Message(frames) = item else { continue };
        let Some(delim) = frames.iter().position(Bytes::is_empty) else { continue };
        let (_envelope, body) = frames.split_at(delim + 1);
        let (cmd, reply) = steer::apply(body, &state, &counters);
        assert!(!reply.is_empty(), "every request gets a reply");
        if cmd == Some(steer::Command::Terminate) {
            state.send_replace(ProxyState::Terminated);
            stopping = true;
        }
        if stopping {
            assert_eq!(*state.borrow(), ProxyState::Terminated, "a stopping proxy woke up");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CURVE

/// Which end of a CURVE handshake the fuzzer plays.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The proxy is the server (a bind); the fuzzer plays the client.
    Server,
    /// The proxy is the client (a connect); the fuzzer plays the server.
    Client,
}

struct Keys {
    server: Arc<CurveServer>,
    server_listed: Arc<CurveServer>,
    server_unlisted: Arc<CurveServer>,
    client: Arc<CurveClient>,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let secret = || SecretKey::from_z85(SERVER_SECRET).expect("server key");
        let client_secret = SecretKey::from_z85(CLIENT_SECRET).expect("client key");
        let client_public = client_secret.public_key();
        let dir = std::env::temp_dir();
        let list = |name: &str, key: &curve::PublicKey| {
            let path = dir.join(format!("zmq-proxy-fuzz-{}-{name}.txt", std::process::id()));
            std::fs::write(&path, format!("{}\n", key.to_z85())).expect("allow-list file");
            let list = AllowList::load(&path).expect("allow-list");
            let _ = std::fs::remove_file(&path);
            list
        };
        let server = |allow| {
            let secret = secret();
            Arc::new(CurveServer { public: secret.public_key(), secret, allow })
        };
        let server_public = secret().public_key();
        Keys {
            server: server(Allow::Any),
            server_listed: server(Allow::List(list("listed", &client_public))),
            server_unlisted: server(Allow::List(list("unlisted", &server_public))),
            client: Arc::new(CurveClient {
                public: client_public,
                secret: client_secret,
                server: server_public,
                ephemeral: false,
            }),
        }
    })
}

/// A change the fuzzer makes to one read of the traffic between a real client and a real server.
#[derive(Arbitrary, Debug)]
pub struct Edit {
    /// Which read of the tampered direction (0 is the first).
    chunk: u8,
    at: u16,
    op: Op,
}

#[derive(Arbitrary, Debug)]
pub enum Op {
    Flip(u8),
    Set(u8),
    Truncate,
    Insert(Vec<u8>),
    Drop,
    Duplicate,
}

fn apply_edits(edits: &[Edit], index: usize, chunk: &mut Vec<u8>) -> bool {
    let mut keep = true;
    for e in edits.iter().filter(|e| usize::from(e.chunk) == index) {
        let at = if chunk.is_empty() { 0 } else { usize::from(e.at) % (chunk.len() + 1) };
        match &e.op {
            Op::Flip(x) if at < chunk.len() => chunk[at] ^= x | 1,
            Op::Set(x) if at < chunk.len() => chunk[at] = *x,
            Op::Truncate => chunk.truncate(at),
            Op::Insert(bytes) => {
                let tail = chunk.split_off(at);
                chunk.extend_from_slice(bytes);
                chunk.extend_from_slice(&tail);
            }
            Op::Drop => keep = false,
            Op::Duplicate => {
                let copy = chunk.clone();
                chunk.extend_from_slice(&copy);
            }
            _ => {}
        }
    }
    keep
}

/// Copies `from` to `to` read by read, editing the reads of the tampered direction; closes `to`
/// when `from` ends. Returns how many reads passed, so later edits can land on sealed messages.
async fn relay(
    mut from: tokio::io::ReadHalf<DuplexStream>,
    mut to: tokio::io::WriteHalf<DuplexStream>,
    edits: Option<&[Edit]>,
) -> usize {
    let mut index = 0;
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let n = match from.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut data = chunk[..n].to_vec();
        let keep = edits.is_none_or(|e| apply_edits(e, index, &mut data));
        index += 1;
        if keep && to.write_all(&data).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
    index
}

async fn shake(
    mech: Mechanism,
    ours: SocketType,
    io: DuplexStream,
) -> Result<(Established, BytesMut), WireError> {
    let (mut rd, mut wr) = tokio::io::split(io);
    let mut buf = BytesMut::new();
    let done = curve::handshake(&mech, &mut rd, &mut wr, ours, &mut buf, 1 << 20).await?;
    Ok((done, buf))
}

/// Target `curve_server` / `curve_client`. The first byte's top bit picks the mode:
/// - clear: the rest is the fuzzed peer's whole byte stream (greeting, HELLO or WELCOME, ...),
///   as a captured libzmq peer sent it; after a handshake the rest is read as MESSAGE frames.
/// - set: a real client and a real server (the proxy's own, fixed keys) talk through a relay
///   that applies fuzzed edits to the reads going to the side under test; when both handshakes
///   complete, a fuzzed message is sealed, edited and opened the same way.
///
/// The other bits pick our socket type, the peer's, and (server side) the allow policy.
pub fn curve(side: Side, data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else { return };
    let k = keys();
    let server = match (sel >> 4) & 3 {
        0 | 1 => k.server.clone(),
        2 => k.server_listed.clone(),
        _ => k.server_unlisted.clone(),
    };
    let ours = socket_type(sel & 0x0f);
    if sel & 0x80 == 0 {
        let mech = match side {
            Side::Server => Mechanism::Server(server),
            Side::Client => Mechanism::Client(k.client.clone()),
        };
        let mut rd = rest;
        let mut buf = BytesMut::new();
        let sink = &mut tokio::io::sink();
        let shaken = block_on(curve::handshake(&mech, &mut rd, sink, ours, &mut buf, 1 << 20));
        if let Ok(Established { session: Some(session), peer }) = shaken {
            assert!(zmtp::compatible(ours, &peer.socket_type));
            let mut dec = Decoder::new(1 << 20);
            dec.set_opener(Box::new(session.opener));
            decode_all(&mut dec, &mut buf, &[rd], 1 << 20);
        }
        return;
    }
    let mut u = Unstructured::new(rest);
    let Ok(peer_sel) = u8::arbitrary(&mut u) else { return };
    let theirs = socket_type(peer_sel);
    let Ok(edits) = Vec::<Edit>::arbitrary(&mut u) else { return };
    let Ok(message) = Vec::<Vec<u8>>::arbitrary(&mut u) else { return };
    let (server_type, client_type) = match side {
        Side::Server => (ours, theirs),
        Side::Client => (theirs, ours),
    };
    block_on(async {
        let (client_io, relay_c) = tokio::io::duplex(1 << 16);
        let (server_io, relay_s) = tokio::io::duplex(1 << 16);
        let (c_rd, c_wr) = tokio::io::split(relay_c);
        let (s_rd, s_wr) = tokio::io::split(relay_s);
        let (to_server, to_client) = match side {
            Side::Server => (Some(&edits[..]), None),
            Side::Client => (None, Some(&edits[..])),
        };
        let run = async {
            tokio::join!(
                shake(Mechanism::Server(server), server_type, server_io),
                shake(Mechanism::Client(k.client.clone()), client_type, client_io),
                relay(c_rd, s_wr, to_server),
                relay(s_rd, c_wr, to_client),
            )
        };
        let Ok((srv, cli, _, _)) = tokio::time::timeout(Duration::from_secs(30), run).await else {
            return;
        };
        let (Ok((srv, _)), Ok((cli, _))) = (srv, cli) else { return };
        let (Some(s), Some(c)) = (srv.session, cli.session) else {
            panic!("a CURVE handshake completed without a session")
        };
        let frames: Vec<Bytes> = message.into_iter().take(8).map(Bytes::from).collect();
        if frames.is_empty() {
            return;
        }
        let (mut sealer, opener, index) = match side {
            Side::Server => (c.sealer, s.opener, 3),
            Side::Client => (s.sealer, c.opener, 2),
        };
        let mut wire = BytesMut::new();
        if sealer.seal_message(&frames, &mut wire).is_err() {
            return;
        }
        let mut sealed = wire.to_vec();
        let edited = !apply_edits(&edits, index, &mut sealed) || sealed[..] != wire[..];
        let mut dec = Decoder::new(1 << 20);
        dec.set_opener(Box::new(opener));
        if edited {
            // Edited, the frames open or are refused; none may panic or pass the limit.
            decode_all(&mut dec, &mut BytesMut::new(), &[&sealed[..]], 1 << 20);
            return;
        }
        // Untouched, the message opens to exactly what was sealed.
        let mut buf = BytesMut::from(&sealed[..]);
        match dec.decode(&mut buf) {
            Ok(Some(Item::Message(parts))) => assert_eq!(parts, frames),
            other => panic!("an untouched sealed message did not open: ok={}", other.is_ok()),
        }
    });
}
