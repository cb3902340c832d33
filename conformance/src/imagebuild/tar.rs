//! The deterministic tar writer shared by layers and archives (uid/gid 0, fixed mtime), gzip
//! without timestamps, and sha256 digests.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};

/// Fixed modification time of every tar entry: 2024-01-01T00:00:00Z.
pub const FIXED_MTIME: u64 = 1_704_067_200;

/// Minimal deterministic tar writer shared by layers and archives.
pub(super) struct TarWriter {
    builder: tar::Builder<Vec<u8>>,
}

impl TarWriter {
    pub(super) fn new() -> Self {
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
    pub(super) fn dir(&mut self, path: &[u8], mode: u32) -> Result<()> {
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

    pub(super) fn file(&mut self, path: &[u8], data: &[u8], mode: u32) -> Result<()> {
        let mut header = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.builder
            .append_data(&mut header, bytes_path(path), data)
            .with_context(|| format!("adding file {:?} to tar", String::from_utf8_lossy(path)))
    }

    pub(super) fn symlink(&mut self, path: &[u8], target: &str, mode: u32) -> Result<()> {
        let mut header = Self::header(tar::EntryType::Symlink, mode, 0);
        self.builder
            .append_link(&mut header, bytes_path(path), target)
            .with_context(|| format!("adding symlink {:?} to tar", String::from_utf8_lossy(path)))
    }

    pub(super) fn finish(self) -> Result<Vec<u8>> {
        self.builder.into_inner().context("finishing tar")
    }
}

/// A `Path` made of raw bytes (Unix only), so non-UTF-8 names survive.
fn bytes_path(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

pub(super) fn gzip(data: &[u8]) -> Result<Vec<u8>> {
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

pub(super) fn digest_hex(digest: &str) -> Result<&str> {
    digest
        .strip_prefix("sha256:")
        .ok_or_else(|| anyhow!("digest {digest:?} is not sha256"))
}

pub(super) fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}
