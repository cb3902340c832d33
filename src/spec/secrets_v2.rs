//! [`SecretBindings`] in the Admin API v2's shape, both ways, for a service's and a job's
//! container: an env var's `valueSource.secretKeyRef {secret, version}`, and a `secret`
//! volume (`{secret, items: [{path, version}]}`) mounted by a `volumeMount`. Without
//! `items`, Cloud Run's rule: one file named after the secret, its latest version.

use super::secrets::{check_secret_name, SecretBindings, SecretFile, SecretRef, Version};
use super::{bad, SpecError};
use crate::pb::run_v2::{self as v2, env_var, volume};

/// Field paths of the container the mapping reads (refusals name them).
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    pub env: &'static str,
    pub volumes: &'static str,
    pub mounts: &'static str,
}

/// A reference as the API's env var carries it.
pub fn env_var(name: &str, r: &SecretRef) -> v2::EnvVar {
    v2::EnvVar {
        name: name.to_string(),
        values: Some(env_var::Values::ValueSource(v2::EnvVarSource {
            secret_key_ref: Some(v2::SecretKeySelector {
                secret: r.secret.clone(),
                version: r.version.to_string(),
            }),
        })),
    }
}

/// The reference an env var's `valueSource` holds.
pub fn env_ref(field: &'static str, e: &v2::EnvVar) -> Result<Option<SecretRef>, SpecError> {
    let Some(env_var::Values::ValueSource(src)) = &e.values else {
        return Ok(None);
    };
    let sel = src
        .secret_key_ref
        .as_ref()
        .ok_or_else(|| bad(field, format!("{}: valueSource needs secretKeyRef", e.name)))?;
    Ok(Some(SecretRef {
        secret: check_secret_name(field, &sel.secret)?.to_string(),
        version: Version::parse(field, &sel.version)?,
    }))
}

/// The secret volumes and mounts for `b`'s files, one volume per directory, named
/// `secret-N` (skipping `taken` names).
pub fn volumes(b: &SecretBindings, taken: &[String]) -> (Vec<v2::Volume>, Vec<v2::VolumeMount>) {
    let mut vols = Vec::new();
    let mut mounts = Vec::new();
    let mut n = 0;
    for (mount, files) in b.mounts() {
        let name = loop {
            n += 1;
            let name = format!("secret-{n}");
            if !taken.contains(&name) {
                break name;
            }
        };
        vols.push(v2::Volume {
            name: name.clone(),
            volume_type: Some(volume::VolumeType::Secret(v2::SecretVolumeSource {
                secret: files[0].secret.secret.clone(),
                items: files
                    .iter()
                    .map(|f| v2::VersionToPath {
                        path: f.path.clone(),
                        version: f.secret.version.to_string(),
                        mode: 0,
                    })
                    .collect(),
                default_mode: 0,
            })),
        });
        mounts.push(v2::VolumeMount {
            name,
            mount_path: mount.to_string(),
            sub_path: String::new(),
        });
    }
    (vols, mounts)
}

/// The files secret volume `vol` puts at `mount`; `None` when it is not a secret volume.
pub fn volume_files(
    fields: Fields,
    vol: &v2::Volume,
    mount: &str,
) -> Result<Option<Vec<SecretFile>>, SpecError> {
    let Some(volume::VolumeType::Secret(s)) = &vol.volume_type else {
        return Ok(None);
    };
    let secret = check_secret_name(fields.volumes, &s.secret)?.to_string();
    if s.items.is_empty() {
        let (_, id) = super::secrets::qualify(&secret, "");
        return Ok(Some(vec![SecretFile {
            mount: mount.to_string(),
            path: id.to_string(),
            secret: SecretRef {
                secret,
                version: Version::Latest,
            },
        }]));
    }
    s.items
        .iter()
        .map(|it| {
            Ok(SecretFile {
                mount: mount.to_string(),
                path: it.path.clone(),
                secret: SecretRef {
                    secret: secret.clone(),
                    version: Version::parse(fields.volumes, &it.version)?,
                },
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// A container's secrets: its env vars from secrets, and the files of the secret volumes
/// it mounts (volumes are the template's). Secret volumes not mounted are ignored.
pub fn bindings(
    fields: Fields,
    project: &str,
    env: &[v2::EnvVar],
    vols: &[v2::Volume],
    mounts: &[v2::VolumeMount],
) -> Result<SecretBindings, SpecError> {
    let mut b = SecretBindings {
        project: project.to_string(),
        ..Default::default()
    };
    for e in env {
        if let Some(r) = env_ref(fields.env, e)? {
            match b.env.iter_mut().find(|(k, _)| *k == e.name) {
                Some(slot) => slot.1 = r,
                None => b.env.push((e.name.clone(), r)),
            }
        }
    }
    for m in mounts {
        let Some(v) = vols.iter().find(|v| v.name == m.name) else {
            continue;
        };
        if let Some(files) = volume_files(fields, v, &m.mount_path)? {
            if !m.sub_path.is_empty() {
                return Err(bad(
                    fields.mounts,
                    format!("{}: subPath is not supported yet", m.name),
                ));
            }
            b.files.extend(files);
        }
    }
    Ok(b)
}

/// True for a volume of type `secret`.
pub fn is_secret_volume(v: &v2::Volume) -> bool {
    matches!(v.volume_type, Some(volume::VolumeType::Secret(_)))
}

/// Replaces the secrets of container `c` (and its secret volumes among the template's
/// `vols`) with `b`: plain env vars and other volumes are kept, and so are the secret
/// volumes named in `keep` (those other containers of the template mount).
pub fn replace(
    c: &mut v2::Container,
    vols: &mut Vec<v2::Volume>,
    b: &SecretBindings,
    keep: &[String],
) {
    let secret_vols: Vec<String> = vols
        .iter()
        .filter(|v| is_secret_volume(v))
        .map(|v| v.name.clone())
        .collect();
    c.env
        .retain(|e| !matches!(e.values, Some(env_var::Values::ValueSource(_))));
    c.env.extend(b.env.iter().map(|(k, r)| env_var(k, r)));
    let mine: Vec<String> = c
        .volume_mounts
        .iter()
        .filter(|m| secret_vols.contains(&m.name))
        .map(|m| m.name.clone())
        .collect();
    c.volume_mounts.retain(|m| !mine.contains(&m.name));
    vols.retain(|v| !is_secret_volume(v) || !mine.contains(&v.name) || keep.contains(&v.name));
    let taken: Vec<String> = vols.iter().map(|v| v.name.clone()).collect();
    let (new_vols, new_mounts) = volumes(b, &taken);
    vols.extend(new_vols);
    c.volume_mounts.extend(new_mounts);
}

/// The project of a resource name `projects/P/...` (empty for anything else: then
/// [`SecretBindings::project`] is `local`).
pub fn project_of(name: &str) -> &str {
    name.strip_prefix("projects/")
        .and_then(|r| r.split('/').next())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::secrets::SecretFlags;

    const F: Fields = Fields {
        env: "env",
        volumes: "volumes",
        mounts: "mounts",
    };

    fn bound(set: &[&str]) -> SecretBindings {
        let mut b = SecretBindings::default();
        b.apply(
            &SecretFlags {
                set: set.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }
            .parse()
            .unwrap(),
        );
        b
    }

    #[test]
    fn bindings_round_trip_through_a_container() {
        let b = bound(&[
            "A=a:1,B=projects/p/secrets/b:latest",
            "/s/api/key=k:2,/s/api/old=k:1,/certs/tls=c:latest",
        ]);
        let mut c = v2::Container {
            env: vec![v2::EnvVar {
                name: "PLAIN".into(),
                values: Some(env_var::Values::Value("x".into())),
            }],
            volume_mounts: vec![v2::VolumeMount {
                name: "secret-1".into(),
                mount_path: "/mem".into(),
                sub_path: String::new(),
            }],
            ..Default::default()
        };
        let mut vols = vec![v2::Volume {
            name: "secret-1".into(),
            volume_type: Some(volume::VolumeType::EmptyDir(Default::default())),
        }];
        replace(&mut c, &mut vols, &b, &[]);
        assert_eq!(vols.len(), 3);
        assert_eq!(vols[1].name, "secret-2", "the taken name is skipped");
        let back = bindings(F, "", &c.env, &vols, &c.volume_mounts).unwrap();
        assert_eq!(back, b);
        // Replacing again keeps the plain parts and drops the old secrets, but for the
        // volume another container mounts too.
        let mut other = c.clone();
        replace(&mut c, &mut vols, &bound(&["C=c:1"]), &["secret-2".into()]);
        assert_eq!(c.env.len(), 2);
        let names: Vec<&str> = vols.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["secret-1", "secret-2"]);
        assert_eq!(c.volume_mounts.len(), 1);
        replace(&mut other, &mut vols, &bound(&[]), &[]);
        assert_eq!(vols.len(), 1);
    }

    #[test]
    fn a_volume_without_items_is_the_latest_version_named_after_the_secret() {
        let vols = vec![v2::Volume {
            name: "v".into(),
            volume_type: Some(volume::VolumeType::Secret(v2::SecretVolumeSource {
                secret: "projects/p/secrets/db".into(),
                ..Default::default()
            })),
        }];
        let mounts = vec![v2::VolumeMount {
            name: "v".into(),
            mount_path: "/db".into(),
            sub_path: String::new(),
        }];
        let b = bindings(F, "local", &[], &vols, &mounts).unwrap();
        assert_eq!(b.files[0].key(), "/db/db");
        assert_eq!(b.files[0].secret.version, Version::Latest);
    }

    #[test]
    fn bad_references_are_refused_naming_the_field() {
        let e = v2::EnvVar {
            name: "A".into(),
            values: Some(env_var::Values::ValueSource(v2::EnvVarSource {
                secret_key_ref: Some(v2::SecretKeySelector {
                    secret: "bad name".into(),
                    version: "1".into(),
                }),
            })),
        };
        assert_eq!(bindings(F, "", &[e], &[], &[]).unwrap_err().field, "env");
        let e = v2::EnvVar {
            name: "A".into(),
            values: Some(env_var::Values::ValueSource(v2::EnvVarSource {
                secret_key_ref: None,
            })),
        };
        assert_eq!(bindings(F, "", &[e], &[], &[]).unwrap_err().field, "env");
        assert_eq!(project_of("projects/p1/locations/l/services/s"), "p1");
        assert_eq!(project_of("s"), "");
    }
}
