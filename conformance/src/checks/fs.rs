//! The container's filesystem (FS-1..4) and the standard Linux environment a
//! second-generation container sees (SBX-2: /dev, /proc/sys, /etc files, stdin, PID 1).

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{anyhow, ensure, Result};
use serde_json::Value;

use super::{file, PROBE};
use crate::harness::{Ctx, Served};
use crate::http::Request;

/// `GET /?write=MIB&path=PATH` (the probe writes and fsyncs the file).
async fn write(s: &Served, path: &str, mib: u64) -> Result<crate::http::Response> {
    s.send(&Request::get(&format!("/?write={mib}&path={path}")).timeout(Duration::from_secs(120)))
        .await
}

/// `GET /readfile?path=PATH`.
async fn readfile(s: &Served, path: &str) -> Result<Value> {
    s.report_at(&format!("/readfile?path={path}")).await
}

pub(super) async fn tmp_writable(ctx: Ctx) -> Result<()> {
    let r = ctx.serve(&["--image", PROBE]).await?.report().await?;
    let t = file(&r, "/tmp")?;
    ensure!(t["exists"] == true && t["is_dir"] == true, "/tmp: {t}");
    ensure!(
        t["mode"] == "1777" || t["mode"] == "0777",
        "/tmp has mode {}, want 1777 or 0777",
        t["mode"]
    );
    ensure!(
        t["writable"] == true,
        "cannot create a file in /tmp: {}",
        t["write_error"]
    );
    Ok(())
}

pub(super) async fn root_writable(ctx: Ctx) -> Result<()> {
    let s = ctx.serve(&["--image", PROBE]).await?;
    let r = write(&s, "/fs1-written", 1).await?;
    ensure!(
        r.status == 200,
        "writing 1 MiB to /fs1-written: status {}: {}",
        r.status,
        r.brief()
    );
    let f = readfile(&s, "/fs1-written").await?;
    ensure!(
        f["exists"] == true && f["size"] == 1024 * 1024,
        "/fs1-written after writing 1 MiB: {f}"
    );
    Ok(())
}

async fn writes_count(ctx: Ctx, path: &str) -> Result<()> {
    let s = ctx.serve(&["--image", PROBE, "--memory", "128Mi"]).await?;
    let r = write(&s, path, 256).await?;
    ensure!(
        r.status != 200,
        "writing 256 MiB to {path} under a 128 MiB memory limit succeeded (write: {}): the writes did not count against the memory",
        r.json().map(|j| j["write"].to_string()).unwrap_or_default()
    );
    Ok(())
}

pub(super) async fn root_writes_count_against_memory(ctx: Ctx) -> Result<()> {
    writes_count(ctx, "/fs2-fill").await
}

pub(super) async fn tmp_writes_count_against_memory(ctx: Ctx) -> Result<()> {
    writes_count(ctx, "/tmp/fs2-fill").await
}

pub(super) async fn writes_do_not_survive(ctx: Ctx) -> Result<()> {
    let paths = ["/fs3-marker", "/tmp/fs3-marker"];
    let s = ctx.serve(&["--image", PROBE]).await?;
    for p in paths {
        let r = write(&s, p, 1).await?;
        ensure!(r.status == 200, "writing {p}: status {}", r.status);
        let f = readfile(&s, p).await?;
        ensure!(f["exists"] == true, "{p} missing right after writing it");
    }
    let stopped = s.stop().await;
    ensure!(
        stopped.success(),
        "runlet did not stop cleanly on SIGINT: {}",
        stopped.tail(4)
    );
    let s = ctx.serve(&["--image", PROBE]).await?;
    for p in paths {
        let f = readfile(&s, p).await?;
        ensure!(
            f["exists"] == false,
            "{p}, written by the previous instance, is still there"
        );
    }
    Ok(())
}

pub(super) async fn memory_volume_size_limit(ctx: Ctx) -> Result<()> {
    let s = ctx
        .serve(&[
            "--image",
            PROBE,
            "--add-volume",
            "name=scratch,type=in-memory,size-limit=32Mi",
            "--add-volume-mount",
            "volume=scratch,mount-path=/scratch",
        ])
        .await?;
    let r = s.report().await?;
    let mounted = r["mounts"].as_array().is_some_and(|m| {
        m.iter()
            .any(|l| l.as_str().is_some_and(|l| l.contains(" /scratch ")))
    });
    ensure!(mounted, "nothing is mounted at /scratch");
    let ok = write(&s, "/scratch/a", 16).await?;
    ensure!(
        ok.status == 200,
        "writing 16 MiB to a 32 MiB volume: status {}: {}",
        ok.status,
        ok.brief()
    );
    let over = write(&s, "/scratch/b", 64).await?;
    ensure!(over.status != 200, "64 MiB more fit in a 32 MiB volume");
    Ok(())
}

pub(super) async fn pid_1(ctx: Ctx) -> Result<()> {
    let s = ctx.serve(&["--image", PROBE]).await?;
    let r = s.report().await?;
    ensure!(r["pid"] == 1, "the probe's pid is {}, want 1", r["pid"]);
    Ok(())
}

pub(super) async fn stdin_eof(ctx: Ctx) -> Result<()> {
    let r = ctx.serve(&["--image", PROBE]).await?.report().await?;
    ensure!(
        r["stdin_eof"] == true,
        "reading stdin: {} (fd 0 is {})",
        r["stdin_detail"],
        r["std_fds"]["0"]
    );
    Ok(())
}

pub(super) async fn dev_files(ctx: Ctx) -> Result<()> {
    let r = ctx.serve(&["--image", PROBE]).await?.report().await?;
    let mut problems = Vec::new();
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        let f = file(&r, link)?;
        if f["is_symlink"] != true || f["symlink_target"] != target {
            problems.push(format!(
                "{link} should link to {target}: exists={} target={}",
                f["exists"], f["symlink_target"]
            ));
        }
    }
    for dev in [
        "/dev/null",
        "/dev/zero",
        "/dev/random",
        "/dev/urandom",
        "/dev/full",
        "/dev/tty",
    ] {
        let f = file(&r, dev)?;
        if f["exists"] != true || f["file_type"] != "char" {
            problems.push(format!(
                "{dev} should be a character device: exists={} type={}",
                f["exists"], f["file_type"]
            ));
        }
    }
    let ptmx = file(&r, "/dev/ptmx")?;
    if ptmx["exists"] != true {
        problems.push("/dev/ptmx is missing".into());
    }
    if file(&r, "/dev/console")?["exists"] != false {
        problems.push("/dev/console exists".into());
    }
    ensure!(problems.is_empty(), "{}", problems.join("; "));
    Ok(())
}

pub(super) async fn proc_sys_read_only(ctx: Ctx) -> Result<()> {
    let r = ctx.serve(&["--image", PROBE]).await?.report().await?;
    ensure!(
        r["proc_sys_readonly"] == true && r["proc_sys_readonly_detail"]["mountinfo_ro"] == true,
        "/proc/sys is not mounted read-only: {}",
        r["proc_sys_readonly_detail"]
    );
    Ok(())
}

pub(super) async fn etc_resolv_conf(ctx: Ctx) -> Result<()> {
    let s = ctx.serve(&["--image", PROBE]).await?;
    let f = readfile(&s, "/etc/resolv.conf").await?;
    ensure!(
        f["exists"] == true && f["file_type"] == "file" && f["contents"].is_string(),
        "/etc/resolv.conf is not a readable file: {f}"
    );
    Ok(())
}

/// Does an `/etc/hosts` text map `name` to an address?
pub fn hosts_maps(hosts: &str, name: &str) -> bool {
    hosts.lines().any(|l| {
        let l = l.split('#').next().unwrap_or("");
        let mut f = l.split_whitespace();
        f.next().is_some_and(|ip| ip.parse::<IpAddr>().is_ok()) && f.any(|n| n == name)
    })
}

pub(super) async fn etc_hosts_own_hostname(ctx: Ctx) -> Result<()> {
    let s = ctx.serve(&["--image", PROBE]).await?;
    let r = s.report().await?;
    let hostname = r["hostname"]
        .as_str()
        .ok_or_else(|| anyhow!("the probe could not read its hostname"))?;
    let f = readfile(&s, "/etc/hosts").await?;
    let hosts = f["contents"]
        .as_str()
        .ok_or_else(|| anyhow!("/etc/hosts is not readable: {f}"))?;
    ensure!(
        hosts_maps(hosts, hostname),
        "/etc/hosts does not map the hostname {hostname:?}: {hosts:?}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lookup() {
        let h =
            "127.0.0.1\tlocalhost\n# 10.0.0.9 commented\n10.209.0.15\tsvc-00001-abc-xyz12 alias\n";
        assert!(hosts_maps(h, "svc-00001-abc-xyz12"));
        assert!(hosts_maps(h, "alias"));
        assert!(!hosts_maps(h, "commented"));
        assert!(!hosts_maps(h, "svc"));
        assert!(!hosts_maps("notanip name\n", "name"));
    }
}
