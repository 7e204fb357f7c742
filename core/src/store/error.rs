//! Why a store fails, with the data to act on it: the path an I/O operation was on, the offset of
//! a damaged record, the limit a write exceeded. The limits travel as data so that this module
//! depends on no store implementation.

use std::io;
use std::path::{Path, PathBuf};

/// Why the store failed. A core whose store fails stops (fail-stop): it never replies as if a
/// write had happened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The operating system refused an operation.
    #[error("store I/O error on {path}: {source}")]
    Io {
        /// The file or directory operated on (for a copy or a rename between the log and the
        /// compaction file, the compaction file).
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The files hold something this version cannot read.
    #[error("store corrupt: {0}")]
    Corrupt(#[from] Corruption),
    /// Another running process has the store open.
    #[error("store locked: {path} is held by process {holder}")]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The lock file's contents, `"<pid> <start time>"`.
        holder: String,
    },
    /// A stale lock was removed but another process created the lock file again before this one
    /// could, twice in a row.
    #[error("store locked: {path} was taken by another process while opening")]
    LockContended {
        /// The lock file.
        path: PathBuf,
    },
    /// A commit exceeds the store's size limits; nothing was written.
    #[error("store write too large: {0}")]
    TooLarge(#[from] TooLarge),
    /// A [`super::WriteOp::PutSlices`] names a range that is not in a data value; nothing was
    /// written (the core never asks for one: a bug in the caller).
    #[error("store write refused: {0}")]
    BadSlice(#[from] SliceError),
    /// The directory holds a store in a layout this build does not read.
    #[error(
        "store {dir} was written in log format version {found} (payloads inside wal.log); this \
         build reads version {expected} (payloads in segment files) and does not convert it. \
         Keep running the build that wrote it, or start this one on a fresh genesis with an \
         empty store directory (move {dir} away). Never empty the store of a validator of a \
         running committee: it would forget the votes it signed."
    )]
    OldLayout {
        /// The store's directory.
        dir: PathBuf,
        /// The version found in `wal.log`.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// An earlier write, sync or compaction failed, so the files' state is unknown: the store
    /// refuses every call from then on.
    #[error("store stopped after an earlier write, sync or compaction failure")]
    Stopped,
}

/// What makes a log unreadable (other than a torn tail, which is cut off on open).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// The file does not start with the log magic.
    #[error("{path} does not start with the log magic (found {found:02x?})")]
    Magic {
        /// The log file.
        path: PathBuf,
        /// Its first eight bytes.
        found: [u8; 8],
    },
    /// The file has a format version this build does not read.
    #[error("{path} has format version {found}, this build reads version {expected}")]
    Version {
        /// The log file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// A record's length field is above the limit, which no write of this code produces.
    #[error(
        "{path}: record at offset {offset} declares a body of {body_len} bytes (limit {limit})"
    )]
    OversizedRecord {
        /// The log file.
        path: PathBuf,
        /// Byte offset of the record in the file.
        offset: u64,
        /// The declared body length.
        body_len: u64,
        /// The largest body length a record may have.
        limit: usize,
    },
    /// A damaged record with an intact record at its declared end: damage in the middle of the
    /// log, not a torn tail.
    #[error(
        "{path}: record at offset {offset} is damaged ({damage}) but an intact record follows at \
         offset {next}"
    )]
    DamagedRecord {
        /// The log file.
        path: PathBuf,
        /// Byte offset of the damaged record in the file.
        offset: u64,
        /// What is wrong with it.
        damage: RecordDamage,
        /// Byte offset of the intact record that follows.
        next: u64,
    },
    /// A live value's bytes in a segment file are missing or damaged, and the record that wrote
    /// them is not the last one of the log (a torn last write is dropped, not reported).
    #[error("{path}: {len} bytes at offset {offset}, referenced by a live value, are {damage}")]
    SegmentData {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the damaged extent in the segment.
        offset: u64,
        /// Its length.
        len: u64,
        /// What is wrong with it.
        damage: DataDamage,
    },
}

/// What is wrong with an extent of a segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DataDamage {
    /// The segment file does not exist.
    #[error("missing (no segment file)")]
    MissingFile,
    /// The segment file ends before the extent does.
    #[error("cut short (the file ends at {file_len})")]
    CutShort {
        /// The file's length.
        file_len: u64,
    },
    /// The bytes do not match the checksum the log holds.
    #[error("not matching their checksum")]
    Checksum,
}

/// Why one log record fails its checks. At the end of the log this is a torn tail; followed by an
/// intact record it is [`Corruption::DamagedRecord`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordDamage {
    /// Fewer bytes than a record header remain in the file.
    #[error("record header cut short")]
    HeaderCutShort,
    /// The declared body runs past the end of the file.
    #[error("record body cut short")]
    BodyCutShort,
    /// The body does not match its checksum.
    #[error("checksum mismatch")]
    Checksum,
    /// A length field inside the body points past the body's end.
    #[error("field of {len} bytes at body offset {at} runs past the body")]
    FieldPastBody {
        /// The field's length.
        len: usize,
        /// Where the field starts within the body.
        at: usize,
    },
    /// The op count is zero or more than the body could hold.
    #[error("implausible op count {count}")]
    OpCount {
        /// The declared count.
        count: usize,
    },
    /// A key longer than the limit.
    #[error("key of {len} bytes (limit {limit})")]
    KeyTooLong {
        /// The key's length.
        len: usize,
        /// The longest key allowed.
        limit: usize,
    },
    /// An op tag that is neither put nor delete.
    #[error("unknown op tag {tag}")]
    UnknownTag {
        /// The tag found.
        tag: u8,
    },
    /// A piece of a data value lies outside the extent it references, or an extent is empty.
    #[error("piece {start}+{len} outside its extent of {extent_len} bytes")]
    PieceRange {
        /// Where the piece starts in its extent.
        start: u64,
        /// Its length.
        len: u64,
        /// The extent's length.
        extent_len: u64,
    },
    /// Bytes left in the body after its declared ops.
    #[error("{count} trailing bytes")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
}

/// Which size limit a commit exceeds.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TooLarge {
    /// A key longer than the limit.
    #[error("key of {len} bytes (limit {limit})")]
    Key {
        /// The key's length.
        len: usize,
        /// The longest key allowed.
        limit: usize,
    },
    /// A data value longer than the limit.
    #[error("data value of {len} bytes (limit {limit})")]
    Value {
        /// The value's length (saturating).
        len: usize,
        /// The longest data value allowed.
        limit: usize,
    },
    /// The commit's encoding is larger than one record may be.
    #[error("commit of {body_len} encoded bytes (limit {limit})")]
    Commit {
        /// The encoded body length (saturating).
        body_len: usize,
        /// The largest record body allowed.
        limit: usize,
    },
}

/// A [`super::WriteOp::PutSlices`] range that does not resolve.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("slice {start}+{len} of {source_key:02x?} for {key:02x?}: {problem}")]
pub struct SliceError {
    /// The key being written.
    pub key: Vec<u8>,
    /// The key sliced.
    pub source_key: Vec<u8>,
    /// Where the range starts.
    pub start: u64,
    /// Its length.
    pub len: u64,
    /// What is wrong.
    pub problem: SliceProblem,
}

impl SliceError {
    /// The error for `slice` of the op writing `key`.
    pub(crate) fn new(key: &[u8], slice: &super::Slice, problem: SliceProblem) -> SliceError {
        SliceError {
            key: key.to_vec(),
            source_key: slice.source.clone(),
            start: slice.start as u64,
            len: slice.len as u64,
            problem,
        }
    }
}

/// Why a slice does not resolve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SliceProblem {
    /// No value has the source key.
    #[error("no such key")]
    Missing,
    /// The source is a metadata value (written by a put), not a data value.
    #[error("not a data value")]
    NotData,
    /// The range runs past the source's end.
    #[error("past the end of the source ({source_len} bytes)")]
    OutOfRange {
        /// The source's length.
        source_len: u64,
    },
}

/// Attaches the path an I/O operation was on to its error.
pub(crate) trait IoContext<T> {
    /// Maps an I/O error to [`StoreError::Io`] on `path`.
    fn at(self, path: &Path) -> Result<T, StoreError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: &Path) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}
