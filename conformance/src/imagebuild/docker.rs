//! docker-save archives (the Docker < 25 layout): `manifest.json`, `repositories`,
//! `<id>/layer.tar` with uncompressed layers, `<hex>.json` config.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::{config_json, to_json, ImageConfig, Platform, FIXED_CREATED};
use super::layer::Layer;
use super::tar::{digest_hex, sha256_digest, write_file, TarWriter};

/// One entry of a docker-save `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerManifestEntry {
    /// Path of the config file inside the archive (`<hex>.json`).
    #[serde(rename = "Config")]
    pub config: String,
    /// Tags, e.g. `probe-docker:latest`.
    #[serde(rename = "RepoTags")]
    pub repo_tags: Vec<String>,
    /// Paths of the uncompressed layer tars (`<id>/layer.tar`), base first.
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

/// The legacy per-layer `json` file of a docker-save archive.
#[derive(Serialize)]
struct DockerLayerJson<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: Option<&'a str>,
    created: &'a str,
    os: &'a str,
    architecture: &'a str,
}

/// Writes a docker-save archive (Docker < 25 layout) tagged `repo_tag`
/// (e.g. `probe-docker:latest`; `:latest` is added when there is no tag).
///
/// Layer directories are named by a chain id: sha256 of the parent's id and
/// the layer's diff id, so equal layers on different parents get different
/// directories.
pub fn write_docker_archive(
    out: &Path,
    repo_tag: &str,
    layers: &[Layer],
    config: &ImageConfig,
    platform: &Platform,
) -> Result<()> {
    ensure!(
        !repo_tag.contains('@'),
        "digest references are not supported: {repo_tag:?}"
    );
    let last_slash = repo_tag.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match repo_tag[last_slash..].rfind(':') {
        Some(i) => (&repo_tag[..last_slash + i], &repo_tag[last_slash + i + 1..]),
        None => (repo_tag, "latest"),
    };
    ensure!(
        !repo.is_empty() && !tag.is_empty(),
        "invalid repo tag {repo_tag:?}"
    );

    let mut tar = TarWriter::new();
    let mut layer_paths = Vec::new();
    let mut parent: Option<String> = None;
    for layer in layers {
        let id = hex::encode(Sha256::digest(
            format!("{}\n{}", parent.as_deref().unwrap_or(""), layer.diff_id).as_bytes(),
        ));
        let json = to_json(&DockerLayerJson {
            id: &id,
            parent: parent.as_deref(),
            created: FIXED_CREATED,
            os: &platform.os,
            architecture: &platform.architecture,
        })?;
        tar.dir(id.as_bytes(), 0o755)?;
        tar.file(format!("{id}/VERSION").as_bytes(), b"1.0", 0o644)?;
        tar.file(format!("{id}/json").as_bytes(), &json, 0o644)?;
        tar.file(
            format!("{id}/layer.tar").as_bytes(),
            &layer.tar_bytes,
            0o644,
        )?;
        layer_paths.push(format!("{id}/layer.tar"));
        parent = Some(id);
    }

    let config_bytes = config_json(config, layers, platform)?;
    let config_name = format!("{}.json", digest_hex(&sha256_digest(&config_bytes))?);
    tar.file(config_name.as_bytes(), &config_bytes, 0o644)?;

    let manifest = vec![DockerManifestEntry {
        config: config_name,
        repo_tags: vec![format!("{repo}:{tag}")],
        layers: layer_paths,
    }];
    tar.file(b"manifest.json", &to_json(&manifest)?, 0o644)?;

    if let Some(top) = &parent {
        let repositories = BTreeMap::from([(
            repo.to_string(),
            BTreeMap::from([(tag.to_string(), top.clone())]),
        )]);
        tar.file(b"repositories", &to_json(&repositories)?, 0o644)?;
    }
    write_file(out, &tar.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imagebuild::testutil::*;
    use crate::imagebuild::{build_layer, probe_config, ImageFile};
    use oci_spec::image::ImageConfiguration;
    use std::fs;

    #[test]
    fn docker_archive_is_consistent() {
        let dir = scratch("docker");
        let layers = [
            build_layer(&sample_files()).unwrap(),
            build_layer(&[ImageFile::bytes("extra", b"x".to_vec(), 0o644)]).unwrap(),
        ];
        let config = probe_config();
        let out = dir.join("d.tar");
        let amd64 = Platform::linux_amd64();
        let bytes = written_twice(&out, |out| {
            write_docker_archive(out, "probe-docker:latest", &layers, &config, &amd64).unwrap()
        });

        let files = tar_map(&bytes);
        let manifest: Vec<DockerManifestEntry> =
            serde_json::from_slice(&files["manifest.json"]).unwrap();
        assert_eq!(manifest.len(), 1);
        let entry = &manifest[0];
        assert_eq!(entry.repo_tags, ["probe-docker:latest"]);
        let config_bytes = &files[&entry.config];
        assert_eq!(
            entry.config,
            format!("{}.json", digest_hex(&sha256_digest(config_bytes)).unwrap())
        );
        let cfg: ImageConfiguration = serde_json::from_slice(config_bytes).unwrap();
        assert_eq!(entry.layers.len(), 2);
        for ((path, layer), diff_id) in entry
            .layers
            .iter()
            .zip(&layers)
            .zip(cfg.rootfs().diff_ids())
        {
            let tar = &files[path];
            assert_eq!(tar, &layer.tar_bytes, "layer.tar is the uncompressed layer");
            assert_eq!(&sha256_digest(tar), diff_id);
            let id = path.strip_suffix("/layer.tar").unwrap();
            assert_eq!(files[&format!("{id}/VERSION")], b"1.0");
            let json: serde_json::Value =
                serde_json::from_slice(&files[&format!("{id}/json")]).unwrap();
            assert_eq!(json["id"], id);
        }
        let repositories: BTreeMap<String, BTreeMap<String, String>> =
            serde_json::from_slice(&files["repositories"]).unwrap();
        let top = entry.layers[1].strip_suffix("/layer.tar").unwrap();
        assert_eq!(repositories["probe-docker"]["latest"], top);
        fs::remove_dir_all(dir).unwrap();
    }
}
