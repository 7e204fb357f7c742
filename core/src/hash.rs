//! Domain-separated hashing: `H(tag ‖ bytes)` with BLAKE3. Every hash in the protocol names its
//! purpose with a tag, so a digest of one kind can never be reinterpreted as another.

use crate::types::Digest;

/// Tag of header digests (also certificate ids).
pub const TAG_HEADER: &[u8] = b"SEAL/HDR/v1";
/// Tag of the message a vote signs.
pub const TAG_VOTE: &[u8] = b"SEAL/VOTE/v1";
/// Tag of payload digests.
pub const TAG_PAYLOAD: &[u8] = b"SEAL/PAY/v1";
/// Tag of the leader schedule's hash.
pub const TAG_LEADER: &[u8] = b"SEAL/LEADER/v1";
/// Tag of the commit-hash chain (v2: each link covers every field an entry serves, §8a.5).
pub const TAG_COMMIT: &[u8] = b"SEAL/COMMIT/v2";
/// Tag of the seed that derandomises batch verification.
pub const TAG_BATCH: &[u8] = b"SEAL/BATCH/v1";
/// Tag of checkpoint digests and of the message a checkpoint signature signs (§8a).
pub const TAG_CHECKPOINT: &[u8] = b"SEAL/CKPT/v1";
/// Tag of a committee's instance id (PROTOCOL.md §1).
pub const TAG_INSTANCE: &[u8] = b"SEAL/INSTANCE/v1";
/// Tag of deterministic test keys.
pub const TAG_KEY: &[u8] = b"SEAL/KEY/v1";

/// An incremental domain-separated hasher.
pub struct Hasher(blake3::Hasher);

impl Hasher {
    /// Starts a hash with its domain tag. The tag is length-prefixed so tags can never run into
    /// the data that follows.
    pub fn new(tag: &[u8]) -> Hasher {
        let mut inner = blake3::Hasher::new();
        let tag_len = u8::try_from(tag.len()).expect("tags are short");
        inner.update(&[tag_len]);
        inner.update(tag);
        Hasher(inner)
    }

    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) -> &mut Hasher {
        self.0.update(bytes);
        self
    }

    /// The digest.
    pub fn finish(&self) -> Digest {
        Digest(*self.0.finalize().as_bytes())
    }
}

/// `H(tag ‖ bytes)`.
pub fn hash(tag: &[u8], bytes: &[u8]) -> Digest {
    Hasher::new(tag).update(bytes).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_separate_domains() {
        assert_ne!(hash(TAG_HEADER, b"x"), hash(TAG_PAYLOAD, b"x"));
        // The length prefix keeps "tag ‖ data" splits apart.
        assert_ne!(hash(b"AB", b"C"), hash(b"A", b"BC"));
    }
}
