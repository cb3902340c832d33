//! What a `--container` group (or the flags before the first one) sets on its Admin API v2
//! container, one function for both sides: `runlet deploy`'s sidecars
//! ([`super::to_run_v2`]) and `runlet jobs create|update`'s containers
//! (`control::job::spec::to_run_v2`). Each value given replaces the container's; what is
//! not given is kept, so the same function builds a new container and edits a stored one.
//!
//! The values come checked: each side checks its flags its own way (a service's group as a
//! whole by [`ContainerFlags::check`](super::container_flags::ContainerFlags::check), a
//! job's as it edits the stored job), and what differs between them stays with the caller:
//! a service's port, liveness probe and CPU throttling, a job's refusal of them, and each
//! side's secrets.

use super::probe::Probe;
use super::to_run_v2::{plain_env_vars, probe_of, volume_mount};
use crate::pb::run_v2::{self as v2, env_var};

/// The fields of one container that a group gives, checked; `None` (or empty) keeps the
/// container's.
#[derive(Debug, Default)]
pub struct GroupFields<'a> {
    pub image: Option<&'a str>,
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    /// The plain variables, all of them: they replace the container's plain ones; its
    /// secret ones stay (secrets have their own flags, as gcloud's).
    pub env: Option<Vec<(String, String)>>,
    /// `--memory` and `--cpu` as given: `resources.limits`.
    pub memory: Option<&'a str>,
    pub cpu: Option<&'a str>,
    /// Mounts of in-memory volumes as (volume, path), in order: they replace the
    /// container's mounts at their paths.
    pub mounts: Vec<(String, String)>,
    pub startup_probe: Option<&'a Probe>,
    pub liveness_probe: Option<&'a Probe>,
    pub depends_on: Option<Vec<String>>,
}

/// Sets what `g` gives on `c`; the rest of `c` is kept.
pub fn apply_group(c: &mut v2::Container, g: GroupFields) {
    if let Some(image) = g.image {
        c.image = image.to_string();
    }
    if let Some(cmd) = g.command {
        c.command = cmd;
    }
    if let Some(args) = g.args {
        c.args = args;
    }
    if let Some(env) = g.env {
        c.env
            .retain(|e| matches!(e.values, Some(env_var::Values::ValueSource(_))));
        c.env.extend(plain_env_vars(&env));
    }
    for (key, value) in [("memory", g.memory), ("cpu", g.cpu)] {
        if let Some(v) = value {
            c.resources
                .get_or_insert_with(Default::default)
                .limits
                .insert(key.to_string(), v.to_string());
        }
    }
    c.volume_mounts
        .retain(|old| !g.mounts.iter().any(|(_, path)| *path == old.mount_path));
    c.volume_mounts.extend(
        g.mounts
            .iter()
            .map(|(volume, path)| volume_mount(volume, path)),
    );
    if let Some(p) = g.startup_probe {
        c.startup_probe = Some(probe_of(p));
    }
    if let Some(p) = g.liveness_probe {
        c.liveness_probe = Some(probe_of(p));
    }
    if let Some(d) = g.depends_on {
        c.depends_on = d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn a_group_sets_what_it_gives_and_keeps_the_rest() {
        let secret = v2::EnvVar {
            name: "S".into(),
            values: Some(env_var::Values::ValueSource(Default::default())),
        };
        let probe = crate::spec::probe::parse("--startup-probe", "tcpSocket.port=9000", 0).unwrap();
        let mut c = v2::Container {
            name: "side".into(),
            image: "old".into(),
            args: vec!["keep".into()],
            env: vec![
                plain_env_vars(&pairs(&[("A", "1")]))[0].clone(),
                secret.clone(),
            ],
            volume_mounts: vec![volume_mount("a", "/a"), volume_mount("b", "/b")],
            ..Default::default()
        };
        apply_group(
            &mut c,
            GroupFields {
                image: Some("new"),
                env: Some(pairs(&[("B", "2")])),
                memory: Some("1Gi"),
                mounts: pairs(&[("c", "/a")]),
                startup_probe: Some(&probe),
                depends_on: Some(vec!["main".into()]),
                ..Default::default()
            },
        );
        assert_eq!(
            (c.image.as_str(), c.args.clone()),
            ("new", vec!["keep".into()])
        );
        assert_eq!(c.env[0], secret, "a secret variable stays");
        assert_eq!(super::super::to_run_v2::plain_env(&c), pairs(&[("B", "2")]));
        let r = c.resources.as_ref().unwrap();
        assert_eq!(r.limits.len(), 1);
        assert_eq!(r.limits["memory"], "1Gi");
        assert_eq!(
            c.volume_mounts,
            [volume_mount("b", "/b"), volume_mount("c", "/a")],
            "a mount replaces the one at its path"
        );
        assert_eq!(c.startup_probe, Some(probe_of(&probe)));
        assert_eq!(c.liveness_probe, None);
        assert_eq!(c.depends_on, ["main"]);
        // Nothing given: nothing changes, and no resources appear.
        let mut bare = v2::Container::default();
        apply_group(&mut bare, GroupFields::default());
        assert_eq!(bare, v2::Container::default());
    }
}
