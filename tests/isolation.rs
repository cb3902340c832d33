//! Network isolation of instances and job tasks (issue 17, section 1), against the real
//! containerd: the rules are in place before the first instance, a job task cannot reach
//! a service instance's address nor the gateway's other ports, link-local addresses are
//! dropped, the host's other addresses (the world, OUT-1) stay reachable.
//!
//! No request here can reach the host platform's metadata service: the link-local probe
//! goes to 169.254.1.1, which nothing answers, and the rules are checked first.
#![allow(clippy::disallowed_types)]

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, UdpSocket};
use std::process::Command;
use std::time::Duration;

use common::*;

/// `iptables -S CHAIN` (empty if the chain is missing).
pub fn chain(name: &str) -> String {
    let out = Command::new("iptables")
        .args(["-w", "-S", name])
        .output()
        .expect("iptables");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The packets counted by the link-local DROP rule of the FORWARD side.
fn link_local_drops() -> u64 {
    let out = Command::new("iptables")
        .args(["-w", "-L", "RUNLET-ISOLATION-FWD", "-v", "-n", "-x"])
        .output()
        .expect("iptables");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("169.254.0.0/16") && l.contains("DROP"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// This host's address on its default route (no packet is sent).
fn host_address() -> IpAddr {
    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
    s.connect("198.51.100.1:9").unwrap();
    s.local_addr().unwrap().ip()
}

/// The IPv4 address of eth0 in the namespace of instance `id`.
fn instance_ip(id: &str) -> String {
    let out = Command::new("ip")
        .args([
            "-n",
            &format!("runlet-{id}"),
            "-4",
            "-o",
            "addr",
            "show",
            "eth0",
        ])
        .output()
        .expect("ip");
    let text = String::from_utf8_lossy(&out.stdout);
    let addr = text
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap_or_else(|| panic!("no address in {text:?}"));
    addr.split('/').next().unwrap().to_string()
}

/// Answers every connection with a short HTTP reply, forever (a thread).
fn answer_forever(listener: TcpListener) {
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        }
    });
}

#[test]
fn instances_reach_neither_each_other_nor_the_gateway_nor_link_local() {
    let Some(env) = probe_env() else { return };
    env.load("busybox.oci.tar");
    let served = env.serve_probe("iso-a", &[]);
    // The rules were in place before the first instance started.
    let out = served.output();
    let rules_at = out.find("network isolation rules in place");
    let first_at = out.find("starting the first instance");
    assert!(
        rules_at.is_some() && rules_at < first_at,
        "isolation rules not installed before the first instance:\n{out}"
    );
    let fwd = chain("RUNLET-ISOLATION-FWD");
    assert!(
        fwd.contains("-d 169.254.0.0/16") && fwd.contains("-j DROP"),
        "no link-local DROP: {fwd}"
    );
    assert!(chain("FORWARD").contains("-j RUNLET-ISOLATION-FWD"));
    assert!(chain("INPUT").contains("-j RUNLET-ISOLATION-IN"));
    let ids = netns_ids("iso-a");
    assert_eq!(ids.len(), 1, "{ids:?}");
    let peer = instance_ip(&ids[0]);

    // Something on the host listening on every address: reachable at the host's own
    // address (as the world is), refused at the gateway.
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    answer_forever(listener);
    let host = host_address();
    let drops_before = link_local_drops();
    let script = [
        format!("busybox timeout 5 wget -q -O- http://{peer}:8080/ >/dev/null 2>&1; echo peer=$?"),
        format!("busybox timeout 5 wget -q -O- http://10.209.0.1:{port}/ >/dev/null 2>&1; echo gateway=$?"),
        "busybox timeout 3 wget -q -O- http://169.254.1.1:80/ >/dev/null 2>&1; echo linklocal=$?".to_string(),
        format!("busybox timeout 5 wget -q -O- http://{host}:{port}/; echo; echo world=$?"),
    ]
    .join("; ");
    let out = Command::new(runlet_bin())
        .args(["--containerd-address", &env.containerd, "--state-dir"])
        .arg(&env.state_dir)
        .args([
            "--no-embedded-containerd",
            "job",
            "execute",
            "iso-b",
            "--image",
            "busybox",
            "--command",
            "/bin/sh",
            "--max-retries",
            "0",
        ])
        .arg("--args")
        .arg(format!("^|^-c|{script}"))
        .env("NO_COLOR", "1")
        .output()
        .expect("run runlet");
    let text = strip_ansi(&format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ));
    assert!(out.status.success(), "{text}");
    for refused in ["peer", "gateway", "linklocal"] {
        assert!(
            text.contains(&format!("{refused}=")) && !text.contains(&format!("{refused}=0")),
            "{refused} was reachable:\n{text}"
        );
    }
    assert!(
        text.contains("hello") && text.contains("world=0"),
        "the world was not reachable:\n{text}"
    );
    assert!(
        link_local_drops() > drops_before,
        "the link-local DROP counted nothing"
    );
    // The service still answers its own clients.
    assert_eq!(served.get("/").status, 200);
    let (st, _) = served.interrupt();
    assert!(st.success());
    // Our port rules are gone with us.
    let me = "runlet pid";
    let ports = chain("RUNLET-ISOLATION-PORTS");
    let live = ports.lines().filter(|l| l.contains(me)).count();
    let others = file_names("/run/runlet/isolation").len();
    assert!(
        others > 0 || live == 0,
        "port rules left without any registered runlet: {ports}"
    );
    if others == 0
        && !file_names("/run/netns")
            .iter()
            .any(|n| n.starts_with("runlet-"))
    {
        assert_eq!(
            chain("RUNLET-ISOLATION-FWD"),
            "",
            "the chains outlived the last runlet"
        );
        assert!(!chain("FORWARD").contains("RUNLET-ISOLATION"));
    }
    std::thread::sleep(Duration::from_millis(10));
}
