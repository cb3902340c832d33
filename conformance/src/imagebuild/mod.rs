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
//!
//! One concern per file: [`tar`] (the deterministic tar writer, gzip, digests), [`layer`]
//! (layer contents → layer tar), [`config`] (the image config and platform), [`reference`]
//! (image names), [`layout`] (OCI image layout archives), [`docker`] (docker-save archives),
//! [`broken`] (deliberately broken archives), [`catalogue`] (the suite's image set).
//! The JSON documents are `oci_spec::image` types.

mod broken;
mod catalogue;
mod config;
mod docker;
mod layer;
mod layout;
mod reference;
mod tar;
#[cfg(test)]
mod testutil;

pub use broken::{non_utf8_file, truncate_file, write_bad_digest_oci_archive, NON_UTF8_NAME};
#[cfg(test)]
use catalogue::placeholder_layer;
pub use catalogue::*;
pub use config::{config_json, ImageConfig, Platform, FIXED_CREATED};
pub use docker::{write_docker_archive, DockerManifestEntry};
pub use layer::{build_layer, build_layer_tar, FileSource, ImageFile, Layer};
pub use layout::{
    write_oci_archive, write_oci_index_archive, PlatformImage, ANNOTATION_CONTAINERD_IMAGE_NAME,
    ANNOTATION_REF_NAME,
};
pub use reference::ImageRef;
pub use tar::{sha256_digest, FIXED_MTIME};
