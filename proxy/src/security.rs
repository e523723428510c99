//! The security section of a `ZmqProxy` manifest: CurveZMQ per socket, as file paths. The
//! operator mounts Secrets (the server's key, a client key) and a Secret or ConfigMap (the
//! allow-list) read-only into the pod and fills these paths; `zmq-proxy --config` reads the
//! same fields from a local manifest. The types are the CRD's too, so they stay CRD-friendly:
//! camelCase, optional fields, bounded strings, no untagged enums.
//!
//! In a manifest each socket carries its own section, beside `type` and `port`:
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

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
