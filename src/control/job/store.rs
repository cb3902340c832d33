//! Where execution records live: one JSON document per execution under
//! `<state-dir>/jobs/executions/<execution>.json`.
//!
//! A record is replaced durably (temp file, fsync, rename, fsync of the directory) each time
//! the execution's state changes, so a crash loses no result already reported. The runlet
//! running an execution holds an exclusive `flock` on `<execution>.lock` for its whole life;
//! the kernel drops it when that process dies however it dies, which is how a later runlet
//! tells a running execution from an abandoned one ([`RecordStore::try_claim`]).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use thiserror::Error;

use super::record::ExecutionRecord;
use crate::private_file::{private_dir, write_private};

#[derive(Debug, Error)]
pub enum RecordError {
    #[error("execution record {path}: {op}")]
    Io {
        op: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("execution record {path} is not readable")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("encoding execution record {path}")]
    Encode {
        path: String,
        source: serde_json::Error,
    },
    #[error("writing execution record {name} on a blocking thread")]
    Join {
        name: String,
        source: tokio::task::JoinError,
    },
    #[error("execution {name} not found (see `runlet job executions list`)")]
    NotFound { name: String },
    #[error("execution {name} is already locked by another runlet")]
    Locked { name: String },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RecordError {
    let path = path.display().to_string();
    move |source| RecordError::Io { op, path, source }
}

/// Where execution records live.
#[derive(Debug, Clone)]
pub struct RecordStore {
    dir: PathBuf,
}

/// The exclusive lock of the runlet that owns an execution. Dropping it releases the lock;
/// [`release`](Self::release) also removes the lock file.
#[derive(Debug)]
pub struct ExecutionLock {
    _lock: Flock<File>,
    path: PathBuf,
}

impl ExecutionLock {
    /// Removes the lock file, then releases the lock.
    pub fn release(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl RecordStore {
    pub fn new(state_dir: &Path) -> Self {
        RecordStore {
            dir: state_dir.join("jobs").join("executions"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn json(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    fn lock_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.lock"))
    }

    fn flock(&self, name: &str) -> Result<Option<ExecutionLock>, RecordError> {
        private_dir(&self.dir).map_err(io_err("create directory", &self.dir))?;
        let path = self.lock_path(name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open lock", &path))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(ExecutionLock { _lock: lock, path })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(RecordError::Io {
                op: "lock",
                path: path.display().to_string(),
                source: e.into(),
            }),
        }
    }

    /// Takes the lock of a new execution (held for as long as it runs).
    pub fn lock(&self, name: &str) -> Result<ExecutionLock, RecordError> {
        self.flock(name)?.ok_or_else(|| RecordError::Locked {
            name: name.to_string(),
        })
    }

    /// Takes the lock of an execution whose owner is gone; `None` while its owner lives.
    pub fn try_claim(&self, name: &str) -> Result<Option<ExecutionLock>, RecordError> {
        self.flock(name)
    }

    /// True while a live runlet owns execution `name`.
    pub fn is_live(&self, name: &str) -> bool {
        let path = self.lock_path(name);
        let Ok(file) = OpenOptions::new().write(true).open(&path) else {
            return false;
        };
        matches!(
            Flock::lock(file, FlockArg::LockExclusiveNonblock),
            Err((_, nix::errno::Errno::EWOULDBLOCK))
        )
    }

    /// Replaces the record durably: temp file, fsync, rename, fsync of the directory.
    pub fn save_blocking(&self, rec: &ExecutionRecord) -> Result<(), RecordError> {
        let bytes = serde_json::to_vec(rec).map_err(|source| RecordError::Encode {
            path: self.json(rec.name()).display().to_string(),
            source,
        })?;
        private_dir(&self.dir).map_err(io_err("create directory", &self.dir))?;
        // Records hold the job's environment values: the owner's alone (0600).
        let name = rec.name();
        write_private(
            &self.dir,
            &format!("{name}.json"),
            &format!(".{name}.json.tmp"),
            &bytes,
        )
        .map_err(|e| RecordError::Io {
            op: e.op,
            path: e.path.display().to_string(),
            source: e.source,
        })
    }

    /// [`save_blocking`](Self::save_blocking) on a blocking thread.
    pub async fn save(&self, rec: &ExecutionRecord) -> Result<(), RecordError> {
        let store = self.clone();
        let name = rec.name().to_string();
        let rec = rec.clone();
        tokio::task::spawn_blocking(move || store.save_blocking(&rec))
            .await
            .map_err(|source| RecordError::Join { name, source })?
    }

    pub fn load(&self, name: &str) -> Result<ExecutionRecord, RecordError> {
        let path = self.json(name);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RecordError::NotFound {
                    name: name.to_string(),
                })
            }
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        serde_json::from_slice(&text).map_err(|source| RecordError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    /// Removes execution `name`'s record and lock file (an execution that has ended);
    /// a missing record is no error.
    pub fn delete(&self, name: &str) -> Result<(), RecordError> {
        for path in [self.json(name), self.lock_path(name)] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("delete", &path)(e)),
            }
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            })
            .map_err(io_err("fsync directory", &self.dir))
    }

    /// Every record, newest first. Unreadable files are skipped (and returned as errors
    /// beside the records, for the caller to report).
    pub fn list(&self) -> (Vec<ExecutionRecord>, Vec<RecordError>) {
        let mut records = Vec::new();
        let mut errors = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (records, errors),
            Err(e) => {
                errors.push(io_err("list", &self.dir)(e));
                return (records, errors);
            }
        };
        for entry in entries.filter_map(Result::ok) {
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some(name) = file.strip_suffix(".json") else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            match self.load(name) {
                Ok(r) => records.push(r),
                Err(e) => errors.push(e),
            }
        }
        records.sort_by(|a, b| {
            b.status
                .start_time
                .cmp(&a.status.start_time)
                .then_with(|| b.name().cmp(a.name()))
        });
        (records, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::tests::{spec, t0};
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_store_writes_durably_and_locks() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::new(dir.path());
        let mut a = ExecutionRecord::new(&spec(1), "hello-aaaaa", 1, t0());
        store.save_blocking(&a).unwrap();
        a.status.start_time = "2023-11-14T22:13:21Z".into();
        a.metadata.name = "hello-bbbbb".into();
        store.save_blocking(&a).unwrap();
        assert_eq!(store.load("hello-bbbbb").unwrap(), a);
        let (list, errors) = store.list();
        assert!(errors.is_empty());
        assert_eq!(
            list.iter().map(|r| r.name()).collect::<Vec<_>>(),
            ["hello-bbbbb", "hello-aaaaa"]
        );
        // The owner's alone: the records hold environment values.
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(store.dir()), 0o700);
        assert_eq!(mode(&store.dir().join("hello-bbbbb.json")), 0o600);
        // No temp file is left behind.
        let names: Vec<String> = std::fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
        assert!(matches!(
            store.load("nope"),
            Err(RecordError::NotFound { .. })
        ));
        std::fs::write(store.dir().join("broken.json"), "{").unwrap();
        assert_eq!(store.list().1.len(), 1);

        assert!(!store.is_live("hello-aaaaa"));
        let lock = store.lock("hello-aaaaa").unwrap();
        assert!(store.is_live("hello-aaaaa"));
        assert!(store.try_claim("hello-aaaaa").unwrap().is_none());
        lock.release();
        assert!(!store.is_live("hello-aaaaa"));
        let claimed = store.try_claim("hello-aaaaa").unwrap().unwrap();
        assert!(store.is_live("hello-aaaaa"));
        drop(claimed);
        assert!(!store.is_live("hello-aaaaa"));

        store.delete("hello-aaaaa").unwrap();
        assert!(matches!(
            store.load("hello-aaaaa"),
            Err(RecordError::NotFound { .. })
        ));
        store.delete("hello-aaaaa").unwrap();
    }
}
