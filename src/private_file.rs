//! Files only their owner may read: a directory made 0700 (an existing one tightened to it)
//! and a file in it replaced atomically at 0600 (temp file, fsync, rename, fsync of the
//! directory), so a reader finds the old file or the new one whole, never part of one. The
//! secret store's versions and the job store's execution records are written this way.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A step of [`write_private`] that failed: what it did (`create`, `chmod`, `write`,
/// `fsync`, `rename`, `fsync directory`) and to which path.
#[derive(Debug)]
pub struct StepError {
    pub op: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
}

fn step(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StepError {
    let path = path.to_path_buf();
    move |source| StepError { op, path, source }
}

/// Creates `dir` and its missing parents for the owner alone (0700), and makes an
/// existing one so.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// Replaces `dir/name` with `data`, for the owner alone (0600): written to `dir/tmp_name`,
/// fsynced, renamed over `name`, then the directory fsynced. `dir` must exist
/// ([`private_dir`]).
pub fn write_private(dir: &Path, name: &str, tmp_name: &str, data: &[u8]) -> Result<(), StepError> {
    let path = dir.join(name);
    let tmp = dir.join(tmp_name);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(step("create", &tmp))?;
    // The umask may have taken bits off; an old temp file may be looser.
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(step("chmod", &tmp))?;
    f.write_all(data).map_err(step("write", &tmp))?;
    f.sync_all().map_err(step("fsync", &tmp))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(step("rename", &path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(step("fsync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_are_the_owners_alone_and_replaced_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700, "an existing directory is tightened");
        write_private(&dir, "f", ".f.tmp", b"one").unwrap();
        write_private(&dir, "f", ".f.tmp", b"two").unwrap();
        assert_eq!(fs::read(dir.join("f")).unwrap(), b"two");
        assert_eq!(mode(&dir.join("f")), 0o600);
        assert!(
            !dir.join(".f.tmp").exists(),
            "the temp file is renamed away"
        );
        let e = write_private(&tmp.path().join("none"), "f", ".f.tmp", b"x").unwrap_err();
        assert_eq!((e.op, e.path), ("create", tmp.path().join("none/.f.tmp")));
    }
}
