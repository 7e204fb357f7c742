//! [`MemStore`]: the store in memory, for tests and the simulator (which model crashes
//! themselves). It answers exactly as [`super::wal::WalStore`] does: the same values from
//! [`Store::load`], the same errors for slices that do not resolve, and a commit that fails
//! changes nothing.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};

use super::{chunks_len, Slice, SliceError, SliceProblem, Store, StoreError, WriteBatch, WriteOp};

/// A value and whether it is a data value (one that [`WriteOp::PutSlices`] may slice).
#[derive(Clone, Debug)]
struct MemValue {
    bytes: Bytes,
    data: bool,
}

/// A store in memory: for tests and the simulator, which models crashes itself.
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    map: BTreeMap<Vec<u8>, MemValue>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore::default()
    }
    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }
    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The value of `key` as the commit being staged sees it: `staged` first, then the map.
    fn current<'a>(
        &'a self,
        staged: &'a BTreeMap<Vec<u8>, Option<MemValue>>,
        key: &[u8],
    ) -> Option<&'a MemValue> {
        match staged.get(key) {
            Some(value) => value.as_ref(),
            None => self.map.get(key),
        }
    }

    /// The bytes of `slices` concatenated, resolved against the commit being staged.
    fn resolve(
        &self,
        staged: &BTreeMap<Vec<u8>, Option<MemValue>>,
        key: &[u8],
        slices: &[Slice],
    ) -> Result<Bytes, SliceError> {
        let mut parts = Vec::with_capacity(slices.len());
        for slice in slices {
            let source = self.current(staged, &slice.source);
            let problem = match source {
                None => Some(SliceProblem::Missing),
                Some(v) if !v.data => Some(SliceProblem::NotData),
                Some(v)
                    if slice
                        .start
                        .checked_add(slice.len)
                        .is_none_or(|e| e > v.bytes.len()) =>
                {
                    Some(SliceProblem::OutOfRange {
                        source_len: v.bytes.len() as u64,
                    })
                }
                Some(_) => None,
            };
            if let Some(problem) = problem {
                return Err(SliceError::new(key, slice, problem));
            }
            let bytes = &source.expect("checked above").bytes;
            parts.push(bytes.slice(slice.start..slice.start + slice.len));
        }
        Ok(concat(parts))
    }
}

/// `parts` as one buffer: the part itself when there is one, a copy otherwise.
fn concat(mut parts: Vec<Bytes>) -> Bytes {
    if parts.len() == 1 {
        return parts.pop().expect("one part");
    }
    let mut out = BytesMut::with_capacity(chunks_len(&parts));
    for part in &parts {
        out.extend_from_slice(part);
    }
    out.freeze()
}

impl Store for MemStore {
    fn commit(&mut self, batches: &[WriteBatch]) -> Result<(), StoreError> {
        // Staged first, so that a slice that does not resolve leaves the store unchanged, as the
        // durable store does.
        let mut staged: BTreeMap<Vec<u8>, Option<MemValue>> = BTreeMap::new();
        for op in batches.iter().flat_map(|b| &b.ops) {
            let value = match op {
                WriteOp::Put { value, .. } => Some(MemValue {
                    bytes: value.clone(),
                    data: false,
                }),
                WriteOp::PutData { chunks, .. } => Some(MemValue {
                    bytes: concat(chunks.clone()),
                    data: true,
                }),
                WriteOp::PutSlices { key, slices } => Some(MemValue {
                    bytes: self.resolve(&staged, key, slices)?,
                    data: true,
                }),
                WriteOp::Delete { .. } => None,
            };
            staged.insert(op.key().to_vec(), value);
        }
        for (key, value) in staged {
            match value {
                Some(value) => self.map.insert(key, value),
                None => self.map.remove(&key),
            };
        }
        Ok(())
    }

    fn load(&mut self) -> Result<Vec<(Vec<u8>, Bytes)>, StoreError> {
        Ok(self
            .map
            .iter()
            .map(|(k, v)| (k.clone(), v.bytes.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(source: &str, start: usize, len: usize) -> Slice {
        Slice {
            source: source.as_bytes().to_vec(),
            start,
            len,
        }
    }

    #[test]
    fn slices_resolve_in_commit_order_and_outlive_their_source() {
        let mut s = MemStore::new();
        let mut b = WriteBatch::new();
        b.put_data(
            b"a".to_vec(),
            vec![Bytes::from_static(b"hello "), Bytes::from_static(b"world")],
        );
        b.put_slices(b"b".to_vec(), vec![slice("a", 6, 5), slice("a", 0, 5)]);
        b.delete(b"a".to_vec());
        b.put_slices(b"c".to_vec(), vec![slice("b", 0, 5)]);
        s.commit(&[b]).unwrap();
        let loaded = s.load().unwrap();
        assert_eq!(
            loaded,
            vec![
                (b"b".to_vec(), Bytes::from_static(b"worldhello")),
                (b"c".to_vec(), Bytes::from_static(b"world")),
            ]
        );
    }

    #[test]
    fn a_slice_that_does_not_resolve_fails_the_whole_commit() {
        let mut s = MemStore::new();
        let mut meta = WriteBatch::new();
        meta.put(b"m".to_vec(), Bytes::from_static(b"meta"));
        meta.put_data(b"d".to_vec(), vec![Bytes::from_static(b"data")]);
        s.commit(&[meta]).unwrap();
        let cases = [
            (slice("x", 0, 1), SliceProblem::Missing),
            (slice("m", 0, 1), SliceProblem::NotData),
            (slice("d", 2, 3), SliceProblem::OutOfRange { source_len: 4 }),
        ];
        for (bad, problem) in cases {
            let mut b = WriteBatch::new();
            b.put(b"new".to_vec(), Bytes::from_static(b"1"));
            b.put_slices(b"s".to_vec(), vec![bad]);
            match s.commit(&[b]) {
                Err(StoreError::BadSlice(e)) => assert_eq!(e.problem, problem),
                other => panic!("expected BadSlice, got {other:?}"),
            }
            assert_eq!(s.len(), 2, "nothing of a failed commit applies");
        }
    }
}
