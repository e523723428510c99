//! The PING command's wire form (ZMTP 3.1, RFC 37): its body with our TTL and the TTL a
//! peer's PING announces. PONG's form is the codec's ([`super::zmtp::pong_body`]).

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use zmq_proxy_api::heartbeat::TTL_UNIT_MS;

use super::zmtp::Command;

/// Longest PING context a PONG echoes (ZMTP 3.1); libzmq truncates to this as well.
pub const MAX_PING_CONTEXT: usize = 16;

/// The PING command's body (name length, name, TTL in deciseconds, context of at most
/// [`MAX_PING_CONTEXT`] bytes), unframed: sent as a connection's outgoing command, which frames
/// or seals it like PONG. libzmq sends no context; a PONG echoes whatever there was.
pub fn ping_body(ttl_deciseconds: u16, context: &[u8]) -> Bytes {
    let context = &context[..context.len().min(MAX_PING_CONTEXT)];
    let mut body = BytesMut::with_capacity(7 + context.len());
    body.put_u8(4);
    body.put_slice(b"PING");
    body.put_u16(ttl_deciseconds);
    body.put_slice(context);
    body.freeze()
}

/// The TTL a peer's PING announces (zero when none, or when the PING is too short to carry one,
/// which libzmq would read past the frame for), or `None` for any other command.
pub fn ping_ttl(cmd: &Command) -> Option<Duration> {
    if &cmd.name[..] != b"PING" {
        return None;
    }
    let ds = match &cmd.body[..] {
        [hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
        _ => 0,
    };
    // In 32 bits: libzmq's 16-bit product wraps above 6553 deciseconds; this does not.
    Some(Duration::from_millis(u64::from(ds) * TTL_UNIT_MS as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::zmtp::parse_command;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn ping_carries_the_ttl_big_endian_and_at_most_sixteen_bytes_of_context() {
        assert_eq!(&ping_body(0x1234, &[])[..], b"\x04PING\x12\x34");
        let long = [7u8; 40];
        let body = ping_body(30, &long);
        assert_eq!(body.len(), 7 + MAX_PING_CONTEXT);
        let cmd = parse_command(body.clone()).expect("command");
        assert_eq!(ping_ttl(&cmd), Some(MS(3000)));
        // The PONG echoes the context, not the TTL.
        let pong = crate::wire::zmtp::pong_body(&cmd).expect("pong");
        assert_eq!(&pong[..], [&b"\x04PONG"[..], &[7u8; MAX_PING_CONTEXT]].concat());
        // Above libzmq's 16-bit wrap (6554 ds), and a PING too short to carry a TTL.
        let cmd = parse_command(ping_body(u16::MAX, &[])).expect("command");
        assert_eq!(ping_ttl(&cmd), Some(MS(6_553_500)));
        let short = parse_command(Bytes::from_static(b"\x04PING\x01")).expect("command");
        assert_eq!(ping_ttl(&short), Some(Duration::ZERO));
        let pong = parse_command(Bytes::from_static(b"\x04PONG")).expect("command");
        assert_eq!(ping_ttl(&pong), None);
    }
}
