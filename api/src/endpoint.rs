//! Endpoint syntax: `tcp://HOST:PORT` (the data sockets also take `ipc://`, see
//! [`crate::transport`]; the control socket and connect-all take TCP only), and the bare
//! `HOST:PORT` of `--http-bind`. Owns parsing and the refusal messages for malformed endpoints,
//! so flags and manifests word them alike.
//!
//! HOST is `*` (bind only: every address, IPv6 and IPv4, bound dual stack), an IPv4
//! literal, an IPv6 literal in brackets (`[::1]`, `[::]`), or a host name (resolved by the OS,
//! A and AAAA records alike).

use std::fmt;
use std::net::Ipv6Addr;

/// A parsed `tcp://HOST:PORT`. An IPv6 literal is held without its brackets.
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
    /// `tcp://HOST:PORT`.
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
        Endpoint::parse_address(rest)
            .map_err(|why| format!("malformed endpoint {s:?}: {why}"))
            .and_then(|ep| ep.check_direction(s, dir))
    }

    /// A bare `HOST:PORT` (`--http-bind`): the same hosts as [`Endpoint::parse`].
    pub fn parse_host_port(s: &str, dir: Direction) -> Result<Endpoint, String> {
        let s = s.trim();
        Endpoint::parse_address(s)
            .map_err(|why| format!("malformed address {s:?}: {why}"))
            .and_then(|ep| ep.check_direction(s, dir))
    }

    fn parse_address(rest: &str) -> Result<Endpoint, String> {
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let Some((h, p)) = v6.split_once("]:") else {
                return Err("expected [IPV6-ADDRESS]:PORT".into());
            };
            if h.parse::<Ipv6Addr>().is_err() {
                return Err(format!("{h:?} is not an IPv6 address"));
            }
            (h, p)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h, p),
                Some(_) => return Err("an IPv6 address needs brackets: [ADDRESS]:PORT".into()),
                None => return Err("expected HOST:PORT".into()),
            }
        };
        if host.is_empty() || host.contains(['/', '[', ']']) || host.contains(char::is_whitespace) {
            return Err("missing or invalid host".into());
        }
        let Ok(port) = port.parse::<u16>() else {
            return Err("port must be 0-65535".into());
        };
        Ok(Endpoint { host: host.to_string(), port })
    }

    fn check_direction(self, s: &str, dir: Direction) -> Result<Endpoint, String> {
        if dir == Direction::Connect {
            if self.host == "*" {
                return Err(format!("cannot connect to {s:?}: host * is only valid for bind"));
            }
            if self.port == 0 {
                return Err(format!("cannot connect to {s:?}: port 0"));
            }
        }
        Ok(self)
    }

    /// Every address of the host, IPv6 and IPv4 (`*` or `[::]`): bound dual-stack.
    pub fn is_wildcard(&self) -> bool {
        self.host == "*" || self.host.parse::<Ipv6Addr>().is_ok_and(|a| a.is_unspecified())
    }

    /// `HOST:PORT` as the OS resolver takes it (an IPv6 literal without brackets is fine there).
    pub fn host_port(&self) -> (&str, u16) {
        (&self.host, self.port)
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

    fn bind(s: &str) -> Result<Endpoint, String> {
        Endpoint::parse(s, Direction::Bind)
    }

    #[test]
    fn accepts_tcp_host_port_and_refuses_the_rest() {
        let ep = bind("tcp://127.0.0.1:5555").expect("valid");
        assert_eq!((ep.host.as_str(), ep.port), ("127.0.0.1", 5555));
        assert_eq!(
            Endpoint::parse("tcp://[::1]:7", Direction::Connect).map(|e| e.to_string()),
            Ok("tcp://[::1]:7".to_string())
        );
        for bad in ["tcp://nohost", "udp://x:1", "tcp://:5", "tcp://h:99999", "5555", "ipc:///x"] {
            assert!(bind(bad).is_err(), "{bad}");
        }
        assert!(Endpoint::parse("tcp://*:5", Direction::Connect).is_err());
        assert!(bind("tcp://*:5").is_ok());
    }

    /// IPv6 literals need brackets (the port would be ambiguous otherwise), the brackets must
    /// hold an IPv6 address, and the port follows the closing bracket.
    #[test]
    fn ipv6_literals_in_brackets() {
        let ep = bind("tcp://[::]:5555").expect("valid");
        assert_eq!((ep.host.as_str(), ep.port), ("::", 5555));
        let ep = bind("tcp://[2001:db8::17]:80").expect("valid");
        assert_eq!(ep.host, "2001:db8::17");
        assert_eq!(ep.to_string(), "tcp://[2001:db8::17]:80");
        let ep = bind("tcp://[::ffff:127.0.0.1]:1").expect("v4-mapped");
        assert_eq!(ep.host, "::ffff:127.0.0.1");
        for (bad, why) in [
            ("tcp://::1:5", "needs brackets"),
            ("tcp://[::1]5", "[IPV6-ADDRESS]:PORT"),
            ("tcp://[::1]", "[IPV6-ADDRESS]:PORT"),
            ("tcp://[::1]:", "port"),
            ("tcp://[::1]:65536", "port"),
            ("tcp://[localhost]:5", "not an IPv6 address"),
            ("tcp://[127.0.0.1]:5", "not an IPv6 address"),
            ("tcp://[]:5", "not an IPv6 address"),
            ("tcp://[::1]]:5", "not an IPv6 address"),
        ] {
            let e = bind(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.contains(bad), "{bad}: the message names the endpoint: {e}");
        }
    }

    #[test]
    fn wildcards_are_star_and_the_unspecified_ipv6_address_only() {
        for (s, wild) in [
            ("tcp://*:1", true),
            ("tcp://[::]:1", true),
            ("tcp://[0:0:0:0:0:0:0:0]:1", true),
            ("tcp://0.0.0.0:1", false),
            ("tcp://[::1]:1", false),
            ("tcp://localhost:1", false),
        ] {
            assert_eq!(bind(s).expect(s).is_wildcard(), wild, "{s}");
        }
    }

    #[test]
    fn ports_zero_to_65535_and_zero_only_for_bind() {
        assert_eq!(bind("tcp://*:0").expect("port 0").port, 0);
        assert_eq!(bind("tcp://*:65535").expect("max").port, 65535);
        assert!(Endpoint::parse("tcp://[::1]:0", Direction::Connect).is_err());
        assert!(bind("tcp://*:-1").is_err());
        assert!(bind("tcp://*:x").is_err());
    }

    #[test]
    fn bare_host_port_for_http_bind() {
        for (s, host, port) in [
            ("0.0.0.0:9090", "0.0.0.0", 9090),
            ("*:9090", "*", 9090),
            ("[::]:9090", "::", 9090),
            ("[::1]:0", "::1", 0),
            ("metrics.local:80", "metrics.local", 80),
        ] {
            let ep = Endpoint::parse_host_port(s, Direction::Bind).expect(s);
            assert_eq!((ep.host.as_str(), ep.port), (host, port), "{s}");
        }
        for bad in ["9090", "::1:9090", "[::1]", "host:", "tcp://x:1", ":9090"] {
            assert!(Endpoint::parse_host_port(bad, Direction::Bind).is_err(), "{bad}");
        }
    }
}
