//! Reading image archives: an OCI image layout in a tar, or a `docker save` tar.
//!
//! Reading happens entirely before anything is written to containerd: every blob is hashed
//! and checked against its name, every manifest and config is parsed, every layer is
//! decompressed and its diffID checked against the image config, and every file name in a
//! layer is checked to be UTF-8 (contract NAME-1). Only an archive that passes all of that
//! becomes an [`ImportPlan`]; a corrupt, truncated or foreign-platform archive is refused
//! with an error naming what is wrong, and nothing has been created.
//!
//! Memory stays bounded: blobs are not held in memory, only their offsets in the tar file
//! (JSON documents, which are small, are the exception).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::reference;

pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MT_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// Largest JSON document (index, manifest, config) read into memory.
const MAX_JSON: u64 = 8 << 20;

/// Why an archive was refused.
#[derive(Debug, Error)]
pub enum ArchiveError {
    #[error("cannot read image archive {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
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
    #[error("image archive {path}: {what} is not valid JSON: {source}")]
    BadJson {
        path: PathBuf,
        what: String,
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

/// A content descriptor, as in the OCI image spec.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(rename = "schemaVersion", default)]
    schema_version: u32,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

/// The parts of an image config runlet uses (the `config` object of the OCI image config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct RunConfig {
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
    #[serde(rename = "User", default)]
    pub user: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ImageConfigFile {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<RunConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
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

struct Entry {
    offset: u64,
    size: u64,
    sha256: String,
}

/// Reads and checks `path`. `tag` names the image when the archive does not (or renames it
/// when it holds exactly one image).
pub fn plan_import(
    path: &Path,
    tag: Option<&str>,
    progress: &mut dyn Progress,
) -> Result<ImportPlan, ArchiveError> {
    let io_err = |source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    };
    let corrupt = |detail: String| ArchiveError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let file = File::open(path).map_err(io_err)?;
    let total = file.metadata().map_err(io_err)?.len();

    // Pass 1: index every regular file, hash it, keep small JSON documents.
    let mut entries: HashMap<String, Entry> = HashMap::new();
    let mut json_docs: HashMap<String, Vec<u8>> = HashMap::new();
    let mut ar = tar::Archive::new(file);
    let iter = ar.entries().map_err(|e| corrupt(e.to_string()))?;
    let mut seen_any = false;
    for entry in iter {
        let mut entry = entry.map_err(|e| corrupt(e.to_string()))?;
        seen_any = true;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes())
            .trim_start_matches("./")
            .to_string();
        let offset = entry.raw_file_position();
        let size = entry.size();
        let mut keep_json = name.ends_with(".json")
            || name == "repositories"
            || (name.starts_with("blobs/") && size <= MAX_JSON);
        let mut hasher = Sha256::new();
        let mut kept = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut read = 0u64;
        loop {
            let n = entry
                .read(&mut buf)
                .map_err(|e| corrupt(format!("reading {name}: {e}")))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            // Only JSON documents are kept; a blob that does not start like one is a layer.
            if read == 0
                && name.starts_with("blobs/")
                && buf[..n].iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{')
            {
                keep_json = false;
            }
            if keep_json && read < MAX_JSON {
                kept.extend_from_slice(&buf[..n]);
            }
            read += n as u64;
            progress.step("reading archive", offset + read, total);
        }
        if read != size {
            return Err(corrupt(format!(
                "{name} is cut short: {read} of {size} bytes"
            )));
        }
        let sha = hex::encode(hasher.finalize());
        if let Some(hexname) = name.strip_prefix("blobs/sha256/") {
            if hexname != sha {
                return Err(ArchiveError::DigestMismatch {
                    path: path.to_path_buf(),
                    name,
                    actual: format!("sha256:{sha}"),
                });
            }
        }
        if keep_json && size <= MAX_JSON {
            json_docs.insert(name.clone(), kept);
        }
        entries.insert(
            name,
            Entry {
                offset,
                size,
                sha256: sha,
            },
        );
    }
    if !seen_any {
        return Err(corrupt("no tar entries (empty or not a tar file)".into()));
    }
    // A tar ends with two zero blocks; their absence means the file was cut.
    check_tar_end(path, total)?;

    let mut plan = if json_docs.contains_key("index.json") {
        plan_oci(path, &entries, &json_docs, tag)?
    } else if json_docs.contains_key("manifest.json") {
        plan_docker(path, &entries, &json_docs, tag)?
    } else {
        return Err(ArchiveError::UnknownFormat {
            path: path.to_path_buf(),
        });
    };
    verify_layers(&mut plan, progress)?;
    Ok(plan)
}

fn check_tar_end(path: &Path, total: u64) -> Result<(), ArchiveError> {
    let corrupt = |detail: String| ArchiveError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    if total < 1024 || !total.is_multiple_of(512) {
        return Err(corrupt(format!(
            "size {total} is not a whole number of 512-byte tar blocks"
        )));
    }
    let mut f = File::open(path).map_err(|source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut tail = [0u8; 1024];
    f.seek(SeekFrom::End(-1024))
        .and_then(|_| f.read_exact(&mut tail))
        .map_err(|source| ArchiveError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if tail.iter().any(|&b| b != 0) {
        return Err(corrupt(
            "the end-of-archive marker is missing (truncated?)".into(),
        ));
    }
    Ok(())
}

fn parse<'a, T: Deserialize<'a>>(
    path: &Path,
    what: &str,
    bytes: &'a [u8],
) -> Result<T, ArchiveError> {
    serde_json::from_slice(bytes).map_err(|source| ArchiveError::BadJson {
        path: path.to_path_buf(),
        what: what.to_string(),
        source,
    })
}

fn blob_name(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

fn is_amd64(p: &Option<Platform>) -> bool {
    p.as_ref()
        .map(|p| p.os == "linux" && p.architecture == "amd64")
        .unwrap_or(false)
}

fn describe_platforms(ds: &[Descriptor]) -> String {
    let v: Vec<String> = ds
        .iter()
        .map(|d| {
            d.platform
                .as_ref()
                .map(|p| format!("{}/{}", p.os, p.architecture))
                .unwrap_or_else(|| "unspecified".into())
        })
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

struct Builder<'a> {
    path: &'a Path,
    entries: &'a HashMap<String, Entry>,
    docs: &'a HashMap<String, Vec<u8>>,
    blobs: Vec<PlannedBlob>,
}

impl<'a> Builder<'a> {
    fn doc(&self, digest: &str) -> Result<&'a [u8], ArchiveError> {
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
        let name = blob_name(&desc.digest);
        let e = self
            .entries
            .get(&name)
            .ok_or_else(|| ArchiveError::MissingBlob {
                path: self.path.to_path_buf(),
                digest: desc.digest.clone(),
            })?;
        if e.size as i64 != desc.size {
            return Err(ArchiveError::Invalid {
                path: self.path.to_path_buf(),
                detail: format!(
                    "blob {} is {} bytes but its descriptor says {}",
                    desc.digest, e.size, desc.size
                ),
            });
        }
        self.push(PlannedBlob {
            digest: desc.digest.clone(),
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

    /// Adds a manifest's config and layers (children first) and returns the planned image parts.
    fn add_manifest(
        &mut self,
        name: &str,
        mdesc: &Descriptor,
        manifest_bytes: Option<Vec<u8>>,
    ) -> Result<PlannedImage, ArchiveError> {
        let bytes: Vec<u8> = match &manifest_bytes {
            Some(b) => b.clone(),
            None => self.doc(&mdesc.digest)?.to_vec(),
        };
        let m: Manifest = parse(self.path, &format!("manifest {}", mdesc.digest), &bytes)?;
        if m.schema_version == 1 || mdesc.media_type == MT_DOCKER_SCHEMA1 {
            return Err(ArchiveError::UnsupportedMediaType {
                path: self.path.to_path_buf(),
                what: format!("manifest {} (Docker schema 1 is deprecated; re-save the image with a current docker)", mdesc.digest),
                media_type: MT_DOCKER_SCHEMA1.into(),
            });
        }
        let config = m.config.clone().ok_or_else(|| ArchiveError::Invalid {
            path: self.path.to_path_buf(),
            detail: format!("manifest {} has no config", mdesc.digest),
        })?;
        let cfg: ImageConfigFile = parse(
            self.path,
            &format!("image config {}", config.digest),
            self.doc(&config.digest)?,
        )?;
        if cfg.os != "linux" || cfg.architecture != "amd64" {
            return Err(ArchiveError::NoAmd64 {
                path: self.path.to_path_buf(),
                image: name.to_string(),
                found: format!("{}/{}", cfg.os, cfg.architecture),
            });
        }
        if cfg.rootfs.diff_ids.len() != m.layers.len() {
            return Err(ArchiveError::Invalid {
                path: self.path.to_path_buf(),
                detail: format!(
                    "manifest {} has {} layers but its config lists {} diff_ids",
                    mdesc.digest,
                    m.layers.len(),
                    cfg.rootfs.diff_ids.len()
                ),
            });
        }
        let mut layers = Vec::new();
        let mut mlabels = HashMap::new();
        mlabels.insert(
            "containerd.io/gc.ref.content.config".to_string(),
            config.digest.clone(),
        );
        for (i, (l, diff_id)) in m.layers.iter().zip(&cfg.rootfs.diff_ids).enumerate() {
            match l.media_type.as_str() {
                MT_OCI_LAYER
                | MT_OCI_LAYER_GZIP
                | "application/vnd.docker.image.rootfs.diff.tar.gzip"
                | "application/vnd.docker.image.rootfs.diff.tar" => {}
                other => {
                    return Err(ArchiveError::UnsupportedMediaType {
                        path: self.path.to_path_buf(),
                        what: format!("layer {}", l.digest),
                        media_type: other.to_string(),
                    })
                }
            }
            let mut ll = HashMap::new();
            ll.insert("containerd.io/uncompressed".to_string(), diff_id.clone());
            self.add_archive_blob(l, ll)?;
            mlabels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                l.digest.clone(),
            );
            layers.push(PlannedLayer {
                desc: l.clone(),
                diff_id: diff_id.clone(),
            });
        }
        self.add_archive_blob(&config, HashMap::new())?;
        let mut target = mdesc.clone();
        target.platform = None;
        target.annotations.clear();
        match manifest_bytes {
            Some(b) => self.push(PlannedBlob {
                digest: mdesc.digest.clone(),
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

fn plan_oci(
    path: &Path,
    entries: &HashMap<String, Entry>,
    docs: &HashMap<String, Vec<u8>>,
    tag: Option<&str>,
) -> Result<ImportPlan, ArchiveError> {
    let index: Index = parse(path, "index.json", &docs["index.json"])?;
    let mut b = Builder {
        path,
        entries,
        docs,
        blobs: Vec::new(),
    };
    let mut images = Vec::new();
    if index.manifests.is_empty() {
        return Err(ArchiveError::Invalid {
            path: path.to_path_buf(),
            detail: "index.json lists no manifests".into(),
        });
    }
    for top in &index.manifests {
        let name = match (tag, image_name(top)) {
            (Some(t), _) if index.manifests.len() == 1 => reference::normalize(t)?,
            (_, Some(n)) => n?,
            (Some(t), None) => reference::normalize(t)?,
            (None, None) => {
                return Err(ArchiveError::NoName {
                    path: path.to_path_buf(),
                })
            }
        };
        let mdesc = match top.media_type.as_str() {
            MT_OCI_INDEX | MT_DOCKER_LIST => {
                let nested: Manifest =
                    parse(path, &format!("index {}", top.digest), b.doc(&top.digest)?)?;
                let list = nested.manifests.unwrap_or_default();
                let chosen = list.iter().find(|d| is_amd64(&d.platform)).cloned();
                chosen.ok_or_else(|| ArchiveError::NoAmd64 {
                    path: path.to_path_buf(),
                    image: name.clone(),
                    found: describe_platforms(&list),
                })?
            }
            MT_OCI_MANIFEST | MT_DOCKER_MANIFEST => {
                if top.platform.is_some() && !is_amd64(&top.platform) {
                    return Err(ArchiveError::NoAmd64 {
                        path: path.to_path_buf(),
                        image: name,
                        found: describe_platforms(std::slice::from_ref(top)),
                    });
                }
                top.clone()
            }
            other => {
                return Err(ArchiveError::UnsupportedMediaType {
                    path: path.to_path_buf(),
                    what: format!("index.json entry {}", top.digest),
                    media_type: other.to_string(),
                })
            }
        };
        images.push(b.add_manifest(&name, &mdesc, None)?);
    }
    Ok(ImportPlan {
        path: path.to_path_buf(),
        blobs: b.blobs,
        images,
    })
}

/// The name an OCI index entry carries: containerd's full-name annotation, or an OCI
/// `ref.name` that is itself a full reference (a bare tag is not enough to name an image).
fn image_name(d: &Descriptor) -> Option<Result<String, reference::ReferenceError>> {
    if let Some(n) = d.annotations.get("io.containerd.image.name") {
        return Some(reference::normalize(n));
    }
    let r = d.annotations.get("org.opencontainers.image.ref.name")?;
    if r.contains('/') || r.contains(':') && !r.starts_with(':') {
        Some(reference::normalize(r))
    } else {
        None
    }
}

fn plan_docker(
    path: &Path,
    entries: &HashMap<String, Entry>,
    docs: &HashMap<String, Vec<u8>>,
    tag: Option<&str>,
) -> Result<ImportPlan, ArchiveError> {
    let list: Vec<DockerManifestEntry> = parse(path, "manifest.json", &docs["manifest.json"])?;
    if list.is_empty() {
        return Err(ArchiveError::Invalid {
            path: path.to_path_buf(),
            detail: "manifest.json lists no images".into(),
        });
    }
    // Docker archives name files by path; re-key them by digest so the OCI code can be shared.
    let mut by_digest: HashMap<String, Entry> = HashMap::new();
    let mut docs_by_digest: HashMap<String, Vec<u8>> = HashMap::new();
    let mut b_images = Vec::new();
    let mut manifests = Vec::new();
    for item in &list {
        let get = |name: &str| {
            entries.get(name).ok_or_else(|| ArchiveError::Invalid {
                path: path.to_path_buf(),
                detail: format!("manifest.json names {name}, which is not in the archive"),
            })
        };
        let cfg_entry = get(&item.config)?;
        let cfg_bytes = docs
            .get(&item.config)
            .ok_or_else(|| ArchiveError::Invalid {
                path: path.to_path_buf(),
                detail: format!("config {} is too large", item.config),
            })?;
        let cfg_digest = format!("sha256:{}", cfg_entry.sha256);
        by_digest.insert(
            blob_name(&cfg_digest),
            Entry {
                offset: cfg_entry.offset,
                size: cfg_entry.size,
                sha256: cfg_entry.sha256.clone(),
            },
        );
        docs_by_digest.insert(blob_name(&cfg_digest), cfg_bytes.clone());
        let mut layers = Vec::new();
        for l in &item.layers {
            let e = get(l)?;
            let digest = format!("sha256:{}", e.sha256);
            let gz = layer_is_gzip(path, e)?;
            by_digest.insert(
                blob_name(&digest),
                Entry {
                    offset: e.offset,
                    size: e.size,
                    sha256: e.sha256.clone(),
                },
            );
            layers.push(serde_json::json!({
                "mediaType": if gz { MT_OCI_LAYER_GZIP } else { MT_OCI_LAYER },
                "digest": digest, "size": e.size,
            }));
        }
        // A docker archive has no manifest blob: write the equivalent OCI manifest.
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MT_OCI_MANIFEST,
            "config": {"mediaType": MT_OCI_CONFIG, "digest": cfg_digest, "size": cfg_entry.size},
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&manifest).map_err(|e| ArchiveError::Invalid {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        let mdesc = Descriptor {
            media_type: MT_OCI_MANIFEST.into(),
            digest: format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
            size: bytes.len() as i64,
            platform: None,
            annotations: HashMap::new(),
        };
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
    for (names, mdesc, bytes) in manifests {
        for name in names {
            b_images.push(b.add_manifest(&name, &mdesc, Some(bytes.clone()))?);
        }
    }
    Ok(ImportPlan {
        path: path.to_path_buf(),
        blobs: b.blobs,
        images: b_images,
    })
}

fn open_blob(path: &Path, offset: u64, size: u64) -> Result<io::Take<File>, ArchiveError> {
    let mut f = File::open(path).map_err(|source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    f.seek(SeekFrom::Start(offset))
        .map_err(|source| ArchiveError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(f.take(size))
}

fn layer_is_gzip(path: &Path, e: &Entry) -> Result<bool, ArchiveError> {
    let mut r = open_blob(path, e.offset, e.size)?;
    let mut magic = [0u8; 2];
    let n = r.read(&mut magic).map_err(|source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(n == 2 && magic == [0x1f, 0x8b])
}

/// Decompresses every layer once: its digest must equal the diffID in the config, and every
/// file name in it must be UTF-8.
fn verify_layers(plan: &mut ImportPlan, progress: &mut dyn Progress) -> Result<(), ArchiveError> {
    let path = plan.path.clone();
    let mut checked: HashMap<String, ()> = HashMap::new();
    let layers: Vec<PlannedLayer> = plan.images.iter().flat_map(|i| i.layers.clone()).collect();
    let total = layers.len() as u64;
    for (i, layer) in layers.iter().enumerate() {
        if checked.insert(layer.desc.digest.clone(), ()).is_some() {
            continue;
        }
        progress.step("checking layers", i as u64, total);
        let blob = plan
            .blobs
            .iter()
            .find(|b| b.digest == layer.desc.digest)
            .ok_or_else(|| ArchiveError::MissingBlob {
                path: path.clone(),
                digest: layer.desc.digest.clone(),
            })?;
        let (offset, size) = match blob.source {
            BlobSource::Archive { offset, size } => (offset, size),
            BlobSource::Memory(_) => continue,
        };
        let raw = open_blob(&path, offset, size)?;
        let mut peek = io::BufReader::new(raw);
        let gz = {
            use io::BufRead;
            let head = peek.fill_buf().map_err(|source| ArchiveError::Io {
                path: path.clone(),
                source,
            })?;
            head.len() >= 2 && head[..2] == [0x1f, 0x8b]
        };
        let reader: Box<dyn Read> = if gz {
            Box::new(flate2::read::GzDecoder::new(peek))
        } else {
            Box::new(peek)
        };
        let mut hashing = HashingReader {
            inner: reader,
            hasher: Sha256::new(),
        };
        {
            let mut tar = tar::Archive::new(&mut hashing);
            let corrupt = |e: io::Error| ArchiveError::Corrupt {
                path: path.clone(),
                detail: format!("layer {}: {e}", layer.desc.digest),
            };
            for entry in tar.entries().map_err(corrupt)? {
                let entry = entry.map_err(corrupt)?;
                let name = entry.path_bytes();
                if std::str::from_utf8(&name).is_err() {
                    return Err(ArchiveError::NonUtf8Name {
                        path: path.clone(),
                        layer: layer.desc.digest.clone(),
                        name: String::from_utf8_lossy(&name).into_owned(),
                    });
                }
                if let Some(link) = entry.link_name_bytes() {
                    if std::str::from_utf8(&link).is_err() {
                        return Err(ArchiveError::NonUtf8Name {
                            path: path.clone(),
                            layer: layer.desc.digest.clone(),
                            name: String::from_utf8_lossy(&link).into_owned(),
                        });
                    }
                }
            }
        }
        // The tar reader stops at the end marker; hash whatever padding follows too.
        io::copy(&mut hashing, &mut io::sink()).map_err(|e| ArchiveError::Corrupt {
            path: path.clone(),
            detail: format!("layer {}: {e}", layer.desc.digest),
        })?;
        let actual = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));
        if actual != layer.diff_id {
            return Err(ArchiveError::DiffIdMismatch {
                path: path.clone(),
                layer: layer.desc.digest.clone(),
                expected: layer.diff_id.clone(),
                actual,
            });
        }
    }
    progress.step("checking layers", total, total);
    Ok(())
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Opens a planned blob for streaming into the content store.
pub fn blob_reader(
    plan: &ImportPlan,
    blob: &PlannedBlob,
) -> Result<Box<dyn Read + Send>, ArchiveError> {
    match &blob.source {
        BlobSource::Archive { offset, size } => {
            Ok(Box::new(open_blob(&plan.path, *offset, *size)?))
        }
        BlobSource::Memory(b) => Ok(Box::new(io::Cursor::new(b.clone()))),
    }
}

/// Reads the run config of an image from its config document (used at container creation).
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfigFile, serde_json::Error> {
    serde_json::from_slice(bytes)
}
