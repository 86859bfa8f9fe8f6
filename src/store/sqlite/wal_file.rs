//! Allocating the `-wal` file's blocks before commits need them.
//!
//! A commit that appends to the WAL past the file's end makes its `fsync`
//! also allocate blocks and write the file's inode (its size changed), which
//! makes commits dearer (BENCHMARKS.md, "Preallocated WAL, restarted once
//! per `wal_restart_pages`"). A WAL that restarts from its beginning
//! overwrites blocks it already has and pays none of that. So at open the
//! writer extends the WAL file, by writing zeros, to the size it reaches
//! between restarts, and syncs it once: every commit then writes inside
//! allocated, initialized blocks. Zeros, not `set_len` (a sparse extension
//! allocates nothing) nor `fallocate` (ext4 marks such blocks unwritten, and
//! the first write into each converts it: a metadata write again).
//!
//! Why the extra bytes are safe: SQLite reads a WAL frame by frame from its
//! header and stops at the first frame whose salts or checksum do not match
//! (`walIndexRecover`, `walDecodeFrame` in `sqlite3.c`); a zero frame has
//! page number 0 and is rejected, and a zero header (before the first commit)
//! reads as an empty WAL. This is the state a restarted WAL is in anyway:
//! valid frames followed by bytes of an older generation.
//!
//! Nothing the store does shrinks the file again while it is open: SQLite
//! truncates a WAL only for `PRAGMA journal_size_limit` (unset: -1), a
//! `wal_checkpoint(TRUNCATE)` (issued only when the writer closes) and at
//! close, where the last connection deletes it; the next open allocates it
//! again. A checkpoint
//! another process runs with `TRUNCATE` only costs speed until the reopen.

use std::fs::OpenOptions;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Zeros written per call while extending.
const ZEROS: usize = 256 * 1024;

/// The most the store allocates ahead (256 MiB): a larger WAL setting grows
/// the file past this as commits need it, rather than writing gigabytes of
/// zeros at every open.
pub(crate) const MAX_PREALLOCATED_BYTES: u64 = 256 * 1024 * 1024;

/// The WAL file SQLite keeps beside the database at `db`.
pub(crate) fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Size of a WAL holding `frames` frames of `page_size`-byte pages: a 32-byte
/// header, then per frame a 24-byte frame header and the page.
pub(crate) fn wal_bytes(frames: u64, page_size: u64) -> u64 {
    32 + frames * (24 + page_size)
}

/// The length to allocate the WAL file to for `frames` frames of
/// `page_size`-byte pages, at most [`MAX_PREALLOCATED_BYTES`].
pub(crate) fn target_len(frames: u64, page_size: u64) -> u64 {
    wal_bytes(frames, page_size).min(MAX_PREALLOCATED_BYTES)
}

/// Extends the existing file at `path` with zeros up to `len` bytes and syncs
/// it; bytes already in the file are left alone. The caller holds the WAL's
/// write lock, so nobody appends frames past the length read here. Returns how many bytes it
/// added (0 when the file already has `len` bytes), or `None` when there is
/// no file: it is SQLite's to create, with its own permissions.
pub(crate) fn preallocate(path: &Path, len: u64) -> io::Result<Option<u64>> {
    let mut file = match OpenOptions::new().write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let start = file.metadata()?.len();
    if start >= len {
        return Ok(Some(0));
    }
    let zeros = vec![0u8; ZEROS];
    file.seek(SeekFrom::Start(start))?;
    let mut at = start;
    while at < len {
        let n = usize::try_from(len - at).map_or(ZEROS, |left| left.min(ZEROS));
        file.write_all(&zeros[..n])?;
        at += n as u64;
    }
    file.sync_all()?;
    Ok(Some(len - start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extends_with_allocated_zeros_and_keeps_existing_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db-wal");
        std::fs::write(&path, b"frames").expect("write");
        let len = wal_bytes(100, 4096);
        assert_eq!(preallocate(&path, len).expect("preallocate"), Some(len - 6));
        let meta = std::fs::metadata(&path).expect("metadata");
        assert_eq!(meta.len(), len);
        // Allocated, not sparse: `blocks` counts 512-byte units on disk.
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            assert!(meta.blocks() * 512 >= len, "{} blocks", meta.blocks());
        }
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(&bytes[..6], b"frames");
        assert!(bytes[6..].iter().all(|&b| b == 0));
        assert_eq!(preallocate(&path, len).expect("again"), Some(0));
        assert_eq!(preallocate(&path, 10).expect("smaller"), Some(0));
        assert_eq!(std::fs::metadata(&path).expect("metadata").len(), len);
    }

    #[test]
    fn the_allocation_is_capped() {
        assert_eq!(target_len(6000, 4096), wal_bytes(6000, 4096));
        assert_eq!(
            target_len(u64::from(u32::MAX) * 2, 65536),
            MAX_PREALLOCATED_BYTES
        );
    }

    #[test]
    fn a_missing_file_is_not_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("absent-wal");
        assert_eq!(preallocate(&path, 4096).expect("preallocate"), None);
        assert!(!path.exists());
    }

    #[test]
    fn wal_path_appends_the_suffix() {
        assert_eq!(
            wal_path(Path::new("/a/journal.sqlite")),
            PathBuf::from("/a/journal.sqlite-wal")
        );
    }
}
