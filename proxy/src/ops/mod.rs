//! Everything around a running [`Proxy`] that is not forwarding: the control socket
//! ([`steer`]), the pause-file watcher ([`pause_file`]), the HTTP listener ([`http`]) and the
//! drop summary ([`metrics`]), started together once the data sockets are up, and the
//! container's memory limit ([`cgroup`]) that the memory budget defaults from.

pub mod cgroup;
pub(crate) mod http;
pub(crate) mod metrics;
pub(crate) mod pause_file;
pub(crate) mod steer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::engine::tunables::{DROP_SUMMARY_INTERVAL, PAUSE_FILE_POLL_INTERVAL};
use crate::ops::http::HttpServer;
use crate::ops::metrics::{Observed, drop_summary};
use crate::ops::steer::Control;
use crate::policy::sockets::OpenError;
use crate::proxy::config::ProxyConfig;
use crate::proxy::forward::Proxy;

pub struct Ops {
    pub observed: Arc<Observed>,
    pub control: Option<Control>,
    pub http: Option<HttpServer>,
    summary: JoinHandle<()>,
    pause_watch: Option<JoinHandle<()>>,
}

impl Drop for Ops {
    fn drop(&mut self) {
        self.summary.abort();
        if let Some(w) = &self.pause_watch {
            w.abort();
        }
    }
}

impl Ops {
    /// Binds `--control-bind` and `--http-bind` (failing on the first that cannot be bound)
    /// and marks the proxy ready: every bind is up by then.
    pub async fn start(cfg: &ProxyConfig, proxy: &Proxy) -> Result<Ops, OpenError> {
        Self::start_with(cfg, proxy, DROP_SUMMARY_INTERVAL).await
    }

    /// [`Ops::start`] with another drop-summary interval (for tests).
    pub async fn start_with(
        cfg: &ProxyConfig,
        proxy: &Proxy,
        summary_every: Duration,
    ) -> Result<Ops, OpenError> {
        let observed = Observed::of(proxy);
        let control = match &cfg.control_bind {
            Some(ep) => {
                let mech = cfg.control_security.clone();
                Some(Control::bind(ep, mech, proxy.state().clone(), proxy.counters()).await?)
            }
            None => None,
        };
        let http = match &cfg.http_bind {
            Some(addr) => Some(HttpServer::bind(addr, observed.clone()).await?),
            None => None,
        };
        let summary = tokio::spawn(drop_summary(observed.clone(), summary_every));
        let pause_watch = cfg.pause_file.clone().map(|path| {
            let every = PAUSE_FILE_POLL_INTERVAL;
            tokio::spawn(crate::ops::pause_file::watch(path, every, proxy.state().clone()))
        });
        observed.set_ready();
        Ok(Ops { observed, control, http, summary, pause_watch })
    }

    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control.as_ref().map(|c| c.local_addr)
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|h| h.local_addr)
    }

    /// The drain starts: /readyz turns 503 (call before [`Proxy::shutdown`]).
    pub fn set_draining(&self) {
        self.observed.set_draining();
    }
}
