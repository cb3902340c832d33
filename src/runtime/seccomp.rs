//! The seccomp filter every container gets: Docker's default profile, resolved for the
//! container's capabilities, this machine's architecture and its kernel, as Docker does.
//!
//! The profile is data, `seccomp/docker-default.json`: a verbatim copy of
//! `profiles/seccomp/default.json` of github.com/moby/profiles v0.2.3 (Apache-2.0; vendored
//! by moby/moby at commit b985e2313a86 as `vendor/github.com/moby/profiles/seccomp/`).
//! To regenerate it, copy that file from a newer release over it
//! (`curl -fsSL https://raw.githubusercontent.com/moby/profiles/seccomp/vX.Y.Z/seccomp/default.json`),
//! run `cargo test --lib seccomp`, and read the verdict table's failures, if any, as the
//! changes Docker made.
//!
//! The profile is an allow-list (`SCMP_ACT_ERRNO`, EPERM, for everything not listed). A rule
//! may be conditional: `includes`/`excludes` name capabilities (all of `includes.caps` must
//! be in the container's bounding set; any of `excludes.caps` there drops the rule), Go
//! architecture names, or a minimum kernel. [`docker_default`] keeps the rules whose
//! conditions hold, which is what Docker's `setupSeccomp` does, and writes them as the OCI
//! `linux.seccomp` for runc.

use std::sync::OnceLock;

use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompBuilder,
    LinuxSyscall, LinuxSyscallBuilder,
};
use serde::Deserialize;
use thiserror::Error;

/// Docker's default profile (see the module's documentation for where it comes from).
const DOCKER_DEFAULT: &str = include_str!("seccomp/docker-default.json");

#[derive(Debug, Error)]
pub enum SeccompError {
    #[error("reading the built-in seccomp profile: {0}")]
    Profile(String),
    #[error("building the seccomp filter")]
    Build(#[from] oci_spec::OciSpecError),
}

/// A seccomp profile in Docker's format.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: LinuxSeccompAction,
    default_errno_ret: Option<u32>,
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    syscalls: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: Arch,
    sub_architectures: Option<Vec<Arch>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    names: Vec<String>,
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    args: Option<Vec<LinuxSeccompArg>>,
    includes: Option<Filter>,
    excludes: Option<Filter>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    caps: Vec<Capability>,
    min_kernel: Option<String>,
}

/// What the resolution depends on besides the capabilities: the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    /// The architecture as Go names it (`amd64`, `arm64`, ...), which the profile uses.
    pub arch: &'static str,
    /// The kernel's (major, minor) version.
    pub kernel: (u32, u32),
}

impl Host {
    /// This machine (read once).
    pub fn current() -> Host {
        static HOST: OnceLock<Host> = OnceLock::new();
        *HOST.get_or_init(|| Host {
            arch: go_arch(std::env::consts::ARCH),
            kernel: nix::sys::utsname::uname()
                .ok()
                .and_then(|u| kernel_version(&u.release().to_string_lossy()))
                .unwrap_or((0, 0)),
        })
    }
}

/// Rust's name of an architecture to Go's (the profile's).
fn go_arch(rust: &'static str) -> &'static str {
    match rust {
        "x86_64" => "amd64",
        "x86" => "x86",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// The seccomp architecture of a Go architecture name (Docker's `nativeToSeccomp`).
fn native_seccomp_arch(go: &str) -> Option<Arch> {
    Some(match go {
        "amd64" => Arch::ScmpArchX86_64,
        "x86" => Arch::ScmpArchX86,
        "arm64" => Arch::ScmpArchAarch64,
        "arm" => Arch::ScmpArchArm,
        "ppc64le" => Arch::ScmpArchPpc64le,
        "riscv64" => Arch::ScmpArchRiscv64,
        "s390x" => Arch::ScmpArchS390x,
        "loong64" => Arch::ScmpArchLoongarch64,
        _ => return None,
    })
}

/// `6.18.44-fc-v1045` → (6, 18).
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn profile() -> Result<&'static Profile, SeccompError> {
    static PROFILE: OnceLock<Result<Profile, String>> = OnceLock::new();
    PROFILE
        .get_or_init(|| serde_json::from_str(DOCKER_DEFAULT).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| SeccompError::Profile(e.clone()))
}

/// True when a rule's condition holds (every part of it).
fn matches(filter: &Filter, bounding: &[Capability], host: &Host) -> Result<bool, SeccompError> {
    let arch = filter.arches.is_empty() || filter.arches.iter().any(|a| a == host.arch);
    let caps = filter.caps.iter().all(|c| bounding.contains(c));
    let kernel = match &filter.min_kernel {
        None => true,
        Some(v) => {
            let min = kernel_version(v)
                .ok_or_else(|| SeccompError::Profile(format!("bad minKernel {v:?}")))?;
            host.kernel >= min
        }
    };
    Ok(arch && caps && kernel)
}

/// True when any part of an `excludes` holds (Docker drops the rule then).
fn excluded(filter: &Filter, bounding: &[Capability], host: &Host) -> Result<bool, SeccompError> {
    let arch = filter.arches.iter().any(|a| a == host.arch);
    let caps = filter.caps.iter().any(|c| bounding.contains(c));
    let kernel = match &filter.min_kernel {
        None => false,
        Some(v) => {
            let min = kernel_version(v)
                .ok_or_else(|| SeccompError::Profile(format!("bad minKernel {v:?}")))?;
            host.kernel >= min
        }
    };
    Ok(arch || caps || kernel)
}

/// Docker's default seccomp filter for a container whose bounding capability set is
/// `bounding`, on `host`.
pub fn docker_default(bounding: &[Capability], host: &Host) -> Result<LinuxSeccomp, SeccompError> {
    let profile = profile()?;
    let mut syscalls: Vec<LinuxSyscall> = Vec::new();
    for rule in &profile.syscalls {
        if let Some(ex) = &rule.excludes {
            if excluded(ex, bounding, host)? {
                continue;
            }
        }
        if let Some(inc) = &rule.includes {
            if !matches(inc, bounding, host)? {
                continue;
            }
        }
        let mut call = LinuxSyscallBuilder::default()
            .names(rule.names.clone())
            .action(rule.action)
            .build()?;
        call.set_errno_ret(rule.errno_ret);
        call.set_args(rule.args.clone());
        syscalls.push(call);
    }
    let architectures: Vec<Arch> = native_seccomp_arch(host.arch)
        .and_then(|native| profile.arch_map.iter().find(|m| m.architecture == native))
        .map(|m| {
            std::iter::once(m.architecture)
                .chain(m.sub_architectures.iter().flatten().copied())
                .collect()
        })
        .unwrap_or_default();
    let mut seccomp = LinuxSeccompBuilder::default()
        .default_action(profile.default_action)
        .syscalls(syscalls)
        .build()?;
    seccomp.set_default_errno_ret(profile.default_errno_ret);
    seccomp.set_architectures((!architectures.is_empty()).then_some(architectures));
    Ok(seccomp)
}

/// What the filter answers for a syscall with these arguments: the action and, for
/// `SCMP_ACT_ERRNO`, the errno. A model of libseccomp's evaluation for the rules
/// [`docker_default`] writes (a rule matches when all its argument checks hold; rules of one
/// syscall must agree on the action, which the tests check).
#[cfg(test)]
fn verdict(filter: &LinuxSeccomp, name: &str, args: &[u64]) -> (LinuxSeccompAction, Option<u32>) {
    use oci_spec::runtime::LinuxSeccompOperator as Op;
    let holds = |a: &LinuxSeccompArg| {
        let v = args.get(a.index()).copied().unwrap_or(0);
        match a.op() {
            Op::ScmpCmpNe => v != a.value(),
            Op::ScmpCmpLt => v < a.value(),
            Op::ScmpCmpLe => v <= a.value(),
            Op::ScmpCmpEq => v == a.value(),
            Op::ScmpCmpGe => v >= a.value(),
            Op::ScmpCmpGt => v > a.value(),
            Op::ScmpCmpMaskedEq => v & a.value() == a.value_two().unwrap_or(0),
        }
    };
    let hit = filter
        .syscalls()
        .iter()
        .flatten()
        .find(|s| s.names().iter().any(|n| n == name) && s.args().iter().flatten().all(holds));
    match hit {
        Some(s) => (s.action(), s.errno_ret()),
        None => (filter.default_action(), filter.default_errno_ret()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LinuxSeccompAction::{ScmpActAllow as Allow, ScmpActErrno as Errno};

    const AMD64: Host = Host {
        arch: "amd64",
        kernel: (6, 1),
    };
    const EPERM: Option<u32> = Some(1);
    const ENOSYS: Option<u32> = Some(38);
    const CLONE_NEWUSER: u64 = 0x1000_0000;
    const CLONE_NEWNS: u64 = 0x0002_0000;
    /// What glibc's `fork()` passes: CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD.
    const FORK_FLAGS: u64 = 0x0120_0011;
    const AF_INET: u64 = 2;
    const AF_VSOCK: u64 = 40;

    fn default_caps() -> Vec<Capability> {
        crate::runtime::ocispec::default_capabilities().to_vec()
    }

    #[test]
    fn verdicts_for_a_default_container() {
        let f = docker_default(&default_caps(), &AMD64).unwrap();
        type Case = (
            &'static str,
            &'static [u64],
            (LinuxSeccompAction, Option<u32>),
        );
        let table: &[Case] = &[
            ("read", &[], (Allow, None)),
            ("write", &[], (Allow, None)),
            ("openat", &[], (Allow, None)),
            ("execve", &[], (Allow, None)),
            ("clone", &[FORK_FLAGS], (Allow, None)),
            ("clone", &[CLONE_NEWUSER], (Errno, EPERM)),
            ("clone", &[CLONE_NEWNS | FORK_FLAGS], (Errno, EPERM)),
            // clone3's flags are in memory, out of seccomp's reach: ENOSYS makes glibc fall
            // back to clone.
            ("clone3", &[], (Errno, ENOSYS)),
            ("unshare", &[CLONE_NEWUSER], (Errno, EPERM)),
            ("setns", &[], (Errno, EPERM)),
            ("mount", &[], (Errno, EPERM)),
            ("umount2", &[], (Errno, EPERM)),
            ("keyctl", &[], (Errno, EPERM)),
            ("add_key", &[], (Errno, EPERM)),
            ("request_key", &[], (Errno, EPERM)),
            ("bpf", &[], (Errno, EPERM)),
            ("perf_event_open", &[], (Errno, EPERM)),
            ("kexec_load", &[], (Errno, EPERM)),
            ("init_module", &[], (Errno, EPERM)),
            ("reboot", &[], (Errno, EPERM)),
            ("settimeofday", &[], (Errno, EPERM)),
            ("userfaultfd", &[], (Errno, EPERM)),
            ("chroot", &[], (Allow, None)),
            // ptrace is allowed from kernel 4.8 on, where it cannot escape seccomp.
            ("ptrace", &[], (Allow, None)),
            ("kcmp", &[], (Errno, EPERM)),
            ("socket", &[AF_INET], (Allow, None)),
            ("socket", &[AF_VSOCK], (Errno, EPERM)),
            ("personality", &[0], (Allow, None)),
            ("personality", &[0xffff_ffff], (Allow, None)),
            ("personality", &[0x0040_0000], (Errno, EPERM)),
            ("arch_prctl", &[], (Allow, None)),
            ("modify_ldt", &[], (Allow, None)),
            ("riscv_flush_icache", &[], (Errno, EPERM)),
            ("open_by_handle_at", &[], (Errno, EPERM)),
        ];
        for (name, args, want) in table {
            assert_eq!(verdict(&f, name, args), *want, "{name}({args:?})");
        }
        assert_eq!(
            f.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
        );
        assert_eq!(f.default_action(), Errno);
        assert_eq!(f.default_errno_ret(), EPERM);
    }

    #[test]
    fn capability_and_kernel_conditions_are_resolved_as_docker_does() {
        let with = |extra: &[Capability]| {
            let mut caps = default_caps();
            caps.extend_from_slice(extra);
            docker_default(&caps, &AMD64).unwrap()
        };
        let admin = with(&[Capability::SysAdmin]);
        assert_eq!(verdict(&admin, "mount", &[]), (Allow, None));
        assert_eq!(verdict(&admin, "clone", &[CLONE_NEWUSER]), (Allow, None));
        assert_eq!(verdict(&admin, "clone3", &[]), (Allow, None));
        assert_eq!(verdict(&admin, "bpf", &[]), (Allow, None));
        assert_eq!(verdict(&admin, "keyctl", &[]), (Errno, EPERM));
        let bpf = with(&[Capability::Bpf]);
        assert_eq!(verdict(&bpf, "bpf", &[]), (Allow, None));
        assert_eq!(verdict(&bpf, "mount", &[]), (Errno, EPERM));
        let ptrace = with(&[Capability::SysPtrace]);
        assert_eq!(verdict(&ptrace, "kcmp", &[]), (Allow, None));
        // Without CAP_SYS_CHROOT, chroot is refused.
        let no_chroot: Vec<Capability> = default_caps()
            .into_iter()
            .filter(|c| *c != Capability::SysChroot)
            .collect();
        let f = docker_default(&no_chroot, &AMD64).unwrap();
        assert_eq!(verdict(&f, "chroot", &[]), (Errno, EPERM));
        // Before 4.8, ptrace could bypass seccomp: refused there.
        let old = Host {
            arch: "amd64",
            kernel: (4, 4),
        };
        let f = docker_default(&default_caps(), &old).unwrap();
        assert_eq!(verdict(&f, "ptrace", &[]), (Errno, EPERM));
        // Architecture-conditional rules follow the host.
        let arm = Host {
            arch: "arm64",
            kernel: (6, 1),
        };
        let f = docker_default(&default_caps(), &arm).unwrap();
        assert_eq!(verdict(&f, "arch_prctl", &[]), (Errno, EPERM));
        assert_eq!(verdict(&f, "cacheflush", &[]), (Allow, None));
        assert_eq!(
            f.architectures().as_deref(),
            Some(&[Arch::ScmpArchAarch64, Arch::ScmpArchArm][..])
        );
    }

    /// The evaluator above takes the first matching rule: sound only while the rules of one
    /// syscall agree on the action, which holds for every capability set runlet uses.
    #[test]
    fn rules_of_one_syscall_agree() {
        for caps in [default_caps(), vec![]] {
            let f = docker_default(&caps, &AMD64).unwrap();
            let rules = f.syscalls().clone().unwrap_or_default();
            for a in &rules {
                for b in &rules {
                    if a.names().iter().any(|n| b.names().contains(n)) {
                        assert_eq!(a.action(), b.action(), "{:?} vs {:?}", a, b);
                    }
                }
            }
        }
    }

    #[test]
    fn kernel_versions() {
        let table = [
            ("6.18.44-fc-v1045", Some((6, 18))),
            ("4.8", Some((4, 8))),
            ("5.10.0-21-amd64", Some((5, 10))),
            ("x", None),
        ];
        for (s, want) in table {
            assert_eq!(kernel_version(s), want, "{s}");
        }
        assert_ne!(Host::current().kernel, (0, 0));
    }
}
