//! A container's CPU quota, written straight to its cgroup: containerd's `Tasks.Update`
//! does the same through two gRPC hops and runc, too slow for the data path, which flips it
//! when an instance goes idle or busy (`--cpu-throttling`, through the ingress's
//! [`IdleHook`]).

use std::io;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::ocispec::{cgroups_path, cpu_quota_us, CPU_PERIOD};
use crate::ingress::IdleHook;

/// The CPU an idle, throttled instance keeps: 1% of one CPU (1 ms per 100 ms period, the
/// smallest quota cgroup v1 accepts).
pub const THROTTLED_QUOTA_US: u64 = 1_000;

/// The CPU quota file of one container and the two values runlet writes to it.
#[derive(Debug)]
struct CpuQuota {
    file: PathBuf,
    full: String,
    throttled: String,
}

impl CpuQuota {
    /// The quota of container `id` (created with [`cgroups_path`]) whose full allowance is
    /// `cpu` CPUs.
    fn for_container(id: &str, cpu: f64) -> Self {
        let quota = cpu_quota_us(cpu);
        let cgroup = cgroups_path(id);
        if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            CpuQuota {
                file: PathBuf::from(format!("/sys/fs/cgroup{cgroup}/cpu.max")),
                full: format!("{quota} {CPU_PERIOD}"),
                throttled: format!("{THROTTLED_QUOTA_US} {CPU_PERIOD}"),
            }
        } else {
            CpuQuota {
                file: PathBuf::from(format!("/sys/fs/cgroup/cpu{cgroup}/cpu.cfs_quota_us")),
                full: quota.to_string(),
                throttled: THROTTLED_QUOTA_US.to_string(),
            }
        }
    }

    /// Writes the throttled or the full quota.
    fn set(&self, throttled: bool) -> io::Result<()> {
        let v = if throttled {
            &self.throttled
        } else {
            &self.full
        };
        std::fs::write(&self.file, v)
    }
}

/// Throttles an instance's CPU while it has no request in flight (`--cpu-throttling`).
#[derive(Debug)]
pub struct CpuThrottle {
    instance: String,
    quota: CpuQuota,
    state: ThrottleLock,
}

#[derive(Debug, Default)]
struct ThrottleState {
    /// What was last written: `Some(true)` throttled, `Some(false)` full.
    applied: Option<bool>,
    /// Stopping: full CPU for the shutdown, and no more throttling.
    released: bool,
}

/// Held for a quota write at an instance's idle/busy transitions, never across an await.
#[allow(clippy::disallowed_types)]
type ThrottleLock = std::sync::Mutex<ThrottleState>;

impl CpuThrottle {
    /// Throttles instance `id` (its container has the same id) whose full allowance is
    /// `cpu` CPUs.
    pub fn for_container(id: &str, cpu: f64) -> Self {
        Self::with_quota(id, CpuQuota::for_container(id, cpu))
    }

    /// Writes `full` or `throttled` to a quota file elsewhere (tests).
    pub fn at(file: PathBuf, full: &str, throttled: &str) -> Self {
        let quota = CpuQuota {
            file,
            full: full.into(),
            throttled: throttled.into(),
        };
        Self::with_quota("test", quota)
    }

    fn with_quota(instance: &str, quota: CpuQuota) -> Self {
        CpuThrottle {
            instance: instance.into(),
            quota,
            state: Default::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ThrottleState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl IdleHook for CpuThrottle {
    /// Brings the quota in line with the in-flight count: throttled when idle, full when
    /// busy. `idle` is read under the lock, so whichever of two racing transitions writes
    /// last writes what is true now.
    fn sync(&self, idle: &dyn Fn() -> bool) {
        let mut state = self.state();
        if state.released {
            return;
        }
        let idle = idle();
        if state.applied != Some(idle) {
            match self.quota.set(idle) {
                Ok(()) => state.applied = Some(idle),
                Err(e) => {
                    // Without the file there is nothing to throttle: stop trying.
                    let file = self.quota.file.display();
                    warn!(instance = %self.instance, "CPU throttling off: {file}: {e}");
                    state.released = true;
                }
            }
        }
    }

    /// Gives the instance its full CPU for good (it is being stopped).
    fn release(&self) {
        let mut state = self.state();
        if !state.released && state.applied == Some(true) {
            let _ = self.quota.set(false);
        }
        state.released = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quota_is_cut_while_idle_and_full_for_good_once_released() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cpu.cfs_quota_us");
        let quota = || std::fs::read_to_string(&file).unwrap();
        let t = CpuThrottle::at(file.clone(), "100000", "1000");
        t.sync(&|| true);
        assert_eq!(quota(), "1000", "idle once ready");
        t.sync(&|| false);
        assert_eq!(quota(), "100000", "first request");
        t.sync(&|| true);
        assert_eq!(quota(), "1000", "idle again");
        t.release();
        assert_eq!(quota(), "100000", "stopping: full CPU");
        t.sync(&|| true);
        assert_eq!(quota(), "100000", "never throttled again once released");
    }

    #[test]
    fn without_the_quota_file_throttling_turns_itself_off() {
        let t = CpuThrottle::at("/nonexistent/cpu.max".into(), "100000", "1000");
        t.sync(&|| true);
        t.sync(&|| false);
        t.release();
    }
}
