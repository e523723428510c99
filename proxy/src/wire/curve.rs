//! The CurveZMQ security mechanism (ZMTP 3.0 CURVE, RFC 26) as libzmq speaks it, the part that is
//! bytes only: keys and their Z85 and zcert texts, nonces, the boxes of the handshake commands, and
//! the sealing and opening of every frame afterwards. Key files, the allow-list and the handshakes
//! themselves are `engine/curve.rs`. The handshake's cryptography is RustCrypto's (`crypto_box`'s
//! [`SalsaBox`], X25519 + XSalsa20-Poly1305, and `crypto_secretbox` for the cookie). The MESSAGE
//! boxes after it are libsodium's, through `libsodium-rs` (built from the source the crate ships,
//! linked statically), exactly as libzmq does it: the session's shared key is precomputed once per
//! connection (`crypto_box_beforenm`) and every frame is one `crypto_box_detached_afternm` /
//! `crypto_box_open_detached_afternm`, in place in the frame buffer ([`crate::wire::sodium_box`]):
//! RustCrypto's XSalsa20-Poly1305 costs several times more per frame (`poly1305`'s runtime-detected
//! AVX2 backend ends up as calls, and `salsa20` has no SIMD backend; `cargo bench -p zmq-proxy
//! --bench curve_frames` measures both). This module only lays out bytes and keeps nonces.
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

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use crypto_box::Nonce;
use crypto_box::aead::consts::{U16, U24};
use crypto_box::aead::rand_core::RngCore;
use crypto_box::aead::{AeadInPlace, OsRng};
use libsodium_rs::crypto_box as sodium;
use zeroize::Zeroizing;

use crate::wire::sodium_box;
use crate::wire::zmtp::{self, FLAG_COMMAND, FLAG_MORE, WireError};

pub const KEY_BYTES: usize = 32;
/// A key in Z85 text, as `zmq_curve_keypair` writes it.
pub const Z85_KEY_LEN: usize = 40;
/// Largest allow-list file read (a key line is 41 bytes: this is about 25 000 keys).
pub const MAX_KEY_FILE_BYTES: u64 = 1024 * 1024;
/// Most files read from an allow-list directory.
pub const MAX_ALLOW_DIR_FILES: usize = 10_000;

pub(crate) const HELLO_LEN: usize = 200;
pub(crate) const WELCOME_LEN: usize = 168;
pub(crate) const INITIATE_MIN_LEN: usize = 257;
pub(crate) const MESSAGE_PREFIX: &[u8; 8] = b"\x07MESSAGE";
/// `\x07MESSAGE`, short nonce, tag, flags byte.
pub(crate) const MESSAGE_OVERHEAD: usize = 8 + 8 + 16 + 1;
pub(crate) const INNER_MORE: u8 = 0x01;
pub(crate) const INNER_COMMAND: u8 = 0x02;

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
pub struct PublicKey(pub(crate) [u8; KEY_BYTES]);

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

    pub(crate) fn boxed(&self) -> crypto_box::PublicKey {
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
pub struct SecretKey(pub(crate) crypto_box::SecretKey);

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
pub(crate) fn decode_key(text: &str) -> Option<Zeroizing<[u8; KEY_BYTES]>> {
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
pub(crate) fn zpl_value<'a>(text: &'a str, name: &str) -> Option<&'a str> {
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

pub(crate) fn nonce_bytes(prefix: &[u8; 16], n: u64) -> [u8; 24] {
    let mut b = [0u8; 24];
    b[..16].copy_from_slice(prefix);
    b[16..].copy_from_slice(&n.to_be_bytes());
    b
}

pub(crate) fn nonce(prefix: &[u8; 16], n: u64) -> Nonce {
    Nonce::from(nonce_bytes(prefix, n))
}

/// The MESSAGE boxes' shared key of a session, `crypto_box_beforenm(peer', ours')`: computed
/// once per connection, as libzmq does, and used by both directions. `None` when libsodium
/// refuses the peer's transient key (a low-order point, whose shared secret is all zeros).
pub(crate) fn message_key(
    peer: &[u8; KEY_BYTES],
    ours: &crypto_box::SecretKey,
) -> Option<sodium::PrecomputedKey> {
    let secret = Zeroizing::new(ours.to_bytes());
    let secret = sodium::SecretKey::from_bytes(&secret[..]).ok()?;
    let public = sodium::PublicKey::from_bytes(peer).ok()?;
    sodium::beforenm(&public, &secret).ok()
}

pub(crate) fn long_nonce(prefix: &[u8; 8], rest: &[u8]) -> Nonce {
    let mut b = [0u8; 24];
    b[..8].copy_from_slice(prefix);
    b[8..].copy_from_slice(&rest[..16]);
    Nonce::from(b)
}

pub(crate) fn random16() -> [u8; 16] {
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    b
}

pub(crate) fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

pub(crate) fn key32(b: &[u8]) -> [u8; 32] {
    let mut a = [0u8; 32];
    a.copy_from_slice(&b[..32]);
    a
}

/// Opens `tag || ciphertext` in place into `out` (which receives the plaintext).
pub(crate) fn open_into<C: AeadInPlace<NonceSize = U24, TagSize = U16>>(
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
pub(crate) fn seal<C: AeadInPlace<NonceSize = U24, TagSize = U16>>(
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

// ---------------------------------------------------------------------------------------------
// MESSAGE framing

/// Seals outgoing frames of one CURVE connection, each in its own MESSAGE box.
pub struct Sealer {
    /// Never formatted (libsodium-rs's `Debug` would show it).
    pub(crate) key: sodium::PrecomputedKey,
    pub(crate) prefix: &'static [u8; 16],
    pub(crate) next: u64,
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
    pub(crate) key: sodium::PrecomputedKey,
    pub(crate) prefix: &'static [u8; 16],
    pub(crate) last: u64,
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
