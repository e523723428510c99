//! What older versions of the operator left behind: they ran each proxy as a Deployment
//! `<name>`. When one controlled by the object exists, the StatefulSet is applied with no
//! replicas, the Deployment is deleted (background propagation) and the StatefulSet gets its
//! replicas only once the Pod watch shows none of the Deployment's pods left: like a Recreate
//! rollout, the old pods drain within their grace period before the new ones start, so a
//! single-replica proxy never runs twice.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::Store;

use crate::children::{self, Change, Child};
use crate::context::{Context, Error};
use crate::crd::ZmqProxy;
use crate::watches::Cached;

/// The Deployment an older operator ran for one `ZmqProxy`, and whether its pods remain.
pub struct Migration<'a> {
    deployments: Child<'a, Deployment>,
    name: String,
    deployment: Option<Deployment>,
    pods_remain: bool,
}

impl<'a> Migration<'a> {
    /// Looks for the Deployment `name` of `zp` and its pods, given the cached pods of `zp`
    /// (`pods`; None while the Pod watch has not listed, when only the Deployment counts).
    pub async fn find(
        ctx: &Context,
        namespace: &'a str,
        cache: Option<Store<Deployment>>,
        pods: Option<&[&Pod]>,
        zp: &ZmqProxy,
        name: &str,
    ) -> Result<Migration<'a>, Error> {
        let deployments = Child::new(ctx, namespace, cache);
        let pods_remain = pods.is_some_and(deployment_pods_remain);
        let deployment = old_deployment(&deployments, name, zp, ctx, pods_remain).await?;
        Ok(Migration { deployments, name: name.to_string(), deployment, pods_remain })
    }

    /// Whether the StatefulSet waits with no replicas: the old proxies have not all terminated
    /// (drain included).
    pub fn holds_stateful_set(&self) -> bool {
        self.deployment.is_some() || self.pods_remain
    }

    /// Deletes the old Deployment, once; a Deployment already being deleted is left to finish.
    pub async fn delete_deployment(
        &self,
        zp: &ZmqProxy,
        ctx: &Context,
        changes: &mut Vec<Change>,
    ) -> Result<(), Error> {
        if self.deployment.as_ref().is_some_and(|d| d.metadata.deletion_timestamp.is_none()) {
            children::delete(&self.deployments, &self.name, zp, ctx, changes).await?;
        }
        Ok(())
    }
}

/// Pods of the Deployment an older operator ran (their controller is one of its ReplicaSets) are
/// still there, terminating or not.
fn deployment_pods_remain(pods: &[&Pod]) -> bool {
    pods.iter().any(|pod| {
        pod.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true) && o.kind == "ReplicaSet")
    })
}

/// The Deployment `name` an older operator ran, if this object controls it. The watch sees only
/// Deployments with the managed-by label, the Pod watch sees their pods by the template's label:
/// while such pods remain and the watch has no Deployment, the server is asked, so a Deployment
/// whose label was taken off is still deleted rather than holding the StatefulSet at zero for
/// good. (Once it is gone that costs a read per reconcile until its pods have terminated.)
async fn old_deployment(
    deployments: &Child<'_, Deployment>,
    name: &str,
    zp: &ZmqProxy,
    ctx: &Context,
    old_pods_remain: bool,
) -> Result<Option<Deployment>, Error> {
    match deployments.cached(name) {
        Cached::NotOwned if old_pods_remain => {
            Ok(deployments.get(name, ctx).await?.filter(|d| children::controlled_by(d, zp)))
        }
        _ => children::owned(deployments, name, zp, ctx).await,
    }
}
