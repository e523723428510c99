//! Applying and deleting one child, and the [`Change`]s a reconcile reports as events. Every
//! child goes through here, the PodMonitor included.
//!
//! A child is read from the controller's own watches ([`crate::watches`]) when the cache can
//! answer; the API server is asked only when it cannot (not listed yet, no such child, or a child
//! that looks out of date, which is read again before it is written, since the cache may be a
//! moment behind). A child is written with server-side apply only when it is missing or differs
//! from what the operator wants ([`crate::diff`]), so a resync of an unchanged object makes no
//! request at all. A child whose name nobody holds ([`crate::names`]) is created without a read.

use std::fmt::Debug;
use std::hash::Hash;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;
use kube::runtime::events::EventType;
use kube::runtime::reflector::Store;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{debug, info};

use crate::context::{Context, Error, MANAGER, key};
use crate::crd::ZmqProxy;
use crate::diff;
use crate::names::{self, Names};
use crate::watches::{self, Cached};

/// One kind of child in one namespace: where to write it and the cache to read it from.
pub struct Child<'a, K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Clone + Eq + Hash,
{
    api: Api<K>,
    dyntype: K::DynamicType,
    cache: Option<Store<K>>,
    /// Every name taken among objects of this kind ([`crate::names`]), when watched.
    names: Option<names::Lookup>,
    namespace: &'a str,
}

impl<'a, K> Child<'a, K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + 'static,
{
    /// The children of kind `K` in `namespace`, read from `cache` when there is one.
    pub fn new(ctx: &Context, namespace: &'a str, cache: Option<Store<K>>) -> Self {
        Child {
            api: Api::namespaced(ctx.client.clone(), namespace),
            dyntype: (),
            cache,
            names: None,
            namespace,
        }
    }

    /// These children, created without a read when `names` shows their name free.
    pub fn with_names(mut self, names: Option<Names<K>>) -> Self
    where
        K: Send + Sync,
    {
        self.names = names.map(names::lookup);
        self
    }
}

impl<'a> Child<'a, DynamicObject> {
    /// The children of a kind the operator knows only from API discovery (`resource`), in
    /// `namespace`; no cache, so every read asks the API server.
    pub fn dynamic(ctx: &Context, namespace: &'a str, resource: &ApiResource) -> Self {
        Child {
            api: Api::namespaced_with(ctx.client.clone(), namespace, resource),
            dyntype: resource.clone(),
            cache: None,
            names: None,
            namespace,
        }
    }
}

impl<K> Child<'_, K>
where
    K: Resource + Clone + Debug + DeserializeOwned + 'static,
    K::DynamicType: Clone + Eq + Hash,
{
    fn kind(&self) -> String {
        K::kind(&self.dyntype).to_string()
    }

    /// The cache's answer for `name` (Unknown without a cache).
    pub fn cached(&self, name: &str) -> Cached<K> {
        match &self.cache {
            Some(store) => watches::lookup(store, self.namespace, name, &self.dyntype),
            None => Cached::Unknown,
        }
    }

    /// The name is free by every cache: no object of this kind holds it, the operator's or not.
    fn free(&self, name: &str) -> bool {
        matches!(self.cached(name), Cached::NotOwned)
            && self.names.as_ref().and_then(|taken| taken(self.namespace, name)) == Some(false)
    }

    /// `name` as the API server holds it now.
    pub async fn get(&self, name: &str, ctx: &Context) -> Result<Option<K>, Error> {
        let kind = self.kind();
        ctx.metrics.requested(&kind, "get");
        self.api.get_opt(name).await.map_err(|source| Error::Get {
            kind,
            name: name.to_string(),
            source,
        })
    }
}

/// What a reconcile did to a child: the reason of its event and the metric's `action` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Created,
    Updated,
    Deleted,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "Created",
            Action::Updated => "Updated",
            Action::Deleted => "Deleted",
        }
    }
}

/// A write made by a reconcile, reported in an event once the reconcile is done.
#[derive(Clone, Debug)]
pub struct Change {
    pub kind: String,
    pub action: Action,
    pub name: String,
    /// The child, named as the event's related object when it is the only one of its event.
    pub reference: Option<ObjectReference>,
}

/// Whether `zp` is the controller of `child`.
pub fn controlled_by(child: &impl Resource, zp: &ZmqProxy) -> bool {
    let uid = zp.meta().uid.as_deref();
    child
        .meta()
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
}

/// Reads the child and applies `desired_object` only when the child is missing or differs;
/// returns the child as the API server holds it afterwards.
pub async fn apply<K>(
    child: &Child<'_, K>,
    desired_object: &K,
    zp: &ZmqProxy,
    ctx: &Context,
    changes: &mut Vec<Change>,
) -> Result<K, Error>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned + 'static,
    K::DynamicType: Clone + Eq + Hash,
{
    let kind = child.kind();
    let name = desired_object.meta().name.clone().unwrap_or_default();
    if let Some(current) = cached_up_to_date(child, desired_object, zp)? {
        debug!(object = %key(zp), %kind, %name, "child up to date (cache)");
        return Ok((*current).clone());
    }
    let desired = diff::stamp(serde_json::to_value(desired_object)?);
    if let Some(created) = create_free(child, &desired, zp, ctx, changes).await? {
        return Ok(created);
    }
    // Not cached, or cached but different: the cache may be a moment behind, so decide on what
    // the API server holds.
    let observed = child.get(&name, ctx).await?;
    apply_observed(child, desired_object, observed, zp, ctx, changes).await
}

/// Applies `desired_object` over `observed`, the child as just read from the API server (None:
/// there is none), unless it is already as wanted; refuses a child this object does not control.
pub async fn apply_observed<K>(
    child: &Child<'_, K>,
    desired_object: &K,
    observed: Option<K>,
    zp: &ZmqProxy,
    ctx: &Context,
    changes: &mut Vec<Change>,
) -> Result<K, Error>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned + 'static,
    K::DynamicType: Clone + Eq + Hash,
{
    let kind = child.kind();
    let name = desired_object.meta().name.clone().unwrap_or_default();
    let desired = diff::stamp(serde_json::to_value(desired_object)?);
    let up_to_date = |current: &K| -> Result<bool, Error> {
        Ok(controlled_by(current, zp)
            && !diff::needs_apply(&desired, &serde_json::to_value(current)?))
    };
    let action = match &observed {
        None => Action::Created,
        Some(current) => {
            if !controlled_by(current, zp) {
                return Err(Error::ChildNotOwned { kind, name });
            }
            if up_to_date(current)? {
                debug!(object = %key(zp), %kind, %name, "child up to date");
                return Ok(current.clone());
            }
            Action::Updated
        }
    };
    ctx.metrics.requested(&kind, "apply");
    let applied = child
        .api
        .patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&desired))
        .await
        .map_err(|source| Error::Apply { kind: kind.clone(), name: name.clone(), source })?;
    info!(object = %key(zp), %kind, %name, change = action.as_str(), "applied child");
    ctx.metrics.wrote(&kind, action.as_str());
    let reference = Some(applied.object_ref(&child.dyntype));
    changes.push(Change { kind, action, name, reference });
    Ok(applied)
}

/// Creates the child without reading it first when every cache says its name is free, with a
/// server-side apply without force: an object of someone else that took the name in between
/// keeps every value it set (each field the operator also sets is a conflict, and a conflict
/// refuses the whole apply). None when the name is not known to be free, or on such a conflict:
/// the caller reads the child and decides on what the API server holds.
async fn create_free<K>(
    child: &Child<'_, K>,
    desired: &serde_json::Value,
    zp: &ZmqProxy,
    ctx: &Context,
    changes: &mut Vec<Change>,
) -> Result<Option<K>, Error>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned + 'static,
    K::DynamicType: Clone + Eq + Hash,
{
    let name = desired["metadata"]["name"].as_str().unwrap_or_default().to_string();
    if !child.free(&name) {
        return Ok(None);
    }
    let kind = child.kind();
    ctx.metrics.requested(&kind, "apply");
    let created =
        match child.api.patch(&name, &PatchParams::apply(MANAGER), &Patch::Apply(desired)).await {
            Ok(created) => created,
            Err(kube::Error::Api(status)) if status.code == 409 => {
                debug!(object = %key(zp), %kind, %name, "name taken meanwhile; reading it");
                return Ok(None);
            }
            Err(source) => return Err(Error::Apply { kind, name, source }),
        };
    let action = Action::Created;
    info!(object = %key(zp), %kind, %name, change = action.as_str(), "applied child");
    ctx.metrics.wrote(&kind, action.as_str());
    let reference = Some(created.object_ref(&child.dyntype));
    changes.push(Change { kind, action, name, reference });
    Ok(Some(created))
}

/// The cached child that `desired_object` names, when this `ZmqProxy` controls it and it needs
/// no write ([`apply`] would leave it as it is, without a request).
pub fn cached_up_to_date<K>(
    child: &Child<'_, K>,
    desired_object: &K,
    zp: &ZmqProxy,
) -> Result<Option<std::sync::Arc<K>>, Error>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned + 'static,
    K::DynamicType: Clone + Eq + Hash,
{
    let name = desired_object.meta().name.clone().unwrap_or_default();
    let Cached::Found(current) = child.cached(&name) else {
        return Ok(None);
    };
    let desired = diff::stamp(serde_json::to_value(desired_object)?);
    let fresh = controlled_by(&*current, zp)
        && !diff::needs_apply(&desired, &serde_json::to_value(&*current)?);
    Ok(fresh.then_some(current))
}

/// The child `name` if it exists and this `ZmqProxy` controls it (from the cache when it can
/// tell).
pub async fn owned<K>(
    child: &Child<'_, K>,
    name: &str,
    zp: &ZmqProxy,
    ctx: &Context,
) -> Result<Option<K>, Error>
where
    K: Resource + Clone + Debug + DeserializeOwned + 'static,
    K::DynamicType: Clone + Eq + Hash,
{
    let current = match child.cached(name) {
        // A complete cache of the operator's children without it: nothing of ours.
        Cached::NotOwned => return Ok(None),
        Cached::Found(current) => Some((*current).clone()),
        Cached::Unknown => child.get(name, ctx).await?,
    };
    Ok(current.filter(|c| controlled_by(c, zp)))
}

/// Deletes the child `name` if it exists and this `ZmqProxy` controls it.
pub async fn delete_owned<K>(
    child: &Child<'_, K>,
    name: &str,
    zp: &ZmqProxy,
    ctx: &Context,
    changes: &mut Vec<Change>,
) -> Result<(), Error>
where
    K: Resource + Clone + Debug + DeserializeOwned + 'static,
    K::DynamicType: Clone + Eq + Hash,
{
    if owned(child, name, zp, ctx).await?.is_none() {
        return Ok(());
    }
    delete(child, name, zp, ctx, changes).await
}

/// Deletes the child `name` (background propagation), which the caller found controlled by
/// this `ZmqProxy`.
pub async fn delete<K>(
    child: &Child<'_, K>,
    name: &str,
    zp: &ZmqProxy,
    ctx: &Context,
    changes: &mut Vec<Change>,
) -> Result<(), Error>
where
    K: Resource + Clone + Debug + DeserializeOwned + 'static,
    K::DynamicType: Clone + Eq + Hash,
{
    let kind = child.kind();
    ctx.metrics.requested(&kind, "delete");
    match child.api.delete(name, &DeleteParams::background()).await {
        Ok(_) => {}
        // Already gone (the cache was a moment behind).
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
        Err(source) => {
            return Err(Error::Delete { kind, name: name.to_string(), source });
        }
    }
    info!(object = %key(zp), %kind, %name, "deleted child");
    ctx.metrics.wrote(&kind, Action::Deleted.as_str());
    changes.push(Change { kind, action: Action::Deleted, name: name.to_string(), reference: None });
    Ok(())
}

/// One Normal event per kind of change a reconcile made ("Created StatefulSet tasks, Service
/// tasks"), naming the child as the event's related object when there is only one.
pub async fn publish_changes(ctx: &Context, zp: &ZmqProxy, changes: Vec<Change>) {
    // In order of first appearance: a migration deletes the Deployment between two creations.
    let mut actions: Vec<Action> = Vec::new();
    for change in &changes {
        if !actions.contains(&change.action) {
            actions.push(change.action);
        }
    }
    for action in actions {
        let group: Vec<&Change> = changes.iter().filter(|c| c.action == action).collect();
        let children: Vec<String> =
            group.iter().map(|c| format!("{} {}", c.kind, c.name)).collect();
        let note = format!("{} {}", action.as_str(), children.join(", "));
        let secondary = match group.as_slice() {
            [only] => only.reference.clone(),
            _ => None,
        };
        ctx.publish(zp, EventType::Normal, action.as_str(), note, secondary).await;
    }
}
