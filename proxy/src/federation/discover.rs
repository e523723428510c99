//! Members found by DNS: a `--federation-peers` entry whose host is a name (a Kubernetes
//! headless Service publishing not-ready addresses) stands for every address the name resolves
//! to, each one a replica. The name is followed on the rules of `--<socket>-connect-all`
//! ([`resolve::next_lookup`], [`resolve::retry_delay`], `--resolve-interval`, `--dns-server`):
//! an address that appears gets a dial loop of its own; one that vanishes stops being dialed,
//! and its link closes when its connection ends (the replica behind it is usually gone already,
//! and a live one is not cut mid-write). A failed lookup changes nothing.
//!
//! The name includes this replica's own address: its dial loop learns so from the HELLO and
//! ends, and the address stays in the followed set, so later answers that still hold it dial
//! it no more (one self-dial per appearance of the address, not one per lookup).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::watch;

use super::link::{self, Sinks};
use crate::engine::curve::Mechanism;
use crate::engine::resolve::{self, Followed, Resolver};
use crate::policy::sockets::Lifecycle;

/// How names among the peers are looked up: the proxy's resolver (built when some peer is a
/// name) and `--resolve-interval`.
#[derive(Clone)]
pub struct Dns {
    pub resolver: Option<Resolver>,
    pub interval: Duration,
}

/// Whether a peer's host is a name to follow rather than one address.
pub fn is_name(host: &str) -> bool {
    host.parse::<IpAddr>().is_err()
}

/// Resolves once the address a dial loop serves left its name; never for a literal peer, nor
/// once the follower is gone (the proxy is stopping, and the loop sees that itself).
pub(super) async fn dropped(retire: &mut Option<watch::Receiver<bool>>) {
    let raised = match retire {
        Some(rx) => rx.wait_for(|v| *v).await.is_ok(),
        None => false,
    };
    if !raised {
        std::future::pending::<()>().await;
    }
}

/// Follows `host` until the proxy stops: one dial loop per address it resolves to.
pub(super) async fn follow(
    host: String,
    port: u16,
    dns: Dns,
    mech: Mechanism,
    sinks: Sinks,
    life: Lifecycle,
) {
    let Some(resolver) = dns.resolver else {
        tracing::error!(%host, "federation: no DNS resolver; cannot follow the peer name");
        return;
    };
    let mut live: BTreeMap<IpAddr, watch::Sender<bool>> = BTreeMap::new();
    let mut stop = life.stop.clone();
    resolve::follow(&resolver, &host, dns.interval, &mut stop, |ev| match ev {
        Followed::Changed { added, removed, .. } => {
            for ip in removed {
                if let Some(tx) = live.remove(&ip) {
                    tx.send_replace(true);
                }
                tracing::info!(%host, %ip, port, "federation: address gone from the name; no longer dialing it");
            }
            for ip in added {
                let (tx, rx) = watch::channel(false);
                let (mech, sinks, life) = (mech.clone(), sinks.clone(), life.clone());
                let dial = link::dial_loop(ip.to_string(), port, mech, sinks, life, Some(rx));
                tokio::spawn(dial);
                live.insert(ip, tx);
                tracing::info!(%host, %ip, port, "federation: address added to the name; dialing it");
            }
        }
        Followed::Failed { error, failures: 1 } => {
            tracing::info!(%host, %error, kept = live.len(), "federation: peer name does not resolve; keeping its addresses, retrying");
        }
        Followed::Failed { .. } => {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_addresses_are_dialed_as_they_are_and_names_are_followed() {
        for ip in ["127.0.0.1", "::1", "10.1.2.3"] {
            assert!(!is_name(ip), "{ip}");
        }
        for name in ["proxy-federation.ns.svc", "localhost", "r0"] {
            assert!(is_name(name), "{name}");
        }
    }

    #[tokio::test]
    async fn a_dial_loop_is_retired_only_by_its_name_never_by_a_gone_follower() {
        let (tx, rx) = watch::channel(false);
        let mut retire = Some(rx);
        tx.send_replace(true);
        tokio::time::timeout(Duration::from_secs(1), dropped(&mut retire)).await.expect("retired");
        let (tx, rx) = watch::channel(false);
        drop(tx);
        let mut orphan = Some(rx);
        let quiet = Duration::from_millis(20);
        assert!(tokio::time::timeout(quiet, dropped(&mut orphan)).await.is_err());
        assert!(tokio::time::timeout(quiet, dropped(&mut None)).await.is_err());
    }
}
