//! Pass 1 over an archive: index every regular file of the outer tar, hash it, check a blob's
//! content against its `blobs/sha256/<hex>` name, keep the small JSON documents, and check
//! the tar is whole (its end-of-archive marker is there).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::{ArchiveError, Progress, MAX_JSON};

/// A regular file of the archive: where its bytes are, and their sha256 (hex).
pub(super) struct Entry {
    pub offset: u64,
    pub size: u64,
    pub sha256: String,
}

/// What pass 1 found: every file by name, and the JSON documents' bytes by name.
pub(super) struct Scan {
    pub entries: HashMap<String, Entry>,
    pub docs: HashMap<String, Vec<u8>>,
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path) -> impl Fn(String) -> ArchiveError + '_ {
    move |detail| ArchiveError::Corrupt {
        path: path.to_path_buf(),
        detail,
    }
}

pub(super) fn scan(path: &Path, progress: &mut dyn Progress) -> Result<Scan, ArchiveError> {
    let corrupt = corrupt(path);
    let file = File::open(path).map_err(io_err(path))?;
    let total = file.metadata().map_err(io_err(path))?.len();

    let mut entries: HashMap<String, Entry> = HashMap::new();
    let mut docs: HashMap<String, Vec<u8>> = HashMap::new();
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
            docs.insert(name.clone(), kept);
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
    Ok(Scan { entries, docs })
}

fn check_tar_end(path: &Path, total: u64) -> Result<(), ArchiveError> {
    if total < 1024 || !total.is_multiple_of(512) {
        return Err(corrupt(path)(format!(
            "size {total} is not a whole number of 512-byte tar blocks"
        )));
    }
    let mut f = File::open(path).map_err(io_err(path))?;
    let mut tail = [0u8; 1024];
    f.seek(SeekFrom::End(-1024))
        .and_then(|_| f.read_exact(&mut tail))
        .map_err(io_err(path))?;
    if tail.iter().any(|&b| b != 0) {
        return Err(corrupt(path)(
            "the end-of-archive marker is missing (truncated?)".into(),
        ));
    }
    Ok(())
}

/// `size` bytes at `offset` of the archive.
pub(super) fn open_blob(
    path: &Path,
    offset: u64,
    size: u64,
) -> Result<io::Take<File>, ArchiveError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    f.seek(SeekFrom::Start(offset)).map_err(io_err(path))?;
    Ok(f.take(size))
}

/// True when the blob starts with gzip's magic number.
pub(super) fn is_gzip(path: &Path, offset: u64, size: u64) -> Result<bool, ArchiveError> {
    let mut r = open_blob(path, offset, size)?;
    let mut magic = [0u8; 2];
    let n = r.read(&mut magic).map_err(io_err(path))?;
    Ok(n == 2 && magic == [0x1f, 0x8b])
}
