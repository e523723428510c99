//! The CURVE mechanism's run-time half: key files and the allow-list read from disk, the
//! `Mechanism` and `Security` each socket speaks, and the async server and client handshakes
//! that end in a [`Session`] of the wire layer's MESSAGE boxes.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use crypto_box::SalsaBox;
use crypto_box::aead::OsRng;
use crypto_box::aead::rand_core::RngCore;
use crypto_secretbox::{Key, KeyInit, XSalsa20Poly1305};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use zeroize::Zeroizing;

use super::handshake::{self, greet};
use crate::wire::curve::*;
pub use crate::wire::curve::{CurveError, KeyError, Opener, PublicKey, Sealer, SecretKey};
use crate::wire::zmtp::{self, PeerInfo, WireError};
use zmq_proxy_api::socket::SocketType;

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

    /// A list of fixed keys, never re-read (the federation's own key, from its key file at
    /// `path`, which only names the list in logs).
    pub fn of_keys(path: &Path, keys: HashSet<PublicKey>) -> Arc<AllowList> {
        Arc::new(AllowList {
            path: path.to_path_buf(),
            keys: RwLock::new(Arc::new(keys)),
            generation: watch::channel(0).0,
        })
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
            let peer = handshake::handshake(rd, wr, ours, buf, max).await?;
            Ok(Established { peer, session: None })
        }
        Mechanism::Server(s) => {
            let revision = greet_v3(rd, wr, true, ours).await?;
            server_handshake(s, rd, wr, ours, buf, revision).await
        }
        Mechanism::Client(c) => {
            let revision = greet_v3(rd, wr, false, ours).await?;
            client_handshake(c, rd, wr, ours, buf, revision).await
        }
    }
}

/// The CURVE greeting: ZMTP 3 only ([`greet`] refuses a 2.0 peer before it settles).
async fn greet_v3<R, W>(
    rd: &mut R,
    wr: &mut W,
    as_server: bool,
    ours: SocketType,
) -> Result<zmtp::Revision, WireError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match greet(rd, wr, b"CURVE", as_server, ours).await? {
        zmtp::Greeted::V3(revision) => Ok(revision),
        zmtp::Greeted::V2 { .. } => Err(WireError::Zmtp2OnCurve),
    }
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
    let hello = handshake::read_command(rd, buf, &mut dec).await?;
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

    let initiate = handshake::read_command(rd, buf, &mut dec).await?;
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
    let welcome = handshake::read_command(rd, buf, &mut dec).await?;
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

    let ready = handshake::read_command(rd, buf, &mut dec).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::zmtp::FLAG_COMMAND;
    use crate::wire::zmtp::{Decoder, FrameOpener, Item};

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
