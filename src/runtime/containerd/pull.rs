//! Pulling into the store: layers stream from a [`BlobFetch`] into the content store (at
//! most four at a time), each under an ingest ref named by its digest so that a pull killed
//! half-way resumes where it stopped (`Range`); containerd checks every blob against its
//! digest when it is committed. Blobs already present are skipped. Then the documents are
//! written, the layers unpacked (the archive import's path) and the image record created,
//! last. Everything happens under a lease: a failure or a cancellation (Ctrl-C) removes
//! the image record if this pull made it and releases the lease with a synchronous garbage
//! collection, so nothing is left.

use std::collections::HashMap;
use std::time::Duration;

use bytes::BytesMut;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::{AbortRequest, WriteAction, WriteContentRequest};
use containerd_client::tonic::Code;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::client::{grpc, Containerd, SNAPSHOTTER};
use super::leases::Held;
use super::snapshots::{layer_chains, top_chain};
use super::Lease;
use crate::image::registry::plan::DocBlob;
use crate::image::registry::{
    BlobFetch, ByteStream, Documents, FetchFuture, NoPullProgress, PullPlan, PullProgress,
    RegistryError, RemoteLayer,
};
use crate::image::ImageInfo;
use crate::runtime::RuntimeError;

/// Layers fetched at the same time.
const PARALLEL: usize = 4;
/// Bytes gathered before one write message.
const CHUNK: usize = 1 << 20;
/// How long a lease (and so a killed pull's partial blobs) outlives its pull.
const LEASE_TTL: Duration = Duration::from_secs(3600);

/// One layer being stored.
type LayerFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, RegistryError>> + Send + 'a>>;

/// What a pull did.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub name: String,
    pub digest: String,
    /// Bytes of the image (layers and documents).
    pub size: u64,
    /// Bytes that came over the network.
    pub fetched: u64,
}

fn other(op: &'static str, id: &str, detail: String) -> RegistryError {
    RegistryError::Store(RuntimeError::Other {
        op,
        id: id.to_string(),
        detail,
    })
}

impl Containerd {
    /// Stores the image `plan` describes, reading blobs from `fetch`.
    pub async fn pull(
        &self,
        plan: &PullPlan,
        fetch: &dyn BlobFetch,
        progress: &dyn PullProgress,
        cancel: &CancellationToken,
    ) -> Result<Pulled, RegistryError> {
        let lease = self.lease("pull", LEASE_TTL).await?;
        let mut created = false;
        let result = tokio::select! {
            r = self.pull_under(plan, &lease, fetch, progress, &mut created) => r,
            () = cancel.cancelled() => Err(other("pull", &plan.name, "interrupted".into())),
        };
        if result.is_err() && created {
            let _ = self.remove_image(&plan.name).await;
        }
        self.release(lease, result.is_err()).await?;
        result
    }

    async fn pull_under(
        &self,
        plan: &PullPlan,
        lease: &Lease,
        fetch: &dyn BlobFetch,
        progress: &dyn PullProgress,
        created: &mut bool,
    ) -> Result<Pulled, RegistryError> {
        let (fetched, top, docs, target) = match &plan.documents {
            Documents::Ready { docs, target } => {
                self.store_docs(lease, &plan.name, docs).await?;
                let layers: Vec<_> = plan
                    .layers
                    .iter()
                    .map(|l| (l.desc.clone(), l.diff_id.clone()))
                    .collect();
                let (fetched, top) = self
                    .store_and_unpack(plan, lease, &layers, fetch, progress)
                    .await?;
                (fetched, top, docs.clone(), (**target).clone())
            }
            Documents::Schema1(s1) => {
                // The diff_ids come from the unpack, so it waits for every layer; the
                // documents come after it.
                let fetched: Vec<u64> =
                    futures::stream::iter(self.layer_stores(plan, lease, fetch, progress))
                        .buffer_unordered(PARALLEL)
                        .try_collect()
                        .await?;
                let descs: Vec<_> = plan.layers.iter().map(|l| l.desc.clone()).collect();
                let (top, diff_ids) = self.unpack_discovering(lease, &descs).await?;
                for (l, d) in descs.iter().zip(&diff_ids) {
                    let mut labels = HashMap::new();
                    labels.insert("containerd.io/uncompressed".to_string(), d.clone());
                    self.set_content_labels(l.digest().as_ref(), &labels)
                        .await?;
                }
                let (docs, target) = s1.documents(&plan.name, &descs, &diff_ids)?;
                self.store_docs(lease, &plan.name, &docs).await?;
                (fetched.iter().sum(), top, docs, target)
            }
        };
        let mut labels = HashMap::new();
        labels.insert(format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"), top);
        if let Some(config) = docs.first() {
            self.set_content_labels(config.desc.digest().as_ref(), &labels)
                .await?;
        }
        *created = self.put_image(&plan.name, &target).await?;
        info!(image = %plan.name, digest = %target.digest(), "image pulled");
        Ok(Pulled {
            name: plan.name.clone(),
            digest: target.digest().to_string(),
            size: plan.total_bytes(),
            fetched,
        })
    }

    /// One future per layer that stores it (see [`Self::store_blob`]). Boxed, so the
    /// stream's type names no closure over borrowed arguments (which would make the future
    /// not `Send` for every lifetime, as the daemon needs).
    fn layer_stores<'a>(
        &'a self,
        plan: &'a PullPlan,
        lease: &'a Lease,
        fetch: &'a dyn BlobFetch,
        progress: &'a dyn PullProgress,
    ) -> Vec<LayerFuture<'a>> {
        plan.layers
            .iter()
            .map(|l: &RemoteLayer| -> LayerFuture<'a> {
                let digest = l.desc.digest().to_string();
                Box::pin(async move {
                    self.store_blob(lease, &digest, l.desc.size(), &l.labels, fetch, progress)
                        .await
                })
            })
            .collect()
    }

    /// Stores the layers, at most [`PARALLEL`] at a time, and unpacks each as soon as it
    /// and every layer below it are stored, as containerd's own pull does: the unpacking
    /// of the lower layers overlaps the fetching of the upper ones. Returns the bytes
    /// fetched and the top chain ID.
    async fn store_and_unpack(
        &self,
        plan: &PullPlan,
        lease: &Lease,
        layers: &[(oci_spec::image::Descriptor, String)],
        fetch: &dyn BlobFetch,
        progress: &dyn PullProgress,
    ) -> Result<(u64, String), RegistryError> {
        let chains = layer_chains(layers);
        // One message per stored layer, bottom first (`buffered` yields in order).
        let (stored_tx, mut stored_rx) = mpsc::channel::<()>(layers.len().max(1));
        let stores = self.layer_stores(plan, lease, fetch, progress);
        let storing = async move {
            let mut stored = futures::stream::iter(stores).buffered(PARALLEL);
            let mut fetched = 0;
            while let Some(n) = stored.next().await {
                fetched += n?;
                let _ = stored_tx.send(()).await;
            }
            Ok::<u64, RegistryError>(fetched)
        };
        let unpacking = async {
            for i in 0..layers.len() {
                if stored_rx.recv().await.is_none() {
                    // The storing failed; its error is the one returned.
                    std::future::pending::<()>().await;
                }
                self.unpack_layer(lease, layers, &chains, i).await?;
            }
            Ok::<(), RegistryError>(())
        };
        let (fetched, ()) = tokio::try_join!(storing, unpacking)?;
        Ok((fetched, top_chain(&chains)?))
    }

    /// Documents runlet holds in memory into the content store, children first.
    async fn store_docs(
        &self,
        lease: &Lease,
        name: &str,
        docs: &[DocBlob],
    ) -> Result<(), RegistryError> {
        for d in docs {
            let digest = d.desc.digest().to_string();
            let doc = Doc {
                bytes: &d.bytes,
                reference: name,
            };
            self.store_blob(
                lease,
                &digest,
                d.bytes.len() as u64,
                &d.labels,
                &doc,
                &NoPullProgress,
            )
            .await?;
        }
        Ok(())
    }

    /// One blob into the content store; returns the bytes fetched.
    async fn store_blob(
        &self,
        lease: &Lease,
        digest: &str,
        size: u64,
        labels: &HashMap<String, String>,
        fetch: &dyn BlobFetch,
        progress: &dyn PullProgress,
    ) -> Result<u64, RegistryError> {
        // Held before it is looked for: a blob found present may be referenced only by an
        // image someone removes meanwhile, and garbage collection would take it from under
        // this pull (then "content update ...: not found", or a layer missing at unpack).
        self.hold(lease, Held::Content, digest).await?;
        // Another pull may hold the ingest of the same blob: wait for it.
        for _ in 0..1200 {
            if self.content_exists(digest).await? {
                self.set_content_labels(digest, labels).await?;
                progress.stored(digest, size, 0);
                return Ok(0);
            }
            match self
                .ingest(lease, digest, size, labels, fetch, progress)
                .await
            {
                Err(Ingest::Locked) => tokio::time::sleep(Duration::from_millis(250)).await,
                Err(Ingest::Failed(e)) => return Err(e),
                Ok(n) => {
                    progress.stored(digest, size, n);
                    return Ok(n);
                }
            }
        }
        Err(other(
            "content write",
            digest,
            "another writer holds this blob's ingest".into(),
        ))
    }

    /// Streams one blob in under the ingest ref `runlet-pull-<digest>`, resuming at what an
    /// earlier writer left.
    async fn ingest(
        &self,
        lease: &Lease,
        digest: &str,
        size: u64,
        labels: &HashMap<String, String>,
        fetch: &dyn BlobFetch,
        progress: &dyn PullProgress,
    ) -> Result<u64, Ingest> {
        let reference = format!("runlet-pull-{digest}");
        let msg = |action: WriteAction, offset: u64, data: Vec<u8>| WriteContentRequest {
            action: action as i32,
            r#ref: reference.clone(),
            total: size as i64,
            expected: digest.to_string(),
            offset: offset as i64,
            data,
            labels: HashMap::new(),
        };
        let (tx, rx) = mpsc::channel::<WriteContentRequest>(4);
        let _ = tx.send(msg(WriteAction::Stat, 0, Vec::new())).await;
        let mut client = ContentClient::new(self.channel());
        let status = |s: containerd_client::tonic::Status| match s.code() {
            Code::Unavailable | Code::Aborted => Ingest::Locked,
            _ => Ingest::Failed(grpc("content write", digest)(s).into()),
        };
        let mut stream = match client
            .write(self.req_lease(ReceiverStream::new(rx), lease))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::AlreadyExists => return Ok(0),
            Err(s) => return Err(status(s)),
        };
        let offset = match stream.message().await {
            Ok(Some(stat)) => (stat.offset.max(0) as u64).min(size),
            Ok(None) => return Err(Ingest::Locked),
            Err(s) if s.code() == Code::AlreadyExists => return Ok(0),
            Err(s) => return Err(status(s)),
        };
        // Answers come for every message; drain them so the stream never stalls.
        let answers = tokio::spawn(async move {
            let mut last = None;
            loop {
                match stream.message().await {
                    Ok(Some(r)) => last = Some(r),
                    Ok(None) => return Ok(last),
                    Err(s) => return Err(s),
                }
            }
        });
        progress.fetching(digest, size, offset);
        let sent = async {
            let (start, mut body) = fetch.fetch(digest, size, offset).await?;
            let mut pos = start;
            let mut fetched = 0u64;
            let mut buf = BytesMut::with_capacity(CHUNK);
            let closed = || {
                other(
                    "content write",
                    digest,
                    "containerd closed the write stream".into(),
                )
            };
            loop {
                let chunk = body.try_next().await?;
                let end = chunk.is_none();
                if let Some(c) = chunk {
                    fetched += c.len() as u64;
                    progress.advanced(digest, c.len() as u64);
                    buf.extend_from_slice(&c);
                }
                if buf.len() >= CHUNK || (end && !buf.is_empty()) {
                    let data = buf.split().freeze().to_vec();
                    let n = data.len() as u64;
                    tx.send(msg(WriteAction::Write, pos, data))
                        .await
                        .map_err(|_| closed())?;
                    pos += n;
                }
                if end {
                    break;
                }
            }
            let mut commit = msg(WriteAction::Commit, pos, Vec::new());
            commit.labels = labels.clone();
            tx.send(commit).await.map_err(|_| closed())?;
            Ok::<u64, RegistryError>(fetched)
        }
        .await;
        drop(tx);
        let answer = answers
            .await
            .map_err(|e| Ingest::Failed(other("content write", digest, e.to_string())))?;
        let mismatch = |detail: String| RegistryError::DigestMismatch {
            reference: fetch.reference().to_string(),
            digest: digest.to_string(),
            detail,
        };
        match (sent, answer) {
            (Err(e @ RegistryError::DigestMismatch { .. }), _) => {
                self.abort_ingest(&reference).await;
                Err(Ingest::Failed(e))
            }
            (Err(e), _) => Err(Ingest::Failed(e)),
            (Ok(fetched), Ok(Some(last)))
                if last.action == WriteAction::Commit as i32 && last.digest == digest =>
            {
                Ok(fetched)
            }
            (Ok(_), Err(s)) if s.code() == Code::AlreadyExists => Ok(0),
            (Ok(_), Err(s))
                if s.code() == Code::FailedPrecondition || s.code() == Code::InvalidArgument =>
            {
                // containerd refused the commit: the bytes are not the blob the manifest names.
                self.abort_ingest(&reference).await;
                Err(Ingest::Failed(mismatch(s.message().to_string())))
            }
            (Ok(_), Err(s)) => Err(Ingest::Failed(grpc("content write", digest)(s).into())),
            (Ok(_), Ok(_)) => Err(Ingest::Failed(other(
                "content write",
                digest,
                "containerd did not confirm the commit".into(),
            ))),
        }
    }

    async fn abort_ingest(&self, reference: &str) {
        let _ = ContentClient::new(self.channel())
            .abort(self.req(AbortRequest {
                r#ref: reference.to_string(),
            }))
            .await;
    }

    /// The image `name` as `policy` wants it: looked up, pulled when missing, or pulled
    /// every time. `connect` reaches the registry only when a pull is needed.
    pub async fn resolve_or_pull(
        &self,
        name: &str,
        policy: crate::image::registry::PullPolicy,
        opts: &crate::image::registry::RegistryOptions,
        progress: &dyn PullProgress,
        cancel: &CancellationToken,
    ) -> Result<ImageInfo, RegistryError> {
        use crate::image::registry::PullPolicy;
        let pull = match policy {
            PullPolicy::Never => false,
            PullPolicy::Always => true,
            PullPolicy::Missing => match self.resolve(name).await {
                Ok(i) => return Ok(i),
                Err(RuntimeError::ImageNotFound { .. }) => true,
                Err(e) => return Err(e.into()),
            },
        };
        if pull {
            info!(image = %name, "pulling image");
            crate::image::registry::pull(self, opts, name, progress, cancel).await?;
        }
        Ok(self.resolve(name).await?)
    }
}

/// Why one ingest attempt ended without the blob.
enum Ingest {
    /// Another writer holds the ref; try again shortly.
    Locked,
    Failed(RegistryError),
}

/// A document runlet holds in memory, served like a remote blob.
struct Doc<'a> {
    bytes: &'a [u8],
    reference: &'a str,
}

impl BlobFetch for Doc<'_> {
    fn fetch<'a>(&'a self, _: &'a str, _: u64, offset: u64) -> FetchFuture<'a> {
        let rest =
            bytes::Bytes::copy_from_slice(&self.bytes[(offset as usize).min(self.bytes.len())..]);
        Box::pin(async move {
            let stream: ByteStream = Box::pin(futures::stream::once(async move { Ok(rest) }));
            Ok((offset, stream))
        })
    }
    fn reference(&self) -> &str {
        self.reference
    }
}
