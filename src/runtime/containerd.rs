//! The containerd implementation of [`Runtime`], plus image import, listing and removal.
//!
//! Everything lives in runlet's own containerd namespace. containerd 1.6 has no Transfer
//! service, so import and unpack are done here, client-side: blobs are written with
//! `Content.Write` under a lease (so garbage collection cannot take them half-way), the
//! image is registered with `Images.Create`, and layers are unpacked into the overlayfs
//! snapshotter with `Snapshots.Prepare` + `Diff.Apply` + `Snapshots.Commit`.

use std::collections::HashMap;
use std::io::Read;
use std::time::Duration;

use containerd_client::services::v1::container::Runtime as ContainerRuntime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::ViewSnapshotRequest;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::version_client::VersionClient;
use containerd_client::services::v1::{
    ApplyRequest, Container, CreateContainerRequest, CreateImageRequest,
    CreateRequest as LeaseCreateRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteImageRequest, DeleteRequest as LeaseDeleteRequest, DeleteTaskRequest, GetImageRequest,
    Image, InfoRequest, KillRequest, ListContainersRequest, ListImagesRequest, ReadContentRequest,
    StartRequest, UpdateImageRequest, UpdateRequest, WaitRequest, WriteAction, WriteContentRequest,
};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request, Status};
use containerd_client::types::{Descriptor as PbDescriptor, Mount};
use prost_types::FieldMask;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info};

use super::{ContainerInfo, ContainerSpec, ExitStatus, Runtime, RuntimeError};
use crate::image::archive::{self, Descriptor, ImportPlan, Progress};
use crate::image::{chain_ids, ImageInfo};

/// runlet's containerd namespace.
pub const NAMESPACE: &str = "runlet";
pub const SNAPSHOTTER: &str = "overlayfs";
const CHUNK: usize = 1 << 20;

/// A connection to containerd, in runlet's namespace. Cheap to clone (one shared channel).
#[derive(Clone)]
pub struct Containerd {
    channel: Channel,
    address: String,
}

fn grpc(op: &'static str, id: impl Into<String>) -> impl FnOnce(Status) -> RuntimeError {
    let id = id.into();
    move |status| {
        if status.code() == Code::NotFound {
            RuntimeError::NotFound { op, id }
        } else {
            RuntimeError::Grpc {
                op,
                id,
                status: Box::new(status),
            }
        }
    }
}

fn not_found_ok<T>(r: Result<T, RuntimeError>) -> Result<(), RuntimeError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// A lease held while content or snapshots have no other reference; deleted on `release`.
pub struct Lease {
    id: String,
}

impl Containerd {
    /// Connects and checks containerd answers (`Version`).
    pub async fn connect(address: &str) -> Result<Self, RuntimeError> {
        let fail = |detail: String| RuntimeError::Connect {
            address: address.to_string(),
            detail,
        };
        let path = address
            .strip_prefix("unix://")
            .unwrap_or(address)
            .to_string();
        let channel =
            tokio::time::timeout(Duration::from_secs(3), containerd_client::connect(&path))
                .await
                .map_err(|_| fail("timed out".into()))?
                .map_err(|e| fail(format!("{e}")))?;
        let c = Containerd {
            channel,
            address: address.to_string(),
        };
        let v = tokio::time::timeout(
            Duration::from_secs(3),
            VersionClient::new(c.channel.clone()).version(()),
        )
        .await
        .map_err(|_| fail("timed out asking for its version".into()))?
        .map_err(|e| fail(e.message().to_string()))?;
        debug!(version = %v.get_ref().version, address, "connected to containerd");
        Ok(c)
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut().insert(
            "containerd-namespace",
            NAMESPACE.parse().expect("static ascii"),
        );
        r
    }

    fn req_lease<T>(&self, msg: T, lease: &Lease) -> Request<T> {
        let mut r = self.req(msg);
        if let Ok(v) = lease.id.parse() {
            r.metadata_mut().insert("containerd-lease", v);
        }
        r
    }

    /// Creates a lease that expires by itself after `ttl` if runlet dies before releasing it.
    pub async fn lease(&self, purpose: &str, ttl: Duration) -> Result<Lease, RuntimeError> {
        let id = format!("runlet-{purpose}-{}", crate::util::random_suffix(10));
        let expire = std::time::SystemTime::now() + ttl;
        let mut labels = HashMap::new();
        labels.insert(
            "containerd.io/gc.expire".to_string(),
            crate::util::rfc3339(expire),
        );
        LeasesClient::new(self.channel.clone())
            .create(self.req(LeaseCreateRequest {
                id: id.clone(),
                labels,
            }))
            .await
            .map_err(grpc("create lease", &id))?;
        Ok(Lease { id })
    }

    /// Deletes a lease; with `sync` garbage collection runs before this returns.
    pub async fn release(&self, lease: Lease, sync: bool) -> Result<(), RuntimeError> {
        not_found_ok(
            LeasesClient::new(self.channel.clone())
                .delete(self.req(LeaseDeleteRequest {
                    id: lease.id.clone(),
                    sync,
                }))
                .await
                .map_err(grpc("delete lease", &lease.id)),
        )
    }

    // ---- content -------------------------------------------------------------------------

    async fn content_exists(&self, digest: &str) -> Result<bool, RuntimeError> {
        match ContentClient::new(self.channel.clone())
            .info(self.req(InfoRequest {
                digest: digest.to_string(),
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(grpc("content info", digest)(s)),
        }
    }

    async fn set_content_labels(
        &self,
        digest: &str,
        labels: &HashMap<String, String>,
    ) -> Result<(), RuntimeError> {
        if labels.is_empty() {
            return Ok(());
        }
        let info = containerd_client::services::v1::Info {
            digest: digest.to_string(),
            labels: labels.clone(),
            ..Default::default()
        };
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        ContentClient::new(self.channel.clone())
            .update(self.req(UpdateRequest {
                info: Some(info),
                update_mask: Some(FieldMask { paths }),
            }))
            .await
            .map_err(grpc("content update", digest))?;
        Ok(())
    }

    /// Streams `size` bytes from `reader` into the content store as `digest`.
    async fn write_blob(
        &self,
        lease: &Lease,
        digest: &str,
        size: u64,
        mut reader: Box<dyn Read + Send>,
        labels: HashMap<String, String>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), RuntimeError> {
        let (tx, rx) = mpsc::channel::<WriteContentRequest>(4);
        let reference = format!(
            "runlet-import-{}-{}",
            digest.trim_start_matches("sha256:"),
            crate::util::random_suffix(6)
        );
        let mut client = ContentClient::new(self.channel.clone());
        let call = client.write(self.req_lease(ReceiverStream::new(rx), lease));
        let digest_s = digest.to_string();
        let reference_s = reference.clone();
        // Reading the file is blocking; do it on a blocking thread and feed the stream.
        let (prog_tx, mut prog_rx) = mpsc::unbounded_channel::<u64>();
        let feeder = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let mut offset = 0u64;
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = reader.read(&mut buf).map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                let msg = WriteContentRequest {
                    action: WriteAction::Write as i32,
                    r#ref: reference_s.clone(),
                    total: size as i64,
                    expected: digest_s.clone(),
                    offset: offset as i64,
                    data: buf[..n].to_vec(),
                    labels: HashMap::new(),
                };
                offset += n as u64;
                if tx.blocking_send(msg).is_err() {
                    return Err("containerd closed the write stream".into());
                }
                let _ = prog_tx.send(offset);
            }
            let commit = WriteContentRequest {
                action: WriteAction::Commit as i32,
                r#ref: reference_s,
                total: size as i64,
                expected: digest_s,
                offset: offset as i64,
                data: Vec::new(),
                labels,
            };
            tx.blocking_send(commit)
                .map_err(|_| "containerd closed the write stream".to_string())
        });
        let mut stream = match call.await {
            Ok(r) => r.into_inner(),
            // Another import wrote the same blob first: it is there, which is all we need.
            Err(s) if s.code() == Code::AlreadyExists => {
                feeder.abort();
                return Ok(());
            }
            Err(s) => return Err(grpc("content write", digest)(s)),
        };
        let mut last_digest = String::new();
        loop {
            tokio::select! {
                Some(done) = prog_rx.recv() => progress(done),
                msg = stream.message() => match msg {
                    Ok(Some(resp)) => {
                        if resp.action == WriteAction::Commit as i32 {
                            last_digest = resp.digest;
                        }
                    }
                    Ok(None) => break,
                    Err(s) if s.code() == Code::AlreadyExists => { last_digest = digest.to_string(); break }
                    Err(s) => return Err(grpc("content write", digest)(s)),
                }
            }
        }
        match feeder.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if last_digest == digest => debug!(digest, "writer ended early: {e}"),
            Ok(Err(e)) => {
                return Err(RuntimeError::Other {
                    op: "content write",
                    id: digest.to_string(),
                    detail: e,
                })
            }
            Err(e) => {
                return Err(RuntimeError::Other {
                    op: "content write",
                    id: digest.to_string(),
                    detail: e.to_string(),
                })
            }
        }
        if last_digest != digest {
            return Err(RuntimeError::Other {
                op: "content write",
                id: digest.to_string(),
                detail: format!("containerd committed {last_digest:?}, expected {digest}"),
            });
        }
        Ok(())
    }

    async fn read_blob(&self, digest: &str) -> Result<Vec<u8>, RuntimeError> {
        let mut stream = ContentClient::new(self.channel.clone())
            .read(self.req(ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            }))
            .await
            .map_err(grpc("content read", digest))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(grpc("content read", digest))?
        {
            out.extend_from_slice(&chunk.data);
            if out.len() > 16 << 20 {
                return Err(RuntimeError::Other {
                    op: "content read",
                    id: digest.to_string(),
                    detail: "document larger than 16 MiB".into(),
                });
            }
        }
        Ok(out)
    }

    // ---- images --------------------------------------------------------------------------

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
            self.set_content_labels(&img.config.digest, &labels).await?;
            if self.put_image(&img.name, &img.target).await? {
                created.push(img.name.clone());
            }
            info!(image = %img.name, digest = %img.target.digest, "image loaded");
            names.push(img.name.clone());
        }
        Ok(names)
    }

    /// Creates or updates an image record; true if it was new.
    async fn put_image(&self, name: &str, target: &Descriptor) -> Result<bool, RuntimeError> {
        let image = Image {
            name: name.to_string(),
            labels: HashMap::new(),
            target: Some(PbDescriptor {
                media_type: target.media_type.clone(),
                digest: target.digest.clone(),
                size: target.size,
                annotations: HashMap::new(),
            }),
            created_at: None,
            updated_at: None,
        };
        let mut images = ImagesClient::new(self.channel.clone());
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

    async fn snapshot_exists(&self, key: &str) -> Result<bool, RuntimeError> {
        match SnapshotsClient::new(self.channel.clone())
            .stat(self.req(StatSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.to_string(),
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(grpc("stat snapshot", key)(s)),
        }
    }

    /// Unpacks layers into committed snapshots named by chain ID; returns the top chain ID.
    async fn unpack(
        &self,
        lease: &Lease,
        layers: &[(Descriptor, String)],
    ) -> Result<String, RuntimeError> {
        let diff_ids: Vec<String> = layers.iter().map(|(_, d)| d.clone()).collect();
        let chains = chain_ids(&diff_ids);
        let mut snaps = SnapshotsClient::new(self.channel.clone());
        for (i, ((desc, diff_id), chain)) in layers.iter().zip(&chains).enumerate() {
            if self.snapshot_exists(chain).await? {
                continue;
            }
            let parent = if i == 0 {
                String::new()
            } else {
                chains[i - 1].clone()
            };
            let key = format!("extract-{} {chain}", crate::util::random_suffix(8));
            let mounts = snaps
                .prepare(self.req_lease(
                    PrepareSnapshotRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        key: key.clone(),
                        parent,
                        labels: HashMap::new(),
                    },
                    lease,
                ))
                .await
                .map_err(grpc("prepare snapshot", chain))?
                .into_inner()
                .mounts;
            let applied = DiffClient::new(self.channel.clone())
                .apply(self.req_lease(
                    ApplyRequest {
                        diff: Some(PbDescriptor {
                            media_type: desc.media_type.clone(),
                            digest: desc.digest.clone(),
                            size: desc.size,
                            annotations: HashMap::new(),
                        }),
                        mounts,
                        payloads: HashMap::new(),
                        sync_fs: false,
                    },
                    lease,
                ))
                .await;
            let applied = match applied {
                Ok(r) => r.into_inner().applied.map(|d| d.digest).unwrap_or_default(),
                Err(s) => {
                    let _ = snaps
                        .remove(self.req(RemoveSnapshotRequest {
                            snapshotter: SNAPSHOTTER.into(),
                            key: key.clone(),
                        }))
                        .await;
                    return Err(grpc("apply layer", &desc.digest)(s));
                }
            };
            if &applied != diff_id {
                let _ = snaps
                    .remove(self.req(RemoveSnapshotRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        key: key.clone(),
                    }))
                    .await;
                return Err(RuntimeError::Other {
                    op: "apply layer",
                    id: desc.digest.clone(),
                    detail: format!("unpacked to {applied}, expected {diff_id}"),
                });
            }
            match snaps
                .commit(self.req_lease(
                    CommitSnapshotRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        name: chain.clone(),
                        key: key.clone(),
                        labels: HashMap::new(),
                    },
                    lease,
                ))
                .await
            {
                Ok(_) => {}
                Err(s) if s.code() == Code::AlreadyExists => {
                    let _ = snaps
                        .remove(self.req(RemoveSnapshotRequest {
                            snapshotter: SNAPSHOTTER.into(),
                            key,
                        }))
                        .await;
                }
                Err(s) => return Err(grpc("commit snapshot", chain)(s)),
            }
        }
        chains.last().cloned().ok_or_else(|| RuntimeError::Other {
            op: "unpack",
            id: String::new(),
            detail: "image has no layers".into(),
        })
    }

    /// Lists runlet's images.
    pub async fn list_images(&self) -> Result<Vec<ImageInfo>, RuntimeError> {
        let images = ImagesClient::new(self.channel.clone())
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
                Ok((_, _, _, size)) => size,
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
        ImagesClient::new(self.channel.clone())
            .delete(self.req(DeleteImageRequest {
                name: name.to_string(),
                sync: true,
                target: None,
            }))
            .await
            .map_err(|s| {
                if s.code() == Code::NotFound {
                    RuntimeError::ImageNotFound {
                        name: name.to_string(),
                    }
                } else {
                    grpc("remove image", name)(s)
                }
            })?;
        Ok(())
    }

    /// Reads an image's manifest and config (choosing linux/amd64 from an index).
    async fn image_config(
        &self,
        name: &str,
    ) -> Result<(String, archive::ImageConfigFile, Vec<Descriptor>, i64), RuntimeError> {
        let img = ImagesClient::new(self.channel.clone())
            .get(self.req(GetImageRequest {
                name: name.to_string(),
            }))
            .await
            .map_err(|s| {
                if s.code() == Code::NotFound {
                    RuntimeError::ImageNotFound {
                        name: name.to_string(),
                    }
                } else {
                    grpc("get image", name)(s)
                }
            })?
            .into_inner()
            .image
            .ok_or_else(|| RuntimeError::ImageNotFound {
                name: name.to_string(),
            })?;
        let mut target = img.target.unwrap_or_default();
        let bad = |detail: String| RuntimeError::Other {
            op: "read image",
            id: name.to_string(),
            detail,
        };
        for _ in 0..3 {
            let bytes = self.read_blob(&target.digest).await?;
            let v: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
            if let Some(list) = v.get("manifests").and_then(|m| m.as_array()) {
                let chosen = list
                    .iter()
                    .find(|d| {
                        d["platform"]["os"] == "linux" && d["platform"]["architecture"] == "amd64"
                    })
                    .ok_or_else(|| bad("the image index has no linux/amd64 manifest".into()))?;
                target = PbDescriptor {
                    media_type: chosen["mediaType"].as_str().unwrap_or_default().to_string(),
                    digest: chosen["digest"].as_str().unwrap_or_default().to_string(),
                    size: chosen["size"].as_i64().unwrap_or_default(),
                    annotations: HashMap::new(),
                };
                continue;
            }
            let config_digest = v["config"]["digest"]
                .as_str()
                .ok_or_else(|| bad("manifest has no config".into()))?
                .to_string();
            let layers: Vec<Descriptor> =
                serde_json::from_value(v["layers"].clone()).map_err(|e| bad(e.to_string()))?;
            let cfg = archive::parse_config(&self.read_blob(&config_digest).await?)
                .map_err(|e| bad(e.to_string()))?;
            let size = layers.iter().map(|l| l.size).sum::<i64>() + target.size;
            return Ok((target.digest, cfg, layers, size));
        }
        Err(bad("image indexes nest too deep".into()))
    }

    /// Reads small files (e.g. /etc/passwd) from an image's unpacked root filesystem, without
    /// mounting it: a read-only view's mounts name the layer directories, searched top first.
    pub async fn read_image_files(
        &self,
        image: &ImageInfo,
        paths: &[&str],
    ) -> Result<Vec<Option<Vec<u8>>>, RuntimeError> {
        let key = format!("runlet-view-{}", crate::util::random_suffix(10));
        let mut snaps = SnapshotsClient::new(self.channel.clone());
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
            .map(|p| {
                dirs.iter()
                    .find_map(|d| std::fs::read(d.join(p.trim_start_matches('/'))).ok())
                    .filter(|b| b.len() < 4 << 20)
            })
            .collect();
        let _ = snaps
            .remove(self.req(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key,
            }))
            .await;
        Ok(out)
    }

    fn spec_any(spec: &serde_json::Value) -> prost_types::Any {
        prost_types::Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
            value: serde_json::to_vec(spec).unwrap_or_default(),
        }
    }
}

/// Points an overlay rootfs's upperdir and workdir at `dir/upper` and `dir/work`.
fn redirect_upper(mounts: &mut [Mount], dir: &str) {
    for m in mounts.iter_mut().filter(|m| m.r#type == "overlay") {
        for o in m.options.iter_mut() {
            if o.starts_with("upperdir=") {
                *o = format!("upperdir={dir}/upper");
            } else if o.starts_with("workdir=") {
                *o = format!("workdir={dir}/work");
            }
        }
    }
}

impl Runtime for Containerd {
    async fn resolve_image(&self, name: &str) -> Result<ImageInfo, RuntimeError> {
        let (digest, cfg, layers, size) = self.image_config(name).await?;
        let diff_ids = cfg.rootfs.diff_ids.clone();
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
            config: cfg.config.unwrap_or_default(),
            chain_id: top,
            size,
            labels: HashMap::new(),
        })
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<u32, RuntimeError> {
        let id = &spec.id;
        // The container comes first and names its snapshot key: from the moment the
        // snapshot is prepared, the container references it, so garbage collection cannot
        // take it, and no lease (two more metadata writes per container) is needed.
        let result = async {
            let container = Container {
                id: id.clone(),
                labels: spec.labels.clone(),
                image: spec.image.name.clone(),
                runtime: Some(ContainerRuntime {
                    name: "io.containerd.runc.v2".into(),
                    options: None,
                }),
                spec: Some(Self::spec_any(&spec.oci_spec)),
                snapshotter: SNAPSHOTTER.into(),
                snapshot_key: id.clone(),
                ..Default::default()
            };
            ContainersClient::new(self.channel.clone())
                .create(self.req(CreateContainerRequest {
                    container: Some(container),
                }))
                .await
                .map_err(grpc("create container", id))?;
            let mounts: Vec<Mount> = SnapshotsClient::new(self.channel.clone())
                .prepare(self.req(PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: id.clone(),
                    parent: spec.image.chain_id.clone(),
                    labels: HashMap::new(),
                }))
                .await
                .map_err(grpc("prepare snapshot", id))?
                .into_inner()
                .mounts;
            Ok::<_, RuntimeError>(mounts)
        }
        .await;
        let mut mounts = match result {
            Ok(m) => m,
            Err(e) => {
                let _ = self.delete(id).await;
                return Err(e);
            }
        };
        if let Some(dir) = &spec.upper_dir {
            redirect_upper(&mut mounts, dir);
        }
        let created = TasksClient::new(self.channel.clone())
            .create(self.req(CreateTaskRequest {
                container_id: id.clone(),
                rootfs: mounts,
                stdin: String::new(),
                stdout: spec.stdout.clone(),
                stderr: spec.stderr.clone(),
                terminal: false,
                ..Default::default()
            }))
            .await
            .map_err(grpc("create task", id));
        match created {
            Ok(r) => Ok(r.into_inner().pid),
            Err(e) => {
                let _ = self.delete(id).await;
                Err(e)
            }
        }
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        TasksClient::new(self.channel.clone())
            .start(self.req(StartRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
            .map_err(grpc("start task", id))?;
        Ok(())
    }

    async fn wait(&self, id: &str) -> Result<ExitStatus, RuntimeError> {
        let r = TasksClient::new(self.channel.clone())
            .wait(self.req(WaitRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
            .map_err(grpc("wait task", id))?;
        Ok(ExitStatus {
            code: r.into_inner().exit_status,
        })
    }

    async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<(), RuntimeError> {
        TasksClient::new(self.channel.clone())
            .kill(self.req(KillRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                signal,
                all,
            }))
            .await
            .map_err(grpc("kill task", id))?;
        Ok(())
    }

    async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        let mut tasks = TasksClient::new(self.channel.clone());
        match tasks
            .delete(self.req(DeleteTaskRequest {
                container_id: id.to_string(),
            }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            // Still running (1.6 answers FailedPrecondition or Unknown "cannot delete a
            // running process"): kill everything, wait, delete.
            Err(s) if matches!(s.code(), Code::FailedPrecondition | Code::Unknown) => {
                let _ = tasks
                    .kill(self.req(KillRequest {
                        container_id: id.to_string(),
                        exec_id: String::new(),
                        signal: 9,
                        all: true,
                    }))
                    .await;
                let _ = tokio::time::timeout(Duration::from_secs(10), self.wait(id)).await;
                not_found_ok(
                    tasks
                        .delete(self.req(DeleteTaskRequest {
                            container_id: id.to_string(),
                        }))
                        .await
                        .map_err(grpc("delete task", id)),
                )?;
            }
            Err(s) => return Err(grpc("delete task", id)(s)),
        }
        not_found_ok(
            ContainersClient::new(self.channel.clone())
                .delete(self.req(DeleteContainerRequest { id: id.to_string() }))
                .await
                .map_err(grpc("delete container", id)),
        )?;
        not_found_ok(
            SnapshotsClient::new(self.channel.clone())
                .remove(self.req(RemoveSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: id.to_string(),
                }))
                .await
                .map_err(grpc("remove snapshot", id)),
        )
    }

    async fn oom_events(&self) -> Result<mpsc::UnboundedReceiver<String>, RuntimeError> {
        use containerd_client::services::v1::events_client::EventsClient;
        use containerd_client::services::v1::SubscribeRequest;
        use prost::Message;
        let filter = format!("namespace=={NAMESPACE},topic==\"/tasks/oom\"");
        let (tx, rx) = mpsc::unbounded_channel();
        let channel = self.channel.clone();
        // containerd sends the stream's headers only with its first event, so the call
        // itself does not return until then: subscribe in the background.
        tokio::spawn(async move {
            let stream = EventsClient::new(channel)
                .subscribe(SubscribeRequest {
                    filters: vec![filter],
                })
                .await;
            let mut stream = match stream {
                Ok(s) => s.into_inner(),
                Err(e) => {
                    tracing::warn!("subscribing to containerd's OOM events: {}", e.message());
                    return;
                }
            };
            while let Ok(Some(env)) = stream.message().await {
                // The envelope's type_url has no leading '/' in 1.6: decode by topic.
                let Some(any) = env.event else { continue };
                if let Ok(ev) = containerd_client::events::TaskOom::decode(any.value.as_slice()) {
                    if tx.send(ev.container_id).is_err() {
                        break;
                    }
                }
            }
        });
        Ok(rx)
    }

    async fn oom_killed(&self, id: &str) -> bool {
        oom_kills(id) > 0
    }

    async fn list(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let list = ContainersClient::new(self.channel.clone())
            .list(self.req(ListContainersRequest {
                filters: vec![format!("labels.\"{}\"==true", super::labels::MANAGED)],
            }))
            .await
            .map_err(grpc("list containers", ""))?
            .into_inner()
            .containers;
        Ok(list
            .into_iter()
            .map(|c| ContainerInfo {
                id: c.id,
                labels: c.labels,
            })
            .collect())
    }
}

/// The OOM-kill count of container `id`'s memory cgroup (`/runlet/<id>`, the spec's
/// `cgroupsPath`): cgroup v1 `memory.oom_control`, or v2 `memory.events`. The counter
/// survives the process and goes with the cgroup, which runc removes on task delete.
fn oom_kills(id: &str) -> u64 {
    [
        format!("/sys/fs/cgroup/memory/runlet/{id}/memory.oom_control"),
        format!("/sys/fs/cgroup/runlet/{id}/memory.events"),
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .filter_map(|text| parse_oom_kill(&text))
    .max()
    .unwrap_or(0)
}

/// The `oom_kill N` line of `memory.oom_control` (v1) or `memory.events` (v2).
fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kill_counters() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        let v2 = "low 0\nhigh 0\nmax 14\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_oom_kill(v1), Some(2));
        assert_eq!(parse_oom_kill(v2), Some(1));
        assert_eq!(parse_oom_kill("oom_kill_disable 0\nunder_oom 0\n"), None);
        assert_eq!(oom_kills("no-such-container"), 0);
    }
}
