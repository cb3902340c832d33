//! The connection to containerd: one shared gRPC channel, requests in runlet's namespace
//! (and under a lease), and gRPC statuses turned into [`RuntimeError`]s.

use std::time::Duration;

use containerd_client::services::v1::version_client::VersionClient;
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request, Status};
use tracing::debug;

use super::Lease;
use crate::runtime::RuntimeError;

/// runlet's containerd namespace.
pub const NAMESPACE: &str = "runlet";
pub const SNAPSHOTTER: &str = "overlayfs";

/// A connection to containerd, in runlet's namespace. Cheap to clone (one shared channel).
#[derive(Clone)]
pub struct Containerd {
    channel: Channel,
    address: String,
}

pub(super) fn grpc(op: &'static str, id: impl Into<String>) -> impl FnOnce(Status) -> RuntimeError {
    let id = id.into();
    move |status| {
        if status.code() == Code::NotFound {
            RuntimeError::NotFound { op, id }
        } else {
            RuntimeError::Grpc {
                op,
                id,
                status: Box::new(status),
            }
        }
    }
}

/// An image lookup's failure: NotFound names the image (and says how to load it).
pub(super) fn image_grpc<'a>(
    op: &'static str,
    name: &'a str,
) -> impl FnOnce(Status) -> RuntimeError + 'a {
    move |status| {
        if status.code() == Code::NotFound {
            RuntimeError::ImageNotFound {
                name: name.to_string(),
            }
        } else {
            grpc(op, name)(status)
        }
    }
}

/// Whether a lookup found its object: NotFound is `false`, any other failure an error.
pub(super) fn found<T>(
    answer: Result<T, Status>,
    op: &'static str,
    id: &str,
) -> Result<bool, RuntimeError> {
    match answer {
        Ok(_) => Ok(true),
        Err(s) if s.code() == Code::NotFound => Ok(false),
        Err(s) => Err(grpc(op, id)(s)),
    }
}

pub(super) fn not_found_ok<T>(r: Result<T, RuntimeError>) -> Result<(), RuntimeError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

impl Containerd {
    /// Connects and checks containerd answers (`Version`).
    pub async fn connect(address: &str) -> Result<Self, RuntimeError> {
        let fail = |detail: String| RuntimeError::Connect {
            address: address.to_string(),
            detail,
        };
        let path = address
            .strip_prefix("unix://")
            .unwrap_or(address)
            .to_string();
        let channel =
            tokio::time::timeout(Duration::from_secs(3), containerd_client::connect(&path))
                .await
                .map_err(|_| fail("timed out".into()))?
                .map_err(|e| fail(format!("{e}")))?;
        let c = Containerd {
            channel,
            address: address.to_string(),
        };
        let v = tokio::time::timeout(
            Duration::from_secs(3),
            VersionClient::new(c.channel.clone()).version(()),
        )
        .await
        .map_err(|_| fail("timed out asking for its version".into()))?
        .map_err(|e| fail(e.message().to_string()))?;
        debug!(version = %v.get_ref().version, address, "connected to containerd");
        Ok(c)
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub(super) fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub(super) fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut().insert(
            "containerd-namespace",
            NAMESPACE.parse().expect("static ascii"),
        );
        r
    }

    pub(super) fn req_lease<T>(&self, msg: T, lease: &Lease) -> Request<T> {
        let mut r = self.req(msg);
        if let Ok(v) = lease.id.parse() {
            r.metadata_mut().insert("containerd-lease", v);
        }
        r
    }
}
