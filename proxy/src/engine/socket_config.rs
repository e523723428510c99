//! One validated proxy socket, as the engine and the policies run it.

use zmq_proxy_api::endpoint::Endpoint;
use zmq_proxy_api::heartbeat::Heartbeat;
use zmq_proxy_api::options::SocketOptions;
use zmq_proxy_api::socket::SocketType;
use zmq_proxy_api::transport::SocketEndpoint;

use super::curve::Security;

/// One proxy socket: its type, where it binds and connects, what it speaks on each, and its
/// libzmq options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketConfig {
    pub socket_type: SocketType,
    pub bind: Vec<SocketEndpoint>,
    pub connect: Vec<SocketEndpoint>,
    /// TCP endpoints whose host name is connected at every address it resolves to, and followed
    /// as its addresses change (`--<socket>-connect-all`).
    pub connect_all: Vec<Endpoint>,
    pub security: Security,
    pub options: SocketOptions,
    pub heartbeat: Heartbeat,
}

impl SocketConfig {
    /// A NULL-mechanism socket with default options, without heartbeats.
    pub fn new(
        socket_type: SocketType,
        bind: Vec<SocketEndpoint>,
        connect: Vec<SocketEndpoint>,
    ) -> Self {
        let (security, options, heartbeat) = Default::default();
        SocketConfig {
            socket_type,
            bind,
            connect,
            connect_all: Vec::new(),
            security,
            options,
            heartbeat,
        }
    }

    /// Whether the socket connects anywhere (plainly or to every address of a name).
    pub fn connects(&self) -> bool {
        !self.connect.is_empty() || !self.connect_all.is_empty()
    }

    pub fn endpoints(&self) -> String {
        let b = self.bind.iter().map(|e| format!("bind {e}"));
        let c = self.connect.iter().map(|e| format!("connect {e}"));
        let all = self.connect_all.iter().map(|e| format!("connect to every address of {e}"));
        b.chain(c).chain(all).collect::<Vec<_>>().join(", ")
    }
}
