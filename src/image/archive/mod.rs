//! Reading image archives: an OCI image layout in a tar, or a `docker save` tar.
//!
//! Reading happens entirely before anything is written to containerd: every blob is hashed
//! and checked against its name ([`scan`]), every manifest and config is parsed and planned
//! ([`oci`], [`docker`], [`plan`]), every layer is decompressed and its diffID checked against
//! the image config, and every file name in a layer is checked to be UTF-8 (contract NAME-1;
//! [`layers`]). Only an archive that passes all of that becomes an [`ImportPlan`]; a corrupt,
//! truncated or foreign-platform archive is refused with an error naming what is wrong, and
//! nothing has been created.
//!
//! Memory stays bounded: blobs are not held in memory, only their offsets in the tar file
//! (JSON documents, which are small, are the exception).

mod docker;
mod layers;
mod oci;
mod plan;
#[cfg(test)]
mod proptests;
mod scan;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::Descriptor;
use thiserror::Error;

use super::reference;

/// Largest JSON document (index, manifest, config) read into memory.
const MAX_JSON: u64 = 8 << 20;

/// Why an archive was refused.
#[derive(Debug, Error)]
pub enum ArchiveError {
    #[error("reading image archive {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("image archive {path} is corrupt or truncated: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "image archive {path}: blob {name} does not match its digest (content hashes to {actual})"
    )]
    DigestMismatch {
        path: PathBuf,
        name: String,
        actual: String,
    },
    #[error("image archive {path} is neither an OCI image layout (index.json) nor a docker save archive (manifest.json)")]
    UnknownFormat { path: PathBuf },
    #[error("image archive {path} references blob {digest}, which is not in the archive")]
    MissingBlob { path: PathBuf, digest: String },
    #[error("image archive {path}: {what} is not valid JSON")]
    BadJson {
        path: PathBuf,
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("image archive {path}: unsupported media type {media_type} for {what}")]
    UnsupportedMediaType {
        path: PathBuf,
        what: String,
        media_type: String,
    },
    #[error("image archive {path}: image {image} has no linux/amd64 variant (found: {found}); runlet runs linux/amd64 images only (contract IMG-1, IMG-3)")]
    NoAmd64 {
        path: PathBuf,
        image: String,
        found: String,
    },
    #[error("image archive {path}: layer {layer} contains a file name that is not UTF-8 ({name}); such images are refused (contract NAME-1)")]
    NonUtf8Name {
        path: PathBuf,
        layer: String,
        name: String,
    },
    #[error("image archive {path}: layer {layer} uncompresses to {actual}, but the image config says {expected}")]
    DiffIdMismatch {
        path: PathBuf,
        layer: String,
        expected: String,
        actual: String,
    },
    #[error("image archive {path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
    #[error("image archive {path} names no image; give one with --tag NAME")]
    NoName { path: PathBuf },
    #[error(transparent)]
    Reference(#[from] reference::ReferenceError),
}

/// Where a blob's bytes come from.
#[derive(Debug, Clone)]
pub enum BlobSource {
    /// `size` bytes at `offset` in the archive file.
    Archive { offset: u64, size: u64 },
    /// A document runlet wrote itself (the manifest synthesised for a docker archive).
    Memory(Vec<u8>),
}

/// A blob to store, with the GC labels that keep its children alive.
#[derive(Debug, Clone)]
pub struct PlannedBlob {
    pub digest: String,
    pub size: u64,
    pub source: BlobSource,
    pub labels: HashMap<String, String>,
}

/// A layer: its (possibly compressed) descriptor and the digest of its uncompressed tar.
#[derive(Debug, Clone)]
pub struct PlannedLayer {
    pub desc: Descriptor,
    pub diff_id: String,
}

/// One image of the archive, resolved to its linux/amd64 manifest.
#[derive(Debug, Clone)]
pub struct PlannedImage {
    /// Normalised name (`docker.io/library/app:tag`).
    pub name: String,
    /// What the image record points at: the linux/amd64 manifest.
    pub target: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<PlannedLayer>,
}

/// Everything needed to import an archive, checked and ready.
#[derive(Debug, Clone)]
pub struct ImportPlan {
    pub path: PathBuf,
    /// Children before parents (layers, config, manifest), deduplicated.
    pub blobs: Vec<PlannedBlob>,
    pub images: Vec<PlannedImage>,
}

impl ImportPlan {
    pub fn total_bytes(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum()
    }
}

/// Receives progress reports while an archive is read.
pub trait Progress {
    fn step(&mut self, what: &str, done: u64, total: u64);
}

/// A progress sink that reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {
    fn step(&mut self, _: &str, _: u64, _: u64) {}
}

/// Reads and checks `path`. `tag` names the image when the archive does not (or renames it
/// when it holds exactly one image).
pub fn plan_import(
    path: &Path,
    tag: Option<&str>,
    progress: &mut dyn Progress,
) -> Result<ImportPlan, ArchiveError> {
    let scanned = scan::scan(path, progress)?;
    let mut plan = if scanned.docs.contains_key("index.json") {
        oci::plan(path, &scanned, tag)?
    } else if scanned.docs.contains_key("manifest.json") {
        docker::plan(path, &scanned, tag)?
    } else {
        return Err(ArchiveError::UnknownFormat {
            path: path.to_path_buf(),
        });
    };
    layers::verify(&mut plan, progress)?;
    Ok(plan)
}

/// Opens a planned blob for streaming into the content store.
pub fn blob_reader(
    plan: &ImportPlan,
    blob: &PlannedBlob,
) -> Result<Box<dyn Read + Send>, ArchiveError> {
    match &blob.source {
        BlobSource::Archive { offset, size } => {
            Ok(Box::new(scan::open_blob(&plan.path, *offset, *size)?))
        }
        BlobSource::Memory(b) => Ok(Box::new(io::Cursor::new(b.clone()))),
    }
}
