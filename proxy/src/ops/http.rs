//! The `--http-bind` listener: `GET /metrics` (Prometheus text, rendered from the counters on
//! each scrape), `GET /healthz` (200 while the forwarding loop runs) and `GET /readyz` (200
//! once every bind is up, 503 from the moment the drain starts so a Kubernetes Service stops
//! sending new peers here), `GET /connects` (every connect endpoint with its addresses and
//! their states, as JSON: what the operator reports in the object's status) and
//! `GET /federation` (this replica's federation members and their links, as JSON).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;

use crate::engine::net;
use crate::ops::metrics::Observed;
use crate::policy::sockets::OpenError;
use zmq_proxy_api::endpoint::{Direction, Endpoint};

#[derive(Clone)]
struct HttpState {
    observed: Arc<Observed>,
    registry: Arc<Registry>,
}

pub fn router(observed: Arc<Observed>) -> Router {
    let registry = Arc::new(observed.registry());
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/connects", get(connects))
        .route("/federation", get(federation))
        .with_state(HttpState { observed, registry })
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    use prometheus_client::encoding::prometheus_text::{CONTENT_TYPE, encode};
    let mut body = String::with_capacity(4096);
    match encode(&mut body, &s.registry) {
        Ok(()) => (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], body),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            "cannot encode metrics\n".to_string(),
        ),
    }
}

/// `{"sockets":[{"socket":"backend","endpoint":"tcp://workers:6000","all":true,"resolved":3,
/// "connected":3,"resolve_failures":0,"addresses":[{"address":"10.0.0.7:6000","state":"connected"}]}]}`
async fn connects(State(s): State<HttpState>) -> impl IntoResponse {
    let body = serde_json::json!({ "sockets": s.observed.connects() });
    ([(header::CONTENT_TYPE, "application/json")], body.to_string())
}

/// `{"id":"r0","pattern":"XSUB/XPUB","members":[{"id":"r1","out":true,"in":true}]}`: this
/// replica and every other one it has seen, with the link to it (out) and from it (in); 404
/// when federation is off.
async fn federation(State(s): State<HttpState>) -> axum::response::Response {
    let Some(f) = s.observed.federation() else {
        return (StatusCode::NOT_FOUND, "federation is off\n").into_response();
    };
    let mut links = f.link_states();
    links.sort_by(|a, b| a.0.cmp(&b.0));
    let members: Vec<_> = links
        .iter()
        .map(|(id, out, inb)| serde_json::json!({ "id": &**id, "out": out, "in": inb }))
        .collect();
    let body = serde_json::json!({ "id": f.id(), "pattern": f.pattern(), "members": members });
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn healthz(State(s): State<HttpState>) -> impl IntoResponse {
    if s.observed.live() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "forwarding stopped\n")
    }
}

async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    if s.observed.ready() {
        (StatusCode::OK, "ready\n")
    } else if s.observed.draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if s.observed.strands_work() {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: no workers and no federation link\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// The running listener; dropping it stops serving.
pub struct HttpServer {
    pub local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpServer {
    /// Binds `addr` (`HOST:PORT`: `*:9090` or `[::]:9090` dual stack, `0.0.0.0:9090`,
    /// `[::1]:9090`; see [`crate::engine::net`]) and starts serving.
    pub async fn bind(addr: &str, observed: Arc<Observed>) -> Result<HttpServer, OpenError> {
        let open_err = |reason: String| OpenError::bind(format!("http://{addr}"), reason);
        let ep = Endpoint::parse_host_port(addr, Direction::Bind).map_err(open_err)?;
        let (listener, _) =
            net::bind(&ep).await.map_err(|e| open_err(net::describe_bind_error(&e)))?;
        let local_addr = listener.local_addr().map_err(|e| open_err(e.to_string()))?;
        let app = router(observed);
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "http listener failed");
            }
        });
        Ok(HttpServer { local_addr, task })
    }
}
