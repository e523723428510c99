//! Unix domain sockets for `ipc://` endpoints, as libzmq's ipc transport opens them:
//!
//! - bind to a path: a socket file left behind by a process that is gone (nothing accepts on
//!   it) is removed first, as libzmq unlinks before binding. Unlike libzmq, a file on which a
//!   process still accepts is left alone and the bind fails as "address in use" (as a taken TCP
//!   port does), and a file that is not a socket is never removed;
//! - the file is created with the process's umask, as libzmq leaves it, and removed when the
//!   listener's [`SocketFile`] is dropped (by the proxy as its drain stops accepting), if the
//!   file at the path is still the one it created;
//! - `ipc://*`: a socket named `socket` in a new directory (mode 0700) of the temporary
//!   directory (`TMPDIR`, else `/tmp`), both removed at close;
//! - `ipc://@name` (Linux): the abstract namespace, no file at all.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};
use tokio::net::{UnixListener, UnixStream};

use zmq_proxy_api::ipc::{IPC_PATH_MAX_LEN, IpcEndpoint};

/// Pending connections the kernel queues per listener (as the TCP listeners).
const LISTEN_BACKLOG: i32 = 1024;

/// Attempts at a fresh directory name for `ipc://*` before giving up.
const WILDCARD_ATTEMPTS: u32 = 16;

/// A bound `ipc://` listener; dropping it removes the socket file it created, unless
/// [`IpcListener::take_file`] handed that to someone else.
pub struct IpcListener {
    pub listener: UnixListener,
    /// The endpoint as it was bound (`ipc://*` resolved to its path).
    pub endpoint: String,
    file: Option<SocketFile>,
}

impl IpcListener {
    /// The socket file, removed when it is dropped. The proxy holds it apart from the accept
    /// task: a task still pending when the runtime shuts down is never dropped, while the
    /// proxy's drain is always awaited.
    pub fn take_file(&mut self) -> Option<SocketFile> {
        self.file.take()
    }
}

/// The socket file a listener created, identified by device and inode so that a file another
/// process bound at the same path since is never removed.
pub struct SocketFile {
    path: PathBuf,
    id: (u64, u64),
    /// The directory `ipc://*` created for it.
    dir: Option<PathBuf>,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id) {
            let _ = std::fs::remove_file(&self.path);
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Binds `ep` and listens.
pub fn bind(ep: &IpcEndpoint) -> io::Result<IpcListener> {
    match ep {
        IpcEndpoint::Abstract(name) => {
            let socket = listen_on(&abstract_addr(name)?)?;
            Ok(IpcListener { listener: socket, endpoint: ep.to_string(), file: None })
        }
        IpcEndpoint::Path(path) => bind_path(Path::new(path), None),
        IpcEndpoint::Wildcard => {
            let dir = wildcard_dir()?;
            let path = dir.join("socket");
            if path.as_os_str().len() > IPC_PATH_MAX_LEN {
                let _ = std::fs::remove_dir(&dir);
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "the temporary path {} is longer than the {IPC_PATH_MAX_LEN} bytes a Unix socket address holds; set TMPDIR to a shorter directory",
                        path.display()
                    ),
                ));
            }
            bind_path(&path, Some(dir.clone())).inspect_err(|_| {
                let _ = std::fs::remove_dir(&dir);
            })
        }
    }
}

fn bind_path(path: &Path, dir: Option<PathBuf>) -> io::Result<IpcListener> {
    remove_stale(path)?;
    let listener = listen_on(&SockAddr::unix(path)?)?;
    let meta = std::fs::symlink_metadata(path)?;
    let file = SocketFile { path: path.to_path_buf(), id: (meta.dev(), meta.ino()), dir };
    let endpoint = format!("ipc://{}", path.display());
    Ok(IpcListener { listener, endpoint, file: Some(file) })
}

/// Removes a socket file nobody accepts on any more (a crashed or killed proxy's). A live
/// listener answers a connect (or its queue is full), so its file stays and the bind fails.
fn remove_stale(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket; not removing it", path.display()),
        ));
    }
    let probe = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    probe.set_nonblocking(true)?;
    match probe.connect(&SockAddr::unix(path)?) {
        Ok(()) => Err(in_use(path)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(in_use(path)),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing a stale ipc socket file");
            std::fs::remove_file(path).or_else(|e| match e.kind() {
                io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            })
        }
        Err(e) => Err(e),
    }
}

fn in_use(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("address in use: a process accepts on {}", path.display()),
    )
}

/// A new private directory in the temporary directory, as libzmq's `ipc://*` makes with
/// mkdtemp.
fn wildcard_dir() -> io::Result<PathBuf> {
    let base = std::env::temp_dir();
    let mut last = None;
    for _ in 0..WILDCARD_ATTEMPTS {
        let dir = base.join(random_name());
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::ErrorKind::AlreadyExists.into()))
}

fn abstract_addr(name: &str) -> io::Result<SockAddr> {
    let mut bytes = Vec::with_capacity(name.len() + 1);
    bytes.push(0u8);
    bytes.extend_from_slice(name.as_bytes());
    SockAddr::unix(std::ffi::OsStr::from_bytes(&bytes))
}

fn listen_on(addr: &SockAddr) -> io::Result<UnixListener> {
    let s = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    s.bind(addr)?;
    s.listen(LISTEN_BACKLOG)?;
    s.set_nonblocking(true)?;
    UnixListener::from_std(std::os::unix::net::UnixListener::from(std::os::fd::OwnedFd::from(s)))
}

/// Connects to `ep` (never the wildcard: parsing refuses it for connect). A listener whose
/// queue is full refuses at once (EAGAIN), which the reconnect loop retries like a refusal.
pub fn connect(ep: &IpcEndpoint) -> io::Result<UnixStream> {
    let addr = match ep {
        IpcEndpoint::Path(p) => SockAddr::unix(p)?,
        IpcEndpoint::Abstract(name) => abstract_addr(name)?,
        IpcEndpoint::Wildcard => return Err(io::ErrorKind::InvalidInput.into()),
    };
    let s = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    s.set_nonblocking(true)?;
    // Answered at once for a Unix socket: connected, refused, or EAGAIN for a full queue.
    s.connect(&addr)?;
    UnixStream::from_std(std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(s)))
}

/// A name no other process picks at the same moment: the process id and a per-process
/// random hash.
fn random_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("zmq-proxy-{}-{:08x}", std::process::id(), h.finish() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of its own per test, removed when the test ends.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("zp-ipc-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("scratch dir");
            Scratch(dir)
        }

        fn path(&self, file: &str) -> String {
            self.0.join(file).to_string_lossy().into_owned()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn is_socket(p: &str) -> bool {
        std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket())
    }

    #[tokio::test]
    async fn a_stale_file_is_replaced_and_the_listeners_own_file_removed_at_close() {
        let dir = Scratch::new("stale");
        let path = dir.path("s.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).expect("an earlier listener"));
        assert!(is_socket(&path), "its file outlives it, as a killed process's does");
        let l = bind(&IpcEndpoint::Path(path.clone())).expect("the stale file is removed");
        assert_eq!(l.endpoint, format!("ipc://{path}"));
        let (c, a) =
            tokio::join!(async { connect(&IpcEndpoint::Path(path.clone())) }, l.listener.accept());
        c.expect("connect");
        a.expect("accept");
        drop(l);
        assert!(std::fs::symlink_metadata(&path).is_err(), "removed at close");
    }

    #[tokio::test]
    async fn a_live_socket_and_a_file_that_is_no_socket_are_left_alone() {
        let dir = Scratch::new("live");
        let live = dir.path("live.sock");
        let _held = std::os::unix::net::UnixListener::bind(&live).expect("live listener");
        let e = bind(&IpcEndpoint::Path(live.clone())).err().expect("in use");
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(is_socket(&live));
        let plain = dir.path("plain");
        std::fs::write(&plain, b"data").expect("write");
        let e = bind(&IpcEndpoint::Path(plain.clone())).err().expect("not a socket");
        assert!(e.to_string().contains("is not a socket"), "{e}");
        assert_eq!(std::fs::read(&plain).expect("still there"), b"data");
    }

    /// Another listener bound the path since (the file was replaced): closing leaves its file.
    #[tokio::test]
    async fn close_leaves_a_file_another_listener_bound_since() {
        let dir = Scratch::new("replaced");
        let path = dir.path("s.sock");
        let first = bind(&IpcEndpoint::Path(path.clone())).expect("bind");
        std::fs::remove_file(&path).expect("remove");
        let _second = std::os::unix::net::UnixListener::bind(&path).expect("rebind");
        drop(first);
        assert!(is_socket(&path), "the second listener's file stays");
    }

    #[tokio::test]
    async fn the_wildcard_binds_in_a_private_temporary_directory_removed_at_close() {
        let l = bind(&IpcEndpoint::Wildcard).expect("bind ipc://*");
        let path = l.endpoint.strip_prefix("ipc://").expect("ipc://").to_string();
        assert!(path.ends_with("/socket"), "{path}");
        let dir = Path::new(&path).parent().expect("dir").to_path_buf();
        assert!(dir.starts_with(std::env::temp_dir()), "{}", dir.display());
        let mode = std::fs::metadata(&dir).expect("dir").mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(is_socket(&path));
        drop(l);
        assert!(!dir.exists(), "the directory goes with the socket");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn abstract_names_have_no_file_and_one_listener() {
        let name = format!("zp-ipc-test-{}", std::process::id());
        let ep = IpcEndpoint::Abstract(name.clone());
        let l = bind(&ep).expect("bind");
        assert_eq!(l.endpoint, format!("ipc://@{name}"));
        assert!(!Path::new(&format!("@{name}")).exists());
        let e = bind(&ep).err().expect("taken");
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        let (c, a) = tokio::join!(async { connect(&ep) }, l.listener.accept());
        c.expect("connect");
        a.expect("accept");
        drop(l);
        assert!(connect(&ep).is_err(), "gone with its listener");
    }
}
