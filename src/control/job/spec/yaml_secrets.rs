//! Secrets in Cloud Run's job YAML: an env var's `valueFrom.secretKeyRef {name, key}` and
//! `secret` volumes (`secretName`, `items: [{key, path}]`) mounted by `volumeMounts`, both
//! ways. Only references: the values stay in the store.

use serde::{Deserialize, Serialize};

use super::bad;
use super::yaml::{ContainerYaml, EnvVarYaml};
use crate::spec::secrets::{
    check_secret_name, qualify, SecretBindings, SecretFile, SecretRef, Version,
};
use crate::spec::SpecError;

const ENV: &str = "spec.template.spec.template.spec.containers[0].env";
const VOLUMES: &str = "spec.template.spec.template.spec.volumes";
const MOUNTS: &str = "spec.template.spec.template.spec.containers[0].volumeMounts";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvVarSourceYaml {
    pub secret_key_ref: SecretKeyRefYaml,
}

/// `name`: the secret (short or `projects/P/secrets/S`); `key`: its version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretKeyRefYaml {
    pub name: String,
    #[serde(default)]
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeMountYaml {
    pub name: String,
    pub mount_path: String,
}

/// A volume: runlet's jobs take `secret` volumes and in-memory `emptyDir` ones (shared by
/// a task's containers); anything else is an unknown field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeYaml {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretVolumeYaml>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDirYaml>,
}

/// `emptyDir`: `medium: Memory` (the only medium Cloud Run has), `sizeLimit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EmptyDirYaml {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<super::Quantity>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretVolumeYaml {
    pub secret_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<KeyToPathYaml>,
}

/// `key`: the version; `path`: the file, relative to the mount path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KeyToPathYaml {
    pub key: String,
    pub path: String,
}

/// The spec's secret variables as YAML env entries.
pub fn env_yaml(b: &SecretBindings) -> Vec<EnvVarYaml> {
    b.env
        .iter()
        .map(|(k, r)| EnvVarYaml {
            name: k.clone(),
            value: None,
            value_from: Some(EnvVarSourceYaml {
                secret_key_ref: SecretKeyRefYaml {
                    name: r.secret.clone(),
                    key: r.version.to_string(),
                },
            }),
        })
        .collect()
}

fn volume_name(i: usize) -> String {
    format!("secret-{}", i + 1)
}

/// One volume per secret directory.
pub fn volumes_yaml(b: &SecretBindings) -> Vec<VolumeYaml> {
    b.mounts()
        .into_iter()
        .enumerate()
        .map(|(i, (_, files))| VolumeYaml {
            name: volume_name(i),
            empty_dir: None,
            secret: Some(SecretVolumeYaml {
                secret_name: files[0].secret.secret.clone(),
                items: files
                    .iter()
                    .map(|f| KeyToPathYaml {
                        key: f.secret.version.to_string(),
                        path: f.path.clone(),
                    })
                    .collect(),
            }),
        })
        .collect()
}

pub fn mounts_yaml(b: &SecretBindings) -> Vec<VolumeMountYaml> {
    b.mounts()
        .into_iter()
        .enumerate()
        .map(|(i, (mount, _))| VolumeMountYaml {
            name: volume_name(i),
            mount_path: mount.to_string(),
        })
        .collect()
}

/// The file's secrets: its `valueFrom` variables and mounted secret volumes.
pub fn bindings(c: &ContainerYaml, vols: &[VolumeYaml]) -> Result<SecretBindings, SpecError> {
    let mut b = SecretBindings::default();
    for e in &c.env {
        let Some(src) = &e.value_from else { continue };
        if e.value.is_some() {
            return Err(bad(
                ENV,
                format!("{}: give value or valueFrom, not both", e.name),
            ));
        }
        let r = &src.secret_key_ref;
        let r = SecretRef {
            secret: check_secret_name(ENV, &r.name)?.to_string(),
            version: Version::parse(ENV, &r.key)?,
        };
        match b.env.iter_mut().find(|(k, _)| *k == e.name) {
            Some(slot) => slot.1 = r,
            None => b.env.push((e.name.clone(), r)),
        }
    }
    for (i, v) in vols.iter().enumerate() {
        if vols[..i].iter().any(|w| w.name == v.name) {
            return Err(bad(VOLUMES, format!("volume {} is defined twice", v.name)));
        }
        if let Some(sv) = &v.secret {
            check_secret_name(VOLUMES, &sv.secret_name)?;
        }
    }
    for m in &c.volume_mounts {
        let v = vols.iter().find(|v| v.name == m.name).ok_or_else(|| {
            bad(
                MOUNTS,
                format!("{} is not a volume of the task template", m.name),
            )
        })?;
        // An in-memory volume: a mount of the task's (see `containers`).
        let Some(sv) = &v.secret else { continue };
        let secret = &sv.secret_name;
        if sv.items.is_empty() {
            b.files.push(SecretFile {
                mount: m.mount_path.clone(),
                path: qualify(secret, "").1.to_string(),
                secret: SecretRef {
                    secret: secret.clone(),
                    version: Version::Latest,
                },
            });
        }
        for it in &sv.items {
            b.files.push(SecretFile {
                mount: m.mount_path.clone(),
                path: it.path.clone(),
                secret: SecretRef {
                    secret: secret.clone(),
                    version: Version::parse(VOLUMES, &it.key)?,
                },
            });
        }
    }
    Ok(b)
}
