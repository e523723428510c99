//! What earlier versions of the operator left behind: they ran each proxy as a StatefulSet
//! `<name>` with a headless Service `<name>-pods`. The Deployment is applied beside them (the
//! Service `<name>` selects both sets of pods, so peers are served throughout), and only once
//! the Deployment is available, every wanted pod of the current template ready, is the
//! StatefulSet deleted (background propagation: its pods drain within their grace period while
//! the Deployment's serve). The headless Service goes once no StatefulSet is left.
//!
//! The decision is [`next_step`], pure; [`migrate`] reads and deletes.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Service;
use kube::runtime::reflector::Store;

use crate::build::headless_name;
use crate::children::{self, Change, Child};
use crate::context::{Context, Error};
use crate::crd::ZmqProxy;

/// What the migration does next for one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// No StatefulSet of this object: delete the old headless Service if it is ours.
    Done,
    /// The StatefulSet serves until the Deployment is available, or is being deleted.
    Wait,
    /// The Deployment serves: delete the StatefulSet.
    DeleteStatefulSet,
}

/// The next step, given this object's StatefulSet (if it controls one) and its Deployment as
/// the API server holds it.
pub fn next_step(stateful_set: Option<&StatefulSet>, deployment: &Deployment, want: i32) -> Step {
    match stateful_set {
        None => Step::Done,
        Some(s) if s.metadata.deletion_timestamp.is_some() => Step::Wait,
        Some(_) if available(deployment, want) => Step::DeleteStatefulSet,
        Some(_) => Step::Wait,
    }
}

/// The Deployment controller has seen the latest spec, and `want` pods of its template are
/// ready (available: the Deployment sets no minReadySeconds) and no more old ones remain.
pub fn available(deployment: &Deployment, want: i32) -> bool {
    let Some(status) = &deployment.status else {
        return false;
    };
    let generation = deployment.metadata.generation.unwrap_or(0);
    status.observed_generation.unwrap_or(0) >= generation
        && status.updated_replicas.unwrap_or(0) >= want
        && status.available_replicas.unwrap_or(0) >= want
}

/// Takes the step for `zp`, whose Deployment is `deployment`. Returns whether the migration is
/// still under way (the StatefulSet still exists), so the status can say so.
pub async fn migrate(
    ctx: &Context,
    namespace: &str,
    cache: Option<Store<StatefulSet>>,
    services: &Child<'_, Service>,
    zp: &ZmqProxy,
    deployment: &Deployment,
    changes: &mut Vec<Change>,
) -> Result<bool, Error> {
    let name = kube::ResourceExt::name_any(zp);
    let stateful_sets = Child::<StatefulSet>::new(ctx, namespace, cache);
    let current = children::owned(&stateful_sets, &name, zp, ctx).await?;
    match next_step(current.as_ref(), deployment, zp.spec.replicas) {
        Step::Done => {
            children::delete_owned(services, &headless_name(&name), zp, ctx, changes).await?;
            Ok(false)
        }
        Step::Wait => Ok(true),
        Step::DeleteStatefulSet => {
            children::delete(&stateful_sets, &name, zp, ctx, changes).await?;
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn deployment(generation: i64, status: Option<DeploymentStatus>) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.generation = Some(generation);
        d.status = status;
        d
    }

    fn serving(observed: i64, updated: i32, available: i32) -> Option<DeploymentStatus> {
        Some(DeploymentStatus {
            observed_generation: Some(observed),
            updated_replicas: Some(updated),
            available_replicas: Some(available),
            ready_replicas: Some(available),
            replicas: Some(updated),
            ..DeploymentStatus::default()
        })
    }

    #[test]
    fn the_stateful_set_goes_only_once_the_deployment_serves() {
        let sts = StatefulSet::default();
        let want = 3;
        // Just created: no status yet.
        assert_eq!(next_step(Some(&sts), &deployment(1, None), want), Step::Wait);
        // Two of three ready.
        assert_eq!(next_step(Some(&sts), &deployment(1, serving(1, 3, 2)), want), Step::Wait);
        // Ready, but counted for an older spec.
        assert_eq!(next_step(Some(&sts), &deployment(2, serving(1, 3, 3)), want), Step::Wait);
        // Ready pods of an older template while the new ones start.
        assert_eq!(next_step(Some(&sts), &deployment(1, serving(1, 1, 3)), want), Step::Wait);
        let ready = deployment(1, serving(1, 3, 3));
        assert_eq!(next_step(Some(&sts), &ready, want), Step::DeleteStatefulSet);
        // Scaled to zero: nothing to wait for.
        assert_eq!(
            next_step(Some(&sts), &deployment(1, serving(1, 0, 0)), 0),
            Step::DeleteStatefulSet
        );
    }

    #[test]
    fn a_stateful_set_being_deleted_is_waited_for_and_none_is_done() {
        let mut sts = StatefulSet::default();
        sts.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let ready = deployment(1, serving(1, 1, 1));
        assert_eq!(next_step(Some(&sts), &ready, 1), Step::Wait);
        assert_eq!(next_step(None, &ready, 1), Step::Done);
        assert_eq!(next_step(None, &deployment(1, None), 1), Step::Done);
    }
}
