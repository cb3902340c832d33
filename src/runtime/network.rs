//! Per-instance networking: a network namespace per instance, wired with Debian's CNI
//! `bridge` plugin (`host-local` IPAM) for outbound connectivity, and a dialer that reaches
//! the instance's own loopback from inside its namespace.
//!
//! runlet never sends traffic to the instance's bridge address: the dialer thread joins the
//! instance's namespace once (`setns`) and opens connections to `127.0.0.1:PORT` there; a
//! socket keeps the namespace it was created in, so tokio can use it from any thread. Every
//! instance can therefore listen on 8080.
//!
//! Cheaper than the textbook CNI sequence, because jobs pay it once per task:
//! - `lo` is brought up by runlet itself, in the thread that creates the namespace, instead
//!   of by the `loopback` plugin (which does only that; ~8 ms a process).
//! - Outbound NAT is one `MASQUERADE` rule for the whole subnet, checked by runlet, instead
//!   of the bridge plugin's `ipMasq` (a chain and rules per instance, created on ADD and
//!   removed on DEL: ~17 ms of `iptables` runs on ADD, ~38 ms on DEL).
//! - Detach drops the namespace (the kernel then removes the veth pair with it) and releases
//!   the address with `host-local DEL`, instead of `bridge DEL`, which also deletes the veth
//!   synchronously (~30 ms).

use std::fs::File;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;

use nix::sched::CloneFlags;
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::sync::{oneshot, Mutex};
use tokio::time::{Duration, Instant};
use tracing::{info, warn};

use crate::dial::Dial;

const NETNS_DIR: &str = "/run/netns";
/// host-local keeps one file per allocated address here (under the network name `runlet`).
pub const IPAM_DIR: &str = "/var/lib/cni/networks";

#[derive(Debug, Error)]
pub enum NetError {
    #[error("network namespace {path}: {detail}")]
    Netns { path: String, detail: String },
    #[error("CNI plugin {plugin} not found in {dirs}; install Debian's containernetworking-plugins (apt-get install containernetworking-plugins)")]
    PluginMissing { plugin: String, dirs: String },
    #[error("CNI {plugin} {command} for {id} failed: {detail}")]
    Plugin {
        plugin: String,
        command: &'static str,
        id: String,
        detail: String,
    },
    #[error("isolation of the instance: {0}")]
    Isolation(String),
    #[error("outbound NAT rule for {subnet}: {detail}")]
    Nat { subnet: String, detail: String },
}

/// How long a successful check of the NAT rule is trusted before [`Network::attach`] checks
/// again (someone may flush the firewall under a long-running `serve`).
const NAT_RECHECK: Duration = Duration::from_secs(30);

/// The instances' subnet; the bridge (the instances' gateway) has its first address.
const SUBNET: &str = "10.209.0.0/16";

/// The bridge's address: instances reach the host (and the daemon's ingress) there.
pub const GATEWAY: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 209, 0, 1);

/// The network settings runlet uses for every instance.
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub cni_dirs: Vec<PathBuf>,
    pub bridge: String,
    pub subnet: String,
    pub ipam_dir: PathBuf,
    /// When the outbound NAT rule was last seen in place (shared by clones).
    nat_checked: std::sync::Arc<Mutex<Option<Instant>>>,
    /// The metadata server instances are sent to ([`crate::metadata`]); `None`: none.
    meta: Option<MetaHook>,
}

/// Where an instance's metadata requests go, and who the instance is.
#[derive(Debug, Clone)]
pub struct MetaHook {
    /// The metadata server's port on [`GATEWAY`].
    pub port: u16,
    pub registry: std::sync::Arc<crate::metadata::Registry>,
    pub identity: std::sync::Arc<crate::metadata::Identity>,
}

impl NetConfig {
    /// Address allocations live in host-local's default directory, shared by every runlet on
    /// the machine (they all use the same bridge), not under one runlet's state dir.
    pub fn new() -> Self {
        NetConfig {
            cni_dirs: vec![PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")],
            bridge: "runlet0".into(),
            subnet: SUBNET.into(),
            ipam_dir: PathBuf::from(IPAM_DIR),
            nat_checked: Default::default(),
            meta: None,
        }
    }

    /// The same network, its instances sent to this metadata server.
    pub fn with_metadata(mut self, hook: MetaHook) -> Self {
        self.meta = Some(hook);
        self
    }

    /// The same network and metadata server, its instances with this identity (the
    /// daemon's services and jobs each have theirs).
    pub fn with_identity(&self, identity: crate::metadata::Identity) -> Self {
        let mut n = self.clone();
        if let Some(m) = n.meta.as_mut() {
            m.identity = std::sync::Arc::new(identity);
        }
        n
    }

    /// Isolates the new instance (its bridge port), sends its `169.254.169.254:80` to the
    /// metadata server and registers it there ([`super::isolation`]).
    async fn secure(
        &self,
        att: &Attachment,
        cni_result: &serde_json::Value,
    ) -> Result<(), NetError> {
        use super::isolation;
        match isolation::host_veth(cni_result, &self.bridge) {
            Some(veth) => {
                if let Err(e) = isolation::isolate_port(&veth) {
                    warn!(instance = %att.id, "marking bridge port {veth} isolated: {e}");
                }
            }
            None => warn!(instance = %att.id, "no host interface in the CNI result"),
        }
        self.route_metadata(att, false).await
    }

    /// Sends the namespace's `169.254.169.254:80` to this process's metadata server
    /// (replacing an earlier process's rule when `replace`) and registers the instance by
    /// its address.
    async fn route_metadata(&self, att: &Attachment, replace: bool) -> Result<(), NetError> {
        use super::isolation;
        let Some(m) = &self.meta else {
            return Ok(());
        };
        let iptables = |args: Vec<String>| async move {
            isolation::iptables_in(&att.netns, &args)
                .await
                .map_err(|e| NetError::Isolation(e.detail))
        };
        if replace {
            // The namespace is the instance's own: its nat OUTPUT chain holds only
            // runlet's rule.
            iptables(vec![
                "-t".into(),
                "nat".into(),
                "-F".into(),
                "OUTPUT".into(),
            ])
            .await?;
        }
        iptables(isolation::metadata_dnat(GATEWAY, m.port)).await?;
        if let Some(ip) = att.ip.as_deref().and_then(|s| s.parse().ok()) {
            let inst = crate::metadata::Instance {
                container_id: att.id.clone(),
                identity: m.identity.clone(),
            };
            m.registry.insert(ip, inst).await;
        }
        Ok(())
    }

    fn plugin(&self, name: &str) -> Result<PathBuf, NetError> {
        self.cni_dirs
            .iter()
            .map(|d| d.join(name))
            .find(|p| p.exists())
            .ok_or_else(|| NetError::PluginMissing {
                plugin: name.to_string(),
                dirs: self
                    .cni_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    fn bridge_conf(&self) -> serde_json::Value {
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "runlet",
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            // NAT is one rule for the subnet (ensure_nat), not a chain per instance.
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": self.subnet}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": self.ipam_dir,
            }
        })
    }

    /// Checks the plugins are installed (so `serve` can fail early with a clear message).
    pub fn check(&self) -> Result<(), NetError> {
        for p in ["bridge", "host-local"] {
            self.plugin(p)?;
        }
        Ok(())
    }

    /// Where the namespace of instance `id` is bound.
    pub fn netns_path(id: &str) -> PathBuf {
        Path::new(NETNS_DIR).join(format!("runlet-{id}"))
    }

    /// Makes sure the subnet's outbound connections are masqueraded: one `nat POSTROUTING`
    /// rule for the whole subnet, added if missing. Checked at most every [`NAT_RECHECK`];
    /// several runlets may race to add it, and a duplicate is harmless.
    async fn ensure_nat(&self) -> Result<(), NetError> {
        let mut checked = self.nat_checked.lock().await;
        if checked.is_some_and(|t| t.elapsed() < NAT_RECHECK) {
            return Ok(());
        }
        let rule = self.nat_rule();
        let fail = |detail: String| NetError::Nat {
            subnet: self.subnet.clone(),
            detail,
        };
        let present = iptables("-C", &rule).await.map_err(fail)?;
        if !present {
            let added = iptables("-A", &rule).await.map_err(fail)?;
            if !added {
                return Err(fail("iptables -A failed".into()));
            }
            info!(subnet = %self.subnet, "added the outbound NAT rule");
        }
        *checked = Some(Instant::now());
        Ok(())
    }

    fn nat_rule(&self) -> Vec<String> {
        [
            "-t",
            "nat",
            "POSTROUTING",
            "-s",
            &self.subnet,
            "!",
            "-d",
            &self.subnet,
            "-m",
            "comment",
            "--comment",
            "runlet: outbound connections of instances and tasks",
            "-j",
            "MASQUERADE",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Runs `plugin` with the bridge network's configuration (`host-local` reads its `ipam`
    /// section, as the bridge plugin does when it delegates).
    async fn cni(
        &self,
        att: &Attachment,
        plugin: &str,
        command: &'static str,
    ) -> Result<serde_json::Value, NetError> {
        let conf = self.bridge_conf();
        let bin = self.plugin(plugin)?;
        let fail = |detail: String| NetError::Plugin {
            plugin: plugin.to_string(),
            command,
            id: att.id.clone(),
            detail,
        };
        let cni_path = self
            .cni_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let mut child = tokio::process::Command::new(&bin)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", format!("runlet-{}", att.id))
            .env("CNI_NETNS", &att.netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", cni_path)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(e.to_string()))?;
        let body = serde_json::to_vec(&conf).map_err(|e| fail(e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(&body)
                .await
                .map_err(|e| fail(e.to_string()))?;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !out.status.success() {
            let msg = String::from_utf8_lossy(&out.stdout);
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(fail(format!("{} {}", msg.trim(), err.trim())));
        }
        if out.stdout.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&out.stdout).map_err(|e| fail(format!("bad result: {e}")))
    }
}

impl Default for NetConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// What the container lifecycle needs from the network: a namespace per container, wired
/// for outbound connections, and a way for runlet to reach the container's ports.
/// [`NetConfig`] is the host's (CNI) implementation, [`super::fake::FakeNetwork`] a
/// recording one for tests.
pub trait Network: Send + Sync + 'static {
    /// Creates the namespace of `id` (its `lo` up) and wires it; returns the container's
    /// address.
    fn attach(&self, id: &str) -> impl Future<Output = Result<Attachment, NetError>> + Send;
    /// Undoes [`attach`](Self::attach); safe to call for what is partly or wholly gone.
    fn detach(&self, id: &str) -> impl Future<Output = ()> + Send;
    /// A dialer to `127.0.0.1:port` inside the attachment's namespace.
    fn dialer(&self, att: &Attachment, port: u16) -> io::Result<NetnsDialer>;
    /// Takes over the namespace of `id`, attached by an earlier process (a daemon before
    /// its restart): its metadata requests are sent to this process's metadata server
    /// (whose port changed) and it is registered there.
    fn readopt(&self, id: &str) -> impl Future<Output = Result<(), NetError>> + Send;
}

impl Network for NetConfig {
    async fn attach(&self, id: &str) -> Result<Attachment, NetError> {
        self.ensure_nat().await?;
        let path = Self::netns_path(id);
        create_netns(&path).await?;
        let att = Attachment {
            id: id.to_string(),
            netns: path,
            ip: None,
        };
        match self.cni(&att, "bridge", "ADD").await {
            Ok(out) => {
                let ip = out["ips"][0]["address"]
                    .as_str()
                    .map(|s| s.split('/').next().unwrap_or(s).to_string());
                let att = Attachment { ip, ..att };
                if let Err(e) = self.secure(&att, &out).await {
                    self.detach(id).await;
                    return Err(e);
                }
                Ok(att)
            }
            Err(e) => {
                self.detach(id).await;
                Err(e)
            }
        }
    }

    /// The namespace goes first: once nothing holds it, the kernel deletes it with the veth
    /// pair in it, so no `bridge DEL` is needed to remove the link. Then `host-local DEL`
    /// releases the address (it also works when the namespace never existed).
    async fn detach(&self, id: &str) {
        if let Some(m) = &self.meta {
            m.registry.remove(id).await;
        }
        let path = Self::netns_path(id);
        let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&path);
        let att = Attachment {
            id: id.to_string(),
            netns: path,
            ip: None,
        };
        if let Err(e) = self.cni(&att, "host-local", "DEL").await {
            warn!(instance = id, "CNI host-local DEL: {e}");
        }
    }

    fn dialer(&self, att: &Attachment, port: u16) -> io::Result<NetnsDialer> {
        NetnsDialer::new(&att.netns, port)
    }

    async fn readopt(&self, id: &str) -> Result<(), NetError> {
        if self.meta.is_none() {
            return Ok(());
        }
        let netns = Self::netns_path(id);
        let ip = netns_address(&netns).await?;
        let att = Attachment {
            id: id.to_string(),
            netns,
            ip: Some(ip),
        };
        self.route_metadata(&att, true).await
    }
}

/// An instance's network attachment.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub id: String,
    pub netns: PathBuf,
    pub ip: Option<String>,
}

/// Runs `iptables -w <op> <rule>`; true if it exited 0 (for `-C`: the rule is there).
async fn iptables(op: &str, rule: &[String]) -> Result<bool, String> {
    // The rule's table option goes first: `iptables -w -t nat -C POSTROUTING ...`.
    let (table, rest) = rule.split_at(2);
    let out = tokio::process::Command::new("iptables")
        .arg("-w")
        .args(table)
        .arg(op)
        .args(rest)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|e| format!("running iptables: {e}"))?;
    if !out.status.success() && op != "-C" {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(out.status.success())
}

/// Sets `lo` up in the calling thread's network namespace (what the CNI `loopback` plugin
/// does; the kernel gives it 127.0.0.1/8 and ::1 as it comes up).
fn loopback_up() -> Result<(), String> {
    use nix::libc;
    use std::os::fd::AsRawFd;
    // Any AF_INET socket will do for interface ioctls.
    let sock = std::net::UdpSocket::bind(("0.0.0.0", 0)).map_err(|e| format!("socket: {e}"))?;
    // SAFETY: ifreq is plain old data, for which all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS and SIOCSIFFLAGS read and write only the ifreq passed, which
    // lives across both calls; the descriptor is open.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(format!("SIOCGIFFLAGS lo: {}", io::Error::last_os_error()));
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) < 0 {
            return Err(format!("SIOCSIFFLAGS lo: {}", io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Creates a new network namespace with `lo` up and binds it at `path` (like
/// `ip netns add` + `ip link set lo up`).
async fn create_netns(path: &Path) -> Result<(), NetError> {
    let path = path.to_path_buf();
    let fail = |p: &Path, detail: String| NetError::Netns {
        path: p.display().to_string(),
        detail,
    };
    std::fs::create_dir_all(NETNS_DIR).map_err(|e| fail(&path, e.to_string()))?;
    super::netns_dir::share_or_warn(Path::new(NETNS_DIR));
    File::create(&path).map_err(|e| fail(&path, e.to_string()))?;
    let p2 = path.clone();
    // unshare() changes the calling thread's namespace: do it on a thread of our own that
    // ends right after, never on a tokio worker.
    let joined = std::thread::spawn(move || -> Result<(), String> {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|e| format!("unshare: {e}"))?;
        loopback_up()?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &p2,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("bind mount: {e}"))
    })
    .join();
    match joined {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            let _ = std::fs::remove_file(&path);
            Err(fail(&path, e))
        }
        Err(_) => {
            let _ = std::fs::remove_file(&path);
            Err(fail(&path, "namespace thread panicked".into()))
        }
    }
}

type DialRequest = (u16, oneshot::Sender<io::Result<std::net::TcpStream>>);

/// Opens TCP connections to `127.0.0.1:port` inside a network namespace. One thread per
/// instance lives in the namespace and creates the sockets; it ends when the dialer drops.
pub struct NetnsDialer {
    tx: std::sync::mpsc::Sender<DialRequest>,
    port: u16,
}

impl NetnsDialer {
    /// A dialer into the namespace bound at `netns`.
    pub fn new(netns: &Path, port: u16) -> io::Result<Self> {
        Self::spawn(Some(File::open(netns)?), port)
    }

    /// A dialer in runlet's own namespace (the fake network's: tests reach a listener on
    /// the host's loopback).
    pub fn here(port: u16) -> io::Result<Self> {
        Self::spawn(None, port)
    }

    fn spawn(ns: Option<File>, port: u16) -> io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<DialRequest>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
        std::thread::Builder::new()
            .name("netns-dialer".into())
            .spawn(move || {
                if let Some(ns) = ns {
                    if let Err(e) = nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET) {
                        let _ = ready_tx.send(Err(io::Error::other(format!("setns: {e}"))));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(()));
                while let Ok((port, reply)) = rx.recv() {
                    let r = std::net::TcpStream::connect(("127.0.0.1", port));
                    let _ = reply.send(r);
                }
            })?;
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("dialer thread died"))??;
        Ok(NetnsDialer { tx, port })
    }

    /// Connects to the ingress port once; an error means nothing listens yet (or the
    /// namespace is gone).
    pub async fn connect(&self) -> io::Result<tokio::net::TcpStream> {
        self.connect_port(self.port).await
    }

    /// Connects to another port of the instance (probes may name one).
    pub async fn connect_port(&self, port: u16) -> io::Result<tokio::net::TcpStream> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((port, tx))
            .map_err(|_| io::Error::other("dialer thread ended"))?;
        let s = rx
            .await
            .map_err(|_| io::Error::other("dialer thread ended"))??;
        s.set_nonblocking(true)?;
        s.set_nodelay(true)?;
        tokio::net::TcpStream::from_std(s)
    }
}

impl Dial for NetnsDialer {
    fn dial(&self) -> Pin<Box<dyn Future<Output = io::Result<tokio::net::TcpStream>> + Send + '_>> {
        Box::pin(self.connect())
    }
}

/// Writes the per-instance `/etc/hosts` (ending with `extra_hosts`, lines the caller
/// renders), `/etc/hostname` and `/etc/resolv.conf`; returns (destination, source) pairs
/// for bind mounts.
pub fn write_etc_files(
    dir: &Path,
    hostname: &str,
    ip: Option<&str>,
    extra_hosts: &str,
) -> io::Result<Vec<(String, String)>> {
    std::fs::create_dir_all(dir)?;
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    hosts.push_str(&format!("{}\t{hostname}\n", ip.unwrap_or("127.0.1.1")));
    // runlet's metadata server, reached through a DNAT in the namespace (crate::metadata).
    hosts.push_str("169.254.169.254\tmetadata.google.internal metadata\n");
    hosts.push_str(extra_hosts);
    let resolv = ["/run/systemd/resolve/resolv.conf", "/etc/resolv.conf"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .filter(|s| !s.contains("nameserver 127."))
        .unwrap_or_else(|| "nameserver 8.8.8.8\nnameserver 8.8.4.4\n".to_string());
    let files = [
        ("hosts", hosts),
        ("hostname", format!("{hostname}\n")),
        ("resolv.conf", resolv),
    ];
    let mut out = Vec::new();
    for (name, content) in files {
        let p = dir.join(name);
        std::fs::write(&p, content)?;
        out.push((format!("/etc/{name}"), p.display().to_string()));
    }
    Ok(out)
}

/// The IPv4 address of `eth0` in namespace `netns` (what CNI gave it).
async fn netns_address(netns: &Path) -> Result<String, NetError> {
    let out = tokio::process::Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| NetError::Isolation(format!("running nsenter ip: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    address_of(&text).ok_or_else(|| {
        NetError::Isolation(format!(
            "no IPv4 address on eth0 in {}: {}",
            netns.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    })
}

/// The address in `ip -4 -o addr show` output (`2: eth0    inet 10.209.0.5/16 brd ...`).
fn address_of(ip_output: &str) -> Option<String> {
    let mut words = ip_output.split_whitespace();
    words.find(|w| *w == "inet")?;
    let cidr = words.next()?;
    Some(cidr.split('/').next().unwrap_or(cidr).to_string())
}

#[cfg(test)]
mod address_tests {
    use super::address_of;

    #[test]
    fn the_address_is_read_from_ip_output() {
        let cases = [
            ("2: eth0    inet 10.209.0.5/16 brd 10.209.255.255 scope global eth0\\       valid_lft forever", Some("10.209.0.5")),
            ("", None),
            ("2: eth0    inet6 fe80::1/64 scope link", None),
        ];
        for (text, want) in cases {
            assert_eq!(address_of(text).as_deref(), want, "{text:?}");
        }
    }
}
