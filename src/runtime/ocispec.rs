//! Builds the OCI runtime spec of a container: process (argv, env, cwd, user) from the image
//! config and the service's overrides, resource limits, namespaces, and a default security
//! profile like Docker's (default capability set without `CAP_NET_RAW`, Docker's seccomp
//! filter ([`super::seccomp`]), no new privileges, masked and read-only paths, the limits of
//! [`super::hardening`]). The spec is built with oci-spec's typed builders, so a misspelled field does not
//! compile instead of being silently dropped.

use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder,
    LinuxDeviceCgroupBuilder, LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use oci_spec::OciSpecError;
use thiserror::Error;

use super::{hardening, seccomp};
use crate::image::config::RunConfig;

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
pub const CPU_PERIOD: u64 = 100_000;

/// Docker's default capability set without `CAP_NET_RAW` (raw and packet sockets): Cloud
/// Run's gen2 does without it, and `ping` works through unprivileged ICMP sockets
/// ([`super::hardening::sysctls`]). A non-root user gets it in the bounding set only: its
/// effective and permitted sets are empty after `execve`.
const DEFAULT_CAPS: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

#[derive(Debug, Error)]
pub enum SpecError {
    #[error("image {image} has no Entrypoint or Cmd; give --command")]
    NoCommand { image: String },
    #[error(
        "image {image}: user {user:?} is not numeric and the image has no /etc/passwd entry for it"
    )]
    UnknownUser { image: String, user: String },
    #[error("building the OCI runtime spec")]
    Build(#[from] OciSpecError),
    #[error("building the seccomp filter")]
    Seccomp(#[from] super::seccomp::SeccompError),
    #[error("encoding the OCI runtime spec as JSON")]
    Encode(#[source] serde_json::Error),
}

/// The container's argv following Kubernetes/Cloud Run rules: `command` replaces the
/// image's Entrypoint (and drops its Cmd), `args` replaces the Cmd.
pub fn argv(
    image: &str,
    cfg: &RunConfig,
    command: Option<&[String]>,
    args: Option<&[String]>,
) -> Result<Vec<String>, SpecError> {
    let entry = cfg.entrypoint.clone().unwrap_or_default();
    let cmd = cfg.cmd.clone().unwrap_or_default();
    let out: Vec<String> = match (command, args) {
        (Some(c), Some(a)) => c.iter().chain(a).cloned().collect(),
        (Some(c), None) => c.to_vec(),
        (None, Some(a)) => entry.into_iter().chain(a.iter().cloned()).collect(),
        (None, None) => entry.into_iter().chain(cmd).collect(),
    };
    if out.is_empty() {
        return Err(SpecError::NoCommand {
            image: image.to_string(),
        });
    }
    Ok(out)
}

/// The capabilities of every container (bounding, effective and permitted sets).
pub fn default_capabilities() -> &'static [Capability] {
    DEFAULT_CAPS
}

/// Where a container's cgroups live (relative to each hierarchy's root). Set explicitly, or
/// runc nests the container under the caller's cgroup.
pub fn cgroups_path(id: &str) -> String {
    format!("/runlet/{id}")
}

/// The CFS quota, in microseconds per [`CPU_PERIOD`], of `cpu` CPUs.
pub fn cpu_quota_us(cpu: f64) -> i64 {
    (cpu * CPU_PERIOD as f64).round() as i64
}

/// The hostname of a container: its id, cut to the 63 bytes a hostname may have.
pub fn hostname(id: &str) -> String {
    id.chars().take(63).collect()
}

/// The working directory: the image's `WorkingDir`, or `/`.
pub fn working_dir(cfg: &RunConfig) -> String {
    cfg.working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into())
}

/// The environment: the image's, then the user's (overriding by name), then runlet's
/// contract variables (which nobody may override). `PATH` gets a default if absent.
pub fn env(
    image_env: &[String],
    user: &[(String, String)],
    contract: &[(String, String)],
) -> Vec<String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut put = |k: &str, v: &str| match out.iter_mut().find(|(ek, _)| ek == k) {
        Some(e) => e.1 = v.to_string(),
        None => out.push((k.to_string(), v.to_string())),
    };
    if !image_env.iter().any(|e| e.starts_with("PATH=")) {
        let (k, v) = DEFAULT_PATH.split_once('=').unwrap_or(("PATH", ""));
        put(k, v);
    }
    for e in image_env {
        let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
        put(k, v);
    }
    for (k, v) in user.iter().chain(contract) {
        put(k, v);
    }
    out.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// What the spec builder needs.
#[derive(Debug, Clone)]
pub struct SpecInput {
    pub id: String,
    pub hostname: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups ([`super::passwd::resolve`]).
    pub additional_gids: Vec<u32>,
    pub memory_bytes: u64,
    pub cpu: f64,
    /// Path of the network namespace to join; `None` makes runc create a private one.
    pub netns: Option<String>,
    /// Files bind-mounted read-only into the container: (destination, source on the host).
    pub etc_files: Vec<(String, String)>,
    /// Extra in-memory volumes: (mount path, size in bytes).
    pub tmpfs: Vec<(String, u64)>,
    /// In-memory volumes shared with the instance's other containers, bind-mounted
    /// read-write: (mount path, directory on the instance's tmpfs on the host).
    pub shared: Vec<(String, String)>,
}

/// Builds the OCI runtime spec as JSON (what containerd receives).
pub fn build(input: &SpecInput) -> Result<serde_json::Value, SpecError> {
    serde_json::to_value(build_spec(input)?).map_err(SpecError::Encode)
}

/// Builds the OCI runtime spec with oci-spec's builders.
///
/// The builders fill every field left unset from the type's `Default`, which in oci-spec is a
/// runc-like example spec (an `sh` process with `TERM=xterm`, a 1024-file rlimit, a read-only
/// root, inheritable and ambient capabilities, ...). Those defaults are cleared below: the
/// spec says exactly what is written here and nothing else.
pub fn build_spec(input: &SpecInput) -> Result<Spec, SpecError> {
    let caps: Capabilities = DEFAULT_CAPS.iter().copied().collect();
    let mut capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()?;
    capabilities.set_inheritable(None).set_ambient(None);

    let process = ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(input.uid)
                .gid(input.gid)
                .additional_gids(input.additional_gids.clone())
                .build()?,
        )
        .args(input.args.clone())
        .env(input.env.clone())
        .cwd(&input.cwd)
        .capabilities(capabilities)
        .no_new_privileges(true)
        .rlimits(hardening::rlimits()?)
        .build()?;

    let mut root = RootBuilder::default().path("rootfs").build()?;
    root.set_readonly(None);

    let quota = cpu_quota_us(input.cpu);
    let resources = LinuxResourcesBuilder::default()
        .devices(vec![LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()?])
        .memory(
            LinuxMemoryBuilder::default()
                .limit(input.memory_bytes as i64)
                .swap(input.memory_bytes as i64)
                .build()?,
        )
        .cpu(
            LinuxCpuBuilder::default()
                .quota(quota)
                .period(CPU_PERIOD)
                .build()?,
        )
        .pids(
            LinuxPidsBuilder::default()
                .limit(hardening::PIDS_LIMIT)
                .build()?,
        )
        .build()?;
    let linux = LinuxBuilder::default()
        .cgroups_path(cgroups_path(&input.id))
        .resources(resources)
        .namespaces(namespaces(input.netns.as_deref())?)
        .masked_paths(strings(MASKED_PATHS))
        .readonly_paths(strings(READONLY_PATHS))
        .seccomp(seccomp::docker_default(
            DEFAULT_CAPS,
            &seccomp::Host::current(),
        )?)
        .sysctl(hardening::sysctls())
        .build()?;

    let mut spec = SpecBuilder::default()
        .version("1.0.2")
        .process(process)
        .root(root)
        .hostname(&input.hostname)
        .mounts(mounts(input)?)
        .linux(linux)
        .build()?;
    spec.set_annotations(None);
    Ok(spec)
}

/// The container's mounts: the usual /proc, /dev, /sys, /tmp in memory (charged to the
/// instance's memory cgroup, like Cloud Run's), the read-only /etc files, extra tmpfs volumes.
fn mounts(input: &SpecInput) -> Result<Vec<Mount>, SpecError> {
    let mount = |dest: &str, typ: &str, source: &str, options: &[&str]| {
        MountBuilder::default()
            .destination(dest)
            .typ(typ)
            .source(source)
            .options(strings(options))
            .build()
    };
    let mut out = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        )?,
        mount("/tmp", "tmpfs", "tmpfs", &["nosuid", "nodev", "mode=1777"])?,
    ];
    for (dest, src) in &input.etc_files {
        out.push(mount(
            dest,
            "bind",
            src,
            &["rbind", "ro", "nosuid", "nodev", "noexec"],
        )?);
    }
    for (dest, src) in &input.shared {
        out.push(mount(
            dest,
            "bind",
            src,
            &["rbind", "rw", "nosuid", "nodev"],
        )?);
    }
    for (dest, size) in &input.tmpfs {
        let size = format!("size={size}");
        out.push(mount(
            dest,
            "tmpfs",
            "tmpfs",
            &["nosuid", "nodev", "mode=1777", &size],
        )?);
    }
    Ok(out)
}

/// New pid, ipc, uts and mount namespaces; the network namespace at `netns`, or a new one.
fn namespaces(netns: Option<&str>) -> Result<Vec<LinuxNamespace>, SpecError> {
    let new = |typ| LinuxNamespaceBuilder::default().typ(typ).build();
    let mut network = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Network);
    if let Some(path) = netns {
        network = network.path(path);
    }
    Ok(vec![
        new(LinuxNamespaceType::Pid)?,
        new(LinuxNamespaceType::Ipc)?,
        new(LinuxNamespaceType::Uts)?,
        new(LinuxNamespaceType::Mount)?,
        network.build()?,
    ])
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec as runlet wrote it before the builders (`json!`, checked by a round trip
    /// through oci-spec's types): the new builder must produce exactly this.
    fn legacy_json(input: &SpecInput) -> serde_json::Value {
        use serde_json::json;
        let caps = [
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FSETID",
            "CAP_FOWNER",
            "CAP_MKNOD",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_SETFCAP",
            "CAP_SETPCAP",
            "CAP_NET_BIND_SERVICE",
            "CAP_SYS_CHROOT",
            "CAP_KILL",
            "CAP_AUDIT_WRITE",
        ];
        let mut mounts = vec![
            json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
            json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
            json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
            json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
            json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
            json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
            json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
            // /tmp is in memory (charged to the instance's memory cgroup), like Cloud Run's.
            json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}),
        ];
        for (dest, src) in &input.etc_files {
            mounts.push(json!({"destination": dest, "type": "bind", "source": src, "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]}));
        }
        for (dest, size) in &input.tmpfs {
            mounts.push(json!({"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777", format!("size={size}")]}));
        }
        let mut namespaces = vec![
            json!({"type": "pid"}),
            json!({"type": "ipc"}),
            json!({"type": "uts"}),
            json!({"type": "mount"}),
        ];
        namespaces.push(match &input.netns {
            Some(p) => json!({"type": "network", "path": p}),
            None => json!({"type": "network"}),
        });
        let quota = cpu_quota_us(input.cpu);
        let spec = json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": input.uid, "gid": input.gid, "additionalGids": input.additional_gids},
                "args": input.args,
                "env": input.env,
                "cwd": input.cwd,
                "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
                "noNewPrivileges": true,
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
            },
            "root": {"path": "rootfs"},
            "hostname": input.hostname,
            "mounts": mounts,
            "linux": {
                "cgroupsPath": cgroups_path(&input.id),
                "resources": {
                    "devices": [{"allow": false, "access": "rwm"}],
                    "memory": {"limit": input.memory_bytes as i64, "swap": input.memory_bytes as i64},
                    "cpu": {"quota": quota, "period": CPU_PERIOD},
                    "pids": {"limit": 4096}
                },
                "namespaces": namespaces,
                "maskedPaths": MASKED_PATHS,
                "readonlyPaths": READONLY_PATHS,
                "seccomp": seccomp::docker_default(DEFAULT_CAPS, &seccomp::Host::current()).unwrap(),
                "sysctl": {"net.ipv4.ping_group_range": "0 2147483647"}
            }
        });
        // Round-trip through oci-spec's types: a typo in a field name or type fails here, not in runc.
        let typed: oci_spec::runtime::Spec = serde_json::from_value(spec).unwrap();
        serde_json::to_value(&typed).unwrap()
    }

    fn input(netns: Option<&str>, etc: usize, tmpfs: &[(&str, u64)]) -> SpecInput {
        SpecInput {
            id: "svc-00001-abc".into(),
            hostname: "svc-00001-abc".into(),
            args: v(&["/probe", "--flag", "x y"]),
            env: v(&["PATH=/bin", "PORT=8080", "K_SERVICE=svc"]),
            cwd: "/tmp".into(),
            uid: 65534,
            gid: 65533,
            additional_gids: vec![50, 10],
            memory_bytes: 512 << 20,
            cpu: 1.5,
            netns: netns.map(str::to_string),
            etc_files: [
                ("/etc/hosts", "/run/x/hosts"),
                ("/etc/resolv.conf", "/run/x/resolv"),
            ][..etc]
                .iter()
                .map(|(d, s)| (d.to_string(), s.to_string()))
                .collect(),
            tmpfs: tmpfs.iter().map(|(d, s)| (d.to_string(), *s)).collect(),
            shared: vec![],
        }
    }

    #[test]
    fn builders_write_the_same_json_as_before() {
        let table = [
            input(Some("/run/netns/x"), 2, &[]),
            input(None, 0, &[]),
            input(
                Some("/var/run/netns/y"),
                1,
                &[("/cache", 64 << 20), ("/data", 1)],
            ),
        ];
        // oci-spec keeps capabilities in a set: compare them in a fixed order.
        let sorted = |mut spec: serde_json::Value| {
            for set in ["bounding", "effective", "permitted"] {
                let caps = &mut spec["process"]["capabilities"][set];
                let mut list: Vec<String> = serde_json::from_value(caps.take()).unwrap();
                list.sort();
                *caps = serde_json::json!(list);
            }
            spec
        };
        for case in table {
            assert_eq!(
                sorted(build(&case).unwrap()),
                sorted(legacy_json(&case)),
                "{case:?}"
            );
        }
    }

    fn cfg(entry: &[&str], cmd: &[&str]) -> RunConfig {
        RunConfig {
            entrypoint: (!entry.is_empty()).then(|| entry.iter().map(|s| s.to_string()).collect()),
            cmd: (!cmd.is_empty()).then(|| cmd.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn argv_follows_kubernetes_rules() {
        let c = cfg(&["/ep"], &["cmd1"]);
        type Case<'a> = (Option<Vec<String>>, Option<Vec<String>>, Vec<&'a str>);
        let table: Vec<Case> = vec![
            (None, None, vec!["/ep", "cmd1"]),
            (Some(v(&["/x"])), None, vec!["/x"]),
            (None, Some(v(&["a", "b"])), vec!["/ep", "a", "b"]),
            (Some(v(&["/x"])), Some(v(&["a"])), vec!["/x", "a"]),
        ];
        for (command, args, want) in table {
            assert_eq!(
                argv("img", &c, command.as_deref(), args.as_deref()).unwrap(),
                v(&want)
            );
        }
        assert!(matches!(
            argv("img", &cfg(&[], &[]), None, None),
            Err(SpecError::NoCommand { image }) if image == "img"
        ));
    }

    #[test]
    fn env_precedence() {
        let image = v(&["A=image", "B=image"]);
        let user = vec![
            ("B".to_string(), "user".to_string()),
            ("PORT".to_string(), "1".to_string()),
        ];
        let contract = vec![("PORT".to_string(), "8080".to_string())];
        let e = env(&image, &user, &contract);
        assert!(e[0].starts_with("PATH="), "default PATH first: {e:?}");
        assert!(e.contains(&"A=image".to_string()));
        assert!(e.contains(&"B=user".to_string()));
        assert!(e.contains(&"PORT=8080".to_string()));
        assert_eq!(e.iter().filter(|x| x.starts_with("PORT=")).count(), 1);
        let with_path = env(&v(&["PATH=/only"]), &[], &[]);
        assert_eq!(with_path, v(&["PATH=/only"]));
    }

    #[test]
    fn spec_has_limits_namespaces_and_security_defaults() {
        let s = build(&SpecInput {
            id: "i1".into(),
            hostname: "h".into(),
            args: v(&["/probe"]),
            env: v(&["PORT=8080"]),
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            memory_bytes: 512 << 20,
            cpu: 0.5,
            netns: Some("/run/netns/x".into()),
            etc_files: vec![("/etc/hosts".into(), "/tmp/hosts".into())],
            tmpfs: vec![],
            shared: vec![("/shared".into(), "/run/x/volumes/v/upper".into())],
        })
        .unwrap();
        assert_eq!(s["linux"]["resources"]["memory"]["limit"], 512 << 20);
        assert_eq!(s["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(s["linux"]["cgroupsPath"], "/runlet/i1");
        let shared = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/shared")
            .unwrap();
        assert_eq!(
            (&shared["type"], &shared["source"], &shared["options"][1]),
            (
                &serde_json::json!("bind"),
                &serde_json::json!("/run/x/volumes/v/upper"),
                &serde_json::json!("rw")
            )
        );
        assert_eq!(s["process"]["noNewPrivileges"], true);
        assert!(s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "network" && n["path"] == "/run/netns/x"));
        assert!(s["linux"]["readonlyPaths"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "/proc/sys"));
        assert!(s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["destination"] == "/etc/hosts"));
        for cap in ["CAP_SYS_ADMIN", "CAP_NET_RAW"] {
            assert!(!s["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == cap));
        }
        assert_eq!(s["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(s["linux"]["resources"]["pids"]["limit"], 4096);
        assert_eq!(
            s["process"]["rlimits"],
            serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}])
        );
        assert_eq!(
            s["linux"]["sysctl"]["net.ipv4.ping_group_range"],
            "0 2147483647"
        );
    }
}
