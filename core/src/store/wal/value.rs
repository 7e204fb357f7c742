//! What the log says a value is: a metadata value held whole, or a data value made of pieces of
//! extents in segment files. Pure types and arithmetic; no I/O.

use std::sync::Arc;

use bytes::Bytes;

/// The bytes one data put appended to a segment, and their checksum: the unit the crash rule
/// checks. Pieces of values reference (parts of) extents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Extent {
    /// The segment file's number.
    pub(super) segment: u64,
    /// Byte offset in the segment.
    pub(super) offset: u64,
    /// Length in bytes (> 0).
    pub(super) len: u32,
    /// CRC-32 (IEEE) of the bytes.
    pub(super) crc: u32,
}

/// A part of an extent: `len` bytes from `start` within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Piece {
    /// The extent.
    pub(super) extent: Extent,
    /// Where the part starts within the extent.
    pub(super) start: u32,
    /// Its length (> 0; `start + len <= extent.len`).
    pub(super) len: u32,
}

impl Piece {
    /// The whole of `extent`.
    pub(super) fn whole(extent: Extent) -> Piece {
        Piece {
            extent,
            start: 0,
            len: extent.len,
        }
    }
    /// Whether the piece lies inside its extent and is not empty.
    pub(super) fn is_valid(&self) -> bool {
        self.len > 0 && u64::from(self.start) + u64::from(self.len) <= u64::from(self.extent.len)
    }
}

/// A live value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Value {
    /// A metadata value, held in the log.
    Inline(Bytes),
    /// A data value: its pieces concatenated (none for an empty value). Shared, so that a
    /// snapshot of the live map for compaction copies no piece list.
    Data(Arc<[Piece]>),
}

impl Value {
    /// The value's length in bytes.
    pub(super) fn len(&self) -> u64 {
        match self {
            Value::Inline(bytes) => bytes.len() as u64,
            Value::Data(pieces) => pieces.iter().map(|p| u64::from(p.len)).sum(),
        }
    }
}

/// The pieces covering bytes `start..start + len` of a data value made of `pieces`, or `None`
/// if the range runs past its end. Adjacent parts of one extent stay one piece.
pub(super) fn slice_pieces(pieces: &[Piece], start: u64, len: u64) -> Option<Vec<Piece>> {
    let end = start.checked_add(len)?;
    let mut out = Vec::new();
    let mut at = 0u64; // offset of the current piece in the value
    for piece in pieces {
        let piece_end = at + u64::from(piece.len);
        let (from, to) = (start.max(at), end.min(piece_end));
        if from < to {
            let start_in_extent = u64::from(piece.start) + (from - at);
            push_piece(
                &mut out,
                Piece {
                    extent: piece.extent,
                    start: u32::try_from(start_in_extent).expect("inside a u32 extent"),
                    len: u32::try_from(to - from).expect("inside a u32 piece"),
                },
            );
        }
        at = piece_end;
        if at >= end {
            break;
        }
    }
    (end <= at).then_some(out)
}

/// Appends `piece`, merging it into the last one if it continues it within the same extent.
pub(super) fn push_piece(out: &mut Vec<Piece>, piece: Piece) {
    if let Some(last) = out.last_mut() {
        if last.extent == piece.extent && last.start + last.len == piece.start {
            last.len += piece.len;
            return;
        }
    }
    out.push(piece);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extent(segment: u64, len: u32) -> Extent {
        Extent {
            segment,
            offset: 100,
            len,
            crc: 7,
        }
    }

    #[test]
    fn slices_cross_pieces_and_merge_within_an_extent() {
        let (a, b) = (extent(1, 10), extent(2, 6));
        let pieces = [
            Piece::whole(a),
            Piece {
                extent: b,
                start: 2,
                len: 4,
            },
        ];
        assert_eq!(
            slice_pieces(&pieces, 8, 4),
            Some(vec![
                Piece {
                    extent: a,
                    start: 8,
                    len: 2
                },
                Piece {
                    extent: b,
                    start: 2,
                    len: 2
                },
            ])
        );
        assert_eq!(slice_pieces(&pieces, 0, 14), Some(pieces.to_vec()));
        assert_eq!(slice_pieces(&pieces, 14, 0), Some(vec![]));
        assert_eq!(slice_pieces(&pieces, 10, 5), None, "past the end");
        assert_eq!(slice_pieces(&pieces, u64::MAX, 2), None, "overflow");
        let split = [
            Piece {
                extent: a,
                start: 0,
                len: 4,
            },
            Piece {
                extent: a,
                start: 4,
                len: 6,
            },
        ];
        assert_eq!(
            slice_pieces(&split, 2, 6),
            Some(vec![Piece {
                extent: a,
                start: 2,
                len: 6
            }])
        );
    }
}
