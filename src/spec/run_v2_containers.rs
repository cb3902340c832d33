//! The Admin API v2 template's `containers[]` as an instance's containers (Cloud Run's
//! sidecars): at most [`MAX_CONTAINERS`], exactly one with `ports` when there are several
//! (the ingress container), DNS-label names, unique, required when there are several, and
//! `dependsOn` naming other containers with no cycle. Refusals name the field with the
//! container's index (`service.template.containers[1].dependsOn`), as Cloud Run does.
//!
//! [`ingress`] is the decision for the whole list; [`field`] spells a container's field
//! path. The per-container fields (image, env, resources, probes, mounts) are mapped by
//! [`super::run_v2`], the same way for the ingress container and its sidecars, into the
//! one model `runlet serve --container` builds ([`super::container`]).

use super::container::{self, Container, MAX_CONTAINERS};
use super::{bad, SpecError};
use crate::pb::run_v2 as v2;

/// A field of one container of the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum F {
    Image,
    Name,
    Ports,
    Env,
    Limits,
    Memory,
    Cpu,
    StartupProbe,
    LivenessProbe,
    ReadinessProbe,
    VolumeMounts,
    WorkingDir,
    DependsOn,
}

macro_rules! paths {
    ($p:literal; $($i:literal)*) => {
        [$([
            concat!($p, "[", $i, "].image"),
            concat!($p, "[", $i, "].name"),
            concat!($p, "[", $i, "].ports"),
            concat!($p, "[", $i, "].env"),
            concat!($p, "[", $i, "].resources.limits"),
            concat!($p, "[", $i, "].resources.limits.memory"),
            concat!($p, "[", $i, "].resources.limits.cpu"),
            concat!($p, "[", $i, "].startupProbe"),
            concat!($p, "[", $i, "].livenessProbe"),
            concat!($p, "[", $i, "].readinessProbe"),
            concat!($p, "[", $i, "].volumeMounts"),
            concat!($p, "[", $i, "].workingDir"),
            concat!($p, "[", $i, "].dependsOn"),
        ]),*]
    };
}

/// Every field path of every container a template may have ([`SpecError`] names a
/// field with a `&'static str`).
const PATHS: [[&str; 13]; MAX_CONTAINERS] =
    paths!("service.template.containers"; 0 1 2 3 4 5 6 7 8 9);
/// The same for a job's task template.
const JOB_PATHS: [[&str; 13]; MAX_CONTAINERS] =
    paths!("job.template.template.containers"; 0 1 2 3 4 5 6 7 8 9);
/// The same in Cloud Run's job YAML (`runlet job execute -f`).
const JOB_YAML_PATHS: [[&str; 13]; MAX_CONTAINERS] =
    paths!("spec.template.spec.template.spec.containers"; 0 1 2 3 4 5 6 7 8 9);

/// The path of field `f` of container `i` (`i` below [`MAX_CONTAINERS`], which
/// [`ingress`] checks first).
pub fn field(i: usize, f: F) -> &'static str {
    PATHS[i.min(MAX_CONTAINERS - 1)][f as usize]
}

/// The path of field `f` of container `i` of a job's task template.
pub fn job_field(i: usize, f: F) -> &'static str {
    JOB_PATHS[i.min(MAX_CONTAINERS - 1)][f as usize]
}

/// The path of field `f` of container `i` in a job YAML's task template.
pub fn job_yaml_field(i: usize, f: F) -> &'static str {
    JOB_YAML_PATHS[i.min(MAX_CONTAINERS - 1)][f as usize]
}

const CONTAINERS: &str = "service.template.containers";

/// Checks the template's containers as a whole and returns the ingress container's index:
/// the one with `ports` (with one container, that one, ports or not).
pub fn ingress(cs: &[v2::Container]) -> Result<usize, SpecError> {
    if cs.is_empty() {
        return Err(bad(CONTAINERS, "one container is required"));
    }
    if cs.len() > MAX_CONTAINERS {
        return Err(bad(
            CONTAINERS,
            format!(
                "{} containers: an instance has at most {MAX_CONTAINERS} (one ingress container and its sidecars)",
                cs.len()
            ),
        ));
    }
    let several = cs.len() > 1;
    for (i, c) in cs.iter().enumerate() {
        if c.name.is_empty() {
            if several {
                return Err(bad(
                    field(i, F::Name),
                    "is required when the template has more than one container",
                ));
            }
            continue;
        }
        super::check_name(field(i, F::Name), &c.name, 63)?;
        if cs[..i].iter().any(|o| o.name == c.name) {
            return Err(bad(
                field(i, F::Name),
                format!("container {} is given twice: names must be unique", c.name),
            ));
        }
    }
    let with_ports: Vec<usize> = (0..cs.len()).filter(|&i| !cs[i].ports.is_empty()).collect();
    let ingress = match (several, with_ports.as_slice()) {
        (false, _) => 0,
        (true, [one]) => *one,
        (true, []) => {
            return Err(bad(
                CONTAINERS,
                "exactly one container (the ingress container) must declare ports; none does",
            ))
        }
        (true, [first, second, ..]) => {
            return Err(bad(
                field(*second, F::Ports),
                format!(
                    "only the ingress container may declare ports: containers {} and {} both do",
                    cs[*first].name, cs[*second].name
                ),
            ))
        }
    };
    dependencies(cs, field)?;
    Ok(ingress)
}

/// Checks every container's `dependsOn`: names of other containers of the template, with no
/// cycle. `path` spells a container's field (the service's [`field`], a job's
/// [`job_field`]).
pub fn dependencies(
    cs: &[v2::Container],
    path: fn(usize, F) -> &'static str,
) -> Result<(), SpecError> {
    for (i, c) in cs.iter().enumerate() {
        for d in &c.depends_on {
            if *d == c.name {
                return Err(bad(
                    path(i, F::DependsOn),
                    format!("container {} depends on itself", c.name),
                ));
            }
            if d.is_empty() || !cs.iter().any(|o| o.name == *d) {
                return Err(bad(
                    path(i, F::DependsOn),
                    format!(
                        "container {:?} is not a container of the template",
                        d.as_str()
                    ),
                ));
            }
        }
    }
    let named: Vec<Container> = cs
        .iter()
        .map(|c| Container {
            name: c.name.clone(),
            depends_on: c.depends_on.clone(),
            ..Default::default()
        })
        .collect();
    if let Err(e) = container::start_order(&named) {
        // The first container of the cycle, in the template's order.
        let first = cs
            .iter()
            .position(|c| !c.depends_on.is_empty())
            .unwrap_or(0);
        return Err(bad(path(first, F::DependsOn), e.detail));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, port: bool, deps: &[&str]) -> v2::Container {
        v2::Container {
            name: name.into(),
            image: "probe".into(),
            ports: if port {
                vec![v2::ContainerPort::default()]
            } else {
                Vec::new()
            },
            depends_on: deps.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn paths_name_the_container() {
        assert_eq!(field(0, F::Image), "service.template.containers[0].image");
        assert_eq!(
            field(1, F::DependsOn),
            "service.template.containers[1].dependsOn"
        );
        assert_eq!(
            field(9, F::Memory),
            "service.template.containers[9].resources.limits.memory"
        );
    }

    #[test]
    fn the_containers_are_checked_naming_the_field() {
        let eleven: Vec<v2::Container> =
            (0..11).map(|i| c(&format!("c{i}"), i == 0, &[])).collect();
        let ten = eleven[..10].to_vec();
        type Case = (
            &'static str,
            Vec<v2::Container>,
            Result<usize, (&'static str, &'static str)>,
        );
        let table: Vec<Case> = vec![
            ("one, unnamed, no port", vec![c("", false, &[])], Ok(0)),
            ("one, named", vec![c("app", true, &[])], Ok(0)),
            (
                "ingress second",
                vec![c("log", false, &[]), c("app", true, &["log"])],
                Ok(1),
            ),
            ("ten", ten, Ok(0)),
            (
                "a chain",
                vec![
                    c("app", true, &["proxy"]),
                    c("proxy", false, &["db"]),
                    c("db", false, &[]),
                ],
                Ok(0),
            ),
            (
                "none",
                vec![],
                Err((CONTAINERS, "one container is required")),
            ),
            (
                "eleven",
                eleven,
                Err((CONTAINERS, "11 containers: an instance has at most 10")),
            ),
            (
                "no ingress",
                vec![c("a", false, &[]), c("b", false, &[])],
                Err((CONTAINERS, "must declare ports; none does")),
            ),
            (
                "two ingress",
                vec![c("a", true, &[]), c("b", false, &[]), c("c", true, &[])],
                Err((
                    "service.template.containers[2].ports",
                    "containers a and c both do",
                )),
            ),
            (
                "unnamed sidecar",
                vec![c("app", true, &[]), c("", false, &[])],
                Err((
                    "service.template.containers[1].name",
                    "is required when the template has more than one container",
                )),
            ),
            (
                "bad name",
                vec![c("App", true, &[])],
                Err(("service.template.containers[0].name", "lowercase")),
            ),
            (
                "same name",
                vec![c("app", true, &[]), c("app", false, &[])],
                Err(("service.template.containers[1].name", "given twice")),
            ),
            (
                "unknown dependency",
                vec![c("app", true, &[]), c("log", false, &["db"])],
                Err((
                    "service.template.containers[1].dependsOn",
                    "\"db\" is not a container of the template",
                )),
            ),
            (
                "itself",
                vec![c("app", true, &["app"])],
                Err((
                    "service.template.containers[0].dependsOn",
                    "depends on itself",
                )),
            ),
            (
                "a cycle",
                vec![
                    c("free", false, &[]),
                    c("app", true, &["a"]),
                    c("a", false, &["b"]),
                    c("b", false, &["a"]),
                ],
                Err((
                    "service.template.containers[1].dependsOn",
                    "a dependency cycle among app, a, b",
                )),
            ),
        ];
        for (name, cs, want) in table {
            match (ingress(&cs), want) {
                (Ok(i), Ok(w)) => assert_eq!(i, w, "{name}"),
                (Err(e), Err((f, d))) => {
                    assert_eq!(e.field, f, "{name}: {e}");
                    assert!(e.detail.contains(d), "{name}: {e}");
                }
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }
}
