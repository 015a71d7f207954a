//! A WAL directory on the local file system, read with blocking std I/O: listing
//! segments and recovering them one at a time. Used when a core starts (before it
//! serves anything) and by the offline tools; it names no runtime.

use std::path::{Path, PathBuf};

use super::recovery::Recovery;
use super::{Recovered, SegmentFile, WalError, WalIdentity, io_error, parse_segment_file_name};

/// The segment files of a WAL directory, ascending by sequence number.
pub fn list_segment_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let entries = std::fs::read_dir(dir).map_err(|e| io_error("read directory", &dir.display().to_string(), e))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error("read directory", &dir.display().to_string(), e))?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            segments.push((seq, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

/// Recovers the WAL in `dir`, one segment in memory at a time (blocking reads;
/// also used by the offline tools). `expected: None` adopts the first header's
/// identity.
pub fn recover_dir(dir: &Path, expected: Option<WalIdentity>) -> Result<Recovered, WalError> {
    let mut recovery = Recovery::new(expected);
    for (segment_seq, path) in list_segment_files(dir)? {
        let bytes = std::fs::read(&path).map_err(|e| io_error("read", &path.display().to_string(), e))?;
        let file_name = path.display().to_string();
        recovery.add_segment(&SegmentFile { file_name: &file_name, segment_seq, bytes: &bytes })?;
    }
    recovery.finish()
}
