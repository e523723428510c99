//! TCP for endpoints. Listening sockets for bind endpoints, the same way for the data sockets,
//! the control socket and `--http-bind`:
//!
//! - `*` and `[::]`: one IPv6 socket with `IPV6_V6ONLY` off, so IPv4 peers (as `::ffff:a.b.c.d`)
//!   and IPv6 peers reach the same port on IPv4-only, IPv6-only and dual-stack hosts alike. A
//!   host without IPv6 (no kernel support, IPv6 disabled, or `IPV6_V6ONLY` forced on) refuses
//!   that socket; the bind then falls back to IPv4 `0.0.0.0` and says so in the log. Looking at
//!   `/proc/net/if_inet6` would not tell: only trying does.
//! - `0.0.0.0`: IPv4 only; an IPv6 literal (`[::1]`): that address only.
//! - a host name: its first resolved address that can be bound, as `zmq_bind` takes the first.
//!
//! Connect endpoints resolve on every attempt (so a reconnect follows DNS) and try each address
//! in the resolver's order until one answers: a host name with AAAA and A records reaches a
//! peer listening on either family. (libzmq takes only the first address.) Also owns the
//! wording of bind failures.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};

use zmq_proxy_api::endpoint::Endpoint;

/// Pending connections the kernel queues per listener (tokio's own default).
const LISTEN_BACKLOG: i32 = 1024;

/// Which addresses a listener ended up serving.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Every IPv6 and IPv4 address (a wildcard bind where the host has IPv6).
    DualStack,
    /// Every IPv4 address only: a wildcard bind on a host without IPv6.
    Ipv4Fallback,
    /// The one address the endpoint names (a literal or a resolved host name).
    Exact,
}

/// Binds `ep` and returns the listener with what it serves. Wildcard binds log which family
/// they got, so an operator can tell an IPv4-only pod from a dual-stack one.
pub async fn bind(ep: &Endpoint) -> io::Result<(TcpListener, Family)> {
    let (listener, family) = if ep.is_wildcard() {
        let (l, family) = bind_wildcard(ep.port, listen_on)?;
        match family {
            Family::Ipv4Fallback => {
                tracing::warn!(endpoint = %ep, "IPv6 unavailable on this host: listening on IPv4 0.0.0.0 only")
            }
            _ => {
                tracing::info!(endpoint = %ep, "listening on every IPv6 and IPv4 address (dual stack)")
            }
        }
        (l, family)
    } else {
        (bind_first(ep).await?, Family::Exact)
    };
    Ok((TcpListener::from_std(listener)?, family))
}

/// A wildcard bind on `port`: dual-stack IPv6 first, IPv4 when the host cannot do IPv6. A port
/// in use or a refused permission is the answer, not a reason to fall back (an IPv4-only
/// listener would hide that another process holds the port).
fn bind_wildcard(
    port: u16,
    open: impl Fn(SocketAddr, bool) -> io::Result<std::net::TcpListener>,
) -> io::Result<(std::net::TcpListener, Family)> {
    match open(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)), true) {
        Ok(l) => Ok((l, Family::DualStack)),
        Err(e) if no_fallback(&e) => Err(e),
        Err(e) => {
            tracing::debug!(port, error = %e, "no dual-stack IPv6 socket");
            let l = open(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)), false)?;
            Ok((l, Family::Ipv4Fallback))
        }
    }
}

fn no_fallback(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied)
}

/// Resolves the host (literals need no lookup) and binds the first address that can be bound.
async fn bind_first(ep: &Endpoint) -> io::Result<std::net::TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(ep.host_port()).await? {
        match listen_on(addr, false) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::AddrNotAvailable, "host resolved to no address")
    }))
}

/// One non-blocking listening socket on `addr`; `dual_stack` turns `IPV6_V6ONLY` off. Address
/// reuse is on, as tokio and libzmq set it, so a restarted proxy rebinds past TIME_WAIT.
fn listen_on(addr: SocketAddr, dual_stack: bool) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(!dual_stack)?;
    }
    #[cfg(unix)]
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(LISTEN_BACKLOG)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Connects to `host:port`: resolved now, each address tried in order; the last failure is
/// returned when none answers.
pub async fn connect(host: &str, port: u16) -> io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    connect_first(&addrs).await
}

async fn connect_first(addrs: &[SocketAddr]) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => {
                tracing::debug!(%addr, error = %e, "connect failed; trying the next address");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::AddrNotAvailable, "host resolved to no address")
    }))
}

/// A bind failure in a few words, for `cannot bind ENDPOINT: REASON`.
pub fn describe_bind_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => "address in use".into(),
        io::ErrorKind::AddrNotAvailable => "address not available".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zmq_proxy_api::endpoint::Direction;

    fn ep(s: &str) -> Endpoint {
        Endpoint::parse(s, Direction::Bind).expect(s)
    }

    /// The host running the tests has IPv6 loopback (the peer tests check and skip otherwise);
    /// without it these tests say so and pass, as there is nothing to check.
    fn has_ipv6_loopback() -> bool {
        std::net::TcpListener::bind("[::1]:0").is_ok()
    }

    #[tokio::test]
    async fn star_serves_ipv4_and_ipv6_peers_on_one_port() {
        if !has_ipv6_loopback() {
            eprintln!("skipped: no IPv6 loopback on this host");
            return;
        }
        for s in ["tcp://*:0", "tcp://[::]:0"] {
            let (l, family) = bind(&ep(s)).await.expect("bind");
            assert_eq!(family, Family::DualStack, "{s}");
            let port = l.local_addr().expect("addr").port();
            for peer in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
                let (c, a) = tokio::join!(tokio::net::TcpStream::connect(&peer), l.accept());
                c.unwrap_or_else(|e| panic!("{s}: connect {peer}: {e}"));
                a.unwrap_or_else(|e| panic!("{s}: accept {peer}: {e}"));
            }
        }
    }

    #[tokio::test]
    async fn ipv4_any_and_ipv6_loopback_serve_their_own_family_only() {
        let (l, family) = bind(&ep("tcp://0.0.0.0:0")).await.expect("bind");
        assert_eq!(family, Family::Exact);
        let port = l.local_addr().expect("addr").port();
        assert!(l.local_addr().expect("addr").is_ipv4());
        if !has_ipv6_loopback() {
            eprintln!("skipped the IPv6 half: no IPv6 loopback on this host");
            return;
        }
        assert!(tokio::net::TcpStream::connect(format!("[::1]:{port}")).await.is_err());
        let (l6, _) = bind(&ep("tcp://[::1]:0")).await.expect("bind [::1]");
        let port6 = l6.local_addr().expect("addr").port();
        assert_eq!(l6.local_addr().expect("addr").ip(), Ipv6Addr::LOCALHOST);
        assert!(tokio::net::TcpStream::connect(format!("127.0.0.1:{port6}")).await.is_err());
    }

    /// A host without IPv6 refuses the dual-stack socket in one of several ways; each falls back
    /// to IPv4, while a port in use is reported as it is.
    #[test]
    fn wildcard_falls_back_to_ipv4_when_ipv6_is_refused_but_not_when_the_port_is_taken() {
        let refuse_v6 = |kind: io::ErrorKind| {
            move |addr: SocketAddr, dual: bool| {
                if addr.is_ipv6() {
                    assert!(dual, "the IPv6 attempt is dual-stack");
                    Err(io::Error::from(kind))
                } else {
                    listen_on(addr, dual)
                }
            }
        };
        for kind in [io::ErrorKind::Unsupported, io::ErrorKind::AddrNotAvailable] {
            let (l, family) = bind_wildcard(0, refuse_v6(kind)).expect("fallback");
            assert_eq!(family, Family::Ipv4Fallback, "{kind:?}");
            assert_eq!(l.local_addr().expect("addr").ip(), Ipv4Addr::UNSPECIFIED);
        }
        // EAFNOSUPPORT, as a kernel without IPv6 answers socket(AF_INET6).
        let eafnosupport = |addr: SocketAddr, dual: bool| {
            if addr.is_ipv6() {
                Err(io::Error::from_raw_os_error(97))
            } else {
                listen_on(addr, dual)
            }
        };
        assert_eq!(bind_wildcard(0, eafnosupport).expect("fallback").1, Family::Ipv4Fallback);
        for kind in [io::ErrorKind::AddrInUse, io::ErrorKind::PermissionDenied] {
            let e = bind_wildcard(0, refuse_v6(kind)).expect_err("no fallback");
            assert_eq!(e.kind(), kind);
        }
    }

    /// A name with several addresses (AAAA and A records) reaches the peer on whichever one
    /// answers: a refused address is skipped, in order, and IPv6 literals connect as they are.
    #[tokio::test]
    async fn connect_tries_each_address_in_order() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let live = v4.local_addr().expect("addr");
        // A port nobody listens on: bound, read, and closed again.
        let dead =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
        let s = connect_first(&[dead, live]).await.expect("the second address answers");
        assert_eq!(s.peer_addr().expect("peer"), live);
        assert!(connect_first(&[dead]).await.is_err());
        assert!(connect_first(&[]).await.is_err());
        let s = connect("127.0.0.1", live.port()).await.expect("IPv4 literal");
        assert_eq!(s.peer_addr().expect("peer"), live);
        if has_ipv6_loopback() {
            let v6 = std::net::TcpListener::bind("[::1]:0").expect("bind");
            let live6 = v6.local_addr().expect("addr");
            let dead6 = SocketAddr::from((Ipv6Addr::LOCALHOST, dead.port()));
            let s = connect_first(&[dead6, live6]).await.expect("the IPv6 address answers");
            assert_eq!(s.peer_addr().expect("peer"), live6);
            let s = connect("::1", live6.port()).await.expect("IPv6 literal");
            assert_eq!(s.peer_addr().expect("peer"), live6);
        }
    }

    #[tokio::test]
    async fn a_taken_port_is_refused_whatever_the_family() {
        let (held, _) = bind(&ep("tcp://*:0")).await.expect("bind");
        let port = held.local_addr().expect("addr").port();
        for s in [format!("tcp://*:{port}"), format!("tcp://0.0.0.0:{port}")] {
            let e = bind(&ep(&s)).await.expect_err(&s);
            assert_eq!(describe_bind_error(&e), "address in use", "{s}");
        }
    }
}
