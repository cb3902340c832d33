//! Pushing an image from the store to a registry (`runlet image push`): every blob the
//! manifest names (config, layers) is asked for with a `HEAD` and uploaded only when the
//! registry lacks it; the manifest goes last, so the registry never holds a manifest whose
//! blobs are missing. The upload is oci-client's (chunked `PATCH`es, then the `PUT` that
//! names the digest, which the registry checks). Reading the store is the containerd
//! side's, through [`BlobSource`].

use std::future::Future;
use std::pin::Pin;

use futures::TryStreamExt;
use oci_spec::image::ImageManifest;

use super::remote::Remote;
use super::{ByteStream, RegistryError};

/// The manifest an image record resolves to, as stored.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub media_type: String,
    pub digest: String,
    pub bytes: Vec<u8>,
}

/// What [`BlobSource::open`] returns.
pub type OpenFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ByteStream, RegistryError>> + Send + 'a>>;

/// Where a push reads blobs from: the content store, or a test's script.
pub trait BlobSource: Send + Sync {
    /// Opens blob `digest` for reading, whole.
    fn open<'a>(&'a self, digest: &'a str) -> OpenFuture<'a>;
}

/// Reports what a push does, blob by blob.
pub trait PushProgress: Send + Sync {
    /// Blob `digest` is being uploaded (`present`: the registry had it; nothing is sent).
    fn blob(&self, digest: &str, size: u64, present: bool);
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub name: String,
    pub digest: String,
    /// Bytes of the image (blobs and manifest).
    pub size: u64,
    /// Bytes uploaded.
    pub uploaded: u64,
}

/// The blobs a manifest names, in upload order (config first, then the layers), each once.
pub fn blobs(manifest: &ImageManifest) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    let all = std::iter::once(manifest.config()).chain(manifest.layers());
    for d in all {
        let digest = d.digest().to_string();
        if !out.iter().any(|(seen, _)| *seen == digest) {
            out.push((digest, d.size()));
        }
    }
    out
}

/// Pushes `manifest` and its blobs, read from `source`, to `remote` (connected for push, at
/// the target reference).
pub async fn push(
    remote: &Remote,
    source: &dyn BlobSource,
    manifest: &StoredManifest,
    progress: &dyn PushProgress,
) -> Result<Pushed, RegistryError> {
    let m: ImageManifest =
        serde_json::from_slice(&manifest.bytes).map_err(|e| RegistryError::Unsupported {
            reference: remote.name().to_string(),
            detail: format!("the stored manifest is not valid: {e}"),
        })?;
    let (client, reference) = remote.client();
    let mut uploaded = 0;
    let mut size = manifest.bytes.len() as u64;
    for (digest, len) in blobs(&m) {
        size += len;
        let present = client
            .blob_exists(reference, &digest)
            .await
            .map_err(|e| remote.error(e))?;
        progress.blob(&digest, len, present);
        if present {
            continue;
        }
        let stream = source.open(&digest).await?.map_err(|e| {
            oci_client::errors::OciDistributionError::GenericError(Some(e.to_string()))
        });
        client
            .push_blob_stream(reference, stream, &digest, Some(len))
            .await
            .map_err(|e| remote.error(e))?;
        uploaded += len;
    }
    let content_type =
        reqwest::header::HeaderValue::from_str(&manifest.media_type).map_err(|e| {
            RegistryError::Unsupported {
                reference: remote.name().to_string(),
                detail: format!("media type {:?}: {e}", manifest.media_type),
            }
        })?;
    client
        .push_manifest_raw(reference, manifest.bytes.clone(), content_type)
        .await
        .map_err(|e| remote.error(e))?;
    Ok(Pushed {
        name: remote.name().to_string(),
        digest: manifest.digest.clone(),
        size,
        uploaded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_config_then_layers_each_once() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let m: ImageManifest = serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d('c'), "size": 3},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d('a'), "size": 10},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d('b'), "size": 20},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d('a'), "size": 10},
            ]
        }))
        .unwrap();
        assert_eq!(blobs(&m), vec![(d('c'), 3), (d('a'), 10), (d('b'), 20)]);
    }
}
