//! A container's CPU quota, written straight to its cgroup: containerd's `Tasks.Update`
//! does the same through two gRPC hops and runc, too slow for the data path, which flips it
//! when an instance goes idle or busy (`--cpu-throttling`; the policy is
//! `control::service::throttle`).

use std::io;
use std::path::{Path, PathBuf};

use super::ocispec::{cgroups_path, cpu_quota_us, CPU_PERIOD};

/// The CPU an idle, throttled instance keeps: 1% of one CPU (1 ms per 100 ms period, the
/// smallest quota cgroup v1 accepts).
pub const THROTTLED_QUOTA_US: u64 = 1_000;

/// The CPU quota file of one container and the two values runlet writes to it.
#[derive(Debug)]
pub struct CpuQuota {
    file: PathBuf,
    full: String,
    throttled: String,
}

impl CpuQuota {
    /// The quota of container `id` (created with [`cgroups_path`]) whose full allowance is
    /// `cpu` CPUs.
    pub fn for_container(id: &str, cpu: f64) -> Self {
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

    /// Writes `full` or `throttled` to a quota file elsewhere (tests).
    pub fn at(file: PathBuf, full: &str, throttled: &str) -> Self {
        CpuQuota {
            file,
            full: full.into(),
            throttled: throttled.into(),
        }
    }

    /// The file the quota is written to.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Writes the throttled or the full quota.
    pub fn set(&self, throttled: bool) -> io::Result<()> {
        let v = if throttled {
            &self.throttled
        } else {
            &self.full
        };
        std::fs::write(&self.file, v)
    }
}
