//! The security sections of a `ZmqProxy`: CurveZMQ per socket, in two forms.
//!
//! - [`CurveSpec`]: file paths, for `zmq-proxy --config` on a laptop (`spec.<socket>.curve`, with
//!   `spec.curveAllowAny`). The operator never writes this form.
//! - [`SocketSecurity`]: Kubernetes references (`spec.<socket>.security`), the CRD's form. The
//!   operator mounts the Secret holding the server's key and the Secret or ConfigMap holding the
//!   allow-list (for a socket that binds), and the Secrets holding the server's public key and
//!   the proxy's client key (for a socket that connects), read-only into the pod and passes
//!   their paths as the `--<socket>-curve-*` flags; it never reads any of them. `zmq-proxy --config` refuses this form: on a laptop nothing mounts
//!   Secrets, and a proxy that silently ran NULL instead would be an open door.
//!
//! The types are the CRD's too, so they stay CRD-friendly: camelCase, optional fields, bounded
//! strings, no untagged enums. The CEL rules of [`SocketSecurity`] are rendered here, next to
//! [`SocketSecurity::validate`], from the same words.
//!
//! In a local manifest each socket carries its own section, beside `type` and `port`:
//!
//! ```yaml
//! spec:
//!   frontend:
//!     type: XSUB
//!     port: 5555
//!     curve:
//!       serverKeyFile: /etc/zmq-proxy/frontend/server_secret   # binds: the CURVE server
//!       authorizedKeys: /etc/zmq-proxy/frontend/clients        # file or zcert directory
//!   curveAllowAny: false    # true: accept any client that knows the server key
//! ```
//!
//! In a `ZmqProxy` applied to a cluster:
//!
//! ```yaml
//! spec:
//!   frontend:
//!     type: XSUB
//!     port: 5555
//!     security:
//!       curve:
//!         serverKey: {secretName: events-curve}             # key defaults to server_secret
//!         authorizedKeys: {configMapName: events-clients}   # or secretName; key optional
//!         # allowAnyClient: true                            # instead of authorizedKeys
//! ```

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::schema_rule::{add_rules, cel_rule};

pub use crate::defaults::{
    DEFAULT_CLIENT_KEY_KEY, DEFAULT_SERVER_KEY_KEY, DEFAULT_SERVER_PUBLIC_KEY_KEY,
    MAX_DATA_KEY_LEN, MAX_OBJECT_NAME_LEN,
};
use crate::error::SocketSpecError;

/// CurveZMQ (RFC 26) for one socket. A socket that binds is the CURVE server
/// (`serverKeyFile`, plus `authorizedKeys` unless `curveAllowAny`); a socket that connects is a
/// CURVE client of `serverPublicKey` (or `serverPublicKeyFile`), with `clientKeyFile` or an
/// ephemeral key of its own.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CurveSpec {
    /// The server's secret key: a file holding the 40-character Z85 secret, or a zcert
    /// secret file (`curve` / `secret-key = "..."`). The public key is derived from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub server_key_file: Option<String>,
    /// The clients allowed to connect: a file with one Z85 public key per line (`#` comments)
    /// or a directory of zcert public files. Re-read when it changes; an empty list refuses
    /// everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub authorized_keys: Option<String>,
    /// For connecting sockets: the server's public key, 40 Z85 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 40, max = 40))]
    pub server_public_key: Option<String>,
    /// For connecting sockets: a file holding the server's public key (Z85 or zcert).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub server_public_key_file: Option<String>,
    /// For connecting sockets: this proxy's client secret key (Z85 or zcert secret file);
    /// without it the proxy makes an ephemeral keypair and logs its public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub client_key_file: Option<String>,
}

impl CurveSpec {
    pub fn is_empty(&self) -> bool {
        self == &CurveSpec::default()
    }
}

/// A DNS-1123 subdomain, as Kubernetes names Secrets and ConfigMaps.
pub const OBJECT_NAME_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A Secret or ConfigMap key: `[-._a-zA-Z0-9]+`, and neither `.`, `..` nor starting with `..`
/// (Kubernetes' IsConfigMapKey), written without look-ahead for RE2.
pub const DATA_KEY_PATTERN: &str = r"^\.?[-_a-zA-Z0-9][-._a-zA-Z0-9]*$";

/// Security of one socket on Kubernetes. Without it the socket speaks NULL (no security).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SocketSecurity {
    /// CurveZMQ (RFC 26): the socket's binds are CURVE servers with the key in `serverKey`,
    /// accepting the clients in `authorizedKeys` (or any client, with `allowAnyClient: true`).
    pub curve: CurveSecurity,
}

/// A CURVE socket's keys. Its binds are CURVE servers (`serverKey`, with exactly one of
/// `authorizedKeys` and `allowAnyClient: true`); its connects are CURVE clients of
/// `serverPublicKey` (or `serverPublicKeyRef`), with the key in `clientKey` or an ephemeral one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = curve_rules)]
pub struct CurveSecurity {
    /// The Secret holding the server's secret key, for a socket that binds: a zcert secret file
    /// (as `zmq-proxy keygen --zcert` writes) or the 40-character Z85 secret. Read at start;
    /// the public key is derived from it. Mounted read-only; the operator never reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_key: Option<SecretKeyRef>,
    /// The Secret or ConfigMap listing the client public keys allowed to connect: with `key`,
    /// that one entry (one Z85 key per line, `#` comments, or a zcert public file); without,
    /// every entry (each a zcert public file or a list of Z85 keys; names starting with `.`
    /// or ending in `_secret` are skipped). Mounted as a directory, so the kubelet's updates
    /// reach the proxy, which re-reads it every second: removed clients are disconnected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorized_keys: Option<AllowListRef>,
    /// Accept any client that knows the server's public key (libzmq's behaviour without a ZAP
    /// handler). An explicit opt-in, instead of `authorizedKeys`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_any_client: bool,
    /// For a socket that connects: the public key (40 Z85 characters) of the CURVE server every
    /// `connect` entry of the socket reaches. Not a secret, so it may stand here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 40, max = 40), regex(pattern = Z85_KEY_PATTERN))]
    pub server_public_key: Option<String>,
    /// For a socket that connects, instead of `serverPublicKey`: the Secret entry holding the
    /// server's public key (Z85 or a zcert public file); `key` defaults to `server`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_public_key_ref: Option<PublicKeyRef>,
    /// For a socket that connects: the Secret entry holding this proxy's client secret key
    /// (Z85 or a zcert secret file; `key` defaults to `client_secret`), which the servers'
    /// allow-lists name. Unset: each proxy makes an ephemeral key at start and logs its public
    /// half, for servers that accept any client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<ClientKeyRef>,
}

/// 40 Z85 characters.
pub const Z85_KEY_PATTERN: &str = r"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$";

/// A Secret entry holding a CURVE server's public key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublicKeyRef {
    /// Name of the Secret, in the ZmqProxy's namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub secret_name: String,
    /// Key of the Secret holding the public key.
    #[serde(default = "default_server_public_key_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DATA_KEY_PATTERN))]
    pub key: String,
}

/// A Secret entry holding this proxy's CURVE client secret key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientKeyRef {
    /// Name of the Secret, in the ZmqProxy's namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub secret_name: String,
    /// Key of the Secret holding the client's secret key.
    #[serde(default = "default_client_key_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DATA_KEY_PATTERN))]
    pub key: String,
}

fn default_server_public_key_key() -> String {
    DEFAULT_SERVER_PUBLIC_KEY_KEY.to_string()
}

fn default_client_key_key() -> String {
    DEFAULT_CLIENT_KEY_KEY.to_string()
}

/// One entry of a Secret: `secretName` and `key`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the ZmqProxy's namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub secret_name: String,
    /// Key of the Secret holding the server's secret key.
    #[serde(default = "default_server_key_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DATA_KEY_PATTERN))]
    pub key: String,
}

fn default_server_key_key() -> String {
    DEFAULT_SERVER_KEY_KEY.to_string()
}

/// A Secret or a ConfigMap (exactly one of `secretName` and `configMapName`), optionally one
/// `key` of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = allow_list_rules)]
pub struct AllowListRef {
    /// Name of a Secret in the ZmqProxy's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub secret_name: Option<String>,
    /// Name of a ConfigMap in the ZmqProxy's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub config_map_name: Option<String>,
    /// Only this key of it (without: every key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DATA_KEY_PATTERN))]
    pub key: Option<String>,
}

/// The words of every refusal of a security section, shared by [`SocketSecurity::validate`]
/// and the CEL rules, so the API server and the operator say the same.
pub mod words {
    pub const ALLOW_LIST_REQUIRED: &str = "authorizedKeys is required: name the Secret or ConfigMap listing the client public keys allowed to connect, or set allowAnyClient: true to accept any client that knows the server key";
    pub const ALLOW_LIST_AND_ANY: &str = "allowAnyClient: true cannot be combined with authorizedKeys: either the listed clients or any client may connect; remove one";
    pub const SOURCE_REQUIRED: &str =
        "secretName or configMapName is required: the Secret or ConfigMap holding the allow-list";
    pub const SOURCE_BOTH: &str = "secretName and configMapName exclude each other: the allow-list comes from one Secret or one ConfigMap";
    pub const CLIENTS_NEED_SERVER_KEY: &str = "authorizedKeys and allowAnyClient need serverKey: they say who may connect to the socket's binds, which are CURVE servers only with a server key";
    pub const PUBLIC_KEY_BOTH: &str = "serverPublicKey and serverPublicKeyRef exclude each other: the server's public key is given once";
    pub const CLIENT_KEY_NEEDS_SERVER: &str = "clientKey needs serverPublicKey or serverPublicKeyRef: a CURVE client must know its server's key";
}

/// The CEL rules on a `curve` section (`self` is the section). Only `has()` and booleans: no
/// string is read, so the API server's cost estimate stays constant.
pub fn curve_cel_rules() -> Vec<Value> {
    let any = "(has(self.allowAnyClient) && self.allowAnyClient)";
    vec![
        cel_rule(
            &format!("!has(self.serverKey) || has(self.authorizedKeys) || {any}"),
            words::ALLOW_LIST_REQUIRED,
            Some(".authorizedKeys"),
            "FieldValueRequired",
        ),
        cel_rule(
            &format!("!(has(self.authorizedKeys) && {any})"),
            words::ALLOW_LIST_AND_ANY,
            Some(".allowAnyClient"),
            "FieldValueForbidden",
        ),
        cel_rule(
            &format!("has(self.serverKey) || !(has(self.authorizedKeys) || {any})"),
            words::CLIENTS_NEED_SERVER_KEY,
            Some(".serverKey"),
            "FieldValueRequired",
        ),
        cel_rule(
            "!(has(self.serverPublicKey) && has(self.serverPublicKeyRef))",
            words::PUBLIC_KEY_BOTH,
            Some(".serverPublicKeyRef"),
            "FieldValueForbidden",
        ),
        cel_rule(
            "!has(self.clientKey) || has(self.serverPublicKey) || has(self.serverPublicKeyRef)",
            words::CLIENT_KEY_NEEDS_SERVER,
            Some(".clientKey"),
            "FieldValueRequired",
        ),
    ]
}

/// The CEL rules on an `authorizedKeys` reference (`self` is the reference).
pub fn allow_list_cel_rules() -> Vec<Value> {
    vec![
        cel_rule(
            "has(self.secretName) || has(self.configMapName)",
            words::SOURCE_REQUIRED,
            None,
            "FieldValueRequired",
        ),
        cel_rule(
            "!(has(self.secretName) && has(self.configMapName))",
            words::SOURCE_BOTH,
            Some(".configMapName"),
            "FieldValueForbidden",
        ),
    ]
}

fn curve_rules(schema: &mut schemars::Schema) {
    add_rules(schema, curve_cel_rules());
}

fn allow_list_rules(schema: &mut schemars::Schema) {
    add_rules(schema, allow_list_cel_rules());
}

/// `name` is a DNS-1123 subdomain of at most [`MAX_OBJECT_NAME_LEN`] characters.
pub fn is_object_name(name: &str) -> bool {
    let label = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    };
    name.len() <= MAX_OBJECT_NAME_LEN && name.split('.').all(label)
}

/// `key` is 40 characters of the Z85 alphabet (see [`Z85_KEY_PATTERN`]).
pub fn is_z85_key(key: &str) -> bool {
    const Z85: &str = ".-:+=^!/*?&<>()[]{}@%$#";
    key.len() == 40 && key.chars().all(|c| c.is_ascii_alphanumeric() || Z85.contains(c))
}

/// `key` is a valid Secret or ConfigMap key (see [`DATA_KEY_PATTERN`]).
pub fn is_data_key(key: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    !key.is_empty()
        && key.len() <= MAX_DATA_KEY_LEN
        && key.chars().all(allowed)
        && key != "."
        && !key.starts_with("..")
}

impl SocketSecurity {
    /// Every rule of the CRD's schema and CEL again, for an object that bypassed them.
    /// `prefix` is where the section sits (`spec.frontend.security`), so errors name the field.
    pub fn validate(&self, prefix: &str) -> Result<(), SocketSpecError> {
        let fail = |field: String, reason: &str| {
            Err(SocketSpecError { field: format!("{prefix}.curve.{field}"), reason: reason.into() })
        };
        let c = &self.curve;
        if let Some(key) = &c.server_key {
            if !is_object_name(&key.secret_name) {
                return fail("serverKey.secretName".into(), "not a DNS-1123 subdomain name");
            }
            if !is_data_key(&key.key) {
                return fail("serverKey.key".into(), "not a valid Secret key");
            }
        }
        match (&c.server_key, &c.authorized_keys, c.allow_any_client) {
            (Some(_), None, false) => {
                return fail("authorizedKeys".into(), words::ALLOW_LIST_REQUIRED);
            }
            (_, Some(_), true) => return fail("allowAnyClient".into(), words::ALLOW_LIST_AND_ANY),
            (None, Some(_), _) | (None, _, true) => {
                return fail("serverKey".into(), words::CLIENTS_NEED_SERVER_KEY);
            }
            _ => {}
        }
        if c.server_public_key.is_some() && c.server_public_key_ref.is_some() {
            return fail("serverPublicKeyRef".into(), words::PUBLIC_KEY_BOTH);
        }
        if c.client_key.is_some()
            && c.server_public_key.is_none()
            && c.server_public_key_ref.is_none()
        {
            return fail("clientKey".into(), words::CLIENT_KEY_NEEDS_SERVER);
        }
        if let Some(z) = &c.server_public_key
            && !is_z85_key(z)
        {
            return fail("serverPublicKey".into(), "not a 40-character Z85 key");
        }
        let refs = [
            (
                "serverPublicKeyRef",
                c.server_public_key_ref.as_ref().map(|r| (&r.secret_name, &r.key)),
            ),
            ("clientKey", c.client_key.as_ref().map(|r| (&r.secret_name, &r.key))),
        ];
        for (field, r) in refs {
            if let Some((name, key)) = r {
                if !is_object_name(name) {
                    return fail(format!("{field}.secretName"), "not a DNS-1123 subdomain name");
                }
                if !is_data_key(key) {
                    return fail(format!("{field}.key"), "not a valid Secret key");
                }
            }
        }
        if let Some(list) = &c.authorized_keys {
            match (&list.secret_name, &list.config_map_name) {
                (None, None) => return fail("authorizedKeys".into(), words::SOURCE_REQUIRED),
                (Some(_), Some(_)) => {
                    return fail("authorizedKeys.configMapName".into(), words::SOURCE_BOTH);
                }
                (Some(name), None) | (None, Some(name)) if !is_object_name(name) => {
                    let field =
                        if list.secret_name.is_some() { "secretName" } else { "configMapName" };
                    return fail(
                        format!("authorizedKeys.{field}"),
                        "not a DNS-1123 subdomain name",
                    );
                }
                _ => {}
            }
            if let Some(key) = &list.key
                && !is_data_key(key)
            {
                return fail("authorizedKeys.key".into(), "not a valid Secret or ConfigMap key");
            }
        }
        Ok(())
    }
}
