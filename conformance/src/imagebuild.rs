//! Deterministic builder for the container image archives used by the
//! conformance tests.
//!
//! The conformance suite must not depend on a registry or on Docker, so the
//! test images are assembled here from a handful of files (the probe binary,
//! a static busybox, `/etc/passwd`, ...) and written as image *archives*:
//!
//! * **OCI archive** – a tar holding an OCI image layout (`oci-layout`,
//!   `index.json`, `blobs/sha256/<hex>`), with gzip-compressed layers. The
//!   `index.json` entry carries both `org.opencontainers.image.ref.name` (the
//!   tag) and `io.containerd.image.name` (the full normalized name), so
//!   containerd's importer names the image without extra options. A
//!   multi-platform variant points `index.json` at a nested image index.
//! * **Docker archive** – the `docker save` layout of Docker < 25
//!   (`manifest.json`, `repositories`, `<id>/layer.tar` with uncompressed
//!   layers, `<hex>.json` config).
//!
//! Everything is byte-for-byte deterministic: tar headers use uid/gid 0 and a
//! fixed mtime, entries are sorted, gzip headers carry no timestamp and all
//! JSON is produced from structs (fixed field order) and `BTreeMap`s (sorted
//! keys). Building the same image twice yields identical archives.
//!
//! The module also provides deliberately broken archives for negative tests
//! (truncated archive, wrong platform, blob not matching its digest, a file
//! name that is not valid UTF-8) and [`build_test_images`], which writes the
//! whole set of archives used by the suite.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Context, Result};
use flate2::{Compression, GzBuilder};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Media type of an OCI image manifest.
pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image index.
pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of an OCI image config.
pub const MEDIA_TYPE_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of a gzip-compressed OCI layer.
pub const MEDIA_TYPE_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI annotation holding the reference name (the tag) of an `index.json` entry.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd annotation holding the full image name of an `index.json` entry.
pub const ANNOTATION_CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";

/// Fixed modification time of every tar entry: 2024-01-01T00:00:00Z.
pub const FIXED_MTIME: u64 = 1_704_067_200;
/// Fixed `created` timestamp of every image config (matches [`FIXED_MTIME`]).
pub const FIXED_CREATED: &str = "2024-01-01T00:00:00Z";

/// Name of the file with an invalid UTF-8 name put into the `non-utf8` image.
pub const NON_UTF8_NAME: &[u8] = b"bad\xffname";

// ---------------------------------------------------------------------------
// Layer contents
// ---------------------------------------------------------------------------

/// Where the contents of an [`ImageFile`] come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSource {
    /// A regular file with these contents.
    Bytes(Vec<u8>),
    /// A regular file whose contents are read from this host path when the
    /// layer is built.
    Path(PathBuf),
    /// A symbolic link pointing at this target (relative or absolute).
    Symlink(String),
    /// A directory.
    Dir,
}

/// One entry of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    /// Path inside the image, e.g. `probe` or `bin/busybox`. A leading `/` is
    /// ignored; `..` is rejected. A `PathBuf` rather than a `String` so that
    /// names which are not valid UTF-8 can be expressed.
    pub path: PathBuf,
    /// Contents of the entry.
    pub contents: FileSource,
    /// Permission bits, including setuid/setgid/sticky (e.g. `0o1777`).
    pub mode: u32,
}

impl ImageFile {
    /// A regular file with in-memory contents.
    pub fn bytes(path: impl Into<PathBuf>, data: impl Into<Vec<u8>>, mode: u32) -> Self {
        ImageFile {
            path: path.into(),
            contents: FileSource::Bytes(data.into()),
            mode,
        }
    }

    /// A regular file copied from `host_path` when the layer is built.
    pub fn host_file(path: impl Into<PathBuf>, host_path: impl Into<PathBuf>, mode: u32) -> Self {
        ImageFile {
            path: path.into(),
            contents: FileSource::Path(host_path.into()),
            mode,
        }
    }

    /// A symbolic link (mode `0o777`).
    pub fn symlink(path: impl Into<PathBuf>, target: impl Into<String>) -> Self {
        ImageFile {
            path: path.into(),
            contents: FileSource::Symlink(target.into()),
            mode: 0o777,
        }
    }

    /// A directory.
    pub fn dir(path: impl Into<PathBuf>, mode: u32) -> Self {
        ImageFile {
            path: path.into(),
            contents: FileSource::Dir,
            mode,
        }
    }
}

/// A built layer, in both the compressed (OCI) and uncompressed (Docker)
/// form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The uncompressed layer tar.
    pub tar_bytes: Vec<u8>,
    /// The gzip-compressed layer tar (the OCI layer blob).
    pub gz_bytes: Vec<u8>,
    /// `sha256:<hex>` of [`Layer::tar_bytes`] (the config's `diff_id`).
    pub diff_id: String,
    /// `sha256:<hex>` of [`Layer::gz_bytes`] (the OCI blob digest).
    pub digest: String,
    /// Length of [`Layer::gz_bytes`].
    pub size: u64,
}

impl Layer {
    /// Wraps an already-built uncompressed layer tar, compressing it
    /// deterministically.
    pub fn from_tar(tar_bytes: Vec<u8>) -> Result<Layer> {
        let gz_bytes = gzip(&tar_bytes)?;
        Ok(Layer {
            diff_id: sha256_digest(&tar_bytes),
            digest: sha256_digest(&gz_bytes),
            size: gz_bytes.len() as u64,
            tar_bytes,
            gz_bytes,
        })
    }
}

/// Builds a layer from `files`.
///
/// Entries are sorted by path; missing parent directories are added (mode
/// `0o755`) before their children, directories are stored with a trailing
/// `/`. Every header is a GNU header with uid/gid 0 and mtime
/// [`FIXED_MTIME`]. Duplicate paths and files used as parent directories are
/// errors.
pub fn build_layer(files: &[ImageFile]) -> Result<Layer> {
    Layer::from_tar(build_layer_tar(files)?)
}

/// A normalized in-image path: its components as raw bytes. Ordering by
/// components puts every directory before its children.
type EntryKey = Vec<Vec<u8>>;

enum LayerEntry<'a> {
    Explicit(&'a ImageFile),
    ImplicitDir,
}

/// Builds the uncompressed tar of a layer (see [`build_layer`]).
pub fn build_layer_tar(files: &[ImageFile]) -> Result<Vec<u8>> {
    let mut entries: BTreeMap<EntryKey, LayerEntry<'_>> = BTreeMap::new();
    for file in files {
        let key = entry_key(&file.path)?;
        for depth in 1..key.len() {
            entries
                .entry(key[..depth].to_vec())
                .or_insert(LayerEntry::ImplicitDir);
        }
        match entries.insert(key, LayerEntry::Explicit(file)) {
            Some(LayerEntry::Explicit(_)) => bail!("duplicate layer entry {:?}", file.path),
            Some(LayerEntry::ImplicitDir) | None => {}
        }
    }
    // A parent must be a directory.
    for key in entries.keys() {
        for depth in 1..key.len() {
            if let Some(LayerEntry::Explicit(parent)) = entries.get(&key[..depth]) {
                ensure!(
                    parent.contents == FileSource::Dir,
                    "layer entry {:?} is used as a directory but is not one",
                    parent.path
                );
            }
        }
    }

    let mut tar = TarWriter::new();
    for (key, entry) in &entries {
        let path = key.join(&b'/');
        match entry {
            LayerEntry::ImplicitDir => tar.dir(&path, 0o755)?,
            LayerEntry::Explicit(file) => match &file.contents {
                FileSource::Dir => tar.dir(&path, file.mode)?,
                FileSource::Bytes(data) => tar.file(&path, data, file.mode)?,
                FileSource::Path(host) => {
                    let data = fs::read(host).with_context(|| {
                        format!("reading {} for layer entry {:?}", host.display(), file.path)
                    })?;
                    tar.file(&path, &data, file.mode)?
                }
                FileSource::Symlink(target) => tar.symlink(&path, target, file.mode)?,
            },
        }
    }
    tar.finish()
}

/// Turns an in-image path into its components, dropping a leading `/` and
/// `.` components and rejecting `..` and empty paths.
fn entry_key(path: &Path) -> Result<EntryKey> {
    let mut key = Vec::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => key.push(name.as_bytes().to_vec()),
            Component::ParentDir | Component::Prefix(_) => {
                bail!("layer entry path {path:?} must not contain `..`")
            }
        }
    }
    ensure!(!key.is_empty(), "layer entry path {path:?} is empty");
    Ok(key)
}

/// Minimal deterministic tar writer shared by layers and archives.
struct TarWriter {
    builder: tar::Builder<Vec<u8>>,
}

impl TarWriter {
    fn new() -> Self {
        TarWriter {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(entry_type: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(entry_type);
        header.set_mode(mode);
        header.set_size(size);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(FIXED_MTIME);
        header
    }

    /// Adds a directory; `path` gets a trailing `/`.
    fn dir(&mut self, path: &[u8], mode: u32) -> Result<()> {
        let mut name = path.to_vec();
        if !name.ends_with(b"/") {
            name.push(b'/');
        }
        let mut header = Self::header(tar::EntryType::Directory, mode, 0);
        self.builder
            .append_data(&mut header, bytes_path(&name), std::io::empty())
            .with_context(|| {
                format!(
                    "adding directory {:?} to tar",
                    String::from_utf8_lossy(path)
                )
            })
    }

    fn file(&mut self, path: &[u8], data: &[u8], mode: u32) -> Result<()> {
        let mut header = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.builder
            .append_data(&mut header, bytes_path(path), data)
            .with_context(|| format!("adding file {:?} to tar", String::from_utf8_lossy(path)))
    }

    fn symlink(&mut self, path: &[u8], target: &str, mode: u32) -> Result<()> {
        let mut header = Self::header(tar::EntryType::Symlink, mode, 0);
        self.builder
            .append_link(&mut header, bytes_path(path), target)
            .with_context(|| format!("adding symlink {:?} to tar", String::from_utf8_lossy(path)))
    }

    fn finish(self) -> Result<Vec<u8>> {
        self.builder.into_inner().context("finishing tar")
    }
}

/// A `Path` made of raw bytes (Unix only), so non-UTF-8 names survive.
fn bytes_path(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    // mtime 0 and no file name: the gzip header carries no varying data.
    let mut encoder = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::default());
    encoder.write_all(data).context("gzip-compressing layer")?;
    encoder.finish().context("gzip-compressing layer")
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn digest_hex(digest: &str) -> Result<&str> {
    digest
        .strip_prefix("sha256:")
        .ok_or_else(|| anyhow!("digest {digest:?} is not sha256"))
}

// ---------------------------------------------------------------------------
// Image config and OCI JSON documents
// ---------------------------------------------------------------------------

/// The runtime part of an image config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Entrypoint`; omitted from the config when empty.
    pub entrypoint: Vec<String>,
    /// `Cmd`; omitted from the config when empty.
    pub cmd: Vec<String>,
    /// `Env`, as `KEY=value` strings.
    pub env: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
    /// `User` (e.g. `65534:65534`).
    pub user: Option<String>,
    /// A single `ExposedPorts` entry, `<port>/tcp`.
    pub exposed_port: Option<u16>,
}

/// A target platform (`os`/`architecture`[/`variant`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture in GOARCH spelling, e.g. `amd64`, `arm64`.
    pub architecture: String,
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// Optional architecture variant, e.g. `v8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// `linux/amd64`.
    pub fn linux_amd64() -> Self {
        Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
        }
    }

    /// `linux/arm64`.
    pub fn linux_arm64() -> Self {
        Platform {
            architecture: "arm64".into(),
            os: "linux".into(),
            variant: None,
        }
    }
}

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// Media type of the referenced blob.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// `sha256:<hex>` of the blob.
    pub digest: String,
    /// Size of the blob in bytes.
    pub size: u64,
    /// Annotations (sorted by key).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Platform, for manifests listed in an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// An OCI image index (`index.json` or a nested index blob).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageIndex {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// [`MEDIA_TYPE_OCI_INDEX`].
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// The listed manifests (or nested indexes).
    pub manifests: Vec<Descriptor>,
}

impl ImageIndex {
    fn new(manifests: Vec<Descriptor>) -> Self {
        ImageIndex {
            schema_version: 2,
            media_type: MEDIA_TYPE_OCI_INDEX.into(),
            manifests,
        }
    }
}

/// An OCI image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageManifest {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// [`MEDIA_TYPE_OCI_MANIFEST`].
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// The config blob.
    pub config: Descriptor,
    /// The layer blobs, base layer first.
    pub layers: Vec<Descriptor>,
}

/// The serialized image config blob (the subset of the OCI image config
/// spec that the builder emits).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigFile {
    /// Creation time, always [`FIXED_CREATED`].
    pub created: String,
    /// CPU architecture.
    pub architecture: String,
    /// Operating system.
    pub os: String,
    /// Architecture variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Runtime configuration.
    pub config: ContainerConfig,
    /// Layer diff ids.
    pub rootfs: RootFs,
    /// One history entry per layer.
    pub history: Vec<History>,
}

/// The `config` object of an image config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// `User`.
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `ExposedPorts`, e.g. `{"8080/tcp": {}}`.
    #[serde(
        rename = "ExposedPorts",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub exposed_ports: Option<BTreeMap<String, EmptyObject>>,
    /// `Env`.
    #[serde(rename = "Env", default)]
    pub env: Vec<String>,
    /// `Entrypoint`.
    #[serde(rename = "Entrypoint", default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    #[serde(rename = "Cmd", default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    /// `WorkingDir`.
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
}

/// The JSON value `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmptyObject {}

/// The `rootfs` object of an image config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `sha256:<hex>` of each uncompressed layer tar.
    pub diff_ids: Vec<String>,
}

/// One `history` entry of an image config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Creation time.
    pub created: String,
    /// What created the layer.
    pub created_by: String,
}

/// Serializes the image config blob for `layers` on `platform`.
pub fn config_json(config: &ImageConfig, layers: &[Layer], platform: &Platform) -> Result<Vec<u8>> {
    let file = ConfigFile {
        created: FIXED_CREATED.into(),
        architecture: platform.architecture.clone(),
        os: platform.os.clone(),
        variant: platform.variant.clone(),
        config: ContainerConfig {
            user: config.user.clone(),
            exposed_ports: config
                .exposed_port
                .map(|port| BTreeMap::from([(format!("{port}/tcp"), EmptyObject {})])),
            env: config.env.clone(),
            entrypoint: config.entrypoint.clone(),
            cmd: config.cmd.clone(),
            working_dir: config.working_dir.clone(),
        },
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: layers.iter().map(|layer| layer.diff_id.clone()).collect(),
        },
        history: (0..layers.len())
            .map(|i| History {
                created: FIXED_CREATED.into(),
                created_by: format!("runlet-conformance imagebuild: layer {i}"),
            })
            .collect(),
    };
    to_json(&file)
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).context("serializing JSON")
}

// ---------------------------------------------------------------------------
// Image references
// ---------------------------------------------------------------------------

/// A parsed, normalized image reference (`name:tag`, no digests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Fully qualified repository, e.g. `docker.io/library/probe`.
    pub name: String,
    /// Tag, e.g. `latest`.
    pub tag: String,
}

impl ImageRef {
    /// Parses and normalizes a reference the way Docker/containerd do:
    /// `probe` → `docker.io/library/probe:latest`,
    /// `foo/bar:v1` → `docker.io/foo/bar:v1`, `localhost:5000/x` stays on
    /// its registry. Digest references are rejected.
    pub fn parse(reference: &str) -> Result<ImageRef> {
        ensure!(
            !reference.contains('@'),
            "digest references are not supported: {reference:?}"
        );
        let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
        let (repo, tag) = match reference[last_slash..].rfind(':') {
            Some(i) => (
                &reference[..last_slash + i],
                &reference[last_slash + i + 1..],
            ),
            None => (reference, "latest"),
        };
        ensure!(
            !repo.is_empty() && !tag.is_empty(),
            "invalid image reference {reference:?}"
        );
        let (domain, path) = match repo.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                (first, rest)
            }
            _ => ("docker.io", repo),
        };
        ensure!(!path.is_empty(), "invalid image reference {reference:?}");
        let path = if domain == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        Ok(ImageRef {
            name: format!("{domain}/{path}"),
            tag: tag.to_string(),
        })
    }

    /// The full reference, `name:tag`.
    pub fn full(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }

    /// The `index.json` annotations naming this image.
    fn annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (ANNOTATION_CONTAINERD_IMAGE_NAME.to_string(), self.full()),
            (ANNOTATION_REF_NAME.to_string(), self.tag.clone()),
        ])
    }
}

// ---------------------------------------------------------------------------
// OCI archives
// ---------------------------------------------------------------------------

/// The images of one platform in a multi-platform index.
#[derive(Debug, Clone, Copy)]
pub struct PlatformImage<'a> {
    /// The platform.
    pub platform: &'a Platform,
    /// The layers, base layer first.
    pub layers: &'a [Layer],
    /// The runtime configuration.
    pub config: &'a ImageConfig,
}

/// An OCI image layout being assembled in memory.
#[derive(Default)]
struct OciLayout {
    /// Blobs by hex digest. Normally the key is the hash of the value; the
    /// bad-digest helper breaks that on purpose.
    blobs: BTreeMap<String, Vec<u8>>,
}

impl OciLayout {
    fn add_blob(&mut self, media_type: &str, data: Vec<u8>) -> Descriptor {
        let digest = sha256_digest(&data);
        let descriptor = Descriptor {
            media_type: media_type.into(),
            digest: digest.clone(),
            size: data.len() as u64,
            annotations: BTreeMap::new(),
            platform: None,
        };
        self.blobs
            .insert(digest["sha256:".len()..].to_string(), data);
        descriptor
    }

    /// Adds config, layers and manifest; returns the manifest descriptor
    /// with `platform` set.
    fn add_image(&mut self, image: PlatformImage<'_>) -> Result<Descriptor> {
        let config = config_json(image.config, image.layers, image.platform)?;
        let config = self.add_blob(MEDIA_TYPE_OCI_CONFIG, config);
        let layers = image
            .layers
            .iter()
            .map(|layer| self.add_blob(MEDIA_TYPE_OCI_LAYER_GZIP, layer.gz_bytes.clone()))
            .collect();
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: MEDIA_TYPE_OCI_MANIFEST.into(),
            config,
            layers,
        };
        let mut descriptor = self.add_blob(MEDIA_TYPE_OCI_MANIFEST, to_json(&manifest)?);
        descriptor.platform = Some(image.platform.clone());
        Ok(descriptor)
    }

    /// Writes the layout as a tar to `out` with `index.json` listing
    /// `manifests`.
    fn write(&self, out: &Path, manifests: Vec<Descriptor>) -> Result<()> {
        let mut tar = TarWriter::new();
        tar.file(b"oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, 0o644)?;
        tar.file(b"index.json", &to_json(&ImageIndex::new(manifests))?, 0o644)?;
        tar.dir(b"blobs", 0o755)?;
        tar.dir(b"blobs/sha256", 0o755)?;
        for (hex, data) in &self.blobs {
            tar.file(format!("blobs/sha256/{hex}").as_bytes(), data, 0o644)?;
        }
        write_file(out, &tar.finish()?)
    }
}

fn single_platform_layout(
    image_ref: &str,
    image: PlatformImage<'_>,
) -> Result<(OciLayout, Descriptor)> {
    let name = ImageRef::parse(image_ref)?;
    let mut layout = OciLayout::default();
    let mut manifest = layout.add_image(image)?;
    manifest.annotations = name.annotations();
    Ok((layout, manifest))
}

/// Writes a single-platform OCI archive: `index.json` lists the image
/// manifest directly, with `platform` and the name annotations
/// (`org.opencontainers.image.ref.name` = tag, `io.containerd.image.name` =
/// normalized full name).
pub fn write_oci_archive(
    out: &Path,
    image_ref: &str,
    layers: &[Layer],
    config: &ImageConfig,
    platform: &Platform,
) -> Result<()> {
    let (layout, manifest) = single_platform_layout(
        image_ref,
        PlatformImage {
            platform,
            layers,
            config,
        },
    )?;
    layout.write(out, vec![manifest])
}

/// Writes a multi-platform OCI archive: `index.json` has one entry (with
/// the name annotations) pointing at a nested image index blob that lists
/// one manifest per platform, in the given order.
pub fn write_oci_index_archive(
    out: &Path,
    image_ref: &str,
    platforms: &[PlatformImage<'_>],
) -> Result<()> {
    ensure!(
        !platforms.is_empty(),
        "a multi-platform index needs at least one platform"
    );
    let name = ImageRef::parse(image_ref)?;
    let mut layout = OciLayout::default();
    let manifests = platforms
        .iter()
        .map(|image| layout.add_image(*image))
        .collect::<Result<Vec<_>>>()?;
    let mut index = layout.add_blob(MEDIA_TYPE_OCI_INDEX, to_json(&ImageIndex::new(manifests))?);
    index.annotations = name.annotations();
    layout.write(out, vec![index])
}

/// Like [`write_oci_archive`], but the first layer blob is corrupted (one
/// byte in the middle flipped) while keeping its file name, so the blob no
/// longer matches its digest.
///
/// Use a layer that no valid test image contains: containerd does not
/// re-ingest a blob whose digest is already in its content store, so a
/// shared layer would mask the corruption.
pub fn write_bad_digest_oci_archive(
    out: &Path,
    image_ref: &str,
    layers: &[Layer],
    config: &ImageConfig,
    platform: &Platform,
) -> Result<()> {
    let first = layers
        .first()
        .ok_or_else(|| anyhow!("bad-digest archive needs a layer"))?;
    let (mut layout, manifest) = single_platform_layout(
        image_ref,
        PlatformImage {
            platform,
            layers,
            config,
        },
    )?;
    let blob = layout
        .blobs
        .get_mut(digest_hex(&first.digest)?)
        .ok_or_else(|| anyhow!("layer blob {} missing from layout", first.digest))?;
    let middle = blob.len() / 2;
    blob[middle] ^= 0xff;
    layout.write(out, vec![manifest])
}

// ---------------------------------------------------------------------------
// Docker archives
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Negative-test helpers
// ---------------------------------------------------------------------------

/// Writes the first `keep_bytes` bytes of `src` to `dst` (a truncated copy).
/// Returns the number of bytes written.
pub fn truncate_file(src: &Path, dst: &Path, keep_bytes: u64) -> Result<u64> {
    let mut data = Vec::new();
    fs::File::open(src)
        .with_context(|| format!("opening {}", src.display()))?
        .take(keep_bytes)
        .read_to_end(&mut data)
        .with_context(|| format!("reading {}", src.display()))?;
    write_file(dst, &data)?;
    Ok(data.len() as u64)
}

/// A small regular file whose name ([`NON_UTF8_NAME`]) is not valid UTF-8.
pub fn non_utf8_file() -> ImageFile {
    ImageFile::bytes(
        PathBuf::from(OsStr::from_bytes(NON_UTF8_NAME)),
        b"this file's name is not valid UTF-8\n".to_vec(),
        0o644,
    )
}

fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

// ---------------------------------------------------------------------------
// The conformance test images
// ---------------------------------------------------------------------------

/// Name of the probe image in `probe.oci.tar`.
pub const PROBE_IMAGE: &str = "docker.io/library/probe:latest";
/// Tag of the probe image in `probe.docker.tar`.
pub const PROBE_DOCKER_IMAGE: &str = "probe-docker:latest";
/// Name of the multi-platform probe image in `probe-multi.oci.tar`.
pub const PROBE_MULTI_IMAGE: &str = "docker.io/library/probe-multi:latest";
/// Name of the non-root probe image in `probe-user.oci.tar`.
pub const PROBE_USER_IMAGE: &str = "docker.io/library/probe-user:latest";
/// Name of the busybox image in `busybox.oci.tar`.
pub const BUSYBOX_IMAGE: &str = "docker.io/library/busybox:latest";
/// Name of the image in `arm64-only.oci.tar`.
pub const ARM64_ONLY_IMAGE: &str = "docker.io/library/arm64-only:latest";
/// Name of the image in `bad-digest.oci.tar`.
pub const BAD_DIGEST_IMAGE: &str = "docker.io/library/bad-digest:latest";
/// Name of the image in `non-utf8.oci.tar`.
pub const NON_UTF8_IMAGE: &str = "docker.io/library/non-utf8:latest";

/// `PATH` set in the test images.
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// `/etc/passwd` of the test images.
pub const ETC_PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
/// `/etc/group` of the test images.
pub const ETC_GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// Applets linked to `/bin/busybox` in the busybox image.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "sleep", "env", "httpd", "wget", "id", "true", "false",
];

/// Host inputs of [`build_test_images`].
#[derive(Debug, Clone)]
pub struct TestImageSources {
    /// The probe binary (static, linux/amd64).
    pub probe: PathBuf,
    /// A static busybox binary.
    pub busybox: PathBuf,
}

/// An archive written by [`build_test_images`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenArchive {
    /// Where it was written.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// The image name it carries (for the truncated archive: the name the
    /// intact archive would carry).
    pub image: String,
    /// What the archive is for.
    pub description: &'static str,
}

/// `/tmp` (1777), `/etc/passwd`, `/etc/group`.
fn base_files() -> Vec<ImageFile> {
    vec![
        ImageFile::dir("tmp", 0o1777),
        ImageFile::dir("etc", 0o755),
        ImageFile::bytes("etc/passwd", ETC_PASSWD, 0o644),
        ImageFile::bytes("etc/group", ETC_GROUP, 0o644),
    ]
}

/// The files of the probe image: `/probe` (0755) plus [`base_files`].
pub fn probe_files(probe: &Path) -> Vec<ImageFile> {
    let mut files = vec![ImageFile::host_file("probe", probe, 0o755)];
    files.extend(base_files());
    files
}

/// The config of the probe image.
pub fn probe_config() -> ImageConfig {
    ImageConfig {
        entrypoint: vec!["/probe".into()],
        cmd: Vec::new(),
        env: vec![DEFAULT_PATH_ENV.into(), "PROBE_IMAGE_ENV=from-image".into()],
        working_dir: Some("/".into()),
        user: None,
        exposed_port: Some(8080),
    }
}

/// The files of the busybox image: `/bin/busybox`, applet symlinks and
/// [`base_files`].
pub fn busybox_files(busybox: &Path) -> Vec<ImageFile> {
    let mut files = vec![
        ImageFile::dir("bin", 0o755),
        ImageFile::host_file("bin/busybox", busybox, 0o755),
    ];
    files.extend(
        BUSYBOX_APPLETS
            .iter()
            .map(|applet| ImageFile::symlink(format!("bin/{applet}"), "busybox")),
    );
    files.extend(base_files());
    files
}

/// The config of the busybox image.
pub fn busybox_config() -> ImageConfig {
    ImageConfig {
        cmd: vec!["/bin/sh".into()],
        env: vec![DEFAULT_PATH_ENV.into()],
        ..ImageConfig::default()
    }
}

/// A placeholder layer for non-amd64 platforms.
fn placeholder_layer(platform: &Platform) -> Result<Layer> {
    build_layer(&[ImageFile::bytes(
        "PLATFORM",
        format!(
            "placeholder layer for {}/{}\n",
            platform.os, platform.architecture
        ),
        0o644,
    )])
}

/// Writes every conformance test archive into `out_dir` (created if
/// missing) and returns what was written, in order:
///
/// * `probe.oci.tar`, `probe.docker.tar`, `probe-multi.oci.tar`,
///   `probe-user.oci.tar`, `busybox.oci.tar` — valid images;
/// * `truncated.oci.tar`, `arm64-only.oci.tar`, `bad-digest.oci.tar`,
///   `non-utf8.oci.tar` — for negative tests.
pub fn build_test_images(
    out_dir: &Path,
    sources: &TestImageSources,
) -> Result<Vec<WrittenArchive>> {
    fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let amd64 = Platform::linux_amd64();
    let arm64 = Platform::linux_arm64();
    ensure!(
        sources.probe.is_file(),
        "probe binary {} not found (build it with `cargo build --release --target x86_64-unknown-linux-gnu -p runlet-probe` or pass --probe)",
        sources.probe.display()
    );
    ensure!(
        sources.busybox.is_file(),
        "busybox binary {} not found (pass --busybox)",
        sources.busybox.display()
    );

    let probe_layer = [build_layer(&probe_files(&sources.probe))?];
    let probe_config = probe_config();
    let arm64_layer = [placeholder_layer(&arm64)?];
    let mut written = Vec::new();
    let mut record = |name: &str, image: &str, description: &'static str| -> Result<PathBuf> {
        let path = out_dir.join(name);
        let size = fs::metadata(&path)
            .with_context(|| format!("stat {}", path.display()))?
            .len();
        written.push(WrittenArchive {
            path: path.clone(),
            size,
            image: image.into(),
            description,
        });
        Ok(path)
    };

    let probe_path = out_dir.join("probe.oci.tar");
    write_oci_archive(
        &probe_path,
        PROBE_IMAGE,
        &probe_layer,
        &probe_config,
        &amd64,
    )?;
    record("probe.oci.tar", PROBE_IMAGE, "probe image (OCI archive)")?;

    write_docker_archive(
        &out_dir.join("probe.docker.tar"),
        PROBE_DOCKER_IMAGE,
        &probe_layer,
        &probe_config,
        &amd64,
    )?;
    record(
        "probe.docker.tar",
        PROBE_DOCKER_IMAGE,
        "probe image (docker-save archive)",
    )?;

    write_oci_index_archive(
        &out_dir.join("probe-multi.oci.tar"),
        PROBE_MULTI_IMAGE,
        &[
            PlatformImage {
                platform: &arm64,
                layers: &arm64_layer,
                config: &probe_config,
            },
            PlatformImage {
                platform: &amd64,
                layers: &probe_layer,
                config: &probe_config,
            },
        ],
    )?;
    record(
        "probe-multi.oci.tar",
        PROBE_MULTI_IMAGE,
        "probe image, multi-platform index (arm64 + amd64)",
    )?;

    let user_config = ImageConfig {
        user: Some("65534:65534".into()),
        working_dir: Some("/tmp".into()),
        ..probe_config.clone()
    };
    write_oci_archive(
        &out_dir.join("probe-user.oci.tar"),
        PROBE_USER_IMAGE,
        &probe_layer,
        &user_config,
        &amd64,
    )?;
    record(
        "probe-user.oci.tar",
        PROBE_USER_IMAGE,
        "probe image running as 65534:65534 in /tmp",
    )?;

    let busybox_layer = [build_layer(&busybox_files(&sources.busybox))?];
    write_oci_archive(
        &out_dir.join("busybox.oci.tar"),
        BUSYBOX_IMAGE,
        &busybox_layer,
        &busybox_config(),
        &amd64,
    )?;
    record("busybox.oci.tar", BUSYBOX_IMAGE, "static busybox image")?;

    let probe_size = fs::metadata(&probe_path)
        .with_context(|| format!("stat {}", probe_path.display()))?
        .len();
    truncate_file(
        &probe_path,
        &out_dir.join("truncated.oci.tar"),
        probe_size * 6 / 10,
    )?;
    record(
        "truncated.oci.tar",
        PROBE_IMAGE,
        "negative: probe.oci.tar cut to 60%",
    )?;

    write_oci_archive(
        &out_dir.join("arm64-only.oci.tar"),
        ARM64_ONLY_IMAGE,
        &arm64_layer,
        &probe_config,
        &arm64,
    )?;
    record(
        "arm64-only.oci.tar",
        ARM64_ONLY_IMAGE,
        "negative: only a linux/arm64 manifest",
    )?;

    // The corrupted layer must not be shared with any valid image: containerd
    // skips ingesting a blob whose digest it already has, which would hide
    // the corruption.
    let mut bad_digest = probe_files(&sources.probe);
    bad_digest.push(ImageFile::bytes(
        "BAD_DIGEST",
        "this layer's blob is corrupted on purpose\n",
        0o644,
    ));
    write_bad_digest_oci_archive(
        &out_dir.join("bad-digest.oci.tar"),
        BAD_DIGEST_IMAGE,
        &[build_layer(&bad_digest)?],
        &probe_config,
        &amd64,
    )?;
    record(
        "bad-digest.oci.tar",
        BAD_DIGEST_IMAGE,
        "negative: layer blob does not match its digest",
    )?;

    let mut non_utf8 = probe_files(&sources.probe);
    non_utf8.push(non_utf8_file());
    write_oci_archive(
        &out_dir.join("non-utf8.oci.tar"),
        NON_UTF8_IMAGE,
        &[build_layer(&non_utf8)?],
        &probe_config,
        &amd64,
    )?;
    record(
        "non-utf8.oci.tar",
        NON_UTF8_IMAGE,
        "negative: layer has a file name that is not UTF-8",
    )?;

    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;

    /// A fresh, empty scratch directory under the system temp dir.
    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("runlet-imagebuild-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Entries of a tar: raw path → (entry type, data).
    fn tar_entries(bytes: &[u8]) -> Vec<(Vec<u8>, tar::EntryType, Vec<u8>)> {
        let mut archive = tar::Archive::new(bytes);
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let path = entry.path_bytes().into_owned();
                let kind = entry.header().entry_type();
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                (path, kind, data)
            })
            .collect()
    }

    fn tar_map(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
        tar_entries(bytes)
            .into_iter()
            .map(|(path, _, data)| (String::from_utf8(path).unwrap(), data))
            .collect()
    }

    fn blob<'a>(files: &'a BTreeMap<String, Vec<u8>>, desc: &Descriptor) -> &'a [u8] {
        let data = files
            .get(&format!(
                "blobs/sha256/{}",
                digest_hex(&desc.digest).unwrap()
            ))
            .unwrap_or_else(|| panic!("blob {} missing", desc.digest));
        assert_eq!(
            sha256_digest(data),
            desc.digest,
            "blob content matches digest"
        );
        assert_eq!(data.len() as u64, desc.size, "descriptor size matches blob");
        data
    }

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        GzDecoder::new(data).read_to_end(&mut out).unwrap();
        out
    }

    fn sample_files() -> Vec<ImageFile> {
        let mut files = vec![
            ImageFile::bytes("/probe", b"#!fake probe binary".to_vec(), 0o755),
            ImageFile::symlink("usr/bin/sh", "/probe"),
        ];
        files.extend(base_files());
        files
    }

    /// Checks a manifest blob and its config/layers; returns the config.
    fn check_manifest(files: &BTreeMap<String, Vec<u8>>, desc: &Descriptor) -> ConfigFile {
        assert_eq!(desc.media_type, MEDIA_TYPE_OCI_MANIFEST);
        let manifest: ImageManifest = serde_json::from_slice(blob(files, desc)).unwrap();
        assert_eq!(manifest.schema_version, 2);
        assert_eq!(manifest.config.media_type, MEDIA_TYPE_OCI_CONFIG);
        let config: ConfigFile = serde_json::from_slice(blob(files, &manifest.config)).unwrap();
        assert_eq!(config.rootfs.kind, "layers");
        assert_eq!(config.rootfs.diff_ids.len(), manifest.layers.len());
        assert_eq!(config.history.len(), manifest.layers.len());
        for (layer, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
            assert_eq!(layer.media_type, MEDIA_TYPE_OCI_LAYER_GZIP);
            let tar = gunzip(blob(files, layer));
            assert_eq!(
                &sha256_digest(&tar),
                diff_id,
                "diff_id is sha256 of the uncompressed layer"
            );
        }
        let platform = desc.platform.as_ref().unwrap();
        assert_eq!(platform.architecture, config.architecture);
        assert_eq!(platform.os, config.os);
        config
    }

    #[test]
    fn layer_is_deterministic_and_well_formed() {
        let a = build_layer(&sample_files()).unwrap();
        let b = build_layer(&sample_files()).unwrap();
        assert_eq!(a, b);
        assert_eq!(gunzip(&a.gz_bytes), a.tar_bytes);
        assert_eq!(a.diff_id, sha256_digest(&a.tar_bytes));
        assert_eq!(a.digest, sha256_digest(&a.gz_bytes));
        assert_eq!(a.size, a.gz_bytes.len() as u64);

        let mut archive = tar::Archive::new(&a.tar_bytes[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let header = entry.header();
            assert_eq!(header.uid().unwrap(), 0);
            assert_eq!(header.gid().unwrap(), 0);
            assert_eq!(header.mtime().unwrap(), FIXED_MTIME);
            let path = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
            assert!(!path.starts_with('/'));
            seen.push((path, header.entry_type(), header.mode().unwrap()));
        }
        let expect = [
            ("etc/", tar::EntryType::Directory, 0o755),
            ("etc/group", tar::EntryType::Regular, 0o644),
            ("etc/passwd", tar::EntryType::Regular, 0o644),
            ("probe", tar::EntryType::Regular, 0o755),
            ("tmp/", tar::EntryType::Directory, 0o1777),
            ("usr/", tar::EntryType::Directory, 0o755),
            ("usr/bin/", tar::EntryType::Directory, 0o755),
            ("usr/bin/sh", tar::EntryType::Symlink, 0o777),
        ];
        let expect: Vec<_> = expect
            .iter()
            .map(|(p, t, m)| (p.to_string(), *t, *m))
            .collect();
        assert_eq!(seen, expect);
    }

    #[test]
    fn layer_rejects_bad_input() {
        assert!(build_layer(&[ImageFile::bytes("../x", b"".to_vec(), 0o644)]).is_err());
        assert!(build_layer(&[ImageFile::bytes("/", b"".to_vec(), 0o644)]).is_err());
        assert!(build_layer(&[
            ImageFile::bytes("a", b"".to_vec(), 0o644),
            ImageFile::bytes("/a", b"".to_vec(), 0o644)
        ])
        .is_err());
        assert!(build_layer(&[
            ImageFile::bytes("a", b"".to_vec(), 0o644),
            ImageFile::bytes("a/b", b"".to_vec(), 0o644)
        ])
        .is_err());
        assert!(build_layer(&[ImageFile::host_file("x", "/nonexistent/file", 0o644)]).is_err());
    }

    #[test]
    fn image_refs_normalize() {
        let full = |r: &str| ImageRef::parse(r).unwrap().full();
        assert_eq!(full("probe"), "docker.io/library/probe:latest");
        assert_eq!(
            full("probe-user:latest"),
            "docker.io/library/probe-user:latest"
        );
        assert_eq!(
            full("docker.io/library/probe:latest"),
            "docker.io/library/probe:latest"
        );
        assert_eq!(full("foo/bar:v1"), "docker.io/foo/bar:v1");
        assert_eq!(full("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(full("ghcr.io/a/b:1.2"), "ghcr.io/a/b:1.2");
        assert_eq!(
            ImageRef::parse("docker.io/library/probe:latest")
                .unwrap()
                .tag,
            "latest"
        );
        assert!(ImageRef::parse("probe@sha256:00").is_err());
        assert!(ImageRef::parse("probe:").is_err());
    }

    #[test]
    fn oci_archive_round_trips() {
        let dir = scratch("oci");
        let layers = [build_layer(&sample_files()).unwrap()];
        let config = probe_config();
        let (a, b) = (dir.join("a.tar"), dir.join("b.tar"));
        write_oci_archive(&a, "probe", &layers, &config, &Platform::linux_amd64()).unwrap();
        write_oci_archive(&b, "probe", &layers, &config, &Platform::linux_amd64()).unwrap();
        let bytes = fs::read(&a).unwrap();
        assert_eq!(bytes, fs::read(&b).unwrap(), "archives are byte-identical");

        let names: Vec<_> = tar_entries(&bytes).into_iter().map(|(p, _, _)| p).collect();
        assert_eq!(
            &names[..4],
            [
                &b"oci-layout"[..],
                b"index.json",
                b"blobs/",
                b"blobs/sha256/"
            ]
        );
        let files = tar_map(&bytes);
        assert_eq!(files["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);
        let index: ImageIndex = serde_json::from_slice(&files["index.json"]).unwrap();
        assert_eq!(index.schema_version, 2);
        assert_eq!(index.media_type, MEDIA_TYPE_OCI_INDEX);
        assert_eq!(index.manifests.len(), 1);
        let desc = &index.manifests[0];
        assert_eq!(desc.annotations[ANNOTATION_REF_NAME], "latest");
        assert_eq!(
            desc.annotations[ANNOTATION_CONTAINERD_IMAGE_NAME],
            "docker.io/library/probe:latest"
        );
        assert_eq!(desc.platform, Some(Platform::linux_amd64()));

        let cfg = check_manifest(&files, desc);
        assert_eq!(cfg.architecture, "amd64");
        assert_eq!(cfg.os, "linux");
        assert_eq!(cfg.config.entrypoint, ["/probe"]);
        assert!(cfg.config.cmd.is_empty());
        assert_eq!(cfg.config.env, config.env);
        assert_eq!(cfg.config.working_dir.as_deref(), Some("/"));
        assert_eq!(cfg.config.user, None);
        assert!(cfg.config.exposed_ports.unwrap().contains_key("8080/tcp"));
        assert_eq!(cfg.rootfs.diff_ids, [layers[0].diff_id.clone()]);

        // Raw JSON spelling of the config keys.
        let manifest: ImageManifest = serde_json::from_slice(blob(&files, desc)).unwrap();
        let raw: serde_json::Value =
            serde_json::from_slice(blob(&files, &manifest.config)).unwrap();
        assert_eq!(
            raw["config"]["ExposedPorts"],
            serde_json::json!({"8080/tcp": {}})
        );
        assert_eq!(raw["config"]["Entrypoint"], serde_json::json!(["/probe"]));
        assert!(raw["config"].get("Cmd").is_none());
        assert_eq!(raw["rootfs"]["type"], "layers");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn oci_index_archive_lists_platforms() {
        let dir = scratch("index");
        let amd = [build_layer(&sample_files()).unwrap()];
        let arm = [placeholder_layer(&Platform::linux_arm64()).unwrap()];
        let config = probe_config();
        let (amd64, arm64) = (Platform::linux_amd64(), Platform::linux_arm64());
        let images = [
            PlatformImage {
                platform: &arm64,
                layers: &arm,
                config: &config,
            },
            PlatformImage {
                platform: &amd64,
                layers: &amd,
                config: &config,
            },
        ];
        let out = dir.join("multi.tar");
        write_oci_index_archive(&out, "probe-multi:latest", &images).unwrap();
        let bytes = fs::read(&out).unwrap();
        write_oci_index_archive(&out, "probe-multi:latest", &images).unwrap();
        assert_eq!(bytes, fs::read(&out).unwrap());

        let files = tar_map(&bytes);
        let index: ImageIndex = serde_json::from_slice(&files["index.json"]).unwrap();
        assert_eq!(index.manifests.len(), 1);
        let top = &index.manifests[0];
        assert_eq!(top.media_type, MEDIA_TYPE_OCI_INDEX);
        assert_eq!(top.platform, None);
        assert_eq!(
            top.annotations[ANNOTATION_CONTAINERD_IMAGE_NAME],
            "docker.io/library/probe-multi:latest"
        );
        assert_eq!(top.annotations[ANNOTATION_REF_NAME], "latest");
        let nested: ImageIndex = serde_json::from_slice(blob(&files, top)).unwrap();
        assert_eq!(nested.media_type, MEDIA_TYPE_OCI_INDEX);
        let platforms: Vec<_> = nested
            .manifests
            .iter()
            .map(|m| m.platform.clone().unwrap())
            .collect();
        assert_eq!(platforms, [arm64, amd64]);
        let configs: Vec<_> = nested
            .manifests
            .iter()
            .map(|m| check_manifest(&files, m))
            .collect();
        assert_eq!(configs[0].rootfs.diff_ids, [arm[0].diff_id.clone()]);
        assert_eq!(configs[1].rootfs.diff_ids, [amd[0].diff_id.clone()]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn docker_archive_is_consistent() {
        let dir = scratch("docker");
        let layers = [
            build_layer(&sample_files()).unwrap(),
            build_layer(&[ImageFile::bytes("extra", b"x".to_vec(), 0o644)]).unwrap(),
        ];
        let config = probe_config();
        let out = dir.join("d.tar");
        write_docker_archive(
            &out,
            "probe-docker:latest",
            &layers,
            &config,
            &Platform::linux_amd64(),
        )
        .unwrap();
        let bytes = fs::read(&out).unwrap();
        write_docker_archive(
            &out,
            "probe-docker:latest",
            &layers,
            &config,
            &Platform::linux_amd64(),
        )
        .unwrap();
        assert_eq!(bytes, fs::read(&out).unwrap());

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
        let cfg: ConfigFile = serde_json::from_slice(config_bytes).unwrap();
        assert_eq!(entry.layers.len(), 2);
        for ((path, layer), diff_id) in entry.layers.iter().zip(&layers).zip(&cfg.rootfs.diff_ids) {
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

    #[test]
    fn negative_archives() {
        let dir = scratch("negative");
        let layers = [build_layer(&sample_files()).unwrap()];
        let config = probe_config();
        let good = dir.join("good.tar");
        write_oci_archive(&good, "probe", &layers, &config, &Platform::linux_amd64()).unwrap();
        let good_len = fs::metadata(&good).unwrap().len();

        // Truncated copy.
        let short = dir.join("short.tar");
        assert_eq!(
            truncate_file(&good, &short, good_len * 6 / 10).unwrap(),
            good_len * 6 / 10
        );
        let short_bytes = fs::read(&short).unwrap();
        assert!((short_bytes.len() as u64) < good_len);
        assert_eq!(
            short_bytes[..],
            fs::read(&good).unwrap()[..short_bytes.len()]
        );

        // Bad digest: the blob keeps its name but not its content.
        let bad = dir.join("bad.tar");
        write_bad_digest_oci_archive(
            &bad,
            "bad-digest",
            &layers,
            &config,
            &Platform::linux_amd64(),
        )
        .unwrap();
        let files = tar_map(&fs::read(&bad).unwrap());
        let name = format!("blobs/sha256/{}", digest_hex(&layers[0].digest).unwrap());
        let data = &files[&name];
        assert_eq!(data.len(), layers[0].gz_bytes.len());
        assert_ne!(sha256_digest(data), layers[0].digest);
        let differing = data
            .iter()
            .zip(&layers[0].gz_bytes)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(differing, 1);

        // arm64 only.
        let arm = dir.join("arm.tar");
        write_oci_archive(
            &arm,
            "arm64-only",
            &layers,
            &config,
            &Platform::linux_arm64(),
        )
        .unwrap();
        let files = tar_map(&fs::read(&arm).unwrap());
        let index: ImageIndex = serde_json::from_slice(&files["index.json"]).unwrap();
        assert_eq!(index.manifests.len(), 1);
        assert_eq!(index.manifests[0].platform, Some(Platform::linux_arm64()));
        assert_eq!(
            check_manifest(&files, &index.manifests[0]).architecture,
            "arm64"
        );

        // Non-UTF-8 name in the layer tar.
        let mut files = sample_files();
        files.push(non_utf8_file());
        let layer = build_layer(&files).unwrap();
        let paths: Vec<_> = tar_entries(&layer.tar_bytes)
            .into_iter()
            .map(|(p, _, _)| p)
            .collect();
        assert!(paths.iter().any(|p| p == NON_UTF8_NAME));
        assert!(layer
            .tar_bytes
            .windows(NON_UTF8_NAME.len())
            .any(|w| w == NON_UTF8_NAME));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn test_image_set_builds() {
        let busybox = Path::new("/bin/busybox");
        if !busybox.is_file() {
            eprintln!("skipping: /bin/busybox not installed");
            return;
        }
        let sources = TestImageSources {
            probe: PathBuf::from("/bin/true"),
            busybox: busybox.into(),
        };
        let (d1, d2) = (scratch("set1"), scratch("set2"));
        let first = build_test_images(&d1, &sources).unwrap();
        let second = build_test_images(&d2, &sources).unwrap();
        let names: Vec<_> = first
            .iter()
            .map(|w| w.path.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "probe.oci.tar",
                "probe.docker.tar",
                "probe-multi.oci.tar",
                "probe-user.oci.tar",
                "busybox.oci.tar",
                "truncated.oci.tar",
                "arm64-only.oci.tar",
                "bad-digest.oci.tar",
                "non-utf8.oci.tar"
            ]
        );
        for (a, b) in first.iter().zip(&second) {
            assert_eq!(
                fs::read(&a.path).unwrap(),
                fs::read(&b.path).unwrap(),
                "{:?} differs",
                a.path
            );
            assert_eq!(a.size, fs::metadata(&a.path).unwrap().len());
        }

        let probe = tar_map(&fs::read(d1.join("probe.oci.tar")).unwrap());
        let index: ImageIndex = serde_json::from_slice(&probe["index.json"]).unwrap();
        assert_eq!(
            index.manifests[0].annotations[ANNOTATION_CONTAINERD_IMAGE_NAME],
            PROBE_IMAGE
        );

        let user = tar_map(&fs::read(d1.join("probe-user.oci.tar")).unwrap());
        let index: ImageIndex = serde_json::from_slice(&user["index.json"]).unwrap();
        assert_eq!(
            index.manifests[0].annotations[ANNOTATION_CONTAINERD_IMAGE_NAME],
            PROBE_USER_IMAGE
        );
        let cfg = check_manifest(&user, &index.manifests[0]);
        assert_eq!(cfg.config.user.as_deref(), Some("65534:65534"));
        assert_eq!(cfg.config.working_dir.as_deref(), Some("/tmp"));

        let bb = tar_map(&fs::read(d1.join("busybox.oci.tar")).unwrap());
        let index: ImageIndex = serde_json::from_slice(&bb["index.json"]).unwrap();
        let manifest: ImageManifest =
            serde_json::from_slice(blob(&bb, &index.manifests[0])).unwrap();
        let layer = tar_entries(&gunzip(blob(&bb, &manifest.layers[0])));
        let sh = layer.iter().find(|(p, _, _)| p == b"bin/sh").unwrap();
        assert_eq!(sh.1, tar::EntryType::Symlink);
        let busybox_entry = layer.iter().find(|(p, _, _)| p == b"bin/busybox").unwrap();
        assert_eq!(busybox_entry.2, fs::read(busybox).unwrap());

        let truncated = first
            .iter()
            .find(|w| w.path.ends_with("truncated.oci.tar"))
            .unwrap();
        assert!(truncated.size < first[0].size);
        fs::remove_dir_all(d1).unwrap();
        fs::remove_dir_all(d2).unwrap();
    }
}
