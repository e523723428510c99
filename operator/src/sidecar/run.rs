//! The webhook's flags and its start: the listener, the first certificate (the operator's own CA
//! or cert-manager's files) and the task that renews or rereads it.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kube::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use zmq_proxy_api::endpoint::{Direction, Endpoint};

use super::ca::{self, CaConfig};
use super::cert;
use super::webhook::{self, Handler, Tls};
use crate::build::BuildOptions;

/// How often the operator's own certificate is checked for renewal.
pub const RENEW_CHECK: Duration = Duration::from_secs(3600);
/// How often cert-manager's files are reread.
pub const REREAD: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, clap::Args)]
pub struct WebhookArgs {
    /// HOST:PORT of the sidecar injection webhook's HTTPS server (`*:9443`); unset: no webhook.
    #[arg(long, env = "WEBHOOK_BIND", value_parser = parse_bind)]
    pub webhook_bind: Option<Endpoint>,
    /// A directory with tls.crt and tls.key (cert-manager's Secret, mounted): served as they
    /// are and reread every minute; cert-manager's CA injector writes the caBundle. Unset: the
    /// operator keeps its own CA in --webhook-secret and writes the caBundle itself.
    #[arg(long, env = "WEBHOOK_CERT_DIR")]
    pub webhook_cert_dir: Option<PathBuf>,
    /// The Secret (in the operator's namespace) holding the operator's own webhook CA.
    #[arg(long, env = "WEBHOOK_SECRET", default_value = "zmq-proxy-operator-webhook-tls")]
    pub webhook_secret: String,
    /// The webhook's Service, whose DNS names the serving certificate holds.
    #[arg(long, env = "WEBHOOK_SERVICE", default_value = "zmq-proxy-operator-webhook")]
    pub webhook_service: String,
    /// The MutatingWebhookConfiguration whose caBundle the operator writes.
    #[arg(long, env = "WEBHOOK_CONFIGURATION", default_value = "zmq-proxy-operator")]
    pub webhook_configuration: String,
    /// More names (DNS names or IP addresses, comma-separated) for the serving certificate.
    #[arg(long, env = "WEBHOOK_CERT_NAMES", value_delimiter = ',')]
    pub webhook_cert_names: Vec<String>,
}

fn parse_bind(s: &str) -> Result<Endpoint, String> {
    Endpoint::parse_host_port(s, Direction::Bind)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// Starts the webhook when `--webhook-bind` is set: serves until `stop` holds true. An error
/// here (no certificate, the port taken) stops the operator at start, naming the cause.
pub async fn start(
    args: &WebhookArgs,
    namespace: &str,
    client: Client,
    options: BuildOptions,
    stop: watch::Receiver<bool>,
) -> Result<Option<JoinHandle<()>>, String> {
    let Some(bind) = &args.webhook_bind else { return Ok(None) };
    let ca = CaConfig {
        namespace: namespace.to_string(),
        secret: args.webhook_secret.clone(),
        names: cert::service_names(&args.webhook_service, namespace)
            .into_iter()
            .chain(args.webhook_cert_names.iter().cloned())
            .collect(),
        webhook_configuration: args.webhook_configuration.clone(),
    };
    let dir = args.webhook_cert_dir.clone();
    let (mut pem, tls) = match &dir {
        Some(dir) => {
            let pem = read_dir(dir)?;
            (pem.clone(), Tls::new(cert::server_config(&pem.0, &pem.1)?))
        }
        None => {
            let c = ca::ensure(&client, &ca, now()).await?;
            if let Err(e) = ca::publish_ca_bundle(&client, &ca).await {
                warn!(error = %e, "cannot write the webhook's caBundle");
            }
            let tls = Tls::new(cert::server_config(&c.cert_pem, &c.key_pem)?);
            ((c.cert_pem, c.key_pem), tls)
        }
    };
    let listener =
        crate::http::bind(bind).await.map_err(|e| format!("--webhook-bind {bind}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    info!(%addr, path = super::MUTATE_PATH, "serving the sidecar webhook");
    let handler = Handler { client: client.clone(), options };
    let server_stop = stop.clone();
    let server = tokio::spawn(webhook::serve(listener, tls.clone(), handler, async move {
        let mut rx = server_stop;
        let _ = rx.wait_for(|v| *v).await;
    }));
    let mut stop = stop;
    let refresh = tokio::spawn(async move {
        let period = if dir.is_some() { REREAD } else { RENEW_CHECK };
        loop {
            tokio::select! {
                _ = stop.wait_for(|v| *v) => return,
                _ = tokio::time::sleep(period) => {}
            }
            let next = match &dir {
                Some(dir) => read_dir(dir),
                None => ca::ensure(&client, &ca, now()).await.map(|c| (c.cert_pem, c.key_pem)),
            };
            match next {
                Ok(next) if next != pem => match cert::server_config(&next.0, &next.1) {
                    Ok(config) => {
                        tls.set(config);
                        pem = next;
                        info!("webhook certificate reloaded");
                    }
                    Err(e) => warn!(error = %e, "new webhook certificate not usable"),
                },
                Ok(_) => {}
                Err(e) => warn!(error = %e, "webhook certificate not refreshed"),
            }
            if dir.is_none()
                && let Err(e) = ca::publish_ca_bundle(&client, &ca).await
            {
                warn!(error = %e, "cannot write the webhook's caBundle");
            }
        }
    });
    Ok(Some(tokio::spawn(async move {
        let _ = server.await;
        let _ = refresh.await;
    })))
}

fn read_dir(dir: &std::path::Path) -> Result<(String, String), String> {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .map_err(|e| format!("--webhook-cert-dir: {}: {e}", dir.join(name).display()))
    };
    Ok((read("tls.crt")?, read("tls.key")?))
}
