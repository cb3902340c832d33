//! Layer contents: the files of a layer, and the layer built from them (uncompressed tar for
//! docker-save archives, gzip for OCI layouts, with their digests).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};

use super::tar::{gzip, sha256_digest, TarWriter};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imagebuild::testutil::*;
    use crate::imagebuild::FIXED_MTIME;

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
}
