//! Endpoint syntax: `tcp://HOST:PORT`, the only transport the proxy serves. Owns parsing and
//! the refusal messages for malformed endpoints, so flags and manifests word them alike.

use std::fmt;

/// A parsed `tcp://HOST:PORT`. `*` as the host of a bind endpoint means every interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Bind,
    Connect,
}

impl Endpoint {
    pub fn parse(s: &str, dir: Direction) -> Result<Endpoint, String> {
        let s = s.trim();
        let Some((transport, rest)) = s.split_once("://") else {
            return Err(format!("malformed endpoint {s:?}: expected tcp://HOST:PORT"));
        };
        if transport != "tcp" {
            return Err(format!(
                "unsupported transport {transport:?} in {s:?}: only tcp://HOST:PORT is supported"
            ));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let Some((h, p)) = v6.split_once("]:") else {
                return Err(format!("malformed endpoint {s:?}: expected tcp://[V6ADDR]:PORT"));
            };
            (h, p)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h, p),
                _ => return Err(format!("malformed endpoint {s:?}: expected tcp://HOST:PORT")),
            }
        };
        if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
            return Err(format!("malformed endpoint {s:?}: missing or invalid host"));
        }
        if host == "*" && dir == Direction::Connect {
            return Err(format!("cannot connect to {s:?}: host * is only valid for bind"));
        }
        let port: u16 = match port.parse() {
            Ok(p) => p,
            Err(_) => return Err(format!("malformed endpoint {s:?}: port must be 0-65535")),
        };
        if port == 0 && dir == Direction::Connect {
            return Err(format!("cannot connect to {s:?}: port 0"));
        }
        Ok(Endpoint { host: host.to_string(), port })
    }

    /// The address to hand to the OS resolver (`*` becomes every IPv4 interface).
    pub fn socket_host(&self) -> &str {
        if self.host == "*" { "0.0.0.0" } else { &self.host }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "tcp://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "tcp://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_tcp_host_port_and_refuses_the_rest() {
        let ep = Endpoint::parse("tcp://127.0.0.1:5555", Direction::Bind).expect("valid");
        assert_eq!((ep.host.as_str(), ep.port), ("127.0.0.1", 5555));
        assert_eq!(
            Endpoint::parse("tcp://[::1]:7", Direction::Connect).map(|e| e.to_string()),
            Ok("tcp://[::1]:7".to_string())
        );
        for bad in ["tcp://nohost", "udp://x:1", "tcp://:5", "tcp://h:99999", "5555", "ipc:///x"] {
            assert!(Endpoint::parse(bad, Direction::Bind).is_err(), "{bad}");
        }
        assert!(Endpoint::parse("tcp://*:5", Direction::Connect).is_err());
        assert!(Endpoint::parse("tcp://*:5", Direction::Bind).is_ok());
    }
}
