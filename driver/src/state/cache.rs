//! The driver's payload cache: payloads by digest with the newest round that referenced them,
//! within a hard byte bound.
//!
//! A driver inside a core process must not be able to grow that process without limit, so the
//! cache counts the bytes it holds and, when a new payload takes it over its bound, drops the
//! payloads learned longest ago until it is back to three quarters of the bound (so the sweep,
//! a pass over the whole cache, runs once per quarter of the bound learned, not on every
//! payload). Nothing is lost for good by dropping: a core that still lacks a dropped payload
//! lists it as missing, and the driver fetches it again.

use foldhash::{HashMap, HashMapExt};

use sleepyseal_core::limits::MAX_PAYLOAD_BYTES;
use sleepyseal_core::{Digest, Payload, Round};

/// One cached payload.
#[derive(Debug)]
struct Entry {
    payload: Payload,
    /// The newest round that referenced it (`Round::GENESIS` for fetched history: see
    /// `DriverState::sweep_below`).
    round: Round,
    /// When it was learned, in learning order (the oldest go first beyond the bound).
    learned: u64,
}

/// Payloads by digest, bounded in bytes.
#[derive(Debug)]
pub(super) struct PayloadCache {
    entries: HashMap<Digest, Entry>,
    /// Sum of the cached payloads' lengths.
    bytes: usize,
    /// The bound on `bytes`.
    max_bytes: usize,
    /// The next learning order.
    next: u64,
}

impl PayloadCache {
    /// An empty cache holding at most `max_bytes` of payloads (raised to twice the largest
    /// payload, so that the payloads of one request always fit).
    pub(super) fn new(max_bytes: usize) -> PayloadCache {
        PayloadCache {
            entries: HashMap::new(),
            bytes: 0,
            max_bytes: max_bytes.max(2 * MAX_PAYLOAD_BYTES),
            next: 0,
        }
    }

    /// The payload with `digest`, if cached.
    pub(super) fn get(&self, digest: &Digest) -> Option<&Payload> {
        self.entries.get(digest).map(|e| &e.payload)
    }

    /// Whether the payload with `digest` is cached.
    pub(super) fn contains(&self, digest: &Digest) -> bool {
        self.entries.contains_key(digest)
    }

    /// Payloads cached.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes of the payloads cached.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Keeps `payload`, referenced at `round` (the newest referencing round is remembered), then
    /// drops the oldest learned payloads if the bound is exceeded.
    pub(super) fn insert(&mut self, payload: Payload, round: Round) {
        let digest = payload.digest();
        if let Some(entry) = self.entries.get_mut(&digest) {
            entry.round = entry.round.max(round);
            return;
        }
        self.bytes += payload.len();
        self.entries.insert(
            digest,
            Entry {
                payload,
                round,
                learned: self.next,
            },
        );
        self.next += 1;
        if self.bytes > self.max_bytes {
            self.shrink_to(self.max_bytes / 4 * 3);
        }
    }

    /// Keeps only the payloads whose newest referencing round passes `keep`.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(Round) -> bool) {
        let bytes = &mut self.bytes;
        self.entries.retain(|_, e| {
            let kept = keep(e.round);
            if !kept {
                *bytes -= e.payload.len();
            }
            kept
        });
    }

    /// Drops the payloads learned longest ago until at most `target` bytes are left.
    fn shrink_to(&mut self, target: usize) {
        let mut order: Vec<(u64, Digest, usize)> = self
            .entries
            .iter()
            .map(|(d, e)| (e.learned, *d, e.payload.len()))
            .collect();
        order.sort_unstable();
        for (_, digest, len) in order {
            if self.bytes <= target {
                break;
            }
            self.entries.remove(&digest);
            self.bytes -= len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn payload(tag: u8, len: usize) -> Payload {
        Payload::new(Bytes::from(vec![tag; len]))
    }

    #[test]
    fn the_byte_bound_holds_and_the_oldest_go_first() {
        let max = 2 * MAX_PAYLOAD_BYTES;
        let mut cache = PayloadCache::new(0);
        assert_eq!(
            cache.max_bytes, max,
            "raised to two of the largest payloads"
        );
        let chunk = MAX_PAYLOAD_BYTES / 4;
        let all: Vec<Payload> = (0..40u8).map(|t| payload(t, chunk)).collect();
        for (i, p) in all.iter().enumerate() {
            cache.insert(p.clone(), Round(i as u64));
            assert!(cache.bytes() <= max, "after {i}: {} bytes", cache.bytes());
            let sum: usize = cache.entries.values().map(|e| e.payload.len()).sum();
            assert_eq!(sum, cache.bytes(), "the count of bytes is exact");
        }
        assert!(cache.contains(&all[39].digest()), "the newest stays");
        assert!(!cache.contains(&all[0].digest()), "the oldest went first");
        // Learning an old payload again does not move it or count it twice.
        let before = cache.bytes();
        cache.insert(all[39].clone(), Round(100));
        assert_eq!(cache.bytes(), before);
        cache.retain(|r| r >= Round(100));
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.bytes(), chunk);
    }
}
