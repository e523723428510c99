//! Pure construction of a `ZmqProxy`'s children: `&ZmqProxy` in, Deployment, Services,
//! PodDisruptionBudget, steering ConfigMap and PodMonitor out. No client and no clock, so every
//! property is tested from YAML fixtures; the reconciler only applies what this module returns.
//! One file per child kind; the pod template is built by one function, [`pod_template`] (the
//! operator's pod, then `spec.podTemplate` merged over it by [`overrides`]).
//!
//! Why a Deployment: peers reach a proxy through its Service only. One replica is one proxy;
//! more than one of a federated pattern link to each other and act as one proxy
//! ([`federation`]), so no pod needs a name of its own, and a rolling update can start the
//! new pod before the old one drains (see [`deployment_spec`]).

mod args;
mod connect;
mod curve;
mod deployment;
mod federation;
mod meta;
pub mod overrides;
mod pdb;
mod pod;
pub mod pod_monitor;
mod service;
mod steering;
mod validate;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::crd::ZmqProxy;

pub use args::{heartbeat_args, proxy_args};
pub use connect::{
    CONNECT_LABEL, Connect, connect_args, connect_service_name, connect_service_names, connects,
};
pub use curve::{
    ALLOW_LIST_FILE, CURVE_MOUNT_ROOT, CurveMounts, KEY_FILE_MODE, SERVER_KEY_FILE, curve_mounts,
};
pub use deployment::deployment_spec;
pub use federation::{
    FEDERATION_ID_ENV, FEDERATION_MOUNT, FEDERATION_PORT_NAME, FEDERATION_VOLUME, PUBLIC_KEY_ENTRY,
    SECRET_KEY_ENTRY, federation_args, federation_name, federation_of, federation_pod_parts,
    federation_secret,
};
pub use meta::{BuildError, BuildOptions, child_labels, owner_reference};
pub use pdb::{pdb_name, pod_disruption_budget_spec};
pub(crate) use pod::container as proxy_container;
pub use pod::{
    CONTAINER, GRACE_MARGIN_SECONDS, METRICS_PORT_NAME, PROXY_BINARY, READINESS_PROBE, RUN_AS_USER,
    drain_period, pod_template, termination_grace_period,
};
pub use pod_monitor::pod_monitor;
pub use service::{endpoints, endpoints_at, headless_name};
pub use steering::{PAUSED_KEY, STEERING_MOUNT, STEERING_SUFFIX, STEERING_VOLUME, steering_name};
pub use validate::validate;

/// The children of one `ZmqProxy`.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    pub deployment: Deployment,
    pub service: Service,
    /// The headless Service `<name>-federation`, only for a federation ([`federation_of`]).
    pub federation: Option<Service>,
    /// The headless Service of each connect entry that chooses pods by label
    /// (`<name>-<socket>-<index>`, see [`connect_service_name`]).
    pub connect_services: Vec<Service>,
    /// The PodDisruptionBudget `<name>`, only with two replicas or more and unless disabled.
    pub pdb: Option<PodDisruptionBudget>,
    /// `<name>-steering`: `paused` = "true"/"false", mounted by every pod ([`STEERING_MOUNT`]).
    pub steering: ConfigMap,
}

/// Builds every child of `zp` but the PodMonitor ([`pod_monitor()`]), which only some clusters
/// can hold.
pub fn children(zp: &ZmqProxy, opts: &BuildOptions) -> Result<Children, BuildError> {
    validate(&zp.spec)?;
    let meta = meta::ChildMeta::of(zp)?;
    let deployment = deployment::deployment(zp, opts, &meta)?;
    let service = service::service(zp, &meta);
    let federation = federation::federation_service(zp, &meta);
    let pdb = pdb::pdb(zp, &meta);
    let steering = steering::steering(zp, &meta);
    let connect_services = connect::connect_services(zp, &meta, meta.namespace());
    Ok(Children { deployment, service, federation, connect_services, pdb, steering })
}
