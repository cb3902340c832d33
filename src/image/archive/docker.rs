//! Planning a `docker save` archive: `manifest.json` names each image's config and layer
//! files by path. runlet writes the equivalent OCI manifest for each image and re-keys the
//! files by digest, so the rest of the planning is shared with OCI layouts.

use std::collections::HashMap;
use std::path::Path;

use oci_spec::image::{
    Descriptor, DescriptorBuilder, Digest, ImageManifest, ImageManifestBuilder, MediaType,
};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::plan::{blob_name, parse, Builder};
use super::scan::{is_gzip, Entry, Scan};
use super::{reference, ArchiveError, ImportPlan};

/// One entry of a docker-save `manifest.json` (oci-spec has no type for it).
#[derive(Debug, Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

pub(super) fn plan(
    path: &Path,
    scanned: &Scan,
    tag: Option<&str>,
) -> Result<ImportPlan, ArchiveError> {
    let list: Vec<DockerManifestEntry> =
        parse(path, "manifest.json", &scanned.docs["manifest.json"])?;
    if list.is_empty() {
        return Err(ArchiveError::Invalid {
            path: path.to_path_buf(),
            detail: "manifest.json lists no images".into(),
        });
    }
    let invalid = |detail: String| ArchiveError::Invalid {
        path: path.to_path_buf(),
        detail,
    };
    // Docker archives name files by path; re-key them by digest so the OCI code can be shared.
    let mut by_digest: HashMap<String, Entry> = HashMap::new();
    let mut docs_by_digest: HashMap<String, Vec<u8>> = HashMap::new();
    let mut manifests = Vec::new();
    for item in &list {
        let get = |name: &str| {
            scanned.entries.get(name).ok_or_else(|| {
                invalid(format!(
                    "manifest.json names {name}, which is not in the archive"
                ))
            })
        };
        let cfg_entry = get(&item.config)?;
        let cfg_bytes = scanned
            .docs
            .get(&item.config)
            .ok_or_else(|| invalid(format!("config {} is too large", item.config)))?;
        let cfg_digest = rekey(&mut by_digest, cfg_entry);
        docs_by_digest.insert(blob_name(&cfg_digest), cfg_bytes.clone());
        let config = descriptor(path, MediaType::ImageConfig, &cfg_digest, cfg_entry.size)?;
        let mut layers = Vec::new();
        for l in &item.layers {
            let e = get(l)?;
            let media_type = if is_gzip(path, e.offset, e.size)? {
                MediaType::ImageLayerGzip
            } else {
                MediaType::ImageLayer
            };
            let digest = rekey(&mut by_digest, e);
            layers.push(descriptor(path, media_type, &digest, e.size)?);
        }
        // A docker archive has no manifest blob: write the equivalent OCI manifest.
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config)
            .layers(layers)
            .build()
            .map_err(|e| invalid(format!("writing the manifest of {}: {e}", item.config)))?;
        let bytes = manifest_bytes(&manifest).map_err(|e| invalid(e.to_string()))?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        let mdesc = descriptor(path, MediaType::ImageManifest, &digest, bytes.len() as u64)?;
        let names: Vec<String> = match (tag, &item.repo_tags) {
            (Some(t), _) if list.len() == 1 => vec![reference::normalize(t)?],
            (_, Some(tags)) if !tags.is_empty() => tags
                .iter()
                .map(|t| reference::normalize(t))
                .collect::<Result<_, _>>()?,
            (Some(t), _) => vec![reference::normalize(t)?],
            _ => {
                return Err(ArchiveError::NoName {
                    path: path.to_path_buf(),
                })
            }
        };
        manifests.push((names, mdesc, bytes));
    }
    let mut b = Builder {
        path,
        entries: &by_digest,
        docs: &docs_by_digest,
        blobs: Vec::new(),
    };
    let mut images = Vec::new();
    for (names, mdesc, bytes) in manifests {
        for name in names {
            images.push(b.add_manifest(&name, &mdesc, Some(bytes.clone()))?);
        }
    }
    Ok(ImportPlan {
        path: path.to_path_buf(),
        blobs: b.blobs,
        images,
    })
}

/// Files the entry again under its blob name; returns its digest.
fn rekey(by_digest: &mut HashMap<String, Entry>, e: &Entry) -> String {
    let digest = format!("sha256:{}", e.sha256);
    by_digest.insert(
        blob_name(&digest),
        Entry {
            offset: e.offset,
            size: e.size,
            sha256: e.sha256.clone(),
        },
    );
    digest
}

fn descriptor(
    path: &Path,
    media_type: MediaType,
    digest: &str,
    size: u64,
) -> Result<Descriptor, ArchiveError> {
    let digest: Digest = digest.parse().map_err(|e| ArchiveError::Invalid {
        path: path.to_path_buf(),
        detail: format!("digest {digest}: {e}"),
    })?;
    DescriptorBuilder::default()
        .media_type(media_type)
        .digest(digest)
        .size(size)
        .build()
        .map_err(|e| ArchiveError::Invalid {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
}

/// The synthesised manifest's bytes, keys sorted (as runlet has always written them: the
/// manifest digest of a re-loaded docker archive stays the same).
fn manifest_bytes(m: &ImageManifest) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&serde_json::to_value(m)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthesised_manifest_bytes_are_what_runlet_wrote_before() {
        let (cfg, layer) = (
            "sha256:".to_string() + &"c".repeat(64),
            "sha256:".to_string() + &"1".repeat(64),
        );
        let path = Path::new("x.tar");
        let m = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(descriptor(path, MediaType::ImageConfig, &cfg, 7).unwrap())
            .layers(vec![
                descriptor(path, MediaType::ImageLayerGzip, &layer, 9).unwrap()
            ])
            .build()
            .unwrap();
        let before = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg, "size": 7},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": 9}],
        });
        assert_eq!(
            manifest_bytes(&m).unwrap(),
            serde_json::to_vec(&before).unwrap()
        );
    }
}
