//! The JSON report: what the process sees of its environment (env, ids,
//! files, mounts, cgroup limits, ...) plus details of the current request.
//!
//! Every probe of the system is best-effort: a failure shows up as `null`,
//! `false` or an `error` string in the report, never as a failed request.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::{ErrorKind, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::state::{Concurrency, State, STATE};

/// Paths listed under `files` in every report.
pub const REPORT_FILES: &[&str] = &[
    "/tmp",
    "/dev/fd",
    "/dev/stdin",
    "/dev/stdout",
    "/dev/stderr",
    "/dev/null",
    "/dev/zero",
    "/dev/random",
    "/dev/urandom",
    "/dev/full",
    "/dev/ptmx",
    "/dev/tty",
    "/dev/console",
    "/dev/shm",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/hostname",
    "/proc/sys",
];

/// cgroup v1 / v2 files whose contents are reported under `cgroup.files`.
pub const CGROUP_FILES: &[&str] = &[
    "/sys/fs/cgroup/memory.max",
    "/sys/fs/cgroup/memory.high",
    "/sys/fs/cgroup/memory.swap.max",
    "/sys/fs/cgroup/cpu.max",
    "/sys/fs/cgroup/pids.max",
    "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes",
    "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
    "/sys/fs/cgroup/cpu/cpu.cfs_period_us",
    "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us",
    "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us",
    "/sys/fs/cgroup/pids/pids.max",
];

const MEMORY_LIMIT_FILES: &[&str] = &[
    "/sys/fs/cgroup/memory.max",
    "/sys/fs/cgroup/memory/memory.limit_in_bytes",
];

/// Largest file whose contents `/readfile` returns.
pub const MAX_CONTENTS: u64 = 64 * 1024;

/// The request half of the report.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    pub method: String,
    pub uri: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub remote_addr: String,
}

/// All environment variables (lossy UTF-8), sorted by name.
pub fn env_map() -> Map<String, Value> {
    std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                Value::String(v.to_string_lossy().into_owned()),
            )
        })
        .collect()
}

/// argv (lossy UTF-8).
pub fn argv() -> Vec<String> {
    std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// Trimmed contents of a small text file, `None` if unreadable.
pub fn read_trimmed(path: &str) -> Option<String> {
    fs::read(path)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
}

/// Permission bits (incl. setuid/setgid/sticky) as octal, e.g. `"1777"`.
pub fn mode_octal(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

/// `(major, minor)` of a Linux `dev_t`.
pub fn dev_major_minor(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

fn file_type_name(ft: fs::FileType) -> &'static str {
    if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else {
        "unknown"
    }
}

/// Stat information for `path`: `exists` (lstat succeeded), `is_symlink`,
/// `symlink_target`, and — following symlinks where possible — `is_dir`,
/// `file_type`, `mode`, `uid`, `gid`, `size`, `rdev` (devices only).
pub fn file_info(path: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("path".into(), json!(path));
    let lmeta = match fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) => {
            m.insert("exists".into(), json!(false));
            m.insert("is_dir".into(), json!(false));
            if e.kind() != ErrorKind::NotFound {
                m.insert("error".into(), json!(e.to_string()));
            }
            return m;
        }
    };
    m.insert("exists".into(), json!(true));
    let is_symlink = lmeta.file_type().is_symlink();
    m.insert("is_symlink".into(), json!(is_symlink));
    let target = if is_symlink {
        fs::read_link(path)
            .ok()
            .map(|t| t.to_string_lossy().into_owned())
    } else {
        None
    };
    m.insert("symlink_target".into(), json!(target));
    // Follow the link for the rest; a dangling link falls back to lstat.
    let (meta, dangling) = match fs::metadata(path) {
        Ok(md) => (md, false),
        Err(_) => (lmeta, is_symlink),
    };
    if dangling {
        m.insert("dangling".into(), json!(true));
    }
    let ft = meta.file_type();
    m.insert("is_dir".into(), json!(ft.is_dir()));
    m.insert("file_type".into(), json!(file_type_name(ft)));
    m.insert("mode".into(), json!(mode_octal(meta.mode())));
    m.insert("uid".into(), json!(meta.uid()));
    m.insert("gid".into(), json!(meta.gid()));
    m.insert("size".into(), json!(meta.size()));
    if ft.is_char_device() || ft.is_block_device() {
        let (ma, mi) = dev_major_minor(meta.rdev());
        m.insert("rdev".into(), json!(format!("{ma}:{mi}")));
    }
    m
}

/// `file_info` plus `contents` (lossy UTF-8) for regular files smaller than
/// 64 KiB (procfs/sysfs files report size 0 and are read up to 64 KiB).
pub fn readfile(path: &str) -> Map<String, Value> {
    let mut m = file_info(path);
    let regular = m.get("file_type") == Some(&json!("file"));
    let small = m
        .get("size")
        .and_then(Value::as_u64)
        .is_some_and(|s| s < MAX_CONTENTS);
    if regular && small {
        let res = fs::File::open(path).and_then(|f| {
            let mut buf = Vec::new();
            f.take(MAX_CONTENTS).read_to_end(&mut buf).map(|_| buf)
        });
        match res {
            Ok(b) => {
                m.insert(
                    "contents".into(),
                    json!(String::from_utf8_lossy(&b).into_owned()),
                );
            }
            Err(e) => {
                m.insert("contents_error".into(), json!(e.to_string()));
            }
        }
    }
    m
}

/// `access(2)` check; `Err(errno text)` when denied.
fn access(path: &str, mode: libc::c_int) -> Result<(), String> {
    let c = CString::new(Path::new(path).as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: `c` is a valid NUL-terminated string for the call's duration.
    let rc = unsafe { libc::access(c.as_ptr(), mode) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

/// Really creates and removes a file in `dir`.
fn dir_write_test(dir: &str) -> Result<(), String> {
    let name = format!(
        "{}/.probe-write-check-{}-{}",
        dir.trim_end_matches('/'),
        std::process::id(),
        STATE.next_seq()
    );
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&name)
        .map_err(|e| e.to_string())?;
    fs::remove_file(&name).map_err(|e| format!("created but not removed: {e}"))
}

/// `file_info` plus `readable` / `writable`. `/tmp` is tested by really
/// creating and deleting a file; everything else by `access(2)` only.
pub fn file_access_info(path: &str) -> Map<String, Value> {
    let mut m = file_info(path);
    let exists = m.get("exists") == Some(&json!(true));
    let readable = exists && access(path, libc::R_OK).is_ok();
    m.insert("readable".into(), json!(readable));
    let write = if !exists {
        Err("does not exist".to_string())
    } else if path == "/tmp" {
        dir_write_test(path)
    } else {
        access(path, libc::W_OK)
    };
    m.insert("writable".into(), json!(write.is_ok()));
    if let Err(e) = write {
        m.insert("write_error".into(), json!(e));
    }
    m
}

/// Opens `path` write-only and closes it without writing.
fn open_for_write(path: &str) -> std::io::Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)
        .map(drop)
}

/// cgroup limits as seen from inside.
pub fn cgroup_info() -> Value {
    let files: Map<String, Value> = CGROUP_FILES
        .iter()
        .map(|p| (p.to_string(), json!(read_trimmed(p))))
        .collect();
    let first = |paths: &[&str]| paths.iter().find_map(|p| read_trimmed(p));
    let limit_files: Vec<&str> = MEMORY_LIMIT_FILES
        .iter()
        .copied()
        .filter(|p| Path::new(p).exists())
        .collect();
    let writable = limit_files.iter().any(|p| open_for_write(p).is_ok());
    json!({
        "files": files,
        "memory_limit": first(MEMORY_LIMIT_FILES),
        "cpu_max": read_trimmed("/sys/fs/cgroup/cpu.max"),
        "cpu_quota_us": first(&["/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us"]),
        "cpu_period_us": first(&["/sys/fs/cgroup/cpu/cpu.cfs_period_us", "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us"]),
        "memory_limit_files": limit_files,
        "memory_limit_writable": writable,
        "proc_self_cgroup": read_trimmed("/proc/self/cgroup"),
    })
}

/// Lines of `/proc/self/mountinfo` (falling back to `/proc/mounts`).
pub fn mount_lines() -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .or_else(|_| fs::read_to_string("/proc/mounts"))
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// From mountinfo lines: is the mount at `mount_point` read-only? `None`
/// if there is no such mount. The last matching line wins (it is the top
/// of the mount stack).
pub fn mountinfo_readonly(lines: &[String], mount_point: &str) -> Option<bool> {
    lines.iter().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        // id parent maj:min root mount-point options ...
        (f.len() > 5 && f[4] == mount_point).then(|| f[5].split(',').any(|o| o == "ro"))
    })
}

/// `/proc/sys` read-only? True when its mount is `ro` or opening
/// `/proc/sys/kernel/hostname` for writing fails with EROFS/EACCES/EPERM.
pub fn proc_sys_readonly(lines: &[String]) -> (bool, Value) {
    let mount_ro = mountinfo_readonly(lines, "/proc/sys");
    let open = open_for_write("/proc/sys/kernel/hostname");
    let open_denied = matches!(
        &open,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM))
    );
    let detail = json!({
        "mountinfo_ro": mount_ro,
        "open_hostname_for_write": match &open { Ok(()) => "ok".to_string(), Err(e) => e.to_string() },
    });
    (mount_ro == Some(true) || open_denied, detail)
}

/// `Uid:`/`Gid:`/`Groups:`/`Cap*:`/`NoNewPrivs:`/`Seccomp:` lines of
/// `/proc/self/status`.
pub fn parse_status(text: &str) -> BTreeMap<String, String> {
    const KEYS: &[&str] = &[
        "Uid",
        "Gid",
        "Groups",
        "CapInh",
        "CapPrm",
        "CapEff",
        "CapBnd",
        "CapAmb",
        "NoNewPrivs",
        "Seccomp",
        "Threads",
    ];
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| KEYS.contains(k))
        .map(|(k, v)| {
            (
                k.to_string(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect()
}

/// Targets of /proc/self/fd/{0,1,2}.
fn std_fds() -> Value {
    let mut m = Map::new();
    for fd in 0..3 {
        let t = fs::read_link(format!("/proc/self/fd/{fd}"))
            .map(|p| p.to_string_lossy().into_owned())
            .ok();
        m.insert(fd.to_string(), json!(t));
    }
    Value::Object(m)
}

fn concurrency_json(c: Concurrency) -> Value {
    json!({
        "in_flight": c.in_flight,
        "max_in_flight": c.max_in_flight,
        "requests_total": c.requests_total,
    })
}

/// Builds the whole report. `extra` entries (results of `alloc=`/`write=`)
/// are added as top-level keys.
pub fn build(req: &RequestInfo, extra: Map<String, Value>) -> Value {
    // SAFETY: these getters cannot fail and have no preconditions.
    let (uid, gid, euid, egid) = unsafe {
        (
            libc::getuid(),
            libc::getgid(),
            libc::geteuid(),
            libc::getegid(),
        )
    };
    let files: Map<String, Value> = REPORT_FILES
        .iter()
        .map(|p| (p.to_string(), Value::Object(file_access_info(p))))
        .collect();
    let mounts = mount_lines();
    let (ro, ro_detail) = proc_sys_readonly(&mounts);
    let stdin = STATE.stdin.get();
    let headers: Vec<[&str; 2]> = req
        .headers
        .iter()
        .map(|(k, v)| [k.as_str(), v.as_str()])
        .collect();
    let mut report = json!({
        "probe": "server",
        "pid": std::process::id(),
        "argv": argv(),
        "env": env_map(),
        "cwd": std::env::current_dir().ok().map(|p| p.to_string_lossy().into_owned()),
        "uid": uid,
        "gid": gid,
        "euid": euid,
        "egid": egid,
        "proc_status": parse_status(&fs::read_to_string("/proc/self/status").unwrap_or_default()),
        "hostname": read_trimmed("/proc/sys/kernel/hostname"),
        "request": {
            "method": req.method,
            "uri": req.uri,
            "version": req.version,
            "headers": headers,
            "remote_addr": req.remote_addr,
        },
        "concurrency": concurrency_json(STATE.concurrency()),
        "files": files,
        "stdin_eof": stdin.is_some_and(|s| s.eof),
        "stdin_detail": stdin.map_or("blocked (no result yet)", |s| s.detail.as_str()),
        "std_fds": std_fds(),
        "mounts": mounts,
        "cgroup": cgroup_info(),
        "proc_sys_readonly": ro,
        "proc_sys_readonly_detail": ro_detail,
        "sigterm_received_at": State::stamp(&STATE.sigterm_at),
        "started_at": State::stamp(&STATE.started_at),
        "listening_at": State::stamp(&STATE.listening_at),
        "now": crate::state::now_millis(),
    });
    if let Value::Object(m) = &mut report {
        m.extend(extra);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_format() {
        assert_eq!(mode_octal(0o41777), "1777");
        assert_eq!(mode_octal(0o100644), "0644");
        assert_eq!(mode_octal(0o20666), "0666");
    }

    #[test]
    fn major_minor() {
        // /dev/null is 1:3, /dev/ptmx 5:2.
        assert_eq!(dev_major_minor(0x103), (1, 3));
        assert_eq!(dev_major_minor(0x502), (5, 2));
        assert_eq!(dev_major_minor(libc::makedev(259, 70000)), (259, 70000));
    }

    #[test]
    fn mountinfo_ro_parsing() {
        let lines: Vec<String> = [
            "22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw",
            "23 22 0:21 /sys /proc/sys ro,nosuid,nodev,noexec,relatime - proc proc rw",
            "24 1 0:22 / /tmp rw,relatime - tmpfs tmpfs rw",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(mountinfo_readonly(&lines, "/proc/sys"), Some(true));
        assert_eq!(mountinfo_readonly(&lines, "/proc"), Some(false));
        assert_eq!(mountinfo_readonly(&lines, "/nope"), None);
    }

    #[test]
    fn status_parsing() {
        let s = "Name:\tprobe\nUid:\t1000\t1000\t1000\t1000\nGid:\t0\t0\t0\t0\nCapEff:\t0000000000000000\nVmRSS:\t1 kB\n";
        let m = parse_status(s);
        assert_eq!(
            m.get("Uid").map(String::as_str),
            Some("1000 1000 1000 1000")
        );
        assert_eq!(
            m.get("CapEff").map(String::as_str),
            Some("0000000000000000")
        );
        assert!(!m.contains_key("VmRSS"));
        assert!(!m.contains_key("Name"));
    }

    #[test]
    fn file_info_on_temp_files() {
        let dir = std::env::temp_dir().join(format!("probe-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join("f");
        fs::write(&f, "hi").unwrap();
        let l = dir.join("l");
        std::os::unix::fs::symlink(&f, &l).unwrap();
        let d = dir.join("dangling");
        std::os::unix::fs::symlink("/nonexistent-probe", &d).unwrap();

        let m = readfile(l.to_str().unwrap());
        assert_eq!(m["exists"], json!(true));
        assert_eq!(m["is_symlink"], json!(true));
        assert_eq!(m["symlink_target"], json!(f.to_str().unwrap()));
        assert_eq!(m["file_type"], json!("file"));
        assert_eq!(m["size"], json!(2));
        assert_eq!(m["contents"], json!("hi"));

        let m = file_info(d.to_str().unwrap());
        assert_eq!(m["exists"], json!(true));
        assert_eq!(m["dangling"], json!(true));

        let m = file_info(dir.join("missing").to_str().unwrap());
        assert_eq!(m["exists"], json!(false));
        assert!(m.get("error").is_none());

        let m = file_access_info(dir.to_str().unwrap());
        assert_eq!(m["is_dir"], json!(true));
        assert_eq!(m["readable"], json!(true));

        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn report_has_expected_shape() {
        let req = RequestInfo {
            method: "GET".into(),
            uri: "/x?y=1".into(),
            version: "HTTP/1.1".into(),
            headers: vec![("a".into(), "1".into()), ("a".into(), "2".into())],
            remote_addr: "127.0.0.1:1".into(),
        };
        let mut extra = Map::new();
        extra.insert("alloc".into(), json!({"mib": 1}));
        let r = build(&req, extra);
        for k in [
            "env",
            "argv",
            "cwd",
            "uid",
            "gid",
            "euid",
            "hostname",
            "pid",
            "request",
            "concurrency",
            "files",
            "stdin_eof",
            "mounts",
            "cgroup",
            "proc_sys_readonly",
            "sigterm_received_at",
            "started_at",
            "listening_at",
            "alloc",
        ] {
            assert!(r.get(k).is_some(), "missing {k}");
        }
        assert_eq!(r["request"]["headers"], json!([["a", "1"], ["a", "2"]]));
        assert_eq!(r["request"]["version"], json!("HTTP/1.1"));
        assert_eq!(r["files"]["/tmp"]["is_dir"], json!(true));
        assert!(r["files"]["/dev/null"]["rdev"].as_str() == Some("1:3"));
        assert!(r["cgroup"]["memory_limit_writable"].is_boolean());
        assert!(r["concurrency"]["requests_total"].is_u64());
    }
}
