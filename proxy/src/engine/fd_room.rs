//! File descriptors: every peer holds one, and the process may hold only `RLIMIT_NOFILE`.
//!
//! At start the binary raises its soft limit to the hard one (a container runtime typically
//! starts processes with a soft limit far below the hard limit it allows) and logs how many
//! peers that leaves room for. The proxy then admits peers only while one more fits below the
//! limit less [`FD_HEADROOM`], the descriptors it needs for itself: listeners, the runtime's
//! epoll and wake-up descriptors, the HTTP endpoint and its scrapes, control requesters, DNS
//! lookups, the files it re-reads. A connection past that is accepted and closed at once,
//! counted (`zmq_proxy_connections_refused_total{reason="fd_limit"}`) and logged at most once
//! per [`REFUSAL_LOG_QUIET`]: the peers already connected, the probes and the metrics keep
//! working, where running into the limit itself would fail them all alike.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

use super::tunables::{FD_HEADROOM, REFUSAL_LOG_QUIET};

/// The soft and hard `RLIMIT_NOFILE` (`None`: unlimited).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoFile {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

impl NoFile {
    pub fn current() -> NoFile {
        let l = getrlimit(Resource::Nofile);
        NoFile { soft: l.current, hard: l.maximum }
    }

    /// Peers this limit leaves room for.
    pub fn peers(&self) -> usize {
        match self.soft {
            Some(soft) => usize::try_from(soft.saturating_sub(FD_HEADROOM)).unwrap_or(usize::MAX),
            None => usize::MAX,
        }
    }
}

/// What raising the limit at start did, for its log line.
#[derive(Debug)]
pub struct Raised {
    pub before: NoFile,
    pub now: NoFile,
    /// Why the soft limit could not be raised, if it could not.
    pub error: Option<String>,
}

impl Raised {
    /// The start-up log line, e.g. `RLIMIT_NOFILE 1024 raised to the hard limit 524288: room
    /// for 524160 peers`.
    pub fn describe(&self) -> String {
        let show = |v: Option<u64>| v.map_or_else(|| "unlimited".to_string(), |v| v.to_string());
        let room = match self.now.soft {
            Some(_) => format!("room for {} peers", self.now.peers()),
            None => "no limit on peers".to_string(),
        };
        match &self.error {
            Some(e) => format!(
                "RLIMIT_NOFILE {} could not be raised to the hard limit {} ({e}): {room}",
                show(self.now.soft),
                show(self.now.hard)
            ),
            None if self.before.soft == self.now.soft => {
                format!("RLIMIT_NOFILE {} (the hard limit): {room}", show(self.now.soft))
            }
            None => format!(
                "RLIMIT_NOFILE {} raised to the hard limit {}: {room}",
                show(self.before.soft),
                show(self.now.soft)
            ),
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. Process-wide: the binary calls it once,
/// before any socket opens.
pub fn raise_to_hard() -> Raised {
    let before = NoFile::current();
    let error = if before.soft == before.hard {
        None
    } else {
        let to = Rlimit { current: before.hard, maximum: before.hard };
        setrlimit(Resource::Nofile, to).err().map(|e| e.to_string())
    };
    Raised { before, now: NoFile::current(), error }
}

/// The proxy's peer connections against the room the file-descriptor limit leaves, shared by
/// every socket.
pub struct PeerRoom {
    room: usize,
    open: AtomicUsize,
    refused: AtomicU64,
    /// When the last "limit reached" line was logged.
    logged: Mutex<Option<Instant>>,
}

impl PeerRoom {
    /// Room for `peers` connections.
    pub fn new(peers: usize) -> Arc<PeerRoom> {
        Arc::new(PeerRoom {
            room: peers,
            open: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            logged: Mutex::new(None),
        })
    }

    /// Room as the process's current limit allows.
    pub fn of_limit() -> Arc<PeerRoom> {
        PeerRoom::new(NoFile::current().peers())
    }

    /// A seat for an accepted connection, if one more fits; `None` is a refusal, counted and
    /// (once per quiet period) logged for `socket`.
    pub fn admit(self: &Arc<Self>, socket: &'static str) -> Option<Seat> {
        let fits = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.room).then_some(n + 1))
            .is_ok();
        if fits {
            return Some(Seat(self.clone()));
        }
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        self.log_full(socket, refused);
        None
    }

    /// A seat whatever the room: a connection the proxy dials itself (its endpoints are
    /// configured, few, and needed) still counts against the room left for accepted ones.
    pub fn seat(self: &Arc<Self>) -> Seat {
        self.open.fetch_add(1, Ordering::AcqRel);
        Seat(self.clone())
    }

    /// Connections refused for the limit so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The kernel itself refused a descriptor (EMFILE or ENFILE: other descriptors than peers
    /// took the headroom, or the whole system ran out). The connection stays in the listen
    /// queue until a descriptor is free again; the same line says so.
    pub fn exhausted(&self, socket: &'static str) {
        self.log_full(socket, self.refused());
    }

    fn log_full(&self, socket: &'static str, refused: u64) {
        let now = Instant::now();
        let mut last = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < REFUSAL_LOG_QUIET) {
            return;
        }
        *last = Some(now);
        let open = self.open.load(Ordering::Relaxed);
        tracing::warn!(
            socket,
            peers = open,
            room = self.room,
            refused_total = refused,
            "file-descriptor limit reached: refusing new connections while {open} peers are connected (RLIMIT_NOFILE leaves room for {}; see docs/operations.md, \"File descriptors\")",
            self.room
        );
    }
}

/// One connection's place in the room, given back when dropped.
pub struct Seat(Arc<PeerRoom>);

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether an accept failed for want of a file descriptor (the process's or the system's).
pub fn is_exhaustion(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == rustix::io::Errno::MFILE.raw_os_error() || code == rustix::io::Errno::NFILE.raw_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_room_and_again_once_a_seat_is_given_back() {
        let room = PeerRoom::new(2);
        let a = room.admit("frontend").expect("first");
        let _b = room.admit("frontend").expect("second");
        assert!(room.admit("frontend").is_none());
        assert!(room.admit("backend").is_none());
        assert_eq!(room.refused(), 2);
        drop(a);
        assert!(room.admit("frontend").is_some());
        // Dialled connections take a seat past the room, and count in it.
        let _c = room.seat();
        assert!(room.admit("frontend").is_none());
        assert_eq!(room.refused(), 3);
    }

    #[test]
    fn the_room_is_the_soft_limit_less_the_headroom() {
        let l = NoFile { soft: Some(1024), hard: Some(4096) };
        assert_eq!(l.peers(), 1024 - FD_HEADROOM as usize);
        assert_eq!(NoFile { soft: Some(10), hard: Some(10) }.peers(), 0);
        assert_eq!(NoFile { soft: None, hard: None }.peers(), usize::MAX);
    }

    #[test]
    fn describes_what_raising_did() {
        let (low, high) = (
            NoFile { soft: Some(1024), hard: Some(65536) },
            NoFile { soft: Some(65536), hard: Some(65536) },
        );
        let r = Raised { before: low, now: high, error: None };
        let room = 65536 - FD_HEADROOM;
        assert_eq!(
            r.describe(),
            format!("RLIMIT_NOFILE 1024 raised to the hard limit 65536: room for {room} peers")
        );
        let r = Raised { before: high, now: high, error: None };
        assert!(
            r.describe().starts_with("RLIMIT_NOFILE 65536 (the hard limit)"),
            "{}",
            r.describe()
        );
        let r = Raised { before: low, now: low, error: Some("Operation not permitted".into()) };
        assert!(r.describe().contains("could not be raised"), "{}", r.describe());
    }

    #[test]
    fn emfile_and_enfile_are_exhaustion_and_others_are_not() {
        assert!(is_exhaustion(&std::io::Error::from_raw_os_error(24)));
        assert!(is_exhaustion(&std::io::Error::from_raw_os_error(23)));
        assert!(!is_exhaustion(&std::io::Error::from_raw_os_error(104)));
        assert!(!is_exhaustion(&std::io::ErrorKind::Other.into()));
    }
}
