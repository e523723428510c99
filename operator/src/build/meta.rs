//! What every child shares: the build options and error, the labels, the controller owner
//! reference and the metadata that places a child beside its `ZmqProxy`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::{ImagePullPolicy, MANAGED_BY, ZmqProxy, selector_labels};

/// What the operator adds to every proxy: its default image and pull policy, each used where
/// the object does not set its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildOptions {
    pub default_image: String,
    pub default_pull_policy: Option<ImagePullPolicy>,
    /// Whether objects that do not set `spec.monitoring.podMonitor` get a PodMonitor.
    pub pod_monitor_default: bool,
}

/// Why a `ZmqProxy` cannot be built; each names the field to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("object has no {0}")]
    MissingObjectKey(&'static str),
    #[error("{0}")]
    InvalidSpec(String),
}

/// Labels of every child: the selector labels plus the managed-by marker.
pub fn child_labels(name: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(name);
    labels.insert(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string());
    labels
}

/// The controller owner reference every child carries.
pub fn owner_reference(zp: &ZmqProxy) -> Result<OwnerReference, BuildError> {
    if zp.meta().uid.is_none() {
        return Err(BuildError::MissingObjectKey("metadata.uid"));
    }
    let owner =
        zp.controller_owner_ref(&()).ok_or(BuildError::MissingObjectKey("metadata.name"))?;
    // As controller-runtime's SetControllerReference: a foreground deletion of the ZmqProxy
    // waits for its children.
    Ok(OwnerReference { block_owner_deletion: Some(true), ..owner })
}

/// The metadata every child of one `ZmqProxy` starts from: its namespace, the children's labels
/// and the controller owner reference.
pub(super) struct ChildMeta {
    namespace: String,
    owner: OwnerReference,
    labels: BTreeMap<String, String>,
}

impl ChildMeta {
    /// Fails on an object without a uid, name or namespace (in that order).
    pub(super) fn of(zp: &ZmqProxy) -> Result<ChildMeta, BuildError> {
        let owner = owner_reference(zp)?;
        let namespace = zp.namespace().ok_or(BuildError::MissingObjectKey("metadata.namespace"))?;
        Ok(ChildMeta { namespace, owner, labels: child_labels(&zp.name_any()) })
    }

    /// The namespace of every child.
    pub(super) fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The metadata of the child `name`.
    pub(super) fn named(
        &self,
        name: String,
        annotations: Option<BTreeMap<String, String>>,
    ) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels.clone()),
            annotations,
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }
}
