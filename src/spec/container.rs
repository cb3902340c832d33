//! The containers of one instance (Cloud Run's sidecars): at most [`MAX_CONTAINERS`], exactly
//! one of them the ingress container (the one with a port: it gets `PORT` and the traffic),
//! unique names, and a start-up order from `depends-on` with no unknown name and no cycle.
//!
//! [`ServiceSpec`](super::ServiceSpec) keeps the ingress container's fields as it always
//! had them; [`Sidecars`] is what a multi-container instance adds, and
//! [`ServiceSpec::containers`](super::ServiceSpec::containers) gives every container as one
//! [`Container`] list, ingress first. [`check`] and [`start_order`] are the decisions.

use std::collections::BTreeSet;

use super::probe::Probe;
use super::{bad, SpecError};

/// Cloud Run's limit of containers per instance.
pub const MAX_CONTAINERS: usize = 10;

/// The ingress container's name when none is given (single-container services).
pub const DEFAULT_INGRESS_NAME: &str = "ingress";

/// One container of an instance.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Container {
    pub name: String,
    /// Normalised image reference.
    pub image: String,
    /// The ingress container's port; `None` for a sidecar.
    pub port: Option<u16>,
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub memory_bytes: u64,
    pub cpu: f64,
    pub startup_probe: Option<Probe>,
    pub liveness_probe: Option<Probe>,
    /// In-memory volumes of the instance mounted here.
    pub mounts: Vec<Mount>,
    /// Containers that must have passed their startup probe before this one starts.
    pub depends_on: Vec<String>,
    /// Its secrets, by reference (variables and files; read when the container is made).
    pub secrets: super::secrets::SecretBindings,
}

/// A volume of the instance mounted into one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub volume: String,
    pub path: String,
}

/// What an instance with sidecars adds to the ingress container's fields of a
/// [`ServiceSpec`](super::ServiceSpec). Empty (the default) for a single-container service.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sidecars {
    /// The ingress container's name.
    pub ingress_name: String,
    /// The containers the ingress container waits for.
    pub ingress_depends_on: Vec<String>,
    /// The ingress container's mounts, by volume name (shared with sidecars).
    pub ingress_mounts: Vec<Mount>,
    /// The in-memory volumes of the instance: (name, size in bytes). One tmpfs each,
    /// shared by every container mounting it.
    pub volumes: Vec<(String, u64)>,
    /// The containers besides the ingress one, in the order given.
    pub containers: Vec<Container>,
}

impl Sidecars {
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty()
    }
}

/// Checks the containers of an instance: 1 to [`MAX_CONTAINERS`], exactly one with a port,
/// unique valid names, every `depends_on` naming another container, no cycle; returns the
/// ingress container's index.
pub fn check(containers: &[Container]) -> Result<usize, SpecError> {
    const FIELD: &str = "--container";
    if containers.is_empty() || containers.len() > MAX_CONTAINERS {
        return Err(bad(
            FIELD,
            format!(
                "{} containers: allowed 1 to {MAX_CONTAINERS}",
                containers.len()
            ),
        ));
    }
    names_and_dependencies(FIELD, containers)?;
    let ingress: Vec<usize> = (0..containers.len())
        .filter(|&i| containers[i].port.is_some())
        .collect();
    let ingress = match ingress.as_slice() {
        [one] => *one,
        [] => {
            return Err(bad(
                "--port",
                "no container has a port: exactly one (the ingress container) must",
            ))
        }
        several => {
            let named: Vec<&str> = several
                .iter()
                .map(|&i| containers[i].name.as_str())
                .collect();
            return Err(bad(
                "--port",
                format!(
                    "only the ingress container may declare a port; given on {}",
                    named.join(", ")
                ),
            ));
        }
    };
    start_order(containers)?;
    Ok(ingress)
}

/// Unique valid names, and every `depends_on` naming another container of the list.
fn names_and_dependencies(field: &'static str, containers: &[Container]) -> Result<(), SpecError> {
    let mut names = BTreeSet::new();
    for c in containers {
        super::check_name(field, &c.name, 63)?;
        if !names.insert(c.name.as_str()) {
            return Err(bad(field, format!("container {} is given twice", c.name)));
        }
    }
    for c in containers {
        for d in &c.depends_on {
            if d == &c.name {
                return Err(bad(
                    "--depends-on",
                    format!("container {} depends on itself", c.name),
                ));
            }
            if !names.contains(d.as_str()) {
                return Err(bad(
                    "--depends-on",
                    format!("container {} depends on {d}, which is not defined", c.name),
                ));
            }
        }
    }
    Ok(())
}

/// Checks the containers of a job's task (Cloud Run's sidecars in jobs) and returns their
/// start-up order ([`start_order`]). The first container is the main one: its exit ends
/// the task and its exit code decides the task's result; the others are sidecars. 1 to
/// [`MAX_CONTAINERS`], unique names, known dependencies, no cycle; no container serves
/// (no port), none has a liveness probe, and the main container has no startup probe
/// (nothing waits for it). A sidecar may have a startup probe: the containers that depend
/// on it start once it passed.
pub fn check_job(containers: &[Container]) -> Result<Vec<Vec<usize>>, SpecError> {
    const FIELD: &str = "--container";
    if containers.is_empty() || containers.len() > MAX_CONTAINERS {
        return Err(bad(
            FIELD,
            format!(
                "{} containers: a task has 1 to {MAX_CONTAINERS} (its main container and its sidecars)",
                containers.len()
            ),
        ));
    }
    names_and_dependencies(FIELD, containers)?;
    if let Some(c) = containers.iter().find(|c| c.port.is_some()) {
        return Err(bad(
            "--port",
            format!(
                "container {}: a task serves nothing; no container of a job has a port",
                c.name
            ),
        ));
    }
    if let Some(c) = containers.iter().find(|c| c.liveness_probe.is_some()) {
        return Err(bad(
            "--liveness-probe",
            format!(
                "container {}: a job's containers have no liveness probe",
                c.name
            ),
        ));
    }
    if containers[0].startup_probe.is_some() {
        return Err(bad(
            "--startup-probe",
            format!(
                "container {} is the main container: nothing waits for it, so it has no startup probe (a sidecar may)",
                containers[0].name
            ),
        ));
    }
    start_order(containers)
}

/// The start-up order: waves of container indexes; every container of a wave depends only
/// on containers of earlier waves, so a wave starts once the earlier ones passed their
/// startup probes. A cycle is refused naming the containers in it (unknown names are
/// [`check`]'s to refuse; here they are ignored).
pub fn start_order(containers: &[Container]) -> Result<Vec<Vec<usize>>, SpecError> {
    let mut placed = vec![false; containers.len()];
    let mut waves = Vec::new();
    while placed.iter().any(|p| !p) {
        let known = |d: &String| containers.iter().position(|c| &c.name == d);
        let wave: Vec<usize> = (0..containers.len())
            .filter(|&i| !placed[i])
            .filter(|&i| {
                containers[i]
                    .depends_on
                    .iter()
                    .filter_map(known)
                    .all(|j| placed[j])
            })
            .collect();
        if wave.is_empty() {
            let stuck: Vec<&str> = (0..containers.len())
                .filter(|&i| !placed[i])
                .map(|i| containers[i].name.as_str())
                .collect();
            return Err(bad(
                "--depends-on",
                format!("a dependency cycle among {}", stuck.join(", ")),
            ));
        }
        for &i in &wave {
            placed[i] = true;
        }
        waves.push(wave);
    }
    Ok(waves)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, port: Option<u16>, deps: &[&str]) -> Container {
        Container {
            name: name.into(),
            port,
            depends_on: deps.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn containers_are_checked_and_ordered() {
        let many: Vec<Container> = (0..11)
            .map(|i| c(&format!("c{i}"), (i == 0).then_some(8080), &[]))
            .collect();
        type Case = (
            &'static str,
            Vec<Container>,
            Result<Vec<Vec<usize>>, &'static str>,
        );
        let table: Vec<Case> = vec![
            ("one", vec![c("app", Some(8080), &[])], Ok(vec![vec![0]])),
            (
                "parallel sidecars",
                vec![c("app", Some(8080), &[]), c("log", None, &[])],
                Ok(vec![vec![0, 1]]),
            ),
            (
                "a chain",
                vec![
                    c("app", Some(8080), &["proxy"]),
                    c("proxy", None, &["db"]),
                    c("db", None, &[]),
                ],
                Ok(vec![vec![2], vec![1], vec![0]]),
            ),
            (
                "a diamond",
                vec![
                    c("app", Some(8080), &["a", "b"]),
                    c("a", None, &["base"]),
                    c("b", None, &["base"]),
                    c("base", None, &[]),
                ],
                Ok(vec![vec![3], vec![1, 2], vec![0]]),
            ),
            ("none", vec![], Err("0 containers: allowed 1 to 10")),
            ("eleven", many, Err("11 containers: allowed 1 to 10")),
            (
                "no ingress",
                vec![c("a", None, &[]), c("b", None, &[])],
                Err("no container has a port"),
            ),
            (
                "two ingress",
                vec![c("a", Some(1), &[]), c("b", Some(2), &[])],
                Err("only the ingress container may declare a port; given on a, b"),
            ),
            (
                "same name",
                vec![c("a", Some(1), &[]), c("a", None, &[])],
                Err("container a is given twice"),
            ),
            (
                "bad name",
                vec![c("A", Some(1), &[])],
                Err("must be 1-63 characters"),
            ),
            (
                "unknown dependency",
                vec![c("app", Some(1), &["db"])],
                Err("container app depends on db, which is not defined"),
            ),
            (
                "itself",
                vec![c("app", Some(1), &["app"])],
                Err("container app depends on itself"),
            ),
            (
                "a cycle",
                vec![
                    c("app", Some(1), &["a"]),
                    c("a", None, &["b"]),
                    c("b", None, &["a"]),
                    c("free", None, &[]),
                ],
                Err("a dependency cycle among app, a, b"),
            ),
        ];
        for (name, containers, want) in table {
            let got = check(&containers).and_then(|_| start_order(&containers));
            match (got, want) {
                (Ok(waves), Ok(w)) => assert_eq!(waves, w, "{name}"),
                (Err(e), Err(w)) => assert!(e.detail.contains(w), "{name}: {e}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_jobs_containers_are_checked_and_ordered() {
        let many: Vec<Container> = (0..11).map(|i| c(&format!("c{i}"), None, &[])).collect();
        let probed = |name: &str| Container {
            startup_probe: Some(Probe::tcp(9000)),
            ..c(name, None, &[])
        };
        let live = Container {
            liveness_probe: Some(Probe::tcp(9000)),
            ..c("side", None, &[])
        };
        type Case = (
            &'static str,
            Vec<Container>,
            Result<Vec<Vec<usize>>, &'static str>,
        );
        let table: Vec<Case> = vec![
            ("one", vec![c("main", None, &[])], Ok(vec![vec![0]])),
            (
                "main after its sidecar",
                vec![c("main", None, &["db"]), probed("db")],
                Ok(vec![vec![1], vec![0]]),
            ),
            (
                "a sidecar after the main one",
                vec![c("main", None, &[]), c("log", None, &["main"])],
                Ok(vec![vec![0], vec![1]]),
            ),
            ("none", vec![], Err("0 containers: a task has 1 to 10")),
            ("eleven", many, Err("11 containers: a task has 1 to 10")),
            (
                "a port",
                vec![c("main", Some(8080), &[])],
                Err("container main: a task serves nothing"),
            ),
            (
                "unknown dependency",
                vec![c("main", None, &["db"])],
                Err("container main depends on db, which is not defined"),
            ),
            (
                "a cycle",
                vec![c("main", None, &["a"]), c("a", None, &["main"])],
                Err("a dependency cycle among main, a"),
            ),
            (
                "same name",
                vec![c("a", None, &[]), c("a", None, &[])],
                Err("container a is given twice"),
            ),
            (
                "main probed",
                vec![probed("main")],
                Err("container main is the main container"),
            ),
            (
                "liveness",
                vec![c("main", None, &[]), live],
                Err("no liveness probe"),
            ),
        ];
        for (name, containers, want) in table {
            let got = check_job(&containers);
            match (got, want) {
                (Ok(waves), Ok(w)) => assert_eq!(waves, w, "{name}"),
                (Err(e), Err(w)) => assert!(e.detail.contains(w), "{name}: {e}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }
}
