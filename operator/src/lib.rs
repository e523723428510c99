//! The zmq-proxy operator as a library, so the binaries and the tests share one implementation:
//! [`crd`] defines the `ZmqProxy` resource, [`build`] turns one into its children (pure;
//! [`build::overrides`] merges `spec.podTemplate` into the pod),
//! [`diff`] decides whether a child needs a write, [`status`] computes conditions,
//! [`reconcile`] applies children and status, [`leader`] elects one active replica,
//! [`watches`] feeds the controller and caches the children it reads, [`monitoring`] makes the
//! optional PodMonitor, [`metrics`] and [`http`]
//! expose what the operator does.

pub mod build;
pub mod crd;
pub mod diff;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod monitoring;
pub mod reconcile;
pub mod status;
pub mod watches;
