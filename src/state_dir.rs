//! The state dir (`--state-dir`): private to root. It holds what the instances and jobs
//! carry (job records with env values, the daemon's store, the secret store, instance root
//! filesystems), so it is made mode 0700, and an existing one found looser is tightened to
//! it, before any command writes to it. The records inside are 0600 where they are written
//! (`control/job/store.rs`, `daemon/store.rs`, `secrets/store.rs`).

use std::fs::{DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// The state dir's mode.
pub const MODE: u32 = 0o700;

/// Creates `dir` (and its missing parents, all 0700) or sets an existing one to 0700.
pub fn prepare(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(MODE).create(dir)?;
    // The umask may have taken bits off a new one; an old one may be looser.
    if std::fs::metadata(dir)?.permissions().mode() & 0o7777 != MODE {
        std::fs::set_permissions(dir, Permissions::from_mode(MODE))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn made_private_or_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let new = tmp.path().join("a/state");
        prepare(&new).unwrap();
        assert_eq!(mode(&new), 0o700);
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        for loose in [0o755, 0o777, 0o500] {
            std::fs::set_permissions(&new, Permissions::from_mode(loose)).unwrap();
            prepare(&new).unwrap();
            assert_eq!(mode(&new), 0o700, "{loose:o}");
        }
        let file = tmp.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(prepare(&file).is_err(), "a file is not a state dir");
    }
}
