//! Files only the server's own user may read (SPEC section 1): the data
//! directory and every directory portcullis makes in it are created 0700, and
//! every file it writes there (the database with its `-wal` and `-shm`, the
//! key file, outbox mail) is 0600, whatever the umask. The umask can only
//! take permissions away, so asking for these modes at creation is enough
//! for new files; files left readable by an earlier version are narrowed.

use std::fs::File;
use std::io;
use std::path::Path;

/// Creates the data directory `dir` (and its missing parents) with mode
/// 0700. One that already exists is left as it is, with a warning when
/// others may read it (the operator may have chosen that, for a backup user).
pub fn create_data_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(dir) {
            if meta.is_dir() && meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    dir = %dir.display(),
                    mode = format!("{:o}", meta.permissions().mode() & 0o777),
                    "the data directory can be read by other users; 0700 keeps them out"
                );
            }
        }
    }
    make_dir(dir)
}

/// Creates a directory of portcullis's own inside the data directory (the
/// outbox) with mode 0700, narrowing one an earlier version left readable.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    make_dir(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(dir)?;
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    Ok(())
}

fn make_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}
/// Creates a new file at `path` with mode 0600; an error if it exists.
pub fn create_new(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Makes sure the file at `path`, if it exists, is 0600, and creates it
/// empty with that mode if it does not (a database SQLite will then fill:
/// SQLite gives its `-wal` and `-shm` files the mode of the database).
pub fn ensure(path: &Path) -> io::Result<()> {
    match create_new(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => narrow(path),
        Err(e) => Err(e),
    }
}

/// Narrows an existing file to 0600; nothing when it does not exist.
pub fn narrow(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(path) {
            Ok(meta) if meta.permissions().mode() & 0o177 != 0 => {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            }
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_and_directories_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/b");
        create_data_dir(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        let outbox = data.join("outbox");
        std::fs::create_dir(&outbox).unwrap();
        std::fs::set_permissions(&outbox, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_dir(&outbox).unwrap();
        assert_eq!(mode(&outbox), 0o700);
        let file = data.join("db");
        ensure(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        ensure(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        narrow(&data.join("missing")).unwrap();
        assert!(create_new(&file).is_err());
    }
}
