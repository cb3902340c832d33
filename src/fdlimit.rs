//! The open-file limit (`RLIMIT_NOFILE`): raised at start-up so idle client connections
//! and pooled upstream ones do not run runlet out of descriptors at the usual soft limit of
//! 1024, and given back to the processes runlet starts.
//!
//! `runlet serve`, `runlet job execute` and `runlet daemon` raise their soft limit to the
//! hard one ([`raise`]), as Go programs (containerd among them) and nginx's
//! `worker_rlimit_nofile` do. A process runlet starts gets the soft limit runlet started
//! with ([`restore_in_child`]), as Go's `os/exec` does: a private containerd, and through it
//! the containers, see the same limits as they would without runlet's raise.

use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use tracing::{debug, warn};

/// The soft limit before [`raise`] changed it (0: not changed).
static ORIGINAL_SOFT: AtomicU64 = AtomicU64::new(0);

/// The soft and hard `RLIMIT_NOFILE` of this process.
pub fn current() -> std::io::Result<(u64, u64)> {
    getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard one; returns the soft limit now in force.
/// Logs what it became at debug (a failure as a warning: runlet goes on with the old one).
pub fn raise() -> u64 {
    match try_raise() {
        Ok((before, after)) => {
            debug!("open-file limit (RLIMIT_NOFILE): soft {before} -> {after}");
            after
        }
        Err(e) => {
            warn!("cannot raise the open-file limit (RLIMIT_NOFILE): {e}");
            current().map_or(1024, |(soft, _)| soft)
        }
    }
}

fn try_raise() -> std::io::Result<(u64, u64)> {
    let (soft, hard) = current()?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(std::io::Error::from)?;
        let _ = ORIGINAL_SOFT.compare_exchange(0, soft, Ordering::Relaxed, Ordering::Relaxed);
    }
    Ok((soft, current()?.0))
}

/// Makes `cmd`'s process start with the soft limit runlet itself started with (a no-op if
/// [`raise`] changed nothing).
pub fn restore_in_child(cmd: &mut std::process::Command) {
    let soft = ORIGINAL_SOFT.load(Ordering::Relaxed);
    if soft == 0 {
        return;
    }
    let Ok((_, hard)) = current() else { return };
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook only calls setrlimit(2), which is async-signal-safe, and allocates
    // nothing.
    unsafe {
        cmd.pre_exec(move || {
            setrlimit(Resource::RLIMIT_NOFILE, soft, hard).map_err(std::io::Error::from)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one_and_children_get_the_old_one() {
        let (_, hard) = current().unwrap();
        let low = hard.min(512);
        setrlimit(Resource::RLIMIT_NOFILE, low, hard).unwrap();
        assert_eq!(raise(), hard);
        assert_eq!(current().unwrap(), (hard, hard));
        // A child starts with the limit the process had before the raise.
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "ulimit -Sn"]);
        restore_in_child(&mut cmd);
        let out = cmd.output().unwrap();
        let got = String::from_utf8_lossy(&out.stdout);
        let want = ORIGINAL_SOFT.load(Ordering::Relaxed);
        if low < hard {
            assert_eq!(got.trim(), want.to_string());
        }
    }
}
