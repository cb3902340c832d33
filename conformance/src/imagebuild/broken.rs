//! Deliberately broken archives for negative tests: a truncated copy, a layer blob that no
//! longer matches its digest, a file name that is not UTF-8.

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};

use super::config::{ImageConfig, Platform};
use super::layer::{ImageFile, Layer};
use super::layout::single_platform_layout;
use super::tar::{digest_hex, write_file};

/// Name of the file with an invalid UTF-8 name put into the `non-utf8` image.
pub const NON_UTF8_NAME: &[u8] = b"bad\xffname";

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
    let (mut layout, manifest) = single_platform_layout(image_ref, layers, config, platform)?;
    let blob = layout
        .blobs
        .get_mut(digest_hex(&first.digest)?)
        .ok_or_else(|| anyhow!("layer blob {} missing from layout", first.digest))?;
    let middle = blob.len() / 2;
    blob[middle] ^= 0xff;
    layout.write(out, vec![manifest])
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imagebuild::testutil::*;
    use crate::imagebuild::{build_layer, sha256_digest, write_oci_archive};
    use oci_spec::image::ImageIndex;

    #[test]
    fn negative_archives() {
        let (dir, layers, config) = sample("negative");
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
        let (amd64, arm64) = (Platform::linux_amd64(), Platform::linux_arm64());
        write_bad_digest_oci_archive(&bad, "bad-digest", &layers, &config, &amd64).unwrap();
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
        write_oci_archive(&arm, "arm64-only", &layers, &config, &arm64).unwrap();
        let files = tar_map(&fs::read(&arm).unwrap());
        let index: ImageIndex = serde_json::from_slice(&files["index.json"]).unwrap();
        assert_eq!(index.manifests().len(), 1);
        assert_eq!(
            index.manifests()[0].platform(),
            &Some(Platform::linux_arm64().to_oci().unwrap())
        );
        assert_eq!(
            check_manifest(&files, &index.manifests()[0])
                .architecture()
                .to_string(),
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
}
