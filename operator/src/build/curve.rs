//! The CURVE key files of each secured socket: the volumes, their mounts and the flags that
//! pass the mounted paths to the proxy.

use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, KeyToPath, SecretVolumeSource, Volume, VolumeMount,
};

use crate::crd::ZmqProxySpec;

/// Where a socket's CURVE Secrets and ConfigMaps are mounted: `<root>/<socket>/server-key` and
/// `<root>/<socket>/authorized-keys`.
pub const CURVE_MOUNT_ROOT: &str = "/etc/zmq-proxy/curve";
/// File name of the server's secret key inside its mount (whatever the Secret's key is).
pub const SERVER_KEY_FILE: &str = "server_secret";
/// File name of the allow-list inside its mount when `authorizedKeys.key` picks one entry.
pub const ALLOW_LIST_FILE: &str = "authorized_keys";
/// Mode of the mounted key files: read for their owner (root) and group, nothing for others.
/// The pod's fsGroup is the proxy's group ([`super::RUN_AS_USER`]), which the kubelet makes the files'
/// group, so the proxy can read them. 0400 would leave them readable by root only: the kubelet
/// does not chown Secret files to runAsUser.
pub const KEY_FILE_MODE: i32 = 0o440;

/// One socket's CURVE mounts: the Secret with the server's key (a file) and the Secret or
/// ConfigMap with the allow-list (a directory, so the kubelet's updates reach the proxy; a
/// subPath mount would never change).
#[derive(Clone, Debug, PartialEq)]
pub struct CurveMounts {
    pub socket: &'static str,
    pub volumes: Vec<Volume>,
    pub mounts: Vec<VolumeMount>,
    /// The flags that pass the mounted paths to the proxy.
    pub args: Vec<String>,
}

/// The mounts and flags of every CURVE socket of `spec`, in socket order (none without security).
pub fn curve_mounts(spec: &ZmqProxySpec) -> Vec<CurveMounts> {
    spec.sockets
        .named_security()
        .into_iter()
        .filter_map(|(socket, security)| Some((socket, &security?.curve)))
        .map(|(socket, curve)| {
            let server_volume = format!("curve-{socket}-server-key");
            let server_dir = format!("{CURVE_MOUNT_ROOT}/{socket}/server-key");
            let mut volumes = vec![Volume {
                name: server_volume.clone(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(curve.server_key.secret_name.clone()),
                    items: Some(vec![KeyToPath {
                        key: curve.server_key.key.clone(),
                        path: SERVER_KEY_FILE.to_string(),
                        mode: None,
                    }]),
                    default_mode: Some(KEY_FILE_MODE),
                    optional: None,
                }),
                ..Volume::default()
            }];
            let mount = |name: String, path: String| VolumeMount {
                name,
                mount_path: path,
                read_only: Some(true),
                ..VolumeMount::default()
            };
            let mut mounts = vec![mount(server_volume, server_dir.clone())];
            let mut args = vec![
                format!("--{socket}-curve-server-key-file"),
                format!("{server_dir}/{SERVER_KEY_FILE}"),
            ];
            if let Some(list) = &curve.authorized_keys {
                let list_volume = format!("curve-{socket}-authorized-keys");
                let list_dir = format!("{CURVE_MOUNT_ROOT}/{socket}/authorized-keys");
                // One entry under a fixed name: a key starting with `.` or ending in `_secret`
                // would otherwise be skipped by the proxy's directory reader.
                let items = list.key.as_ref().map(|key| {
                    vec![KeyToPath {
                        key: key.clone(),
                        path: ALLOW_LIST_FILE.to_string(),
                        mode: None,
                    }]
                });
                let mut volume = Volume { name: list_volume.clone(), ..Volume::default() };
                match (&list.secret_name, &list.config_map_name) {
                    (Some(secret), _) => {
                        volume.secret = Some(SecretVolumeSource {
                            secret_name: Some(secret.clone()),
                            items,
                            default_mode: Some(KEY_FILE_MODE),
                            optional: None,
                        });
                    }
                    (None, config_map) => {
                        volume.config_map = Some(ConfigMapVolumeSource {
                            name: config_map.clone().unwrap_or_default(),
                            items,
                            default_mode: Some(KEY_FILE_MODE),
                            optional: None,
                        });
                    }
                }
                volumes.push(volume);
                mounts.push(mount(list_volume, list_dir.clone()));
                args.extend([format!("--{socket}-curve-authorized-keys"), list_dir]);
            }
            CurveMounts { socket, volumes, mounts, args }
        })
        .collect()
}
