//! One AdmissionReview (admission.k8s.io/v1), pure: the request read, the decision made from the
//! `ZmqProxy` the pod names (or its absence), the answer written.
//!
//! The decisions, and why:
//! - no label, or not a CREATE: admitted unchanged (the webhook's selectors make this rare);
//! - the `ZmqProxy` is gone, or is not `mode: Sidecar`: admitted unchanged, with a warning.
//!   Deleting the template stops the injection of new pods; a running pod is never touched
//!   (admission runs on CREATE only);
//! - the `ZmqProxy` could not be read: refused, so its controller retries (as the webhook's
//!   `failurePolicy: Fail` would when the operator is down): a pod that asked for its proxy
//!   does not start without it;
//! - the pod cannot take the sidecar (a container already named like it): refused, naming the
//!   field.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::SIDECAR_LABEL;
use super::mutate::{self, Injection};
use crate::build::BuildOptions;
use crate::crd::ZmqProxy;

/// What the webhook needs of one request.
#[derive(Clone, Debug)]
pub struct Request {
    pub uid: String,
    pub namespace: String,
    pub operation: String,
    pub pod: Pod,
}

impl Request {
    /// The `ZmqProxy` the pod asks for, from its label.
    pub fn proxy_name(&self) -> Option<&str> {
        let labels = self.pod.metadata.labels.as_ref()?;
        labels.get(SIDECAR_LABEL).map(String::as_str).filter(|n| !n.is_empty())
    }

    /// The pod's name for messages (a Deployment's pods have only a generateName here).
    pub fn pod_name(&self) -> String {
        let m = &self.pod.metadata;
        m.name
            .clone()
            .or_else(|| m.generate_name.as_ref().map(|g| format!("{g}*")))
            .unwrap_or_default()
    }
}

/// Reads an AdmissionReview's request.
pub fn parse(body: &[u8]) -> Result<Request, String> {
    let review: Value =
        serde_json::from_slice(body).map_err(|e| format!("not an AdmissionReview: {e}"))?;
    let req = &review["request"];
    let text = |field: &str| req[field].as_str().unwrap_or_default().to_string();
    let uid = text("uid");
    if uid.is_empty() {
        return Err("AdmissionReview without request.uid".to_string());
    }
    let pod: Pod = serde_json::from_value(req["object"].clone())
        .map_err(|e| format!("request.object is not a pod: {e}"))?;
    Ok(Request { uid, namespace: text("namespace"), operation: text("operation"), pod })
}

/// The `ZmqProxy` a pod names, as the webhook found it.
#[derive(Clone, Debug)]
pub enum Lookup {
    Found(Box<ZmqProxy>),
    NotFound,
    Failed(String),
}

/// The answer to one request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub patch: Option<Vec<Value>>,
    /// Why the pod was refused (with `allowed: false`).
    pub message: Option<String>,
    /// Shown to whoever created the pod (`kubectl` prints them).
    pub warnings: Vec<String>,
}

impl Decision {
    fn admit() -> Self {
        Decision { allowed: true, ..Decision::default() }
    }
    fn warn(warning: String) -> Self {
        Decision { allowed: true, warnings: vec![warning], ..Decision::default() }
    }
    fn refuse(message: String) -> Self {
        Decision { allowed: false, message: Some(message), ..Decision::default() }
    }
}

/// The decision for `req`, given what the look-up of its `ZmqProxy` found.
pub fn decide(req: &Request, lookup: Lookup, opts: &BuildOptions) -> Decision {
    let Some(name) = req.proxy_name() else { return Decision::admit() };
    if req.operation != "CREATE" {
        return Decision::admit();
    }
    let ns = &req.namespace;
    let zp = match lookup {
        Lookup::Found(zp) => zp,
        Lookup::NotFound => {
            return Decision::warn(format!(
                "{SIDECAR_LABEL}: no ZmqProxy {name} in namespace {ns}: the pod starts without its sidecar"
            ));
        }
        Lookup::Failed(why) => {
            return Decision::refuse(format!(
                "{SIDECAR_LABEL}: cannot read ZmqProxy {name} in namespace {ns} ({why}); the pod is refused rather than started without its sidecar"
            ));
        }
    };
    if let Err(why) = mutate::check_template(&zp) {
        return Decision::warn(format!("{SIDECAR_LABEL}: {why}: the pod starts without a sidecar"));
    }
    match mutate::inject(&req.pod, &zp, opts) {
        Ok(Injection::AlreadyInjected) => Decision::admit(),
        Ok(Injection::Patch(ops)) => Decision { patch: Some(ops), ..Decision::admit() },
        Err(why) => Decision::refuse(format!("sidecar of ZmqProxy {name}: {why}")),
    }
}

/// The AdmissionReview that answers request `uid`.
pub fn answer(uid: &str, d: &Decision) -> Value {
    let mut response = json!({ "uid": uid, "allowed": d.allowed });
    if let Some(ops) = &d.patch {
        let bytes = serde_json::to_vec(ops).unwrap_or_default();
        response["patchType"] = json!("JSONPatch");
        response["patch"] = serde_json::to_value(ByteString(bytes)).unwrap_or_default();
    }
    if let Some(message) = &d.message {
        response["status"] = json!({ "code": 403, "message": message });
    }
    if !d.warnings.is_empty() {
        response["warnings"] = json!(d.warnings);
    }
    json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response })
}
