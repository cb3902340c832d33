//! OCI image layout archives: `oci-layout`, `index.json`, `blobs/sha256/<hex>`, layers
//! gzip-compressed, single-platform or a nested multi-platform index.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{ensure, Result};
use oci_spec::image::{
    Descriptor, DescriptorBuilder, Digest, ImageIndex, ImageIndexBuilder, ImageManifestBuilder,
    MediaType,
};

use super::config::{config_json, to_json, ImageConfig, Platform};
use super::layer::Layer;
use super::reference::ImageRef;
use super::tar::{sha256_digest, write_file, TarWriter};

/// OCI annotation holding the reference name (the tag) of an `index.json` entry.
pub use oci_spec::image::ANNOTATION_REF_NAME;
/// containerd annotation holding the full image name of an `index.json` entry.
pub const ANNOTATION_CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";

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
pub(super) struct OciLayout {
    /// Blobs by hex digest. Normally the key is the hash of the value; the
    /// bad-digest helper breaks that on purpose.
    pub(super) blobs: BTreeMap<String, Vec<u8>>,
}

/// A descriptor of `data`.
fn descriptor(media_type: MediaType, data: &[u8]) -> Result<Descriptor> {
    let digest: Digest = sha256_digest(data).parse()?;
    Ok(DescriptorBuilder::default()
        .media_type(media_type)
        .digest(digest)
        .size(data.len() as u64)
        .build()?)
}

/// An image index listing `manifests`.
fn index(manifests: Vec<Descriptor>) -> Result<ImageIndex> {
    Ok(ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()?)
}

impl OciLayout {
    fn add_blob(&mut self, media_type: MediaType, data: Vec<u8>) -> Result<Descriptor> {
        let descriptor = descriptor(media_type, &data)?;
        self.blobs
            .insert(descriptor.digest().digest().to_string(), data);
        Ok(descriptor)
    }

    /// Adds config, layers and manifest; returns the manifest descriptor
    /// with `platform` set.
    fn add_image(&mut self, image: PlatformImage<'_>) -> Result<Descriptor> {
        let config = config_json(image.config, image.layers, image.platform)?;
        let config = self.add_blob(MediaType::ImageConfig, config)?;
        let layers = image
            .layers
            .iter()
            .map(|layer| self.add_blob(MediaType::ImageLayerGzip, layer.gz_bytes.clone()))
            .collect::<Result<Vec<_>>>()?;
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config)
            .layers(layers)
            .build()?;
        let mut descriptor = self.add_blob(MediaType::ImageManifest, to_json(&manifest)?)?;
        descriptor.set_platform(Some(image.platform.to_oci()?));
        Ok(descriptor)
    }

    /// Writes the layout as a tar to `out` with `index.json` listing
    /// `manifests`.
    pub(super) fn write(&self, out: &Path, manifests: Vec<Descriptor>) -> Result<()> {
        let mut tar = TarWriter::new();
        tar.file(b"oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, 0o644)?;
        tar.file(b"index.json", &to_json(&index(manifests)?)?, 0o644)?;
        tar.dir(b"blobs", 0o755)?;
        tar.dir(b"blobs/sha256", 0o755)?;
        for (hex, data) in &self.blobs {
            tar.file(format!("blobs/sha256/{hex}").as_bytes(), data, 0o644)?;
        }
        write_file(out, &tar.finish()?)
    }
}

pub(super) fn single_platform_layout(
    image_ref: &str,
    layers: &[Layer],
    config: &ImageConfig,
    platform: &Platform,
) -> Result<(OciLayout, Descriptor)> {
    let name = ImageRef::parse(image_ref)?;
    let mut layout = OciLayout::default();
    let mut manifest = layout.add_image(PlatformImage {
        platform,
        layers,
        config,
    })?;
    manifest.set_annotations(Some(name.annotations()));
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
    let (layout, manifest) = single_platform_layout(image_ref, layers, config, platform)?;
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
    let mut nested = layout.add_blob(MediaType::ImageIndex, to_json(&index(manifests)?)?)?;
    nested.set_annotations(Some(name.annotations()));
    layout.write(out, vec![nested])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imagebuild::testutil::*;
    use crate::imagebuild::{build_layer, placeholder_layer, probe_config};
    use oci_spec::image::ImageManifest;
    use std::fs;

    #[test]
    fn oci_archive_round_trips() {
        let (dir, layers, config) = sample("oci");
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
        assert_eq!(index.schema_version(), 2);
        assert_eq!(index.media_type(), &Some(MediaType::ImageIndex));
        assert_eq!(index.manifests().len(), 1);
        let desc = &index.manifests()[0];
        assert_eq!(annotation(desc, ANNOTATION_REF_NAME), "latest");
        assert_eq!(
            annotation(desc, ANNOTATION_CONTAINERD_IMAGE_NAME),
            "docker.io/library/probe:latest"
        );
        assert_eq!(
            desc.platform(),
            &Some(Platform::linux_amd64().to_oci().unwrap())
        );

        let cfg = check_manifest(&files, desc);
        assert_eq!(cfg.architecture().to_string(), "amd64");
        assert_eq!(cfg.os().to_string(), "linux");
        let run = cfg.config().as_ref().unwrap();
        assert_eq!(run.entrypoint(), &Some(vec!["/probe".to_string()]));
        assert_eq!(run.cmd(), &None);
        assert_eq!(run.env(), &Some(config.env.clone()));
        assert_eq!(run.working_dir().as_deref(), Some("/"));
        assert_eq!(run.user(), &None);
        assert_eq!(run.exposed_ports(), &Some(vec!["8080/tcp".to_string()]));
        assert_eq!(cfg.rootfs().diff_ids(), &[layers[0].diff_id.clone()]);

        // Raw JSON spelling of the config keys.
        let manifest: ImageManifest = serde_json::from_slice(blob(&files, desc)).unwrap();
        let raw: serde_json::Value =
            serde_json::from_slice(blob(&files, manifest.config())).unwrap();
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
        assert_eq!(index.manifests().len(), 1);
        let top = &index.manifests()[0];
        assert_eq!(top.media_type(), &MediaType::ImageIndex);
        assert_eq!(top.platform(), &None);
        assert_eq!(
            annotation(top, ANNOTATION_CONTAINERD_IMAGE_NAME),
            "docker.io/library/probe-multi:latest"
        );
        assert_eq!(annotation(top, ANNOTATION_REF_NAME), "latest");
        let nested: ImageIndex = serde_json::from_slice(blob(&files, top)).unwrap();
        assert_eq!(nested.media_type(), &Some(MediaType::ImageIndex));
        let platforms: Vec<_> = nested
            .manifests()
            .iter()
            .map(|m| m.platform().clone().unwrap())
            .collect();
        assert_eq!(
            platforms,
            [arm64.to_oci().unwrap(), amd64.to_oci().unwrap()]
        );
        let configs: Vec<_> = nested
            .manifests()
            .iter()
            .map(|m| check_manifest(&files, m))
            .collect();
        assert_eq!(configs[0].rootfs().diff_ids(), &[arm[0].diff_id.clone()]);
        assert_eq!(configs[1].rootfs().diff_ids(), &[amd[0].diff_id.clone()]);
        fs::remove_dir_all(dir).unwrap();
    }
}
