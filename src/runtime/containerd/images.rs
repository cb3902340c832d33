//! Images: import a checked archive (content, image records, unpacked layers), list and
//! remove images, read an image's manifest and config, and read small files from its root
//! filesystem.

use std::collections::HashMap;
use std::time::Duration;

use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{RemoveSnapshotRequest, ViewSnapshotRequest};
use containerd_client::services::v1::{
    CreateImageRequest, DeleteImageRequest, GetImageRequest, Image, ListImagesRequest,
    UpdateImageRequest,
};
use containerd_client::tonic::Code;
use containerd_client::types::Descriptor as PbDescriptor;
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use prost_types::FieldMask;
use tracing::info;

use super::client::{grpc, image_grpc, Containerd, SNAPSHOTTER};
use super::leases::Held;
use super::Lease;
use crate::image::archive::{self, ImportPlan, Progress};
use crate::image::config::{self, is_amd64_entry, RunConfig};
use crate::image::registry::plan::{doc_kind, DocKind};
use crate::image::registry::push::StoredManifest;
use crate::image::{chain_ids, ImageInfo};
use crate::runtime::ocispec;
use crate::runtime::passwd::{self, ImageUser};
use crate::runtime::RuntimeError;

/// Why the user an image runs as could not be found.
#[derive(Debug, thiserror::Error)]
pub enum ImageUserError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    User(#[from] ocispec::SpecError),
}

/// An image as the store holds it: its linux/amd64 manifest's digest, config and layers.
struct StoredImage {
    digest: String,
    config: ImageConfiguration,
    layers: Vec<Descriptor>,
    /// Manifest plus compressed layers, as `docker images` shows.
    size: i64,
}

/// An image in the store that cannot be read as one.
fn bad_image(name: &str, detail: String) -> RuntimeError {
    RuntimeError::Other {
        op: "read image",
        id: name.to_string(),
        detail,
    }
}

/// A descriptor as containerd's API spells it.
pub(super) fn pb_descriptor(d: &Descriptor) -> PbDescriptor {
    PbDescriptor {
        media_type: d.media_type().to_string(),
        digest: d.digest().to_string(),
        size: d.size() as i64,
        annotations: HashMap::new(),
    }
}

impl Containerd {
    /// Imports a checked archive: content, image records, then unpacked layers. Returns the
    /// names of the images it holds. Nothing outlives a failure: the lease is released with
    /// a synchronous garbage collection, and image records created by this call are removed.
    pub async fn import(
        &self,
        plan: &ImportPlan,
        progress: &mut dyn Progress,
    ) -> Result<Vec<String>, RuntimeError> {
        let lease = self.lease("import", Duration::from_secs(3600)).await?;
        let mut created = Vec::new();
        let result = self
            .import_under(plan, &lease, progress, &mut created)
            .await;
        if result.is_err() {
            for name in &created {
                let _ = self.remove_image(name).await;
            }
        }
        self.release(lease, result.is_err()).await?;
        result
    }

    async fn import_under(
        &self,
        plan: &ImportPlan,
        lease: &Lease,
        progress: &mut dyn Progress,
        created: &mut Vec<String>,
    ) -> Result<Vec<String>, RuntimeError> {
        let total = plan.total_bytes();
        let mut done = 0u64;
        for blob in &plan.blobs {
            // Held before it is looked for, as a pull's blobs (see `pull::store_blob`).
            self.hold(lease, Held::Content, &blob.digest).await?;
            if self.content_exists(&blob.digest).await? {
                self.set_content_labels(&blob.digest, &blob.labels).await?;
            } else {
                let reader = archive::blob_reader(plan, blob).map_err(|e| RuntimeError::Other {
                    op: "read archive",
                    id: blob.digest.clone(),
                    detail: e.to_string(),
                })?;
                let base = done;
                let mut report = |n: u64| progress.step("importing", base + n, total);
                self.write_blob(
                    lease,
                    &blob.digest,
                    blob.size,
                    reader,
                    blob.labels.clone(),
                    &mut report,
                )
                .await?;
            }
            done += blob.size;
            progress.step("importing", done, total);
        }
        let mut names = Vec::new();
        for img in &plan.images {
            let top = self
                .unpack(
                    lease,
                    &img.layers
                        .iter()
                        .map(|l| (l.desc.clone(), l.diff_id.clone()))
                        .collect::<Vec<_>>(),
                )
                .await?;
            let mut labels = HashMap::new();
            labels.insert(format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"), top);
            self.set_content_labels(img.config.digest().as_ref(), &labels)
                .await?;
            if self.put_image(&img.name, &img.target).await? {
                created.push(img.name.clone());
            }
            info!(image = %img.name, digest = %img.target.digest(), "image loaded");
            names.push(img.name.clone());
        }
        Ok(names)
    }

    /// Creates or updates an image record; true if it was new.
    pub(super) async fn put_image(
        &self,
        name: &str,
        target: &Descriptor,
    ) -> Result<bool, RuntimeError> {
        let image = Image {
            name: name.to_string(),
            labels: HashMap::new(),
            target: Some(pb_descriptor(target)),
            created_at: None,
            updated_at: None,
        };
        let mut images = ImagesClient::new(self.channel());
        match images
            .create(self.req(CreateImageRequest {
                image: Some(image.clone()),
                source_date_epoch: None,
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::AlreadyExists => {
                images
                    .update(self.req(UpdateImageRequest {
                        image: Some(image),
                        update_mask: Some(FieldMask {
                            paths: vec!["target".into()],
                        }),
                        source_date_epoch: None,
                    }))
                    .await
                    .map_err(grpc("update image", name))?;
                Ok(false)
            }
            Err(s) => Err(grpc("create image", name)(s)),
        }
    }

    /// Lists runlet's images.
    pub async fn list_images(&self) -> Result<Vec<ImageInfo>, RuntimeError> {
        let images = ImagesClient::new(self.channel())
            .list(self.req(ListImagesRequest { filters: vec![] }))
            .await
            .map_err(grpc("list images", ""))?
            .into_inner()
            .images;
        let mut out = Vec::new();
        for img in images {
            let target = img.target.unwrap_or_default();
            // Manifest plus compressed layers, as `docker images` shows.
            let size = match self.image_config(&img.name).await {
                Ok(stored) => stored.size,
                Err(_) => target.size,
            };
            out.push(ImageInfo {
                name: img.name,
                digest: target.digest,
                size,
                labels: img.labels,
                ..Default::default()
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes an image record; its content and snapshots are garbage-collected before this returns.
    pub async fn remove_image(&self, name: &str) -> Result<(), RuntimeError> {
        ImagesClient::new(self.channel())
            .delete(self.req(DeleteImageRequest {
                name: name.to_string(),
                sync: true,
                target: None,
            }))
            .await
            .map_err(image_grpc("remove image", name))?;
        Ok(())
    }

    /// The manifest image `name` resolves to, as stored: the record's target, or the
    /// linux/amd64 manifest of the index it names (the only one of an index runlet keeps
    /// whole). What the image runs from, and what `runlet image push` sends.
    pub async fn stored_manifest(&self, name: &str) -> Result<StoredManifest, RuntimeError> {
        let img = ImagesClient::new(self.channel())
            .get(self.req(GetImageRequest {
                name: name.to_string(),
            }))
            .await
            .map_err(image_grpc("get image", name))?
            .into_inner()
            .image
            .ok_or_else(|| RuntimeError::ImageNotFound {
                name: name.to_string(),
            })?;
        let target = img.target.unwrap_or_default();
        let (mut media_type, mut digest) = (target.media_type, target.digest);
        let bad = |detail: String| bad_image(name, detail);
        for _ in 0..3 {
            let bytes = self.read_blob(&digest).await?;
            match doc_kind(&media_type, &bytes) {
                DocKind::Manifest => {
                    return Ok(StoredManifest {
                        media_type,
                        digest,
                        bytes,
                    })
                }
                DocKind::Index => {
                    let index: ImageIndex =
                        serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
                    let chosen = index
                        .manifests()
                        .iter()
                        .find(|d| is_amd64_entry(d))
                        .ok_or_else(|| bad("the image index has no linux/amd64 manifest".into()))?;
                    media_type = chosen.media_type().to_string();
                    digest = chosen.digest().to_string();
                }
                DocKind::Schema1 => return Err(bad("a schema-1 manifest in the store".into())),
            }
        }
        Err(bad("image indexes nest too deep".into()))
    }

    /// Reads an image's manifest and config (choosing linux/amd64 from an index).
    async fn image_config(&self, name: &str) -> Result<StoredImage, RuntimeError> {
        let StoredManifest { digest, bytes, .. } = self.stored_manifest(name).await?;
        let manifest: ImageManifest =
            serde_json::from_slice(&bytes).map_err(|e| bad_image(name, e.to_string()))?;
        let config = config::parse(&self.read_blob(manifest.config().digest().as_ref()).await?)
            .map_err(|e| bad_image(name, e.to_string()))?;
        let layers = manifest.layers().clone();
        let size = layers.iter().map(|l| l.size() as i64).sum::<i64>() + bytes.len() as i64;
        Ok(StoredImage {
            digest,
            config,
            layers,
            size,
        })
    }

    /// The numeric user, group and supplementary groups to run an image as: its `User`
    /// resolved with the image's own /etc/passwd and /etc/group as Docker does
    /// ([`passwd::resolve`]; numeric users too, for their primary and supplementary groups).
    /// Shared by services and jobs.
    pub async fn image_user(&self, image: &ImageInfo) -> Result<ImageUser, ImageUserError> {
        let field = image.config.user.clone().unwrap_or_default();
        let files = self
            .read_image_files(image, &["/etc/passwd", "/etc/group"])
            .await?;
        let text = |i: usize| {
            files
                .get(i)
                .cloned()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        Ok(passwd::resolve(
            &image.name,
            &field,
            text(0).as_deref(),
            text(1).as_deref(),
        )?)
    }

    /// Reads small files (e.g. /etc/passwd) from an image's unpacked root filesystem, without
    /// mounting it: a read-only view's mounts name the layer directories, searched top first
    /// ([`passwd::read_in_layers`]: regular files of at most 4 MiB, symbolic links kept
    /// inside the layer).
    pub async fn read_image_files(
        &self,
        image: &ImageInfo,
        paths: &[&str],
    ) -> Result<Vec<Option<Vec<u8>>>, RuntimeError> {
        let key = format!("runlet-view-{}", crate::util::random_suffix(10));
        let mut snaps = SnapshotsClient::new(self.channel());
        let mounts = snaps
            .view(self.req(ViewSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.clone(),
                parent: image.chain_id.clone(),
                labels: HashMap::new(),
            }))
            .await
            .map_err(grpc("view snapshot", &image.chain_id))?
            .into_inner()
            .mounts;
        let mut dirs: Vec<std::path::PathBuf> = Vec::new();
        for m in &mounts {
            if m.r#type == "bind" {
                dirs.push(m.source.clone().into());
            }
            for o in &m.options {
                if let Some(l) = o.strip_prefix("lowerdir=") {
                    dirs.extend(l.split(':').map(std::path::PathBuf::from));
                }
            }
        }
        tracing::debug!(?mounts, ?dirs, "image view");
        let out = paths
            .iter()
            .map(|p| passwd::read_in_layers(&dirs, p))
            .collect();
        let _ = snaps
            .remove(self.req(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key,
            }))
            .await;
        Ok(out)
    }

    /// Looks an image up, unpacking its layers if its snapshot is missing.
    pub(super) async fn resolve(&self, name: &str) -> Result<ImageInfo, RuntimeError> {
        let StoredImage {
            digest,
            config,
            layers,
            size,
        } = self.image_config(name).await?;
        let diff_ids = config.rootfs().diff_ids().clone();
        if diff_ids.len() != layers.len() {
            return Err(RuntimeError::Other {
                op: "read image",
                id: name.to_string(),
                detail: "layer count does not match the config's diff_ids".into(),
            });
        }
        let chains = chain_ids(&diff_ids);
        let top = chains.last().cloned().unwrap_or_default();
        if !self.snapshot_exists(&top).await? {
            let lease = self.lease("unpack", Duration::from_secs(3600)).await?;
            let r = self
                .unpack(
                    &lease,
                    &layers.into_iter().zip(diff_ids).collect::<Vec<_>>(),
                )
                .await;
            self.release(lease, false).await?;
            r?;
        }
        Ok(ImageInfo {
            name: name.to_string(),
            digest,
            config: RunConfig::from(&config),
            chain_id: top,
            size,
            labels: HashMap::new(),
        })
    }
}
