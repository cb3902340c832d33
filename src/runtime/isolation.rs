//! Network isolation of instances and job tasks: what an instance may reach on this host.
//!
//! Every instance sits on the shared bridge (`runlet0`, [`super::network`]). Without rules,
//! an instance could open connections to every other instance's address, to anything the
//! host serves on the bridge's gateway address, and to link-local addresses such as
//! `169.254.169.254`, which the outbound NAT would carry to the host platform's own metadata
//! service (a credential leak on a cloud VM). runlet installs, in the `filter` table:
//!
//! - `RUNLET-ISOLATION-FWD`, jumped to from `FORWARD` for packets coming from the bridge:
//!   link-local destinations are dropped; packets going back out of the bridge (instance to
//!   instance, bridged through `br_netfilter` or routed through the gateway) are rejected.
//!   Everything else (the world, OUT-1) returns to `FORWARD` and is accepted as before.
//! - `RUNLET-ISOLATION-IN`, jumped to from `INPUT` for packets coming from the bridge:
//!   replies pass, then `RUNLET-ISOLATION-PORTS` (the ports runlet processes serve on the
//!   gateway: their metadata servers and the daemon's ingress), then link-local is dropped
//!   and every other connection to the gateway address is rejected.
//! - `RUNLET-ISOLATION-PORTS`: one `ACCEPT` per served port, tagged with the owning
//!   process (`runlet pid N`), added when the process starts and removed when it ends.
//!
//! The bridge ports are also marked `isolated` ([`isolate_port`]), so instances cannot
//! exchange frames even where `br_netfilter` is not loaded.
//!
//! Several runlet processes share the bridge and so these chains. Each process registers
//! (a file `/run/runlet/isolation/PID`) under a lock (`/run/runlet/isolation.lock`) when it
//! installs, and unregisters when it ends; the chains and jumps are removed by the last
//! process to leave, and only when no instance network namespace (`/run/netns/runlet-*`)
//! is left either (a daemon that exits leaves its instances running for the next one to
//! adopt: they stay isolated). Registrations of dead processes are pruned, with their
//! port rules, by the next process that takes the lock.
//!
//! The rules are decided by plain functions ([`static_rules`], [`port_rule`]); every
//! `iptables` run is in [`Iptables`].

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use thiserror::Error;
use tracing::{info, warn};

/// The chain `FORWARD` jumps to for packets from the bridge.
pub const CHAIN_FWD: &str = "RUNLET-ISOLATION-FWD";
/// The chain `INPUT` jumps to for packets from the bridge.
pub const CHAIN_IN: &str = "RUNLET-ISOLATION-IN";
/// The ports runlet processes serve on the gateway.
pub const CHAIN_PORTS: &str = "RUNLET-ISOLATION-PORTS";
/// Link-local addresses (the host platform's metadata service among them).
pub const LINK_LOCAL: &str = "169.254.0.0/16";
const COMMENT: &str = "runlet: isolation of instances";

const REGISTRY_DIR: &str = "/run/runlet/isolation";
const LOCK_FILE: &str = "/run/runlet/isolation.lock";

#[derive(Debug, Error)]
#[error("network isolation rules: {detail}")]
pub struct IsolationError {
    pub detail: String,
}

fn err(detail: impl Into<String>) -> IsolationError {
    IsolationError {
        detail: detail.into(),
    }
}

/// One `iptables` rule: the chain it goes in and its match/target arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub chain: String,
    pub args: Vec<String>,
}

fn rule(chain: &str, args: &[&str]) -> Rule {
    Rule {
        chain: chain.to_string(),
        args: args.iter().map(|s| s.to_string()).collect(),
    }
}

/// A rule with `matches`, the comment `comment`, and `-j` and `target`.
fn commented(chain: &str, matches: &[&str], comment: &str, target: &[&str]) -> Rule {
    let comment = ["-m", "comment", "--comment", comment, "-j"];
    rule(chain, &[matches, &comment[..], target].concat())
}

/// The jumps from the built-in chains into runlet's (inserted first in `INPUT`/`FORWARD`).
pub fn jumps(bridge: &str) -> Vec<Rule> {
    vec![
        commented("FORWARD", &["-i", bridge], COMMENT, &[CHAIN_FWD]),
        commented("INPUT", &["-i", bridge], COMMENT, &[CHAIN_IN]),
    ]
}

/// The rules of [`CHAIN_FWD`] and [`CHAIN_IN`], in order, for instances on `bridge` whose
/// host side is `gateway`.
pub fn static_rules(bridge: &str, gateway: Ipv4Addr) -> Vec<Rule> {
    let gw = format!("{gateway}/32");
    let no_link_local = "runlet: no link-local from instances";
    let served_only = "runlet: only the served ports of the gateway";
    vec![
        // Link-local (169.254.169.254 is the host platform's metadata service): never
        // forwarded, whatever the protocol.
        commented(CHAIN_FWD, &["-d", LINK_LOCAL], no_link_local, &["DROP"]),
        // Back out of the bridge: another instance's address.
        commented(
            CHAIN_FWD,
            &["-o", bridge],
            "runlet: no instance to instance",
            &["REJECT"],
        ),
        rule(
            CHAIN_IN,
            &[
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ],
        ),
        rule(CHAIN_IN, &["-j", CHAIN_PORTS]),
        commented(CHAIN_IN, &["-d", LINK_LOCAL], no_link_local, &["DROP"]),
        commented(
            CHAIN_IN,
            &["-d", &gw, "-p", "tcp"],
            served_only,
            &["REJECT", "--reject-with", "tcp-reset"],
        ),
        commented(CHAIN_IN, &["-d", &gw], served_only, &["REJECT"]),
    ]
}

/// The comment that tags the port rules of process `pid`.
pub fn owner_tag(pid: u32) -> String {
    format!("runlet pid {pid}")
}

/// The rule that lets instances reach `port` of the gateway, owned by process `pid`.
pub fn port_rule(gateway: Ipv4Addr, port: u16, pid: u32) -> Rule {
    let gw = format!("{gateway}/32");
    let port = port.to_string();
    commented(
        CHAIN_PORTS,
        &["-d", &gw, "-p", "tcp", "--dport", &port],
        &owner_tag(pid),
        &["ACCEPT"],
    )
}

/// The owner pid of a rule as `iptables -S` prints it (`... --comment "runlet pid 12" ...`).
pub fn rule_owner(line: &str) -> Option<u32> {
    let rest = line.split("runlet pid ").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Whether the last registered process may remove the chains: nobody else is registered
/// and no instance network namespace is left.
pub fn may_remove(others_alive: usize, namespaces_left: usize) -> bool {
    others_alive == 0 && namespaces_left == 0
}

/// Runs `iptables` (with `-w`, waiting for the xtables lock).
pub struct Iptables;

impl Iptables {
    fn run(args: &[&str]) -> io::Result<std::process::Output> {
        Command::new("iptables")
            .arg("-w")
            .args(args)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .output()
    }

    fn ok(args: &[&str]) -> Result<bool, IsolationError> {
        let out = Self::run(args).map_err(|e| err(format!("running iptables: {e}")))?;
        Ok(out.status.success())
    }

    fn must(args: &[&str]) -> Result<(), IsolationError> {
        let out = Self::run(args).map_err(|e| err(format!("running iptables: {e}")))?;
        if out.status.success() {
            return Ok(());
        }
        Err(err(format!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }

    fn with(op: &str, r: &Rule) -> Vec<String> {
        let mut v = vec![op.to_string(), r.chain.clone()];
        v.extend(r.args.iter().cloned());
        v
    }

    fn check(r: &Rule) -> Result<bool, IsolationError> {
        let v = Self::with("-C", r);
        Self::ok(&v.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn append(r: &Rule) -> Result<(), IsolationError> {
        let v = Self::with("-A", r);
        Self::must(&v.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn insert_first(r: &Rule) -> Result<(), IsolationError> {
        let mut v = vec!["-I".to_string(), r.chain.clone(), "1".to_string()];
        v.extend(r.args.iter().cloned());
        Self::must(&v.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn delete(r: &Rule) {
        let v = Self::with("-D", r);
        while Self::ok(&v.iter().map(String::as_str).collect::<Vec<_>>()).unwrap_or(false) {}
    }

    /// The chain's rules as `iptables -S CHAIN` prints them (without the `-N` line); `None`
    /// if the chain does not exist.
    pub fn list(chain: &str) -> Option<Vec<String>> {
        let out = Self::run(&["-S", chain]).ok()?;
        if !out.status.success() {
            return None;
        }
        Some(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with("-A "))
                .map(str::to_string)
                .collect(),
        )
    }

    /// Makes `chain` hold exactly `rules`, in order (rebuilt only if it does not already).
    fn ensure_chain(chain: &str, rules: &[Rule]) -> Result<(), IsolationError> {
        let mine: Vec<&Rule> = rules.iter().filter(|r| r.chain == chain).collect();
        if let Some(have) = Self::list(chain) {
            let all_there = mine.iter().try_fold(true, |acc, r| {
                Ok::<_, IsolationError>(acc && Self::check(r)?)
            })?;
            if all_there && have.len() == mine.len() {
                return Ok(());
            }
            Self::must(&["-F", chain])?;
        } else {
            Self::must(&["-N", chain])?;
        }
        for r in mine {
            Self::append(r)?;
        }
        Ok(())
    }

    fn remove_chain(chain: &str) {
        let _ = Self::ok(&["-F", chain]);
        let _ = Self::ok(&["-X", chain]);
    }
}

/// This process's registration; [`Registration::leave`] (or drop) undoes it.
pub struct Registration {
    bridge: String,
    gateway: Ipv4Addr,
    ports: Vec<u16>,
    pid: u32,
    left: bool,
}

/// Takes the lock shared by every runlet on this host (released when the file closes).
fn lock() -> Result<nix::fcntl::Flock<std::fs::File>, IsolationError> {
    std::fs::create_dir_all(REGISTRY_DIR).map_err(|e| err(format!("{REGISTRY_DIR}: {e}")))?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .map_err(|e| err(format!("{LOCK_FILE}: {e}")))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| err(format!("locking {LOCK_FILE}: {e}")))
}

fn alive(pid: u32) -> bool {
    let Ok(p) = i32::try_from(pid) else {
        return false;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Registered pids (live or not).
fn registered() -> Vec<u32> {
    std::fs::read_dir(REGISTRY_DIR)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the registrations and port rules of runlet processes that are gone, under the
/// lock: for a command that cleans up after a killed runlet without installing rules
/// itself (`runlet job executions`). Blocking (runs `iptables`).
pub fn prune() -> Result<(), IsolationError> {
    let _lock = lock()?;
    prune_dead();
    Ok(())
}

/// Removes the registrations and port rules of processes that are gone.
fn prune_dead() {
    for pid in registered().into_iter().filter(|p| !alive(*p)) {
        let _ = std::fs::remove_file(Path::new(REGISTRY_DIR).join(pid.to_string()));
    }
    for line in Iptables::list(CHAIN_PORTS).unwrap_or_default() {
        if let Some(pid) = rule_owner(&line).filter(|p| !alive(*p)) {
            // `-S` prints the rule as `-A CHAIN ...`: delete it by the same words.
            let words = shell_words(&line);
            let mut args: Vec<&str> = words.iter().map(String::as_str).collect();
            if args.first() == Some(&"-A") {
                args[0] = "-D";
                if Iptables::ok(&args).unwrap_or(false) {
                    info!(pid, "removed a dead runlet's isolation port rule");
                }
            }
        }
    }
}

/// Splits an `iptables -S` line into words (double quotes group, as iptables prints them).
fn shell_words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

fn namespaces_left(netns_dir: &Path) -> usize {
    std::fs::read_dir(netns_dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("runlet-"))
                .count()
        })
        .unwrap_or(0)
}

/// Installs the isolation rules (if not there) and this process's `ports` on the gateway,
/// and registers this process. Blocking (runs `iptables`): call it before any instance
/// starts, from `spawn_blocking` or at start-up.
pub fn install(
    bridge: &str,
    gateway: Ipv4Addr,
    ports: &[u16],
) -> Result<Registration, IsolationError> {
    let _lock = lock()?;
    prune_dead();
    let statics = static_rules(bridge, gateway);
    if Iptables::list(CHAIN_PORTS).is_none() {
        Iptables::must(&["-N", CHAIN_PORTS])?;
    }
    Iptables::ensure_chain(CHAIN_FWD, &statics)?;
    Iptables::ensure_chain(CHAIN_IN, &statics)?;
    for j in jumps(bridge) {
        if !Iptables::check(&j)? {
            Iptables::insert_first(&j)?;
        }
    }
    let pid = std::process::id();
    for p in ports {
        let r = port_rule(gateway, *p, pid);
        if !Iptables::check(&r)? {
            Iptables::append(&r)?;
        }
    }
    let mark = PathBuf::from(REGISTRY_DIR).join(pid.to_string());
    std::fs::write(&mark, b"").map_err(|e| err(format!("{}: {e}", mark.display())))?;
    info!(?ports, "network isolation rules in place");
    Ok(Registration {
        bridge: bridge.to_string(),
        gateway,
        ports: ports.to_vec(),
        pid,
        left: false,
    })
}

impl Registration {
    /// Adds another served port (the metadata server's, once bound).
    pub fn allow(&mut self, port: u16) -> Result<(), IsolationError> {
        let _lock = lock()?;
        let r = port_rule(self.gateway, port, self.pid);
        if !Iptables::check(&r)? {
            Iptables::append(&r)?;
        }
        self.ports.push(port);
        Ok(())
    }

    /// Removes this process's port rules and registration; removes the chains if no other
    /// runlet process is registered and no instance namespace is left.
    pub fn leave(mut self) {
        self.leave_now();
    }

    fn leave_now(&mut self) {
        if self.left {
            return;
        }
        self.left = true;
        let Ok(_lock) = lock() else {
            warn!("could not take the isolation lock; rules left in place");
            return;
        };
        for p in &self.ports {
            Iptables::delete(&port_rule(self.gateway, *p, self.pid));
        }
        let _ = std::fs::remove_file(Path::new(REGISTRY_DIR).join(self.pid.to_string()));
        prune_dead();
        let others = registered().into_iter().filter(|p| alive(*p)).count();
        let netns = namespaces_left(Path::new("/run/netns"));
        if !may_remove(others, netns) {
            info!(
                others,
                netns, "isolation rules stay for other runlets or instances"
            );
            return;
        }
        for j in jumps(&self.bridge) {
            Iptables::delete(&j);
        }
        for c in [CHAIN_FWD, CHAIN_IN, CHAIN_PORTS] {
            Iptables::remove_chain(c);
        }
        info!("network isolation rules removed (no runlet needs them)");
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.leave_now();
    }
}

/// Marks the bridge port `veth` isolated: frames between isolated ports are not forwarded
/// (instances can still reach the bridge itself, that is the host).
pub fn isolate_port(veth: &str) -> io::Result<()> {
    std::fs::write(format!("/sys/class/net/{veth}/brport/isolated"), b"1")
}

/// The address every Google client asks for metadata.
pub const METADATA_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// The `nat OUTPUT` rule inside an instance's namespace that sends `169.254.169.254:80` to
/// the metadata server of the runlet process that owns the instance (`gateway:port`).
pub fn metadata_dnat(gateway: Ipv4Addr, port: u16) -> Vec<String> {
    let to = format!("{gateway}:{port}");
    let dst = format!("{METADATA_IP}/32");
    [
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-d",
        &dst,
        "-p",
        "tcp",
        "--dport",
        "80",
        "-m",
        "comment",
        "--comment",
        "runlet: metadata server",
        "-j",
        "DNAT",
        "--to-destination",
        &to,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Runs `iptables -w ARGS` inside the network namespace bound at `netns` (`nsenter`).
pub async fn iptables_in(netns: &Path, args: &[String]) -> Result<(), IsolationError> {
    let out = tokio::process::Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .arg("iptables")
        .arg("-w")
        .args(args)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| err(format!("running nsenter iptables: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(err(format!(
        "iptables {} in {}: {}",
        args.join(" "),
        netns.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// The host side of an instance's veth pair in a CNI `bridge` ADD result: the interface
/// that is neither the bridge nor in the namespace.
pub fn host_veth(cni_result: &serde_json::Value, bridge: &str) -> Option<String> {
    cni_result["interfaces"]
        .as_array()?
        .iter()
        .find(|i| i.get("sandbox").is_none() && i["name"].as_str() != Some(bridge))
        .and_then(|i| i["name"].as_str())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW: Ipv4Addr = Ipv4Addr::new(10, 209, 0, 1);

    fn flat(r: &Rule) -> String {
        format!("{} {}", r.chain, r.args.join(" "))
    }

    #[test]
    fn the_rules_in_order() {
        let got: Vec<String> = static_rules("runlet0", GW).iter().map(flat).collect();
        let want = [
            "RUNLET-ISOLATION-FWD -d 169.254.0.0/16 -m comment --comment runlet: no link-local from instances -j DROP",
            "RUNLET-ISOLATION-FWD -o runlet0 -m comment --comment runlet: no instance to instance -j REJECT",
            "RUNLET-ISOLATION-IN -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
            "RUNLET-ISOLATION-IN -j RUNLET-ISOLATION-PORTS",
            "RUNLET-ISOLATION-IN -d 169.254.0.0/16 -m comment --comment runlet: no link-local from instances -j DROP",
            "RUNLET-ISOLATION-IN -d 10.209.0.1/32 -p tcp -m comment --comment runlet: only the served ports of the gateway -j REJECT --reject-with tcp-reset",
            "RUNLET-ISOLATION-IN -d 10.209.0.1/32 -m comment --comment runlet: only the served ports of the gateway -j REJECT",
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn jumps_only_for_the_bridge() {
        let got: Vec<String> = jumps("runlet0").iter().map(flat).collect();
        assert_eq!(
            got,
            [
                "FORWARD -i runlet0 -m comment --comment runlet: isolation of instances -j RUNLET-ISOLATION-FWD",
                "INPUT -i runlet0 -m comment --comment runlet: isolation of instances -j RUNLET-ISOLATION-IN",
            ]
        );
    }

    #[test]
    fn port_rules_carry_their_owner() {
        let r = port_rule(GW, 41234, 77);
        assert_eq!(
            flat(&r),
            "RUNLET-ISOLATION-PORTS -d 10.209.0.1/32 -p tcp --dport 41234 -m comment --comment runlet pid 77 -j ACCEPT"
        );
        let printed = r#"-A RUNLET-ISOLATION-PORTS -d 10.209.0.1/32 -p tcp -m tcp --dport 41234 -m comment --comment "runlet pid 77" -j ACCEPT"#;
        let cases = [
            (printed, Some(77)),
            ("-A RUNLET-ISOLATION-PORTS -j ACCEPT", None),
            ("--comment \"runlet pid x\"", None),
        ];
        for (line, want) in cases {
            assert_eq!(rule_owner(line), want, "{line}");
        }
        assert_eq!(
            shell_words(printed)[12..14],
            ["--comment".to_string(), "runlet pid 77".to_string()]
        );
    }

    #[test]
    fn the_metadata_dnat_and_the_host_veth() {
        assert_eq!(
            metadata_dnat(GW, 40001).join(" "),
            "-t nat -A OUTPUT -d 169.254.169.254/32 -p tcp --dport 80 -m comment --comment runlet: metadata server -j DNAT --to-destination 10.209.0.1:40001"
        );
        let res = serde_json::json!({"interfaces": [
            {"name": "runlet0", "mac": "x"},
            {"name": "veth1234", "mac": "y"},
            {"name": "eth0", "mac": "z", "sandbox": "/run/netns/runlet-a"}
        ]});
        assert_eq!(host_veth(&res, "runlet0").as_deref(), Some("veth1234"));
        assert_eq!(host_veth(&serde_json::json!({}), "runlet0"), None);
    }

    #[test]
    fn the_chains_go_with_the_last_runlet_and_instance() {
        let cases = [
            ((0, 0), true),
            ((1, 0), false),
            ((0, 2), false),
            ((3, 1), false),
        ];
        for ((others, netns), want) in cases {
            assert_eq!(may_remove(others, netns), want, "{others} {netns}");
        }
    }
}
