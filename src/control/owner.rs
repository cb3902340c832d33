//! Who owns a container: every container runlet creates carries a [`labels::OWNER`] label
//! naming the runlet that made it — the daemon of a state dir, or one `runlet serve` /
//! `runlet job execute` process — and one decision, [`verdict`], says what a runlet that
//! finds a container may do with it: adopt it, remove it, or leave it alone. Only a
//! container whose owner is gone may be taken over, and only by a runlet entitled to it
//! (the daemon of the same state dir, or a `runlet serve` of the same service).
//!
//! [`labels::OWNER`]: crate::runtime::labels::OWNER

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::runtime::labels;

/// The runlet that made a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// The daemon serving from this state dir (alive while it holds the dir's lock).
    Daemon(PathBuf),
    /// A foreground process (`runlet serve`, `runlet job execute`), by pid and the kernel's
    /// start time of that pid (so a reused pid is not taken for the owner).
    Process { pid: u32, start: u64 },
}

impl Owner {
    /// The label value: `daemon:<state dir>` or `process:<pid>:<start>`.
    pub fn label(&self) -> String {
        match self {
            Owner::Daemon(dir) => format!("daemon:{}", dir.display()),
            Owner::Process { pid, start } => format!("process:{pid}:{start}"),
        }
    }

    pub fn parse(label: &str) -> Option<Owner> {
        if let Some(dir) = label.strip_prefix("daemon:") {
            return Some(Owner::Daemon(PathBuf::from(dir)));
        }
        let rest = label.strip_prefix("process:")?;
        let (pid, start) = rest.split_once(':')?;
        Some(Owner::Process {
            pid: pid.parse().ok()?,
            start: start.parse().ok()?,
        })
    }

    /// This process, as a foreground owner.
    pub fn this_process() -> Owner {
        let pid = std::process::id();
        Owner::Process {
            pid,
            start: process_start(pid).unwrap_or(0),
        }
    }

    /// Whether the owner still runs: the process with the same start time exists, or the
    /// daemon's state dir lock is held.
    pub fn is_alive(&self) -> bool {
        match self {
            Owner::Process { pid, start } => process_start(*pid) == Some(*start),
            Owner::Daemon(dir) => daemon_lock_held(dir),
        }
    }
}

/// The file a daemon holds locked (`flock`) for as long as it runs, in its state dir.
pub const DAEMON_LOCK_FILE: &str = "daemon.lock";

/// Whether a daemon holds `dir`'s lock: a non-blocking shared lock fails while it does. The
/// probe's own lock is released at once.
fn daemon_lock_held(dir: &Path) -> bool {
    let Ok(file) = std::fs::File::open(dir.join(DAEMON_LOCK_FILE)) else {
        return false;
    };
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock) {
        Ok(_probe) => false,
        Err((_, errno)) => errno == nix::errno::Errno::EWOULDBLOCK,
    }
}

/// The kernel's start time (clock ticks after boot) of process `pid`, from
/// `/proc/<pid>/stat` field 22; `None` if there is no such process.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}

static CURRENT: OnceLock<Owner> = OnceLock::new();

/// Declares this process the daemon of `state_dir` (before it creates any container).
pub fn set_daemon(state_dir: &Path) {
    let _ = CURRENT.set(Owner::Daemon(state_dir.to_path_buf()));
}

/// The owner of the containers this process creates: the daemon if declared, else this
/// process.
pub fn current() -> &'static Owner {
    CURRENT.get_or_init(Owner::this_process)
}

/// The file in a container's directory (`<state-dir>/instances/ID/`, a job attempt's) that
/// names its owner, written before anything of the container outside the directory exists
/// (network namespace, address, root fs mount): a runlet that dies before the container
/// exists in containerd leaves no label, and this file says whose that leftover is.
pub const OWNER_FILE: &str = "owner";

/// Records this process's [`current`] owner in container directory `dir` (which exists).
pub fn record(dir: &Path) -> std::io::Result<()> {
    // Written aside and renamed: a full state dir leaves no empty or cut owner file.
    let tmp = dir.join(format!(".{OWNER_FILE}.tmp"));
    let r = std::fs::write(&tmp, current().label())
        .and_then(|()| std::fs::rename(&tmp, dir.join(OWNER_FILE)));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// The owner [`record`]ed in `dir`; `None` if there is no such file (a directory made by
/// a runlet before owner files, or one being made right now) or it cannot be parsed.
pub fn recorded(dir: &Path) -> Option<Owner> {
    let text = std::fs::read_to_string(dir.join(OWNER_FILE)).ok()?;
    Owner::parse(text.trim())
}

/// What a runlet may do with a container it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It is ours (our own daemon's, from before a restart): adopt it if it still serves.
    Adopt,
    /// Its owner is gone and we are entitled to it: remove it.
    Remove,
    /// Someone else's (alive, or not ours to judge): do not touch it.
    Leave,
}

/// The decision for a container this process finds, from its labels (its owner, and
/// whether that owner still runs); `entitled` as in [`verdict`].
pub fn verdict_on(container_labels: &HashMap<String, String>, entitled: bool) -> Verdict {
    let theirs = container_labels
        .get(labels::OWNER)
        .and_then(|o| Owner::parse(o));
    let alive = theirs.as_ref().is_some_and(Owner::is_alive);
    verdict(current(), theirs.as_ref(), alive, entitled)
}

/// The decision for a container labelled `theirs` (`None`: made before owner labels, by a
/// runlet now gone), found by `me`, where `alive` is whether `theirs` still runs and
/// `entitled` whether `me` would run the same thing (the same service, say).
pub fn verdict(me: &Owner, theirs: Option<&Owner>, alive: bool, entitled: bool) -> Verdict {
    match theirs {
        Some(t) if t == me => {
            if matches!(me, Owner::Daemon(_)) {
                Verdict::Adopt
            } else {
                // A foreground process never made what it finds at its start.
                Verdict::Remove
            }
        }
        Some(_) if alive => Verdict::Leave,
        _ if entitled => Verdict::Remove,
        _ => Verdict::Leave,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip() {
        for o in [
            Owner::Daemon("/var/lib/runlet".into()),
            Owner::Process {
                pid: 42,
                start: 123456,
            },
        ] {
            assert_eq!(Owner::parse(&o.label()), Some(o.clone()));
        }
        assert_eq!(Owner::parse("process:x:1"), None);
        assert_eq!(Owner::parse("other"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_made_up_one_is_not() {
        let me = Owner::this_process();
        assert!(me.is_alive());
        let Owner::Process { pid, start } = me else {
            unreachable!()
        };
        assert!(!Owner::Process {
            pid,
            start: start + 1
        }
        .is_alive());
    }

    #[test]
    fn a_daemon_is_alive_while_its_lock_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let owner = Owner::Daemon(dir.path().to_path_buf());
        assert!(!owner.is_alive());
        let f = std::fs::File::create(dir.path().join(DAEMON_LOCK_FILE)).unwrap();
        let held = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
        assert!(owner.is_alive());
        drop(held);
        assert!(!owner.is_alive());
    }

    #[test]
    fn the_recorded_owner_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(recorded(dir.path()), None);
        record(dir.path()).unwrap();
        assert_eq!(recorded(dir.path()).as_ref(), Some(current()));
        std::fs::write(dir.path().join(OWNER_FILE), "").unwrap();
        assert_eq!(recorded(dir.path()), None, "a file being written");
    }

    #[test]
    fn verdicts() {
        let daemon = Owner::Daemon("/var/lib/runlet".into());
        let other_daemon = Owner::Daemon("/srv/runlet".into());
        let serve = Owner::Process { pid: 10, start: 1 };
        let other = Owner::Process { pid: 11, start: 2 };
        use Verdict::*;
        let table = [
            // me, theirs, alive, entitled → verdict
            (&daemon, Some(&daemon), true, true, Adopt),
            (&daemon, Some(&serve), true, true, Leave),
            (&daemon, Some(&serve), false, true, Remove),
            (&daemon, Some(&serve), false, false, Leave),
            (&daemon, Some(&other_daemon), true, true, Leave),
            (&serve, Some(&daemon), true, true, Leave),
            (&serve, Some(&daemon), false, true, Remove),
            (&serve, Some(&other), true, true, Leave),
            (&serve, Some(&other), false, true, Remove),
            (&serve, Some(&other), false, false, Leave),
            (&serve, None, false, true, Remove),
            (&serve, None, false, false, Leave),
            (&serve, Some(&serve), true, true, Remove),
        ];
        for (i, (me, theirs, alive, entitled, want)) in table.into_iter().enumerate() {
            assert_eq!(verdict(me, theirs, alive, entitled), want, "case {i}");
        }
    }
}
