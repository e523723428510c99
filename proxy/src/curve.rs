//! The CurveZMQ security mechanism (ZMTP 3.0 CURVE, RFC 26) as libzmq speaks it: keys and key
//! files, the allow-list of client keys, the server and client handshakes, and the sealing and
//! opening of every frame afterwards. The handshake's cryptography is RustCrypto's
//! (`crypto_box`'s [`SalsaBox`], X25519 + XSalsa20-Poly1305, and `crypto_secretbox` for the
//! cookie). The MESSAGE boxes after it are libsodium's, through `libsodium-rs` (built from the
//! source the crate ships, linked statically), exactly as libzmq does it: the session's shared
//! key is precomputed once per connection (`crypto_box_beforenm`) and every frame is one
//! `crypto_box_detached_afternm` / `crypto_box_open_detached_afternm`, in place in the frame
//! buffer ([`crate::sodium_box`]): RustCrypto's XSalsa20-Poly1305 costs several times more per
//! frame (`poly1305`'s runtime-detected AVX2 backend ends up as calls, and `salsa20` has no SIMD
//! backend; `cargo bench -p zmq-proxy --bench curve_frames` measures both). This module only lays
//! out bytes and keeps nonces.
//!
//! Wire details that follow libzmq where RFC 26 is loose:
//! - HELLO is 200 bytes: version 1.0, 72 zero bytes of anti-amplification padding, C', an 8-byte
//!   short nonce, and Box[64 zero bytes](C'->S) under the nonce prefix `CurveZMQHELLO---`.
//! - WELCOME: a 16-byte nonce (prefix `WELCOME-`) and Box[S' + cookie](S->C'); the cookie is
//!   a 16-byte nonce (prefix `COOKIE--`) and SecretBox[C' + s'] under a key drawn per
//!   connection and forgotten once INITIATE is checked, so a replayed INITIATE cannot open.
//! - INITIATE: the cookie, a short nonce (`CurveZMQINITIATE`) and Box[C + vouch + metadata](C'->S'),
//!   the vouch being Box[C' + S](C->S') under `VOUCH---` and a 16-byte nonce.
//! - READY: a short nonce (`CurveZMQREADY---`) and Box[metadata](S'->C').
//! - MESSAGE: every frame separately, `\x07MESSAGE`, the short nonce, and Box[flags + payload]
//!   with the nonce prefix `CurveZMQMESSAGEC` (client to server) or `CurveZMQMESSAGES`. The
//!   flags byte inside carries MORE (0x01) and COMMAND (0x02, libzmq 4.3); the wire frame itself
//!   has no flags, as libzmq sends it. Short nonces strictly increase per direction: the client
//!   uses 1 for HELLO, 2 for INITIATE and counts on from 3; the server uses 1 for READY.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use crypto_box::aead::consts::{U16, U24};
use crypto_box::aead::rand_core::RngCore;
use crypto_box::aead::{AeadInPlace, OsRng};
use crypto_box::{Nonce, SalsaBox};
use crypto_secretbox::{Key, KeyInit, XSalsa20Poly1305};
use libsodium_rs::crypto_box as sodium;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::sodium_box;
use crate::zmtp::{self, FLAG_COMMAND, FLAG_MORE, PeerInfo, WireError};
use zmq_proxy_api::socket::SocketType;

pub const KEY_BYTES: usize = 32;
/// A key in Z85 text, as `zmq_curve_keypair` writes it.
pub const Z85_KEY_LEN: usize = 40;
/// Largest allow-list file read (a key line is 41 bytes: this is about 25 000 keys).
pub const MAX_KEY_FILE_BYTES: u64 = 1024 * 1024;
/// Most files read from an allow-list directory.
pub const MAX_ALLOW_DIR_FILES: usize = 10_000;

const HELLO_LEN: usize = 200;
const WELCOME_LEN: usize = 168;
const INITIATE_MIN_LEN: usize = 257;
const MESSAGE_PREFIX: &[u8; 8] = b"\x07MESSAGE";
/// `\x07MESSAGE`, short nonce, tag, flags byte.
const MESSAGE_OVERHEAD: usize = 8 + 8 + 16 + 1;
const INNER_MORE: u8 = 0x01;
const INNER_COMMAND: u8 = 0x02;

/// Why a CURVE handshake or message was refused; each is a `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CurveError {
    #[error("malformed HELLO")]
    MalformedHello,
    #[error("HELLO does not open with this server's key (the client has the wrong server key)")]
    WrongServerKey,
    #[error("malformed INITIATE")]
    MalformedInitiate,
    #[error("INITIATE cookie does not open (replayed or forged)")]
    BadCookie,
    #[error("INITIATE box does not open")]
    InitiateAuth,
    #[error("INITIATE vouch does not open or does not match")]
    BadVouch,
    #[error("client public key is not on the allow-list")]
    UnknownClientKey,
    #[error("short nonce did not increase")]
    BadNonce,
    #[error("MESSAGE failed authentication")]
    MessageAuth,
    #[error("malformed MESSAGE")]
    MalformedMessage,
    #[error("malformed WELCOME")]
    MalformedWelcome,
    #[error("WELCOME does not open: the server's public key is not the one configured")]
    ServerKeyMismatch,
    #[error("malformed or unauthenticated READY")]
    BadReady,
    #[error("the server refused the handshake with an ERROR")]
    RefusedByServer,
    #[error("unexpected command during the handshake")]
    UnexpectedCommand,
    #[error("could not seal a frame")]
    Seal,
}

impl CurveError {
    pub fn reason(self) -> &'static str {
        match self {
            CurveError::MalformedHello => "malformed_hello",
            CurveError::WrongServerKey => "wrong_server_key",
            CurveError::MalformedInitiate => "malformed_initiate",
            CurveError::BadCookie => "bad_cookie",
            CurveError::InitiateAuth => "initiate_auth_failed",
            CurveError::BadVouch => "bad_vouch",
            CurveError::UnknownClientKey => "unknown_client_key",
            CurveError::BadNonce => "bad_nonce",
            CurveError::MessageAuth => "message_auth_failed",
            CurveError::MalformedMessage => "malformed_message",
            CurveError::MalformedWelcome => "malformed_welcome",
            CurveError::ServerKeyMismatch => "server_key_mismatch",
            CurveError::BadReady => "bad_ready",
            CurveError::RefusedByServer => "refused_by_server",
            CurveError::UnexpectedCommand => "unexpected_command",
            CurveError::Seal => "seal_failed",
        }
    }
}

impl From<CurveError> for WireError {
    fn from(e: CurveError) -> Self {
        WireError::Mechanism { mechanism: "CURVE", reason: e.reason(), text: e.to_string() }
    }
}

/// A key file or key text that cannot be used; never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

// ---------------------------------------------------------------------------------------------
// Keys

/// A CURVE public key (32 bytes); shown as its 40-character Z85 text.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; KEY_BYTES]);

impl PublicKey {
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> Self {
        PublicKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }

    pub fn from_z85(text: &str) -> Result<Self, KeyError> {
        decode_key(text)
            .map(|k| PublicKey(*k))
            .ok_or_else(|| KeyError("expected a 40-character Z85 public key".into()))
    }

    pub fn to_z85(&self) -> String {
        z85::encode(self.0)
    }

    fn boxed(&self) -> crypto_box::PublicKey {
        crypto_box::PublicKey::from(self.0)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_z85())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_z85())
    }
}

/// A CURVE secret key. The bytes are zeroed when it is dropped (`crypto_box` does that), and
/// neither `Debug` nor any other formatting ever shows them.
#[derive(Clone)]
pub struct SecretKey(crypto_box::SecretKey);

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        SecretKey(crypto_box::SecretKey::generate(&mut OsRng))
    }

    pub fn from_z85(text: &str) -> Result<Self, KeyError> {
        let bytes = decode_key(text)
            .ok_or_else(|| KeyError("expected a 40-character Z85 secret key".into()))?;
        Ok(SecretKey(crypto_box::SecretKey::from(*bytes)))
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.public_key().to_bytes())
    }

    /// The Z85 text of the secret, for writing a key file; zeroed when dropped.
    pub fn to_z85(&self) -> Zeroizing<String> {
        let bytes = Zeroizing::new(self.0.to_bytes());
        Zeroizing::new(z85::encode(&bytes[..]))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// Secret keys compare by their public halves, so configurations can be compared without
/// touching secret bytes outside the cryptography.
impl PartialEq for SecretKey {
    fn eq(&self, other: &Self) -> bool {
        self.public_key() == other.public_key()
    }
}

impl Eq for SecretKey {}

/// 40 Z85 characters to 32 bytes. The `z85` crate reads a `#` at a chunk's start as padding;
/// no valid 5-character chunk starts with `#` (its value would exceed 2^32), so checking the
/// decoded length is enough to refuse those.
fn decode_key(text: &str) -> Option<Zeroizing<[u8; KEY_BYTES]>> {
    let t = text.trim();
    if t.len() != Z85_KEY_LEN {
        return None;
    }
    let v = Zeroizing::new(z85::decode(t).ok()?);
    let mut out = Zeroizing::new([0u8; KEY_BYTES]);
    if v.len() != KEY_BYTES {
        return None;
    }
    out.copy_from_slice(&v);
    Some(out)
}

/// The value of `name = "value"` in ZPL text (CZMQ's zcert format), if present.
fn zpl_value<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().map(str::trim).filter(|l| !l.starts_with('#')).find_map(|l| {
        let rest = l.strip_prefix(name)?.trim_start().strip_prefix('=')?.trim();
        let unquoted = rest
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .or_else(|| rest.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')))
            .unwrap_or(rest);
        Some(unquoted)
    })
}

/// A secret key from text: a zcert secret file (`secret-key = "..."`, with a `public-key`
/// that must match), or the 40-character Z85 secret alone (blank and `#` lines allowed).
pub fn parse_secret_text(text: &str) -> Result<SecretKey, KeyError> {
    if let Some(v) = zpl_value(text, "secret-key") {
        let secret = SecretKey::from_z85(v)
            .map_err(|_| KeyError("secret-key is not a 40-character Z85 key".into()))?;
        if let Some(p) = zpl_value(text, "public-key") {
            let public = PublicKey::from_z85(p)
                .map_err(|_| KeyError("public-key is not a 40-character Z85 key".into()))?;
            if public != secret.public_key() {
                return Err(KeyError("public-key does not belong to secret-key".into()));
            }
        }
        return Ok(secret);
    }
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
    match (lines.next(), lines.next()) {
        (Some(line), None) => SecretKey::from_z85(line),
        _ => Err(KeyError(
            "expected a 40-character Z85 secret key or a zcert secret file (secret-key = \"...\")"
                .into(),
        )),
    }
}

/// Public keys from text: a zcert file (its `public-key`), or one Z85 key per line, with blank
/// lines and `#` comments (a line may end in `# comment`).
pub fn parse_public_keys(text: &str) -> Result<Vec<PublicKey>, KeyError> {
    if let Some(v) = zpl_value(text, "public-key") {
        let k = PublicKey::from_z85(v)
            .map_err(|_| KeyError("public-key is not a 40-character Z85 key".into()))?;
        return Ok(vec![k]);
    }
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let mut words = t.split_whitespace();
        let word = words.next().unwrap_or_default();
        let rest_ok = words.next().is_none_or(|w| w.starts_with('#'));
        match PublicKey::from_z85(word) {
            Ok(k) if rest_ok => keys.push(k),
            _ => {
                return Err(KeyError(format!("line {}: not a 40-character Z85 public key", n + 1)));
            }
        }
    }
    Ok(keys)
}

fn read_bounded(path: &Path) -> Result<Zeroizing<String>, KeyError> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| KeyError(format!("{shown}: {e}")))?;
    if meta.len() > MAX_KEY_FILE_BYTES {
        return Err(KeyError(format!("{shown}: larger than {MAX_KEY_FILE_BYTES} bytes")));
    }
    std::fs::read_to_string(path).map(Zeroizing::new).map_err(|e| KeyError(format!("{shown}: {e}")))
}

/// Reads a secret key file (Z85 text or a zcert secret file).
pub fn load_secret_key_file(path: &Path) -> Result<SecretKey, KeyError> {
    let text = read_bounded(path)?;
    parse_secret_text(&text).map_err(|e| KeyError(format!("{}: {}", path.display(), e.0)))
}

/// Reads a file holding exactly one public key (Z85 text or a zcert file).
pub fn load_public_key_file(path: &Path) -> Result<PublicKey, KeyError> {
    let text = read_bounded(path)?;
    match parse_public_keys(&text) {
        Ok(keys) if keys.len() == 1 => Ok(keys[0]),
        Ok(keys) => Err(KeyError(format!(
            "{}: expected one public key, found {}",
            path.display(),
            keys.len()
        ))),
        Err(e) => Err(KeyError(format!("{}: {}", path.display(), e.0))),
    }
}

/// Every key of an allow-list: a file of keys, or a directory of zcert public files (as CZMQ's
/// zauth reads them). In a directory, names starting with `.` (Kubernetes' `..data` and its
/// timestamped folders) and `*_secret` files are skipped.
pub fn read_allow_list(path: &Path) -> Result<HashSet<PublicKey>, KeyError> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| KeyError(format!("{shown}: {e}")))?;
    if !meta.is_dir() {
        let text = read_bounded(path)?;
        let keys = parse_public_keys(&text).map_err(|e| KeyError(format!("{shown}: {}", e.0)))?;
        return Ok(keys.into_iter().collect());
    }
    let mut names: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| KeyError(format!("{shown}: {e}")))? {
        let entry = entry.map_err(|e| KeyError(format!("{shown}: {e}")))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.ends_with("_secret") {
            continue;
        }
        let p = entry.path();
        // Follow symlinks (a mounted Secret's keys are links into `..data`).
        if std::fs::metadata(&p).map(|m| m.is_file()).unwrap_or(false) {
            names.push(p);
        }
        if names.len() > MAX_ALLOW_DIR_FILES {
            return Err(KeyError(format!("{shown}: more than {MAX_ALLOW_DIR_FILES} files")));
        }
    }
    names.sort();
    let mut keys = HashSet::new();
    for p in names {
        let text = read_bounded(&p)?;
        let found =
            parse_public_keys(&text).map_err(|e| KeyError(format!("{}: {}", p.display(), e.0)))?;
        keys.extend(found);
    }
    Ok(keys)
}

const ZCERT_PUBLIC_HEADER: &str = "#   ****  Generated by zmq-proxy keygen  ****\n\
#   ZeroMQ CURVE Public Certificate\n\
#   Exchange securely, or use a secure mechanism to verify the contents\n\
#   of this file after exchange.\n";
const ZCERT_SECRET_HEADER: &str = "#   ****  Generated by zmq-proxy keygen  ****\n\
#   ZeroMQ CURVE **Secret** Certificate\n\
#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n";

/// A zcert public file, as CZMQ's `zcert_save_public` writes it.
pub fn zcert_public_text(public: &PublicKey) -> String {
    format!("{ZCERT_PUBLIC_HEADER}\nmetadata\ncurve\n    public-key = \"{public}\"\n")
}

/// A zcert secret file (both keys), as CZMQ's `zcert_save_secret` writes it; zeroed on drop.
pub fn zcert_secret_text(secret: &SecretKey) -> Zeroizing<String> {
    let public = secret.public_key();
    let s = secret.to_z85();
    Zeroizing::new(format!(
        "{ZCERT_SECRET_HEADER}\nmetadata\ncurve\n    public-key = \"{public}\"\n    secret-key = \"{}\"\n",
        s.as_str()
    ))
}

// ---------------------------------------------------------------------------------------------
// Allow-list

/// The client keys a CURVE server socket accepts, re-read from its file or directory while the
/// proxy runs. Readers take a snapshot without blocking writers for long.
pub struct AllowList {
    path: PathBuf,
    keys: RwLock<Arc<HashSet<PublicKey>>>,
    generation: watch::Sender<u64>,
}

impl AllowList {
    pub fn load(path: &Path) -> Result<Arc<AllowList>, KeyError> {
        let keys = read_allow_list(path)?;
        Ok(Arc::new(AllowList {
            path: path.to_path_buf(),
            keys: RwLock::new(Arc::new(keys)),
            generation: watch::channel(0).0,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn snapshot(&self) -> Arc<HashSet<PublicKey>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn contains(&self, key: &PublicKey) -> bool {
        self.snapshot().contains(key)
    }

    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Changes each time the list's content changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Re-reads the list; returns (added, removed) when its content changed. Content, not
    /// mtime, decides: Kubernetes updates a mounted Secret or ConfigMap by swapping a `..data`
    /// symlink, which leaves the visible names' own metadata as it was.
    pub fn reload(&self) -> Result<Option<(usize, usize)>, KeyError> {
        let fresh = read_allow_list(&self.path)?;
        let old = self.snapshot();
        if *old == fresh {
            return Ok(None);
        }
        let added = fresh.difference(&old).count();
        let removed = old.difference(&fresh).count();
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        self.generation.send_modify(|g| *g += 1);
        Ok(Some((added, removed)))
    }

    /// Polls the list every `every` until `stop` is raised (or dropped). A list that cannot be
    /// read keeps the previous one, with one warning until it can be read again.
    pub async fn watch(self: Arc<Self>, every: Duration, mut stop: watch::Receiver<bool>) {
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.wait_for(|v| *v) => return,
                _ = tokio::time::sleep(every) => {}
            }
            match self.reload() {
                Ok(Some((added, removed))) => {
                    failing = false;
                    tracing::info!(
                        path = %self.path.display(),
                        keys = self.len(),
                        added,
                        removed,
                        "CURVE allow-list reloaded"
                    );
                }
                Ok(None) => failing = false,
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "CURVE allow-list unreadable; keeping the previous list");
                    }
                    failing = true;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Mechanisms

/// Which clients a CURVE server accepts.
#[derive(Clone)]
pub enum Allow {
    /// Any client that knows the server's public key (`--curve-allow-any`; libzmq without ZAP).
    Any,
    List(Arc<AllowList>),
}

/// A binding socket's CURVE identity and policy.
pub struct CurveServer {
    pub secret: SecretKey,
    pub public: PublicKey,
    pub allow: Allow,
}

/// A connecting socket's CURVE identity and the server key it expects.
pub struct CurveClient {
    pub secret: SecretKey,
    pub public: PublicKey,
    pub server: PublicKey,
    /// Generated at start (no client key file): its public key is logged so a server can
    /// list it.
    pub ephemeral: bool,
}

/// The security mechanism one side of a socket speaks.
#[derive(Clone, Default)]
pub enum Mechanism {
    #[default]
    Null,
    Server(Arc<CurveServer>),
    Client(Arc<CurveClient>),
}

impl Mechanism {
    /// The `mechanism` label: NULL or CURVE.
    pub fn name(&self) -> &'static str {
        match self {
            Mechanism::Null => "NULL",
            Mechanism::Server(_) | Mechanism::Client(_) => "CURVE",
        }
    }
}

impl fmt::Debug for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mechanism::Null => f.write_str("NULL"),
            Mechanism::Server(s) => match &s.allow {
                Allow::Any => write!(f, "CURVE server {} (any client)", s.public),
                Allow::List(l) => {
                    write!(f, "CURVE server {} (allow-list {})", s.public, l.path.display())
                }
            },
            Mechanism::Client(c) => write!(f, "CURVE client {} of server {}", c.public, c.server),
        }
    }
}

/// Mechanisms compare by their public facts (keys, allow-list path), never by secrets.
impl PartialEq for Mechanism {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Mechanism::Null, Mechanism::Null) => true,
            (Mechanism::Server(a), Mechanism::Server(b)) => {
                a.public == b.public
                    && match (&a.allow, &b.allow) {
                        (Allow::Any, Allow::Any) => true,
                        (Allow::List(x), Allow::List(y)) => x.path == y.path,
                        _ => false,
                    }
            }
            (Mechanism::Client(a), Mechanism::Client(b)) => {
                a.public == b.public && a.server == b.server
            }
            _ => false,
        }
    }
}

impl Eq for Mechanism {}

/// What one proxy socket speaks: on connections it accepted (its binds: the CURVE server side)
/// and on connections it made (its connects: the CURVE client side).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Security {
    pub accepted: Mechanism,
    pub connected: Mechanism,
}

impl Security {
    /// The allow-list to keep re-reading while the socket runs, if any.
    pub fn allow_list(&self) -> Option<Arc<AllowList>> {
        match &self.accepted {
            Mechanism::Server(s) => match &s.allow {
                Allow::List(l) => Some(l.clone()),
                Allow::Any => None,
            },
            _ => None,
        }
    }

    pub fn is_curve(&self) -> bool {
        !matches!((&self.accepted, &self.connected), (Mechanism::Null, Mechanism::Null))
    }
}

/// A completed handshake: the peer's metadata and, for CURVE, the session's codec.
pub struct Established {
    pub peer: PeerInfo,
    pub session: Option<Session>,
}

/// A CURVE session after READY: one sealer for what we send, one opener for what we read,
/// and the client's long-term key (server side), checked again when the allow-list changes.
pub struct Session {
    pub sealer: Sealer,
    pub opener: Opener,
    pub client_key: Option<(PublicKey, Arc<AllowList>)>,
}

/// Resolves when the allow-list that admitted this client no longer lists its key; never for
/// NULL connections, clients of `--curve-allow-any` servers, or outgoing connections.
pub async fn revoked(listed: Option<(PublicKey, Arc<AllowList>)>) {
    let Some((key, list)) = listed else { return std::future::pending().await };
    let mut changes = list.subscribe();
    loop {
        if changes.changed().await.is_err() {
            return std::future::pending().await;
        }
        if !list.contains(&key) {
            return;
        }
    }
}

/// Greeting, then the mechanism's handshake. `buf` keeps what the peer sent after it.
pub async fn handshake<R, W>(
    mech: &Mechanism,
    rd: &mut R,
    wr: &mut W,
    ours: SocketType,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Established, WireError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match mech {
        Mechanism::Null => {
            let peer = zmtp::handshake(rd, wr, ours, buf, max).await?;
            Ok(Established { peer, session: None })
        }
        Mechanism::Server(s) => {
            let revision = zmtp::greet(rd, wr, b"CURVE", true).await?;
            server_handshake(s, rd, wr, ours, buf, revision).await
        }
        Mechanism::Client(c) => {
            let revision = zmtp::greet(rd, wr, b"CURVE", false).await?;
            client_handshake(c, rd, wr, ours, buf, revision).await
        }
    }
}

fn nonce_bytes(prefix: &[u8; 16], n: u64) -> [u8; 24] {
    let mut b = [0u8; 24];
    b[..16].copy_from_slice(prefix);
    b[16..].copy_from_slice(&n.to_be_bytes());
    b
}

fn nonce(prefix: &[u8; 16], n: u64) -> Nonce {
    Nonce::from(nonce_bytes(prefix, n))
}

/// The MESSAGE boxes' shared key of a session, `crypto_box_beforenm(peer', ours')`: computed
/// once per connection, as libzmq does, and used by both directions. `None` when libsodium
/// refuses the peer's transient key (a low-order point, whose shared secret is all zeros).
fn message_key(
    peer: &[u8; KEY_BYTES],
    ours: &crypto_box::SecretKey,
) -> Option<sodium::PrecomputedKey> {
    let secret = Zeroizing::new(ours.to_bytes());
    let secret = sodium::SecretKey::from_bytes(&secret[..]).ok()?;
    let public = sodium::PublicKey::from_bytes(peer).ok()?;
    sodium::beforenm(&public, &secret).ok()
}

fn long_nonce(prefix: &[u8; 8], rest: &[u8]) -> Nonce {
    let mut b = [0u8; 24];
    b[..8].copy_from_slice(prefix);
    b[8..].copy_from_slice(&rest[..16]);
    Nonce::from(b)
}

fn random16() -> [u8; 16] {
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    b
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fn key32(b: &[u8]) -> [u8; 32] {
    let mut a = [0u8; 32];
    a.copy_from_slice(&b[..32]);
    a
}

/// Opens `tag || ciphertext` in place into `out` (which receives the plaintext).
fn open_into<C: AeadInPlace<NonceSize = U24, TagSize = U16>>(
    cipher: &C,
    n: &Nonce,
    boxed: &[u8],
    out: &mut [u8],
) -> bool {
    if boxed.len() < 16 || out.len() != boxed.len() - 16 {
        return false;
    }
    out.copy_from_slice(&boxed[16..]);
    let tag = crypto_box::aead::Tag::<C>::clone_from_slice(&boxed[..16]);
    cipher.decrypt_in_place_detached(n, b"", out, &tag).is_ok()
}

/// Seals `plain` into `tag || ciphertext`.
fn seal<C: AeadInPlace<NonceSize = U24, TagSize = U16>>(
    cipher: &C,
    n: &Nonce,
    plain: &[u8],
) -> Result<Vec<u8>, WireError> {
    let mut out = vec![0u8; 16 + plain.len()];
    out[16..].copy_from_slice(plain);
    let tag =
        cipher.encrypt_in_place_detached(n, b"", &mut out[16..]).map_err(|_| CurveError::Seal)?;
    out[..16].copy_from_slice(&tag);
    Ok(out)
}

fn is_error(raw: &[u8]) -> bool {
    raw.starts_with(b"\x05ERROR")
}

async fn server_handshake<R, W>(
    srv: &CurveServer,
    rd: &mut R,
    wr: &mut W,
    ours: SocketType,
    buf: &mut BytesMut,
    revision: zmtp::Revision,
) -> Result<Established, WireError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut dec = zmtp::Decoder::new(zmtp::HANDSHAKE_MAX_BYTES);
    let hello = zmtp::read_command(rd, buf, &mut dec).await?;
    if !hello.starts_with(b"\x05HELLO") {
        return Err(CurveError::UnexpectedCommand.into());
    }
    if hello.len() != HELLO_LEN || hello[6] != 1 || hello[7] != 0 {
        return Err(CurveError::MalformedHello.into());
    }
    let cn_client = PublicKey(key32(&hello[80..112]));
    let hello_nonce = be_u64(&hello[112..120]);
    let to_client = SalsaBox::new(&cn_client.boxed(), &srv.secret.0);
    let mut signature = [0u8; 64];
    let n = nonce(b"CurveZMQHELLO---", hello_nonce);
    if !open_into(&to_client, &n, &hello[120..200], &mut signature) {
        return Err(CurveError::WrongServerKey.into());
    }
    if signature != [0u8; 64] {
        return Err(CurveError::MalformedHello.into());
    }

    // WELCOME: our transient key S' and the cookie, SecretBox[C' + s'] under a key that lives
    // only until INITIATE is checked.
    let cn_secret = crypto_box::SecretKey::generate(&mut OsRng);
    let cn_public = cn_secret.public_key();
    let Some(message) = message_key(cn_client.as_bytes(), &cn_secret) else {
        return Err(CurveError::MalformedHello.into());
    };
    let mut cookie_key = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(&mut cookie_key[..]);
    let cookie_cipher = XSalsa20Poly1305::new(Key::from_slice(&cookie_key[..]));
    let cookie_nonce = random16();
    let mut cookie_plain = Zeroizing::new([0u8; 64]);
    cookie_plain[..32].copy_from_slice(cn_client.as_bytes());
    cookie_plain[32..].copy_from_slice(&cn_secret.to_bytes());
    let cookie = seal(&cookie_cipher, &long_nonce(b"COOKIE--", &cookie_nonce), &cookie_plain[..])?;
    let mut welcome_plain = Zeroizing::new(Vec::with_capacity(128));
    welcome_plain.extend_from_slice(cn_public.as_bytes());
    welcome_plain.extend_from_slice(&cookie_nonce);
    welcome_plain.extend_from_slice(&cookie);
    let welcome_nonce = random16();
    let boxed = seal(&to_client, &long_nonce(b"WELCOME-", &welcome_nonce), &welcome_plain)?;
    let mut welcome = BytesMut::with_capacity(WELCOME_LEN);
    welcome.put_slice(b"\x07WELCOME");
    welcome.put_slice(&welcome_nonce);
    welcome.put_slice(&boxed);
    wr.write_all(&zmtp::command_frame(&welcome)).await?;

    let initiate = zmtp::read_command(rd, buf, &mut dec).await?;
    if !initiate.starts_with(b"\x08INITIATE") {
        return Err(CurveError::UnexpectedCommand.into());
    }
    if initiate.len() < INITIATE_MIN_LEN {
        return Err(CurveError::MalformedInitiate.into());
    }
    let mut cookie_back = Zeroizing::new([0u8; 64]);
    let n = long_nonce(b"COOKIE--", &initiate[9..25]);
    if !open_into(&cookie_cipher, &n, &initiate[25..105], &mut cookie_back[..]) {
        return Err(CurveError::BadCookie.into());
    }
    drop(cookie_cipher);
    drop(cookie_key);
    if cookie_back[..] != cookie_plain[..] {
        return Err(CurveError::BadCookie.into());
    }
    let initiate_nonce = be_u64(&initiate[105..113]);
    if initiate_nonce <= hello_nonce {
        return Err(CurveError::BadNonce.into());
    }
    let session = SalsaBox::new(&cn_client.boxed(), &cn_secret);
    let mut plain = Zeroizing::new(vec![0u8; initiate.len() - 129]);
    let n = nonce(b"CurveZMQINITIATE", initiate_nonce);
    if !open_into(&session, &n, &initiate[113..], &mut plain) {
        return Err(CurveError::InitiateAuth.into());
    }
    let client_key = PublicKey(key32(&plain[..32]));
    let vouch_cipher = SalsaBox::new(&client_key.boxed(), &cn_secret);
    let mut vouch = [0u8; 64];
    let n = long_nonce(b"VOUCH---", &plain[32..48]);
    if !open_into(&vouch_cipher, &n, &plain[48..128], &mut vouch) {
        return Err(CurveError::BadVouch.into());
    }
    if vouch[..32] != cn_client.0[..] || vouch[32..] != srv.public.0[..] {
        return Err(CurveError::BadVouch.into());
    }
    let allowed = match &srv.allow {
        Allow::Any => None,
        Allow::List(list) => {
            if !list.contains(&client_key) {
                // libzmq answers a ZAP denial with ERROR "400"; its clients then report an
                // authentication failure rather than a protocol error.
                let _ = wr.write_all(&zmtp::command_frame(b"\x05ERROR\x03400")).await;
                return Err(CurveError::UnknownClientKey.into());
            }
            Some((client_key, list.clone()))
        }
    };
    let peer = zmtp::peer_info(ours, Bytes::copy_from_slice(&plain[128..]), revision)?;

    let boxed = seal(&session, &nonce(b"CurveZMQREADY---", 1), &zmtp::metadata(ours))?;
    let mut ready = BytesMut::with_capacity(14 + boxed.len());
    ready.put_slice(b"\x05READY");
    ready.put_u64(1);
    ready.put_slice(&boxed);
    wr.write_all(&zmtp::command_frame(&ready)).await?;
    Ok(Established {
        peer,
        session: Some(Session {
            sealer: Sealer { key: message.clone(), prefix: b"CurveZMQMESSAGES", next: 2 },
            opener: Opener { key: message, prefix: b"CurveZMQMESSAGEC", last: initiate_nonce },
            client_key: allowed,
        }),
    })
}

async fn client_handshake<R, W>(
    cli: &CurveClient,
    rd: &mut R,
    wr: &mut W,
    ours: SocketType,
    buf: &mut BytesMut,
    revision: zmtp::Revision,
) -> Result<Established, WireError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let cn_secret = crypto_box::SecretKey::generate(&mut OsRng);
    let cn_public = cn_secret.public_key();
    let to_server = SalsaBox::new(&cli.server.boxed(), &cn_secret);
    let signature = seal(&to_server, &nonce(b"CurveZMQHELLO---", 1), &[0u8; 64])?;
    let mut hello = BytesMut::with_capacity(HELLO_LEN);
    hello.put_slice(b"\x05HELLO\x01\x00");
    hello.put_bytes(0, 72);
    hello.put_slice(cn_public.as_bytes());
    hello.put_u64(1);
    hello.put_slice(&signature);
    wr.write_all(&zmtp::command_frame(&hello)).await?;

    let mut dec = zmtp::Decoder::new(zmtp::HANDSHAKE_MAX_BYTES);
    let welcome = zmtp::read_command(rd, buf, &mut dec).await?;
    if is_error(&welcome) {
        return Err(CurveError::RefusedByServer.into());
    }
    if !welcome.starts_with(b"\x07WELCOME") {
        return Err(CurveError::UnexpectedCommand.into());
    }
    if welcome.len() != WELCOME_LEN {
        return Err(CurveError::MalformedWelcome.into());
    }
    let mut plain = Zeroizing::new([0u8; 128]);
    let n = long_nonce(b"WELCOME-", &welcome[8..24]);
    if !open_into(&to_server, &n, &welcome[24..], &mut plain[..]) {
        return Err(CurveError::ServerKeyMismatch.into());
    }
    let cn_server = crypto_box::PublicKey::from(key32(&plain[..32]));
    let session = SalsaBox::new(&cn_server, &cn_secret);
    let Some(message) = message_key(cn_server.as_bytes(), &cn_secret) else {
        return Err(CurveError::MalformedWelcome.into());
    };

    let mut vouch_plain = [0u8; 64];
    vouch_plain[..32].copy_from_slice(cn_public.as_bytes());
    vouch_plain[32..].copy_from_slice(cli.server.as_bytes());
    let vouch_nonce = random16();
    let vouch_cipher = SalsaBox::new(&cn_server, &cli.secret.0);
    let vouch = seal(&vouch_cipher, &long_nonce(b"VOUCH---", &vouch_nonce), &vouch_plain)?;
    let mut inner = Vec::with_capacity(128 + 48);
    inner.extend_from_slice(cli.public.as_bytes());
    inner.extend_from_slice(&vouch_nonce);
    inner.extend_from_slice(&vouch);
    inner.extend_from_slice(&zmtp::metadata(ours));
    let boxed = seal(&session, &nonce(b"CurveZMQINITIATE", 2), &inner)?;
    let mut initiate = BytesMut::with_capacity(113 + boxed.len());
    initiate.put_slice(b"\x08INITIATE");
    initiate.put_slice(&plain[32..128]);
    initiate.put_u64(2);
    initiate.put_slice(&boxed);
    wr.write_all(&zmtp::command_frame(&initiate)).await?;

    let ready = zmtp::read_command(rd, buf, &mut dec).await?;
    if is_error(&ready) {
        return Err(CurveError::RefusedByServer.into());
    }
    if !ready.starts_with(b"\x05READY") {
        return Err(CurveError::UnexpectedCommand.into());
    }
    if ready.len() < 30 {
        return Err(CurveError::BadReady.into());
    }
    let ready_nonce = be_u64(&ready[6..14]);
    let mut metadata = vec![0u8; ready.len() - 30];
    if !open_into(&session, &nonce(b"CurveZMQREADY---", ready_nonce), &ready[14..], &mut metadata) {
        return Err(CurveError::BadReady.into());
    }
    let peer = zmtp::peer_info(ours, Bytes::from(metadata), revision)?;
    Ok(Established {
        peer,
        session: Some(Session {
            sealer: Sealer { key: message.clone(), prefix: b"CurveZMQMESSAGEC", next: 3 },
            opener: Opener { key: message, prefix: b"CurveZMQMESSAGES", last: ready_nonce },
            client_key: None,
        }),
    })
}

// ---------------------------------------------------------------------------------------------
// MESSAGE framing

/// Seals outgoing frames of one CURVE connection, each in its own MESSAGE box.
pub struct Sealer {
    /// Never formatted (libsodium-rs's `Debug` would show it).
    key: sodium::PrecomputedKey,
    prefix: &'static [u8; 16],
    next: u64,
}

impl Sealer {
    /// Appends one sealed frame to `out`: header, `\x07MESSAGE`, short nonce, tag, then the
    /// flags byte and payload, encrypted where they were written.
    pub fn seal_frame(
        &mut self,
        more: bool,
        command: bool,
        payload: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), CurveError> {
        let n = self.next;
        self.next = n.checked_add(1).ok_or(CurveError::Seal)?;
        let start = out.len();
        zmtp::put_header(out, 0, MESSAGE_OVERHEAD + payload.len());
        out.put_slice(MESSAGE_PREFIX);
        out.put_u64(n);
        let tag_at = out.len();
        out.put_bytes(0, sodium_box::TAG_BYTES);
        out.put_u8(if more { INNER_MORE } else { 0 } | if command { INNER_COMMAND } else { 0 });
        out.put_slice(payload);
        let (head, plain) = out[tag_at..].split_at_mut(sodium_box::TAG_BYTES);
        let tag: &mut [u8; sodium_box::TAG_BYTES] =
            head.try_into().map_err(|_| CurveError::Seal)?;
        if sodium_box::seal(plain, tag, &nonce_bytes(self.prefix, n), &self.key).is_err() {
            out.truncate(start);
            return Err(CurveError::Seal);
        }
        Ok(())
    }

    /// Appends every frame of one message.
    pub fn seal_message(&mut self, frames: &[Bytes], out: &mut BytesMut) -> Result<(), CurveError> {
        let last = frames.len().saturating_sub(1);
        for (i, f) in frames.iter().enumerate() {
            self.seal_frame(i < last, false, f, out)?;
        }
        Ok(())
    }

    /// Appends one command (name length, name, data: a PONG) as a sealed COMMAND frame.
    pub fn seal_command(&mut self, body: &[u8], out: &mut BytesMut) -> Result<(), CurveError> {
        self.seal_frame(false, true, body, out)
    }
}

/// Opens incoming MESSAGE frames of one CURVE connection.
pub struct Opener {
    /// Never formatted (libsodium-rs's `Debug` would show it).
    key: sodium::PrecomputedKey,
    prefix: &'static [u8; 16],
    last: u64,
}

impl zmtp::FrameOpener for Opener {
    fn open(&mut self, mut frame: BytesMut) -> Result<(u8, Bytes), WireError> {
        if frame.len() < MESSAGE_OVERHEAD || &frame[..8] != MESSAGE_PREFIX {
            return Err(CurveError::MalformedMessage.into());
        }
        let n = be_u64(&frame[8..16]);
        if n <= self.last {
            return Err(CurveError::BadNonce.into());
        }
        let (head, boxed) = frame.split_at_mut(32);
        let tag: &[u8; sodium_box::TAG_BYTES] =
            head[16..32].try_into().map_err(|_| CurveError::MalformedMessage)?;
        sodium_box::open(boxed, tag, &nonce_bytes(self.prefix, n), &self.key)
            .map_err(|_| CurveError::MessageAuth)?;
        let Some(&inner) = boxed.first() else {
            return Err(CurveError::MalformedMessage.into());
        };
        self.last = n;
        let mut flags = 0;
        if inner & INNER_MORE != 0 {
            flags |= FLAG_MORE;
        }
        if inner & INNER_COMMAND != 0 {
            flags |= FLAG_COMMAND;
        }
        Ok((flags, frame.freeze().slice(33..)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zmtp::{Decoder, FrameOpener, Item};

    /// `r` is the refusal `e` of the CURVE mechanism, as the codec carries it.
    fn is_curve<T>(r: &Result<T, WireError>, e: CurveError) -> bool {
        matches!(r, Err(WireError::Mechanism { mechanism: "CURVE", reason, text })
            if *reason == e.reason() && *text == e.to_string())
    }

    const CLIENT_PUBLIC: &str = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID";
    const CLIENT_SECRET: &str = "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs";
    const SERVER_PUBLIC: &str = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
    const SERVER_SECRET: &str = "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6";

    /// RFC 32's test vector.
    #[test]
    fn z85_round_trips_the_rfc_32_vector() {
        let bytes = [0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B];
        assert_eq!(z85::encode(bytes), "HelloWorld");
        assert_eq!(z85::decode("HelloWorld").expect("decodes"), bytes);
    }

    /// The zmq_curve(7) test keys: each secret derives its public key.
    #[test]
    fn zmq_curve_test_secrets_derive_their_public_keys() {
        for (secret, public) in [(CLIENT_SECRET, CLIENT_PUBLIC), (SERVER_SECRET, SERVER_PUBLIC)] {
            let s = SecretKey::from_z85(secret).expect("secret");
            assert_eq!(s.public_key().to_z85(), public);
            assert_eq!(s.to_z85().as_str(), secret);
            assert_eq!(PublicKey::from_z85(public).expect("public"), s.public_key());
        }
    }

    #[test]
    fn secret_keys_never_format_their_bytes() {
        let s = SecretKey::from_z85(SERVER_SECRET).expect("secret");
        let shown = format!("{s:?}");
        assert_eq!(shown, "SecretKey(<redacted>)");
        assert!(!shown.contains(SERVER_SECRET));
    }

    #[test]
    fn bad_key_text_is_refused_without_echoing_it() {
        for bad in [
            "",
            "short",
            &SERVER_PUBLIC[..39],
            &format!("{SERVER_PUBLIC}x"),
            "#####aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            let e = PublicKey::from_z85(bad).expect_err("refused");
            assert!(!bad.is_empty() && !e.0.contains(bad) || bad.is_empty());
            assert!(SecretKey::from_z85(bad).is_err());
        }
    }

    #[test]
    fn zcert_files_round_trip_and_plain_key_files_parse() {
        let s = SecretKey::from_z85(SERVER_SECRET).expect("secret");
        let secret_file = zcert_secret_text(&s);
        assert_eq!(
            parse_secret_text(&secret_file).expect("zcert secret").public_key(),
            s.public_key()
        );
        assert_eq!(
            parse_public_keys(&secret_file).expect("public of secret"),
            vec![s.public_key()]
        );
        let public_file = zcert_public_text(&s.public_key());
        assert_eq!(parse_public_keys(&public_file).expect("zcert public"), vec![s.public_key()]);
        assert!(parse_secret_text(&public_file).is_err(), "a public file holds no secret");
        let plain = format!("# the server\n\n{SERVER_SECRET}\n");
        assert_eq!(parse_secret_text(&plain).expect("plain").public_key().to_z85(), SERVER_PUBLIC);
        let mismatched = secret_file.replace(SERVER_PUBLIC, CLIENT_PUBLIC);
        assert!(parse_secret_text(&mismatched).is_err());
        let list = format!("# clients\n{CLIENT_PUBLIC}  # alice\n\n   {SERVER_PUBLIC}\n");
        assert_eq!(parse_public_keys(&list).expect("list").len(), 2);
        let e = parse_public_keys(&format!("{CLIENT_PUBLIC}\nnot a key\n")).expect_err("bad line");
        assert_eq!(e.0, "line 2: not a 40-character Z85 public key");
    }

    /// A HELLO from a low-order transient key (all zeros: every shared secret with it is zero,
    /// so anyone can make its box) opens, but libsodium refuses to derive a session key from
    /// it, and the server stops there instead of answering with a WELCOME.
    #[tokio::test]
    async fn a_low_order_client_transient_key_is_refused() {
        let server_secret = SecretKey::from_z85(SERVER_SECRET).expect("secret");
        let srv = CurveServer {
            public: server_secret.public_key(),
            secret: server_secret,
            allow: Allow::Any,
        };
        let zero = crypto_box::PublicKey::from([0u8; KEY_BYTES]);
        let anyone = SalsaBox::new(&zero, &crypto_box::SecretKey::generate(&mut OsRng));
        let signature = seal(&anyone, &nonce(b"CurveZMQHELLO---", 1), &[0u8; 64]).expect("seal");
        let mut hello = BytesMut::with_capacity(HELLO_LEN);
        hello.put_slice(b"\x05HELLO\x01\x00");
        hello.put_bytes(0, 72);
        hello.put_slice(zero.as_bytes());
        hello.put_u64(1);
        hello.put_slice(&signature);
        let wire = zmtp::command_frame(&hello);
        let (mut rd, mut wr) = (&wire[..], Vec::new());
        let mut buf = BytesMut::new();
        let r = server_handshake(
            &srv,
            &mut rd,
            &mut wr,
            SocketType::Pull,
            &mut buf,
            zmtp::Revision::V3_1,
        )
        .await;
        assert!(is_curve(&r, CurveError::MalformedHello));
        assert!(wr.is_empty(), "no WELCOME for a low-order key");
    }

    /// Both handshakes against each other over an in-memory pipe, then frames both ways,
    /// then the refusals an attacker can cause from the wire.
    #[tokio::test]
    async fn client_and_server_agree_and_messages_round_trip() {
        let server_secret = SecretKey::from_z85(SERVER_SECRET).expect("secret");
        let client_secret = SecretKey::from_z85(CLIENT_SECRET).expect("secret");
        let allow = Arc::new(AllowList {
            path: PathBuf::new(),
            keys: RwLock::new(Arc::new([client_secret.public_key()].into_iter().collect())),
            generation: watch::channel(0).0,
        });
        let server = Mechanism::Server(Arc::new(CurveServer {
            public: server_secret.public_key(),
            secret: server_secret,
            allow: Allow::List(allow),
        }));
        let client = Mechanism::Client(Arc::new(CurveClient {
            public: client_secret.public_key(),
            secret: client_secret,
            server: PublicKey::from_z85(SERVER_PUBLIC).expect("public"),
            ephemeral: false,
        }));
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (mut ar, mut aw) = tokio::io::split(a);
        let (mut br, mut bw) = tokio::io::split(b);
        let (mut abuf, mut bbuf) = (BytesMut::new(), BytesMut::new());
        let (s, c) = tokio::join!(
            handshake(&server, &mut ar, &mut aw, SocketType::Router, &mut abuf, 1 << 20),
            handshake(&client, &mut br, &mut bw, SocketType::Dealer, &mut bbuf, 1 << 20),
        );
        let (s, c) = (s.expect("server side"), c.expect("client side"));
        assert_eq!(&s.peer.socket_type[..], b"DEALER");
        assert_eq!(&c.peer.socket_type[..], b"ROUTER");
        // Both ends greeted as 3.1, and each remembers it: subscriptions to a CURVE peer take
        // the command form too (sealed like the PONG below).
        assert_eq!(
            (s.peer.revision, c.peer.revision),
            (zmtp::Revision::V3_1, zmtp::Revision::V3_1)
        );
        let (mut ss, mut cs) = (s.session.expect("session"), c.session.expect("session"));
        let mut wire = BytesMut::new();
        let big = Bytes::from(vec![7u8; 300]);
        cs.sealer
            .seal_message(&[Bytes::from_static(b"hello"), Bytes::new(), big.clone()], &mut wire)
            .expect("seal");
        let mut dec = Decoder::new(1 << 20);
        dec.set_opener(Box::new(ss.opener));
        let Ok(Some(Item::Message(m))) = dec.decode(&mut wire) else { panic!("a message") };
        assert_eq!(m, vec![Bytes::from_static(b"hello"), Bytes::new(), big]);
        // A replayed frame (same nonce) is refused.
        let mut one = BytesMut::new();
        cs.sealer.seal_frame(false, false, b"x", &mut one).expect("seal");
        let mut replay = one.clone();
        assert!(matches!(dec.decode(&mut one), Ok(Some(Item::Message(_)))));
        assert!(is_curve(&dec.decode(&mut replay), CurveError::BadNonce));
        // A flipped bit fails authentication.
        let mut opener = cs.opener;
        let mut back = BytesMut::new();
        ss.sealer.seal_command(b"\x04PONG", &mut back).expect("seal");
        let mut tampered = back.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let body = |b: &BytesMut| BytesMut::from(&b[2..]);
        assert!(is_curve(&opener.open(body(&tampered)), CurveError::MessageAuth));
        let (flags, payload) = opener.open(body(&back)).expect("opens");
        assert_eq!(flags, FLAG_COMMAND);
        assert_eq!(&payload[..], b"\x04PONG");
    }
}
