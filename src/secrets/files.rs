//! Secret files on the instance's tmpfs: each secret directory is written under
//! `<instance dir>/rootfs/secrets/<n>/` (the in-memory file system runlet mounts for the
//! instance's writable layer, so the bytes never reach a disk and go with the instance)
//! and bind-mounted read-only at its path in the container.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::resolve::SecretDir;

fn host_dir(tmpfs: &Path, i: usize) -> PathBuf {
    tmpfs.join("secrets").join(i.to_string())
}

/// The bind mounts for `dirs` under `tmpfs`: (path in the container, path on the host).
pub fn binds(tmpfs: &Path, dirs: &[SecretDir]) -> Vec<(String, String)> {
    dirs.iter()
        .enumerate()
        .map(|(i, d)| (d.mount.clone(), host_dir(tmpfs, i).display().to_string()))
        .collect()
}

/// Writes `dirs` under `tmpfs` (already mounted): `secrets/` is root's alone (0700); each
/// directory in it is readable by any user (0555, files 0444), as the container's user
/// reaches it only through its bind mount.
pub fn write(tmpfs: &Path, dirs: &[SecretDir]) -> io::Result<()> {
    if dirs.is_empty() {
        return Ok(());
    }
    let top = tmpfs.join("secrets");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&top)?;
    for (i, d) in dirs.iter().enumerate() {
        let base = host_dir(tmpfs, i);
        let mut made = vec![base.clone()];
        fs::create_dir(&base)?;
        for (rel, bytes) in &d.files {
            let path = base.join(rel);
            if let Some(parent) = path.parent() {
                if !parent.exists() {
                    fs::create_dir_all(parent)?;
                    made.push(parent.to_path_buf());
                }
            }
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o444)
                .open(&path)?;
            f.write_all(bytes)?;
        }
        for dir in made {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o555))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_written_and_bound_read_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = vec![
            SecretDir {
                mount: "/secrets/api".into(),
                files: vec![
                    ("key".into(), b"k1".to_vec()),
                    ("sub/old".into(), b"k0".to_vec()),
                ],
            },
            SecretDir {
                mount: "/certs".into(),
                files: vec![("tls".into(), b"t".to_vec())],
            },
        ];
        write(tmp.path(), &dirs).unwrap();
        let b = binds(tmp.path(), &dirs);
        assert_eq!(b[0].0, "/secrets/api");
        assert_eq!(b[1].0, "/certs");
        assert_eq!(fs::read(Path::new(&b[0].1).join("key")).unwrap(), b"k1");
        assert_eq!(fs::read(Path::new(&b[0].1).join("sub/old")).unwrap(), b"k0");
        assert_eq!(fs::read(Path::new(&b[1].1).join("tls")).unwrap(), b"t");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&tmp.path().join("secrets")), 0o700);
        assert_eq!(mode(Path::new(&b[0].1)), 0o555);
        assert_eq!(mode(&Path::new(&b[0].1).join("key")), 0o444);
        // Nothing to write: nothing made.
        let empty = tempfile::tempdir().unwrap();
        write(empty.path(), &[]).unwrap();
        assert!(!empty.path().join("secrets").exists());
    }
}
