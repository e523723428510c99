//! `--pause-file PATH`: PAUSE and RESUME steered by a file's content (`true` or `false`), the
//! way the operator delivers a `ZmqProxy`'s `spec.paused` to every replica.
//!
//! Why a file: the operator writes `paused` into the ConfigMap `<name>-steering`, which each
//! pod mounts as a directory (no subPath, so the kubelet updates it in place). No network path
//! from the operator to the pods is needed, a pod created later mounts the current value and
//! starts in it, the value survives operator restarts, and no pod is restarted.
//!
//! This module owns watching that file (its first value and its parsing are `state.rs`'s). The file is polled
//! (`PAUSE_FILE_POLL_INTERVAL`) and its content decides, not its mtime: the
//! kubelet swaps a `..data` symlink to a new timestamped directory, which leaves the visible
//! name's own metadata as it was. A change of the file's value applies PAUSE or RESUME exactly
//! as the control socket does (`state::set`): sockets stay connected and messages wait
//! in the peers' queues. Only a change of the file acts, so a RESUME sent on the control socket
//! is not undone on the next poll. A missing, unreadable or garbled file leaves the state as it
//! is, with one warning until it reads again.

use std::time::Duration;

use tokio::sync::watch;

use crate::proxy::state::{self, ProxyState};

/// Polls `path` every `every` for as long as the task runs, applying each change of its value
/// to `state`. The first successful read counts as a change (a no-op when the proxy already
/// started in that state).
pub async fn watch(path: std::path::PathBuf, every: Duration, state: watch::Sender<ProxyState>) {
    let mut last: Option<bool> = None;
    let mut failing = false;
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match state::read(&path) {
            Ok(paused) => {
                if failing {
                    tracing::info!(path = %path.display(), "pause file readable again");
                }
                failing = false;
                if last == Some(paused) {
                    continue;
                }
                last = Some(paused);
                if state::set(&state, state::of_paused(paused)) {
                    let what = if paused { "paused" } else { "resumed" };
                    tracing::info!(path = %path.display(), "pause file: {what}");
                }
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(path = %path.display(), %error, "pause file unreadable; state unchanged");
                }
                failing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_reaches_the_config_and_an_empty_path_is_refused() {
        use clap::Parser;
        let base = ["zmq-proxy", "--frontend-type", "PULL", "--frontend-bind", "tcp://127.0.0.1:1"];
        let base = base.into_iter().chain(["--backend-type", "PUSH"]);
        let base: Vec<&str> = base.chain(["--backend-bind", "tcp://127.0.0.1:2"]).collect();
        let with = |path: &str| {
            let args = base.iter().copied().chain(["--pause-file", path]);
            crate::cli::Cli::try_parse_from(args).map_err(|e| e.to_string())
        };
        let cfg = with("/etc/zmq-proxy/steering/paused").expect("parses").into_config();
        let path = cfg.expect("valid").pause_file;
        assert_eq!(path.as_deref(), Some(std::path::Path::new("/etc/zmq-proxy/steering/paused")));
        // clap refuses an empty path (the binary prints it as one line and exits 2).
        let e = with("").expect_err("empty path");
        assert!(e.contains("--pause-file"), "{e}");
    }

    #[tokio::test]
    async fn a_change_of_the_file_steers_and_a_control_resume_is_not_undone() {
        let dir = std::env::temp_dir().join(format!("pause-watch-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("paused");
        std::fs::write(&file, "false").expect("write");
        let (state, mut rx) = watch::channel(ProxyState::Active);
        let task = tokio::spawn(watch(file.clone(), Duration::from_millis(10), state.clone()));
        std::fs::write(&file, "true").expect("write");
        let deadline = Duration::from_secs(5);
        let paused = tokio::time::timeout(deadline, rx.wait_for(|s| *s == ProxyState::Paused));
        assert!(paused.await.is_ok(), "paused within 5 s");
        // RESUME on the control socket: the unchanged file does not pause again.
        crate::proxy::state::set(&state, ProxyState::Active);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(*state.borrow(), ProxyState::Active);
        // A missing file leaves the state alone.
        std::fs::remove_file(&file).expect("remove");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(*state.borrow(), ProxyState::Active);
        task.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
