//! Media types runlet reads: the OCI ones are `oci_spec::image::MediaType`; Docker's, which
//! oci-spec has no variants for, are defined here, once. Also the annotation that names an
//! image in an OCI layout's `index.json` the way containerd writes it.

use oci_spec::image::MediaType;

/// A Docker manifest list (the Docker spelling of an image index).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// A Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// A Docker image manifest, schema 1 (signed; deprecated, refused).
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// A Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// A gzip-compressed Docker layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// An uncompressed Docker layer.
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// containerd's annotation for an image's full name on an `index.json` entry.
pub const ANNOTATION_CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";
pub use oci_spec::image::ANNOTATION_REF_NAME;

/// What a descriptor in an index points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An image index or a Docker manifest list.
    Index,
    /// An image manifest (OCI or Docker schema 2).
    Manifest,
    /// A layer runlet can unpack (tar or tar+gzip, OCI or Docker spelling).
    Layer,
    /// Anything else.
    Other,
}

/// Classifies a media type, treating the OCI and Docker spellings alike.
pub fn kind(media_type: &MediaType) -> Kind {
    match media_type {
        MediaType::ImageIndex => Kind::Index,
        MediaType::ImageManifest => Kind::Manifest,
        MediaType::ImageLayer | MediaType::ImageLayerGzip => Kind::Layer,
        MediaType::Other(m) => match m.as_str() {
            DOCKER_MANIFEST_LIST => Kind::Index,
            DOCKER_MANIFEST => Kind::Manifest,
            DOCKER_LAYER | DOCKER_LAYER_GZIP => Kind::Layer,
            _ => Kind::Other,
        },
        _ => Kind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_and_docker_spellings_are_one_kind() {
        let table = [
            ("application/vnd.oci.image.index.v1+json", Kind::Index),
            (DOCKER_MANIFEST_LIST, Kind::Index),
            ("application/vnd.oci.image.manifest.v1+json", Kind::Manifest),
            (DOCKER_MANIFEST, Kind::Manifest),
            ("application/vnd.oci.image.layer.v1.tar", Kind::Layer),
            ("application/vnd.oci.image.layer.v1.tar+gzip", Kind::Layer),
            (DOCKER_LAYER, Kind::Layer),
            (DOCKER_LAYER_GZIP, Kind::Layer),
            ("application/vnd.oci.image.layer.v1.tar+zstd", Kind::Other),
            (DOCKER_SCHEMA1, Kind::Other),
            ("", Kind::Other),
        ];
        for (media_type, want) in table {
            assert_eq!(kind(&MediaType::from(media_type)), want, "{media_type}");
        }
    }
}
