//! The federation of a `ZmqProxy` with more than one replica of a federated pattern
//! (docs/federation.md): the headless Service `<name>-federation` under which every replica
//! finds the others, the Secret `<name>-federation` with the federation's CURVE key (built here
//! from a key the caller generated: this module has no randomness), its volume and mount, and
//! the proxy's `--federation-*` flags.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    EnvVar, EnvVarSource, KeyToPath, ObjectFieldSelector, Secret, SecretVolumeSource, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use zmq_proxy_api::federation::federated_pattern;

use crate::crd::{FEDERATION_SUFFIX, ZmqProxy, ZmqProxySpec, selector_labels};

use super::curve::KEY_FILE_MODE;
use super::meta::ChildMeta;

/// Name of the container port (and Service port) the replicas link on.
pub const FEDERATION_PORT_NAME: &str = "federation";
/// The volume of the federation's key.
pub const FEDERATION_VOLUME: &str = "federation-key";
/// Where the federation's key is mounted (a directory, so the kubelet keeps it current).
pub const FEDERATION_MOUNT: &str = "/etc/zmq-proxy/federation";
/// The Secret's entry with the secret key (Z85, one line), and its file name in the mount.
pub const SECRET_KEY_ENTRY: &str = "secret-key";
/// The Secret's entry with the public key (Z85): not secret, there to check a key by eye.
pub const PUBLIC_KEY_ENTRY: &str = "public-key";
/// The proxy reads `--federation-id` from this variable; the pods set it to their own name.
pub const FEDERATION_ID_ENV: &str = "ZMQ_PROXY_FEDERATION_ID";

/// The federated pattern of `spec` when it runs as a federation: more than one replica of a
/// pattern whose replicas federate. None otherwise (one replica, none, or a pattern the CRD
/// refuses more than one replica of).
pub fn federation_of(spec: &ZmqProxySpec) -> Option<&'static str> {
    if spec.replicas < 2 {
        return None;
    }
    federated_pattern(spec.sockets.frontend.socket_type, spec.sockets.backend.socket_type)
}

/// Name of the federation's headless Service and of its Secret.
pub fn federation_name(name: &str) -> String {
    format!("{name}{FEDERATION_SUFFIX}")
}

/// The flags of a federated replica: it accepts links on the federation port and dials every
/// address of the headless Service (the proxy skips its own), with the key mounted from the
/// Secret. `--federation-id` is left to [`FEDERATION_ID_ENV`].
pub fn federation_args(zp: &ZmqProxy) -> Vec<String> {
    let spec = &zp.spec;
    if federation_of(spec).is_none() {
        return Vec::new();
    }
    let port = spec.federation_port;
    let host =
        format!("{}.{}.svc", federation_name(&zp.name_any()), zp.namespace().unwrap_or_default());
    vec![
        "--federation-bind".to_string(),
        format!("tcp://*:{port}"),
        "--federation-peers".to_string(),
        format!("tcp://{host}:{port}"),
        "--federation-curve-key-file".to_string(),
        format!("{FEDERATION_MOUNT}/{SECRET_KEY_ENTRY}"),
    ]
}

/// The Secret's volume, its mount and the id variable of a federated pod (all empty otherwise).
/// The id is the pod's own name from the downward API rather than `$HOSTNAME`: the kubelet cuts
/// a hostname to 63 characters, which a long object's pod names exceed, and two replicas' ids
/// would then collide.
pub fn federation_pod_parts(zp: &ZmqProxy) -> (Vec<Volume>, Vec<VolumeMount>, Vec<EnvVar>) {
    if federation_of(&zp.spec).is_none() {
        return (Vec::new(), Vec::new(), Vec::new());
    }
    let volume = Volume {
        name: FEDERATION_VOLUME.to_string(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(federation_name(&zp.name_any())),
            items: Some(vec![KeyToPath {
                key: SECRET_KEY_ENTRY.to_string(),
                path: SECRET_KEY_ENTRY.to_string(),
                mode: None,
            }]),
            default_mode: Some(KEY_FILE_MODE),
            optional: None,
        }),
        ..Volume::default()
    };
    let mount = VolumeMount {
        name: FEDERATION_VOLUME.to_string(),
        mount_path: FEDERATION_MOUNT.to_string(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    let id = EnvVar {
        name: FEDERATION_ID_ENV.to_string(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: "metadata.name".to_string(),
            }),
            ..EnvVarSource::default()
        }),
    };
    (vec![volume], vec![mount], vec![id])
}

/// The headless Service `<name>-federation` of a federated object: its name resolves to every
/// replica's address, ready or not (`publishNotReadyAddresses`), so a starting replica links
/// before it turns ready and a draining one stays reachable while its links empty.
pub(super) fn federation_service(zp: &ZmqProxy, meta: &ChildMeta) -> Option<Service> {
    federation_of(&zp.spec)?;
    let name = zp.name_any();
    Some(Service {
        metadata: meta.named(federation_name(&name), None),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            selector: Some(selector_labels(&name)),
            ports: Some(vec![ServicePort {
                name: Some(FEDERATION_PORT_NAME.to_string()),
                port: zp.spec.federation_port,
                protocol: Some("TCP".to_string()),
                target_port: Some(IntOrString::String(FEDERATION_PORT_NAME.to_string())),
                ..ServicePort::default()
            }]),
            publish_not_ready_addresses: Some(true),
            ip_family_policy: zp.spec.ip_family_policy.map(|p| p.as_str().to_string()),
            ip_families: (!zp.spec.ip_families.is_empty())
                .then(|| zp.spec.ip_families.iter().map(|f| f.as_str().to_string()).collect()),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

/// The Secret `<name>-federation` holding `secret_z85` (and its `public_z85`), owned by `zp`
/// and labelled as every child. Created once, never updated: see `federation_secret.rs`.
pub fn federation_secret(
    zp: &ZmqProxy,
    secret_z85: &str,
    public_z85: &str,
) -> Result<Secret, super::BuildError> {
    let meta = ChildMeta::of(zp)?;
    let data = BTreeMap::from([
        (SECRET_KEY_ENTRY.to_string(), ByteString(format!("{secret_z85}\n").into_bytes())),
        (PUBLIC_KEY_ENTRY.to_string(), ByteString(format!("{public_z85}\n").into_bytes())),
    ]);
    Ok(Secret {
        metadata: meta.named(federation_name(&zp.name_any()), None),
        data: Some(data),
        type_: Some("Opaque".to_string()),
        immutable: Some(true),
        ..Secret::default()
    })
}
