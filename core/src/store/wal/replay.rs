//! Reading the log back on open, and the crash rule (see "Crash rule" in the module documentation
//! of [`super`]): a damaged last record is a torn tail and is cut off; a damaged record followed
//! by an intact one is corruption; a last record whose appended segment bytes are damaged is a
//! torn write and is cut off too.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use super::files::sync_dir;
use super::format::{
    check_body, check_file_header, file_header, LogOp, RecordHeader, FILE_HEADER_LEN,
    MAX_RECORD_BODY, RECORD_HEADER_LEN, VERSION, VERSION_INLINE_PAYLOADS,
};
use super::live::LiveMap;
use super::read::{check_live_data, DataCheck};
use super::value::{Extent, Value};
use super::LOG_NAME;
use crate::store::error::IoContext;
use crate::store::{Corruption, RecordDamage, StoreError, StoreStats};

/// Opens `dir/wal.log` (creating it if needed), replays it, cuts off a torn tail (of the log, or
/// a last record whose segment bytes did not survive) and checks every live extent. Returns the
/// log opened for reading and appending, its length and the live map it holds; counts the syncs
/// issued.
pub(super) fn recover_log(
    dir: &Path,
    stats: &mut StoreStats,
) -> Result<(File, u64, LiveMap), StoreError> {
    let path = dir.join(LOG_NAME);
    let file = open_log(dir, &path, stats)?;
    let file_len = file.metadata().at(&path)?.len();
    let mut replayed = replay(&file, &path, file_len)?;
    if replayed.torn {
        truncate(&file, &path, replayed.valid_len, stats)?;
    }
    let appended = replayed.last.as_ref().map_or(&[][..], |l| &l.appended[..]);
    if check_live_data(dir, &replayed.live, appended)? == DataCheck::TornLast {
        // Every commit syncs before the next starts, so only the last record can point at bytes
        // that did not reach the disk; it was never acknowledged.
        let last = replayed.last.expect("a torn last record exists");
        truncate(&file, &path, last.offset, stats)?;
        replayed = replay(&file, &path, last.offset)?;
        // Checked again: anything damaged now lies before the last record.
        check_live_data(dir, &replayed.live, &[])?;
    }
    Ok((file, replayed.valid_len, replayed.live))
}

/// Cuts the log at `len` and syncs the cut.
fn truncate(file: &File, path: &Path, len: u64, stats: &mut StoreStats) -> Result<(), StoreError> {
    file.set_len(len).at(path)?;
    file.sync_all().at(path)?;
    stats.syncs += 1;
    Ok(())
}

/// Opens the log at `path` in `dir` for reading and appending, creating it (or rewriting one
/// shorter than its header) with a synced header, and checks the header.
fn open_log(dir: &Path, path: &Path, stats: &mut StoreStats) -> Result<File, StoreError> {
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .at(path)?;
    let len = file.metadata().at(path)?.len();
    if len < FILE_HEADER_LEN as u64 {
        // Creation syncs the header before the log is used, so a shorter log holds no record.
        file.set_len(0).at(path)?;
        file.write_all(&file_header()).at(path)?;
        file.sync_all().at(path)?;
        sync_dir(dir)?;
        stats.syncs += 2;
        return Ok(file);
    }
    let mut header = [0u8; FILE_HEADER_LEN];
    (&file).read_exact(&mut header).at(path)?;
    let version = u32::from_le_bytes(header[8..].try_into().expect("four bytes"));
    if header[..8] == super::format::MAGIC && version == VERSION_INLINE_PAYLOADS {
        return Err(StoreError::OldLayout {
            dir: dir.to_path_buf(),
            found: version,
            expected: VERSION,
        });
    }
    check_file_header(&header, path)?;
    Ok(file)
}

/// What [`read_record`] found at one offset.
enum Scan {
    /// An intact record: its ops, and where the next record starts.
    Good { ops: Vec<LogOp>, end: u64 },
    /// A record failing its checks; `next` is its declared end if that lies inside the file.
    Bad {
        damage: RecordDamage,
        next: Option<u64>,
    },
    /// A length field above [`MAX_RECORD_BODY`].
    Oversized { body_len: u64 },
}

/// Reads the record at `off` (where `reader` is positioned), within a file of `file_len` bytes.
/// Leaves `reader` at the record's declared end unless the record is cut short or oversized.
fn read_record(reader: &mut impl Read, off: u64, file_len: u64) -> io::Result<Scan> {
    if file_len - off < RECORD_HEADER_LEN as u64 {
        return Ok(Scan::Bad {
            damage: RecordDamage::HeaderCutShort,
            next: None,
        });
    }
    let mut header = [0u8; RECORD_HEADER_LEN];
    reader.read_exact(&mut header)?;
    let RecordHeader { body_len, crc } = RecordHeader::parse(&header);
    if body_len > MAX_RECORD_BODY as u64 {
        return Ok(Scan::Oversized { body_len });
    }
    let end = off + RECORD_HEADER_LEN as u64 + body_len;
    if end > file_len {
        return Ok(Scan::Bad {
            damage: RecordDamage::BodyCutShort,
            next: None,
        });
    }
    let mut body = vec![0u8; body_len as usize];
    reader.read_exact(&mut body)?;
    Ok(match check_body(&body, crc) {
        Ok(ops) => Scan::Good { ops, end },
        Err(damage) => Scan::Bad {
            damage,
            next: Some(end),
        },
    })
}

/// The last intact record of a log: where it starts, and the extents it appended.
struct LastRecord {
    offset: u64,
    appended: Vec<Extent>,
}

/// The result of replaying a log.
struct Replayed {
    live: LiveMap,
    /// Length of the intact prefix of the log.
    valid_len: u64,
    /// Whether a torn tail follows `valid_len` and must be cut off.
    torn: bool,
    /// The last intact record.
    last: Option<LastRecord>,
}

/// Replays the first `file_len` bytes of `file` (at `path`, whose header has been checked) from
/// the first record on, applying the crash rule for log records.
fn replay(file: &File, path: &Path, file_len: u64) -> Result<Replayed, StoreError> {
    let mut reader = BufReader::with_capacity(1 << 20, file);
    reader
        .seek(SeekFrom::Start(FILE_HEADER_LEN as u64))
        .at(path)?;
    let mut replayed = Replayed {
        live: LiveMap::default(),
        valid_len: FILE_HEADER_LEN as u64,
        torn: false,
        last: None,
    };
    while replayed.valid_len < file_len {
        let off = replayed.valid_len;
        match read_record(&mut reader, off, file_len).at(path)? {
            Scan::Good { ops, end } => {
                replayed.last = Some(apply(&mut replayed.live, ops, off));
                replayed.valid_len = end;
            }
            Scan::Oversized { body_len } => {
                return Err(Corruption::OversizedRecord {
                    path: path.to_path_buf(),
                    offset: off,
                    body_len,
                    limit: MAX_RECORD_BODY,
                }
                .into());
            }
            Scan::Bad { damage, next } => {
                refuse_mid_log_damage(&mut reader, path, off, damage, next, file_len)?;
                replayed.torn = true;
                break;
            }
        }
    }
    Ok(replayed)
}

/// Applies the ops of the record at `offset` to `live`.
fn apply(live: &mut LiveMap, ops: Vec<LogOp>, offset: u64) -> LastRecord {
    let mut appended = Vec::new();
    for op in ops {
        match op {
            LogOp::Put { key, value } => live.put(key, Value::Inline(value)),
            LogOp::Delete { key } => live.delete(&key),
            LogOp::Data {
                key,
                pieces,
                appended: wrote,
            } => {
                if wrote {
                    appended.extend(pieces.iter().map(|p| p.extent));
                }
                live.put(key, Value::Data(Arc::from(pieces)));
            }
        }
    }
    LastRecord { offset, appended }
}

/// The crash rule for the damaged record at `off`: if an intact record follows at its declared
/// end `next` (where `reader` is positioned), the damage is in the middle of the log and is
/// [`Corruption::DamagedRecord`]; otherwise it is a torn tail and `Ok`.
fn refuse_mid_log_damage(
    reader: &mut impl Read,
    path: &Path,
    off: u64,
    damage: RecordDamage,
    next: Option<u64>,
    file_len: u64,
) -> Result<(), StoreError> {
    let Some(next) = next.filter(|&n| n < file_len) else {
        return Ok(());
    };
    match read_record(reader, next, file_len).at(path)? {
        Scan::Good { .. } => Err(Corruption::DamagedRecord {
            path: path.to_path_buf(),
            offset: off,
            damage,
            next,
        }
        .into()),
        Scan::Bad { .. } | Scan::Oversized { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{self, OpenOptions};

    use super::super::format::MAGIC;
    use super::super::test_support::*;
    use super::super::WalStore;
    use super::*;
    use crate::store::Store;

    #[test]
    fn torn_group_commit_is_all_or_nothing() -> TestResult {
        let dir = TestDir::new("group-torn");
        {
            let mut s = WalStore::open(dir.path())?;
            s.commit(&[put("before", "0")])?;
            s.commit(&[put("a", "1"), put("b", "2"), del("before")])?;
        }
        let len = dir.log_len();
        OpenOptions::new()
            .write(true)
            .open(dir.log())?
            .set_len(len - 1)?;
        let mut s = WalStore::open(dir.path())?;
        assert_eq!(s.load()?, kv(&[("before", "0")]));
        Ok(())
    }

    #[test]
    fn torn_tail_cut_short_is_dropped_and_truncated() -> TestResult {
        let dir = TestDir::new("torn-short");
        let sizes = {
            let mut s = WalStore::open(dir.path())?;
            commit_numbered(&mut s, 0..3)
        };
        OpenOptions::new()
            .write(true)
            .open(dir.log())?
            .set_len(sizes[2] - 3)?;
        {
            let mut s = WalStore::open(dir.path())?;
            assert_eq!(s.load()?, numbered(0..2));
            assert_eq!(dir.log_len(), sizes[1], "the torn record is cut off");
            assert_eq!(s.wal_stats().log_bytes, sizes[1]);
            s.commit(&[put("key9", "value9")])?;
        }
        let mut s = WalStore::open(dir.path())?;
        let mut expected = numbered(0..2);
        expected.extend(numbered(9..10));
        assert_eq!(s.load()?, expected);
        Ok(())
    }

    #[test]
    fn torn_tail_garbage_is_dropped_and_truncated() -> TestResult {
        let mut bad_crc = Vec::new();
        bad_crc.extend_from_slice(&10u32.to_le_bytes());
        bad_crc.extend_from_slice(&0xdead_beefu32.to_le_bytes());
        bad_crc.extend_from_slice(&[7u8; 10]);
        let tails: [(&str, Vec<u8>); 4] = [
            ("short header", vec![1, 2, 3]),
            ("zeros", vec![0; 40]),
            ("bad crc", bad_crc),
            ("body past end", vec![200, 0, 0, 0, 1, 2, 3, 4, 5]),
        ];
        for (name, tail) in tails {
            let dir = TestDir::new("torn-garbage");
            let sizes = {
                let mut s = WalStore::open(dir.path())?;
                commit_numbered(&mut s, 0..2)
            };
            append_to_log(&dir, &tail)?;
            {
                let mut s = WalStore::open(dir.path())?;
                assert_eq!(s.load()?, numbered(0..2), "{name}");
                assert_eq!(dir.log_len(), sizes[1], "{name}");
                s.commit(&[put("key2", "value2")])?;
            }
            let mut s = WalStore::open(dir.path())?;
            assert_eq!(s.load()?, numbered(0..3), "{name}");
        }
        Ok(())
    }

    #[test]
    fn every_prefix_of_the_log_opens_as_a_prefix_of_the_commits() -> TestResult {
        let dir = TestDir::new("prefixes");
        let mut states: Vec<(u64, Entries)> = Vec::new();
        {
            let mut s = WalStore::open(dir.path())?;
            states.push((s.wal_stats().log_bytes, Vec::new()));
            let groups = [
                vec![put("a", "1")],
                vec![put("b", "two"), put("c", "three")],
                vec![del("a"), put("b", "TWO")],
                vec![put("d", "")],
            ];
            for group in groups {
                s.commit(&group)?;
                states.push((s.wal_stats().log_bytes, s.load()?));
            }
        }
        let full = fs::read(dir.log())?;
        for len in FILE_HEADER_LEN..=full.len() {
            fs::write(dir.log(), &full[..len])?;
            let mut s = WalStore::open(dir.path())?;
            let (end, expected) = states
                .iter()
                .rev()
                .find(|(end, _)| *end <= len as u64)
                .expect("the header-only state is always a prefix");
            assert_eq!(&s.load()?, expected, "prefix of {len} bytes");
            assert_eq!(dir.log_len(), *end, "prefix of {len} bytes");
        }
        Ok(())
    }

    #[test]
    fn mid_file_damage_is_corrupt_and_left_untouched() -> TestResult {
        let header = FILE_HEADER_LEN;
        // (what, byte offset to change, new byte): a body byte and a checksum byte of record 1.
        let damages = [
            ("body", header + RECORD_HEADER_LEN + 6, None),
            ("crc", header + 5, None),
        ];
        let oversized = [("length", header + 3, Some(0xffu8))];
        for (what, at, value) in damages.into_iter().chain(oversized) {
            let dir = TestDir::new("midfile");
            {
                let mut s = WalStore::open(dir.path())?;
                commit_numbered(&mut s, 0..3);
            }
            let mut bytes = fs::read(dir.log())?;
            bytes[at] = value.unwrap_or(bytes[at] ^ 0x10);
            fs::write(dir.log(), &bytes)?;
            match WalStore::open(dir.path()) {
                Err(StoreError::Corrupt(
                    Corruption::DamagedRecord { offset, .. }
                    | Corruption::OversizedRecord { offset, .. },
                )) => assert_eq!(offset, header as u64, "{what}"),
                other => panic!("{what}: expected Corrupt, got {other:?}"),
            }
            assert_eq!(
                fs::read(dir.log())?,
                bytes,
                "{what}: a corrupt log is not modified"
            );
        }
        Ok(())
    }

    #[test]
    fn wrong_magic_or_version_is_corrupt() -> TestResult {
        let mut wrong_version = file_header();
        wrong_version[8] = 3;
        for (what, header) in [
            ("magic", *b"NOTAWAL!\x01\0\0\0"),
            ("version", wrong_version),
        ] {
            let dir = TestDir::new("magic");
            fs::create_dir_all(dir.path())?;
            fs::write(dir.log(), header)?;
            match WalStore::open(dir.path()) {
                Err(StoreError::Corrupt(c)) => assert!(
                    matches!(c, Corruption::Magic { .. } | Corruption::Version { .. }),
                    "{what}: {c}"
                ),
                other => panic!("{what}: expected Corrupt, got {other:?}"),
            }
        }
        Ok(())
    }

    #[test]
    fn log_shorter_than_its_header_is_reinitialized() -> TestResult {
        let dir = TestDir::new("short-header");
        fs::create_dir_all(dir.path())?;
        fs::write(dir.log(), &MAGIC[..5])?;
        {
            let mut s = WalStore::open(dir.path())?;
            assert_eq!(s.load()?, Vec::new());
            s.commit(&[put("k", "v")])?;
        }
        let mut s = WalStore::open(dir.path())?;
        assert_eq!(s.load()?, kv(&[("k", "v")]));
        Ok(())
    }
}
