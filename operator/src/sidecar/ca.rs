//! The operator's own CA for its webhook, kept in a Secret of its namespace so every replica
//! serves the same certificate: made when missing, renewed when [`cert::due`], and its CA
//! written into the `caBundle` of the operator's MutatingWebhookConfiguration (the new CA and
//! the previous one during a rotation). Not used with cert-manager, which writes the Secret
//! and, through its CA injector, the `caBundle`.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};
use tracing::{info, warn};

use super::cert::{self, ServingCert};

/// Secret annotation: when the certificate ends, in seconds since the Unix epoch.
pub const NOT_AFTER_ANNOTATION: &str = "zmqproxy.io/not-after";
/// The Secret's keys: cert-manager's three, and the CA this one replaced.
pub const CA_KEY: &str = "ca.crt";
pub const CERT_KEY: &str = "tls.crt";
pub const KEY_KEY: &str = "tls.key";
pub const PREVIOUS_CA_KEY: &str = "ca-previous.crt";

/// Where the CA lives and whom it serves.
#[derive(Clone, Debug)]
pub struct CaConfig {
    pub namespace: String,
    pub secret: String,
    /// The names the serving certificate holds (the webhook Service's, and any extra).
    pub names: Vec<String>,
    /// The MutatingWebhookConfiguration whose `caBundle` this CA goes into.
    pub webhook_configuration: String,
}

/// The certificate to serve now: the Secret's, or a new one written there when it is missing or
/// due. Two replicas that race to write it agree on whichever write won.
pub async fn ensure(client: &Client, cfg: &CaConfig, now: i64) -> Result<ServingCert, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &cfg.namespace);
    let where_ = format!("Secret {}/{}", cfg.namespace, cfg.secret);
    for _ in 0..3 {
        let existing = api.get_opt(&cfg.secret).await.map_err(|e| format!("{where_}: {e}"))?;
        if let Some(held) = existing.as_ref().and_then(read)
            && !cert::due(held.not_after, now)
        {
            return Ok(held);
        }
        let fresh = cert::generate(&cfg.names, now)?;
        let previous = existing.as_ref().and_then(|s| data(s, CA_KEY));
        let mut secret = to_secret(cfg, &fresh, previous.as_deref());
        let written = match existing {
            Some(old) => {
                secret.metadata.resource_version = old.metadata.resource_version;
                api.replace(&cfg.secret, &PostParams::default(), &secret).await
            }
            None => api.create(&PostParams::default(), &secret).await,
        };
        match written {
            Ok(_) => {
                info!(secret = %where_, not_after = fresh.not_after, "webhook certificate written");
                return Ok(fresh);
            }
            // Another replica wrote first: read what it wrote.
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(format!("{where_}: {e}")),
        }
    }
    Err(format!("{where_}: kept changing while it was written"))
}

/// Writes the CA of the Secret (with the previous one) into every webhook of the configuration,
/// unless it is there already. A missing configuration is only a warning: the operator may run
/// without the webhook installed.
pub async fn publish_ca_bundle(client: &Client, cfg: &CaConfig) -> Result<(), String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &cfg.namespace);
    let secret =
        secrets.get(&cfg.secret).await.map_err(|e| format!("Secret {}: {e}", cfg.secret))?;
    let Some(ca) = data(&secret, CA_KEY) else {
        return Err(format!("Secret {}: no {CA_KEY}", cfg.secret));
    };
    let bundle = cert::ca_bundle(&ca, data(&secret, PREVIOUS_CA_KEY).as_deref());
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let name = &cfg.webhook_configuration;
    let Some(mut config) = api.get_opt(name).await.map_err(|e| format!("{name}: {e}"))? else {
        warn!(configuration = %name, "no MutatingWebhookConfiguration of that name: caBundle not written");
        return Ok(());
    };
    let mut changed = false;
    for hook in config.webhooks.iter_mut().flatten() {
        let want = Some(ByteString(bundle.clone().into_bytes()));
        if hook.client_config.ca_bundle != want {
            hook.client_config.ca_bundle = want;
            changed = true;
        }
    }
    if changed {
        api.replace(name, &PostParams::default(), &config)
            .await
            .map_err(|e| format!("MutatingWebhookConfiguration {name}: {e}"))?;
        info!(configuration = %name, "webhook caBundle written");
    }
    Ok(())
}

fn data(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

/// The certificate a Secret holds, when it holds one whole.
fn read(secret: &Secret) -> Option<ServingCert> {
    let not_after =
        secret.metadata.annotations.as_ref()?.get(NOT_AFTER_ANNOTATION)?.parse().ok()?;
    Some(ServingCert {
        ca_pem: data(secret, CA_KEY)?,
        cert_pem: data(secret, CERT_KEY)?,
        key_pem: data(secret, KEY_KEY)?,
        not_after,
    })
}

fn to_secret(cfg: &CaConfig, c: &ServingCert, previous_ca: Option<&str>) -> Secret {
    let mut data = BTreeMap::from([
        (CA_KEY.to_string(), ByteString(c.ca_pem.clone().into_bytes())),
        (CERT_KEY.to_string(), ByteString(c.cert_pem.clone().into_bytes())),
        (KEY_KEY.to_string(), ByteString(c.key_pem.clone().into_bytes())),
    ]);
    if let Some(previous) = previous_ca {
        data.insert(PREVIOUS_CA_KEY.to_string(), ByteString(previous.as_bytes().to_vec()));
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(cfg.secret.clone()),
            namespace: Some(cfg.namespace.clone()),
            annotations: Some(BTreeMap::from([(
                NOT_AFTER_ANNOTATION.to_string(),
                c.not_after.to_string(),
            )])),
            labels: Some(BTreeMap::from([(
                crate::crd::MANAGED_BY.0.to_string(),
                crate::crd::MANAGED_BY.1.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(data),
        ..Secret::default()
    }
}
