//! A test hook, and nothing else: `RUNLET_TEST_CRASH_AFTER=<step>` makes runlet abort
//! (`std::process::abort`, as abrupt as `kill -9`: no destructor, no cleanup) right after
//! that step of [`Sandbox::create`](super::sandbox::Sandbox::create), so a test can leave
//! exactly what a crash in that window leaves and check that the next runlet removes it.
//! Read once per process; unset (as always outside tests) it does nothing.

use std::sync::OnceLock;

/// The environment variable naming the step to abort after.
pub const ENV: &str = "RUNLET_TEST_CRASH_AFTER";

/// The steps a crash can be asked for after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The network namespace exists, with an address allocated.
    NetworkAttach,
    /// The root fs's tmpfs is mounted too; the container does not exist yet.
    RootFsMount,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::NetworkAttach => "network-attach",
            Step::RootFsMount => "rootfs-mount",
        }
    }
}

static WANTED: OnceLock<Option<String>> = OnceLock::new();

/// Aborts the process if [`ENV`] names `step`.
pub fn after(step: Step) {
    let wanted = WANTED.get_or_init(|| std::env::var(ENV).ok());
    if wanted.as_deref() == Some(step.name()) {
        eprintln!("{ENV}={}: aborting", step.name());
        std::process::abort();
    }
}
