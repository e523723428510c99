//! Which names are taken by others: a metadata-only watch per kind of child the operator
//! creates (ConfigMaps, Services, Deployments), of every object of that kind in the watched
//! namespaces that the operator's label does not mark (its own are in the labelled caches of
//! [`crate::watches`]). Each cached object keeps only its name, namespace and uid
//! ([`slim_names`]).
//!
//! Why: the labelled caches of [`crate::watches`] cannot tell "no such object" from "an object
//! of someone else by that name", so a missing child used to be read from the API server before
//! it was created. With these caches a child whose name nobody holds is created at once, with a
//! server-side apply without force ([`crate::children::apply`]): should another object of that
//! name appear in between, every field of it that the operator also sets is a conflict, and the
//! apply is refused whole instead of overwriting it.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};

/// The taken names of one kind.
pub type Names<K> = Store<PartialObjectMeta<K>>;

/// The taken names of each kind the operator creates without reading first.
#[derive(Clone)]
pub struct NameCaches {
    pub config_maps: Names<ConfigMap>,
    pub services: Names<Service>,
    pub deployments: Names<Deployment>,
}

/// Whether an object `name` of kind `K` without the operator's label exists in `namespace`;
/// None while the watch has not finished its first list.
pub fn taken<K>(names: &Names<K>, namespace: &str, name: &str) -> Option<bool>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let listed =
        futures::FutureExt::now_or_never(names.wait_until_ready()).is_some_and(|r| r.is_ok());
    listed.then(|| names.get(&ObjectRef::new(name).within(namespace)).is_some())
}

/// Whether a name is taken in a namespace, for one kind: [`taken`] behind a type that does not
/// name the kind's own type (a child of a kind known only from discovery has none).
pub type Lookup = std::sync::Arc<dyn Fn(&str, &str) -> Option<bool> + Send + Sync>;

/// [`taken`] in `names`, as a [`Lookup`].
pub fn lookup<K>(names: Names<K>) -> Lookup
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    std::sync::Arc::new(move |namespace, name| taken(&names, namespace, name))
}

/// Keeps only what [`taken`] looks up by: the name, the namespace and the uid.
pub fn slim_names<K>(object: &mut PartialObjectMeta<K>) {
    let meta = std::mem::take(&mut object.metadata);
    object.metadata = ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        ..ObjectMeta::default()
    };
}
