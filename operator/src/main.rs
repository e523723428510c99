//! zmq-proxy-operator: flags, logging, the HTTP endpoints, leader election and the controller,
//! and a graceful stop on SIGTERM/SIGINT (in-flight reconciles finish, the lease is released).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, ValueEnum};
use kube::Client;
use kube::api::{Api, ListParams};
use tokio::sync::watch;
use tracing::{error, info};
use zmq_proxy_api::endpoint::{Direction, Endpoint};
use zmq_proxy_operator::build::BuildOptions;
use zmq_proxy_operator::context::Context;
use zmq_proxy_operator::controller;
use zmq_proxy_operator::crd::{ImagePullPolicy, ZmqProxy};
use zmq_proxy_operator::http::{self, HttpState};
use zmq_proxy_operator::leader::{LeaderElector, LeaseConfig};
use zmq_proxy_operator::metrics::Metrics;
use zmq_proxy_operator::sidecar::run::{self as sidecar, WebhookArgs};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Parser)]
#[command(version, about = "Runs ZmqProxy objects as StatefulSets and Services")]
struct Args {
    /// Namespace to watch; all namespaces when unset.
    #[arg(long, env = "WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Proxy image for ZmqProxy objects that do not name one.
    #[arg(long, env = "PROXY_IMAGE", default_value = concat!("ghcr.io/zmq-proxy-operator/zmq-proxy:", env!("CARGO_PKG_VERSION")))]
    proxy_image: String,
    /// Pull policy of the proxy image for objects that do not set one (Kubernetes' default
    /// when unset): Always, IfNotPresent or Never.
    #[arg(long, env = "PROXY_IMAGE_PULL_POLICY", value_parser = parse_pull_policy)]
    proxy_image_pull_policy: Option<ImagePullPolicy>,
    /// Address of /metrics, /healthz and /readyz: HOST:PORT, `*` for every IPv6 and IPv4
    /// address (dual stack, IPv4 alone without IPv6), as the proxy binds, so the kubelet's
    /// probes reach the operator on IPv6-only clusters too.
    #[arg(long, env = "HTTP_BIND", default_value = "*:8080", value_parser = parse_http_bind)]
    http_bind: Endpoint,
    /// Log format; the level comes from RUST_LOG (default info).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Elect a leader on a Lease so only one replica runs the controller.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "zmq-proxy-operator")]
    lease_name: String,
    /// Namespace of the Lease; the operator's own namespace in a cluster.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Identity in the Lease; the pod name in a cluster.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Give a prometheus-operator PodMonitor to every ZmqProxy that does not set
    /// spec.monitoring.podMonitor (made only where the cluster serves podmonitors).
    #[arg(long, env = "POD_MONITOR_DEFAULT", default_value_t = false, action = clap::ArgAction::Set)]
    pod_monitor_default: bool,
    /// Reconciles running at once (0: unbounded).
    #[arg(long, env = "CONCURRENCY", default_value_t = controller::CONCURRENCY)]
    concurrency: u16,
    #[command(flatten)]
    webhook: WebhookArgs,
}

/// `--http-bind`: the proxy's `HOST:PORT` syntax (`*:8080`, `[::]:8080`, `0.0.0.0:8080`).
fn parse_http_bind(s: &str) -> Result<Endpoint, String> {
    Endpoint::parse_host_port(s, Direction::Bind)
}

fn parse_pull_policy(s: &str) -> Result<ImagePullPolicy, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("{s:?} is not one of Always, IfNotPresent, Never"))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => {
            builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())).init()
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Resolves once `rx` holds true (or its sender is gone).
async fn until_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "zmq-proxy-operator failed");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        stop_signal().await;
        info!("stop signal received; shutting down");
        stop_tx.send_replace(true);
    });

    let listener = http::bind(&args.http_bind).await?;
    info!(addr = %listener.local_addr()?, "serving /metrics /healthz /readyz");
    let state = HttpState { metrics: metrics.clone(), ready: ready.clone() };
    let http_task = tokio::spawn(http::serve(listener, state, until_true(stop_rx.clone())));

    let client = Client::try_default().await?;
    // Fail early, with a clear message, when the CRD is missing or RBAC forbids the watch.
    let probe: Api<ZmqProxy> = match &args.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    probe.list(&ListParams::default().limit(1)).await.map_err(|e| {
        format!("cannot list zmqproxies.zmqproxy.io (is crds/zmqproxy.yaml installed?): {e}")
    })?;
    let options = BuildOptions {
        default_image: args.proxy_image.clone(),
        default_pull_policy: args.proxy_image_pull_policy,
        pod_monitor_default: args.pod_monitor_default,
    };
    // Every replica serves the webhook, leader or not (see sidecar::webhook).
    let webhook = sidecar::start(
        &args.webhook,
        &args.lease_namespace,
        client.clone(),
        options.clone(),
        stop_rx.clone(),
    )
    .await?;
    ready.store(true, Ordering::Relaxed);

    let ctx = Context::new(client.clone(), options, metrics.clone());

    if !args.leader_election {
        metrics.set_leader(true);
        let stop = until_true(stop_rx.clone());
        controller::run_with(ctx, args.watch_namespace.clone(), args.concurrency, stop).await;
    } else {
        let identity = args
            .identity
            .clone()
            .unwrap_or_else(|| format!("zmq-proxy-operator-{}", std::process::id()));
        let config = LeaseConfig::new(&args.lease_name, &args.lease_namespace, &identity);
        let (leading_tx, mut leading_rx) = watch::channel(false);
        // The elector stops (and releases the lease) only after the controller has finished its
        // in-flight reconciles, so a standby never overlaps with them.
        let (elector_stop_tx, elector_stop_rx) = watch::channel(false);
        let elector = tokio::spawn(
            LeaderElector::new(client.clone(), config).run(leading_tx, elector_stop_rx),
        );
        info!(%identity, lease = %args.lease_name, "waiting for leadership");
        loop {
            // Standby until we lead or stop.
            let stop = stop_rx.clone();
            tokio::select! {
                led = leading_rx.wait_for(|leading| *leading) => {
                    if led.is_err() { break; }
                }
                _ = until_true(stop) => break,
            }
            metrics.set_leader(true);
            info!("leading: running the controller");
            // The controller stops on shutdown or when leadership is lost, whichever comes first.
            let (lost_tx, lost_rx) = futures::channel::oneshot::channel::<()>();
            let mut watch_leading = leading_rx.clone();
            let mut watch_stop = stop_rx.clone();
            let stopper = tokio::spawn(async move {
                tokio::select! {
                    _ = watch_leading.wait_for(|leading| !*leading) => {}
                    _ = watch_stop.wait_for(|stop| *stop) => {}
                }
                let _ = lost_tx.send(());
            });
            let lost = async move {
                let _ = lost_rx.await;
            };
            controller::run_with(ctx.clone(), args.watch_namespace.clone(), args.concurrency, lost)
                .await;
            stopper.abort();
            metrics.set_leader(false);
            if *stop_rx.borrow() {
                break;
            }
            info!("leadership lost: controller stopped, back to standby");
        }
        elector_stop_tx.send_replace(true);
        let _ = elector.await;
    }
    let _ = http_task.await;
    if let Some(webhook) = webhook {
        let _ = webhook.await;
    }
    info!("stopped");
    Ok(())
}
