//! The local secret store: `<state-dir>/secrets/<project>/<secret>/<version>`, one file per
//! version holding its bytes. Directories 0700, files 0600, each version written atomically
//! (temp file, fsync, rename, fsync of the directory) and never rewritten; changes are made
//! under an exclusive flock of `<state-dir>/secrets/.lock`, so two `runlet secrets`
//! commands cannot give two versions one number. Readers take no lock: a version file is
//! whole or absent.
//!
//! Errors name the secret (`projects/P/secrets/S/versions/N`), never its value.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::fcntl::{Flock, FlockArg};
use thiserror::Error;

use crate::private_file::{private_dir, write_private};
use crate::spec::secrets::{check_project, check_secret_id, Version};
use crate::spec::SpecError;

/// Secret Manager's largest version (64 KiB).
pub const MAX_VALUE: usize = 64 * 1024;

#[derive(Debug, Error)]
pub enum SecretError {
    #[error("secret {0} was not found")]
    SecretNotFound(String),
    #[error("secret version {0} was not found")]
    VersionNotFound(String),
    #[error("secret {0} has no version")]
    NoVersion(String),
    #[error("secret {0} already exists")]
    Exists(String),
    #[error("a secret version holds 1 byte to 64 KiB; {0} bytes given")]
    Size(usize),
    #[error(transparent)]
    Name(#[from] SpecError),
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

impl SecretError {
    /// A reference that names nothing in the store (the caller's mistake, not runlet's).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            SecretError::SecretNotFound(_)
                | SecretError::VersionNotFound(_)
                | SecretError::NoVersion(_)
        )
    }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SecretError {
    let path = path.display().to_string();
    move |source| SecretError::Io { op, path, source }
}

/// One version of a secret, as listed (never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub number: u32,
    pub created: SystemTime,
}

/// The store under a state directory.
#[derive(Debug, Clone)]
pub struct SecretStore {
    root: PathBuf,
}

/// `projects/P/secrets/S`.
pub fn secret_name(project: &str, secret: &str) -> String {
    format!("projects/{project}/secrets/{secret}")
}

impl SecretStore {
    pub fn new(state_dir: &Path) -> SecretStore {
        SecretStore {
            root: state_dir.join("secrets"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, project: &str, secret: &str) -> Result<PathBuf, SecretError> {
        check_project("--project", project)?;
        check_secret_id("SECRET", secret)?;
        Ok(self.root.join(project).join(secret))
    }

    /// Holds the store's lock until dropped.
    fn lock(&self) -> Result<Flock<File>, SecretError> {
        private_dir(&self.root).map_err(io_err("create directory", &self.root))?;
        let path = self.root.join(".lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("open", &path))?;
        Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| SecretError::Io {
            op: "lock",
            path: path.display().to_string(),
            source: e.into(),
        })
    }

    /// Creates secret `secret`, with version 1 holding `data` if given.
    pub fn create(
        &self,
        project: &str,
        secret: &str,
        data: Option<&[u8]>,
    ) -> Result<(), SecretError> {
        let dir = self.dir(project, secret)?;
        if let Some(d) = data {
            check_size(d)?;
        }
        let _lock = self.lock()?;
        if dir.exists() {
            return Err(SecretError::Exists(secret_name(project, secret)));
        }
        private_dir(&dir).map_err(io_err("create directory", &dir))?;
        if let Some(d) = data {
            write_version(&dir, 1, d)?;
        }
        Ok(())
    }

    /// Adds the next version of `secret`; returns its number.
    pub fn add_version(
        &self,
        project: &str,
        secret: &str,
        data: &[u8],
    ) -> Result<u32, SecretError> {
        let dir = self.dir(project, secret)?;
        check_size(data)?;
        let _lock = self.lock()?;
        if !dir.is_dir() {
            return Err(SecretError::SecretNotFound(secret_name(project, secret)));
        }
        let next = self
            .versions(project, secret)?
            .last()
            .map_or(1, |v| v.number + 1);
        write_version(&dir, next, data)?;
        Ok(next)
    }

    /// The secrets of `project`, by name.
    pub fn list(&self, project: &str) -> Result<Vec<(String, SystemTime)>, SecretError> {
        check_project("--project", project)?;
        let dir = self.root.join(project);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("read directory", &dir)(e)),
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if check_secret_id("SECRET", &name).is_err() {
                continue;
            }
            let created = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            out.push((name, created));
        }
        out.sort();
        Ok(out)
    }

    /// The versions of `secret`, oldest first.
    pub fn versions(&self, project: &str, secret: &str) -> Result<Vec<VersionInfo>, SecretError> {
        let dir = self.dir(project, secret)?;
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SecretError::SecretNotFound(secret_name(project, secret)))
            }
            Err(e) => return Err(io_err("read directory", &dir)(e)),
        };
        let mut out: Vec<VersionInfo> = entries
            .flatten()
            .filter_map(|e| {
                let number = e.file_name().to_str()?.parse::<u32>().ok()?;
                let created = e.metadata().and_then(|m| m.modified()).ok()?;
                Some(VersionInfo { number, created })
            })
            .collect();
        out.sort_by_key(|v| v.number);
        Ok(out)
    }

    /// Deletes `secret` and all its versions.
    pub fn delete(&self, project: &str, secret: &str) -> Result<(), SecretError> {
        let dir = self.dir(project, secret)?;
        let _lock = self.lock()?;
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(SecretError::SecretNotFound(secret_name(project, secret)))
            }
            Err(e) => Err(io_err("remove", &dir)(e)),
        }
    }

    /// The value of `version` of `secret` (`latest`: the highest number).
    pub fn access(
        &self,
        project: &str,
        secret: &str,
        version: Version,
    ) -> Result<Vec<u8>, SecretError> {
        let dir = self.dir(project, secret)?;
        if !dir.is_dir() {
            return Err(SecretError::SecretNotFound(secret_name(project, secret)));
        }
        let n = match version {
            Version::Number(n) => n,
            Version::Latest => self
                .versions(project, secret)?
                .last()
                .map(|v| v.number)
                .ok_or_else(|| SecretError::NoVersion(secret_name(project, secret)))?,
        };
        let path = dir.join(n.to_string());
        match fs::read(&path) {
            Ok(v) => Ok(v),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SecretError::VersionNotFound(
                format!("{}/versions/{n}", secret_name(project, secret)),
            )),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }
}

fn check_size(d: &[u8]) -> Result<(), SecretError> {
    if d.is_empty() || d.len() > MAX_VALUE {
        return Err(SecretError::Size(d.len()));
    }
    Ok(())
}

/// Writes version `n` in `dir` for the owner alone, atomically
/// ([`write_private`](crate::private_file::write_private)).
fn write_version(dir: &Path, n: u32, data: &[u8]) -> Result<(), SecretError> {
    write_private(dir, &n.to_string(), &format!(".{n}.tmp"), data).map_err(|e| SecretError::Io {
        op: e.op,
        path: e.path.display().to_string(),
        source: e.source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn versions_are_added_listed_read_and_deleted() {
        let tmp = tempfile::tempdir().unwrap();
        let s = SecretStore::new(tmp.path());
        s.create("local", "db", Some(b"one")).unwrap();
        assert_eq!(s.add_version("local", "db", b"two").unwrap(), 2);
        assert_eq!(s.access("local", "db", Version::Number(1)).unwrap(), b"one");
        assert_eq!(s.access("local", "db", Version::Latest).unwrap(), b"two");
        let v: Vec<u32> = s
            .versions("local", "db")
            .unwrap()
            .iter()
            .map(|v| v.number)
            .collect();
        assert_eq!(v, [1, 2]);
        s.create("local", "api", None).unwrap();
        let names: Vec<String> = s
            .list("local")
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["api", "db"]);
        assert!(s.list("other").unwrap().is_empty());
        // Modes: the owner's alone; no temp file left.
        assert_eq!(mode(s.root()), 0o700);
        assert_eq!(mode(&s.root().join("local/db")), 0o700);
        assert_eq!(mode(&s.root().join("local/db/1")), 0o600);
        let left: Vec<_> = fs::read_dir(s.root().join("local/db"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
        s.delete("local", "db").unwrap();
        assert!(matches!(
            s.access("local", "db", Version::Latest),
            Err(SecretError::SecretNotFound(_))
        ));
    }

    #[test]
    fn errors_name_the_secret_and_version() {
        let tmp = tempfile::tempdir().unwrap();
        let s = SecretStore::new(tmp.path());
        let msg = |e: SecretError| {
            assert!(e.is_not_found(), "{e}");
            e.to_string()
        };
        assert_eq!(
            msg(s.access("local", "nope", Version::Latest).unwrap_err()),
            "secret projects/local/secrets/nope was not found"
        );
        s.create("p1", "empty", None).unwrap();
        assert_eq!(
            msg(s.access("p1", "empty", Version::Latest).unwrap_err()),
            "secret projects/p1/secrets/empty has no version"
        );
        s.add_version("p1", "empty", b"x").unwrap();
        assert_eq!(
            msg(s.access("p1", "empty", Version::Number(7)).unwrap_err()),
            "secret version projects/p1/secrets/empty/versions/7 was not found"
        );
        assert!(matches!(
            s.add_version("p1", "gone", b"x"),
            Err(SecretError::SecretNotFound(_))
        ));
        assert!(matches!(
            s.create("p1", "empty", None),
            Err(SecretError::Exists(_))
        ));
        assert!(matches!(
            s.delete("p1", "gone"),
            Err(SecretError::SecretNotFound(_))
        ));
        assert!(matches!(
            s.create("p1", "big", Some(&vec![0; MAX_VALUE + 1])),
            Err(SecretError::Size(_))
        ));
        assert!(matches!(
            s.add_version("p1", "empty", b""),
            Err(SecretError::Size(0))
        ));
        assert!(matches!(
            s.create("p1", "../x", None),
            Err(SecretError::Name(_))
        ));
        assert!(matches!(
            s.create("P", "x", None),
            Err(SecretError::Name(_))
        ));
    }

    #[test]
    fn concurrent_adds_get_distinct_numbers() {
        let tmp = tempfile::tempdir().unwrap();
        let s = SecretStore::new(tmp.path());
        s.create("local", "c", None).unwrap();
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let s = s.clone();
                std::thread::spawn(move || {
                    s.add_version("local", "c", format!("v{i}").as_bytes())
                        .unwrap()
                })
            })
            .collect();
        let mut got: Vec<u32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        got.sort();
        assert_eq!(got, (1..=8).collect::<Vec<_>>());
    }
}
