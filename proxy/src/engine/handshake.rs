//! The greeting exchange and the NULL mechanism's READY handshake over a connection's byte
//! streams, or a ZMTP 2.0 peer's identity frames; the CURVE handshakes start from the same
//! greeting.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::wire::zmtp::{
    Decoder, GREETING_LEN, Greeted, HANDSHAKE_MAX_BYTES, IDENTITY_MAX_BYTES, Item, NOT_ZMTP,
    PeerInfo, Revision, SIGNATURE_LEN, WireError, ZMTP_2_0, compatible, greeting_for,
    greeting_mechanism, parse_command, parse_identity, peer_info, ready_frame, zmtp2_socket_name,
    zmtp2_socket_type,
};
use zmq_proxy_api::socket::SocketType;

/// Greeting and READY exchange (NULL mechanism), or for a ZMTP 2.0 peer the greeting and the
/// identity frames. `buf` keeps whatever the peer sent after its READY or identity.
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
    let revision = match greet(rd, wr, b"NULL", false, ours).await? {
        Greeted::V3(revision) => revision,
        Greeted::V2 { socket_type } => {
            return zmtp2_identities(rd, wr, ours, socket_type, buf).await;
        }
    };
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

/// Exchanges greetings announcing `mechanism` as a socket of type `ours`; a peer announcing
/// another mechanism is refused (libzmq refuses a mismatch the same way, whatever the
/// as-server bits say), and so is a ZMTP 2.0 peer on a CURVE socket.
pub async fn greet<R, W>(
    rd: &mut R,
    wr: &mut W,
    mechanism: &'static [u8],
    as_server: bool,
    ours_type: SocketType,
) -> Result<Greeted, WireError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // RFC 23's backwards interoperability: the signature and our major version first, then, by
    // the peer's revision, the rest of a 3.x greeting or (2.0) our socket type byte, which is
    // what a 2.0 peer reads there. libzmq holds its major version back until the peer's
    // signature shows a versioned peer, for ZMTP 1.0, which is not served here; sending both at
    // once keeps a libzmq peer's greeting whole: it sends the rest as soon as it reads our major
    // version, before it sees our mechanism, so its mechanism reaches us even when a mismatch
    // makes it close at once, and the refusal is counted as a mismatch, not as a closed peer.
    let ours = greeting_for(mechanism, as_server);
    // A peer gone before sending a byte (a port check, a TCP probe) is no ZMTP peer: its EOF or
    // reset is reported as such, whether our greeting's write or the first read meets it.
    let gone = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::BrokenPipe
        | std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::UnexpectedEof => WireError::NoGreeting,
        _ => WireError::Io(e),
    };
    wr.write_all(&ours[..SIGNATURE_LEN + 1]).await.map_err(gone)?;
    let mut g = [0u8; GREETING_LEN];
    // Check the signature as soon as its 10 bytes arrive, so garbage is refused without waiting.
    let first = rd.read(&mut g[..SIGNATURE_LEN]).await.map_err(gone)?;
    if first == 0 {
        return Err(WireError::NoGreeting);
    }
    rd.read_exact(&mut g[first..SIGNATURE_LEN]).await.map_err(eof_is_closed)?;
    if g[0] != 0xff || g[9] & 0x01 != 0x01 {
        return Err(WireError::BadGreeting(NOT_ZMTP));
    }
    rd.read_exact(&mut g[10..11]).await.map_err(eof_is_closed)?;
    match g[10] {
        ZMTP_2_0 if mechanism != b"NULL" => return Err(WireError::Zmtp2OnCurve),
        ZMTP_2_0 => {
            wr.write_all(&[zmtp2_socket_type(ours_type)]).await?;
            rd.read_exact(&mut g[11..12]).await.map_err(eof_is_closed)?;
            return Ok(Greeted::V2 { socket_type: g[11] });
        }
        0 | 2 => return Err(WireError::BadGreeting("ZMTP revision 0 or 2 is not supported")),
        _ => {}
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
    Ok(Greeted::V3(Revision { major: g[10], minor: g[11] }))
}

/// ZMTP 2.0 after the greetings: the peer's socket type checked as a 3.x peer's is, then an
/// identity frame each way. Ours is empty, as a libzmq socket without `ZMQ_ROUTING_ID` sends
/// it; the peer's names it to a ROUTER, as 3.x's Identity property does.
async fn zmtp2_identities<R, W>(
    rd: &mut R,
    wr: &mut W,
    ours: SocketType,
    peer_type: u8,
    buf: &mut BytesMut,
) -> Result<PeerInfo, WireError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let name = zmtp2_socket_name(peer_type).filter(|n| compatible(ours, n));
    let Some(name) = name else {
        let peer = match zmtp2_socket_name(peer_type) {
            Some(n) => String::from_utf8_lossy(n).into_owned(),
            None => format!("{peer_type} (ZMTP 2.0)"),
        };
        return Err(WireError::Incompatible { ours: ours.as_str(), peer });
    };
    wr.write_all(&[0, 0]).await?;
    let identity = loop {
        if let Some(identity) = parse_identity(buf)? {
            break identity;
        }
        buf.reserve(IDENTITY_MAX_BYTES + 2);
        if rd.read_buf(buf).await? == 0 {
            return Err(WireError::Closed);
        }
    };
    Ok(PeerInfo { socket_type: Bytes::from_static(name), identity, revision: Revision::V2_0 })
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
    use crate::wire::zmtp::{Item, greeting, greeting_as};

    /// The peer's revision is what it greeted with, whatever ours; only from 3.1 on does it get
    /// subscriptions as commands (later revisions keep them).
    #[tokio::test]
    async fn greet_returns_the_peers_revision() {
        for (major, minor, commands) in [(3, 0, false), (3, 1, true), (3, 2, true), (4, 0, true)] {
            let peer = greeting_as(Revision { major, minor }, b"NULL", false);
            let (mut rd, mut wr) = (&peer[..], Vec::new());
            let got = greet(&mut rd, &mut wr, b"NULL", false, SocketType::Router)
                .await
                .expect("greeting accepted");
            let Greeted::V3(got) = got else { panic!("{major}.{minor} taken for 2.0") };
            assert_eq!(got, Revision { major, minor });
            assert_eq!(got.subscription_commands(), commands, "{major}.{minor}");
            assert!(got.has_commands());
            assert_eq!(wr, greeting().to_vec(), "we greet as 3.1 whatever the peer says");
        }
    }

    /// A ZMTP 2.0 peer's greeting as RFC 15 lets it send it whole: signature (with the 1.0
    /// identity-length padding libzmq and JeroMQ use), revision 1, socket type, identity frame.
    fn zmtp2_greeting(socket_type: u8, identity: &[u8]) -> Vec<u8> {
        let mut g = b"\xff\0\0\0\0\0\0\0\x01\x7f\x01".to_vec();
        g.push(socket_type);
        g.push(0);
        g.push(identity.len() as u8);
        g.extend_from_slice(identity);
        g
    }

    /// A 2.0 peer that sends its whole greeting at once gets our signature, major version 3,
    /// our socket type byte and an empty identity frame, in that order and nothing else; its
    /// identity names it, and what followed its identity stays in the buffer.
    #[tokio::test]
    async fn a_zmtp2_peer_is_answered_with_its_greeting_and_identity() {
        let mut peer = zmtp2_greeting(5, b"client-1");
        peer.extend_from_slice(b"\x01\x00\x00\x02hi");
        let (mut rd, mut wr, mut buf) = (&peer[..], Vec::new(), BytesMut::new());
        let info =
            handshake(&mut rd, &mut wr, SocketType::Router, &mut buf, 1024).await.expect("served");
        assert_eq!(&wr[..], b"\xff\0\0\0\0\0\0\0\0\x7f\x03\x06\x00\x00");
        assert_eq!((&info.socket_type[..], &info.identity[..]), (&b"DEALER"[..], &b"client-1"[..]));
        assert_eq!(info.revision, Revision::V2_0);
        let mut dec = Decoder::for_revision(1024, info.revision);
        let Ok(Some(Item::Message(m))) = dec.decode(&mut buf) else { panic!("the first message") };
        assert_eq!(m, vec![Bytes::new(), Bytes::from_static(b"hi")]);
    }

    /// CURVE is ZMTP 3 only: a 2.0 peer on a CURVE socket is refused once its revision byte
    /// arrives, before it is sent our socket type; an incompatible 2.0 socket type is refused
    /// before the identity frames; revisions 0 and 2 and a bad signature are refused.
    #[tokio::test]
    async fn zmtp2_refusals_name_the_reason() {
        let peer = zmtp2_greeting(8, b"");
        let (mut rd, mut wr) = (&peer[..], Vec::new());
        let e = greet(&mut rd, &mut wr, b"CURVE", true, SocketType::Pull).await.err();
        assert!(matches!(e, Some(WireError::Zmtp2OnCurve)), "{e:?}");
        assert_eq!(wr.len(), 11, "signature and major version only");
        assert_eq!(WireError::Zmtp2OnCurve.to_string(), "ZMTP 2.0 greeting on a CURVE socket");
        assert_eq!(WireError::Zmtp2OnCurve.reason(), "zmtp2_on_curve");

        let peer = zmtp2_greeting(1, b"");
        let (mut rd, mut wr, mut buf) = (&peer[..], Vec::new(), BytesMut::new());
        let e = handshake(&mut rd, &mut wr, SocketType::Router, &mut buf, 1024).await.err();
        assert!(matches!(&e, Some(WireError::Incompatible { peer, .. }) if peer == "PUB"), "{e:?}");
        assert_eq!(wr.len(), 12, "no identity frame to a refused peer");

        for revision in [0u8, 2] {
            let mut peer = zmtp2_greeting(8, b"");
            peer[10] = revision;
            let (mut rd, mut wr) = (&peer[..], Vec::new());
            let e = greet(&mut rd, &mut wr, b"NULL", false, SocketType::Pull).await.err();
            assert_eq!(e.map(|e| e.reason()), Some("bad_greeting"), "revision {revision}");
        }
        let http = b"GET / HTTP/1.1\r\n\r\n";
        let (mut rd, mut wr) = (&http[..], Vec::new());
        let e = greet(&mut rd, &mut wr, b"NULL", false, SocketType::Pull).await.err();
        assert!(e.is_some_and(|e| e.to_string().contains("not a ZMTP 2.0 or 3.x greeting")));
        assert_eq!(wr.len(), 11, "garbage gets our signature and major version only");
    }
}
