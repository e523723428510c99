//! One validated proxy socket, as the engine and the policies run it.

use zmq_proxy_api::endpoint::Endpoint;
use zmq_proxy_api::heartbeat::Heartbeat;
use zmq_proxy_api::options::SocketOptions;
use zmq_proxy_api::socket::SocketType;

use super::curve::Security;

/// One proxy socket: its type, where it binds and connects, what it speaks on each, and its
/// libzmq options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketConfig {
    pub socket_type: SocketType,
    pub bind: Vec<Endpoint>,
    pub connect: Vec<Endpoint>,
    pub security: Security,
    pub options: SocketOptions,
    pub heartbeat: Heartbeat,
}

impl SocketConfig {
    /// A NULL-mechanism socket with default options, without heartbeats.
    pub fn new(socket_type: SocketType, bind: Vec<Endpoint>, connect: Vec<Endpoint>) -> Self {
        let (security, options, heartbeat) = Default::default();
        SocketConfig { socket_type, bind, connect, security, options, heartbeat }
    }

    pub fn endpoints(&self) -> String {
        let b = self.bind.iter().map(|e| format!("bind {e}"));
        let c = self.connect.iter().map(|e| format!("connect {e}"));
        b.chain(c).collect::<Vec<_>>().join(", ")
    }
}
