//! Long-running operations (`google.longrunning.Operation`): every mutating call returns one,
//! which completes when its rollout or deletion ends. Kept in memory with a `watch` per
//! operation (for `WaitOperation`) and written through to the [`Store`], so an operation a
//! restart interrupted is still there, and is completed by the restarted daemon.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Mutex};
use tonic::Status;
use tracing::warn;

use super::names::{OperationName, Parent};
use super::paging;
use super::store::Store;
use crate::pb::longrunning::{operation, Operation};
use crate::pb::rpc;

const KIND: &str = "operations";

/// The operations of every parent.
pub struct Operations {
    store: Arc<Store>,
    ops: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    op: Operation,
    /// Turns true when the operation is done.
    done: watch::Sender<bool>,
    /// Creation order, for listing newest first.
    seq: u64,
}

impl Operations {
    /// The operations the store holds (done or not).
    pub fn load(store: Arc<Store>) -> Operations {
        let mut ops = HashMap::new();
        let mut list: Vec<(String, Operation)> = match store.list(KIND) {
            Ok(l) => l,
            Err(e) => {
                warn!("reading the stored operations: {e}");
                Vec::new()
            }
        };
        list.sort_by(|a, b| a.0.cmp(&b.0));
        for (seq, (name, op)) in list.into_iter().enumerate() {
            let (done, _) = watch::channel(op.done);
            ops.insert(
                name,
                Entry {
                    op,
                    done,
                    seq: seq as u64,
                },
            );
        }
        Operations {
            store,
            ops: Mutex::new(ops),
        }
    }

    /// A new operation under `parent`, not done, with `metadata` (the resource).
    pub async fn start(&self, parent: &Parent, metadata: crate::pb::any::Any) -> Operation {
        // Ids sort in creation order (a time prefix), so a restart keeps the order.
        let id = format!(
            "{:016x}-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
            crate::util::random_suffix(8)
        );
        let name = OperationName {
            parent: parent.clone(),
            id,
        }
        .to_string();
        let op = Operation {
            name: name.clone(),
            metadata: Some(metadata),
            done: false,
            result: None,
        };
        self.put(&op);
        let mut ops = self.ops.lock().await;
        let seq = ops.values().map(|e| e.seq + 1).max().unwrap_or(0);
        let (done, _) = watch::channel(false);
        ops.insert(
            name,
            Entry {
                op: op.clone(),
                done,
                seq,
            },
        );
        op
    }

    /// Completes `name` with the resource, or with an error.
    pub async fn finish(&self, name: &str, result: Result<crate::pb::any::Any, Status>) {
        let mut ops = self.ops.lock().await;
        let Some(e) = ops.get_mut(name) else {
            return;
        };
        e.op.done = true;
        e.op.result = Some(match result {
            Ok(any) => {
                e.op.metadata = Some(any.clone());
                operation::Result::Response(any)
            }
            Err(s) => operation::Result::Error(rpc::Status {
                code: s.code() as i32,
                message: s.message().to_string(),
                details: Vec::new(),
            }),
        });
        self.put(&e.op);
        e.done.send_replace(true);
    }

    /// Replaces the metadata of `name` (the resource as it is now).
    pub async fn set_metadata(&self, name: &str, metadata: crate::pb::any::Any) {
        let mut ops = self.ops.lock().await;
        if let Some(e) = ops.get_mut(name) {
            e.op.metadata = Some(metadata);
            self.put(&e.op);
        }
    }

    /// Operations not done, as stored (after a restart: the ones to complete).
    pub async fn pending(&self) -> Vec<Operation> {
        let ops = self.ops.lock().await;
        ops.values()
            .filter(|e| !e.op.done)
            .map(|e| e.op.clone())
            .collect()
    }

    pub async fn get(&self, name: &str) -> Result<Operation, Status> {
        OperationName::parse("name", name)?;
        let ops = self.ops.lock().await;
        ops.get(name)
            .map(|e| e.op.clone())
            .ok_or_else(|| Status::not_found(format!("operation {name} not found")))
    }

    /// Waits until `name` is done or `timeout` passes, then returns it as it is.
    pub async fn wait(&self, name: &str, timeout: Duration) -> Result<Operation, Status> {
        OperationName::parse("name", name)?;
        let mut rx = {
            let ops = self.ops.lock().await;
            let e = ops
                .get(name)
                .ok_or_else(|| Status::not_found(format!("operation {name} not found")))?;
            e.done.subscribe()
        };
        let _ = tokio::time::timeout(timeout, rx.wait_for(|d| *d)).await;
        self.get(name).await
    }

    /// Operations of `parent` (`projects/P/locations/L`), newest first, a page at a time.
    pub async fn list(
        &self,
        parent: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<Operation>, String), Status> {
        let parent = Parent::parse("name", parent)?;
        let prefix = format!("{parent}/operations/");
        let ops = self.ops.lock().await;
        let mut list: Vec<&Entry> = ops
            .values()
            .filter(|e| e.op.name.starts_with(&prefix))
            .collect();
        list.sort_by_key(|e| std::cmp::Reverse(e.seq));
        let all: Vec<Operation> = list.into_iter().map(|e| e.op.clone()).collect();
        paging::page(all, page_size, page_token)
    }

    pub async fn delete(&self, name: &str) -> Result<(), Status> {
        OperationName::parse("name", name)?;
        let mut ops = self.ops.lock().await;
        if ops.remove(name).is_none() {
            return Err(Status::not_found(format!("operation {name} not found")));
        }
        if let Err(e) = self.store.delete(KIND, name) {
            warn!("deleting operation {name}: {e}");
        }
        Ok(())
    }

    fn put(&self, op: &Operation) {
        if let Err(e) = self.store.put(KIND, &op.name, op) {
            warn!("storing operation {}: {e}", op.name);
        }
    }
}
