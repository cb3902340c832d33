//! `runlet services describe`'s summary (gcloud's shape): the service's state, URL and
//! traffic, then what its latest revision runs, with the values runlet applies (defaults
//! filled in, through the same mapping the daemon uses, `spec::run_v2`): the ingress
//! container and the instance's settings, then each sidecar.

use std::fmt::Write as _;

use runlet::pb::run_v2 as v2;
use runlet::spec::probe::{Action, Probe};
use runlet::spec::run_v2::service_spec;

use super::{region, short, time_rfc3339, Readiness};

/// The summary of `svc`.
pub fn service(svc: &v2::Service) -> String {
    let mut out = String::new();
    let r = Readiness::of_service(svc);
    let _ = writeln!(
        out,
        "{} Service {} in region {}",
        r.mark(),
        short(&svc.name),
        region(&svc.name)
    );
    out.push('\n');
    let row = |out: &mut String, k: &str, v: &str| {
        let _ = writeln!(out, "{:<10}{v}", format!("{k}:"));
    };
    row(&mut out, "URL", &svc.uri);
    if let Some(c) = &svc.terminal_condition {
        if !c.message.is_empty() {
            row(&mut out, "Status", &c.message);
        }
    }
    out.push_str("Traffic:\n");
    for t in &svc.traffic_statuses {
        let _ = writeln!(
            out,
            "  {}% LATEST (currently {})",
            t.percent,
            short(&t.revision)
        );
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "Last updated on {} by {}:",
        time_rfc3339(svc.update_time.as_ref()),
        svc.last_modifier
    );
    let revision = short(&svc.latest_created_revision);
    let _ = writeln!(out, "  Revision {revision}");
    let containers: &[v2::Container] = svc
        .template
        .as_ref()
        .map_or(&[], |t| t.containers.as_slice());
    // The image as the template gives it (the spec holds it normalised).
    let image_of = |name: &str| {
        containers
            .iter()
            .find(|c| c.name == name)
            .or(containers.first())
            .map_or("", |c| c.image.as_str())
    };
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let spec = match service_spec(short(&svc.name), revision, svc, listen) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(out, "  (the template cannot be shown: {e})");
            return out;
        }
    };
    let item = |out: &mut String, k: &str, v: &str| {
        let _ = writeln!(out, "  {:<17}{v}", format!("{k}:"));
    };
    let sidecars = &spec.sidecars;
    if !sidecars.is_empty() {
        item(
            &mut out,
            "Container",
            &format!("{} (ingress)", sidecars.ingress_name),
        );
    }
    let ingress_image = if sidecars.is_empty() {
        containers
            .iter()
            .find(|c| !c.ports.is_empty())
            .or(containers.first())
            .map_or("", |c| c.image.as_str())
    } else {
        image_of(&sidecars.ingress_name)
    };
    item(&mut out, "Image", ingress_image);
    let h2 = if spec.use_http2 { " (h2c)" } else { "" };
    item(&mut out, "Port", &format!("{}{h2}", spec.port));
    if let Some(c) = &spec.command {
        item(&mut out, "Command", &c.join(" "));
    }
    if let Some(a) = &spec.args {
        item(&mut out, "Args", &a.join(" "));
    }
    if !spec.env.is_empty() {
        out.push_str("  Env vars:\n");
        let width = spec.env.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in &spec.env {
            let _ = writeln!(out, "    {k:<width$}  {v}");
        }
    }
    if !spec.secrets.is_empty() {
        // References only: values are read when an instance is created.
        out.push_str("  Secrets:\n");
        let refs: Vec<(String, String)> = spec
            .secrets
            .refs()
            .map(|(k, r)| (k, r.to_string()))
            .collect();
        let width = refs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, r) in refs {
            let _ = writeln!(out, "    {k:<width$}  {r}");
        }
    }
    item(&mut out, "Memory", &bytes(spec.memory_bytes));
    item(&mut out, "CPU", &spec.cpu.to_string());
    let throttling = if spec.cpu_throttling { "on" } else { "off" };
    item(&mut out, "CPU throttling", throttling);
    item(&mut out, "Concurrency", &spec.concurrency.to_string());
    item(&mut out, "Min instances", &spec.min_instances.to_string());
    item(&mut out, "Max instances", &spec.max_instances.to_string());
    item(
        &mut out,
        "Timeout",
        &format!("{}s", spec.timeout.as_secs_f64()),
    );
    if let Some(p) = &spec.startup_probe {
        item(&mut out, "Startup probe", &probe(p));
    }
    if let Some(p) = &spec.liveness_probe {
        item(&mut out, "Liveness probe", &probe(p));
    }
    if !spec.volumes.is_empty() {
        out.push_str("  Volume mounts:\n");
        for (path, size) in &spec.volumes {
            let _ = writeln!(out, "    {path}  in-memory, {}", bytes(*size));
        }
    }
    if !sidecars.ingress_depends_on.is_empty() {
        item(
            &mut out,
            "Depends on",
            &sidecars.ingress_depends_on.join(", "),
        );
    }
    for c in &sidecars.containers {
        sidecar(&mut out, c, image_of(&c.name), &sidecars.volumes);
    }
    out
}

/// A sidecar's block: what it runs and what it has (no port, no instance settings).
fn sidecar(out: &mut String, c: &runlet::spec::Container, image: &str, volumes: &[(String, u64)]) {
    let _ = writeln!(out, "  Sidecar {}:", c.name);
    let item = |out: &mut String, k: &str, v: &str| {
        let _ = writeln!(out, "    {:<15}{v}", format!("{k}:"));
    };
    item(out, "Image", image);
    if let Some(cmd) = &c.command {
        item(out, "Command", &cmd.join(" "));
    }
    if let Some(a) = &c.args {
        item(out, "Args", &a.join(" "));
    }
    if !c.env.is_empty() {
        out.push_str("    Env vars:\n");
        let width = c.env.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in &c.env {
            let _ = writeln!(out, "      {k:<width$}  {v}");
        }
    }
    if !c.secrets.is_empty() {
        // References only, as for the ingress container.
        out.push_str("    Secrets:\n");
        let refs: Vec<(String, String)> =
            c.secrets.refs().map(|(k, r)| (k, r.to_string())).collect();
        let width = refs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, r) in refs {
            let _ = writeln!(out, "      {k:<width$}  {r}");
        }
    }
    item(out, "Memory", &bytes(c.memory_bytes));
    item(out, "CPU", &c.cpu.to_string());
    if let Some(p) = &c.startup_probe {
        item(out, "Startup probe", &probe(p));
    }
    if let Some(p) = &c.liveness_probe {
        item(out, "Liveness probe", &probe(p));
    }
    if !c.mounts.is_empty() {
        out.push_str("    Volume mounts:\n");
        for m in &c.mounts {
            let size = volumes
                .iter()
                .find(|(n, _)| *n == m.volume)
                .map_or(String::new(), |(_, s)| format!(", {}", bytes(*s)));
            let _ = writeln!(out, "      {}  in-memory{size}", m.path);
        }
    }
    if !c.depends_on.is_empty() {
        item(out, "Depends on", &c.depends_on.join(", "));
    }
}

/// `512Mi`, `1Gi`, `1536Ki`, or bytes.
fn bytes(n: u64) -> String {
    for (unit, size) in [("Gi", 1u64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if n >= size && n.is_multiple_of(size) {
            return format!("{}{unit}", n / size);
        }
    }
    n.to_string()
}

fn probe(p: &Probe) -> String {
    let what = match &p.action {
        Action::Http { path, port } => format!("HTTP GET {path} on port {port}"),
        Action::Tcp { port } => format!("TCP on port {port}"),
        Action::Grpc { port, service } if service.is_empty() => format!("gRPC on port {port}"),
        Action::Grpc { port, service } => format!("gRPC {service} on port {port}"),
    };
    format!(
        "{what}, every {}s, timeout {}s, {} failures, after {}s",
        p.period.as_secs(),
        p.timeout.as_secs(),
        p.failure_threshold,
        p.initial_delay.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use runlet::spec::flags::ServiceFlags;
    use runlet::spec::to_run_v2;

    #[test]
    fn summary() {
        let mut svc = to_run_v2::service(&ServiceFlags {
            image: "probe".into(),
            set_env_vars: vec!["A=1,LONGER=two".into()],
            command: Some("/probe".into()),
            memory: Some("1Gi".into()),
            startup_probe: Some("httpGet.path=/ready,periodSeconds=1".into()),
            add_volume: vec!["name=c,type=in-memory,size-limit=64Mi".into()],
            add_volume_mount: vec!["volume=c,mount-path=/cache".into()],
            ..Default::default()
        })
        .unwrap();
        let hello = super::super::tables::tests::hello();
        svc.name = hello.name.clone();
        svc.uri = hello.uri.clone();
        svc.update_time = hello.update_time;
        svc.last_modifier = hello.last_modifier.clone();
        svc.terminal_condition = hello.terminal_condition.clone();
        svc.latest_created_revision = hello.latest_ready_revision.clone();
        svc.traffic_statuses = vec![v2::TrafficTargetStatus {
            percent: 100,
            revision: "hello-00002-abc".into(),
            ..Default::default()
        }];
        assert_eq!(
            service(&svc),
            "\
✔ Service hello in region local

URL:      http://hello.localhost:8080
Traffic:
  100% LATEST (currently hello-00002-abc)

Last updated on 2024-05-01T12:00:00.000000Z by runlet:
  Revision hello-00002-abc
  Image:           probe
  Port:            8080
  Command:         /probe
  Env vars:
    A       1
    LONGER  two
  Memory:          1Gi
  CPU:             1
  CPU throttling:  off
  Concurrency:     80
  Min instances:   0
  Max instances:   100
  Timeout:         300s
  Startup probe:   HTTP GET /ready on port 8080, every 1s, timeout 1s, 3 failures, after 0s
  Volume mounts:
    /cache  in-memory, 64Mi
"
        );
    }

    #[test]
    fn summary_shows_every_container() {
        use runlet::spec::container_flags::ContainerFlags;
        let mut svc = to_run_v2::service(&ServiceFlags {
            add_volume: vec!["name=shared,type=in-memory,size-limit=64Mi".into()],
            containers: vec![
                ContainerFlags {
                    name: "app".into(),
                    image: Some("probe".into()),
                    port: Some(8081),
                    depends_on: vec!["log".into()],
                    add_volume_mount: vec!["volume=shared,mount-path=/data".into()],
                    ..Default::default()
                },
                ContainerFlags {
                    name: "log".into(),
                    image: Some("busybox".into()),
                    command: Some("/bin/sh".into()),
                    set_env_vars: vec!["L=1".into()],
                    memory: Some("128Mi".into()),
                    startup_probe: Some("tcpSocket.port=9000".into()),
                    add_volume_mount: vec!["volume=shared,mount-path=/shared".into()],
                    secrets: runlet::spec::secrets::SecretFlags {
                        set: vec!["TOKEN=tok:latest".into()],
                        ..Default::default()
                    },
                    ..Default::default()
                },
            ],
            ..Default::default()
        })
        .unwrap();
        // The API keeps the order a client gives: the ingress container need not be first.
        svc.template.as_mut().unwrap().containers.reverse();
        svc.name = "projects/p/locations/l/services/web".into();
        svc.latest_created_revision = "web-00001-abc".into();
        let text = service(&svc);
        let tail = text.split("  Revision web-00001-abc\n").nth(1).unwrap();
        assert!(
            tail.starts_with("  Container:       app (ingress)\n  Image:           probe\n  Port:            8081\n"),
            "{text}"
        );
        assert!(
            tail.ends_with(
                "  Depends on:      log
  Sidecar log:
    Image:         busybox
    Command:       /bin/sh
    Env vars:
      L  1
    Secrets:
      TOKEN  tok:latest
    Memory:        128Mi
    CPU:           1
    Startup probe: TCP on port 9000, every 10s, timeout 1s, 3 failures, after 0s
    Volume mounts:
      /shared  in-memory, 64Mi
"
            ),
            "{text}"
        );
    }

    #[test]
    fn failed_service_says_why() {
        let svc = v2::Service {
            name: "projects/p/locations/l/services/bad".into(),
            terminal_condition: Some(v2::Condition {
                r#type: "Ready".into(),
                state: v2::condition::State::ConditionFailed as i32,
                message: "Revision 'bad-00001-abc' is not ready and cannot serve traffic. Image 'nope' not found.".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = service(&svc);
        assert!(text.starts_with("✘ Service bad in region l\n"), "{text}");
        assert!(
            text.contains("Status:   Revision 'bad-00001-abc' is not ready"),
            "{text}"
        );
        assert!(text.contains("the template cannot be shown"), "{text}");
    }

    #[test]
    fn sizes() {
        assert_eq!(bytes(512 << 20), "512Mi");
        assert_eq!(bytes(1 << 30), "1Gi");
        assert_eq!(bytes(1536 << 10), "1536Ki");
        assert_eq!(bytes(1000), "1000");
    }
}
