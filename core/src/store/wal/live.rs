//! The in-memory image of the log: the live entries (metadata values whole, data values as
//! pieces of segment extents), how many live pieces each segment holds, and the size a compacted
//! log would have.

use std::collections::BTreeMap;

use super::format::{put_encoded_len, COUNT_LEN, FILE_HEADER_LEN, RECORD_HEADER_LEN};
use super::value::Value;

/// The live entries and what is derived from them.
#[derive(Default)]
pub(super) struct LiveMap {
    pub(super) map: BTreeMap<Vec<u8>, Value>,
    /// Bytes of keys and values of the entries in `map` (data values at their length).
    pub(super) bytes: u64,
    /// Encoded size of the ops a compaction would write for `map`.
    encoded: u64,
    /// Live pieces per segment: a segment absent here holds nothing live and can be deleted.
    /// Computed again from `map` on every open.
    pub(super) refs: BTreeMap<u64, u64>,
}

impl LiveMap {
    pub(super) fn put(&mut self, key: Vec<u8>, value: Value) {
        let key_len = key.len();
        self.count(key_len, &value, true);
        if let Some(old) = self.map.insert(key, value) {
            self.count(key_len, &old, false);
        }
    }

    pub(super) fn delete(&mut self, key: &[u8]) {
        if let Some(old) = self.map.remove(key) {
            self.count(key.len(), &old, false);
        }
    }

    /// Adds (or removes) the share of an entry with a key of `key_len` bytes in the derived
    /// counts.
    fn count(&mut self, key_len: usize, value: &Value, add: bool) {
        let bytes = key_len as u64 + value.len();
        let encoded = put_encoded_len(key_len, value) as u64;
        if add {
            self.bytes += bytes;
            self.encoded += encoded;
        } else {
            self.bytes -= bytes;
            self.encoded -= encoded;
        }
        let Value::Data(pieces) = value else {
            return;
        };
        for piece in pieces.iter() {
            let segment = piece.extent.segment;
            if add {
                *self.refs.entry(segment).or_default() += 1;
                continue;
            }
            let refs = self
                .refs
                .get_mut(&segment)
                .expect("a live piece counts in its segment");
            *refs -= 1;
            if *refs == 0 {
                self.refs.remove(&segment);
            }
        }
    }

    /// Size of the log a compaction would write now (one record's overhead; chunking adds a few
    /// bytes per [`super::COMPACT_CHUNK_BYTES`]).
    pub(super) fn compacted_len(&self) -> u64 {
        let records = if self.map.is_empty() {
            0
        } else {
            RECORD_HEADER_LEN + COUNT_LEN
        } as u64;
        FILE_HEADER_LEN as u64 + records + self.encoded
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::super::value::{Extent, Piece};
    use super::*;

    #[test]
    fn segment_refs_follow_puts_replacements_and_deletes() {
        let extent = |segment| Extent {
            segment,
            offset: 0,
            len: 10,
            crc: 0,
        };
        let data = |segments: &[u64]| {
            Value::Data(Arc::from(
                segments
                    .iter()
                    .map(|s| Piece::whole(extent(*s)))
                    .collect::<Vec<_>>(),
            ))
        };
        let mut live = LiveMap::default();
        live.put(b"a".to_vec(), data(&[1, 2]));
        live.put(b"b".to_vec(), data(&[2]));
        live.put(b"m".to_vec(), Value::Inline(Bytes::from_static(b"meta")));
        assert_eq!(live.refs, BTreeMap::from([(1, 1), (2, 2)]));
        assert_eq!(live.bytes, 3 + 20 + 10 + 4);
        live.put(b"a".to_vec(), data(&[3]));
        assert_eq!(live.refs, BTreeMap::from([(2, 1), (3, 1)]));
        live.delete(b"b");
        live.delete(b"missing");
        assert_eq!(live.refs, BTreeMap::from([(3, 1)]));
        live.delete(b"a");
        live.delete(b"m");
        assert!(live.refs.is_empty());
        assert_eq!(
            (live.bytes, live.compacted_len()),
            (0, FILE_HEADER_LEN as u64)
        );
    }
}
