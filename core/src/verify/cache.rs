//! What the verify stage already decided: certificates whose signatures all verified, and single
//! signatures that verified, shared between verify threads and the core thread.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::messages::Certificate;
use crate::types::{Digest, Round};

/// A signature and what it signs: the key of a verdict.
pub(super) type SignatureKey = (crate::crypto::PublicKey, crate::crypto::Signature, [u8; 76]);

/// Verdicts already reached, shared between verify threads and the core thread: digests of
/// certificates whose signatures all verified, and single signatures that verified (a header's
/// author signature checked in a `HeaderBundle` is its certificate's first signature later; a
/// core's own vote is one of the signatures of the certificate it helped form). Only valid
/// verdicts are kept, keyed by the whole (key, signature, message): under ZIP-215 rules a valid
/// signature is valid for every verifier, so a lookup decides exactly as a check would. Bounded:
/// entries below the gc round are pruned, and past `capacity` the lowest rounds go first.
#[derive(Debug)]
pub struct VerifiedCache {
    entries: RwLock<HashMap<Digest, Round>>,
    signatures: RwLock<HashMap<SignatureKey, Round>>,
    capacity: usize,
}

impl VerifiedCache {
    /// A cache of at most `capacity` digests.
    pub fn new(capacity: usize) -> VerifiedCache {
        VerifiedCache {
            entries: RwLock::new(HashMap::new()),
            signatures: RwLock::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }
    /// Whether this signature of this message verified before.
    pub(super) fn signature_valid(&self, key: &SignatureKey) -> bool {
        self.signatures
            .read()
            .expect("cache lock poisoned")
            .contains_key(key)
    }
    /// Records signatures that verified, each with the round of what it signs.
    pub(super) fn record_signatures(&self, valid: impl IntoIterator<Item = (SignatureKey, Round)>) {
        let mut signatures = self.signatures.write().expect("cache lock poisoned");
        for (key, round) in valid {
            if signatures.len() >= self.capacity {
                evict_lower_half(&mut signatures);
            }
            signatures.insert(key, round);
        }
    }
    /// Whether `digest` verified before.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.entries
            .read()
            .expect("cache lock poisoned")
            .contains_key(digest)
    }
    /// Records a verified certificate.
    pub fn insert(&self, digest: Digest, round: Round) {
        let mut entries = self.entries.write().expect("cache lock poisoned");
        if entries.len() >= self.capacity {
            evict_lower_half(&mut entries);
        }
        entries.insert(digest, round);
    }
    /// Forgets everything below `round`.
    pub fn prune_below(&self, round: Round) {
        self.entries
            .write()
            .expect("cache lock poisoned")
            .retain(|_, r| *r >= round);
        self.signatures
            .write()
            .expect("cache lock poisoned")
            .retain(|_, r| *r >= round);
    }
    /// Number of cached digests.
    pub fn len(&self) -> usize {
        self.entries.read().expect("cache lock poisoned").len()
    }
    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops the entries of the lower half of the rounds held (a full cache).
fn evict_lower_half<K>(entries: &mut HashMap<K, Round>) {
    let mut rounds: Vec<Round> = entries.values().copied().collect();
    rounds.sort_unstable();
    let cutoff = rounds[rounds.len() / 2];
    entries.retain(|_, r| *r > cutoff);
}

/// The cache key of a certificate: its digest *and* its signatures. Keying by the header digest
/// alone would let a copy of a verified certificate with garbage signatures through, and the
/// core would then store and serve a certificate other cores reject.
pub(super) fn cache_key(c: &Certificate) -> Digest {
    let mut h = crate::hash::Hasher::new(b"SEAL/VCACHE/v1");
    h.update(&c.digest().0);
    for (signer, signature) in c.signers.iter().zip(&c.signatures) {
        h.update(&signer.0.to_le_bytes()).update(&signature.0);
    }
    h.finish()
}
