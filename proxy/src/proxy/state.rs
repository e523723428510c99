//! The proxy's state machine, as libzmq's `zmq_proxy_steerable` has it: Active, Paused (PAUSE
//! stops forwarding, RESUME restarts it) and Terminated (TERMINATE, or a signal: a drain, here).
//! This module owns the states, the one transition every way of steering goes through, and the
//! first state, which `--pause-file` decides (the operator's `spec.paused`).

use std::path::Path;

use tokio::sync::watch;

/// libzmq's proxy states (zmq_proxy_steerable): PAUSE stops forwarding, RESUME restarts it,
/// TERMINATE ends the proxy (with a drain, here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyState {
    Active,
    Paused,
    Terminated,
}

/// PAUSE (`to` = Paused) or RESUME (Active) as the control socket applies it, for every way the
/// proxy is steered (the control socket, the pause file). Returns whether the state changed: a
/// stopping proxy stays stopping, and a repeated command changes nothing.
pub fn set(state: &watch::Sender<ProxyState>, to: ProxyState) -> bool {
    state.send_if_modified(|s| {
        if *s == ProxyState::Terminated || *s == to {
            return false;
        }
        *s = to;
        true
    })
}

/// Largest file read: the value is one word; anything longer is garbage and not read whole.
const MAX_BYTES: u64 = 64;

/// The value of a pause file (`--pause-file`): `true` pauses, `false` resumes; surrounding whitespace (the
/// trailing newline an editor or `echo` adds) is ignored, anything else is an error.
pub fn parse(text: &str) -> Result<bool, String> {
    match text.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => {
            let shown: String = other.chars().take(32).collect();
            Err(format!("expected \"true\" or \"false\", got {shown:?}"))
        }
    }
}

/// Reads and parses the file at `path`.
pub fn read(path: &Path) -> Result<bool, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut text = String::new();
    file.take(MAX_BYTES + 1).read_to_string(&mut text).map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_BYTES {
        return Err(format!("longer than {MAX_BYTES} bytes"));
    }
    parse(&text)
}

pub fn of_paused(paused: bool) -> ProxyState {
    if paused { ProxyState::Paused } else { ProxyState::Active }
}

/// The state a proxy starts in: what the file says, or Active without a file (or with one that
/// cannot be read, which is logged).
pub fn initial(path: Option<&Path>) -> ProxyState {
    let Some(path) = path else { return ProxyState::Active };
    match read(path) {
        Ok(paused) => {
            if paused {
                tracing::info!(path = %path.display(), "pause file says true: starting paused");
            }
            of_paused(paused)
        }
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "pause file unreadable; starting active");
            ProxyState::Active
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_true_false_and_refuses_garbage() {
        assert_eq!(parse("true"), Ok(true));
        assert_eq!(parse("false\n"), Ok(false));
        assert_eq!(parse("  true \r\n"), Ok(true));
        for garbage in ["", "TRUE", "yes", "1", "true false", "paused"] {
            let e = parse(garbage).expect_err(garbage);
            assert!(e.contains("expected \"true\" or \"false\""), "{e}");
        }
    }

    #[test]
    fn reads_files_and_refuses_missing_or_oversized_ones() {
        let dir = std::env::temp_dir().join(format!("proxy-state-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("paused");
        std::fs::write(&file, "true\n").expect("write");
        assert_eq!(read(&file), Ok(true));
        assert_eq!(initial(Some(&file)), ProxyState::Paused);
        std::fs::write(&file, "false").expect("write");
        assert_eq!(initial(Some(&file)), ProxyState::Active);
        std::fs::write(&file, "x".repeat(1000)).expect("write");
        assert!(read(&file).is_err_and(|e| e.contains("longer than")));
        assert!(read(&dir.join("missing")).is_err());
        assert_eq!(initial(Some(&dir.join("missing"))), ProxyState::Active);
        assert_eq!(initial(None), ProxyState::Active);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
