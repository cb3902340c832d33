//! The store's side of `runlet image push`: the manifest an image record resolves to (its
//! linux/amd64 manifest when it names an index: the only one runlet keeps whole) and its
//! blobs, streamed out of the content store.

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{GetImageRequest, ReadContentRequest};
use futures::StreamExt;
use oci_spec::image::ImageIndex;

use super::client::{grpc, image_grpc, Containerd};
use crate::image::config::is_linux_amd64;
use crate::image::registry::plan::{doc_kind, DocKind};
use crate::image::registry::push::{BlobSource, OpenFuture, StoredManifest};
use crate::image::registry::{ByteStream, RegistryError};
use crate::runtime::RuntimeError;

impl Containerd {
    /// The manifest image `name` resolves to, as stored.
    pub async fn stored_manifest(&self, name: &str) -> Result<StoredManifest, RuntimeError> {
        let img = ImagesClient::new(self.channel())
            .get(self.req(GetImageRequest {
                name: name.to_string(),
            }))
            .await
            .map_err(image_grpc("get image", name))?
            .into_inner()
            .image
            .ok_or_else(|| RuntimeError::ImageNotFound {
                name: name.to_string(),
            })?;
        let target = img.target.unwrap_or_default();
        let (mut media_type, mut digest) = (target.media_type, target.digest);
        let bad = |detail: String| RuntimeError::Other {
            op: "read image",
            id: name.to_string(),
            detail,
        };
        for _ in 0..3 {
            let bytes = self.read_blob(&digest).await?;
            match doc_kind(&media_type, &bytes) {
                DocKind::Manifest => {
                    return Ok(StoredManifest {
                        media_type,
                        digest,
                        bytes,
                    })
                }
                DocKind::Index => {
                    let index: ImageIndex =
                        serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
                    let chosen = index
                        .manifests()
                        .iter()
                        .find(|d| {
                            d.platform()
                                .as_ref()
                                .is_some_and(|p| is_linux_amd64(p.os(), p.architecture()))
                        })
                        .ok_or_else(|| bad("the image index has no linux/amd64 manifest".into()))?;
                    media_type = chosen.media_type().to_string();
                    digest = chosen.digest().to_string();
                }
                DocKind::Schema1 => return Err(bad("a schema-1 manifest in the store".into())),
            }
        }
        Err(bad("indexes nested too deep".into()))
    }
}

impl BlobSource for Containerd {
    fn open<'a>(&'a self, digest: &'a str) -> OpenFuture<'a> {
        Box::pin(async move {
            let stream = ContentClient::new(self.channel())
                .read(self.req(ReadContentRequest {
                    digest: digest.to_string(),
                    offset: 0,
                    size: 0,
                }))
                .await
                .map_err(|s| RegistryError::Store(grpc("content read", digest)(s)))?
                .into_inner();
            let d = digest.to_string();
            let out: ByteStream = Box::pin(stream.map(move |r| {
                r.map(|c| bytes::Bytes::from(c.data))
                    .map_err(|s| RegistryError::Store(grpc("content read", &d)(s)))
            }));
            Ok(out)
        })
    }
}
