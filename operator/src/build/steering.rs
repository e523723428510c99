//! The steering ConfigMap `<name>-steering`: it carries `spec.paused` to every pod, which
//! mounts it as a directory the proxy's `--pause-file` reads.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, ConfigMapVolumeSource, Volume};
use kube::ResourceExt;

use crate::crd::ZmqProxy;

use super::meta::ChildMeta;

/// Suffix of the ConfigMap that carries `spec.paused` to the pods (`<name>-steering`).
pub const STEERING_SUFFIX: &str = "-steering";
/// Key of that ConfigMap (and file name in its mount) holding "true" or "false".
pub const PAUSED_KEY: &str = "paused";
/// Where the steering ConfigMap is mounted: a whole directory, no subPath, so the kubelet
/// updates the file in place and the proxy's `--pause-file` sees each change.
pub const STEERING_MOUNT: &str = "/etc/zmq-proxy/steering";
/// Name of the steering volume in the pod.
pub const STEERING_VOLUME: &str = "steering";

/// The steering ConfigMap of `zp`. Only the ConfigMap carries `paused`: the pod template never
/// changes with it (no restart).
pub(super) fn steering(zp: &ZmqProxy, meta: &ChildMeta) -> ConfigMap {
    ConfigMap {
        metadata: meta.named(steering_name(&zp.name_any()), None),
        data: Some(BTreeMap::from([(PAUSED_KEY.to_string(), zp.spec.paused.to_string())])),
        ..ConfigMap::default()
    }
}

/// Name of the steering ConfigMap of a `ZmqProxy`.
pub fn steering_name(name: &str) -> String {
    format!("{name}{STEERING_SUFFIX}")
}

/// The steering volume: the whole ConfigMap, optional. The operator makes the ConfigMap only
/// once the object is paused; until then the directory is empty and the proxy, without a pause
/// file, forwards. The kubelet fills the directory once the ConfigMap exists (at once when the
/// operator nudges the pod), so a later pause needs no restart.
pub(super) fn steering_volume(name: &str) -> Volume {
    Volume {
        name: STEERING_VOLUME.to_string(),
        config_map: Some(ConfigMapVolumeSource {
            name: steering_name(name),
            optional: Some(true),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }
}
