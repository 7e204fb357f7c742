//! The log's byte layout (see the module documentation of [`super`]): the file header, and
//! records framed by a length and a CRC-32 whose ops hold metadata values whole and data values
//! as pieces of segment extents. Pure functions over buffers; reading and writing files is left
//! to the callers.

use std::path::Path;

use bytes::Bytes;

use super::value::{Extent, Piece, Value};
use crate::store::{Corruption, RecordDamage};

/// Longest key accepted by [`super::WalStore`]'s commits and by replay, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// Largest record body (one commit's encoded operations), in bytes.
pub const MAX_RECORD_BODY: usize = 1 << 30;

pub(super) const MAGIC: [u8; 8] = *b"SSEALWAL";
pub(super) const VERSION: u32 = 2;
/// The version that kept payloads inside the log (refused with a message saying what to do).
pub(super) const VERSION_INLINE_PAYLOADS: u32 = 1;
pub(super) const FILE_HEADER_LEN: usize = 12;
pub(super) const RECORD_HEADER_LEN: usize = 8;
pub(super) const COUNT_LEN: usize = 4;
const TAG_PUT: u8 = 1;
const TAG_DELETE: u8 = 2;
/// A data value whose extents this record appended.
const TAG_DATA: u8 = 3;
/// A data value made of pieces of extents appended before.
const TAG_SLICES: u8 = 4;
/// Encoding overhead of a put beyond its key and value: tag, key length, value length.
pub(super) const PUT_OVERHEAD: usize = 9;
/// Encoding overhead of a delete beyond its key: tag, key length.
pub(super) const DELETE_OVERHEAD: usize = 5;
/// Encoding overhead of a data op beyond its key and pieces: tag, key length, piece count.
pub(super) const DATA_OVERHEAD: usize = 9;
/// Encoded size of one piece.
pub(super) const PIECE_LEN: usize = 32;

/// One decoded op of a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum LogOp {
    /// A metadata value.
    Put { key: Vec<u8>, value: Bytes },
    /// A delete.
    Delete { key: Vec<u8> },
    /// A data value; `appended` if the record wrote its extents (the crash rule checks those).
    Data {
        key: Vec<u8>,
        pieces: Vec<Piece>,
        appended: bool,
    },
}

/// Encoded size of the op that puts `value` under a key of `key_len` bytes (what compaction
/// writes for a live entry).
pub(super) fn put_encoded_len(key_len: usize, value: &Value) -> usize {
    match value {
        Value::Inline(bytes) => PUT_OVERHEAD + key_len + bytes.len(),
        Value::Data(pieces) => DATA_OVERHEAD + key_len + PIECE_LEN * pieces.len(),
    }
}

/// The file header: magic and version.
pub(super) fn file_header() -> [u8; FILE_HEADER_LEN] {
    let mut header = [0u8; FILE_HEADER_LEN];
    header[..8].copy_from_slice(&MAGIC);
    header[8..].copy_from_slice(&VERSION.to_le_bytes());
    header
}

/// Checks the magic and version of the header read from the log at `path`.
pub(super) fn check_file_header(
    header: &[u8; FILE_HEADER_LEN],
    path: &Path,
) -> Result<(), Corruption> {
    if header[..8] != MAGIC {
        let mut found = [0u8; 8];
        found.copy_from_slice(&header[..8]);
        return Err(Corruption::Magic {
            path: path.to_path_buf(),
            found,
        });
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if version != VERSION {
        return Err(Corruption::Version {
            path: path.to_path_buf(),
            found: version,
            expected: VERSION,
        });
    }
    Ok(())
}

/// The fields of a record header.
pub(super) struct RecordHeader {
    /// Declared body length (not yet checked against [`MAX_RECORD_BODY`]).
    pub(super) body_len: u64,
    /// Declared CRC-32 of the body.
    pub(super) crc: u32,
}

impl RecordHeader {
    /// Reads a record header's fields.
    pub(super) fn parse(bytes: &[u8; RECORD_HEADER_LEN]) -> RecordHeader {
        RecordHeader {
            body_len: u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as u64,
            crc: u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        }
    }
}

/// A record being encoded: header placeholder, op count placeholder, then ops.
pub(super) struct RecordBuf {
    buf: Vec<u8>,
    count: u32,
}

impl RecordBuf {
    pub(super) fn with_body_capacity(body_len: usize) -> RecordBuf {
        let mut buf = Vec::with_capacity(RECORD_HEADER_LEN + body_len);
        buf.resize(RECORD_HEADER_LEN + COUNT_LEN, 0);
        RecordBuf { buf, count: 0 }
    }

    /// Whether no op has been added yet.
    pub(super) fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub(super) fn body_len(&self) -> usize {
        self.buf.len() - RECORD_HEADER_LEN
    }

    pub(super) fn push_put(&mut self, key: &[u8], value: &[u8]) {
        self.push_key(TAG_PUT, key);
        self.push_len(value.len());
        self.buf.extend_from_slice(value);
    }

    pub(super) fn push_delete(&mut self, key: &[u8]) {
        self.push_key(TAG_DELETE, key);
    }

    /// A data value: `appended` if this record wrote the pieces' extents.
    pub(super) fn push_data(&mut self, key: &[u8], pieces: &[Piece], appended: bool) {
        self.push_key(if appended { TAG_DATA } else { TAG_SLICES }, key);
        self.push_len(pieces.len());
        for p in pieces {
            let e = &p.extent;
            self.buf.extend_from_slice(&e.segment.to_le_bytes());
            self.buf.extend_from_slice(&e.offset.to_le_bytes());
            self.buf.extend_from_slice(&e.len.to_le_bytes());
            self.buf.extend_from_slice(&e.crc.to_le_bytes());
            self.buf.extend_from_slice(&p.start.to_le_bytes());
            self.buf.extend_from_slice(&p.len.to_le_bytes());
        }
    }

    /// An entry of the live map, as compaction writes it (data values as slices).
    pub(super) fn push_value(&mut self, key: &[u8], value: &Value) {
        match value {
            Value::Inline(bytes) => self.push_put(key, bytes),
            Value::Data(pieces) => self.push_data(key, pieces, false),
        }
    }

    fn push_key(&mut self, tag: u8, key: &[u8]) {
        self.count += 1;
        self.buf.push(tag);
        self.push_len(key.len());
        self.buf.extend_from_slice(key);
    }

    fn push_len(&mut self, len: usize) {
        let len = u32::try_from(len).expect("lengths are checked against MAX_RECORD_BODY");
        self.buf.extend_from_slice(&len.to_le_bytes());
    }

    /// Fills in the op count, length and checksum; returns the record's bytes.
    pub(super) fn finish(mut self) -> Vec<u8> {
        assert!(self.count > 0, "a record holds at least one op");
        let body_len = self.body_len();
        assert!(body_len <= MAX_RECORD_BODY, "record body over the limit");
        let count_at = RECORD_HEADER_LEN..RECORD_HEADER_LEN + COUNT_LEN;
        self.buf[count_at].copy_from_slice(&self.count.to_le_bytes());
        let crc = crc32fast::hash(&self.buf[RECORD_HEADER_LEN..]);
        self.buf[0..4].copy_from_slice(&(body_len as u32).to_le_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        self.buf
    }
}

/// Checks a record body against its header's checksum and decodes it into its ops.
pub(super) fn check_body(body: &[u8], crc: u32) -> Result<Vec<LogOp>, RecordDamage> {
    if crc32fast::hash(body) != crc {
        return Err(RecordDamage::Checksum);
    }
    decode_body(body)
}

/// Reads fields out of a record body.
struct BodyReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> BodyReader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordDamage> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or(RecordDamage::FieldPastBody {
                len: n,
                at: self.pos,
            })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, RecordDamage> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, RecordDamage> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("eight bytes")))
    }

    fn piece(&mut self) -> Result<Piece, RecordDamage> {
        let piece = Piece {
            extent: Extent {
                segment: self.u64()?,
                offset: self.u64()?,
                len: self.u32()?,
                crc: self.u32()?,
            },
            start: self.u32()?,
            len: self.u32()?,
        };
        if !piece.is_valid() {
            return Err(RecordDamage::PieceRange {
                start: piece.start.into(),
                len: piece.len.into(),
                extent_len: piece.extent.len.into(),
            });
        }
        Ok(piece)
    }
}

/// Decodes a record body (already checksummed) into its ops.
fn decode_body(body: &[u8]) -> Result<Vec<LogOp>, RecordDamage> {
    let mut r = BodyReader { buf: body, pos: 0 };
    let count = r.u32()? as usize;
    if count == 0 || count > body.len() / DELETE_OVERHEAD {
        return Err(RecordDamage::OpCount { count });
    }
    let mut ops = Vec::with_capacity(count);
    for _ in 0..count {
        ops.push(decode_op(&mut r)?);
    }
    if r.pos != body.len() {
        return Err(RecordDamage::TrailingBytes {
            count: body.len() - r.pos,
        });
    }
    Ok(ops)
}

fn decode_op(r: &mut BodyReader<'_>) -> Result<LogOp, RecordDamage> {
    let tag = r.take(1)?[0];
    let key_len = r.u32()? as usize;
    if key_len > MAX_KEY_LEN {
        return Err(RecordDamage::KeyTooLong {
            len: key_len,
            limit: MAX_KEY_LEN,
        });
    }
    let key = r.take(key_len)?.to_vec();
    match tag {
        TAG_PUT => {
            let value_len = r.u32()? as usize;
            let value = Bytes::copy_from_slice(r.take(value_len)?);
            Ok(LogOp::Put { key, value })
        }
        TAG_DELETE => Ok(LogOp::Delete { key }),
        TAG_DATA | TAG_SLICES => {
            let count = r.u32()? as usize;
            if count > (r.buf.len() - r.pos) / PIECE_LEN {
                return Err(RecordDamage::FieldPastBody {
                    len: count.saturating_mul(PIECE_LEN),
                    at: r.pos,
                });
            }
            let pieces = (0..count).map(|_| r.piece()).collect::<Result<_, _>>()?;
            let appended = tag == TAG_DATA;
            Ok(LogOp::Data {
                key,
                pieces,
                appended,
            })
        }
        tag => Err(RecordDamage::UnknownTag { tag }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn extent(segment: u64) -> Extent {
        Extent {
            segment,
            offset: 4096,
            len: 100,
            crc: 0xdead_beef,
        }
    }

    /// The ops of a sample record: every tag.
    fn sample() -> Vec<LogOp> {
        vec![
            LogOp::Put {
                key: b"a".to_vec(),
                value: Bytes::from_static(b"1"),
            },
            LogOp::Delete { key: b"b".to_vec() },
            LogOp::Data {
                key: b"c".to_vec(),
                pieces: vec![Piece::whole(extent(3))],
                appended: true,
            },
            LogOp::Data {
                key: b"d".to_vec(),
                pieces: vec![
                    Piece {
                        extent: extent(1),
                        start: 10,
                        len: 20,
                    },
                    Piece::whole(extent(3)),
                ],
                appended: false,
            },
            LogOp::Data {
                key: b"e".to_vec(),
                pieces: vec![],
                appended: true,
            },
        ]
    }

    fn encode(ops: &[LogOp]) -> Vec<u8> {
        let mut record = RecordBuf::with_body_capacity(0);
        for op in ops {
            match op {
                LogOp::Put { key, value } => record.push_put(key, value),
                LogOp::Delete { key } => record.push_delete(key),
                LogOp::Data {
                    key,
                    pieces,
                    appended,
                } => record.push_data(key, pieces, *appended),
            }
        }
        record.finish()
    }

    /// Splits an encoded record into its header and body.
    fn split(record: &[u8]) -> (RecordHeader, &[u8]) {
        let header: &[u8; RECORD_HEADER_LEN] = record[..RECORD_HEADER_LEN].try_into().unwrap();
        (RecordHeader::parse(header), &record[RECORD_HEADER_LEN..])
    }

    #[test]
    fn a_record_decodes_to_its_ops_and_sizes_match() {
        let ops = sample();
        let record = encode(&ops);
        let (header, body) = split(&record);
        assert_eq!(header.body_len, body.len() as u64);
        assert_eq!(check_body(body, header.crc), Ok(ops));
        let value = Value::Data(Arc::from(vec![Piece::whole(extent(1)); 3]));
        let mut one = RecordBuf::with_body_capacity(0);
        one.push_value(b"key", &value);
        assert_eq!(one.body_len(), COUNT_LEN + put_encoded_len(3, &value));
    }

    #[test]
    fn damaged_bodies_say_what_is_wrong() {
        let record = encode(&sample());
        let (header, body) = split(&record);
        assert_eq!(
            check_body(body, header.crc ^ 1),
            Err(RecordDamage::Checksum)
        );
        let mut bad_tag = body.to_vec();
        bad_tag[COUNT_LEN] = 9;
        assert_eq!(
            decode_body(&bad_tag),
            Err(RecordDamage::UnknownTag { tag: 9 })
        );
        let mut trailing = body.to_vec();
        trailing.extend_from_slice(&[0, 0]);
        assert_eq!(
            decode_body(&trailing),
            Err(RecordDamage::TrailingBytes { count: 2 })
        );
        // The last op is an empty data value: cutting a byte cuts its piece count.
        assert_eq!(
            decode_body(&body[..body.len() - 1]),
            Err(RecordDamage::FieldPastBody {
                len: 4,
                at: body.len() - 4
            })
        );
        assert_eq!(
            decode_body(&0u32.to_le_bytes()),
            Err(RecordDamage::OpCount { count: 0 })
        );
        let outside = Piece {
            extent: extent(1),
            start: 90,
            len: 20,
        };
        let mut bad_piece = RecordBuf::with_body_capacity(0);
        bad_piece.push_data(b"k", &[outside], false);
        let bad_piece = bad_piece.finish();
        assert_eq!(
            decode_body(&bad_piece[RECORD_HEADER_LEN..]),
            Err(RecordDamage::PieceRange {
                start: 90,
                len: 20,
                extent_len: 100
            })
        );
    }

    #[test]
    fn headers_with_a_wrong_magic_or_version_are_refused() {
        let path = Path::new("wal.log");
        let good = file_header();
        assert_eq!(check_file_header(&good, path), Ok(()));
        let mut version = good;
        version[8] = 3;
        assert!(matches!(
            check_file_header(&version, path),
            Err(Corruption::Version { found: 3, .. })
        ));
        let mut magic = good;
        magic[0] = b'X';
        assert!(matches!(
            check_file_header(&magic, path),
            Err(Corruption::Magic { .. })
        ));
    }
}
