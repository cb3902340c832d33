//! Compiles `proto/` (Google's Cloud Run Admin API v2, trimmed; see proto/README.md) into
//! Rust for `src/pb.rs`: prost messages, tonic server and client stubs, and pbjson serde
//! impls that follow proto3's JSON mapping. Needs `protoc` and its well-known `.proto`
//! includes (Debian: protobuf-compiler, libprotobuf-dev).

use std::error::Error;
use std::path::PathBuf;

/// The files holding the services runlet serves; protoc pulls in what they import.
const PROTOS: &[&str] = &[
    "proto/google/cloud/run/v2/service.proto",
    "proto/google/cloud/run/v2/revision.proto",
    "proto/google/cloud/run/v2/job.proto",
    "proto/google/cloud/run/v2/execution.proto",
    "proto/google/cloud/run/v2/task.proto",
    "proto/google/longrunning/operations.proto",
];

/// Packages that get serde impls (everything generated; google.protobuf comes from
/// pbjson-types, and Any, FieldMask and Timestamp from src/pb/).
const JSON_PACKAGES: &[&str] = &[
    ".google.api",
    ".google.cloud.run.v2",
    ".google.longrunning",
    ".google.rpc",
];

fn main() -> Result<(), Box<dyn Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = out.join("runlet_api_descriptors.bin");
    println!("cargo:rerun-if-changed=proto");

    // prost's own settings: type names give every message `prost::Name` with Google's
    // type URL (what `Any` carries); BTreeMap keeps maps (labels, annotations, limits) in a
    // stable order, in memory and in JSON.
    let mut config = prost_build::Config::new();
    config
        .enable_type_names()
        .type_name_domain(["."], "type.googleapis.com")
        .btree_map(["."]);

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Unimplemented RPCs (CancelOperation, say) answer UNIMPLEMENTED by default.
        .generate_default_stubs(true)
        // Not compiled (all are extern below), but this keeps prost and tonic from mapping
        // `.google.protobuf` to prost-types themselves.
        .compile_well_known_types(true)
        .file_descriptor_set_path(&descriptors)
        // Well-known types with proto3 JSON serde, from pbjson-types except three that it
        // does not map as proto3 JSON says: Any (`{"typeUrl","value"}`, not `"@type"`),
        // FieldMask (`{"paths":[...]}`, not `"a,b"`) and Timestamp (`+00:00`, not `Z`).
        .extern_path(".google.protobuf", "::pbjson_types")
        .extern_path(".google.protobuf.Any", "crate::pb::any::Any")
        .extern_path(
            ".google.protobuf.FieldMask",
            "crate::pb::field_mask::FieldMask",
        )
        .extern_path(
            ".google.protobuf.Timestamp",
            "crate::pb::timestamp::Timestamp",
        )
        .compile_with_config(config, PROTOS, &["proto"])?;

    let set = std::fs::read(&descriptors)?;
    pbjson_build::Builder::new()
        .register_descriptors(&set)?
        .btree_map(["."])
        .build(JSON_PACKAGES)?;
    Ok(())
}
