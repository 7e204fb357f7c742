//! Signatures: ed25519 under ZIP-215 rules (`ed25519-zebra`).
//!
//! **Why ZIP-215.** Every honest core must reach the same verdict on every signature, whether it
//! was checked alone or inside a batch; otherwise one Byzantine signer can split honest cores (one
//! inserts a certificate another rejects forever). ZIP-215 fixes the validation criteria (cofactored
//! equation, non-canonical point encodings accepted, `s` must be canonical), and ed25519-zebra's
//! batch and single verification both implement exactly those criteria. The tests in
//! `tests/unit_zip215.rs` check agreement on the 196 small-order and non-canonical vectors of ZIP-215.
//!
//! Batch verification is derandomised: the batch's random coefficients come from a ChaCha20 stream
//! seeded by a hash of every item in the batch, so the core stays deterministic and an attacker who
//! does not control every item cannot predict the coefficients.

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rayon::prelude::*;

use crate::hash::{Hasher, TAG_BATCH, TAG_KEY};
use crate::types::Digest;

/// An ed25519 verification key, as its 32 encoded bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// Whether the bytes decode to a curve point (ZIP-215 accepts non-canonical encodings).
    pub fn is_valid_point(&self) -> bool {
        ed25519_zebra::VerificationKey::try_from(self.0).is_ok()
    }

    /// Whether this key may sit in a committee: a valid point of large order. Under ZIP-215 a
    /// small-order key verifies `(R small-order, s = 0)` on every message, so anyone could sign
    /// for it; such a key is refused when the committee is built.
    pub fn is_committee_key(&self) -> bool {
        self.is_valid_point()
            && curve25519_dalek::edwards::CompressedEdwardsY(self.0)
                .decompress()
                .is_some_and(|point| !point.is_small_order())
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pk:{}", Digest(self.0).to_hex().get(..8).unwrap_or(""))
    }
}

/// An ed25519 signature, as its 64 encoded bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut head = [0u8; 32];
        head.copy_from_slice(&self.0[..32]);
        write!(f, "sig:{}", &Digest(head).to_hex()[..8])
    }
}

/// A core's signing key.
pub struct KeyPair {
    signing: ed25519_zebra::SigningKey,
    public: PublicKey,
}

impl KeyPair {
    /// The key pair of a 32-byte secret seed.
    pub fn from_secret(secret: [u8; 32]) -> KeyPair {
        let signing = ed25519_zebra::SigningKey::from(secret);
        let public = PublicKey(ed25519_zebra::VerificationKeyBytes::from(&signing).into());
        KeyPair { signing, public }
    }

    /// A deterministic key for tests, simulations and local testbeds: the secret is
    /// `H(SEAL/KEY/v1 ‖ seed ‖ index)`. Never use for a real deployment.
    pub fn deterministic(seed: u64, index: u16) -> KeyPair {
        let secret = Hasher::new(TAG_KEY)
            .update(&seed.to_le_bytes())
            .update(&index.to_le_bytes())
            .finish();
        KeyPair::from_secret(secret.0)
    }

    /// The 32-byte secret (for writing key files).
    pub fn secret(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The verification key.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// Signs `message`. ed25519 signatures are deterministic: the same message gives the same
    /// signature, which makes re-sent votes identical.
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.signing.sign(message).to_bytes())
    }
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPair({:?})", self.public)
    }
}

/// One signature to check.
#[derive(Clone, Copy, Debug)]
pub struct SignatureItem<'a> {
    /// The claimed signer.
    pub public_key: PublicKey,
    /// The signed message.
    pub message: &'a [u8],
    /// The signature.
    pub signature: Signature,
}

/// Verifies one signature under ZIP-215 rules.
pub fn verify_one(item: &SignatureItem<'_>) -> bool {
    let Ok(key) = ed25519_zebra::VerificationKey::try_from(item.public_key.0) else {
        return false;
    };
    let signature = ed25519_zebra::Signature::from_bytes(&item.signature.0);
    key.verify(&signature, item.message).is_ok()
}

/// Verifies a batch in one multi-scalar multiplication. On failure, falls back to checking each
/// item alone; ZIP-215 guarantees the two verdicts agree item by item. Returns one verdict per item.
fn verify_chunk(items: &[SignatureItem<'_>]) -> Vec<bool> {
    if items.len() == 1 {
        return vec![verify_one(&items[0])];
    }
    let mut seed = Hasher::new(TAG_BATCH);
    let mut batch = ed25519_zebra::batch::Verifier::new();
    for item in items {
        seed.update(&item.public_key.0)
            .update(&item.signature.0)
            .update(&(item.message.len() as u64).to_le_bytes())
            .update(item.message);
        let signature = ed25519_zebra::Signature::from_bytes(&item.signature.0);
        let key = ed25519_zebra::VerificationKeyBytes::from(item.public_key.0);
        batch.queue((key, signature, item.message));
    }
    let rng = ChaCha20Rng::from_seed(seed.finish().0);
    if batch.verify(rng).is_ok() {
        vec![true; items.len()]
    } else {
        items.iter().map(verify_one).collect()
    }
}

/// Verifies `items` in chunks of at most `chunk_size`, the chunks in parallel on the current rayon
/// pool (call inside `ThreadPool::install` to choose the pool). One verdict per item, in order.
pub fn verify_batch(items: &[SignatureItem<'_>], chunk_size: usize) -> Vec<bool> {
    let chunk_size = chunk_size.max(1);
    if items.len() <= chunk_size {
        return verify_chunk(items);
    }
    items
        .par_chunks(chunk_size)
        .map(verify_chunk)
        .collect::<Vec<_>>()
        .concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let key = KeyPair::deterministic(7, 0);
        let signature = key.sign(b"hello");
        let good = SignatureItem {
            public_key: key.public(),
            message: b"hello",
            signature,
        };
        assert!(verify_one(&good));
        let bad = SignatureItem {
            message: b"hellp",
            ..good
        };
        assert!(!verify_one(&bad));
        assert_eq!(verify_batch(&[good, bad, good], 2), vec![true, false, true]);
        assert_eq!(
            key.sign(b"hello"),
            signature,
            "signatures are deterministic"
        );
    }
}
