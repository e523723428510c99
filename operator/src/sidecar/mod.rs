//! The sidecar proxy: a `ZmqProxy` with `spec.mode: Sidecar` is a template the operator's
//! mutating admission webhook injects into the pods of its namespace that ask for it with the
//! label [`SIDECAR_LABEL`] (the value names the `ZmqProxy`).
//!
//! Why a label and not an annotation or a selector in the `ZmqProxy`: the webhook's
//! `objectSelector` matches labels only, so the API server calls the webhook for the pods that
//! asked and for no other. Its `failurePolicy: Fail` then holds only those pods back while the
//! operator is down (a pod that asked for its proxy must not start without it), and every other
//! pod of the cluster is admitted without the webhook. A selector in the `ZmqProxy` would put
//! every pod of the namespace through the webhook (an outage would then block them all, or,
//! with `Ignore`, start the selected pods without their proxy).
//!
//! Modules: [`mutate`] (pure: pod and `ZmqProxy` in, JSONPatch out), [`review`] (pure: an
//! AdmissionReview in, its answer out), [`cert`] (pure: the webhook's CA, serving certificate
//! and TLS configuration), [`ca`] (that CA kept in a Secret and written into the `caBundle`),
//! [`webhook`] (the TLS server and the look-up of the `ZmqProxy`), [`run`] (the flags and the
//! start), [`status`] (the pods that carry a sidecar, in its `ZmqProxy`'s status).

pub mod ca;
pub mod cert;
pub mod mutate;
pub mod review;
pub mod run;
pub mod status;
pub mod webhook;

/// The pod label that asks for a sidecar; its value is the name of a `ZmqProxy` of the pod's
/// namespace whose `spec.mode` is `Sidecar`.
pub const SIDECAR_LABEL: &str = "zmqproxy.io/sidecar";
/// The path the webhook serves.
pub const MUTATE_PATH: &str = "/mutate-pods";
