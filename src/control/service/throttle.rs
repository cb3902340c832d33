//! `--cpu-throttling`: an instance keeps 1% of a CPU while no request is in flight, and
//! gets its full quota back before a request is forwarded. The data path tells the instance's
//! [`IdleHook`] when it may have turned idle or busy; this is that hook, writing the
//! container's cgroup quota ([`CpuQuota`]) at the transitions.

#[cfg(test)]
use std::path::PathBuf;

use tracing::warn;

use crate::ingress::IdleHook;
use crate::runtime::cgroup::CpuQuota;

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
    #[cfg(test)]
    fn at(file: PathBuf, full: &str, throttled: &str) -> Self {
        Self::with_quota("test", CpuQuota::at(file, full, throttled))
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
                    let file = self.quota.file().display();
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
