//! Staging a commit before anything is written: where each data value goes in the segments and
//! its checksum, which extents each slice resolves to, the size limits, and the log record that
//! will describe it all. Pure: a commit refused here has written nothing.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::format::{
    RecordBuf, COUNT_LEN, DATA_OVERHEAD, DELETE_OVERHEAD, MAX_KEY_LEN, MAX_RECORD_BODY, PIECE_LEN,
    PUT_OVERHEAD,
};
use super::live::LiveMap;
use super::value::{push_piece, slice_pieces, Extent, Piece, Value};
use crate::store::{
    chunks_len, Slice, SliceError, SliceProblem, StoreError, TooLarge, WriteBatch, WriteOp,
};

/// Longest data value one [`WriteOp::PutData`] may write, in bytes (extents are `u32` long).
pub const MAX_DATA_VALUE: usize = 1 << 30;

/// Where the next data goes: the segment being appended to and its length, the number the
/// next new segment gets, the size of a segment, and the alignment each commit's data starts at
/// (1, or the block size when segments are written with direct I/O).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Cursor {
    pub(super) active: Option<(u64, u64)>,
    pub(super) next_id: u64,
    pub(super) segment_bytes: u64,
    pub(super) align: u64,
}

impl Cursor {
    /// Places `len` bytes: in the active segment if they fit (or it is empty), else at the start
    /// of a new one. A value longer than a segment gets a segment of its own, longer than the
    /// others.
    fn place(&mut self, len: u64) -> (u64, u64) {
        let limit = self.segment_bytes;
        match &mut self.active {
            Some((id, used)) if *used == 0 || *used + len <= limit => {
                let at = (*id, *used);
                *used += len;
                at
            }
            _ => {
                let id = self.next_id;
                self.next_id += 1;
                self.active = Some((id, len));
                (id, 0)
            }
        }
    }

    /// Ends a commit: the next one starts at the alignment (the bytes between are padding).
    fn finish(&mut self) {
        if let Some((_, used)) = &mut self.active {
            *used = used.next_multiple_of(self.align);
        }
    }
}

/// What one op does to the live map once the commit is durable.
pub(super) enum Staged {
    /// A metadata value.
    Put(Bytes),
    /// A delete.
    Delete,
    /// A data value; `appended` if this commit writes its extent (a data put).
    Data {
        pieces: Arc<[Piece]>,
        appended: bool,
    },
}

/// Bytes to append to a segment: the extent they form and the buffers they come from.
pub(super) struct DataWrite<'a> {
    pub(super) extent: Extent,
    pub(super) chunks: &'a [Bytes],
}

/// A commit, staged.
pub(super) struct Plan<'a> {
    /// The ops in order, with their keys.
    pub(super) ops: Vec<(&'a [u8], Staged)>,
    /// The data to append, in segment order.
    pub(super) writes: Vec<DataWrite<'a>>,
    /// The cursor once the writes are done.
    pub(super) cursor: Cursor,
    /// The log record describing the commit.
    pub(super) record: Vec<u8>,
}

/// Stages all ops of `batches` against `live`, with data going where `cursor` says; `None` if
/// there are no ops.
pub(super) fn plan<'a>(
    batches: &'a [WriteBatch],
    live: &LiveMap,
    mut cursor: Cursor,
) -> Result<Option<Plan<'a>>, StoreError> {
    // Values put earlier in this commit, which slices later in it see.
    let mut overlay: HashMap<&'a [u8], Option<Value>> = HashMap::new();
    let mut ops = Vec::new();
    let mut writes = Vec::new();
    let mut body_len = COUNT_LEN;
    for op in batches.iter().flat_map(|b| &b.ops) {
        let key = op.key();
        if key.len() > MAX_KEY_LEN {
            return Err(TooLarge::Key {
                len: key.len(),
                limit: MAX_KEY_LEN,
            }
            .into());
        }
        let staged = match op {
            WriteOp::Put { value, .. } => Staged::Put(value.clone()),
            WriteOp::Delete { .. } => Staged::Delete,
            WriteOp::PutData { chunks, .. } => Staged::Data {
                pieces: place_data(chunks, &mut cursor, &mut writes)?,
                appended: true,
            },
            WriteOp::PutSlices { key, slices } => {
                let current = |k: &[u8]| match overlay.get(k) {
                    Some(staged) => staged.as_ref(),
                    None => live.map.get(k),
                };
                Staged::Data {
                    pieces: resolve(key, slices, current)?,
                    appended: false,
                }
            }
        };
        body_len = body_len.saturating_add(encoded_len(key, &staged));
        let value = match &staged {
            Staged::Put(bytes) => Some(Value::Inline(bytes.clone())),
            Staged::Delete => None,
            Staged::Data { pieces, .. } => Some(Value::Data(pieces.clone())),
        };
        overlay.insert(key, value);
        ops.push((key, staged));
    }
    if ops.is_empty() {
        return Ok(None);
    }
    if body_len > MAX_RECORD_BODY {
        return Err(TooLarge::Commit {
            body_len,
            limit: MAX_RECORD_BODY,
        }
        .into());
    }
    let record = encode(&ops, body_len);
    cursor.finish();
    Ok(Some(Plan {
        ops,
        writes,
        cursor,
        record,
    }))
}

/// Places a data value, computes its checksum and queues its write; its pieces.
fn place_data<'a>(
    chunks: &'a [Bytes],
    cursor: &mut Cursor,
    writes: &mut Vec<DataWrite<'a>>,
) -> Result<Arc<[Piece]>, StoreError> {
    let len = chunks_len(chunks);
    if len > MAX_DATA_VALUE {
        return Err(TooLarge::Value {
            len,
            limit: MAX_DATA_VALUE,
        }
        .into());
    }
    if len == 0 {
        return Ok(Arc::from(Vec::new()));
    }
    let (segment, offset) = cursor.place(len as u64);
    let mut crc = crc32fast::Hasher::new();
    chunks.iter().for_each(|c| crc.update(c));
    let extent = Extent {
        segment,
        offset,
        len: u32::try_from(len).expect("below MAX_DATA_VALUE"),
        crc: crc.finalize(),
    };
    writes.push(DataWrite { extent, chunks });
    Ok(Arc::from(vec![Piece::whole(extent)]))
}

/// The pieces of `slices` of the data values `current` returns, concatenated.
fn resolve<'v>(
    key: &[u8],
    slices: &[Slice],
    current: impl Fn(&[u8]) -> Option<&'v Value>,
) -> Result<Arc<[Piece]>, SliceError> {
    let mut out = Vec::new();
    for slice in slices {
        let pieces = match current(&slice.source) {
            None => Err(SliceProblem::Missing),
            Some(Value::Inline(_)) => Err(SliceProblem::NotData),
            Some(Value::Data(pieces)) => slice_pieces(pieces, slice.start as u64, slice.len as u64)
                .ok_or(SliceProblem::OutOfRange {
                    source_len: pieces.iter().map(|p| u64::from(p.len)).sum(),
                }),
        }
        .map_err(|problem| SliceError::new(key, slice, problem))?;
        pieces.into_iter().for_each(|p| push_piece(&mut out, p));
    }
    Ok(Arc::from(out))
}

/// Encoded length of one staged op.
fn encoded_len(key: &[u8], staged: &Staged) -> usize {
    let tail = match staged {
        Staged::Put(value) => PUT_OVERHEAD.saturating_add(value.len()),
        Staged::Delete => DELETE_OVERHEAD,
        Staged::Data { pieces, .. } => DATA_OVERHEAD + PIECE_LEN * pieces.len(),
    };
    key.len().saturating_add(tail)
}

/// The log record of the staged ops. A data put is marked appended, so that the crash rule knows
/// which bytes the record is answerable for.
fn encode(ops: &[(&[u8], Staged)], body_len: usize) -> Vec<u8> {
    let mut record = RecordBuf::with_body_capacity(body_len);
    for (key, staged) in ops {
        match staged {
            Staged::Put(value) => record.push_put(key, value),
            Staged::Delete => record.push_delete(key),
            Staged::Data { pieces, appended } => record.push_data(key, pieces, *appended),
        }
    }
    assert_eq!(
        record.body_len(),
        body_len,
        "size computation matches encoding"
    );
    record.finish()
}
