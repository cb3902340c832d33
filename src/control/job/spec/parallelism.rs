//! The parallelism an execution runs with when none is given: as many tasks as this
//! machine's CPUs and memory hold.

use super::{JobSpec, MAX_TASKS};

/// What the machine has, for the default parallelism.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostResources {
    pub cpus: f64,
    pub memory_bytes: u64,
}

impl HostResources {
    /// CPUs this process may use (affinity and cgroup quota included) and the machine's
    /// total memory (`MemTotal`). Falls back to 1 CPU / 1 GiB when unreadable.
    pub fn detect() -> HostResources {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as f64)
            .unwrap_or(1.0);
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| parse_mem_total(&m))
            .unwrap_or(1 << 30);
        HostResources { cpus, memory_bytes }
    }
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// What a running task costs the machine besides its own memory limit: its containerd shim
/// (about 13 MiB resident) and runlet's bookkeeping.
pub const TASK_OVERHEAD_BYTES: u64 = 16 << 20;

/// How many tasks runlet runs at once when `--parallelism` is unset. Cloud Run runs "as
/// many as the quota allows"; one machine's quota is its CPUs and memory. Tasks beyond
/// `cpus / --cpu` would not get the vCPUs they were promised (RES-1), and tasks beyond
/// `memory / (--memory + overhead)` could together exceed the machine's memory, which ends
/// in the kernel's OOM killer choosing a victim anywhere on the host (containerd included)
/// instead of the one task over its own limit. So: the smaller of the two, at least 1.
pub fn parallelism_cap(cpu: f64, memory_bytes: u64, host: &HostResources) -> u32 {
    let by_cpu = if cpu > 0.0 {
        // A tolerance so that 2 / (2/3) is 3, not 2.9999.
        (host.cpus / cpu + 1e-9).floor()
    } else {
        host.cpus
    };
    let by_mem = host.memory_bytes / memory_bytes.saturating_add(TASK_OVERHEAD_BYTES).max(1);
    let cap = by_cpu.min(by_mem as f64).min(MAX_TASKS as f64);
    (cap as u32).max(1)
}

/// The parallelism an execution runs with: the one asked for, or the machine's cap; never
/// more than there are tasks.
pub fn effective_parallelism(spec: &JobSpec, host: &HostResources) -> u32 {
    let p = spec
        .parallelism
        .unwrap_or_else(|| parallelism_cap(spec.task_cpu(), spec.task_memory_bytes(), host));
    p.min(spec.task_count).max(1)
}

#[cfg(test)]
mod tests {
    use super::super::resolve;
    use super::super::tests::flags;
    use super::*;

    #[test]
    fn parallelism_cap_follows_cpu_and_memory() {
        let host = |cpus: f64, gib: u64| HostResources {
            cpus,
            memory_bytes: gib << 30,
        };
        let table = [
            // (cpu per task, memory per task, host, cap)
            (1.0, 512u64 << 20, host(2.0, 24), 2), // CPU-bound: 2 cores, 1 vCPU each
            (0.5, 512 << 20, host(2.0, 24), 4),
            (0.08, 512 << 20, host(2.0, 24), 25),
            (2.0 / 3.0, 512 << 20, host(2.0, 24), 3),
            (0.1, 4 << 30, host(16.0, 8), 1),   // memory-bound
            (0.1, 1 << 30, host(16.0, 8), 7),   // 8 GiB / (1 GiB + 16 MiB)
            (4.0, 512 << 20, host(2.0, 24), 1), // never 0
        ];
        for (cpu, mem, h, want) in table {
            assert_eq!(parallelism_cap(cpu, mem, &h), want, "{cpu} {mem} {h:?}");
        }
        let mut f = flags("j", "probe");
        f.tasks = Some("3".into());
        let s = resolve(&f, None).unwrap();
        assert_eq!(
            effective_parallelism(&s, &host(8.0, 24)),
            3,
            "never more than tasks"
        );
        assert_eq!(effective_parallelism(&s, &host(2.0, 24)), 2);
        f.parallelism = Some("10".into());
        let s = resolve(&f, None).unwrap();
        assert_eq!(
            effective_parallelism(&s, &host(1.0, 1)),
            3,
            "explicit wins over the cap"
        );
        assert_eq!(
            parse_mem_total("MemTotal:       24683804 kB\nMemFree: 1 kB\n"),
            Some(24683804 * 1024)
        );
    }
}
