//! gcloud's `--container NAME` groups: each flag after a `--container` applies to that
//! container (`--image`, `--port` on the ingress one only, `--command`, `--args`,
//! `--set-env-vars`, `--memory`, `--cpu`, `--startup-probe`, `--liveness-probe`,
//! `--add-volume-mount`, `--depends-on`). As gcloud says, with `--container` those flags may
//! only follow a `--container`; without it they apply to the one (ingress) container
//! ([`super::flags::ServiceFlags`]). Checked here into [`Container`]s; the instance-wide
//! checks (one ingress, names, order) are [`super::container::check`].

use super::container::{Container, Mount};
use super::secrets::{SecretBindings, SecretFlags};
use super::volume::VolumeFlag;
use super::{bad, cpu, defaults, memory, probe, service_env, split_list, EnvChanges, SpecError};
use crate::image::reference;

/// One `--container NAME` group as given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerFlags {
    pub name: String,
    pub image: Option<String>,
    pub port: Option<u16>,
    pub set_env_vars: Vec<String>,
    /// `--env-vars-file` as given; the command reads it into `env.file` before checking.
    pub env_vars_file: Option<std::path::PathBuf>,
    /// The container's other environment flags (gcloud's, per container).
    pub env: EnvChanges,
    pub command: Option<String>,
    pub args: Option<String>,
    pub memory: Option<String>,
    pub cpu: Option<String>,
    pub startup_probe: Option<String>,
    pub liveness_probe: Option<String>,
    pub add_volume_mount: Vec<String>,
    /// `--set-secrets` and its siblings, for this container.
    pub secrets: SecretFlags,
    /// `--depends-on`, each in gcloud's list syntax.
    pub depends_on: Vec<String>,
}

/// A group checked: the container, and the texts the Admin API carries as given.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedContainer {
    pub container: Container,
    /// As given.
    pub image: String,
    pub memory: Option<(String, u64)>,
    pub cpu: Option<(String, f64)>,
}

impl ContainerFlags {
    /// Checks the group against the instance's volumes.
    pub fn check(&self, volumes: &[VolumeFlag]) -> Result<CheckedContainer, SpecError> {
        let image = self
            .image
            .clone()
            .ok_or_else(|| bad("--image", format!("container {} has no --image", self.name)))?;
        let image_ref = reference::normalize(&image).map_err(|e| bad("--image", e.to_string()))?;
        if self.port == Some(0) {
            return Err(bad("--port", "0 is out of range: allowed 1 to 65535"));
        }
        let memory = match &self.memory {
            None => None,
            Some(m) => Some((m.clone(), memory("--memory", m)?)),
        };
        let cpu = match &self.cpu {
            None => None,
            Some(c) => Some((c.clone(), cpu("--cpu", c)?)),
        };
        let probe = |field, text: &Option<String>| {
            group_probe(field, &self.name, text.as_deref(), self.port.unwrap_or(0))
        };
        let mounts = self
            .add_volume_mount
            .iter()
            .map(|m| super::volume::mount_of(m, volumes))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .map(|m| Mount {
                volume: m.volume,
                path: m.path,
            })
            .collect();
        let env = service_env(&self.set_env_vars, &self.env)?;
        let mut secrets = SecretBindings::default();
        secrets.apply(&self.secrets.parse()?);
        secrets.check("--set-secrets", &env)?;
        let container = Container {
            name: self.name.clone(),
            image: image_ref,
            port: self.port,
            command: self.command.as_deref().map(split_list),
            args: self.args.as_deref().map(split_list),
            env,
            memory_bytes: memory.as_ref().map_or(defaults::MEMORY, |m| m.1),
            cpu: cpu.as_ref().map_or(defaults::CPU, |c| c.1),
            startup_probe: probe("--startup-probe", &self.startup_probe)?,
            liveness_probe: probe("--liveness-probe", &self.liveness_probe)?,
            mounts,
            depends_on: depends_on_list(&self.depends_on),
            secrets,
        };
        Ok(CheckedContainer {
            container,
            image,
            memory,
            cpu,
        })
    }
}

/// `--depends-on`, each in gcloud's list syntax, as the names it lists.
pub fn depends_on_list(given: &[String]) -> Vec<String> {
    given
        .iter()
        .flat_map(|d| split_list(d))
        .filter(|d| !d.is_empty())
        .collect()
}

/// A group's `--startup-probe` or `--liveness-probe` for container `name` listening on
/// `port`. A sidecar (port 0) has no port to default a probe to: its probe names one.
pub fn group_probe(
    field: &'static str,
    name: &str,
    text: Option<&str>,
    port: u16,
) -> Result<Option<probe::Probe>, SpecError> {
    let p = text.map(|s| probe::parse(field, s, port)).transpose()?;
    if p.as_ref().is_some_and(|p| probe_port_of(p) == 0) {
        return Err(bad(
            field,
            format!(
                "container {name} has no --port: its probe must name one (e.g. tcpSocket.port=N)"
            ),
        ));
    }
    Ok(p)
}

fn probe_port_of(p: &probe::Probe) -> u16 {
    match &p.action {
        probe::Action::Http { port, .. }
        | probe::Action::Tcp { port }
        | probe::Action::Grpc { port, .. } => *port,
    }
}

/// Splits a command line's arguments at each `--container NAME` (or `--container=NAME`):
/// what comes before the first, then each group's name and its arguments. gcloud's rule
/// that flags which are not per-container come before the first `--container` is the
/// caller's (its parser sees them in a group and refuses them).
pub fn split_groups(args: &[String]) -> (Vec<String>, Vec<(String, Vec<String>)>) {
    let mut head = Vec::new();
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let name = if a == "--container" {
            i += 1;
            Some(args.get(i).cloned().unwrap_or_default())
        } else {
            a.strip_prefix("--container=").map(str::to_string)
        };
        match (name, groups.last_mut()) {
            (Some(n), _) => groups.push((n, Vec::new())),
            (None, Some(g)) => g.1.push(a.clone()),
            (None, None) => head.push(a.clone()),
        }
        i += 1;
    }
    (head, groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments_split_at_each_container() {
        let (head, groups) = split_groups(&s(&[
            "serve",
            "--service",
            "x",
            "--container",
            "app",
            "--image",
            "probe",
            "--port",
            "8080",
            "--container=log",
            "--image",
            "busybox",
        ]));
        assert_eq!(head, s(&["serve", "--service", "x"]));
        assert_eq!(
            groups,
            vec![
                (
                    "app".to_string(),
                    s(&["--image", "probe", "--port", "8080"])
                ),
                ("log".to_string(), s(&["--image", "busybox"])),
            ]
        );
        let (head, groups) = split_groups(&s(&["serve", "--image", "p"]));
        assert_eq!((head.len(), groups.len()), (3, 0));
    }

    #[test]
    fn a_group_is_checked_naming_the_flag() {
        let ok = ContainerFlags {
            name: "log".into(),
            image: Some("busybox".into()),
            depends_on: vec!["a,b".into()],
            startup_probe: Some("tcpSocket.port=9000".into()),
            ..Default::default()
        };
        let c = ok.check(&[]).unwrap().container;
        assert_eq!(c.image, "docker.io/library/busybox:latest");
        assert_eq!(c.depends_on, s(&["a", "b"]));
        assert_eq!((c.port, c.memory_bytes, c.cpu), (None, 512 << 20, 1.0));
        type Edit = fn(&mut ContainerFlags);
        let table: Vec<(Edit, &str, &str)> = vec![
            (
                |f| f.image = None,
                "--image",
                "container log has no --image",
            ),
            (|f| f.port = Some(0), "--port", "out of range"),
            (
                |f| f.startup_probe = Some("httpGet.path=/".into()),
                "--startup-probe",
                "its probe must name one",
            ),
            (
                |f| f.add_volume_mount = s(&["volume=v,mount-path=/v"]),
                "--add-volume-mount",
                "not defined",
            ),
            (|f| f.memory = Some("lots".into()), "--memory", ""),
        ];
        for (edit, field, detail) in table {
            let mut f = ok.clone();
            edit(&mut f);
            let e = f.check(&[]).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.detail.contains(detail), "{e}");
        }
    }
}
