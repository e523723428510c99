//! The Secret `<name>-federation`: the CURVE keypair every replica of a federation shares, so
//! only the replicas can link (docs/federation.md, Security).
//!
//! It is generated once, by the operator, when an object first runs as a federation, and never
//! rewritten: a new key on every reconcile would split a running federation (a replica with the
//! old key and one with the new cannot link). The Secret is immutable, owned by the object (the
//! garbage collector removes it with the object) and kept while the object runs one replica, so
//! scaling up again reuses the key.
//!
//! The operator reads no Secret it did not create, and no Secret's data at all: it asks for the
//! metadata of this one name only (no list, no watch), to see whether it exists and whom it
//! belongs to. A Secret of that name that this object does not control (someone else's, or one
//! made to plant a known key) is refused: the reconcile fails with ChildNotOwned, a Warning
//! event and a Degraded condition, and the Deployment is not written until the name is freed.
//! The key goes into the Secret and nowhere else: never a log line, an event, the status or an
//! argument (the pods read it from the mounted file).

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};
use tracing::info;
use zeroize::Zeroizing;

use crate::build::{federation_name, federation_of, federation_secret};
use crate::children::{Action, Change, controlled_by};
use crate::context::{Context, Error, key};
use crate::crd::ZmqProxy;

const KIND: &str = "Secret";

/// A fresh CURVE keypair as Z85 text: (secret, public). The secret text is wiped when dropped.
pub fn generate_keypair() -> (Zeroizing<String>, String) {
    let secret = crypto_box::SecretKey::generate(&mut crypto_box::aead::OsRng);
    let public = secret.public_key();
    let bytes = Zeroizing::new(secret.to_bytes());
    (Zeroizing::new(z85::encode(&bytes[..])), z85::encode(public.as_bytes()))
}

/// Makes sure a federated `zp` has its Secret: nothing when it is not a federation or the
/// Secret exists and is its own; created when missing; ChildNotOwned when the name is taken.
pub async fn ensure(
    zp: &ZmqProxy,
    ctx: &Context,
    namespace: &str,
    changes: &mut Vec<Change>,
) -> Result<(), Error> {
    if federation_of(&zp.spec).is_none() {
        return Ok(());
    }
    let name = federation_name(&zp.name_any());
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    ctx.metrics.requested(KIND, "get");
    let existing = api.get_metadata_opt(&name).await.map_err(|source| Error::Get {
        kind: KIND.to_string(),
        name: name.clone(),
        source,
    })?;
    if let Some(found) = existing {
        if controlled_by(&found, zp) {
            return Ok(());
        }
        return Err(Error::ChildNotOwned { kind: KIND.to_string(), name });
    }
    let (secret_key, public_key) = generate_keypair();
    let secret = federation_secret(zp, &secret_key, &public_key)?;
    ctx.metrics.requested(KIND, "create");
    // A create, not an apply: should a Secret of that name appear between the read and here, the
    // create fails (409) instead of taking it over, and the next reconcile refuses it.
    let created = api
        .create(&PostParams::default(), &secret)
        .await
        .map_err(|source| Error::Apply { kind: KIND.to_string(), name: name.clone(), source })?;
    info!(object = %key(zp), kind = KIND, %name, change = "Created", "created the federation's key");
    ctx.metrics.wrote(KIND, Action::Created.as_str());
    let reference = Some(created.object_ref(&()));
    changes.push(Change { kind: KIND.to_string(), action: Action::Created, name, reference });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keypair_is_two_z85_keys_and_the_secret_derives_the_public() {
        let (secret, public) = generate_keypair();
        assert_eq!((secret.len(), public.len()), (40, 40));
        let bytes = z85::decode(secret.as_str()).expect("z85");
        let array: [u8; 32] = bytes.try_into().expect("32 bytes");
        let derived = crypto_box::SecretKey::from(array).public_key();
        assert_eq!(z85::encode(derived.as_bytes()), public);
        let (other, _) = generate_keypair();
        assert_ne!(*secret, *other, "each call draws a new key");
    }
}
