//! The execution environments (SBX-1): under `--execution-environment gen1` the code runs
//! in gVisor, which does not implement every Linux system call; gen2 (the default) has them.

use anyhow::{ensure, Result};

use super::PROBE;
use crate::harness::Ctx;

/// System calls Linux implements (and Docker's seccomp profile allows) that gVisor answers
/// with `ENOSYS`; the probe's `/syscalls` tries them.
const GVISOR_UNIMPLEMENTED: [&str; 1] = ["sched_getattr"];

pub(super) async fn gen1_lacks_syscalls(ctx: Ctx) -> Result<()> {
    let gen1 = ctx
        .serve(&["--image", PROBE, "--execution-environment", "gen1"])
        .await?;
    let r = gen1.report_at("/syscalls").await?;
    for name in GVISOR_UNIMPLEMENTED {
        ensure!(
            r[name] == "ENOSYS",
            "under gen1, {name} answered {} (want ENOSYS: gVisor does not implement it): {r}",
            r[name]
        );
    }
    ensure!(
        r["getpid"] == "ok" && r["socket_tcp"] == "ok",
        "under gen1, ordinary system calls fail: {r}"
    );
    Ok(())
}

pub(super) async fn gen2_has_them(ctx: Ctx) -> Result<()> {
    let gen2 = ctx.serve(&["--image", PROBE]).await?;
    let r = gen2.report_at("/syscalls").await?;
    for name in GVISOR_UNIMPLEMENTED {
        ensure!(
            r[name] == "ok",
            "under gen2 (the default), {name} answered {} (want ok: Linux implements it): {r}",
            r[name]
        );
    }
    Ok(())
}
