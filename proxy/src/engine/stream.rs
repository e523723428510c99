//! One connection of a data socket, over TCP or a Unix domain socket (`ipc://`): the halves
//! the reader and the writer own, the per-connection options, and who the peer is for logs.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixStream, tcp, unix};

use zmq_proxy_api::options::SocketOptions;

use super::ipc::IpcListener;

pub enum Stream {
    Tcp(TcpStream),
    Ipc(UnixStream),
}

pub enum ReadHalf {
    Tcp(tcp::OwnedReadHalf),
    Ipc(unix::OwnedReadHalf),
}

pub enum WriteHalf {
    Tcp(tcp::OwnedWriteHalf),
    Ipc(unix::OwnedWriteHalf),
}

/// Who is at the other end, for logs and the refusal log's once-per-peer key.
#[derive(Clone, PartialEq, Eq)]
pub enum Peer {
    Tcp(SocketAddr),
    /// A local process on a Unix socket: the socket's address (a path or `@name`; a connecting
    /// peer usually has none) and its credentials (SO_PEERCRED) where the kernel tells them.
    Ipc {
        endpoint: String,
        pid: Option<i32>,
        uid: Option<u32>,
    },
}

impl Peer {
    /// The TCP address, if the peer has one.
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            Peer::Tcp(a) => Some(*a),
            Peer::Ipc { .. } => None,
        }
    }

    /// What the refusal log keys a peer by: its IP address, or for a local process its user
    /// (every process of one user counts as one peer).
    pub fn log_key(&self) -> PeerKey {
        match self {
            Peer::Tcp(a) => PeerKey::Ip(a.ip()),
            Peer::Ipc { uid, .. } => PeerKey::LocalUser(*uid),
        }
    }
}

impl From<SocketAddr> for Peer {
    fn from(a: SocketAddr) -> Self {
        Peer::Tcp(a)
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(a) => a.fmt(f),
            Peer::Ipc { endpoint, pid, uid } => {
                f.write_str(endpoint)?;
                if let Some(pid) = pid {
                    write!(f, " pid {pid}")?;
                }
                if let Some(uid) = uid {
                    write!(f, " uid {uid}")?;
                }
                Ok(())
            }
        }
    }
}

/// As [`fmt::Display`]: a TCP peer shows as its address does.
impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A bound listener of a data socket.
pub enum Listener {
    Tcp(TcpListener),
    Ipc(IpcListener),
}

impl Listener {
    pub async fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => l.accept().await.map(|(s, _)| Stream::Tcp(s)),
            Listener::Ipc(l) => l.listener.accept().await.map(|(s, _)| Stream::Ipc(s)),
        }
    }

    /// Where it listens, as an endpoint (`tcp://ADDR:PORT`, port 0 resolved; `ipc://PATH`,
    /// `ipc://*` resolved).
    pub fn endpoint(&self) -> io::Result<String> {
        match self {
            Listener::Tcp(l) => Ok(format!("tcp://{}", l.local_addr()?)),
            Listener::Ipc(l) => Ok(l.endpoint.clone()),
        }
    }
}

/// The key of [`crate::engine::counters::OncePerPeer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerKey {
    Ip(IpAddr),
    LocalUser(Option<u32>),
}

impl From<IpAddr> for PeerKey {
    fn from(ip: IpAddr) -> Self {
        PeerKey::Ip(ip)
    }
}

impl Stream {
    /// The peer; `endpoint` names the Unix socket (the listener's or the one dialled), as a
    /// Unix peer has no address of its own to show.
    pub fn peer(&self, endpoint: &str) -> Option<Peer> {
        match self {
            Stream::Tcp(s) => s.peer_addr().ok().map(Peer::Tcp),
            Stream::Ipc(s) => {
                let cred = s.peer_cred().ok();
                Some(Peer::Ipc {
                    endpoint: endpoint.to_string(),
                    pid: cred.as_ref().and_then(|c| c.pid()),
                    uid: cred.map(|c| c.uid()),
                })
            }
        }
    }

    /// Per-connection options. TCP: see [`tune`]; a Unix socket has no Nagle delay and no
    /// keepalive, so the TCP options are left out for it.
    pub fn tune(&self, opts: &SocketOptions) {
        if let Stream::Tcp(s) = self {
            tune(s, opts);
        }
    }

    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Tcp(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
            }
            Stream::Ipc(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Ipc(r), WriteHalf::Ipc(w))
            }
        }
    }
}

/// Per-connection TCP options: no Nagle delay (ZeroMQ batches itself) and the socket's
/// keepalive probes (see `config::TCP_KEEPALIVE_IDLE`). Best effort: a refused option leaves a
/// working connection.
pub fn tune(stream: &TcpStream, opts: &SocketOptions) {
    let _ = stream.set_nodelay(true);
    let sock = socket2::SockRef::from(stream);
    if !opts.tcp_keepalive {
        let _ = sock.set_keepalive(false);
        return;
    }
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(opts.tcp_keepalive_idle)
        .with_interval(opts.tcp_keepalive_interval)
        .with_retries(opts.tcp_keepalive_count);
    let _ = sock.set_tcp_keepalive(&keepalive);
}

impl WriteHalf {
    /// Holds back partial segments until uncorked or closed, so the last bytes and the FIN
    /// leave together (TCP on Linux only; a Unix socket has no segments).
    pub fn cork(&self) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let WriteHalf::Tcp(w) = self {
            let _ = socket2::SockRef::from(w.as_ref()).set_tcp_cork(true);
        }
    }
}

impl ReadHalf {
    /// Reads into `buf` as `read_buf` does, `chunk` bytes at a time; but when `buf` holds
    /// nothing (no message half read), waits for data holding no buffer at all. A silent peer
    /// so costs no read buffer, however many there are; a busy one reads into the room left
    /// in its buffer first, as before. Cancel-safe: a cancelled wait has read nothing.
    pub async fn read_lazily(&mut self, buf: &mut BytesMut, chunk: usize) -> io::Result<usize> {
        use tokio::io::AsyncReadExt;
        if !buf.is_empty() {
            if buf.capacity() - buf.len() < chunk / 4 {
                buf.reserve(chunk);
            }
            return self.read_buf(buf).await;
        }
        // Readiness that turns out spurious goes round again; each round waits for the socket.
        loop {
            if buf.capacity() >= chunk / 4 {
                match self.try_read_buf(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    r => return r,
                }
            }
            *buf = BytesMut::new();
            self.readable().await?;
            buf.reserve(chunk);
        }
    }

    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            ReadHalf::Tcp(r) => r.try_read_buf(buf),
            ReadHalf::Ipc(r) => r.try_read_buf(buf),
        }
    }

    /// Ready once the socket holds something to read (data or its end) or failed; reads
    /// nothing. Readiness left over from reads that emptied the socket without being told so
    /// is checked with a one-byte peek and cleared, so a silent peer stays pending. Registers
    /// the one reader waker the socket keeps for poll-based reads rather than a waiter of its
    /// own: polling it again and again, or dropping it, costs no list bookkeeping.
    pub fn poll_data(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        use tokio::io::Interest;
        let mut one = [std::mem::MaybeUninit::<u8>::uninit()];
        // Each round either returns or found the readiness spurious and cleared it, so the
        // next poll registers the waker; a socket is not readable without end.
        loop {
            let peeked = match self {
                ReadHalf::Tcp(r) => {
                    let s = r.as_ref();
                    std::task::ready!(s.poll_read_ready(cx))?;
                    s.try_io(Interest::READABLE, || socket2::SockRef::from(s).peek(&mut one))
                }
                ReadHalf::Ipc(r) => {
                    let s = r.as_ref();
                    std::task::ready!(s.poll_read_ready(cx))?;
                    s.try_io(Interest::READABLE, || socket2::SockRef::from(s).peek(&mut one))
                }
            };
            match peeked {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
                Ok(_) => return Poll::Ready(Ok(())),
            }
        }
    }

    async fn readable(&self) -> io::Result<()> {
        match self {
            ReadHalf::Tcp(r) => r.readable().await,
            ReadHalf::Ipc(r) => r.readable().await,
        }
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            ReadHalf::Ipc(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_write(cx, buf),
            WriteHalf::Ipc(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_flush(cx),
            WriteHalf::Ipc(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_shutdown(cx),
            WriteHalf::Ipc(w) => Pin::new(w).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_write_vectored(cx, bufs),
            WriteHalf::Ipc(w) => Pin::new(w).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            WriteHalf::Tcp(w) => w.is_write_vectored(),
            WriteHalf::Ipc(w) => w.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (ReadHalf, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (c, a) = tokio::join!(TcpStream::connect(addr), l.accept());
        let (r, _w) = Stream::Tcp(a.expect("accept").0).into_split();
        (r, c.expect("connect"))
    }

    /// Data read to the end of what came leaves the socket looking readable until a read
    /// says otherwise; waiting for data sees through that, and wakes once more comes.
    #[tokio::test]
    async fn waiting_for_data_ignores_readiness_left_from_earlier_reads() {
        use std::future::poll_fn;
        use std::time::Duration;
        use tokio::io::AsyncReadExt;
        let (mut rd, mut peer) = pair().await;
        peer.write_all(b"ab").await.expect("write");
        let mut two = [0u8; 2];
        rd.read_exact(&mut two).await.expect("read");
        let wait = tokio::time::timeout(Duration::from_millis(50), poll_fn(|cx| rd.poll_data(cx)));
        assert!(wait.await.is_err(), "everything sent was read, so nothing is waiting");
        peer.write_all(b"c").await.expect("write");
        let ready = tokio::time::timeout(Duration::from_secs(5), poll_fn(|cx| rd.poll_data(cx)));
        assert!(matches!(ready.await, Ok(Ok(()))), "data came");
        // Peeked, not read: the byte is still there.
        let mut one = [0u8; 1];
        rd.read_exact(&mut one).await.expect("read");
        assert_eq!(&one, b"c");
        drop(peer);
        let end = tokio::time::timeout(Duration::from_secs(5), poll_fn(|cx| rd.poll_data(cx)));
        assert!(matches!(end.await, Ok(Ok(()))), "the end is something to read too");
    }

    /// A silent peer's connection holds no read buffer while it waits, however large the one
    /// it read into before; data that comes is read into a buffer taken then.
    #[tokio::test]
    async fn an_idle_connection_holds_no_read_buffer() {
        let (mut rd, mut peer) = pair().await;
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let wait = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            rd.read_lazily(&mut buf, 64 * 1024),
        );
        assert!(wait.await.is_err(), "nothing was sent, so nothing was read");
        assert_eq!(buf.capacity(), 0, "waiting with a buffer of {} bytes", buf.capacity());
        peer.write_all(b"hello").await.expect("write");
        let n = rd.read_lazily(&mut buf, 64 * 1024).await.expect("read");
        assert_eq!(&buf[..n], b"hello");
        // Half a message read: the rest is read into the same buffer, behind it.
        peer.write_all(b" world").await.expect("write");
        let m = rd.read_lazily(&mut buf, 64 * 1024).await.expect("read");
        assert_eq!(&buf[..n + m], b"hello world");
        drop(peer);
        buf.clear();
        assert_eq!(rd.read_lazily(&mut buf, 64 * 1024).await.expect("end"), 0);
    }
}
