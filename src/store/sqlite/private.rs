//! A journal is private to its owner: run inputs and states may hold
//! personal data or secrets. On unix, the directories the store creates
//! for a journal get mode 0700 and the files it creates 0600, set
//! explicitly after creation so that the process's umask cannot widen
//! them. Directories and files that already existed are left as they are:
//! their modes are their owner's choice.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// Creates `dir` and its missing parents, each created one 0700.
pub(crate) fn create_dir(dir: &Path) -> io::Result<()> {
    let missing: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .map(Path::to_path_buf)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    for created in &missing {
        restrict(created, 0o700)?;
    }
    Ok(())
}

/// Opens `path` for reading and writing, creating it 0600 if it does not
/// exist; whether it was created.
pub(crate) fn open_or_create_file(path: &Path) -> io::Result<(File, bool)> {
    let mut create = OpenOptions::new();
    create.read(true).write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut create, 0o600);
    match create.open(path) {
        Ok(file) => {
            restrict(path, 0o600)?;
            Ok((file, true))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let file = OpenOptions::new().read(true).write(true).open(path)?;
            Ok((file, false))
        }
        Err(e) => Err(e),
    }
}

/// Sets `path`'s mode on unix if it exists; nothing elsewhere.
pub(crate) fn restrict_if_exists(path: &Path, mode: u32) -> io::Result<()> {
    match restrict(path, mode) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn restrict(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn created_directories_are_0700_and_existing_ones_are_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let before = mode(dir.path());
        let nested = dir.path().join("a").join("b");
        create_dir(&nested).expect("create");
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&nested), 0o700);
        assert_eq!(mode(dir.path()), before);
        create_dir(&nested).expect("again");
    }

    #[test]
    fn a_created_file_is_0600_and_an_existing_one_keeps_its_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let (_, created) = open_or_create_file(&path).expect("create");
        assert!(created);
        assert_eq!(mode(&path), 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let (_, created) = open_or_create_file(&path).expect("open");
        assert!(!created);
        assert_eq!(mode(&path), 0o640);
    }
}
