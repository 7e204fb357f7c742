//! Reading data values back from the segments: checking every live extent on open (the crash
//! rule for data, see "Crash rule" in the module documentation of [`super`]) and assembling the
//! values [`crate::store::Store::load`] returns.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};

use super::live::LiveMap;
use super::segments::segment_name;
use super::value::{Extent, Value};
use crate::store::error::IoContext;
use crate::store::{Corruption, DataDamage, StoreError};

/// What checking the live data found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum DataCheck {
    /// Every live extent is intact.
    Intact,
    /// An extent the last record appended is damaged: that record is a torn write.
    TornLast,
}

/// Reads extents of the segment files in one directory, keeping each file open once opened.
struct ExtentReader<'a> {
    dir: &'a Path,
    /// Open segment files and their lengths; `None` for a missing file.
    files: HashMap<u64, Option<(File, u64)>>,
}

impl<'a> ExtentReader<'a> {
    fn new(dir: &'a Path) -> ExtentReader<'a> {
        ExtentReader {
            dir,
            files: HashMap::new(),
        }
    }

    fn path(&self, segment: u64) -> PathBuf {
        self.dir.join(segment_name(segment))
    }

    /// Reads `extent` into `buf` (resized to it) and checks it against its checksum.
    fn read(&mut self, extent: &Extent, buf: &mut Vec<u8>) -> Result<(), ReadFailure> {
        let path = self.path(extent.segment);
        let file = match self.files.entry(extent.segment) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(open(&path)?),
        };
        let Some((file, file_len)) = file else {
            return Err(ReadFailure::Damage(DataDamage::MissingFile));
        };
        let end = extent.offset + u64::from(extent.len);
        if end > *file_len {
            let file_len = *file_len;
            return Err(ReadFailure::Damage(DataDamage::CutShort { file_len }));
        }
        buf.resize(extent.len as usize, 0);
        file.read_exact_at(buf, extent.offset)
            .at(&path)
            .map_err(ReadFailure::Io)?;
        if crc32fast::hash(buf) != extent.crc {
            return Err(ReadFailure::Damage(DataDamage::Checksum));
        }
        Ok(())
    }

    /// The corruption error for a damaged `extent`.
    fn corrupt(&self, extent: &Extent, damage: DataDamage) -> StoreError {
        Corruption::SegmentData {
            path: self.path(extent.segment),
            offset: extent.offset,
            len: u64::from(extent.len),
            damage,
        }
        .into()
    }
}

/// Why an extent could not be read.
enum ReadFailure {
    /// The bytes are missing or damaged.
    Damage(DataDamage),
    /// The operating system refused a read.
    Io(StoreError),
}

/// Opens a segment file for reading with its length, or `None` if it does not exist.
fn open(path: &Path) -> Result<Option<(File, u64)>, ReadFailure> {
    let opened = File::open(path).and_then(|f| {
        let len = f.metadata()?.len();
        Ok((f, len))
    });
    match opened {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ReadFailure::Io(StoreError::Io {
            path: path.to_path_buf(),
            source: e,
        })),
    }
}

/// Every extent a live value has a piece in, in file order.
fn live_extents(live: &LiveMap) -> BTreeSet<Extent> {
    live.map
        .values()
        .filter_map(|v| match v {
            Value::Data(pieces) => Some(pieces.iter().map(|p| p.extent)),
            Value::Inline(_) => None,
        })
        .flatten()
        .collect()
}

/// Checks every live extent against its checksum. A damaged one that the last record appended
/// (`last_appended`) makes that record a torn write; any other is [`Corruption::SegmentData`].
pub(super) fn check_live_data(
    dir: &Path,
    live: &LiveMap,
    last_appended: &[Extent],
) -> Result<DataCheck, StoreError> {
    let mut reader = ExtentReader::new(dir);
    let mut buf = Vec::new();
    let mut verdict = DataCheck::Intact;
    for extent in live_extents(live) {
        match reader.read(&extent, &mut buf) {
            Ok(()) => {}
            Err(ReadFailure::Io(e)) => return Err(e),
            Err(ReadFailure::Damage(_)) if last_appended.contains(&extent) => {
                verdict = DataCheck::TornLast;
            }
            Err(ReadFailure::Damage(damage)) => return Err(reader.corrupt(&extent, damage)),
        }
    }
    Ok(verdict)
}

/// Every live entry with its value: data values read from their segments (each extent once,
/// checked against its checksum; a value of one piece is a slice of it, not a copy).
pub(super) fn load_values(dir: &Path, live: &LiveMap) -> Result<Vec<(Vec<u8>, Bytes)>, StoreError> {
    let mut reader = ExtentReader::new(dir);
    let mut extents: HashMap<Extent, Bytes> = HashMap::new();
    for extent in live_extents(live) {
        let mut buf = Vec::new();
        match reader.read(&extent, &mut buf) {
            Ok(()) => extents.insert(extent, Bytes::from(buf)),
            Err(ReadFailure::Io(e)) => return Err(e),
            Err(ReadFailure::Damage(damage)) => return Err(reader.corrupt(&extent, damage)),
        };
    }
    let part = |p: &super::value::Piece| {
        let start = p.start as usize;
        extents[&p.extent].slice(start..start + p.len as usize)
    };
    let value = |v: &Value| match v {
        Value::Inline(bytes) => bytes.clone(),
        Value::Data(pieces) if pieces.len() == 1 => part(&pieces[0]),
        Value::Data(pieces) => {
            let mut out = BytesMut::with_capacity(v.len() as usize);
            pieces.iter().for_each(|p| out.extend_from_slice(&part(p)));
            out.freeze()
        }
    };
    Ok(live
        .map
        .iter()
        .map(|(k, v)| (k.clone(), value(v)))
        .collect())
}
