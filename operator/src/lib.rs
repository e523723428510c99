//! The zmq-proxy operator as a library, so the binaries and the tests share one implementation.
//! [`crd`] defines the `ZmqProxy` resource; [`build`] turns one into its children and
//! [`status`] computes its conditions (both pure: no client); [`reconcile`] is the pipeline,
//! applying each child through [`children`] with the [`context`] every reconcile shares,
//! replacing what older versions left ([`migration`]) and finding the PodMonitor API
//! ([`monitoring`]); [`diff`] decides whether a child needs a write; [`controller`] wires the
//! watches ([`watches`]) to the reconciles; [`leader`] elects one active replica; [`metrics`]
//! and [`http`] expose what the operator does; [`sidecar`] injects a `ZmqProxy` into the pods
//! that ask for it, through a mutating admission webhook.

pub mod build;
pub mod children;
pub mod connect_services;
pub mod connect_status;
pub mod context;
pub mod controller;
pub mod crd;
pub mod diff;
pub mod federation_secret;
pub mod federation_status;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod migration;
pub mod monitoring;
pub mod names;
pub mod proxy_http;
pub mod reconcile;
pub mod sidecar;
pub mod status;
pub mod watches;
pub mod written;
