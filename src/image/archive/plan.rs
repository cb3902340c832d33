//! Planning shared by both archive formats: given a manifest's descriptor, check its manifest
//! and config documents and its layers, and list the blobs to store, children first, with
//! the garbage-collection labels that keep them alive.

use std::collections::HashMap;
use std::path::Path;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest, MediaType};
use serde::de::DeserializeOwned;

use super::scan::Entry;
use super::{ArchiveError, BlobSource, PlannedBlob, PlannedImage, PlannedLayer, MAX_JSON};
use crate::image::config;
use crate::image::media::{self, Kind};

/// Parses a JSON document of the archive; `what` names it in the error.
pub(super) fn parse<T: DeserializeOwned>(
    path: &Path,
    what: &str,
    bytes: &[u8],
) -> Result<T, ArchiveError> {
    serde_json::from_slice(bytes).map_err(|source| ArchiveError::BadJson {
        path: path.to_path_buf(),
        what: what.to_string(),
        source,
    })
}

/// The name of a blob in an OCI layout: `blobs/<algorithm>/<hex>`.
pub(super) fn blob_name(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

/// The `schemaVersion` of a manifest document, read before the document is parsed as a
/// schema 2 manifest (a schema 1 manifest has none of its fields).
fn schema_version(bytes: &[u8]) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()?
        .get("schemaVersion")?
        .as_u64()
}

/// Collects the blobs of an archive's images, deduplicated.
pub(super) struct Builder<'a> {
    pub path: &'a Path,
    /// The archive's files by blob name (`blobs/sha256/<hex>`).
    pub entries: &'a HashMap<String, Entry>,
    /// The archive's JSON documents by blob name.
    pub docs: &'a HashMap<String, Vec<u8>>,
    pub blobs: Vec<PlannedBlob>,
}

impl<'a> Builder<'a> {
    /// The bytes of the JSON document `digest`.
    pub fn doc(&self, digest: &str) -> Result<&'a [u8], ArchiveError> {
        let name = blob_name(digest);
        match self.docs.get(&name) {
            Some(d) => Ok(d),
            None if self.entries.contains_key(&name) => Err(ArchiveError::Invalid {
                path: self.path.to_path_buf(),
                detail: format!("document {digest} is larger than {MAX_JSON} bytes"),
            }),
            None => Err(ArchiveError::MissingBlob {
                path: self.path.to_path_buf(),
                digest: digest.to_string(),
            }),
        }
    }

    fn add_archive_blob(
        &mut self,
        desc: &Descriptor,
        labels: HashMap<String, String>,
    ) -> Result<(), ArchiveError> {
        let digest = desc.digest().to_string();
        let e = self
            .entries
            .get(&blob_name(&digest))
            .ok_or_else(|| ArchiveError::MissingBlob {
                path: self.path.to_path_buf(),
                digest: digest.clone(),
            })?;
        if e.size != desc.size() {
            return Err(ArchiveError::Invalid {
                path: self.path.to_path_buf(),
                detail: format!(
                    "blob {digest} is {} bytes but its descriptor says {}",
                    e.size,
                    desc.size()
                ),
            });
        }
        self.push(PlannedBlob {
            digest,
            size: e.size,
            source: BlobSource::Archive {
                offset: e.offset,
                size: e.size,
            },
            labels,
        });
        Ok(())
    }

    fn push(&mut self, blob: PlannedBlob) {
        if let Some(existing) = self.blobs.iter_mut().find(|b| b.digest == blob.digest) {
            existing.labels.extend(blob.labels);
        } else {
            self.blobs.push(blob);
        }
    }

    /// Adds a manifest's config and layers (children first) and returns the planned image.
    /// `manifest_bytes` is the manifest when runlet wrote it (docker archives have none).
    pub fn add_manifest(
        &mut self,
        name: &str,
        mdesc: &Descriptor,
        manifest_bytes: Option<Vec<u8>>,
    ) -> Result<PlannedImage, ArchiveError> {
        let mdigest = mdesc.digest().to_string();
        let bytes: Vec<u8> = match &manifest_bytes {
            Some(b) => b.clone(),
            None => self.doc(&mdigest)?.to_vec(),
        };
        if schema_version(&bytes) == Some(1)
            || mdesc.media_type() == &MediaType::Other(media::DOCKER_SCHEMA1.into())
        {
            return Err(ArchiveError::UnsupportedMediaType {
                path: self.path.to_path_buf(),
                what: format!("manifest {mdigest} (Docker schema 1 is deprecated; re-save the image with a current docker)"),
                media_type: media::DOCKER_SCHEMA1.into(),
            });
        }
        let m: ImageManifest = parse(self.path, &format!("manifest {mdigest}"), &bytes)?;
        let config = m.config().clone();
        let config_digest = config.digest().to_string();
        let cfg: ImageConfiguration = parse(
            self.path,
            &format!("image config {config_digest}"),
            self.doc(&config_digest)?,
        )?;
        if !config::is_linux_amd64(cfg.os(), cfg.architecture()) {
            return Err(ArchiveError::NoAmd64 {
                path: self.path.to_path_buf(),
                image: name.to_string(),
                found: format!("{}/{}", cfg.os(), cfg.architecture()),
            });
        }
        let diff_ids = cfg.rootfs().diff_ids();
        if diff_ids.len() != m.layers().len() {
            return Err(ArchiveError::Invalid {
                path: self.path.to_path_buf(),
                detail: format!(
                    "manifest {mdigest} has {} layers but its config lists {} diff_ids",
                    m.layers().len(),
                    diff_ids.len()
                ),
            });
        }
        let mut layers = Vec::new();
        let mut mlabels = HashMap::new();
        mlabels.insert(
            "containerd.io/gc.ref.content.config".to_string(),
            config_digest,
        );
        for (i, (l, diff_id)) in m.layers().iter().zip(diff_ids).enumerate() {
            if media::kind(l.media_type()) != Kind::Layer {
                return Err(ArchiveError::UnsupportedMediaType {
                    path: self.path.to_path_buf(),
                    what: format!("layer {}", l.digest()),
                    media_type: l.media_type().to_string(),
                });
            }
            let mut ll = HashMap::new();
            ll.insert("containerd.io/uncompressed".to_string(), diff_id.clone());
            self.add_archive_blob(l, ll)?;
            mlabels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                l.digest().to_string(),
            );
            layers.push(PlannedLayer {
                desc: l.clone(),
                diff_id: diff_id.clone(),
            });
        }
        self.add_archive_blob(&config, HashMap::new())?;
        let mut target = mdesc.clone();
        target.set_platform(None);
        target.set_annotations(None);
        match manifest_bytes {
            Some(b) => self.push(PlannedBlob {
                digest: mdigest,
                size: b.len() as u64,
                source: BlobSource::Memory(b),
                labels: mlabels,
            }),
            None => self.add_archive_blob(&target, mlabels)?,
        }
        Ok(PlannedImage {
            name: name.to_string(),
            target,
            config,
            layers,
        })
    }
}
