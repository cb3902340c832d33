//! `/syscalls`: tries system calls a container sandbox should refuse (and a few it should
//! allow) and reports each outcome as `"ok"` or the errno's name, e.g.
//! `{"unshare_newuser": "EPERM", "socket_icmp_dgram": "ok", ...}`.
//!
//! A seccomp filter answers before the kernel looks at the arguments, so the errnos tell the
//! filter apart from the kernel's own checks: without a filter, `unshare(CLONE_NEWUSER)` in
//! this multi-threaded process is `EINVAL` and `perf_event_open` with no attributes `EFAULT`;
//! Docker's filter makes both `EPERM`, and `mount` onto a missing directory is `ENOENT`
//! without a filter.
//!
//! `sched_getattr` (for the calling process) succeeds on Linux, also under Docker's filter,
//! and is `ENOSYS` under gVisor, which does not implement it: the first-generation
//! environment's mark (SBX-1). `ioprio_get` is reported beside it (gVisor: `ENOSYS` for
//! `runsc do`, `EPERM` in a container without `CAP_SYS_ADMIN`).

use serde_json::{json, Value};

fn errno_name(e: i32) -> String {
    match e {
        libc::EPERM => "EPERM".into(),
        libc::ENOENT => "ENOENT".into(),
        libc::EFAULT => "EFAULT".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::ENOSYS => "ENOSYS".into(),
        libc::EACCES => "EACCES".into(),
        libc::EAGAIN => "EAGAIN".into(),
        libc::EBADF => "EBADF".into(),
        libc::ENOTDIR => "ENOTDIR".into(),
        libc::EAFNOSUPPORT => "EAFNOSUPPORT".into(),
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT".into(),
        libc::EDQUOT => "EDQUOT".into(),
        n => format!("errno {n}"),
    }
}

/// `"ok"` for a non-negative result, else the errno's name.
fn outcome(r: libc::c_long) -> String {
    if r >= 0 {
        "ok".into()
    } else {
        errno_name(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

/// A socket call's outcome; the socket, if made, is closed.
fn socket(domain: libc::c_int, typ: libc::c_int, proto: libc::c_int) -> String {
    // SAFETY: socket(2) takes plain integers; the descriptor it returns is closed here.
    let fd = unsafe { libc::socket(domain, typ, proto) };
    let out = outcome(fd as libc::c_long);
    if fd >= 0 {
        // SAFETY: fd is the descriptor just made and owned by nothing else.
        unsafe { libc::close(fd) };
    }
    out
}

/// The report (see the module's documentation).
pub fn report() -> Value {
    const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
    const KEY_SPEC_PROCESS_KEYRING: libc::c_long = -2;
    const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
    const BPF_MAP_CREATE: libc::c_long = 0;
    // `struct sched_attr` (56 bytes since Linux 4.13) for sched_getattr to fill.
    let mut attr = [0u8; 56];
    // SAFETY: each call gets integer arguments or null/static pointers the kernel only reads
    // (or rejects); none of them changes this process's memory.
    unsafe {
        json!({
            "unshare_newuser": outcome(libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER)),
            "keyctl": outcome(libc::syscall(
                libc::SYS_keyctl,
                KEYCTL_GET_KEYRING_ID,
                KEY_SPEC_SESSION_KEYRING,
                0,
            )),
            "add_key": outcome(libc::syscall(
                libc::SYS_add_key,
                c"user".as_ptr(),
                c"runlet-probe".as_ptr(),
                c"x".as_ptr(),
                1,
                KEY_SPEC_PROCESS_KEYRING,
            )),
            "bpf": outcome(libc::syscall(libc::SYS_bpf, BPF_MAP_CREATE, std::ptr::null::<u8>(), 0)),
            "perf_event_open": outcome(libc::syscall(
                libc::SYS_perf_event_open,
                std::ptr::null::<u8>(),
                0,
                -1,
                -1,
                0,
            )),
            "mount": outcome(libc::syscall(
                libc::SYS_mount,
                c"none".as_ptr(),
                c"/probe-no-such-dir".as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null::<u8>(),
            )),
            "getpid": outcome(libc::syscall(libc::SYS_getpid)),
            // Allowed by Docker's profile and implemented by Linux, not by gVisor: they
            // tell gen1 (SBX-1) from gen2.
            "sched_getattr": outcome(libc::syscall(
                libc::SYS_sched_getattr,
                0,
                attr.as_mut_ptr(),
                attr.len(),
                0,
            )),
            "ioprio_get": outcome(libc::syscall(libc::SYS_ioprio_get, 1, 0)),
            "socket_raw": socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP),
            "socket_icmp_dgram": socket(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP),
            "socket_tcp": socket(libc::AF_INET, libc::SOCK_STREAM, 0),
        })
    }
}
