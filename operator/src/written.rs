//! The statuses this operator wrote that its cache may not show yet.
//!
//! A reconcile reads its `ZmqProxy` from the controller's cache, which a watch fills a moment
//! after each write. A second reconcile of the same object that starts in that moment (a child's
//! watch event arrives first) sees the status from before the write: it would compute the same
//! status, find it different from the stale one and write it again, with fresh transition times.
//! So each write is remembered with the resourceVersion it was based on and the one it produced,
//! and while the cache still shows the former, the status written stands in for the cached one.
//! resourceVersions are compared for equality only, as the API asks.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::crd::ZmqProxyStatus;

/// How long a write is remembered. A watch delivers a write within a second or so; an entry
/// older than this belongs to an object deleted before its next reconcile.
const KEEP: Duration = Duration::from_secs(120);
/// Size above which each new entry first clears the expired ones, so the map stays small.
const PRUNE_ABOVE: usize = 256;

#[derive(Debug)]
struct Entry {
    based_on: Option<String>,
    status: ZmqProxyStatus,
    at: Instant,
}

/// Per object uid, the last status written (see the module docs).
#[derive(Debug, Default)]
pub struct Written {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Written {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // Only cached statuses live here: after a panic elsewhere they are still good.
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The status to compare a new one with: the cached one, unless the cache still shows the
    /// object as it was before this operator's last write, then the status that write made.
    pub fn current(
        &self,
        uid: &str,
        cached_version: Option<&str>,
        cached: Option<&ZmqProxyStatus>,
    ) -> Option<ZmqProxyStatus> {
        let mut entries = self.entries();
        let Some(entry) = entries.get(uid) else { return cached.cloned() };
        if entry.based_on.as_deref() == cached_version && entry.at.elapsed() < KEEP {
            return Some(entry.status.clone());
        }
        // The cache shows the write, or a later change by anyone: it is the truth again.
        entries.remove(uid);
        cached.cloned()
    }

    /// Remembers that `status` was written over the object at `based_on`, producing `produced`.
    pub fn remember(
        &self,
        uid: &str,
        based_on: Option<String>,
        produced: Option<String>,
        status: ZmqProxyStatus,
    ) {
        let mut entries = self.entries();
        if entries.len() >= PRUNE_ABOVE {
            entries.retain(|_, e| e.at.elapsed() < KEEP);
        }
        if based_on == produced {
            // Nothing changed on the server: the cache needs no stand-in.
            entries.remove(uid);
            return;
        }
        entries.insert(uid.to_string(), Entry { based_on, status, at: Instant::now() });
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(replicas: i32) -> ZmqProxyStatus {
        ZmqProxyStatus { replicas, ..Default::default() }
    }

    #[test]
    fn a_stale_cache_is_answered_with_the_status_written() {
        let w = Written::default();
        w.remember("u", Some("10".into()), Some("11".into()), status(3));
        assert_eq!(w.current("u", Some("10"), None), Some(status(3)));
        assert_eq!(w.current("u", Some("10"), Some(&status(1))), Some(status(3)));
    }

    #[test]
    fn a_cache_that_moved_on_is_the_truth_and_the_entry_goes() {
        let w = Written::default();
        w.remember("u", Some("10".into()), Some("11".into()), status(3));
        assert_eq!(w.current("u", Some("12"), Some(&status(5))), Some(status(5)));
        assert!(w.is_empty());
        // Once gone, even the old version reads from the cache.
        assert_eq!(w.current("u", Some("10"), Some(&status(1))), Some(status(1)));
    }

    #[test]
    fn a_write_that_changed_nothing_is_not_remembered() {
        let w = Written::default();
        w.remember("u", Some("10".into()), Some("10".into()), status(3));
        assert!(w.is_empty());
        assert_eq!(w.current("u", Some("10"), Some(&status(1))), Some(status(1)));
    }

    #[test]
    fn other_objects_are_untouched() {
        let w = Written::default();
        w.remember("u", Some("10".into()), Some("11".into()), status(3));
        assert_eq!(w.current("v", Some("10"), Some(&status(1))), Some(status(1)));
        assert_eq!(w.len(), 1);
    }
}
