//! The CURVE key files of each secured socket: the volumes, their mounts and the flags that
//! pass the mounted paths to the proxy.

use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, KeyToPath, SecretVolumeSource, Volume, VolumeMount,
};

use crate::crd::ZmqProxySpec;

/// Where a socket's CURVE Secrets and ConfigMaps are mounted: `<root>/<socket>/server-key`,
/// `<root>/<socket>/authorized-keys`, and for a socket that connects
/// `<root>/<socket>/server-public-key` and `<root>/<socket>/client-key`.
pub const CURVE_MOUNT_ROOT: &str = "/etc/zmq-proxy/curve";
/// File name of the server's secret key inside its mount (whatever the Secret's key is).
pub const SERVER_KEY_FILE: &str = "server_secret";
/// File name of a connecting socket's server public key inside its mount.
pub const SERVER_PUBLIC_KEY_FILE: &str = "server_public";
/// File name of a connecting socket's client secret key inside its mount.
pub const CLIENT_KEY_FILE: &str = "client_secret";
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
            let mount = |name: String, path: String| VolumeMount {
                name,
                mount_path: path,
                read_only: Some(true),
                ..VolumeMount::default()
            };
            let (mut volumes, mut mounts, mut args) = (Vec::new(), Vec::new(), Vec::new());
            // One Secret entry mounted under a fixed file name, passed as `flag`.
            let mut secret_file = |part: &str, secret: &str, key: &str, file: &str, flag: &str| {
                let volume = format!("curve-{socket}-{part}");
                let dir = format!("{CURVE_MOUNT_ROOT}/{socket}/{part}");
                volumes.push(Volume {
                    name: volume.clone(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(secret.to_string()),
                        items: Some(vec![KeyToPath {
                            key: key.to_string(),
                            path: file.to_string(),
                            mode: None,
                        }]),
                        default_mode: Some(KEY_FILE_MODE),
                        optional: None,
                    }),
                    ..Volume::default()
                });
                mounts.push(mount(volume, dir.clone()));
                args.extend([format!("--{socket}-curve-{flag}"), format!("{dir}/{file}")]);
            };
            if let Some(key) = &curve.server_key {
                secret_file(
                    "server-key",
                    &key.secret_name,
                    &key.key,
                    SERVER_KEY_FILE,
                    "server-key-file",
                );
            }
            if let Some(key) = &curve.server_public_key_ref {
                let flag = "server-public-key-file";
                secret_file(
                    "server-public-key",
                    &key.secret_name,
                    &key.key,
                    SERVER_PUBLIC_KEY_FILE,
                    flag,
                );
            }
            if let Some(key) = &curve.client_key {
                secret_file(
                    "client-key",
                    &key.secret_name,
                    &key.key,
                    CLIENT_KEY_FILE,
                    "client-key-file",
                );
            }
            // A public key is not a secret: passed as it is written in the spec.
            if let Some(z85) = &curve.server_public_key {
                args.extend([format!("--{socket}-curve-server-public-key"), z85.clone()]);
            }
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
