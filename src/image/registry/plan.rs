//! From a reference to a pull plan: fetch the manifest, choose linux/amd64 from an index or
//! manifest list (contract IMG-3, as an archive's index), fetch and check the config, and list
//! what the content store must hold, with the garbage-collection labels that keep it alive.

use std::collections::HashMap;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

use super::remote::{Fetched, Remote};
use super::schema1::{self, Schema1};
use super::RegistryError;
use crate::image::config;
use crate::image::media::{self, Kind};

/// A document runlet already holds (index, manifest, config), to store as is.
#[derive(Debug, Clone)]
pub struct DocBlob {
    pub desc: Descriptor,
    pub bytes: Vec<u8>,
    pub labels: HashMap<String, String>,
}

/// A layer to fetch: its descriptor, uncompressed digest, and labels.
#[derive(Debug, Clone)]
pub struct RemoteLayer {
    pub desc: Descriptor,
    pub diff_id: String,
    pub labels: HashMap<String, String>,
}

/// The documents a pull stores beside the layers.
#[derive(Debug, Clone)]
pub enum Documents {
    /// Fetched and checked: children before parents (config, manifest, index), and what the
    /// image record points at (the index when the reference named one, else the manifest).
    Ready {
        docs: Vec<DocBlob>,
        target: Box<Descriptor>,
    },
    /// A schema-1 manifest: the config and manifest are made after the unpack, which tells
    /// the layers' diff_ids ([`Schema1::documents`]).
    Schema1(Schema1),
}

/// Everything a pull stores, checked and ready.
#[derive(Debug, Clone)]
pub struct PullPlan {
    /// The normalised name the image is stored under.
    pub name: String,
    pub documents: Documents,
    /// The layers, base first. A schema-1 image's have no diff_id (empty) until unpacked.
    pub layers: Vec<RemoteLayer>,
}

impl PullPlan {
    /// Bytes of the image: layers plus the documents known before the pull.
    pub fn total_bytes(&self) -> u64 {
        let docs = match &self.documents {
            Documents::Ready { docs, .. } => docs.iter().map(|d| d.bytes.len() as u64).sum(),
            Documents::Schema1(_) => 0,
        };
        self.layers.iter().map(|l| l.desc.size()).sum::<u64>() + docs
    }
}

/// A descriptor from its three fields.
pub fn descriptor(media_type: &str, digest: &str, size: u64) -> Result<Descriptor, RegistryError> {
    serde_json::from_value(serde_json::json!({
        "mediaType": media_type, "digest": digest, "size": size
    }))
    .map_err(|e| RegistryError::Unsupported {
        reference: digest.to_string(),
        detail: format!("bad descriptor: {e}"),
    })
}

/// What a fetched manifest document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocKind {
    Index,
    Manifest,
    Schema1,
}

/// Classifies a manifest by its media type, or by its fields when the registry sent none.
pub fn doc_kind(media_type: &str, bytes: &[u8]) -> DocKind {
    if media_type.starts_with("application/vnd.docker.distribution.manifest.v1") {
        return DocKind::Schema1;
    }
    if media_type == media::DOCKER_MANIFEST_LIST
        || media_type == "application/vnd.oci.image.index.v1+json"
    {
        return DocKind::Index;
    }
    let doc: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    if doc.get("schemaVersion").and_then(|v| v.as_u64()) == Some(1) {
        DocKind::Schema1
    } else if doc.get("manifests").is_some() {
        DocKind::Index
    } else {
        DocKind::Manifest
    }
}

/// The tag or digest part of a normalised reference (`a/b:1@sha256:..` → the digest).
pub fn tag_or_digest(name: &str) -> &str {
    if let Some((_, d)) = name.split_once('@') {
        return d;
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    last.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest")
}

fn bad(name: &str, detail: String) -> RegistryError {
    RegistryError::Unsupported {
        reference: name.to_string(),
        detail,
    }
}

/// Resolves `name` at its registry into a plan.
pub async fn plan(remote: &Remote, name: &str) -> Result<PullPlan, RegistryError> {
    let top = remote.manifest(tag_or_digest(name)).await?;
    let mut docs = Vec::new();
    let (manifest, target) = match doc_kind(&top.media_type, &top.bytes) {
        DocKind::Schema1 => return plan_schema1(remote, name, &top.bytes).await,
        DocKind::Manifest => {
            let mt = media_type_or(&top, "application/vnd.oci.image.manifest.v1+json");
            let target = descriptor(&mt, &top.digest, top.bytes.len() as u64)?;
            (top, target)
        }
        DocKind::Index => {
            let index: ImageIndex = serde_json::from_slice(&top.bytes)
                .map_err(|e| bad(name, format!("the image index is not valid: {e}")))?;
            let chosen = index
                .manifests()
                .iter()
                .find(|d| config::is_amd64_entry(d))
                .ok_or_else(|| RegistryError::NoAmd64 {
                    reference: name.to_string(),
                    found: index
                        .manifests()
                        .iter()
                        .filter_map(|d| d.platform().as_ref())
                        .map(|p| format!("{}/{}", p.os(), p.architecture()))
                        .collect::<Vec<_>>()
                        .join(", "),
                })?
                .clone();
            let m = remote.manifest(chosen.digest().as_ref()).await?;
            if doc_kind(&m.media_type, &m.bytes) != DocKind::Manifest {
                return Err(bad(
                    name,
                    "the index's linux/amd64 entry is not an image manifest".into(),
                ));
            }
            let mt = media_type_or(&top, "application/vnd.oci.image.index.v1+json");
            let target = descriptor(&mt, &top.digest, top.bytes.len() as u64)?;
            let mut labels = HashMap::new();
            for (i, d) in index.manifests().iter().enumerate() {
                labels.insert(
                    format!("containerd.io/gc.ref.content.m.{i}"),
                    d.digest().to_string(),
                );
            }
            docs.push(DocBlob {
                desc: target.clone(),
                bytes: top.bytes.clone(),
                labels,
            });
            (m, target)
        }
    };
    let m: ImageManifest = serde_json::from_slice(&manifest.bytes)
        .map_err(|e| bad(name, format!("the manifest is not valid: {e}")))?;
    let cdesc = m.config().clone();
    let cbytes = remote
        .small_blob(cdesc.digest().as_ref(), cdesc.size())
        .await?;
    let cfg = config::parse(&cbytes)
        .map_err(|e| bad(name, format!("the image config is not valid: {e}")))?;
    if !config::is_linux_amd64(cfg.os(), cfg.architecture()) {
        return Err(RegistryError::NoAmd64 {
            reference: name.to_string(),
            found: format!("{}/{}", cfg.os(), cfg.architecture()),
        });
    }
    let diff_ids = cfg.rootfs().diff_ids();
    if diff_ids.len() != m.layers().len() {
        return Err(bad(
            name,
            format!(
                "the manifest has {} layers but its config lists {} diff_ids",
                m.layers().len(),
                diff_ids.len()
            ),
        ));
    }
    let mut mlabels = HashMap::new();
    mlabels.insert(
        "containerd.io/gc.ref.content.config".to_string(),
        cdesc.digest().to_string(),
    );
    let mut layers = Vec::new();
    for (i, (l, diff_id)) in m.layers().iter().zip(diff_ids).enumerate() {
        if media::kind(l.media_type()) != Kind::Layer
            && l.media_type().to_string() != "application/vnd.oci.image.layer.v1.tar+zstd"
        {
            return Err(bad(
                name,
                format!(
                    "layer {} has unsupported media type {}",
                    l.digest(),
                    l.media_type()
                ),
            ));
        }
        mlabels.insert(
            format!("containerd.io/gc.ref.content.l.{i}"),
            l.digest().to_string(),
        );
        let mut labels = HashMap::new();
        labels.insert("containerd.io/uncompressed".to_string(), diff_id.clone());
        layers.push(RemoteLayer {
            desc: l.clone(),
            diff_id: diff_id.clone(),
            labels,
        });
    }
    let mdesc = descriptor(
        &media_type_or(&manifest, "application/vnd.oci.image.manifest.v1+json"),
        &manifest.digest,
        manifest.bytes.len() as u64,
    )?;
    let mut ordered = vec![
        DocBlob {
            desc: cdesc,
            bytes: cbytes,
            labels: HashMap::new(),
        },
        DocBlob {
            desc: mdesc,
            bytes: manifest.bytes,
            labels: mlabels,
        },
    ];
    ordered.append(&mut docs);
    Ok(PullPlan {
        name: name.to_string(),
        documents: Documents::Ready {
            docs: ordered,
            target: Box::new(target),
        },
        layers,
    })
}

/// A schema-1 manifest's plan: its layers (sizes asked of the registry, which schema 1
/// does not list); the documents come after the unpack.
async fn plan_schema1(
    remote: &Remote,
    name: &str,
    bytes: &[u8],
) -> Result<PullPlan, RegistryError> {
    let s1 = schema1::parse(bytes).map_err(|e| bad(name, e))?;
    let mut layers = Vec::with_capacity(s1.layers.len());
    for digest in &s1.layers {
        let size = remote.blob_size(digest).await?;
        layers.push(RemoteLayer {
            desc: descriptor(media::DOCKER_LAYER_GZIP, digest, size)?,
            diff_id: String::new(),
            labels: HashMap::new(),
        });
    }
    Ok(PullPlan {
        name: name.to_string(),
        documents: Documents::Schema1(s1),
        layers,
    })
}

fn media_type_or(f: &Fetched, default: &str) -> String {
    if f.media_type.is_empty() || f.media_type == "application/json" {
        serde_json::from_slice::<serde_json::Value>(&f.bytes)
            .ok()
            .and_then(|v| {
                v.get("mediaType")
                    .and_then(|m| m.as_str())
                    .map(String::from)
            })
            .unwrap_or_else(|| default.to_string())
    } else {
        f.media_type.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_classified() {
        let table: [(&str, &str, DocKind); 6] = [
            (media::DOCKER_SCHEMA1, "{}", DocKind::Schema1),
            ("", r#"{"schemaVersion":1,"fsLayers":[]}"#, DocKind::Schema1),
            (media::DOCKER_MANIFEST_LIST, "{}", DocKind::Index),
            (
                "application/vnd.oci.image.index.v1+json",
                "{}",
                DocKind::Index,
            ),
            ("", r#"{"schemaVersion":2,"manifests":[]}"#, DocKind::Index),
            (
                media::DOCKER_MANIFEST,
                r#"{"schemaVersion":2}"#,
                DocKind::Manifest,
            ),
        ];
        for (mt, doc, want) in table {
            assert_eq!(doc_kind(mt, doc.as_bytes()), want, "{mt} {doc}");
        }
    }

    #[test]
    fn tags_and_digests() {
        let d = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
        let table = [
            ("localhost:5000/app:v1".to_string(), "v1"),
            ("localhost:5000/app".to_string(), "latest"),
            (format!("localhost:5000/app@{d}"), d),
            (format!("localhost:5000/app:v1@{d}"), d),
        ];
        for (name, want) in &table {
            assert_eq!(tag_or_digest(name), *want, "{name}");
        }
    }
}
