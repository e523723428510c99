//! The webhook's certificates, pure: a CA and the serving certificate it signs for the
//! webhook Service's DNS names, when they are due for renewal, and the rustls server
//! configuration of a PEM pair (ours, or cert-manager's `tls.crt`/`tls.key`).
//!
//! Why a CA and not one self-signed certificate: the API server trusts the webhook through the
//! `caBundle` of its configuration; during a rotation the bundle holds the old CA and the new
//! one, so the replicas that still serve the old certificate are trusted until they reload.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// How long a generated CA and serving certificate are valid.
pub const VALIDITY_DAYS: i64 = 365;

/// A CA and the serving certificate it signed, all PEM, as the Secret holds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServingCert {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// When both stop being valid, in seconds since the Unix epoch.
    pub not_after: i64,
}

/// A new CA and serving certificate for `names` (DNS names or IP literals), valid from an hour
/// before `now` (clocks drift) for [`VALIDITY_DAYS`].
pub fn generate(names: &[String], now: i64) -> Result<ServingCert, String> {
    let fail = |e: rcgen::Error| format!("cannot generate the webhook's certificate: {e}");
    let from = OffsetDateTime::from_unix_timestamp(now - 3600).map_err(|e| e.to_string())?;
    let until = from + Duration::days(VALIDITY_DAYS);
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name.push(DnType::CommonName, format!("zmq-proxy-operator webhook CA {now}"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    ca.not_before = from;
    ca.not_after = until;
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().map_err(fail)?).map_err(fail)?;

    let mut leaf = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    for name in names {
        leaf.subject_alt_names.push(match name.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.clone().try_into().map_err(fail)?),
        });
    }
    leaf.distinguished_name = DistinguishedName::new();
    leaf.distinguished_name.push(DnType::CommonName, names.first().cloned().unwrap_or_default());
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = from;
    leaf.not_after = until;
    let key = KeyPair::generate().map_err(fail)?;
    let cert = leaf.signed_by(&key, &ca).map_err(fail)?;
    Ok(ServingCert {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after: until.unix_timestamp(),
    })
}

/// Whether a certificate valid until `not_after` is renewed at `now`: when less than a third
/// of [`VALIDITY_DAYS`] is left, so a rotation that fails has months to be retried.
pub fn due(not_after: i64, now: i64) -> bool {
    not_after - now < VALIDITY_DAYS * 86_400 / 3
}

/// The DNS names of the webhook Service `service` in `namespace`, as the API server dials it.
pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// The rustls server configuration of a PEM certificate chain and its key.
pub fn server_config(cert_pem: &str, key_pem: &str) -> Result<Arc<ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt: no certificate".to_string());
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| format!("tls.key: {e}"))?;
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("tls.crt and tls.key: {e}"))?;
    Ok(Arc::new(config))
}

/// The `caBundle` during and after a rotation: the new CA first, then the previous one while it
/// still differs, so both certificates are trusted until every replica serves the new one.
pub fn ca_bundle(new_ca: &str, previous_ca: Option<&str>) -> String {
    match previous_ca {
        Some(old) if old.trim() != new_ca.trim() => format!("{}\n{}\n", new_ca.trim(), old.trim()),
        _ => format!("{}\n", new_ca.trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pair_serves_tls_and_is_due_a_third_before_it_ends() {
        let now = 1_800_000_000;
        let names = service_names("zmq-proxy-operator-webhook", "ops");
        let c = generate(&names, now).expect("generate");
        assert!(c.ca_pem.contains("BEGIN CERTIFICATE") && c.key_pem.contains("PRIVATE KEY"));
        assert!(server_config(&c.cert_pem, &c.key_pem).is_ok());
        assert!(!due(c.not_after, now));
        assert!(due(c.not_after, c.not_after - VALIDITY_DAYS * 86_400 / 3 + 1));
        let e = server_config("junk", &c.key_pem).expect_err("no certificate");
        assert!(e.starts_with("tls.crt"), "{e}");
    }

    #[test]
    fn the_bundle_keeps_the_previous_ca_while_it_differs() {
        assert_eq!(ca_bundle("A\n", Some("A")), "A\n");
        assert_eq!(ca_bundle("B", Some("A\n")), "B\nA\n");
        assert_eq!(ca_bundle("B", None), "B\n");
    }
}
