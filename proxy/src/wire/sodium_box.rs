//! CurveZMQ MESSAGE boxes sealed and opened in place: libsodium's
//! `crypto_box_detached_afternm` / `crypto_box_open_detached_afternm` over the frame buffer
//! itself, with the connection's precomputed key.
//!
//! This module holds the workspace's only `unsafe` code: two FFI calls. libsodium-rs's safe
//! wrappers of the same functions return the output in fresh `Vec`s, which cost two
//! allocations, their zeroing and a copy back per frame: about 5% of the proxy's CPU in CURVE
//! pub/sub fan-out, where every publication is sealed once per subscriber. libsodium documents
//! both functions as safe for in-place use (`c == m`; it moves overlapping buffers itself).
//! The cipher is libsodium's; nothing cryptographic is written here.
#![allow(unsafe_code)]

use libsodium_rs::crypto_box::{MACBYTES, NONCEBYTES, PrecomputedKey};

/// Bytes of the Poly1305 tag beside each box.
pub const TAG_BYTES: usize = 16;
const _: () = assert!(TAG_BYTES == MACBYTES && NONCEBYTES == 24);

/// The box failed: for `open`, a forged or corrupted frame; for `seal`, libsodium refusing
/// (it does not for a valid key, but its status is checked rather than assumed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoxError;

/// Encrypts `data` in place and writes its tag.
pub fn seal(
    data: &mut [u8],
    tag: &mut [u8; TAG_BYTES],
    nonce: &[u8; 24],
    key: &PrecomputedKey,
) -> Result<(), BoxError> {
    let key = key_bytes(key)?;
    let ptr = data.as_mut_ptr();
    // SAFETY: every pointer comes from a live Rust reference of the length libsodium reads or
    // writes (`data.len()` bytes of message and ciphertext, 16 of tag, 24 of nonce, 32 of key);
    // `c` and `m` are the same buffer, which libsodium supports; nothing else aliases them.
    let rc = unsafe {
        libsodium_sys::crypto_box_detached_afternm(
            ptr,
            tag.as_mut_ptr(),
            ptr,
            data.len() as u64,
            nonce.as_ptr(),
            key.as_ptr(),
        )
    };
    if rc == 0 { Ok(()) } else { Err(BoxError) }
}

/// Verifies `tag` and decrypts `data` in place. On failure `data` is left as it was (libsodium
/// verifies before it decrypts).
pub fn open(
    data: &mut [u8],
    tag: &[u8; TAG_BYTES],
    nonce: &[u8; 24],
    key: &PrecomputedKey,
) -> Result<(), BoxError> {
    let key = key_bytes(key)?;
    let ptr = data.as_mut_ptr();
    // SAFETY: as in `seal`; `m` and `c` are the same buffer of `data.len()` bytes.
    let rc = unsafe {
        libsodium_sys::crypto_box_open_detached_afternm(
            ptr,
            ptr,
            tag.as_ptr(),
            data.len() as u64,
            nonce.as_ptr(),
            key.as_ptr(),
        )
    };
    if rc == 0 { Ok(()) } else { Err(BoxError) }
}

fn key_bytes(key: &PrecomputedKey) -> Result<&[u8; 32], BoxError> {
    key.as_ref().try_into().map_err(|_| BoxError)
}

#[cfg(test)]
mod tests {
    use super::*;
    use libsodium_rs::crypto_box;

    fn key(seed: u8) -> PrecomputedKey {
        let a = crypto_box::KeyPair::from_seed(&[seed; 32]).expect("keypair");
        let b = crypto_box::KeyPair::from_seed(&[seed ^ 0x5a; 32]).expect("keypair");
        crypto_box::beforenm(&b.public_key, &a.secret_key).expect("beforenm")
    }

    /// In place gives exactly what libsodium-rs's allocating wrappers give, for every length
    /// a frame can start with (0 to 300 bytes).
    #[test]
    fn in_place_matches_the_safe_wrappers() {
        let k = key(7);
        for len in 0..300usize {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
            let nonce = [len as u8; 24];
            let (cipher, mac) = crypto_box::seal_detached_afternm(
                &plain,
                &crypto_box::Nonce::from_bytes_exact(nonce),
                &k,
            )
            .expect("seal");
            let mut buf = plain.clone();
            let mut tag = [0u8; TAG_BYTES];
            seal(&mut buf, &mut tag, &nonce, &k).expect("seal in place");
            assert_eq!(buf, cipher, "ciphertext of {len} bytes");
            assert_eq!(&tag[..], &mac[..], "tag of {len} bytes");
            open(&mut buf, &tag, &nonce, &k).expect("open in place");
            assert_eq!(buf, plain, "round trip of {len} bytes");
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_is_refused_and_the_buffer_kept() {
        let k = key(9);
        let nonce = [3u8; 24];
        let mut sealed = b"flags and a payload".to_vec();
        let mut tag = [0u8; TAG_BYTES];
        seal(&mut sealed, &mut tag, &nonce, &k).expect("seal");
        for bit in 0..(sealed.len() + TAG_BYTES) * 8 {
            let (mut data, mut t) = (sealed.clone(), tag);
            if bit < data.len() * 8 {
                data[bit / 8] ^= 1 << (bit % 8);
            } else {
                let b = bit - data.len() * 8;
                t[b / 8] ^= 1 << (b % 8);
            }
            let before = data.clone();
            assert_eq!(open(&mut data, &t, &nonce, &k), Err(BoxError), "bit {bit}");
            assert_eq!(data, before, "bit {bit}: a refused frame is not decrypted");
        }
        let mut other_nonce = sealed.clone();
        assert_eq!(open(&mut other_nonce, &tag, &[4u8; 24], &k), Err(BoxError));
        assert_eq!(open(&mut sealed.clone(), &tag, &nonce, &key(10)), Err(BoxError));
        open(&mut sealed, &tag, &nonce, &k).expect("the untouched frame opens");
        assert_eq!(sealed, b"flags and a payload");
    }
}
