//! Pure construction of a `ZmqProxy`'s children: `&ZmqProxy` in, StatefulSet, Services,
//! PodDisruptionBudget, steering ConfigMap and PodMonitor out. No client and no clock, so every
//! property is tested from YAML fixtures; the reconciler only applies what this module returns.
//! One file per child kind; the pod template is built by one function, [`pod_template`] (the
//! operator's pod, then `spec.podTemplate` merged over it by [`overrides`]).
//!
//! Why a StatefulSet, for every replica count: each replica is a separate proxy, and libzmq
//! connects only to the first address a hostname resolves to (libzmq#2297), so with more than
//! one replica peers must list every pod. A StatefulSet whose `serviceName` is the headless
//! Service gives each pod a stable DNS name, `<name>-<ordinal>.<name>-pods.<namespace>.svc`,
//! that survives the pod's replacement. Its rollout also keeps the one-replica rule (see
//! [`stateful_set_spec`]).

mod args;
mod connect;
mod curve;
mod meta;
pub mod overrides;
mod pdb;
mod pod;
pub mod pod_monitor;
mod service;
mod stateful_set;
mod steering;
mod validate;

use k8s_openapi::api::apps::v1::StatefulSet;
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
pub use meta::{BuildError, BuildOptions, child_labels, owner_reference};
pub use pdb::{pdb_name, pod_disruption_budget_spec};
pub(crate) use pod::container as proxy_container;
pub use pod::{
    CONTAINER, GRACE_MARGIN_SECONDS, METRICS_PORT_NAME, PROXY_BINARY, READINESS_PROBE, RUN_AS_USER,
    drain_period, pod_template, termination_grace_period,
};
pub use pod_monitor::pod_monitor;
pub use service::{endpoints, endpoints_at, headless_name, replica_host};
pub use stateful_set::stateful_set_spec;
pub use steering::{PAUSED_KEY, STEERING_MOUNT, STEERING_SUFFIX, STEERING_VOLUME, steering_name};
pub use validate::validate;

/// The children of one `ZmqProxy`.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    pub stateful_set: StatefulSet,
    pub service: Service,
    /// The headless Service `<name>-pods`: the StatefulSet's `serviceName`.
    pub headless: Service,
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
    let stateful_set = stateful_set::stateful_set(zp, opts, &meta)?;
    let (service, headless) = service::services(zp, &meta);
    let pdb = pdb::pdb(zp, &meta);
    let steering = steering::steering(zp, &meta);
    let connect_services = connect::connect_services(zp, &meta, meta.namespace());
    Ok(Children { stateful_set, service, headless, connect_services, pdb, steering })
}
