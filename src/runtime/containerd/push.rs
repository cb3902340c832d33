//! The store's side of `runlet image push`: an image's blobs, streamed out of the content
//! store. The manifest pushed is `Containerd::stored_manifest` (`images.rs`), the one the
//! image runs from.

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::ReadContentRequest;
use futures::StreamExt;

use super::client::{grpc, Containerd};
use crate::image::registry::push::{BlobSource, OpenFuture};
use crate::image::registry::{ByteStream, RegistryError};

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
