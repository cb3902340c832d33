//! The [`Runtime`] implementation: containers and their tasks (create, start, wait, kill,
//! delete, list) and OOM events.

use std::time::Duration;

use containerd_client::services::v1::container::Runtime as ContainerRuntime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{PrepareSnapshotRequest, RemoveSnapshotRequest};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, KillRequest, ListContainersRequest, StartRequest, WaitRequest,
};
use containerd_client::tonic::Code;
use containerd_client::types::Mount;
use std::collections::HashMap;
use tokio::sync::mpsc;

use super::client::{grpc, not_found_ok, Containerd, NAMESPACE, SNAPSHOTTER};
use crate::image::ImageInfo;
use crate::runtime::{
    labels, ContainerInfo, ContainerSpec, ExitStatus, OciRuntime, Runtime, RuntimeError,
};

fn spec_any(spec: &serde_json::Value) -> prost_types::Any {
    prost_types::Any {
        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
        value: serde_json::to_vec(spec).unwrap_or_default(),
    }
}

/// The runc shim's options (`containerd.runc.v1.Options` of containerd 1.6's
/// `runtime/v2/runc/options`), with only the fields runlet sets: the OCI runtime binary the
/// shim runs instead of `runc` (gen1's gVisor, [`crate::runtime::gvisor`]) and its root
/// (the shim adds the namespace to it).
#[derive(Clone, PartialEq, prost::Message)]
struct RuncOptions {
    #[prost(string, tag = "6")]
    binary_name: String,
    #[prost(string, tag = "7")]
    root: String,
}

fn runc_options(runtime: &OciRuntime) -> prost_types::Any {
    use prost::Message;
    prost_types::Any {
        type_url: "containerd.runc.v1.Options".into(),
        value: RuncOptions {
            binary_name: runtime.binary.clone(),
            root: runtime.root.clone(),
        }
        .encode_to_vec(),
    }
}

/// Points an overlay rootfs's upperdir and workdir at `dir/upper` and `dir/work`.
fn redirect_upper(mounts: &mut [Mount], dir: &str) {
    for m in mounts.iter_mut().filter(|m| m.r#type == "overlay") {
        for o in m.options.iter_mut() {
            if o.starts_with("upperdir=") {
                *o = format!("upperdir={dir}/upper");
            } else if o.starts_with("workdir=") {
                *o = format!("workdir={dir}/work");
            }
        }
    }
}

impl Runtime for Containerd {
    async fn resolve_image(&self, name: &str) -> Result<ImageInfo, RuntimeError> {
        self.resolve(name).await
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<u32, RuntimeError> {
        let id = &spec.id;
        // The container comes first and names its snapshot key: from the moment the
        // snapshot is prepared, the container references it, so garbage collection cannot
        // take it, and no lease (two more metadata writes per container) is needed.
        let result = async {
            let container = Container {
                id: id.clone(),
                labels: spec.labels.clone(),
                image: spec.image.name.clone(),
                runtime: Some(ContainerRuntime {
                    name: "io.containerd.runc.v2".into(),
                    options: spec.oci_runtime.as_ref().map(runc_options),
                }),
                spec: Some(spec_any(&spec.oci_spec)),
                snapshotter: SNAPSHOTTER.into(),
                snapshot_key: id.clone(),
                ..Default::default()
            };
            ContainersClient::new(self.channel())
                .create(self.req(CreateContainerRequest {
                    container: Some(container),
                }))
                .await
                .map_err(grpc("create container", id))?;
            let mounts: Vec<Mount> = SnapshotsClient::new(self.channel())
                .prepare(self.req(PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: id.clone(),
                    parent: spec.image.chain_id.clone(),
                    labels: HashMap::new(),
                }))
                .await
                .map_err(grpc("prepare snapshot", id))?
                .into_inner()
                .mounts;
            Ok::<_, RuntimeError>(mounts)
        }
        .await;
        let mut mounts = match result {
            Ok(m) => m,
            Err(e) => {
                let _ = self.delete(id).await;
                return Err(e);
            }
        };
        if let Some(dir) = &spec.upper_dir {
            redirect_upper(&mut mounts, dir);
        }
        let created = TasksClient::new(self.channel())
            .create(self.req(CreateTaskRequest {
                container_id: id.clone(),
                rootfs: mounts,
                stdin: String::new(),
                stdout: spec.stdout.clone(),
                stderr: spec.stderr.clone(),
                terminal: false,
                ..Default::default()
            }))
            .await
            .map_err(grpc("create task", id));
        match created {
            Ok(r) => Ok(r.into_inner().pid),
            Err(e) => {
                let _ = self.delete(id).await;
                Err(e)
            }
        }
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        TasksClient::new(self.channel())
            .start(self.req(StartRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
            .map_err(grpc("start task", id))?;
        Ok(())
    }

    async fn wait(&self, id: &str) -> Result<ExitStatus, RuntimeError> {
        let r = TasksClient::new(self.channel())
            .wait(self.req(WaitRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
            .map_err(grpc("wait task", id))?;
        Ok(ExitStatus {
            code: r.into_inner().exit_status,
        })
    }

    async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<(), RuntimeError> {
        TasksClient::new(self.channel())
            .kill(self.req(KillRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                signal,
                all,
            }))
            .await
            .map_err(grpc("kill task", id))?;
        Ok(())
    }

    async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        let mut tasks = TasksClient::new(self.channel());
        match tasks
            .delete(self.req(DeleteTaskRequest {
                container_id: id.to_string(),
            }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            // Still running (1.6 answers FailedPrecondition or Unknown "cannot delete a
            // running process"): kill everything, wait, delete.
            Err(s) if matches!(s.code(), Code::FailedPrecondition | Code::Unknown) => {
                let _ = tasks
                    .kill(self.req(KillRequest {
                        container_id: id.to_string(),
                        exec_id: String::new(),
                        signal: 9,
                        all: true,
                    }))
                    .await;
                let _ = tokio::time::timeout(Duration::from_secs(10), self.wait(id)).await;
                not_found_ok(
                    tasks
                        .delete(self.req(DeleteTaskRequest {
                            container_id: id.to_string(),
                        }))
                        .await
                        .map_err(grpc("delete task", id)),
                )?;
            }
            Err(s) => return Err(grpc("delete task", id)(s)),
        }
        not_found_ok(
            ContainersClient::new(self.channel())
                .delete(self.req(DeleteContainerRequest { id: id.to_string() }))
                .await
                .map_err(grpc("delete container", id)),
        )?;
        not_found_ok(
            SnapshotsClient::new(self.channel())
                .remove(self.req(RemoveSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: id.to_string(),
                }))
                .await
                .map_err(grpc("remove snapshot", id)),
        )
    }

    async fn oom_events(&self) -> Result<mpsc::UnboundedReceiver<String>, RuntimeError> {
        use containerd_client::services::v1::events_client::EventsClient;
        use containerd_client::services::v1::SubscribeRequest;
        use prost::Message;
        let filter = format!("namespace=={NAMESPACE},topic==\"/tasks/oom\"");
        let (tx, rx) = mpsc::unbounded_channel();
        let channel = self.channel();
        // containerd sends the stream's headers only with its first event, so the call
        // itself does not return until then: subscribe in the background. The subscription
        // ends when the receiver goes (the service stopped): before runlet stops a private
        // containerd, so its going away is not reported as a failure. A stream that ends
        // (containerd restarted) is subscribed again (`events::forward_ooms`).
        tokio::spawn(crate::runtime::events::forward_ooms(
            move || {
                let mut client = EventsClient::new(channel.clone());
                let request = SubscribeRequest {
                    filters: vec![filter.clone()],
                };
                async move {
                    let stream = client
                        .subscribe(request)
                        .await
                        .map_err(|e| e.message().to_string())?
                        .into_inner();
                    // The ids of the OOM events, until the stream ends or breaks.
                    Ok::<_, String>(futures::stream::unfold(stream, |mut stream| async move {
                        while let Ok(Some(env)) = stream.message().await {
                            // The envelope's type_url has no leading '/' in 1.6: decode
                            // by topic.
                            let Some(any) = env.event else { continue };
                            if let Ok(ev) =
                                containerd_client::events::TaskOom::decode(any.value.as_slice())
                            {
                                return Some((ev.container_id, stream));
                            }
                        }
                        None
                    }))
                }
            },
            tx,
        ));
        Ok(rx)
    }

    async fn oom_killed(&self, id: &str) -> bool {
        oom_kills(id) > 0
    }

    async fn list(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let list = ContainersClient::new(self.channel())
            .list(self.req(ListContainersRequest {
                filters: vec![format!("labels.\"{}\"==true", labels::MANAGED)],
            }))
            .await
            .map_err(grpc("list containers", ""))?
            .into_inner()
            .containers;
        Ok(list
            .into_iter()
            .map(|c| ContainerInfo {
                id: c.id,
                labels: c.labels,
            })
            .collect())
    }
}

/// The OOM-kill count of container `id`'s memory cgroup (`/runlet/<id>`, the spec's
/// `cgroupsPath`): cgroup v1 `memory.oom_control`, or v2 `memory.events`. The counter
/// survives the process and goes with the cgroup, which runc removes on task delete.
fn oom_kills(id: &str) -> u64 {
    [
        format!("/sys/fs/cgroup/memory/runlet/{id}/memory.oom_control"),
        format!("/sys/fs/cgroup/runlet/{id}/memory.events"),
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .filter_map(|text| parse_oom_kill(&text))
    .max()
    .unwrap_or(0)
}

/// The `oom_kill N` line of `memory.oom_control` (v1) or `memory.events` (v2).
fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_binary_and_root_are_fields_6_and_7_of_the_runc_options() {
        let any = runc_options(&OciRuntime {
            binary: "/x/runsc".into(),
            root: "/d/runsc".into(),
        });
        assert_eq!(any.type_url, "containerd.runc.v1.Options");
        // Field 6, then field 7, wire type 2 (length-delimited): tag bytes 0x32 and 0x3a,
        // each followed by the length.
        assert_eq!(any.value[..2], [0x32, 8]);
        assert_eq!(&any.value[2..10], b"/x/runsc");
        assert_eq!(any.value[10..12], [0x3a, 8]);
        assert_eq!(&any.value[12..], b"/d/runsc");
    }

    #[test]
    fn oom_kill_counters() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        let v2 = "low 0\nhigh 0\nmax 14\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_oom_kill(v1), Some(2));
        assert_eq!(parse_oom_kill(v2), Some(1));
        assert_eq!(parse_oom_kill("oom_kill_disable 0\nunder_oom 0\n"), None);
        assert_eq!(oom_kills("no-such-container"), 0);
    }
}
