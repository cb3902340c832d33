//! Helpers shared by the builder's tests: scratch dirs, reading tars back, checking blobs.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::PathBuf;

use flate2::read::GzDecoder;
use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest, MediaType};

use super::catalogue::base_files;
use super::layer::ImageFile;
use super::tar::sha256_digest;

/// A fresh, empty scratch directory under the system temp dir.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("runlet-imagebuild-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Entries of a tar: raw path → (entry type, data).
pub fn tar_entries(bytes: &[u8]) -> Vec<(Vec<u8>, tar::EntryType, Vec<u8>)> {
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

pub fn tar_map(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    tar_entries(bytes)
        .into_iter()
        .map(|(path, _, data)| (String::from_utf8(path).unwrap(), data))
        .collect()
}

/// The blob `desc` names, checked against its digest and size.
pub fn blob<'a>(files: &'a BTreeMap<String, Vec<u8>>, desc: &Descriptor) -> &'a [u8] {
    let data = files
        .get(&format!("blobs/sha256/{}", desc.digest().digest()))
        .unwrap_or_else(|| panic!("blob {} missing", desc.digest()));
    assert_eq!(
        sha256_digest(data),
        desc.digest().to_string(),
        "blob content matches digest"
    );
    assert_eq!(
        data.len() as u64,
        desc.size(),
        "descriptor size matches blob"
    );
    data
}

pub fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    GzDecoder::new(data).read_to_end(&mut out).unwrap();
    out
}

pub fn sample_files() -> Vec<ImageFile> {
    let mut files = vec![
        ImageFile::bytes("/probe", b"#!fake probe binary".to_vec(), 0o755),
        ImageFile::symlink("usr/bin/sh", "/probe"),
    ];
    files.extend(base_files());
    files
}

/// Checks a manifest blob and its config/layers; returns the config.
pub fn check_manifest(files: &BTreeMap<String, Vec<u8>>, desc: &Descriptor) -> ImageConfiguration {
    assert_eq!(desc.media_type(), &MediaType::ImageManifest);
    let manifest: ImageManifest = serde_json::from_slice(blob(files, desc)).unwrap();
    assert_eq!(manifest.schema_version(), 2);
    assert_eq!(manifest.config().media_type(), &MediaType::ImageConfig);
    let config: ImageConfiguration =
        serde_json::from_slice(blob(files, manifest.config())).unwrap();
    assert_eq!(config.rootfs().typ(), "layers");
    let diff_ids = config.rootfs().diff_ids();
    assert_eq!(diff_ids.len(), manifest.layers().len());
    assert_eq!(
        config.history().as_ref().unwrap().len(),
        manifest.layers().len()
    );
    for (layer, diff_id) in manifest.layers().iter().zip(diff_ids) {
        assert_eq!(layer.media_type(), &MediaType::ImageLayerGzip);
        let tar = gunzip(blob(files, layer));
        assert_eq!(
            &sha256_digest(&tar),
            diff_id,
            "diff_id is sha256 of the uncompressed layer"
        );
    }
    let platform = desc.platform().as_ref().unwrap();
    assert_eq!(platform.architecture(), config.architecture());
    assert_eq!(platform.os(), config.os());
    config
}

/// The annotation `key` of `desc`.
pub fn annotation<'a>(desc: &'a Descriptor, key: &str) -> &'a str {
    &desc.annotations().as_ref().unwrap()[key]
}

/// Runs `write` twice to `out` and checks both runs wrote the same bytes; returns them.
pub fn written_twice(out: &std::path::Path, write: impl Fn(&std::path::Path)) -> Vec<u8> {
    write(out);
    let first = fs::read(out).unwrap();
    write(out);
    assert_eq!(first, fs::read(out).unwrap(), "{out:?} is reproducible");
    first
}

/// A scratch dir, one layer of [`sample_files`] and the probe config: what most tests start from.
pub fn sample(name: &str) -> (PathBuf, [super::Layer; 1], super::ImageConfig) {
    let layers = [super::build_layer(&sample_files()).unwrap()];
    (scratch(name), layers, super::probe_config())
}
