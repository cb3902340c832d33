//! The directory of named network namespaces (`/run/netns`) made a shared mount point of its
//! own before runlet binds a namespace in it, as iproute2's `ip netns add` does.
//!
//! Why: `ip netns add` (run by an operator, a benchmark, another tool) makes the directory a
//! mount point the first time it finds it is not one, by binding it over itself
//! (`MS_BIND|MS_REC`). The namespaces runlet had bound there are copied into that new mount
//! and their originals stay under it, out of reach: runlet's detach unmounts the copy and the
//! original leaks until reboot (20 were found after a benchmark run). Once the directory is a
//! mount point, `ip` only marks it shared and binds nothing.
//!
//! Where namespaces are already bound in a directory that is not a mount point, runlet
//! leaves it alone (its own bind would hide them the same way) and says so once.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use tracing::warn;

/// What [`share`] found or did.
#[derive(Debug, PartialEq, Eq)]
pub enum Shared {
    /// The directory was a mount point already (marked shared again, as `ip` does).
    Already,
    /// runlet bound the directory over itself and marked it shared.
    Made,
    /// Not a mount point, but `bound` namespaces are mounted in it: left as it is.
    LeftAlone { bound: usize },
}

/// Makes `dir` a shared mount point unless it is one, or binding it would hide namespaces
/// already bound in it. Serialised across runlet processes by a `flock` on the directory.
pub fn share(dir: &Path) -> Result<Shared, String> {
    let mark_shared = || {
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    // The common case is one system call: EINVAL means "not a mount point".
    match mark_shared() {
        Ok(()) => return Ok(Shared::Already),
        Err(Errno::EINVAL) => {}
        Err(e) => return Err(format!("marking {} shared: {e}", dir.display())),
    }
    let handle = std::fs::File::open(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let _lock = nix::fcntl::Flock::lock(handle, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("locking {}: {e}", dir.display()))?;
    let mounts = std::fs::read_to_string("/proc/thread-self/mountinfo")
        .map_err(|e| format!("/proc/thread-self/mountinfo: {e}"))?;
    let (is_mount_point, bound) = mounts_at(&mounts, dir);
    if is_mount_point {
        // Another runlet made it while this one waited for the lock.
        return mark_shared()
            .map(|()| Shared::Already)
            .map_err(|e| format!("marking {} shared: {e}", dir.display()));
    }
    if bound > 0 {
        return Ok(Shared::LeftAlone { bound });
    }
    mount(
        Some(dir),
        dir,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("binding {} over itself: {e}", dir.display()))?;
    mark_shared()
        .map(|()| Shared::Made)
        .map_err(|e| format!("marking {} shared: {e}", dir.display()))
}

/// [`share`] before a namespace is bound in `dir`: a failure or a directory left alone is
/// said once per process (the namespace can still be made; only its removal is at risk).
pub fn share_or_warn(dir: &Path) {
    static SAID: AtomicBool = AtomicBool::new(false);
    let problem = match share(dir) {
        Ok(Shared::Already | Shared::Made) => return,
        Ok(Shared::LeftAlone { bound }) => format!(
            "{} is not a mount point and {bound} namespaces are bound in it, so runlet leaves it \
             as it is; the first `ip netns add` will hide them (they then outlive their \
             instances until reboot)",
            dir.display()
        ),
        Err(e) => e,
    };
    if !SAID.swap(true, Ordering::Relaxed) {
        warn!("network namespace directory: {problem}");
    }
}

/// From `/proc/*/mountinfo` text: whether `dir` is a mount point, and how many mounts sit on
/// its direct entries.
fn mounts_at(mountinfo: &str, dir: &Path) -> (bool, usize) {
    let dir = dir.to_string_lossy();
    let dir = dir.trim_end_matches('/');
    let mut is_mount_point = false;
    let mut bound = 0;
    for line in mountinfo.lines() {
        // ID PARENT MAJOR:MINOR ROOT MOUNT-POINT ...; spaces in paths are written \040.
        let Some(point) = line.split(' ').nth(4) else {
            continue;
        };
        let point = point.replace("\\040", " ");
        if point == dir {
            is_mount_point = true;
        } else if let Some(name) = point.strip_prefix(dir).and_then(|r| r.strip_prefix('/')) {
            if !name.is_empty() && !name.contains('/') {
                bound += 1;
            }
        }
    }
    (is_mount_point, bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const MOUNTINFO: &str = "\
22 1 0:21 / /run rw,nosuid shared:5 - tmpfs tmpfs rw
30 22 0:4 net:[4026532300] /run/netns/runlet-a rw shared:6 - nsfs nsfs rw
31 22 0:4 net:[4026532301] /run/netns/runlet-b rw shared:7 - nsfs nsfs rw
32 22 0:4 net:[4026532302] /run/netnsx/c rw shared:8 - nsfs nsfs rw
33 22 0:4 net:[4026532303] /run/netns/sub/d rw shared:9 - nsfs nsfs rw
34 22 0:21 /netns /run/my\\040ns rw shared:5 - tmpfs tmpfs rw
";

    #[test]
    fn mountinfo_tells_a_mount_point_and_the_namespaces_bound_under_it() {
        let table = [
            ("/run/netns", (false, 2)),
            ("/run/netns/", (false, 2)),
            ("/run", (true, 1)), // "/run/my ns" is mounted on an entry of /run
            ("/run/my ns", (true, 0)),
            ("/run/netnsx", (false, 1)),
            ("/elsewhere", (false, 0)),
        ];
        for (dir, want) in table {
            assert_eq!(mounts_at(MOUNTINFO, Path::new(dir)), want, "{dir}");
        }
    }

    /// iproute2's `ip netns add`, step for step: mark the directory shared; if it is not a
    /// mount point, bind it over itself (recursively) and mark it shared.
    fn ip_netns_add_prelude(dir: &Path) {
        let shared = || {
            mount(
                None::<&str>,
                dir,
                None::<&str>,
                MsFlags::MS_SHARED | MsFlags::MS_REC,
                None::<&str>,
            )
        };
        if shared() == Err(Errno::EINVAL) {
            mount(
                Some(dir),
                dir,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .unwrap();
            shared().unwrap();
        }
    }

    fn bind_namespace(at: &Path) {
        std::fs::File::create(at).unwrap();
        mount(
            Some("/proc/thread-self/ns/net"),
            at,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
    }

    fn here() -> String {
        std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap()
    }

    /// Runs `f` on a thread of its own in a private mount namespace, with a fresh tmpfs
    /// holding an empty `netns` directory: nothing it mounts reaches the host.
    fn in_private_mounts<T: Send + 'static>(f: impl FnOnce(PathBuf) -> T + Send + 'static) -> T {
        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path().to_path_buf();
        let out = std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .unwrap();
            mount(
                Some("tmpfs"),
                &root,
                Some("tmpfs"),
                MsFlags::empty(),
                None::<&str>,
            )
            .unwrap();
            let dir = root.join("netns");
            std::fs::create_dir(&dir).unwrap();
            f(dir)
        })
        .join()
        .unwrap();
        drop(scratch);
        out
    }

    /// The leak seen after a benchmark run, and its cure: a namespace bound before an
    /// `ip netns add` outlives its unmount unless runlet made the directory a mount point
    /// first.
    #[test]
    fn a_namespace_bound_before_ip_netns_add_is_removable_only_if_the_directory_was_shared() {
        for (share_first, want_left) in [(false, 1), (true, 0)] {
            let left = in_private_mounts(move |dir| {
                if share_first {
                    assert_eq!(share(&dir).unwrap(), Shared::Made);
                    assert_eq!(share(&dir).unwrap(), Shared::Already);
                }
                let ns = dir.join("runlet-a");
                bind_namespace(&ns);
                ip_netns_add_prelude(&dir);
                // runlet's detach.
                nix::mount::umount2(&ns, nix::mount::MntFlags::MNT_DETACH).unwrap();
                here()
                    .lines()
                    .filter(|l| l.split(' ').nth(4) == Some(&*ns.to_string_lossy()))
                    .count()
            });
            assert_eq!(left, want_left, "shared first: {share_first}");
        }
    }

    #[test]
    fn a_directory_with_namespaces_bound_in_it_is_left_alone() {
        let (shared, (is_mount_point, bound)) = in_private_mounts(|dir| {
            bind_namespace(&dir.join("runlet-a"));
            let shared = share(&dir).unwrap();
            (shared, mounts_at(&here(), &dir))
        });
        assert_eq!(shared, Shared::LeftAlone { bound: 1 });
        assert_eq!((is_mount_point, bound), (false, 1));
    }
}
