//! The `zmq-proxy` binary: command line, logging, signals, and exit codes around
//! [`zmq_proxy::Proxy`]. Exit codes: 0 clean stop, 1 runtime failure (e.g. a bind), 2 bad
//! flags or configuration, 130 second signal during the drain.

use std::process::ExitCode;

use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;
use zmq_proxy::curve::Mechanism;
use zmq_proxy::{Cli, Command, LogFormat, ProxyConfig, RUNTIME_WORKER_THREADS};
use zmq_proxy::{Ending, Proxy, Snapshot};

/// jemalloc rather than glibc's malloc: after 2000 idle connections closed, or a stalled
/// subscriber left, glibc kept 7-20 MiB it had handed out (fragmented arenas it never trims),
/// where jemalloc's background thread returns freed pages within about a second; the
/// measurements are in docs/operations.md ("Memory").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main`: a background thread purges freed pages (so memory
/// goes back while the proxy is idle, not only on the next allocation), dirty pages are given
/// back after 1 s and none are kept half-free ("muzzy"), which the resident size would still
/// count on a kernel without MADV_FREE pressure.
#[allow(unsafe_code)]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: MallocConf =
    MallocConf(c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

/// A C string pointer that jemalloc reads once; `*const c_char` alone is not `Sync`.
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);

// SAFETY: the pointer is to a static C string literal, never written.
#[allow(unsafe_code)]
unsafe impl Sync for MallocConf {}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_error(e),
    };
    match &cli.command {
        Some(Command::Keygen { zcert }) => {
            return match zmq_proxy::keygen(zcert.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(1, &e),
            };
        }
        Some(Command::Pairs) => {
            print!("{}", zmq_proxy::pairs_table());
            return ExitCode::SUCCESS;
        }
        None => {}
    }
    let mut cfg = match cli.into_config() {
        Ok(cfg) => cfg,
        Err(e) => return fail(2, &e.to_string()),
    };
    // Unset, the budget is a share of the container's memory limit (none without one).
    cfg.max_memory = cfg.max_memory.resolve(zmq_proxy::memory_limit());
    init_logging(cfg.log_format);
    // Before any socket opens: a container's soft limit is often far below its hard one, and
    // every peer holds a descriptor.
    let nofile = zmq_proxy::raise_fd_limit();
    match nofile.error {
        None => tracing::info!("{}", nofile.describe()),
        Some(_) => tracing::warn!("{}", nofile.describe()),
    }
    log_ephemeral_keys(&cfg);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RUNTIME_WORKER_THREADS)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(1, &format!("cannot start the runtime: {e}")),
    };
    let code = rt.block_on(run(cfg));
    // Connection tasks may still hold sockets; do not wait for them.
    rt.shutdown_background();
    ExitCode::from(code)
}

/// Prints clap's error as one line (no usage block, no tip) and exits 2; help and version
/// go to stdout with 0 as usual.
fn clap_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let rendered = e.render().to_string();
    let first = rendered.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid arguments");
    let msg = first.trim().strip_prefix("error:").unwrap_or(first).trim();
    // Keep clap's list of accepted words (e.g. for --log-format) on the same line.
    match rendered.lines().map(str::trim).find(|l| l.starts_with("[possible values:")) {
        Some(values) => fail(2, &format!("{msg} {values}")),
        None => fail(2, msg),
    }
}

/// Logs the public key of every ephemeral CURVE client keypair, so a server can list it.
fn log_ephemeral_keys(cfg: &ProxyConfig) {
    let mut sockets = vec![("frontend", &cfg.frontend), ("backend", &cfg.backend)];
    sockets.extend(cfg.capture.as_ref().map(|c| ("capture", c)));
    for (name, s) in sockets {
        if let Mechanism::Client(c) = &s.security.connected
            && c.ephemeral
        {
            tracing::info!(socket = name, public_key = %c.public, "CURVE client uses an ephemeral keypair");
        }
    }
}

fn fail(code: u8, msg: &str) -> ExitCode {
    eprintln!("zmq-proxy: error: {msg}");
    ExitCode::from(code)
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(false).init(),
    }
}

/// One option of every socket for the "proxy running" line, e.g. `frontend=1000 backend=10`.
fn hwms(cfg: &ProxyConfig, pick: impl Fn(&zmq_proxy_api::options::SocketOptions) -> u64) -> String {
    let each = cfg.named_sockets().into_iter().map(|(n, s)| format!("{n}={}", pick(&s.options)));
    each.collect::<Vec<_>>().join(" ")
}

async fn run(cfg: ProxyConfig) -> u8 {
    // Install the handlers before announcing "proxy running", so a signal sent right after
    // that line is never the default (fatal) action.
    let (mut term, mut int) =
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(t), Ok(i)) => (t, i),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("zmq-proxy: error: cannot install signal handlers: {e}");
                return 1;
            }
        };
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    for (name, s) in cfg.named_sockets() {
        for w in s.options.warnings(name) {
            tracing::warn!("{w}");
        }
    }
    let proxy = match Proxy::start(&cfg).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("zmq-proxy: error: {e}");
            return 1;
        }
    };
    let show = |s: &zmq_proxy::SocketConfig, bound: &[String]| {
        let mech = if s.security.is_curve() { " CURVE" } else { "" };
        // A socket that only connects listens nowhere: no empty "(listening on )".
        let at = match bound.is_empty() {
            true => String::new(),
            false => format!(" (listening on {})", bound.join(" ")),
        };
        let (t, ep) = (s.socket_type, s.endpoints());
        format!("{t}{mech} {ep}{at}{}", s.heartbeat.describe())
    };
    let capture =
        cfg.capture.as_ref().map(|c| show(c, &proxy.listening.capture)).unwrap_or_default();
    let ops = match zmq_proxy::Ops::start(&cfg, &proxy).await {
        Ok(o) => o,
        Err(e) => {
            eprintln!("zmq-proxy: error: {e}");
            return 1;
        }
    };
    let or_none = |a: Option<String>| a.unwrap_or_else(|| "none".into());
    tracing::info!(
        frontend = %show(&cfg.frontend, &proxy.listening.frontend),
        backend = %show(&cfg.backend, &proxy.listening.backend),
        capture = %capture,
        control = %or_none(ops.control_addr().map(|a| format!("tcp://{a}"))),
        http = %or_none(ops.http_addr().map(|a| a.to_string())),
        drain_timeout_secs = cfg.drain_timeout.as_secs_f64(),
        lame_duck_secs = cfg.lame_duck.as_secs_f64(),
        max_memory = %or_none(cfg.max_memory.bytes().map(|b| format!("{b} bytes"))),
        sndhwm = %hwms(&cfg, |o| o.sndhwm),
        rcvhwm = %hwms(&cfg, |o| o.rcvhwm),
        log_format = ?cfg.log_format,
        "proxy running"
    );
    let mut was_terminated = false;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = proxy.terminated() => was_terminated = true,
        _ = proxy.pump_died() => {
            // Serving one direction only would look healthy to peers; exit so the pod restarts.
            tracing::error!("a forwarding pump ended unexpectedly; exiting");
            let (_, s) = proxy.shutdown(std::time::Duration::ZERO, std::future::pending()).await;
            log_stopped(Ending::Aborted, &s);
            return 1;
        }
    }
    // Unready from the first instant, so the endpoint controller and every kube-proxy stop
    // sending new connections here; until they have, this proxy serves as usual, or peers that
    // reconnect would be sent to an address that no longer answers.
    ops.set_draining();
    let mut second = Box::pin(async {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    });
    // TERMINATE on the control socket is an explicit stop of a pod that stays where it is
    // (its container restarts, its address keeps answering): no lame duck.
    if !cfg.lame_duck.is_zero() && !was_terminated {
        tracing::info!(
            lame_duck_secs = cfg.lame_duck.as_secs_f64(),
            "lame duck: unready, still serving"
        );
        tokio::select! {
            _ = tokio::time::sleep(cfg.lame_duck) => {}
            _ = &mut second => {
                let (_, s) = proxy.shutdown(std::time::Duration::ZERO, std::future::ready(())).await;
                log_stopped(Ending::Aborted, &s);
                return 130;
            }
        }
    }
    tracing::info!(drain_timeout_secs = cfg.drain_timeout.as_secs_f64(), "draining");
    let federation = proxy.federation().cloned();
    let (ending, s) = proxy.shutdown(cfg.drain_timeout, second).await;
    log_stopped(ending, &s);
    if let Some(f) = federation {
        let f = f.snapshot();
        tracing::info!(
            members = f.members,
            relayed_out = f.relayed_out,
            relayed_in = f.relayed_in,
            dropped_link_full = f.dropped_link_full,
            dropped_link_down = f.dropped_link_down,
            protocol_errors = f.protocol_errors,
            heartbeat_timeouts = f.heartbeat_timeouts,
            handed_over = f.handed_over,
            "federation stopped"
        );
    }
    if ending == Ending::Aborted { 130 } else { 0 }
}

fn log_stopped(ending: Ending, s: &Snapshot) {
    let ending = match ending {
        Ending::Drained => "drained",
        Ending::TimedOut => "drain timeout expired",
        Ending::Aborted => "second signal",
    };
    tracing::info!(
        ending,
        frontend_recv_msgs = s.frontend_recv_msgs,
        frontend_recv_bytes = s.frontend_recv_bytes,
        frontend_sent_msgs = s.frontend_sent_msgs,
        frontend_sent_bytes = s.frontend_sent_bytes,
        backend_recv_msgs = s.backend_recv_msgs,
        backend_recv_bytes = s.backend_recv_bytes,
        backend_sent_msgs = s.backend_sent_msgs,
        backend_sent_bytes = s.backend_sent_bytes,
        capture_sent_msgs = s.capture_sent_msgs,
        capture_sent_bytes = s.capture_sent_bytes,
        dropped_msgs = s.dropped_msgs,
        undelivered_msgs = s.undelivered_msgs,
        dropped_unroutable = s.dropped_unroutable,
        dropped_peer_full = s.dropped_peer_full,
        dropped_peer_gone = s.dropped_peer_gone,
        dropped_invalid = s.dropped_invalid,
        dropped_capture = s.dropped_capture,
        handshake_failures = s.handshake_failures,
        protocol_errors = s.protocol_errors,
        heartbeat_timeouts = s.heartbeat_timeouts,
        "proxy stopped"
    );
}
