//! The `LOCK` file that keeps a second process from opening the same store.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::files::remove_if_exists;
use crate::store::error::IoContext;
use crate::store::StoreError;

/// Name of the lock file in the store's directory.
pub(super) const LOCK_NAME: &str = "LOCK";

/// The `LOCK` file of an open store, removed on drop.
///
/// It holds `"<pid> <start time>"` (the start time from `/proc/<pid>/stat`, so that a reused pid,
/// common in containers, is not mistaken for the holder). A lock whose holder is no longer running
/// is taken over. Where `/proc` is unavailable liveness cannot be checked and every existing lock
/// is taken over. The check-then-take-over is not atomic: the lock guards against starting a
/// second node on the same directory, not against two starting in the same instant.
pub(super) struct DirLock {
    path: PathBuf,
    contents: String,
}

impl DirLock {
    /// Takes the lock of the store in `dir`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Locked`] if a running process holds it, [`StoreError::LockContended`] if
    /// another process keeps re-creating it, [`StoreError::Io`] if a file operation fails.
    pub(super) fn acquire(dir: &Path) -> Result<DirLock, StoreError> {
        let path = dir.join(LOCK_NAME);
        let pid = std::process::id();
        let contents = format!("{pid} {}\n", process_start_time(pid).unwrap_or_default());
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    file.write_all(contents.as_bytes()).at(&path)?;
                    return Ok(DirLock { path, contents });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let holder = fs::read_to_string(&path).unwrap_or_default();
                    if holder_alive(&holder) {
                        return Err(StoreError::Locked {
                            holder: holder.trim().to_string(),
                            path,
                        });
                    }
                    remove_if_exists(&path)?;
                }
                Err(e) => return Err(e).at(&path),
            }
        }
        Err(StoreError::LockContended { path })
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Only remove the lock if it is still ours; errors cannot be reported from drop.
        if fs::read_to_string(&self.path).is_ok_and(|c| c == self.contents) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Whether the process recorded in a lock file's `contents` still runs.
fn holder_alive(contents: &str) -> bool {
    let mut fields = contents.split_whitespace();
    let Some(pid) = fields.next().and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    match process_start_time(pid) {
        None => false,
        Some(start) => fields.next().is_none_or(|recorded| recorded == start),
    }
}

/// The start time (field 22 of `/proc/<pid>/stat`) of a running process, or `None` if it is not
/// running or `/proc` is unavailable.
fn process_start_time(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: skip past it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{TestDir, TestResult};
    use super::super::WalStore;
    use super::*;

    #[test]
    fn second_open_is_locked_and_stale_locks_are_taken_over() -> TestResult {
        let dir = TestDir::new("lock");
        let lock = dir.path().join(LOCK_NAME);
        let first = WalStore::open(dir.path())?;
        match WalStore::open(dir.path()) {
            Err(StoreError::Locked { path, holder }) => {
                assert_eq!(path, lock);
                let pid = std::process::id().to_string();
                assert_eq!(holder.split_whitespace().next(), Some(pid.as_str()));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(first);
        assert!(!lock.exists(), "the lock is released on drop");
        // A pid that cannot exist (above Linux's pid_max).
        fs::write(&lock, format!("{} 1\n", u32::MAX))?;
        drop(WalStore::open(dir.path())?);
        if let Some(start) = process_start_time(std::process::id()) {
            // Our own pid with another start time: a reused pid after a restart.
            fs::write(&lock, format!("{} {start}9\n", std::process::id()))?;
            drop(WalStore::open(dir.path())?);
        }
        fs::write(&lock, "")?;
        drop(WalStore::open(dir.path())?);
        Ok(())
    }
}
