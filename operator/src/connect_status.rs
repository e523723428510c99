//! `status.connects` and the Connected condition, from what the proxy pods report on
//! `/connects` (read by `proxy_http.rs`): per connect entry, how many addresses its name
//! resolves to and how many the proxies are connected to. Pure: reports in, status out.
//!
//! With several replicas each pod is its own proxy and reports its own counts; an entry shows
//! the most addresses any pod resolved and the fewest connections any pod holds, so one pod
//! that lags is visible, and `pods` says how many pods reported the entry.

use serde::Deserialize;

use crate::build::Connect;
use crate::crd::ConnectStatus;
use crate::status::Verdict;

/// The proxy's `/connects` answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Report {
    #[serde(default)]
    pub sockets: Vec<SocketReport>,
}

/// One connect endpoint of one socket, as a proxy reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct SocketReport {
    pub socket: String,
    pub endpoint: String,
    #[serde(default)]
    pub all: bool,
    #[serde(default)]
    pub resolved: u32,
    #[serde(default)]
    pub connected: u32,
}

/// Parses a `/connects` body.
pub fn parse(body: &[u8]) -> Result<Report, String> {
    serde_json::from_slice(body).map_err(|e| format!("unreadable /connects answer: {e}"))
}

/// Every connect entry's counts over the pods' answers (`Err`: why a pod gave none), and the
/// Connected condition: True when some pod answered and, in every pod that did, each entry
/// resolved to at least one address and is connected to all of them.
pub fn aggregate(
    connects: &[Connect],
    answers: &[(String, Result<Report, String>)],
) -> (Vec<ConnectStatus>, Verdict) {
    let reports: Vec<&Report> = answers.iter().filter_map(|(_, r)| r.as_ref().ok()).collect();
    let entries: Vec<ConnectStatus> = connects
        .iter()
        .map(|c| {
            let seen: Vec<&SocketReport> = reports
                .iter()
                .filter_map(|r| {
                    r.sockets
                        .iter()
                        .find(|s| s.socket == c.socket.as_str() && s.endpoint == c.endpoint)
                })
                .collect();
            let count = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
            ConnectStatus {
                socket: c.socket.to_string(),
                target: c.target.clone(),
                resolved: count(seen.iter().map(|s| s.resolved).max().unwrap_or(0)),
                connected: count(seen.iter().map(|s| s.connected).min().unwrap_or(0)),
                pods: i32::try_from(seen.len()).unwrap_or(i32::MAX),
            }
        })
        .collect();
    let verdict = verdict(&entries, answers, reports.len());
    (entries, verdict)
}

fn verdict(
    entries: &[ConnectStatus],
    answers: &[(String, Result<Report, String>)],
    answered: usize,
) -> Verdict {
    let failures: Vec<String> = answers
        .iter()
        .filter_map(|(pod, r)| r.as_ref().err().map(|e| format!("{pod}: {e}")))
        .collect();
    if answers.is_empty() {
        return Verdict {
            ok: false,
            reason: "NoReadyPods",
            message: "no ready proxy pod to ask".to_string(),
        };
    }
    if answered == 0 {
        return Verdict {
            ok: false,
            reason: "ProxyUnreachable",
            message: format!("no proxy pod reported its connects: {}", failures.join("; ")),
        };
    }
    let short: Vec<String> = entries
        .iter()
        .filter(|e| e.pods < answered as i32 || e.resolved == 0 || e.connected < e.resolved)
        .map(|e| format!("{} {}: {}/{} connected", e.socket, e.target, e.connected, e.resolved))
        .collect();
    if !short.is_empty() {
        let mut message = short.join("; ");
        if !failures.is_empty() {
            message.push_str(&format!("; not reporting: {}", failures.join("; ")));
        }
        return Verdict { ok: false, reason: "NotAllConnected", message };
    }
    let mut message = format!(
        "every connect entry is connected to every address it resolves to, in {answered} pod(s)"
    );
    if !failures.is_empty() {
        message.push_str(&format!("; not reporting: {}", failures.join("; ")));
    }
    Verdict { ok: true, reason: "Connected", message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zmq_proxy_api::socket::Role;

    fn connect(endpoint: &str, target: &str) -> Connect {
        Connect {
            socket: Role::Backend,
            index: 0,
            endpoint: endpoint.to_string(),
            all: true,
            target: target.to_string(),
            service: None,
        }
    }

    const EP: &str = "tcp://tasks-backend-0.q.svc:6000";

    fn report(resolved: u32, connected: u32) -> Result<Report, String> {
        parse(format!(
            r#"{{"sockets":[{{"socket":"backend","endpoint":"{EP}","all":true,"resolved":{resolved},"connected":{connected},"addresses":[{{"address":"10.0.0.5:6000","state":"connected"}}]}}]}}"#
        ).as_bytes())
    }

    #[test]
    fn the_contracts_answer_parses_and_counts_per_entry() {
        let c = [connect(EP, "selector app=worker port 6000")];
        let answers = vec![("tasks-0".to_string(), report(3, 3))];
        let (entries, verdict) = aggregate(&c, &answers);
        assert_eq!(entries.len(), 1);
        let e = &entries[0];
        assert_eq!((e.socket.as_str(), e.resolved, e.connected, e.pods), ("backend", 3, 3, 1));
        assert_eq!(e.target, "selector app=worker port 6000");
        assert!(verdict.ok, "{verdict:?}");
    }

    #[test]
    fn the_lagging_pod_shows_and_an_unreachable_one_is_a_reason() {
        let c = [connect(EP, "t")];
        let answers = vec![
            ("tasks-0".to_string(), report(3, 3)),
            ("tasks-1".to_string(), report(3, 1)),
            ("tasks-2".to_string(), Err("connect 10.0.0.9:9090: refused".to_string())),
        ];
        let (entries, verdict) = aggregate(&c, &answers);
        assert_eq!((entries[0].resolved, entries[0].connected, entries[0].pods), (3, 1, 2));
        assert_eq!(verdict.reason, "NotAllConnected");
        assert!(verdict.message.contains("1/3") && verdict.message.contains("tasks-2"));
        let none = vec![("tasks-0".to_string(), Err("HTTP 404".to_string()))];
        let (entries, verdict) = aggregate(&c, &none);
        assert_eq!((entries[0].pods, verdict.reason), (0, "ProxyUnreachable"));
        assert_eq!(aggregate(&c, &[]).1.reason, "NoReadyPods");
        assert!(parse(b"not json").is_err());
    }

    #[test]
    fn an_entry_that_resolves_to_nothing_is_not_connected() {
        let (_, verdict) = aggregate(&[connect(EP, "t")], &[("p".to_string(), report(0, 0))]);
        assert!(!verdict.ok);
    }
}
