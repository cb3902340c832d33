//! One image's registry, connected: the scheme decided, credentials looked up, the auth
//! handshake done (oci-client: anonymous, basic, or the bearer-token flow). Manifests are
//! fetched here with the same client settings (runlet needs the raw document and its media
//! type, schema 1 included); blobs stream through oci-client, `Range` included.

use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use oci_client::client::{
    BlobResponse, Certificate, CertificateEncoding, ClientConfig, ClientProtocol,
};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use sha2::{Digest, Sha256};

use super::auth::{self, Credentials};
use super::transport::{https_failure, registry_host, scheme_for, HttpsFailure, Scheme};
use super::{BlobFetch, ByteStream, FetchFuture, RegistryError, RegistryOptions};
use crate::image::media;

/// The manifest media types runlet asks for, most wanted first.
pub const ACCEPT: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    media::DOCKER_MANIFEST_LIST,
    "application/vnd.oci.image.manifest.v1+json",
    media::DOCKER_MANIFEST,
    media::DOCKER_SCHEMA1,
    "application/vnd.docker.distribution.manifest.v1+json",
];

/// A manifest as the registry served it.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub digest: String,
    pub media_type: String,
}

/// An image's registry, ready for requests.
pub struct Remote {
    /// The normalised reference (`localhost:5000/app:1`).
    name: String,
    host: String,
    reference: Reference,
    client: Client,
    http: reqwest::Client,
    base: String,
    /// What goes in the `Authorization` header of runlet's own requests.
    authorization: Option<String>,
    looked: Vec<String>,
}

fn install_crypto() {
    // reqwest is built without a default provider (ring instead of aws-lc-sys).
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn certificates(opts: &RegistryOptions) -> Result<Vec<Certificate>, RegistryError> {
    opts.ca_files
        .iter()
        .map(|p| {
            std::fs::read(p)
                .map(|data| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data,
                })
                .map_err(|source| RegistryError::Config {
                    path: p.clone(),
                    source,
                })
        })
        .collect()
}

/// The TLS error under `e`, if the server spoke TLS and the handshake failed.
fn tls_error(registry: &str, e: &(dyn std::error::Error + 'static)) -> Option<RegistryError> {
    match https_failure(e) {
        HttpsFailure::NotTls => None,
        HttpsFailure::Untrusted(detail) => Some(RegistryError::Untrusted {
            registry: registry.to_string(),
            detail,
        }),
        HttpsFailure::Handshake(detail) => Some(RegistryError::Tls {
            registry: registry.to_string(),
            detail,
        }),
    }
}

/// The distribution client's reference for a normalised name, built from its parts.
fn oci_reference(name: &str) -> Option<Reference> {
    let p = crate::image::reference::parts(name)?;
    let (registry, repository) = (p.registry.to_string(), p.repository.to_string());
    Some(match (p.tag, p.digest) {
        (Some(t), Some(d)) => {
            Reference::with_tag_and_digest(registry, repository, t.to_string(), d.to_string())
        }
        (None, Some(d)) => Reference::with_digest(registry, repository, d.to_string()),
        (Some(t), None) => Reference::with_tag(registry, repository, t.to_string()),
        (None, None) => Reference::with_tag(registry, repository, "latest".to_string()),
    })
}

impl Remote {
    /// Connects to the registry of `name` (a normalised reference) for `op`.
    pub async fn connect(
        opts: &RegistryOptions,
        name: &str,
        op: RegistryOperation,
    ) -> Result<Remote, RegistryError> {
        install_crypto();
        let host = registry_host(name).to_string();
        let reference = oci_reference(name).ok_or_else(|| RegistryError::Unsupported {
            reference: name.to_string(),
            detail: "not a registry reference".into(),
        })?;
        let api_host = reference.resolve_registry().to_string();
        let certs = certificates(opts)?;
        let transport = |detail: String| RegistryError::Transport {
            reference: name.to_string(),
            registry: host.clone(),
            detail,
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .user_agent(concat!("runlet/", env!("CARGO_PKG_VERSION")));
        for c in &certs {
            builder = builder.tls_certs_merge([reqwest::Certificate::from_pem(&c.data)
                .map_err(|e| transport(format!("--registry-ca: {e}")))?]);
        }
        let http = builder.build().map_err(|e| transport(e.to_string()))?;
        let https = match scheme_for(&host, &opts.insecure) {
            Scheme::Https => true,
            // Docker's rule: HTTPS first; plain HTTP only when the server does not speak
            // TLS. One that does, and fails the handshake (a certificate runlet does not
            // trust), is an error that says so, not a retry over plain HTTP.
            Scheme::HttpsThenHttp => {
                let probe = http
                    .get(format!("https://{api_host}/v2/"))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                match probe {
                    Ok(_) => true,
                    Err(e) => match tls_error(&host, &e) {
                        Some(tls) => return Err(tls),
                        None => false,
                    },
                }
            }
        };
        let scheme = if https { "https" } else { "http" };
        let config = ClientConfig {
            protocol: if https {
                ClientProtocol::Https
            } else {
                ClientProtocol::Http
            },
            extra_root_certificates: certs,
            platform_resolver: None,
            max_concurrent_download: 4,
            connect_timeout: Some(Duration::from_secs(30)),
            ..Default::default()
        };
        let client = Client::try_from(config).map_err(|e| transport(e.to_string()))?;
        let lookup = auth::lookup(&host, opts.auth_file.as_deref())?;
        let registry_auth = match &lookup.credentials {
            Some(Credentials { username, password }) => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            None => RegistryAuth::Anonymous,
        };
        let mut remote = Remote {
            name: name.to_string(),
            host,
            reference,
            client,
            http,
            base: format!("{scheme}://{api_host}"),
            authorization: None,
            looked: lookup.looked,
        };
        let token = remote
            .client
            .auth(&remote.reference, &registry_auth, op)
            .await
            .map_err(|e| remote.error(e))?;
        remote.authorization = match (token, &lookup.credentials) {
            (Some(t), _) => Some(format!("Bearer {t}")),
            (None, Some(c)) => Some(format!(
                "Basic {}",
                base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    format!("{}:{}", c.username, c.password)
                )
            )),
            (None, None) => None,
        };
        Ok(remote)
    }

    /// The normalised reference.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The registry host (`localhost:5000`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The oci-client handle and reference, for pushes.
    pub fn client(&self) -> (&Client, &Reference) {
        (&self.client, &self.reference)
    }

    fn unauthorized(&self, detail: String) -> RegistryError {
        RegistryError::Unauthorized {
            reference: self.name.clone(),
            registry: self.host.clone(),
            detail,
            looked: self.looked.join(", "),
        }
    }

    /// Turns an oci-client error into one that names the image and registry.
    pub fn error(&self, e: OciDistributionError) -> RegistryError {
        if let Some(tls) = tls_error(&self.host, &e) {
            return tls;
        }
        match e {
            OciDistributionError::AuthenticationFailure(_) => {
                self.unauthorized("the token server refused the credentials".into())
            }
            OciDistributionError::UnauthorizedError { .. } => {
                self.unauthorized("401 Unauthorized".into())
            }
            OciDistributionError::DigestError(d) => RegistryError::DigestMismatch {
                reference: self.name.clone(),
                digest: String::new(),
                detail: d.to_string(),
            },
            OciDistributionError::ImageManifestNotFoundError(d) => RegistryError::NotFound {
                reference: self.name.clone(),
                registry: self.host.clone(),
                detail: d,
            },
            OciDistributionError::RegistryError { envelope, .. } => {
                let text = format!("{envelope}");
                if text.contains("UNAUTHORIZED") || text.contains("DENIED") {
                    self.unauthorized(text)
                } else if text.contains("UNKNOWN") {
                    RegistryError::NotFound {
                        reference: self.name.clone(),
                        registry: self.host.clone(),
                        detail: text,
                    }
                } else {
                    RegistryError::Transport {
                        reference: self.name.clone(),
                        registry: self.host.clone(),
                        detail: text,
                    }
                }
            }
            OciDistributionError::ServerError { code: 401, .. }
            | OciDistributionError::ServerError { code: 403, .. } => {
                self.unauthorized(format!("{e}"))
            }
            other => RegistryError::Transport {
                reference: self.name.clone(),
                registry: self.host.clone(),
                detail: crate::util::Chain(&other).to_string(),
            },
        }
    }

    fn get(&self, url: &str) -> reqwest::RequestBuilder {
        let r = self.http.get(url);
        match &self.authorization {
            Some(a) => r.header(reqwest::header::AUTHORIZATION, a),
            None => r,
        }
    }

    /// Fetches the manifest `reference` (a tag or a digest) of this image's repository. A
    /// digest, asked for or announced by the registry, is checked against the document
    /// (for schema 1 the registry's digest covers the unsigned payload; see `schema1`).
    pub async fn manifest(&self, reference: &str) -> Result<Fetched, RegistryError> {
        let url = format!(
            "{}/v2/{}/manifests/{reference}",
            self.base,
            self.reference.repository()
        );
        let transport = |detail: String| RegistryError::Transport {
            reference: self.name.clone(),
            registry: self.host.clone(),
            detail,
        };
        let resp = self
            .get(&url)
            .header(reqwest::header::ACCEPT, ACCEPT.join(", "))
            .send()
            .await
            .map_err(|e| {
                tls_error(&self.host, &e)
                    .unwrap_or_else(|| transport(crate::util::Chain(&e).to_string()))
            })?;
        let status = resp.status();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.split(';').next().unwrap_or(s).trim().to_string())
        };
        let media_type = header("content-type").unwrap_or_default();
        let announced = header("docker-content-digest");
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound {
                reference: self.name.clone(),
                registry: self.host.clone(),
                detail: format!("manifest {reference}: 404"),
            });
        }
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(self.unauthorized(format!("{status}")));
        }
        if !status.is_success() {
            return Err(transport(format!("manifest {reference}: {status}")));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| transport(crate::util::Chain(&e).to_string()))?
            .to_vec();
        if bytes.len() > 8 << 20 {
            return Err(transport(format!(
                "manifest {reference} is larger than 8 MiB"
            )));
        }
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        let schema1 = media_type.starts_with("application/vnd.docker.distribution.manifest.v1");
        let digest = if schema1 {
            // The registry's digest is of the payload without signatures; runlet stores a
            // converted image, named by its own manifest's digest.
            announced.unwrap_or(actual)
        } else {
            for want in [
                reference.starts_with("sha256:").then_some(reference),
                announced.as_deref(),
            ]
            .into_iter()
            .flatten()
            {
                if want != actual {
                    return Err(RegistryError::DigestMismatch {
                        reference: self.name.clone(),
                        digest: want.to_string(),
                        detail: format!("the manifest hashes to {actual}"),
                    });
                }
            }
            actual
        };
        Ok(Fetched {
            bytes,
            digest,
            media_type,
        })
    }

    /// The size of blob `digest`, from a `HEAD` (schema-1 manifests do not list sizes).
    pub async fn blob_size(&self, digest: &str) -> Result<u64, RegistryError> {
        let url = format!(
            "{}/v2/{}/blobs/{digest}",
            self.base,
            self.reference.repository()
        );
        let r = self.http.head(&url);
        let r = match &self.authorization {
            Some(a) => r.header(reqwest::header::AUTHORIZATION, a),
            None => r,
        };
        let resp = r.send().await.map_err(|e| {
            tls_error(&self.host, &e).unwrap_or_else(|| RegistryError::Transport {
                reference: self.name.clone(),
                registry: self.host.clone(),
                detail: crate::util::Chain(&e).to_string(),
            })
        })?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound {
                reference: self.name.clone(),
                registry: self.host.clone(),
                detail: format!("blob {digest}: 404"),
            });
        }
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(self.unauthorized(format!("{status}")));
        }
        resp.headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .filter(|_| status.is_success())
            .ok_or_else(|| RegistryError::Transport {
                reference: self.name.clone(),
                registry: self.host.clone(),
                detail: format!("HEAD blob {digest}: {status}, no Content-Length"),
            })
    }

    /// Fetches a small blob (an image config) whole, checked against its digest.
    pub async fn small_blob(&self, digest: &str, size: u64) -> Result<Vec<u8>, RegistryError> {
        if size > 8 << 20 {
            return Err(RegistryError::Unsupported {
                reference: self.name.clone(),
                detail: format!("config {digest} is larger than 8 MiB"),
            });
        }
        let (_, mut stream) = self.open(digest, size, 0).await?;
        let mut out = Vec::with_capacity(size as usize);
        while let Some(chunk) = stream.try_next().await? {
            out.extend_from_slice(&chunk);
        }
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&out)));
        if actual != digest {
            return Err(RegistryError::DigestMismatch {
                reference: self.name.clone(),
                digest: digest.to_string(),
                detail: format!("content hashes to {actual}"),
            });
        }
        Ok(out)
    }

    async fn open(
        &self,
        digest: &str,
        size: u64,
        offset: u64,
    ) -> Result<(u64, ByteStream), RegistryError> {
        let desc = OciDescriptor {
            digest: digest.to_string(),
            size: size as i64,
            ..Default::default()
        };
        let (name, host) = (self.name.clone(), self.host.clone());
        let digest_s = digest.to_string();
        let map = move |e: std::io::Error| {
            let text = crate::util::Chain(&e).to_string();
            if text.contains("igest") {
                RegistryError::DigestMismatch {
                    reference: name.clone(),
                    digest: digest_s.clone(),
                    detail: text,
                }
            } else {
                RegistryError::Transport {
                    reference: name.clone(),
                    registry: host.clone(),
                    detail: format!("reading blob {digest_s}: {text}"),
                }
            }
        };
        let (start, stream) = if offset == 0 {
            let s = self
                .client
                .pull_blob_stream(&self.reference, &desc)
                .await
                .map_err(|e| self.error(e))?;
            (0, s)
        } else {
            match self
                .client
                .pull_blob_stream_partial(&self.reference, &desc, offset, None)
                .await
                .map_err(|e| self.error(e))?
            {
                BlobResponse::Full(s) => (0, s),
                BlobResponse::Partial(s) => (offset, s),
            }
        };
        let stream: ByteStream =
            Box::pin(stream.map(move |r: Result<Bytes, std::io::Error>| r.map_err(&map)));
        Ok((start, stream))
    }
}

impl BlobFetch for Remote {
    fn fetch<'a>(&'a self, digest: &'a str, size: u64, offset: u64) -> FetchFuture<'a> {
        Box::pin(self.open(digest, size, offset))
    }
    fn reference(&self) -> &str {
        &self.name
    }
}
