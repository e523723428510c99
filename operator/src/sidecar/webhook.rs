//! The admission webhook's server: HTTPS on its own port (the API server dials it through the
//! webhook Service), `POST /mutate-pods` answered by [`super::review`] with the `ZmqProxy` the
//! pod names read from the API server. Every replica of the operator serves it, leader or not:
//! the Service spreads the API server's calls over them.

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request as HttpRequest, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kube::Client;
use kube::api::Api;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tracing::{debug, info, warn};

use super::MUTATE_PATH;
use super::review::{self, Decision, Lookup};
use crate::build::BuildOptions;
use crate::crd::ZmqProxy;

/// The largest AdmissionReview read: a pod with its managed fields fits many times over.
pub const MAX_REVIEW_BYTES: usize = 4 << 20;
/// A TLS handshake that takes longer is dropped, so a silent client holds no task for long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificate the server presents; swapped in place when it is renewed, so new
/// connections get the new one and open ones keep theirs.
#[derive(Clone)]
pub struct Tls(Arc<RwLock<Arc<ServerConfig>>>);

impl Tls {
    pub fn new(config: Arc<ServerConfig>) -> Self {
        Tls(Arc::new(RwLock::new(config)))
    }

    pub fn set(&self, config: Arc<ServerConfig>) {
        if let Ok(mut c) = self.0.write() {
            *c = config;
        }
    }

    fn acceptor(&self) -> Option<TlsAcceptor> {
        self.0.read().ok().map(|c| TlsAcceptor::from(c.clone()))
    }
}

/// What answering a review needs.
#[derive(Clone)]
pub struct Handler {
    pub client: Client,
    pub options: BuildOptions,
}

impl Handler {
    /// The answer to one AdmissionReview body: a review, or the HTTP error of a body that is
    /// not one.
    pub async fn review(&self, body: &[u8]) -> Result<serde_json::Value, String> {
        let req = review::parse(body)?;
        let lookup = match req.proxy_name() {
            None => Lookup::NotFound,
            Some(name) => {
                let api: Api<ZmqProxy> = Api::namespaced(self.client.clone(), &req.namespace);
                match api.get_opt(name).await {
                    Ok(Some(zp)) => Lookup::Found(Box::new(zp)),
                    Ok(None) => Lookup::NotFound,
                    Err(e) => Lookup::Failed(e.to_string()),
                }
            }
        };
        let decision: Decision = review::decide(&req, lookup, &self.options);
        info!(
            namespace = %req.namespace,
            pod = %req.pod_name(),
            proxy = req.proxy_name().unwrap_or_default(),
            allowed = decision.allowed,
            injected = decision.patch.is_some(),
            message = decision.message.as_deref().unwrap_or_default(),
            warnings = ?decision.warnings,
            "admission review"
        );
        Ok(review::answer(&req.uid, &decision))
    }
}

/// Serves HTTPS on `listener` until `shutdown` completes, then closes every connection once
/// its request in flight is answered (an idle keep-alive connection at once, so the API server
/// dials again and finds the webhook gone), and returns when they are closed.
pub async fn serve(
    listener: TcpListener,
    tls: Tls,
    handler: Handler,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    tokio::pin!(shutdown);
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // Reap finished connections so the set holds only open ones.
        while connections.try_join_next().is_some() {}
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "webhook accept failed");
                    // A full file table clears when connections close: wait before retrying.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(acceptor) = tls.acceptor() else { continue };
        let handler = handler.clone();
        let mut closing = closing_rx.clone();
        connections.spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "webhook TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(respond(&handler, req).await) }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                _ = async { closing.wait_for(|c| *c).await.map(|_| ()) } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                debug!(%peer, error = %e, "webhook connection ended");
            }
        });
    }
    drop(listener);
    closing_tx.send_replace(true);
    while connections.join_next().await.is_some() {}
}

async fn respond(handler: &Handler, req: HttpRequest<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String, json: bool| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if json && let Ok(v) = "application/json".parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    match (req.method(), req.uri().path()) {
        (&Method::POST, MUTATE_PATH) => {}
        (&Method::GET, "/healthz") => return reply(StatusCode::OK, "ok".into(), false),
        _ => return reply(StatusCode::NOT_FOUND, "not found".into(), false),
    }
    let body = match Limited::new(req.into_body(), MAX_REVIEW_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return reply(StatusCode::PAYLOAD_TOO_LARGE, e.to_string(), false),
    };
    match handler.review(&body).await {
        Ok(answer) => reply(StatusCode::OK, answer.to_string(), true),
        Err(why) => reply(StatusCode::BAD_REQUEST, why, false),
    }
}
