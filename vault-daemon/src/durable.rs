//! Durable small-file writes: a file that a crash or power cut leaves either as it was or as
//! written, never torn or missing.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` with `mode` atomically: a temporary file beside it (`<name>.tmp`,
/// truncated if a crash left one), fsync, rename over `path`, fsync the directory (the rename
/// is only durable once the directory is).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    sync_dir(parent(path))
}

/// Writes `bytes` to `path` with `mode` unless `path` exists, atomically: a temporary file
/// beside it, fsync, hard-linked into place (which, unlike a rename, refuses to replace), fsync
/// the directory. Returns `false` if another writer created `path` first (its content stands):
/// for files two first starts may race to create, such as key files.
pub(crate) fn create_once(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<bool> {
    let tmp = temp_path(path);
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(&tmp)?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    drop(f);
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => sync_dir(parent(path)).map(|()| true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Fsyncs the directory holding `path`, making its creation, rename or removal durable.
pub(crate) fn sync_parent(path: &Path) -> std::io::Result<()> {
    sync_dir(parent(path))
}

/// Fsyncs a directory, making the creation, rename or removal of its entries durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The temporary file [`write_atomic`] writes first: the file name with `.tmp` appended, so two
/// files that differ only in their extension never share one.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_survives_a_stale_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("root.key");
        std::fs::write(
            temp_path(&p),
            b"left by a crash, longer than what comes next",
        )
        .unwrap();
        write_atomic(&p, b"one", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        assert!(!temp_path(&p).exists());
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(temp_path(&p), dir.path().join("root.key.tmp"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
}
