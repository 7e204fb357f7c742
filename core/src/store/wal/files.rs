//! File-system steps shared by opening, compaction and locking, each reporting the path it
//! failed on.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use crate::store::error::IoContext;
use crate::store::StoreError;

/// Creates `dir` and its missing ancestors, syncing the parent of each one created so that the
/// store does not vanish with its directory entry after a power loss.
pub(super) fn create_dir_durably(dir: &Path) -> Result<(), StoreError> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .collect();
    fs::create_dir_all(dir).at(dir)?;
    for created in missing {
        match created.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent)?,
            _ => sync_dir(Path::new("."))?,
        }
    }
    Ok(())
}

/// Syncs a directory, making the entries created, renamed or removed in it durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// Removes a file; a file that is already absent is no error.
pub(super) fn remove_if_exists(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e).at(path),
        _ => Ok(()),
    }
}
