//! The operator at scale against a real kube-apiserver and etcd (the envtest tier's binaries):
//!
//! 1. **Raw client**: one client applies, one request after another, the same children the
//!    operator would write for N objects (a Deployment and a Service each), in its own
//!    namespace. This is the floor the operator is compared with.
//! 2. **Cold start**: N `ZmqProxy` objects exist, then the operator binary starts; the clock
//!    stops when every object has its Deployment, its Service and `status.observedGeneration`
//!    equal to its generation.
//! 3. **Restart resync**: the operator restarts; once it has reconciled every object again, the
//!    resourceVersions of all objects and children and the Events are compared with before.
//! 4. **API-server outage**: kube-apiserver is killed, stays down, comes back; a spec change is
//!    made as soon as it answers, and the clock runs until the Deployment shows the change.
//! 5. The operator's peak RSS (VmHWM) and its own count of API requests by kind and verb, and
//!    per object.
//!
//! `cargo bench -p zmq-proxy-operator --bench scale [-- --quick | --objects N | --outage S | --cold-only]`
//! (1000 objects by default, `--quick` 100). Skips with a printed reason without
//! `$KUBEBUILDER_ASSETS` (or /usr/local/kubebuilder/bin) holding kube-apiserver and etcd.
//!
//! Environment: `BENCH_KUBECONFIG` runs it against an existing cluster instead (no outage
//! phase); `BENCH_OPERATOR_BIN` another operator build; `BENCH_CONCURRENCY` the operator's
//! `--concurrency`; `BENCH_PROXY_IMAGE` / `BENCH_PROXY_PULL_POLICY` what its pods run (an image
//! the cluster has, where pods really start); `BENCH_OPERATOR_LOG` its `RUST_LOG`;
//! `BENCH_CPU_PIDS` (`name=pid,...`, e.g. the API server, etcd and the controllers of the
//! cluster) reports the CPU seconds each of those processes, the operator and the benchmark
//! itself spent in the raw client's phase and in the cold start: where a shared machine's time
//! went.

#[path = "../tests/envtest/launcher.rs"]
#[allow(dead_code)]
mod launcher;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store, reflector};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use launcher::ControlPlane;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zmq_proxy_operator::build::{self, BuildOptions};
use zmq_proxy_operator::crd::ZmqProxy;
use zmq_proxy_operator::diff;

const IMAGE: &str = "ghcr.io/zmq-proxy-operator/zmq-proxy:bench";
/// Every wait of the benchmark gives up after this long.
const PHASE_LIMIT: Duration = Duration::from_secs(600);
const POLL: Duration = Duration::from_millis(50);
/// Namespaces of a run on an existing cluster: these prefixes and the bench's process id.
const RAW_NS_PREFIX: &str = "bench-raw-";
const SCALE_NS_PREFIX: &str = "bench-scale-";

struct Args {
    objects: usize,
    outage: Duration,
    /// Only the raw client and the cold start (for sweeps of the operator's settings).
    cold_only: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { objects: 1000, outage: Duration::from_secs(20), cold_only: false };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => args.objects = 100,
            "--cold-only" => args.cold_only = true,
            "--objects" => {
                args.objects =
                    it.next().and_then(|v| v.parse().ok()).ok_or("--objects needs a number")?;
            }
            "--outage" => {
                let secs: u64 =
                    it.next().and_then(|v| v.parse().ok()).ok_or("--outage needs seconds")?;
                args.outage = Duration::from_secs(secs);
            }
            // cargo bench passes --bench to every harness=false target.
            "--bench" => {}
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn assets() -> Option<PathBuf> {
    let dir = std::env::var_os("KUBEBUILDER_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/local/kubebuilder/bin"));
    (dir.join("kube-apiserver").is_file() && dir.join("etcd").is_file()).then_some(dir)
}

/// Polls `probe` every [`POLL`] until it holds; errors after [`PHASE_LIMIT`] naming `what`.
async fn until<F, Fut>(what: &str, mut probe: F) -> Result<Duration, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !probe().await {
        if started.elapsed() > PHASE_LIMIT {
            return Err(format!("timed out after {PHASE_LIMIT:?} waiting for {what}"));
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(started.elapsed())
}

async fn install_crd(client: &Client) -> Result<(), String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/zmqproxy.yaml");
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let crd: CustomResourceDefinition = serde_yaml::from_str(&text).map_err(|e| e.to_string())?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd).await.map_err(|e| format!("CRD: {e}"))?;
    let established =
        await_condition(crds, "zmqproxies.zmqproxy.io", conditions::is_crd_established());
    tokio::time::timeout(PHASE_LIMIT, established)
        .await
        .map_err(|_| "CRD not established".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(())
}

async fn create_namespace(client: &Client, name: &str) -> Result<(), String> {
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name}})).map_err(|e| e.to_string())?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .map_err(|e| format!("namespace {name}: {e}"))?;
    Ok(())
}

/// The `i`th object: a shared queue, as most users run.
fn manifest(namespace: &str, i: usize) -> Value {
    json!({
        "apiVersion": "zmqproxy.io/v1alpha1", "kind": "ZmqProxy",
        "metadata": {"name": format!("zp-{i:05}"), "namespace": namespace},
        "spec": {
            "frontend": {"type": "ROUTER", "port": 5555},
            "backend": {"type": "DEALER", "port": 5556},
            "replicas": 1,
        },
    })
}

/// Phase 1: the same children the operator writes, applied one after another by one client.
/// Returns the time the writes took and the CPU snapshot at their end.
async fn raw_client(
    client: &Client,
    namespace: &str,
    n: usize,
) -> Result<(Duration, Vec<(String, f64)>), String> {
    let options = BuildOptions { default_image: IMAGE.into(), ..Default::default() };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let apply = PatchParams::apply("bench-raw-client").force();
    let started = Instant::now();
    for i in 0..n {
        let mut zp: ZmqProxy =
            serde_json::from_value(manifest(namespace, i)).map_err(|e| e.to_string())?;
        zp.meta_mut().uid = Some(format!("00000000-0000-0000-0000-{i:012}"));
        let children = build::children(&zp, &options).map_err(|e| e.to_string())?;
        let name = zp.name_any();
        let deployment =
            diff::stamp(serde_json::to_value(&children.deployment).map_err(|e| e.to_string())?);
        deployments
            .patch(&name, &apply, &Patch::Apply(&deployment))
            .await
            .map_err(|e| e.to_string())?;
        for service in [&children.service] {
            let name = service.metadata.name.clone().unwrap_or_default();
            let service = diff::stamp(serde_json::to_value(service).map_err(|e| e.to_string())?);
            services
                .patch(&name, &apply, &Patch::Apply(&service))
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    let took = started.elapsed();
    let cpu = cpu_snapshot(None);
    // Out of the operator's caches before it starts.
    let all = DeleteParams::default();
    deployments.delete_collection(&all, &ListParams::default()).await.map_err(|e| e.to_string())?;
    services.delete_collection(&all, &ListParams::default()).await.map_err(|e| e.to_string())?;
    // Where a controller-manager runs, its garbage collector then removes the ReplicaSets and
    // pods of those Deployments: the operator's phase starts once that work is done, so it does
    // not pay for the raw client's aftermath.
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let one = ListParams::default().limit(1);
    until("the raw client's ReplicaSets and pods collected", || async {
        let left = |n: Result<usize, kube::Error>| n.map_or(true, |n| n > 0);
        let sets = replica_sets.list_metadata(&one).await.map(|l| l.items.len());
        let pods = pods.list_metadata(&one).await.map(|l| l.items.len());
        !left(sets) && !left(pods)
    })
    .await?;
    Ok((took, cpu))
}

async fn create_objects(client: &Client, namespace: &str, n: usize) -> Result<(), String> {
    let zps: Api<ZmqProxy> = Api::namespaced(client.clone(), namespace);
    futures::stream::iter(0..n)
        .map(|i| {
            let zps = zps.clone();
            async move {
                let zp: ZmqProxy =
                    serde_json::from_value(manifest(namespace, i)).map_err(|e| e.to_string())?;
                zps.create(&PostParams::default(), &zp).await.map_err(|e| e.to_string())?;
                Ok::<(), String>(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// The benchmark's own view of a namespace, from watches (polling lists of N objects would load
/// the server the operator is measured on).
struct Mirror {
    zps: Store<ZmqProxy>,
    deployments: Store<PartialObjectMeta<Deployment>>,
    services: Store<PartialObjectMeta<Service>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn mirror<K>(api: Api<K>, tasks: &mut Vec<tokio::task::JoinHandle<()>>) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api, watcher::Config::default()).default_backoff());
    tasks.push(tokio::spawn(stream.for_each(|_| async {})));
    reader
}

impl Mirror {
    fn of(client: &Client, namespace: &str) -> Mirror {
        let mut tasks = Vec::new();
        Mirror {
            zps: mirror(Api::namespaced(client.clone(), namespace), &mut tasks),
            // Children by their metadata only: the benchmark needs to know they exist, and full
            // Deployment events would make this process, which shares the machine with the
            // operator, decode pod templates nobody reads here.
            deployments: mirror(Api::namespaced(client.clone(), namespace), &mut tasks),
            services: mirror(Api::namespaced(client.clone(), namespace), &mut tasks),
            tasks,
        }
    }

    /// Every object reconciled: children present and status observed at the current generation.
    fn all_reconciled(&self, n: usize) -> bool {
        let observed = self
            .zps
            .state()
            .iter()
            .filter(|zp| {
                zp.status.as_ref().and_then(|s| s.observed_generation) == zp.metadata.generation
            })
            .count();
        observed == n && self.deployments.len() == n && self.services.len() >= n
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// resourceVersion of every ZmqProxy, Deployment and Service in `namespace`, plus the Events.
async fn versions(client: &Client, namespace: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let lp = ListParams::default();
    let e = |e: kube::Error| e.to_string();
    for m in Api::<ZmqProxy>::namespaced(client.clone(), namespace)
        .list_metadata(&lp)
        .await
        .map_err(e)?
    {
        out.insert(format!("ZmqProxy/{}", m.name_any()), m.resource_version().unwrap_or_default());
    }
    for m in Api::<Deployment>::namespaced(client.clone(), namespace)
        .list_metadata(&lp)
        .await
        .map_err(e)?
    {
        out.insert(
            format!("Deployment/{}", m.name_any()),
            m.resource_version().unwrap_or_default(),
        );
    }
    for m in
        Api::<Service>::namespaced(client.clone(), namespace).list_metadata(&lp).await.map_err(e)?
    {
        out.insert(format!("Service/{}", m.name_any()), m.resource_version().unwrap_or_default());
    }
    for m in
        Api::<Event>::namespaced(client.clone(), namespace).list_metadata(&lp).await.map_err(e)?
    {
        out.insert(format!("Event/{}", m.name_any()), m.resource_version().unwrap_or_default());
    }
    Ok(out)
}

/// CPU seconds (user + system) of process `pid` so far, from /proc.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command's closing parenthesis: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<f64>().ok());
    Some((ticks(14)? + ticks(15)?) / clock_ticks())
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 where it cannot be asked).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The processes of `BENCH_CPU_PIDS` (`name=pid,...`) whose CPU time each phase reports.
fn watched_processes() -> Vec<(String, u32)> {
    std::env::var("BENCH_CPU_PIDS")
        .unwrap_or_default()
        .split(',')
        .filter_map(|entry| {
            let (name, pid) = entry.split_once('=')?;
            Some((name.trim().to_string(), pid.trim().parse().ok()?))
        })
        .collect()
}

/// CPU seconds so far of each watched process (and the operator's, when `operator` is given).
fn cpu_snapshot(operator: Option<u32>) -> Vec<(String, f64)> {
    let mut all: Vec<(String, u32)> = watched_processes();
    all.extend(operator.map(|pid| ("operator".to_string(), pid)));
    // The benchmark shares the machine too: the raw client in its phase, its watches in the
    // operator's.
    all.push(("bench".to_string(), std::process::id()));
    all.into_iter().filter_map(|(name, pid)| Some((name, cpu_seconds(pid)?))).collect()
}

/// One line: the CPU seconds each process spent between `before` and `after`, and their sum.
fn cpu_line(before: &[(String, f64)], after: &[(String, f64)]) -> Option<String> {
    let spent: Vec<(String, f64)> = after
        .iter()
        .map(|(name, t)| {
            let start = before.iter().find(|(n, _)| n == name).map_or(0.0, |(_, s)| *s);
            (name.clone(), t - start)
        })
        .collect();
    if spent.is_empty() {
        return None;
    }
    let total: f64 = spent.iter().map(|(_, t)| t).sum();
    let parts: Vec<String> = spent.iter().map(|(n, t)| format!("{n} {t:.1}")).collect();
    Some(format!("{total:.1} CPU s ({})", parts.join(", ")))
}

/// The operator binary, run as in a cluster but against the benchmark's API server.
struct Operator {
    child: Child,
    http_port: u16,
}

impl Operator {
    fn start(kubeconfig: &Path, log: &Path, namespace: Option<&str>) -> Result<Operator, String> {
        let http_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| e.to_string())?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        // BENCH_OPERATOR_BIN runs another build (an older commit) against the same benchmark.
        let binary = std::env::var_os("BENCH_OPERATOR_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_zmq-proxy-operator")));
        let child = Command::new(binary)
            .arg("--leader-election=false")
            .arg(format!(
                "--proxy-image={}",
                std::env::var("BENCH_PROXY_IMAGE").unwrap_or_else(|_| IMAGE.into())
            ))
            .args(
                std::env::var("BENCH_PROXY_PULL_POLICY")
                    .ok()
                    .map(|p| format!("--proxy-image-pull-policy={p}")),
            )
            .arg(format!("--http-bind=127.0.0.1:{http_port}"))
            .args(namespace.map(|ns| format!("--watch-namespace={ns}")))
            .args(std::env::var("BENCH_CONCURRENCY").ok().map(|c| format!("--concurrency={c}")))
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", std::env::var("BENCH_OPERATOR_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start the operator: {e}"))?;
        Ok(Operator { child, http_port })
    }

    /// A `/proc/<pid>/status` field in kB (VmRSS, VmHWM).
    fn memory_kb(&self, field: &str) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = text.lines().find(|l| l.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    async fn metrics(&self) -> Option<String> {
        let mut stream =
            tokio::net::TcpStream::connect(("127.0.0.1", self.http_port)).await.ok()?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").await.ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await.ok()?;
        Some(body)
    }

    /// Sum of every sample of `name` whose labels contain `label` (all samples when empty).
    async fn counter(&self, name: &str, label: &str) -> Option<f64> {
        let text = self.metrics().await?;
        Some(
            text.lines()
                .filter(|l| l.starts_with(name) && l.contains(label))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum(),
        )
    }

    /// SIGTERM, then wait (bounded) for the exit.
    fn stop(mut self) -> Result<(), String> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return Err("the operator did not stop within 30 s of SIGTERM".into());
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the operator's reconcile counter reaches `at_least` and then stays unchanged for
/// a second, i.e. the work queue is empty.
async fn settled(op: &Operator, at_least: f64) -> Result<f64, String> {
    let mut last = -1.0;
    let mut stable_since = Instant::now();
    let started = Instant::now();
    loop {
        let now = op.counter("zmq_proxy_operator_reconciles_total", "").await.unwrap_or(-1.0);
        if now != last {
            last = now;
            stable_since = Instant::now();
        } else if now >= at_least && stable_since.elapsed() >= Duration::from_secs(1) {
            return Ok(now);
        }
        if started.elapsed() > PHASE_LIMIT {
            return Err(format!("the operator did not settle: {now} reconciles, want {at_least}"));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn requests_line(op: &Operator) -> String {
    let text = op.metrics().await.unwrap_or_default();
    let mut parts: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("zmq_proxy_operator_api_requests_total{"))
        .map(|l| l.trim_start_matches("zmq_proxy_operator_api_requests_total").to_string())
        .collect();
    parts.sort();
    if parts.is_empty() { "(no api_requests_total metric)".into() } else { parts.join(" ") }
}

/// Where the benchmark runs: a control plane it starts (every phase), or an existing cluster
/// from `$BENCH_KUBECONFIG` (no outage phase; the operator watches only the benchmark's
/// namespace, so an operator already installed there must not watch it too).
enum Target {
    Launched(Box<ControlPlane>),
    Existing { client: Client, kubeconfig: PathBuf },
}

fn report_memory(operator: &Operator, rss_cold: u64, n: usize) {
    let rss = operator.memory_kb("VmHWM:").unwrap_or(0).max(rss_cold);
    let now = operator.memory_kb("VmRSS:").unwrap_or(0);
    println!(
        "operator RSS:            {:>7.1} MiB peak, {:.1} MiB now, at {n} objects",
        rss as f64 / 1024.0,
        now as f64 / 1024.0
    );
}

async fn run(args: Args, mut target: Target) -> Result<(), String> {
    let (client, kubeconfig) = match &target {
        Target::Launched(plane) => (plane.client.clone(), plane.kubeconfig()?),
        Target::Existing { client, kubeconfig } => (client.clone(), kubeconfig.clone()),
    };
    let version = client.apiserver_version().await.map_err(|e| e.to_string())?;
    let n = args.objects;
    println!("kube-apiserver {}; {n} objects", version.git_version);
    let stamp = std::process::id();
    let (raw_ns, ns, scope) = match &target {
        Target::Launched(_) => ("raw".to_string(), "scale".to_string(), None),
        Target::Existing { .. } => {
            let ns = format!("{SCALE_NS_PREFIX}{stamp}");
            (format!("{RAW_NS_PREFIX}{stamp}"), ns.clone(), Some(ns))
        }
    };
    match &target {
        Target::Launched(_) => install_crd(&client).await?,
        Target::Existing { .. } => {
            let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
            if crds.get_opt("zmqproxies.zmqproxy.io").await.map_err(|e| e.to_string())?.is_none() {
                install_crd(&client).await?;
            }
        }
    }
    if let Target::Existing { .. } = &target {
        clear_earlier_runs(&client).await?;
    }
    let result = phases(&args, &mut target, &client, &kubeconfig, (&raw_ns, &ns), scope).await;
    if let Target::Existing { .. } = &target {
        // Left behind, each run's pending pods keep the scheduler and the controllers busy
        // and weigh on every later measurement.
        let namespaces: Api<Namespace> = Api::all(client.clone());
        for name in [&raw_ns, &ns] {
            let _ = namespaces.delete(name, &DeleteParams::background()).await;
        }
    }
    result
}

/// Deletes the namespaces an earlier run left on an existing cluster (its own prefixes only)
/// and waits until they are gone, so every run starts on the same empty cluster.
async fn clear_earlier_runs(client: &Client) -> Result<(), String> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let left = |list: kube::core::ObjectList<Namespace>| -> Vec<String> {
        list.items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .filter(|n| n.starts_with(RAW_NS_PREFIX) || n.starts_with(SCALE_NS_PREFIX))
            .collect()
    };
    let earlier = left(namespaces.list(&ListParams::default()).await.map_err(|e| e.to_string())?);
    if earlier.is_empty() {
        return Ok(());
    }
    println!("deleting what earlier runs left: {}", earlier.join(", "));
    for name in &earlier {
        let _ = namespaces.delete(name, &DeleteParams::background()).await;
    }
    let waited = until("the earlier runs' namespaces gone", || async {
        namespaces.list(&ListParams::default()).await.map(|l| left(l).is_empty()).unwrap_or(false)
    })
    .await?;
    println!("  gone after {:.1} s", waited.as_secs_f64());
    Ok(())
}

/// The phases of one run, in the namespaces `raw_ns` (the raw client's) and `ns`.
async fn phases(
    args: &Args,
    target: &mut Target,
    client: &Client,
    kubeconfig: &Path,
    (raw_ns, ns): (&str, &str),
    scope: Option<String>,
) -> Result<(), String> {
    let n = args.objects;
    let stamp = std::process::id();
    let log = std::env::temp_dir().join(format!("zmq-proxy-operator-bench-{stamp}.log"));
    let start_operator = || Operator::start(kubeconfig, &log, scope.as_deref());

    create_namespace(client, raw_ns).await?;
    let cpu_before = cpu_snapshot(None);
    let (raw, cpu_raw) = raw_client(client, raw_ns, n).await?;
    println!("raw client, sequential:  {:>7.1} s for {} children", raw.as_secs_f64(), 2 * n);

    create_namespace(client, ns).await?;
    create_objects(client, ns, n).await?;
    let view = Mirror::of(client, ns);
    until("the benchmark's watches listed", || async { view.zps.len() == n }).await?;
    let cpu_start = cpu_snapshot(None);
    let operator = start_operator()?;
    let cold = until("every object reconciled", || async { view.all_reconciled(n) }).await?;
    let cpu_cold = cpu_snapshot(Some(operator.child.id()));
    drop(view);
    println!(
        "operator, cold start:    {:>7.1} s  ({:.2}x the raw client's time; goal <= 30 s and <= 1.0x)",
        cold.as_secs_f64(),
        cold.as_secs_f64() / raw.as_secs_f64()
    );
    if let (Some(raw), Some(cold)) =
        (cpu_line(&cpu_before, &cpu_raw), cpu_line(&cpu_start, &cpu_cold))
    {
        println!("  raw client's phase:  {raw}\n  cold start:          {cold}");
    }
    settled(&operator, n as f64).await?;
    println!("  requests: {}", requests_line(&operator).await);
    let total = operator.counter("zmq_proxy_operator_api_requests_total", "").await.unwrap_or(0.0);
    println!(
        "  requests per object:   {:>7.2}  ({total} in all; the raw client's: 2; goal <= 4)",
        total / n as f64
    );
    let rss_cold = operator.memory_kb("VmHWM:").unwrap_or(0);
    if args.cold_only {
        report_memory(&operator, rss_cold, n);
        return operator.stop();
    }

    let before = versions(client, ns).await?;
    operator.stop()?;
    let operator = start_operator()?;
    let reconciles = settled(&operator, n as f64).await?;
    let after = versions(client, ns).await?;
    let changed: Vec<&String> =
        after.iter().filter(|(k, v)| before.get(*k) != Some(*v)).map(|(k, _)| k).collect();
    println!(
        "restart resync:          {} writes ({} reconciles, {} objects compared; goal 0)",
        changed.len(),
        reconciles,
        before.len()
    );
    if !changed.is_empty() {
        println!("  changed: {:?}", changed.iter().take(10).collect::<Vec<_>>());
    }
    println!("  requests: {}", requests_line(&operator).await);

    let Target::Launched(plane) = target else {
        report_memory(&operator, rss_cold, n);
        operator.stop()?;
        println!("existing cluster: no API-server outage phase; operator log: {}", log.display());
        return Ok(());
    };
    let outage = args.outage;
    plane.restart_apiserver(tokio::time::sleep(outage)).await?;
    let zps: Api<ZmqProxy> = Api::namespaced(client.clone(), ns);
    let target = "zp-00000";
    let new_image = format!("{IMAGE}-after-outage");
    let patch = json!({"spec": {"image": new_image}});
    until("the spec change accepted", || async {
        zps.patch(target, &PatchParams::default(), &Patch::Merge(&patch)).await.is_ok()
    })
    .await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let applied = until("the change applied to the Deployment", || async {
        let image = deployments
            .get(target)
            .await
            .ok()
            .and_then(|d| d.spec?.template.spec?.containers.first()?.image.clone());
        image.as_deref() == Some(new_image.as_str())
    })
    .await?;
    println!(
        "after a {:.0} s API-server outage: change applied {:.1} s after the server was back (goal <= 5 s)",
        outage.as_secs_f64(),
        applied.as_secs_f64()
    );
    report_memory(&operator, rss_cold, n);
    operator.stop()?;
    println!("operator log: {}", log.display());
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("scale: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let existing = std::env::var_os("BENCH_KUBECONFIG").map(PathBuf::from);
    let assets = assets();
    if existing.is_none() && assets.is_none() {
        println!(
            "skipped: no kube-apiserver and etcd in $KUBEBUILDER_ASSETS or /usr/local/kubebuilder/bin (or set BENCH_KUBECONFIG)"
        );
        return std::process::ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("scale: tokio: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let target = match (existing, assets) {
            (Some(kubeconfig), _) => {
                let text = kube::config::Kubeconfig::read_from(&kubeconfig)
                    .map_err(|e| format!("{}: {e}", kubeconfig.display()))?;
                let config = kube::Config::from_custom_kubeconfig(text, &Default::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let client = Client::try_from(config).map_err(|e| e.to_string())?;
                Target::Existing { client, kubeconfig }
            }
            (None, Some(assets)) => Target::Launched(Box::new(ControlPlane::start(&assets).await?)),
            (None, None) => return Err("no target".to_string()),
        };
        run(args, target).await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scale: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
