//! DNS for `--<socket>-connect-all`: every A and AAAA address of a name, with the answer's TTL,
//! looked up on the proxy's own runtime (a slow or silent DNS server delays only the lookup
//! that waits for it, never a connection or another socket), the pure rules that follow a
//! name (when to ask again and what an answer adds or removes), and [`follow`], the loop that
//! applies them for connect-all endpoints and federation peers alike.
//!
//! The system configuration is read once at start: `/etc/resolv.conf` (name servers, search
//! domains, `ndots`, as a pod's kubelet writes them) and `/etc/hosts`. `--dns-server HOST:PORT`
//! asks that one server instead (over UDP, TCP for truncated answers) and skips `/etc/hosts`.
//! The resolver keeps no cache: the proxy schedules its own lookups ([`next_lookup`]), and a
//! cached answer would hide a pod that came or went.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RecordType;

/// How long one server is given to answer one query, and how many times it is asked, before a
/// lookup counts as failed (and is retried on the failure schedule).
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
const QUERY_ATTEMPTS: usize = 2;
/// The shortest time between two lookups of one name, whatever the TTL (a TTL of 0 must not
/// turn into a query loop), unless the interval itself is shorter.
pub const MIN_LOOKUP_SPACING: Duration = Duration::from_secs(1);
/// The first retry after a failed lookup; each further failure doubles it, up to the interval.
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// The addresses one lookup returned, per family: `None` when that family's query failed (a
/// timeout, SERVFAIL), so what the name had in that family is kept, not removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub v4: Option<BTreeSet<IpAddr>>,
    pub v6: Option<BTreeSet<IpAddr>>,
    /// The smallest TTL among the records returned, if any were.
    pub ttl: Option<Duration>,
}

/// Why a lookup gave no address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupError {
    /// NXDOMAIN, or no A and no AAAA record.
    NoAddress,
    /// The server failed, refused or did not answer.
    Failed(String),
}

impl std::fmt::Display for LookupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LookupError::NoAddress => f.write_str("no A or AAAA record (NXDOMAIN or empty)"),
            LookupError::Failed(why) => write!(f, "lookup failed: {why}"),
        }
    }
}

/// A shared resolver (cheap to clone).
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
}

impl Resolver {
    /// The system's resolver, or `server`'s alone when given.
    pub fn new(server: Option<SocketAddr>) -> Result<Resolver, String> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = match server {
            Some(addr) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![ns]),
                    provider,
                )
            }
            None => TokioResolver::builder(provider)
                .map_err(|e| format!("cannot read the system's DNS configuration: {e}"))?,
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = QUERY_TIMEOUT;
        opts.attempts = QUERY_ATTEMPTS;
        opts.cache_size = 0;
        if server.is_some() {
            opts.use_hosts_file = ResolveHosts::Never;
        }
        let inner = builder.build().map_err(|e| e.to_string())?;
        Ok(Resolver { inner })
    }

    /// Every A and AAAA address of `host`, both queried at once.
    pub async fn lookup(&self, host: &str) -> Result<Answer, LookupError> {
        let (a, aaaa) = tokio::join!(
            self.inner.lookup(host, RecordType::A),
            self.inner.lookup(host, RecordType::AAAA)
        );
        let now = std::time::Instant::now();
        let mut ttl: Option<Duration> = None;
        let mut family = |r: Result<hickory_resolver::lookup::Lookup, NetError>| match r {
            Ok(l) => {
                let ips: BTreeSet<IpAddr> =
                    l.answers().iter().filter_map(|r| r.data.ip_addr()).collect();
                if !ips.is_empty() {
                    let left = l.valid_until().saturating_duration_since(now);
                    ttl = Some(ttl.map_or(left, |t| t.min(left)));
                }
                Ok(Some(ips))
            }
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Some(BTreeSet::new())),
            Err(e) => Err(e.to_string()),
        };
        let (v4, v6) = (family(a), family(aaaa));
        combine(v4, v6, ttl)
    }
}

/// One answer from the two families' results: a failed family is unknown (`None`); nothing at
/// all, or a failure of both, is an error.
fn combine(
    v4: Result<Option<BTreeSet<IpAddr>>, String>,
    v6: Result<Option<BTreeSet<IpAddr>>, String>,
    ttl: Option<Duration>,
) -> Result<Answer, LookupError> {
    let empty = |r: &Result<Option<BTreeSet<IpAddr>>, String>| match r {
        Ok(Some(s)) => s.is_empty(),
        _ => true,
    };
    if empty(&v4) && empty(&v6) {
        return Err(match (v4, v6) {
            (Err(e), _) | (_, Err(e)) => LookupError::Failed(e),
            _ => LookupError::NoAddress,
        });
    }
    Ok(Answer { v4: v4.ok().flatten(), v6: v6.ok().flatten(), ttl })
}

/// When to look a name up again after an answer: its TTL, but never later than `interval`
/// (Kubernetes DNS answers with TTLs of 5 to 30 s while pods come and go in seconds: the
/// interval is the longest a new pod may wait to get work) and never sooner than
/// [`MIN_LOOKUP_SPACING`] (a TTL of 0 would otherwise ask in a loop). No TTL: the interval.
pub fn next_lookup(ttl: Option<Duration>, interval: Duration) -> Duration {
    let floor = MIN_LOOKUP_SPACING.min(interval);
    ttl.unwrap_or(interval).clamp(floor, interval)
}

/// When to ask again after `failures` failed lookups in a row (1 for the first): from
/// [`FIRST_RETRY`], doubling, never beyond `interval`, so a name that appears is still found
/// within one interval.
pub fn retry_delay(failures: u32, interval: Duration) -> Duration {
    let doubled = FIRST_RETRY.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    doubled.min(interval)
}

/// The longest one lookup may take before it counts as failed (the resolver's own timeouts
/// normally end it sooner).
const LOOKUP_BOUND: Duration = Duration::from_secs(10);

/// What following a name reports after each lookup.
pub enum Followed<'a> {
    /// A successful answer: the addresses it adds and those it removes (either may be empty);
    /// `recovered` after failed lookups.
    Changed { added: Vec<IpAddr>, removed: Vec<IpAddr>, recovered: bool },
    /// The lookup failed, the `failures`-th time in a row; nothing changes.
    Failed { error: &'a LookupError, failures: u32 },
}

/// Looks `host` up until `stop` is raised (or its sender is gone), on the schedule of
/// [`next_lookup`] and [`retry_delay`], and tells `on` what each lookup changed.
pub async fn follow(
    resolver: &Resolver,
    host: &str,
    interval: Duration,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    mut on: impl FnMut(Followed<'_>),
) {
    let mut current: BTreeSet<IpAddr> = BTreeSet::new();
    let mut failures = 0u32;
    loop {
        let lookup = tokio::time::timeout(LOOKUP_BOUND, resolver.lookup(host));
        let answer = tokio::select! {
            _ = stop.wait_for(|v| *v) => return,
            r = lookup => r.unwrap_or_else(|_| Err(LookupError::Failed("no answer".into()))),
        };
        let wait = match answer {
            Ok(answer) => {
                let (added, removed) = diff(&current, &answer);
                current.retain(|ip| !removed.contains(ip));
                current.extend(added.iter().copied());
                on(Followed::Changed { added, removed, recovered: failures > 0 });
                failures = 0;
                next_lookup(answer.ttl, interval)
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                on(Followed::Failed { error: &error, failures });
                retry_delay(failures, interval)
            }
        };
        tokio::select! {
            _ = stop.wait_for(|v| *v) => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// What an answer changes in the set of addresses followed: the addresses to connect and
/// those to drain. A family whose query failed removes nothing.
pub fn diff(current: &BTreeSet<IpAddr>, answer: &Answer) -> (Vec<IpAddr>, Vec<IpAddr>) {
    let known: BTreeSet<IpAddr> =
        answer.v4.iter().chain(answer.v6.iter()).flatten().copied().collect();
    let added = known.difference(current).copied().collect();
    let removed = current
        .iter()
        .filter(|ip| {
            let family = if ip.is_ipv4() { &answer.v4 } else { &answer.v6 };
            family.as_ref().is_some_and(|f| !f.contains(ip))
        })
        .copied()
        .collect();
    (added, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(s: &[&str]) -> BTreeSet<IpAddr> {
        s.iter().map(|a| a.parse().expect("ip")).collect()
    }

    #[test]
    fn lookups_follow_the_ttl_within_one_second_and_the_interval() {
        let five = Duration::from_secs(5);
        assert_eq!(next_lookup(None, five), five);
        assert_eq!(next_lookup(Some(Duration::from_secs(30)), five), five);
        assert_eq!(next_lookup(Some(Duration::from_secs(2)), five), Duration::from_secs(2));
        assert_eq!(next_lookup(Some(Duration::ZERO), five), MIN_LOOKUP_SPACING);
        // An interval below the spacing wins: the user asked for it.
        let short = Duration::from_millis(300);
        assert_eq!(next_lookup(Some(Duration::ZERO), short), short);
        assert_eq!(next_lookup(Some(Duration::from_secs(30)), short), short);
    }

    #[test]
    fn failed_lookups_back_off_up_to_the_interval() {
        let five = Duration::from_secs(5);
        let delays: Vec<_> = (1..=6).map(|n| retry_delay(n, five).as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 5000, 5000]);
        assert_eq!(retry_delay(u32::MAX, five), five);
        assert_eq!(retry_delay(0, five), FIRST_RETRY);
    }

    #[test]
    fn an_answer_adds_the_new_and_removes_only_what_its_families_omit() {
        let current = ips(&["127.0.0.2", "127.0.0.3", "::2"]);
        let answer = Answer {
            v4: Some(ips(&["127.0.0.3", "127.0.0.5"])),
            v6: Some(ips(&["::2"])),
            ttl: None,
        };
        let (added, removed) = diff(&current, &answer);
        assert_eq!(added, ips(&["127.0.0.5"]).into_iter().collect::<Vec<_>>());
        assert_eq!(removed, ips(&["127.0.0.2"]).into_iter().collect::<Vec<_>>());
        // The AAAA query failed: the IPv6 address stays.
        let partial = Answer { v4: Some(ips(&["127.0.0.3"])), v6: None, ttl: None };
        let (added, removed) = diff(&current, &partial);
        assert!(added.is_empty());
        assert_eq!(removed, ips(&["127.0.0.2"]).into_iter().collect::<Vec<_>>());
        let same = Answer {
            v4: Some(ips(&["127.0.0.2", "127.0.0.3"])),
            v6: Some(ips(&["::2"])),
            ttl: None,
        };
        assert_eq!(diff(&current, &same), (vec![], vec![]));
    }

    #[test]
    fn nothing_or_two_failures_is_an_error_and_one_failure_is_a_partial_answer() {
        let some = |s: &[&str]| Ok(Some(ips(s)));
        let none = || Ok(Some(BTreeSet::new()));
        let fail = || Err("timeout".to_string());
        assert_eq!(combine(none(), none(), None), Err(LookupError::NoAddress));
        assert_eq!(combine(fail(), none(), None), Err(LookupError::Failed("timeout".into())));
        assert_eq!(combine(fail(), fail(), None), Err(LookupError::Failed("timeout".into())));
        let a = combine(some(&["127.0.0.2"]), fail(), None).expect("partial");
        assert_eq!((a.v4, a.v6), (Some(ips(&["127.0.0.2"])), None));
        let a = combine(none(), some(&["::2"]), Some(Duration::from_secs(3))).expect("v6 only");
        assert_eq!(
            (a.v4, a.v6, a.ttl),
            (Some(BTreeSet::new()), Some(ips(&["::2"])), Some(Duration::from_secs(3)))
        );
    }
}
