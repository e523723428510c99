//! The operator's HTTP endpoints: /metrics (Prometheus text), /healthz (the process serves) and
//! /readyz (the API server answered at startup; a standby replica is ready too, as it is healthy
//! and waiting for the lease), and the listener they are served on.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use zmq_proxy_api::endpoint::Endpoint;

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.render(),
    )
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}

/// Binds `--http-bind` as the proxy binds its endpoints: `*` and `[::]` on one IPv6 socket with
/// `IPV6_V6ONLY` off (IPv4 and IPv6 clients alike), falling back to IPv4 `0.0.0.0` on a host
/// without IPv6; a literal or a host name on its first address that can be bound.
pub async fn bind(ep: &Endpoint) -> io::Result<TcpListener> {
    let listener = if ep.is_wildcard() {
        match listen_on(SocketAddr::from((Ipv6Addr::UNSPECIFIED, ep.port)), true) {
            Ok(l) => {
                tracing::info!(endpoint = %ep, "listening on every IPv6 and IPv4 address (dual stack)");
                l
            }
            // A port in use or a refused permission is the answer: an IPv4-only listener would
            // hide that another process holds the port.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied
                ) =>
            {
                return Err(e);
            }
            Err(e) => {
                tracing::debug!(port = ep.port, error = %e, "no dual-stack IPv6 socket");
                let l = listen_on(SocketAddr::from((Ipv4Addr::UNSPECIFIED, ep.port)), false)?;
                tracing::warn!(endpoint = %ep, "IPv6 unavailable on this host: listening on IPv4 0.0.0.0 only");
                l
            }
        }
    } else {
        let mut last = None;
        let mut bound = None;
        for addr in tokio::net::lookup_host(ep.host_port()).await? {
            match listen_on(addr, false) {
                Ok(l) => {
                    bound = Some(l);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        match bound {
            Some(l) => l,
            None => {
                return Err(last.unwrap_or_else(|| {
                    io::Error::new(io::ErrorKind::AddrNotAvailable, "host resolved to no address")
                }));
            }
        }
    };
    TcpListener::from_std(listener)
}

/// One non-blocking listening socket on `addr`; `dual_stack` turns `IPV6_V6ONLY` off. Address
/// reuse is on, so a restarted operator rebinds past TIME_WAIT.
fn listen_on(addr: SocketAddr, dual_stack: bool) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(!dual_stack)?;
    }
    #[cfg(unix)]
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}
