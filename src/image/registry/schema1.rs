//! Docker schema-1 signed manifests, converted to a runnable image (contract IMG-2).
//!
//! A schema-1 manifest has no config blob: it lists `fsLayers` top layer first, and beside
//! each a `history` entry whose `v1Compatibility` is a JSON string (the old per-layer image
//! JSON). The conversion, as containerd's and Docker's converters do it:
//! - the layers are `fsLayers` reversed (base first), without the entries whose
//!   `v1Compatibility` says `"throwaway": true` (an empty layer: ENV, CMD, ... steps);
//! - the config comes from the top entry's `v1Compatibility`: its `config` (Env, Cmd,
//!   Entrypoint, WorkingDir, User, ...), `architecture`, `os`, `created`; `history` from
//!   every entry; `rootfs.diff_ids` are the digests of the uncompressed layers, which only
//!   unpacking tells, so the config and a Docker schema-2 manifest over it are written after
//!   the unpack ([`Schema1::documents`]).
//!
//! The signatures are not checked (Docker stopped checking them long ago; the blobs are
//! checked against their digests as any other). The image is stored under its new
//! manifest's digest.

use std::collections::HashMap;

use oci_spec::image::Descriptor;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::plan::{descriptor, DocBlob};
use crate::image::config;
use crate::image::media;

/// A parsed schema-1 manifest: what its conversion needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema1 {
    /// The layer blobs, base first, empty (`throwaway`) entries left out.
    pub layers: Vec<String>,
    /// The top `v1Compatibility`, as an object.
    top: Map<String, Value>,
    /// The config's `history`, base first.
    history: Vec<Value>,
    /// The manifest's `architecture`, used when the top entry names none.
    architecture: String,
}

#[derive(serde::Deserialize)]
struct Manifest {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(default)]
    architecture: String,
    #[serde(rename = "fsLayers")]
    fs_layers: Vec<FsLayer>,
    history: Vec<History>,
}

#[derive(serde::Deserialize)]
struct FsLayer {
    #[serde(rename = "blobSum")]
    blob_sum: String,
}

#[derive(serde::Deserialize)]
struct History {
    #[serde(rename = "v1Compatibility")]
    v1_compatibility: String,
}

/// Parses a schema-1 manifest; the error says what is wrong with it.
pub fn parse(bytes: &[u8]) -> Result<Schema1, String> {
    let m: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| format!("the schema-1 manifest is not valid: {e}"))?;
    if m.schema_version != 1 {
        return Err(format!("schemaVersion is {}, not 1", m.schema_version));
    }
    if m.fs_layers.len() != m.history.len() {
        return Err(format!(
            "the schema-1 manifest has {} fsLayers but {} history entries",
            m.fs_layers.len(),
            m.history.len()
        ));
    }
    if m.fs_layers.is_empty() {
        return Err("the schema-1 manifest has no layers".into());
    }
    let mut entries = Vec::with_capacity(m.history.len());
    for (i, h) in m.history.iter().enumerate() {
        let v: Map<String, Value> = serde_json::from_str(&h.v1_compatibility)
            .map_err(|e| format!("history[{i}].v1Compatibility is not a JSON object: {e}"))?;
        entries.push(v);
    }
    let mut layers = Vec::new();
    let mut history = Vec::new();
    // Base first: both lists are top first.
    for (fs, v) in m.fs_layers.iter().zip(&entries).rev() {
        let empty = v.get("throwaway").and_then(Value::as_bool) == Some(true);
        if !empty {
            if !fs.blob_sum.starts_with("sha256:") {
                return Err(format!("layer {} is not a sha256 digest", fs.blob_sum));
            }
            layers.push(fs.blob_sum.clone());
        }
        history.push(history_entry(v, empty));
    }
    if layers.is_empty() {
        return Err("every layer of the schema-1 manifest is empty".into());
    }
    Ok(Schema1 {
        layers,
        top: entries.swap_remove(0),
        history,
        architecture: m.architecture,
    })
}

/// A config `history` entry from a `v1Compatibility` object.
fn history_entry(v: &Map<String, Value>, empty: bool) -> Value {
    let mut h = Map::new();
    if let Some(c) = v.get("created") {
        h.insert("created".into(), c.clone());
    }
    let cmd = v
        .get("container_config")
        .and_then(|c| c.get("Cmd"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        });
    if let Some(cmd) = cmd.filter(|c| !c.is_empty()) {
        h.insert("created_by".into(), Value::String(cmd));
    }
    if let Some(c) = v.get("comment") {
        h.insert("comment".into(), c.clone());
    }
    if let Some(a) = v.get("author") {
        h.insert("author".into(), a.clone());
    }
    if empty {
        h.insert("empty_layer".into(), Value::Bool(true));
    }
    Value::Object(h)
}

impl Schema1 {
    /// The image config, given the layers' uncompressed digests (base first).
    pub fn config(&self, diff_ids: &[String]) -> Vec<u8> {
        let arch = self
            .top
            .get("architecture")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
            .unwrap_or(&self.architecture);
        let os = self
            .top
            .get("os")
            .and_then(Value::as_str)
            .filter(|o| !o.is_empty())
            .unwrap_or("linux");
        let mut c = Map::new();
        c.insert("architecture".into(), json!(arch));
        c.insert("os".into(), json!(os));
        if let Some(created) = self.top.get("created") {
            c.insert("created".into(), created.clone());
        }
        for k in ["author", "variant"] {
            if let Some(v) = self.top.get(k) {
                c.insert(k.into(), v.clone());
            }
        }
        c.insert(
            "config".into(),
            self.top.get("config").cloned().unwrap_or_else(|| json!({})),
        );
        c.insert(
            "rootfs".into(),
            json!({"type": "layers", "diff_ids": diff_ids}),
        );
        c.insert("history".into(), Value::Array(self.history.clone()));
        serde_json::to_vec(&Value::Object(c)).unwrap_or_default()
    }

    /// The converted image's documents (config, then a Docker schema-2 manifest; children
    /// first, with their garbage-collection labels) and the manifest's descriptor, which
    /// the image record points at. `layers` are the fetched layers' descriptors, in
    /// [`Schema1::layers`]' order, `diff_ids` what unpacking them gave.
    pub fn documents(
        &self,
        name: &str,
        layers: &[Descriptor],
        diff_ids: &[String],
    ) -> Result<(Vec<DocBlob>, Descriptor), super::RegistryError> {
        let cbytes = self.config(diff_ids);
        // The config must read as any other image's does (IMG-1), and be linux/amd64.
        let cfg = config::parse(&cbytes).map_err(|e| super::RegistryError::Unsupported {
            reference: name.to_string(),
            detail: format!("the converted schema-1 config is not valid: {e}"),
        })?;
        if !config::is_linux_amd64(cfg.os(), cfg.architecture()) {
            return Err(super::RegistryError::NoAmd64 {
                reference: name.to_string(),
                found: format!("{}/{}", cfg.os(), cfg.architecture()),
            });
        }
        let cdesc = descriptor(media::DOCKER_CONFIG, &sha256(&cbytes), cbytes.len() as u64)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media::DOCKER_MANIFEST,
            "config": {
                "mediaType": media::DOCKER_CONFIG,
                "digest": cdesc.digest().to_string(),
                "size": cbytes.len(),
            },
            "layers": layers.iter().map(|l| json!({
                "mediaType": l.media_type().to_string(),
                "digest": l.digest().to_string(),
                "size": l.size(),
            })).collect::<Vec<_>>(),
        });
        let mbytes = serde_json::to_vec(&manifest).unwrap_or_default();
        let mdesc = descriptor(
            media::DOCKER_MANIFEST,
            &sha256(&mbytes),
            mbytes.len() as u64,
        )?;
        let mut labels = HashMap::new();
        labels.insert(
            "containerd.io/gc.ref.content.config".to_string(),
            cdesc.digest().to_string(),
        );
        for (i, l) in layers.iter().enumerate() {
            labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                l.digest().to_string(),
            );
        }
        let docs = vec![
            DocBlob {
                desc: cdesc,
                bytes: cbytes,
                labels: HashMap::new(),
            },
            DocBlob {
                desc: mdesc.clone(),
                bytes: mbytes,
                labels,
            },
        ];
        Ok((docs, mdesc))
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const E: &str = "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4";

    /// A manifest from (blobSum, v1Compatibility) pairs, top first as schema 1 lists them.
    fn manifest(entries: &[(&str, Value)]) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "schemaVersion": 1,
            "name": "app",
            "tag": "v1",
            "architecture": "amd64",
            "fsLayers": entries.iter().map(|(b, _)| json!({"blobSum": b})).collect::<Vec<_>>(),
            "history": entries.iter().map(|(_, v)| json!({"v1Compatibility": v.to_string()})).collect::<Vec<_>>(),
            "signatures": [],
        }))
        .unwrap()
    }

    fn top() -> Value {
        json!({
            "id": "3", "parent": "2", "architecture": "amd64", "os": "linux",
            "created": "2024-01-02T00:00:00Z",
            "config": {"Env": ["A=1"], "Cmd": ["serve"], "Entrypoint": ["/app"],
                       "WorkingDir": "/srv", "User": "65534:65534"},
            "container_config": {"Cmd": ["/bin/sh", "-c", "#(nop) ", "USER 65534"]},
            "throwaway": true
        })
    }

    #[test]
    fn layers_are_reversed_and_empty_entries_skipped() {
        type Case<'a> = (Vec<(&'a str, Value)>, Result<Vec<&'a str>, &'a str>);
        let table: Vec<Case> = vec![
            // top: an empty USER step; then B over A.
            (
                vec![
                    (E, top()),
                    (B, json!({"id": "2", "parent": "1"})),
                    (A, json!({"id": "1"})),
                ],
                Ok(vec![A, B]),
            ),
            // A single layer.
            (vec![(A, json!({"id": "1", "os": "linux"}))], Ok(vec![A])),
            // The same blob twice is two layers.
            (
                vec![(A, json!({"id": "2"})), (A, json!({"id": "1"}))],
                Ok(vec![A, A]),
            ),
            (vec![(E, top())], Err("every layer")),
            (vec![], Err("no layers")),
        ];
        for (entries, want) in table {
            let got = parse(&manifest(&entries)).map(|s| s.layers);
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w),
                (Err(g), Err(w)) => assert!(g.contains(w), "{g}"),
                (g, w) => panic!("{g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn mismatched_lists_and_bad_history_are_refused() {
        let mut m: Value = serde_json::from_slice(&manifest(&[(A, json!({"id": "1"}))])).unwrap();
        m["fsLayers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"blobSum": B}));
        let err = parse(&serde_json::to_vec(&m).unwrap()).unwrap_err();
        assert!(err.contains("2 fsLayers but 1 history"), "{err}");
        let bad = br#"{"schemaVersion":1,"fsLayers":[{"blobSum":"sha256:a"}],"history":[{"v1Compatibility":"nope"}]}"#;
        assert!(parse(bad).unwrap_err().contains("history[0]"));
    }

    #[test]
    fn the_config_comes_from_the_top_entry_with_the_diff_ids() {
        let s = parse(&manifest(&[
            (E, top()),
            (
                B,
                json!({"id": "2", "created": "2024-01-01T00:00:00Z",
                       "container_config": {"Cmd": ["/bin/sh", "-c", "make"]}}),
            ),
            (A, json!({"id": "1"})),
        ]))
        .unwrap();
        let diff_ids = vec!["sha256:1".to_string(), "sha256:2".to_string()];
        let c: Value = serde_json::from_slice(&s.config(&diff_ids)).unwrap();
        assert_eq!(c["architecture"], "amd64");
        assert_eq!(c["os"], "linux");
        assert_eq!(c["created"], "2024-01-02T00:00:00Z");
        assert_eq!(c["config"]["Env"], json!(["A=1"]));
        assert_eq!(c["config"]["Cmd"], json!(["serve"]));
        assert_eq!(c["config"]["Entrypoint"], json!(["/app"]));
        assert_eq!(c["config"]["WorkingDir"], "/srv");
        assert_eq!(c["config"]["User"], "65534:65534");
        assert_eq!(c["rootfs"], json!({"type": "layers", "diff_ids": diff_ids}));
        // History base first: one entry per v1Compatibility, the empty one marked.
        let h = c["history"].as_array().unwrap();
        assert_eq!(h.len(), 3);
        assert_eq!(h[1]["created_by"], "/bin/sh -c make");
        assert_eq!(h[2]["empty_layer"], true);
        assert!(h[0].get("empty_layer").is_none());
        // No v1-only fields leak into the config.
        assert!(c.get("id").is_none() && c.get("parent").is_none());
    }

    #[test]
    fn the_architecture_falls_back_to_the_manifests_and_os_to_linux() {
        let s = parse(&manifest(&[(A, json!({"id": "1"}))])).unwrap();
        let c: Value = serde_json::from_slice(&s.config(&["sha256:1".into()])).unwrap();
        assert_eq!(
            (c["architecture"].as_str(), c["os"].as_str()),
            (Some("amd64"), Some("linux"))
        );
    }

    #[test]
    fn documents_are_a_config_and_a_schema2_manifest_over_it() {
        let s = parse(&manifest(&[(A, json!({"id": "1", "os": "linux"}))])).unwrap();
        let layer = descriptor(media::DOCKER_LAYER_GZIP, A, 10).unwrap();
        let (docs, target) = s.documents("app", &[layer], &["sha256:1".into()]).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(target.digest(), docs[1].desc.digest());
        assert_eq!(target.digest().to_string(), sha256(&docs[1].bytes));
        let m: Value = serde_json::from_slice(&docs[1].bytes).unwrap();
        assert_eq!(m["mediaType"], media::DOCKER_MANIFEST);
        assert_eq!(m["config"]["digest"], docs[0].desc.digest().to_string());
        assert_eq!(m["layers"][0]["digest"], A);
        assert_eq!(m["layers"][0]["size"], 10);
        assert_eq!(docs[1].labels["containerd.io/gc.ref.content.l.0"], A);
        // An arm64 image is refused, naming what it is.
        let arm = parse(&manifest(&[(A, json!({"architecture": "arm64"}))])).unwrap();
        let layer = descriptor(media::DOCKER_LAYER_GZIP, A, 10).unwrap();
        let err = arm
            .documents("app", &[layer], &["sha256:1".into()])
            .unwrap_err();
        assert!(err.to_string().contains("linux/arm64"), "{err}");
    }
}
