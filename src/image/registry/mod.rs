//! Pulling images from registries (the Docker Registry HTTP API v2 / OCI distribution spec).
//!
//! The protocol is `oci-client`'s (auth handshake, bearer tokens, blob streams with `Range`);
//! runlet adds what it needs around it: which scheme a registry is reached with
//! ([`transport`]), where credentials come from ([`auth`]), fetching and checking manifests
//! and choosing linux/amd64 from an index ([`remote`], [`plan`]), converting schema-1
//! manifests ([`schema1`]). Writing blobs into
//! containerd's content store, unpacking and registering the image is the containerd side's
//! (`runtime::containerd::pull`), which reads blobs through [`BlobFetch`].

pub mod auth;
pub mod plan;
pub mod push;
pub mod remote;
pub mod schema1;
pub mod transport;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;
use thiserror::Error;

use crate::runtime::RuntimeError;

pub use plan::{Documents, PullPlan, RemoteLayer};
pub use remote::Remote;

/// When an image named by `serve`, `job execute` or the daemon is pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PullPolicy {
    /// Pull only when the image is not in the store (the default).
    #[default]
    Missing,
    /// Pull every time, so a moved tag is followed.
    Always,
    /// Never pull: the image must have been loaded or pulled before.
    Never,
}

/// How registries are reached: which may be spoken to over plain HTTP, extra CAs, and
/// where credentials are looked for.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// `HOST:PORT` (or `HOST`) registries reached over plain HTTP (`--insecure-registry`).
    pub insecure: Vec<String>,
    /// PEM files of CAs trusted besides the system roots (`--registry-ca`).
    pub ca_files: Vec<PathBuf>,
    /// A containers-auth.json / docker config file with `auths` (`--registry-auth-file`,
    /// `REGISTRY_AUTH_FILE`), searched before the docker config.
    pub auth_file: Option<PathBuf>,
}

/// Why a pull failed. Every message names the image or registry concerned; none carries a
/// credential.
#[derive(Debug, Error)]
pub enum RegistryError {
    #[error("image {reference} not found in registry {registry} ({detail})")]
    NotFound {
        reference: String,
        registry: String,
        detail: String,
    },
    #[error("registry {registry} refused access to {reference} ({detail}); credentials looked for in: {looked}")]
    Unauthorized {
        reference: String,
        registry: String,
        detail: String,
        looked: String,
    },
    #[error(
        "blob {digest} of {reference} does not match its digest ({detail}); nothing was stored"
    )]
    DigestMismatch {
        reference: String,
        digest: String,
        detail: String,
    },
    #[error("image {reference}: {detail}")]
    Unsupported { reference: String, detail: String },
    #[error("image {reference} has no linux/amd64 variant (found: {found}); runlet runs linux/amd64 images only (contract IMG-1, IMG-3)")]
    NoAmd64 { reference: String, found: String },
    #[error("pulling {reference} from registry {registry}: {detail}")]
    Transport {
        reference: String,
        registry: String,
        detail: String,
    },
    #[error("TLS: certificate not trusted for {registry} (use --registry-ca FILE with the CA that signed it): {detail}")]
    Untrusted { registry: String, detail: String },
    #[error("TLS: handshake with {registry} failed: {detail}")]
    Tls { registry: String, detail: String },
    #[error("reading {path}")]
    Config {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("credentials: {0}")]
    Credentials(String),
    #[error(transparent)]
    Reference(#[from] super::reference::ReferenceError),
    #[error(transparent)]
    Store(#[from] RuntimeError),
}

/// A blob's bytes, as they arrive.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, RegistryError>> + Send>>;
/// A blob opened at an offset: where its stream starts (the offset asked for, or 0 when the
/// registry ignored the `Range`) and the stream.
pub type Opened = (u64, ByteStream);
/// What [`BlobFetch::fetch`] returns.
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<Opened, RegistryError>> + Send + 'a>>;

/// Where the containerd side reads blobs from: a registry, or a test's script.
pub trait BlobFetch: Send + Sync {
    /// Opens blob `digest` from byte `offset` (0 for the whole blob).
    fn fetch<'a>(&'a self, digest: &'a str, size: u64, offset: u64) -> FetchFuture<'a>;
    /// The image reference, for error messages.
    fn reference(&self) -> &str;
}

/// Reports what a pull does, layer by layer.
pub trait PullProgress: Send + Sync {
    /// A layer is being fetched (`from` > 0 when an earlier, interrupted pull is resumed).
    fn fetching(&self, digest: &str, size: u64, from: u64);
    /// `bytes` more of a layer arrived.
    fn advanced(&self, _digest: &str, _bytes: u64) {}
    /// A layer is in the store: `fetched` bytes came over the network (0 when it was
    /// already there).
    fn stored(&self, digest: &str, size: u64, fetched: u64);
}

/// A progress sink that reports nothing (documents runlet writes from memory).
pub struct NoPullProgress;
impl PullProgress for NoPullProgress {
    fn fetching(&self, _: &str, _: u64, _: u64) {}
    fn stored(&self, _: &str, _: u64, _: u64) {}
}

/// Progress as log lines, one when a layer starts and one when it is stored (the daemon's:
/// a create or update that pulls shows in its log layer by layer).
pub struct LogPullProgress<'a> {
    pub image: &'a str,
}
impl PullProgress for LogPullProgress<'_> {
    fn fetching(&self, digest: &str, size: u64, from: u64) {
        tracing::info!(image = %self.image, layer = %digest, size, from, "pulling layer");
    }
    fn stored(&self, digest: &str, size: u64, fetched: u64) {
        tracing::info!(image = %self.image, layer = %digest, size, fetched, "layer stored");
    }
}

/// Pulls `name` (any spelling; normalised here) into the store: connect, plan, store.
pub async fn pull(
    store: &crate::runtime::containerd::Containerd,
    opts: &RegistryOptions,
    name: &str,
    progress: &dyn PullProgress,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<crate::runtime::containerd::Pulled, RegistryError> {
    let name = super::reference::normalize(name)?;
    let remote = Remote::connect(opts, &name, oci_client::RegistryOperation::Pull).await?;
    let plan = plan::plan(&remote, &name).await?;
    store.pull(&plan, &remote, progress, cancel).await
}

/// Pushes image `name` from the store to the registry of `target` (`name` when `None`),
/// under that reference.
pub async fn push_image(
    store: &crate::runtime::containerd::Containerd,
    opts: &RegistryOptions,
    name: &str,
    target: Option<&str>,
    progress: &dyn push::PushProgress,
) -> Result<push::Pushed, RegistryError> {
    let name = super::reference::normalize(name)?;
    let target = match target {
        Some(t) => super::reference::normalize(t)?,
        None => name.clone(),
    };
    let manifest = store.stored_manifest(&name).await?;
    let remote = Remote::connect(opts, &target, oci_client::RegistryOperation::Push).await?;
    push::push(&remote, store, &manifest, progress).await
}
