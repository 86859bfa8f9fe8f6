//! One owner per journal. A store opened for writing holds an exclusive
//! operating-system lock on a file beside the database (`<db>.lock`) for
//! its whole life, so that no second writer, in this process or another,
//! drives the same journal: a second open gets
//! [`StoreError::JournalLocked`] instead of resuming the runs the first is
//! running.
//!
//! The lock is `std::fs::File::try_lock` (`flock` on unix, `LockFileEx` on
//! Windows): it belongs to the open file, so the kernel releases it when the
//! process dies, however it dies, and two opens in one process exclude each
//! other too. SQLite's own `locking_mode=EXCLUSIVE` would not do: it locks
//! out the store's reader and checkpointer connections, and it only holds
//! from a connection's first write until the connection closes.
//!
//! After taking the lock the holder writes its process id and the time
//! into the file, read back only to say who holds it in the error; the
//! lock never depends on that text. The file is never deleted: deleting a
//! lock file lets two openers lock two different files of the same name.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::private;
use crate::records::{LockHolder, StoreError};

/// The lock file of the database at `db`: `<db>.lock`.
pub(crate) fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// A held journal lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub(crate) struct JournalLock {
    /// The lock lives exactly as long as this open file.
    _file: File,
}

impl JournalLock {
    /// Takes the lock of the journal at `db` (whose directory exists), or
    /// says who holds it.
    pub(crate) fn acquire(db: &Path) -> Result<JournalLock, StoreError> {
        let lock_file = lock_path(db);
        let io = |op: &'static str| {
            let path = db.to_owned();
            move |e: std::io::Error| StoreError::Io {
                path,
                op,
                source: Arc::new(e),
            }
        };
        let (mut file, _) =
            private::open_or_create_file(&lock_file).map_err(io("open the journal's lock file"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::JournalLocked {
                    path: db.to_owned(),
                    holder: read_holder(&lock_file),
                    lock_file,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(io("lock the journal")(e));
            }
        }
        // Only a hint for the next opener's error message.
        if let Err(error) = write_holder(&mut file) {
            tracing::debug!(path = %lock_file.display(), %error, "could not record the lock holder");
        }
        Ok(JournalLock { _file: file })
    }
}

fn write_holder(file: &mut File) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    let since = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    write!(file, "pid {}\nsince {since}\n", std::process::id())
}

/// The holder the lock file names, if it can be read (Windows keeps a
/// locked file unreadable to other handles).
fn read_holder(lock_file: &Path) -> Option<LockHolder> {
    let mut text = String::new();
    File::open(lock_file).ok()?.read_to_string(&mut text).ok()?;
    parse_holder(&text)
}

fn parse_holder(text: &str) -> Option<LockHolder> {
    let mut pid = None;
    let mut since = None;
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("pid", value)) => pid = value.trim().parse().ok(),
            Some(("since", value)) => {
                since = DateTime::parse_from_rfc3339(value.trim())
                    .ok()
                    .map(|t| t.with_timezone(&Utc));
            }
            _ => {}
        }
    }
    Some(LockHolder { pid: pid?, since })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_in_the_same_process_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("journal.sqlite");
        let first = JournalLock::acquire(&db).expect("first");
        let Err(StoreError::JournalLocked {
            path,
            lock_file,
            holder,
        }) = JournalLock::acquire(&db)
        else {
            panic!("a second lock was granted");
        };
        assert_eq!(path, db);
        assert_eq!(lock_file, dir.path().join("journal.sqlite.lock"));
        let holder = holder.expect("the holder is named");
        assert_eq!(holder.pid, std::process::id());
        assert!(holder.since.is_some());
        drop(first);
        JournalLock::acquire(&db).expect("free again");
    }

    #[test]
    fn holder_text_is_parsed_leniently() {
        let holder = parse_holder("pid 42\nsince 2026-01-02T03:04:05Z\n").expect("holder");
        assert_eq!(holder.pid, 42);
        assert_eq!(
            holder.since.map(|t| t.to_rfc3339()),
            Some("2026-01-02T03:04:05+00:00".to_owned())
        );
        assert_eq!(parse_holder("pid 7\n").map(|h| h.since), Some(None));
        assert_eq!(parse_holder(""), None);
        assert_eq!(parse_holder("pid x\n"), None);
    }
}
