//! Pass 3 over an archive: decompress every layer once; its digest must equal the diffID in
//! the image config, and every file name (and link target) in it must be UTF-8 (NAME-1).

use std::collections::HashSet;
use std::io::{self, BufRead, Read};

use sha2::{Digest, Sha256};

use super::scan::open_blob;
use super::{ArchiveError, BlobSource, ImportPlan, PlannedLayer, Progress};

pub(super) fn verify(
    plan: &mut ImportPlan,
    progress: &mut dyn Progress,
) -> Result<(), ArchiveError> {
    let path = plan.path.clone();
    let mut checked: HashSet<String> = HashSet::new();
    let layers: Vec<PlannedLayer> = plan.images.iter().flat_map(|i| i.layers.clone()).collect();
    let total = layers.len() as u64;
    for (i, layer) in layers.iter().enumerate() {
        let digest = layer.desc.digest().to_string();
        if !checked.insert(digest.clone()) {
            continue;
        }
        progress.step("checking layers", i as u64, total);
        let blob = plan
            .blobs
            .iter()
            .find(|b| b.digest == digest)
            .ok_or_else(|| ArchiveError::MissingBlob {
                path: path.clone(),
                digest: digest.clone(),
            })?;
        let (offset, size) = match blob.source {
            BlobSource::Archive { offset, size } => (offset, size),
            BlobSource::Memory(_) => continue,
        };
        let raw = open_blob(&path, offset, size)?;
        let mut peek = io::BufReader::new(raw);
        let gz = {
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
        let corrupt = |e: io::Error| ArchiveError::Corrupt {
            path: path.clone(),
            detail: format!("layer {digest}: {e}"),
        };
        {
            let mut tar = tar::Archive::new(&mut hashing);
            for entry in tar.entries().map_err(corrupt)? {
                let entry = entry.map_err(corrupt)?;
                let names = [Some(entry.path_bytes()), entry.link_name_bytes()];
                for name in names.into_iter().flatten() {
                    if std::str::from_utf8(&name).is_err() {
                        return Err(ArchiveError::NonUtf8Name {
                            path: path.clone(),
                            layer: digest.clone(),
                            name: String::from_utf8_lossy(&name).into_owned(),
                        });
                    }
                }
            }
        }
        // The tar reader stops at the end marker; hash whatever padding follows too.
        io::copy(&mut hashing, &mut io::sink()).map_err(corrupt)?;
        let actual = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));
        if actual != layer.diff_id {
            return Err(ArchiveError::DiffIdMismatch {
                path: path.clone(),
                layer: digest,
                expected: layer.diff_id.clone(),
                actual,
            });
        }
    }
    progress.step("checking layers", total, total);
    Ok(())
}

/// Hashes what passes through it.
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
