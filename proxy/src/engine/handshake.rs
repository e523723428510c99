//! The greeting exchange and the NULL mechanism's READY handshake over a connection's byte
//! streams; the CURVE handshakes start from the same greeting.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::wire::zmtp::{
    Decoder, GREETING_LEN, HANDSHAKE_MAX_BYTES, Item, PeerInfo, Revision, WireError, greeting_for,
    greeting_mechanism, parse_command, peer_info, ready_frame,
};
use zmq_proxy_api::socket::SocketType;

/// Greeting and READY exchange (NULL mechanism). `buf` keeps whatever the peer sent after its
/// READY.
pub async fn handshake<R, W>(
    rd: &mut R,
    wr: &mut W,
    ours: SocketType,
    buf: &mut BytesMut,
    max: usize,
) -> Result<PeerInfo, WireError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let revision = greet(rd, wr, b"NULL", false).await?;
    wr.write_all(&ready_frame(ours)).await?;
    // The READY command is small; bound it well below the message limit.
    let mut dec = Decoder::new(max.min(HANDSHAKE_MAX_BYTES));
    let raw = read_command(rd, buf, &mut dec).await?;
    let cmd = parse_command(raw)?;
    if &cmd.name[..] != b"READY" {
        return Err(WireError::Handshake(format!(
            "expected READY, got {}",
            String::from_utf8_lossy(&cmd.name)
        )));
    }
    peer_info(ours, cmd.body, revision)
}

/// Exchanges greetings announcing `mechanism` and returns the peer's revision; a peer
/// announcing another mechanism is refused (libzmq refuses a mismatch the same way, whatever
/// the as-server bits say).
pub async fn greet<R, W>(
    rd: &mut R,
    wr: &mut W,
    mechanism: &'static [u8],
    as_server: bool,
) -> Result<Revision, WireError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Signature and major version first, the rest once the peer's have arrived, as libzmq
    // does. A libzmq peer sends the rest of its greeting as soon as it reads our major version,
    // before it sees our mechanism; so its mechanism reaches us even when a mismatch makes it
    // close at once, and the refusal is counted as a mismatch rather than as a closed peer.
    let ours = greeting_for(mechanism, as_server);
    // A peer gone before sending a byte (a port check, a TCP probe) is no ZMTP peer: its EOF or
    // reset is reported as such, whether our greeting's write or the first read meets it.
    let gone = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::BrokenPipe
        | std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::UnexpectedEof => WireError::NoGreeting,
        _ => WireError::Io(e),
    };
    wr.write_all(&ours[..11]).await.map_err(gone)?;
    let mut g = [0u8; GREETING_LEN];
    // Check the signature as soon as its 10 bytes arrive, so garbage is refused without waiting.
    let first = rd.read(&mut g[..10]).await.map_err(gone)?;
    if first == 0 {
        return Err(WireError::NoGreeting);
    }
    rd.read_exact(&mut g[first..10]).await.map_err(eof_is_closed)?;
    if g[0] != 0xff || g[9] & 0x01 != 0x01 {
        return Err(WireError::BadGreeting("bad signature"));
    }
    rd.read_exact(&mut g[10..11]).await.map_err(eof_is_closed)?;
    if g[10] < 3 {
        return Err(WireError::BadGreeting("ZMTP version below 3.0"));
    }
    wr.write_all(&ours[11..]).await?;
    rd.read_exact(&mut g[11..]).await.map_err(eof_is_closed)?;
    let peer = greeting_mechanism(&g);
    if peer != mechanism {
        return Err(WireError::MechanismMismatch {
            ours: std::str::from_utf8(mechanism).unwrap_or("?"),
            peer: String::from_utf8_lossy(peer).into_owned(),
        });
    }
    Ok(Revision { major: g[10], minor: g[11] })
}

/// Reads the next handshake command (name length, name, body); a message is refused.
pub async fn read_command<R>(
    rd: &mut R,
    buf: &mut BytesMut,
    dec: &mut Decoder,
) -> Result<Bytes, WireError>
where
    R: AsyncRead + Unpin,
{
    loop {
        if let Some(item) = dec.decode(buf)? {
            let Item::Command(raw) = item else {
                return Err(WireError::Handshake("expected a command, got a message".into()));
            };
            return Ok(raw);
        }
        buf.reserve(4096);
        if rd.read_buf(buf).await? == 0 {
            return Err(WireError::Closed);
        }
    }
}

fn eof_is_closed(e: std::io::Error) -> WireError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof { WireError::Closed } else { WireError::Io(e) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::zmtp::greeting;
    use crate::wire::zmtp::greeting_as;

    /// The peer's revision is what it greeted with, whatever ours; only from 3.1 on does it get
    /// subscriptions as commands (later revisions keep them).
    #[tokio::test]
    async fn greet_returns_the_peers_revision() {
        for (major, minor, commands) in [(3, 0, false), (3, 1, true), (3, 2, true), (4, 0, true)] {
            let peer = greeting_as(Revision { major, minor }, b"NULL", false);
            let (mut rd, mut wr) = (&peer[..], Vec::new());
            let got = greet(&mut rd, &mut wr, b"NULL", false).await.expect("greeting accepted");
            assert_eq!(got, Revision { major, minor });
            assert_eq!(got.subscription_commands(), commands, "{major}.{minor}");
            assert_eq!(wr, greeting().to_vec(), "we greet as 3.1 whatever the peer says");
        }
    }
}
