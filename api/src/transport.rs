//! The endpoints of the proxy's data sockets: `tcp://HOST:PORT` ([`Endpoint`]) or
//! `ipc://ADDRESS` ([`IpcEndpoint`]). The control socket, `--http-bind` and connect-all stay
//! TCP only and parse [`Endpoint`] directly.

use std::fmt;

use crate::endpoint::{Direction, Endpoint};
use crate::ipc::IpcEndpoint;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketEndpoint {
    Tcp(Endpoint),
    Ipc(IpcEndpoint),
}

impl SocketEndpoint {
    /// `tcp://HOST:PORT` or `ipc://ADDRESS`.
    pub fn parse(s: &str, dir: Direction) -> Result<SocketEndpoint, String> {
        let s = s.trim();
        match s.split_once("://") {
            Some(("ipc", address)) => IpcEndpoint::parse(s, address, dir).map(SocketEndpoint::Ipc),
            Some(("tcp", _)) => Endpoint::parse(s, dir).map(SocketEndpoint::Tcp),
            Some((transport, _)) => Err(format!(
                "unsupported transport {transport:?} in {s:?}: expected tcp://HOST:PORT or ipc://PATH"
            )),
            None => {
                Err(format!("malformed endpoint {s:?}: expected tcp://HOST:PORT or ipc://PATH"))
            }
        }
    }

    /// The TCP endpoint, if this is one.
    pub fn tcp(&self) -> Option<&Endpoint> {
        match self {
            SocketEndpoint::Tcp(ep) => Some(ep),
            SocketEndpoint::Ipc(_) => None,
        }
    }
}

impl From<Endpoint> for SocketEndpoint {
    fn from(ep: Endpoint) -> Self {
        SocketEndpoint::Tcp(ep)
    }
}

impl fmt::Display for SocketEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketEndpoint::Tcp(ep) => ep.fmt(f),
            SocketEndpoint::Ipc(ep) => ep.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_and_ipc_and_nothing_else() {
        let tcp = SocketEndpoint::parse("tcp://127.0.0.1:5", Direction::Bind).expect("tcp");
        assert_eq!(tcp.tcp().map(|e| e.port), Some(5));
        let ipc = SocketEndpoint::parse(" ipc:///tmp/x.sock ", Direction::Connect).expect("ipc");
        assert_eq!(ipc, SocketEndpoint::Ipc(IpcEndpoint::Path("/tmp/x.sock".into())));
        assert!(ipc.tcp().is_none());
        for (bad, why) in [
            ("inproc://x", "unsupported transport \"inproc\""),
            ("udp://x:1", "expected tcp://HOST:PORT or ipc://PATH"),
            ("/tmp/x.sock", "malformed endpoint"),
            ("tcp://nohost", "expected HOST:PORT"),
        ] {
            let e = SocketEndpoint::parse(bad, Direction::Bind).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
