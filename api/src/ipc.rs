//! `ipc://` endpoints, as libzmq names them (zmq_ipc(7)): a Unix domain socket at a file path
//! (`ipc:///run/zmq/front.sock`, or relative to the working directory: `ipc://front.sock`), a
//! name in the Linux abstract namespace (`ipc://@front`), or `ipc://*` (bind only: a fresh path
//! in a private temporary directory). Owns parsing and the refusal messages.

use std::fmt;

use crate::endpoint::Direction;

/// The longest address a Unix socket holds: `sun_path` is 108 bytes, its NUL included. An
/// abstract name counts its leading `@` (the kernel's leading NUL) the same way, as libzmq
/// counts it.
pub const IPC_PATH_MAX_LEN: usize = 107;

/// A parsed `ipc://ADDRESS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IpcEndpoint {
    /// A file system path as written: absolute, or relative to the proxy's working directory.
    Path(String),
    /// A name in the Linux abstract namespace (`@name`), held without its `@`: no file, gone
    /// with the last socket that holds it.
    Abstract(String),
    /// `ipc://*`: bind a socket named `socket` in a new directory of the temporary directory.
    Wildcard,
}

impl IpcEndpoint {
    /// The ADDRESS of `ipc://ADDRESS` (`s` is the whole endpoint, for the messages).
    pub fn parse(s: &str, address: &str, dir: Direction) -> Result<IpcEndpoint, String> {
        if address.is_empty() {
            return Err(format!("malformed endpoint {s:?}: expected ipc://PATH or ipc://@NAME"));
        }
        if address.contains('\0') {
            return Err(format!("malformed endpoint {s:?}: a NUL byte in the path"));
        }
        if address.len() > IPC_PATH_MAX_LEN {
            return Err(format!(
                "ipc path of {s:?} is {} bytes, longer than the {IPC_PATH_MAX_LEN} a Unix socket address holds (sun_path, 108 bytes with its NUL)",
                address.len()
            ));
        }
        if address == "*" {
            return match dir {
                Direction::Bind => Ok(IpcEndpoint::Wildcard),
                Direction::Connect => {
                    Err(format!("cannot connect to {s:?}: ipc://* is only valid for bind"))
                }
            };
        }
        if let Some(name) = address.strip_prefix('@') {
            if name.is_empty() {
                return Err(format!(
                    "malformed endpoint {s:?}: the abstract name after @ is empty"
                ));
            }
            if !cfg!(any(target_os = "linux", target_os = "android")) {
                return Err(format!(
                    "unsupported endpoint {s:?}: the abstract namespace (ipc://@NAME) exists on Linux only"
                ));
            }
            return Ok(IpcEndpoint::Abstract(name.to_string()));
        }
        Ok(IpcEndpoint::Path(address.to_string()))
    }
}

impl fmt::Display for IpcEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpcEndpoint::Path(p) => write!(f, "ipc://{p}"),
            IpcEndpoint::Abstract(n) => write!(f, "ipc://@{n}"),
            IpcEndpoint::Wildcard => write!(f, "ipc://*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str, dir: Direction) -> Result<IpcEndpoint, String> {
        IpcEndpoint::parse(s, s.strip_prefix("ipc://").expect("ipc://"), dir)
    }

    #[test]
    fn paths_absolute_and_relative_abstract_names_and_the_wildcard() {
        let bind = |s| parse(s, Direction::Bind);
        assert_eq!(bind("ipc:///run/zmq/f.sock"), Ok(IpcEndpoint::Path("/run/zmq/f.sock".into())));
        assert_eq!(bind("ipc://f.sock"), Ok(IpcEndpoint::Path("f.sock".into())));
        assert_eq!(bind("ipc://*"), Ok(IpcEndpoint::Wildcard));
        for s in ["ipc:///run/zmq/f.sock", "ipc://f.sock", "ipc://*"] {
            assert_eq!(bind(s).expect(s).to_string(), s, "printed as written");
        }
        if cfg!(target_os = "linux") {
            assert_eq!(bind("ipc://@front"), Ok(IpcEndpoint::Abstract("front".into())));
            assert_eq!(bind("ipc://@front").expect("abstract").to_string(), "ipc://@front");
        }
    }

    #[test]
    fn refusals_name_the_endpoint_and_the_reason() {
        for (s, dir, why) in [
            ("ipc://", Direction::Bind, "expected ipc://PATH"),
            ("ipc://@", Direction::Bind, "abstract name after @ is empty"),
            ("ipc://*", Direction::Connect, "only valid for bind"),
            ("ipc://a\0b", Direction::Bind, "NUL"),
        ] {
            let e = parse(s, dir).expect_err(s);
            assert!(e.contains(why), "{s}: {e}");
            assert!(e.contains(&format!("{s:?}")), "{s}: names the endpoint: {e}");
        }
    }

    /// libzmq's limit: the address as written (the leading `@` of an abstract name included)
    /// is at most 107 bytes, so it fits `sun_path` with its NUL.
    #[test]
    fn the_path_fits_sun_path() {
        let at_limit = format!("ipc:///{}", "a".repeat(IPC_PATH_MAX_LEN - 1));
        assert!(parse(&at_limit, Direction::Bind).is_ok());
        let over = format!("ipc:///{}", "a".repeat(IPC_PATH_MAX_LEN));
        let e = parse(&over, Direction::Connect).expect_err("108 bytes");
        assert!(e.contains("108 bytes, longer than the 107"), "{e}");
        let abstract_over = format!("ipc://@{}", "a".repeat(IPC_PATH_MAX_LEN));
        assert!(parse(&abstract_over, Direction::Bind).is_err());
    }
}
