//! The limits and kernel settings every container gets besides its capabilities and seccomp
//! filter ([`super::seccomp`]): a process-count limit, the open-file limit of containerd's
//! default spec, and the network namespace's sysctls that make ICMP work without
//! `CAP_NET_RAW`. [`super::ocispec`] writes them into the spec.

use std::collections::HashMap;

use oci_spec::runtime::{PosixRlimit, PosixRlimitBuilder, PosixRlimitType};
use oci_spec::OciSpecError;

/// The most processes and threads one container may have (the cgroup's `pids.max`). Cloud
/// Run documents no such limit; 4096 is far above what a server or a job task runs (a JVM
/// with a few hundred threads, a pre-fork server with dozens of workers) and small beside the
/// kernel's default `pid_max` (32768), so a fork bomb in one instance leaves room for the
/// host and every other instance.
pub const PIDS_LIMIT: i64 = 4096;

/// The soft and hard `RLIMIT_NOFILE` of a container's processes: containerd's default spec
/// (`oci.populateDefaultUnixSpec`) sets 1024 for both, and so does runlet. At Cloud Run's
/// highest concurrency (1000 requests, one connection each) an instance still has room.
pub const NOFILE: u64 = 1024;

/// The container's rlimits.
pub fn rlimits() -> Result<Vec<PosixRlimit>, OciSpecError> {
    Ok(vec![PosixRlimitBuilder::default()
        .typ(PosixRlimitType::RlimitNofile)
        .hard(NOFILE)
        .soft(NOFILE)
        .build()?])
}

/// The sysctls runc sets in the container's network namespace (as Docker does for every
/// container with its own network namespace): unprivileged ICMP echo sockets for every
/// group, so `ping` works without `CAP_NET_RAW`, which runlet does not give.
pub fn sysctls() -> HashMap<String, String> {
    HashMap::from([(
        "net.ipv4.ping_group_range".to_string(),
        "0 2147483647".to_string(),
    )])
}
