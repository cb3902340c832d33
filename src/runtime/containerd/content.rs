//! The content store: does a blob exist, label it, stream one in, read a small document.

use std::collections::HashMap;
use std::io::Read;

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::{
    InfoRequest, ReadContentRequest, UpdateRequest, WriteAction, WriteContentRequest,
};
use containerd_client::tonic::Code;
use prost_types::FieldMask;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::debug;

use super::client::{found, grpc, Containerd};
use super::Lease;
use crate::runtime::RuntimeError;

/// How much of a blob goes in one write message.
const CHUNK: usize = 1 << 20;

impl Containerd {
    pub(super) async fn content_exists(&self, digest: &str) -> Result<bool, RuntimeError> {
        let answer = ContentClient::new(self.channel())
            .info(self.req(InfoRequest {
                digest: digest.to_string(),
            }))
            .await;
        found(answer, "content info", digest)
    }

    pub(super) async fn set_content_labels(
        &self,
        digest: &str,
        labels: &HashMap<String, String>,
    ) -> Result<(), RuntimeError> {
        if labels.is_empty() {
            return Ok(());
        }
        let info = containerd_client::services::v1::Info {
            digest: digest.to_string(),
            labels: labels.clone(),
            ..Default::default()
        };
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        ContentClient::new(self.channel())
            .update(self.req(UpdateRequest {
                info: Some(info),
                update_mask: Some(FieldMask { paths }),
            }))
            .await
            .map_err(grpc("content update", digest))?;
        Ok(())
    }

    /// Streams `size` bytes from `reader` into the content store as `digest`.
    pub(super) async fn write_blob(
        &self,
        lease: &Lease,
        digest: &str,
        size: u64,
        mut reader: Box<dyn Read + Send>,
        labels: HashMap<String, String>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), RuntimeError> {
        let (tx, rx) = mpsc::channel::<WriteContentRequest>(4);
        let reference = format!(
            "runlet-import-{}-{}",
            digest.trim_start_matches("sha256:"),
            crate::util::random_suffix(6)
        );
        let mut client = ContentClient::new(self.channel());
        let call = client.write(self.req_lease(ReceiverStream::new(rx), lease));
        let digest_s = digest.to_string();
        let reference_s = reference.clone();
        // Reading the file is blocking; do it on a blocking thread and feed the stream.
        let (prog_tx, mut prog_rx) = mpsc::unbounded_channel::<u64>();
        let feeder = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let mut offset = 0u64;
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = reader.read(&mut buf).map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                let msg = WriteContentRequest {
                    action: WriteAction::Write as i32,
                    r#ref: reference_s.clone(),
                    total: size as i64,
                    expected: digest_s.clone(),
                    offset: offset as i64,
                    data: buf[..n].to_vec(),
                    labels: HashMap::new(),
                };
                offset += n as u64;
                if tx.blocking_send(msg).is_err() {
                    return Err("containerd closed the write stream".into());
                }
                let _ = prog_tx.send(offset);
            }
            let commit = WriteContentRequest {
                action: WriteAction::Commit as i32,
                r#ref: reference_s,
                total: size as i64,
                expected: digest_s,
                offset: offset as i64,
                data: Vec::new(),
                labels,
            };
            tx.blocking_send(commit)
                .map_err(|_| "containerd closed the write stream".to_string())
        });
        let mut stream = match call.await {
            Ok(r) => r.into_inner(),
            // Another import wrote the same blob first: it is there, which is all we need.
            Err(s) if s.code() == Code::AlreadyExists => {
                feeder.abort();
                return Ok(());
            }
            Err(s) => return Err(grpc("content write", digest)(s)),
        };
        let mut last_digest = String::new();
        loop {
            tokio::select! {
                Some(done) = prog_rx.recv() => progress(done),
                msg = stream.message() => match msg {
                    Ok(Some(resp)) => {
                        if resp.action == WriteAction::Commit as i32 {
                            last_digest = resp.digest;
                        }
                    }
                    Ok(None) => break,
                    Err(s) if s.code() == Code::AlreadyExists => { last_digest = digest.to_string(); break }
                    Err(s) => return Err(grpc("content write", digest)(s)),
                }
            }
        }
        match feeder.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if last_digest == digest => debug!(digest, "writer ended early: {e}"),
            Ok(Err(e)) => {
                return Err(RuntimeError::Other {
                    op: "content write",
                    id: digest.to_string(),
                    detail: e,
                })
            }
            Err(e) => {
                return Err(RuntimeError::Other {
                    op: "content write",
                    id: digest.to_string(),
                    detail: e.to_string(),
                })
            }
        }
        if last_digest != digest {
            return Err(RuntimeError::Other {
                op: "content write",
                id: digest.to_string(),
                detail: format!("containerd committed {last_digest:?}, expected {digest}"),
            });
        }
        Ok(())
    }

    pub(super) async fn read_blob(&self, digest: &str) -> Result<Vec<u8>, RuntimeError> {
        let mut stream = ContentClient::new(self.channel())
            .read(self.req(ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            }))
            .await
            .map_err(grpc("content read", digest))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(grpc("content read", digest))?
        {
            out.extend_from_slice(&chunk.data);
            if out.len() > 16 << 20 {
                return Err(RuntimeError::Other {
                    op: "content read",
                    id: digest.to_string(),
                    detail: "document larger than 16 MiB".into(),
                });
            }
        }
        Ok(out)
    }
}
