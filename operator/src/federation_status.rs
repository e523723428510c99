//! `status.federation` and the Federated condition, from what the ready replicas report on
//! `GET /federation` (read by `proxy_http.rs`): which replicas reported, and which of them
//! link with which. Pure: answers in, status out.
//!
//! A replica's answer lists the other members it knows, each with its outgoing and incoming
//! connection. Only members that are themselves ready and reporting count, so a replica that
//! is draining or gone does not make the federation look complete, and one that is still
//! linked to a departed replica does not make it look broken.

use std::collections::BTreeSet;

use serde::Deserialize;

use k8s_openapi::jiff::Timestamp;

use crate::crd::{
    FederationReplica, FederationStatus, MAX_LISTED_REPLICAS, ZmqProxy, ZmqProxyStatus,
};
use crate::status::{FEDERATED, Verdict, condition_of};

/// The path of the proxy's federation report (404 when federation is off in that proxy).
pub const FEDERATION_PATH: &str = "/federation";
/// Most missing links the condition's message names; it counts them all.
const MAX_NAMED: usize = 10;

/// The proxy's `/federation` answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Report {
    /// This replica's federation id (its pod's name).
    pub id: String,
    #[serde(default)]
    pub pattern: String,
    #[serde(default)]
    pub members: Vec<Member>,
}

/// Another replica as one replica sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Member {
    pub id: String,
    /// The connection this replica dialed to it is up.
    #[serde(default)]
    pub out: bool,
    /// The connection it dialed to this replica is up.
    #[serde(default, rename = "in")]
    pub inbound: bool,
}

/// Parses a `/federation` body.
pub fn parse(body: &[u8]) -> Result<Report, String> {
    serde_json::from_slice(body).map_err(|e| format!("unreadable /federation answer: {e}"))
}

/// The federation of `pattern` over the ready pods' answers (`Err`: why a pod gave none), and
/// the Federated condition: True when at least two ready replicas answered, every ready replica
/// answered, and each links with every other both ways.
pub fn aggregate(
    pattern: &str,
    answers: &[(String, Result<Report, String>)],
) -> (FederationStatus, Verdict) {
    let mut reports: Vec<&Report> = answers.iter().filter_map(|(_, r)| r.as_ref().ok()).collect();
    reports.sort_by(|a, b| a.id.cmp(&b.id));
    let ids: BTreeSet<&str> = reports.iter().map(|r| r.id.as_str()).collect();
    fn linked<'a>(r: &'a Report, ids: &BTreeSet<&str>) -> BTreeSet<&'a str> {
        r.members
            .iter()
            .filter(|m| m.out && m.inbound && m.id != r.id && ids.contains(m.id.as_str()))
            .map(|m| m.id.as_str())
            .collect()
    }
    let mut links_up = 0usize;
    let mut missing: Vec<String> = Vec::new();
    let mut replicas = Vec::new();
    for r in &reports {
        let with = linked(r, &ids);
        links_up += with.len();
        missing.extend(
            ids.iter()
                .filter(|o| **o != r.id && !with.contains(**o))
                .map(|o| format!("{} -> {o}", r.id)),
        );
        if replicas.len() < MAX_LISTED_REPLICAS {
            replicas.push(FederationReplica { id: r.id.clone(), linked: count(with.len()) });
        }
    }
    let status = FederationStatus {
        pattern: pattern.to_string(),
        members: count(reports.len()),
        links_up: count(links_up),
        replicas,
    };
    let failures: Vec<String> = answers
        .iter()
        .filter_map(|(pod, r)| r.as_ref().err().map(|e| format!("{pod}: {e}")))
        .collect();
    let verdict = verdict(reports.len(), links_up, &missing, &failures, answers.len());
    (status, verdict)
}

/// Puts what [`aggregate`] makes of `answers` into `status` (`status.federation` and the
/// Federated condition, stamped `now`); returns whether every link is up.
pub fn report(
    zp: &ZmqProxy,
    status: &mut ZmqProxyStatus,
    pattern: &str,
    answers: &[(String, Result<Report, String>)],
    now: Timestamp,
) -> bool {
    let (federation, verdict) = aggregate(pattern, answers);
    status.federation = Some(federation);
    status.conditions.retain(|c| c.type_ != FEDERATED);
    let (ok, reason, message) = (verdict.ok, verdict.reason, verdict.message);
    status.conditions.push(condition_of(zp, FEDERATED, ok, reason, message, now));
    ok
}

fn verdict(
    members: usize,
    links_up: usize,
    missing: &[String],
    failures: &[String],
    ready: usize,
) -> Verdict {
    let no = |reason, message| Verdict { ok: false, reason, message };
    if ready < 2 {
        return no(
            "WaitingForReplicas",
            format!("{ready} ready replica(s): a federation links two or more"),
        );
    }
    if !failures.is_empty() {
        return no(
            "ProxyUnreachable",
            format!(
                "{members} of {ready} ready replicas reported their links; not reporting: {}",
                failures.join("; ")
            ),
        );
    }
    let wanted = members * members.saturating_sub(1);
    if links_up < wanted {
        let mut message = format!(
            "{links_up} of {wanted} links up between {members} replicas; missing: {}",
            missing.iter().take(MAX_NAMED).cloned().collect::<Vec<_>>().join(", ")
        );
        if missing.len() > MAX_NAMED {
            message.push_str(&format!(" and {} more", missing.len() - MAX_NAMED));
        }
        return no("LinksDown", message);
    }
    Verdict {
        ok: true,
        reason: "AllLinked",
        message: format!("each of the {members} ready replicas links with every other"),
    }
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract's answer of replica `id` linked (`out`, `in`) with each of `members`.
    fn report(id: &str, members: &[(&str, bool, bool)]) -> Result<Report, String> {
        let members: Vec<String> = members
            .iter()
            .map(|(m, o, i)| format!(r#"{{"id": "{m}", "out": {o}, "in": {i}}}"#))
            .collect();
        parse(
            format!(
                r#"{{"id": "{id}", "pattern": "XSUB/XPUB", "members": [{}]}}"#,
                members.join(", ")
            )
            .as_bytes(),
        )
    }

    fn answers(list: Vec<(&str, Result<Report, String>)>) -> Vec<(String, Result<Report, String>)> {
        list.into_iter().map(|(p, r)| (p.to_string(), r)).collect()
    }

    #[test]
    fn a_full_mesh_of_three_is_federated() {
        let a = answers(vec![
            ("p-a", report("p-a", &[("p-b", true, true), ("p-c", true, true)])),
            ("p-b", report("p-b", &[("p-a", true, true), ("p-c", true, true)])),
            ("p-c", report("p-c", &[("p-a", true, true), ("p-b", true, true)])),
        ]);
        let (status, verdict) = aggregate("XSUB/XPUB", &a);
        assert_eq!((status.members, status.links_up), (3, 6));
        assert_eq!(status.pattern, "XSUB/XPUB");
        assert_eq!(
            status.replicas,
            ["p-a", "p-b", "p-c"].map(|id| FederationReplica { id: id.to_string(), linked: 2 })
        );
        assert!(verdict.ok, "{verdict:?}");
        assert_eq!(verdict.reason, "AllLinked");
    }

    #[test]
    fn a_half_link_is_down_and_named() {
        let a = answers(vec![
            ("p-a", report("p-a", &[("p-b", true, false)])),
            ("p-b", report("p-b", &[("p-a", true, true)])),
        ]);
        let (status, verdict) = aggregate("PULL/PUSH", &a);
        assert_eq!((status.members, status.links_up), (2, 1));
        assert_eq!((verdict.ok, verdict.reason), (false, "LinksDown"));
        assert!(verdict.message.contains("1 of 2 links") && verdict.message.contains("p-a -> p-b"));
    }

    #[test]
    fn departed_members_do_not_count_and_silent_replicas_are_reasons() {
        // p-old drains (not ready, not asked): p-a's link to it counts for nothing.
        let a = answers(vec![
            ("p-a", report("p-a", &[("p-b", true, true), ("p-old", true, true)])),
            ("p-b", report("p-b", &[("p-a", true, true)])),
        ]);
        let (status, verdict) = aggregate("XSUB/XPUB", &a);
        assert_eq!((status.links_up, verdict.ok), (2, true));
        let a = answers(vec![
            ("p-a", report("p-a", &[("p-b", true, true)])),
            ("p-b", Err("10.0.0.2:9090/federation: HTTP 404 Not Found".to_string())),
        ]);
        let (status, verdict) = aggregate("XSUB/XPUB", &a);
        assert_eq!((status.members, status.links_up), (1, 0));
        assert_eq!(verdict.reason, "ProxyUnreachable");
        assert!(verdict.message.contains("p-b: ") && verdict.message.contains("404"));
        let one = answers(vec![("p-a", report("p-a", &[]))]);
        assert_eq!(aggregate("XSUB/XPUB", &one).1.reason, "WaitingForReplicas");
        assert_eq!(aggregate("XSUB/XPUB", &[]).1.reason, "WaitingForReplicas");
        assert!(parse(b"[]").is_err() && parse(br#"{"members": []}"#).is_err());
    }

    #[test]
    fn the_message_names_ten_missing_links_and_counts_the_rest() {
        let ids: Vec<String> = (0..5).map(|i| format!("p-{i}")).collect();
        let a: Vec<(String, Result<Report, String>)> =
            ids.iter().map(|id| (id.clone(), report(id, &[]))).collect();
        let (status, verdict) = aggregate("XSUB/XPUB", &a);
        assert_eq!((status.members, status.links_up), (5, 0));
        assert!(verdict.message.ends_with("and 10 more"), "{}", verdict.message);
    }
}
