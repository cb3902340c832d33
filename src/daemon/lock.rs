//! One daemon per state directory: an exclusive, non-blocking `flock` on
//! `<dir>/daemon.lock`, held for as long as the [`StateLock`] lives.
//!
//! The kernel drops a `flock` when the last descriptor of its open file description
//! closes, so a daemon killed with SIGKILL frees the directory with no stale-lock cleanup;
//! the file is opened close-on-exec, so containers or helpers the daemon spawns do not
//! keep it. The holder writes its pid into the file only so that the refusal can name
//! it; the lock, not the file's content, is the truth, and the file is never removed
//! (removing a lock file lets two processes lock two different files).
//!
//! Take the lock before opening the [`super::store::Store`]: opening removes temp files,
//! which must not happen under another daemon's writes.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use thiserror::Error;

/// Name of the lock file in the state directory.
pub const LOCK_FILE: &str = crate::control::owner::DAEMON_LOCK_FILE;

/// Why the state directory could not be locked.
#[derive(Debug, Error)]
pub enum LockError {
    #[error("another runlet daemon (pid {pid}) is using {}", dir.display())]
    Held { pid: u32, dir: PathBuf },
    /// Held, but the holder's pid could not be read (it may be between locking and
    /// writing it, or the holder is not a runlet daemon).
    #[error("another runlet daemon is using {} (no pid in {LOCK_FILE})", dir.display())]
    HeldByUnknown { dir: PathBuf },
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The exclusive claim on a state directory; released when dropped (or when the process
/// ends, however it ends).
#[derive(Debug)]
pub struct StateLock {
    path: PathBuf,
    // Held for its Drop (which unlocks) and to keep the descriptor open.
    _file: Flock<File>,
}

impl StateLock {
    /// Creates `dir` (mode 0700) if needed, locks `<dir>/daemon.lock` without waiting and
    /// writes this process's pid into it.
    pub fn acquire(dir: &Path) -> Result<StateLock, LockError> {
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| LockError::Io { op, path, source }
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("creating directory", dir))?;
        let path = dir.join(LOCK_FILE);
        // Not truncated on open: the content is the holder's pid until we hold the lock.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .map_err(io("opening", &path))?;
        let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((_, Errno::EWOULDBLOCK)) => {
                let dir = dir.to_path_buf();
                return Err(match holder_pid(&path) {
                    Some(pid) => LockError::Held { pid, dir },
                    None => LockError::HeldByUnknown { dir },
                });
            }
            Err((_, errno)) => return Err(io("locking", &path)(io::Error::from(errno))),
        };
        let mut f: &File = &file;
        f.set_len(0)
            .and_then(|()| f.write_all(format!("{}\n", std::process::id()).as_bytes()))
            .map_err(io("writing the pid to", &path))?;
        Ok(StateLock { path, _file: file })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn holder_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    #[test]
    fn second_acquire_fails_naming_our_pid_until_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let lock = StateLock::acquire(&dir).unwrap();
        assert_eq!(lock.path(), dir.join(LOCK_FILE));
        assert_eq!(holder_pid(lock.path()), Some(std::process::id()));

        // A second open of the file is a second open file description: flock conflicts.
        let e = StateLock::acquire(&dir).unwrap_err();
        assert!(
            matches!(&e, LockError::Held { pid, .. } if *pid == std::process::id()),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "another runlet daemon (pid {}) is using {}",
                std::process::id(),
                dir.display()
            )
        );

        drop(lock);
        let again = StateLock::acquire(&dir).unwrap();
        assert_eq!(holder_pid(again.path()), Some(std::process::id()));
    }

    #[test]
    fn held_without_a_pid() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(LOCK_FILE);
        let other = File::create(&path).unwrap();
        let _held = Flock::lock(other, FlockArg::LockExclusive).unwrap();
        let e = StateLock::acquire(tmp.path()).unwrap_err();
        assert!(matches!(e, LockError::HeldByUnknown { .. }), "{e:?}");
    }

    /// Another process holds the lock and is then killed with SIGKILL: the refusal names
    /// its pid, and the directory is free once it is gone.
    #[test]
    fn killed_holder_frees_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(LOCK_FILE);
        // The shell keeps fd 9 (the locked open file description) across `exec sleep`.
        let script = format!(
            "exec 9<>'{p}'; flock -n 9 || exit 1; echo $$ >'{p}'; echo locked; exec sleep 60",
            p = path.display()
        );
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "locked\n");

        let e = StateLock::acquire(tmp.path()).unwrap_err();
        assert!(
            matches!(&e, LockError::Held { pid, .. } if *pid == child.id()),
            "{e:?}"
        );

        child.kill().unwrap();
        child.wait().unwrap();
        let lock = StateLock::acquire(tmp.path()).unwrap();
        assert_eq!(holder_pid(lock.path()), Some(std::process::id()));
    }
}
