//! The API runlet serves, as Rust: Google's Cloud Run Admin API v2 (`proto/`, a trimmed copy of
//! googleapis' `google.cloud.run.v2` with the same names, numbers and HTTP routes) compiled by
//! `build.rs` into prost messages, tonic server and client stubs, and serde impls that follow
//! proto3's JSON mapping (camelCase out, camelCase or snake_case in; enums by name out, by
//! name or number in; 64-bit integers as strings; `Duration` as `"300s"`; `Timestamp` as
//! RFC 3339). A leaf: nothing here uses the rest of the crate.
//!
//! - [`run_v2`] (`google.cloud.run.v2`): `Service`, `Revision`, `Job`, `Execution`, `Task` and
//!   their parts; services `Services`, `Revisions`, `Jobs`, `Executions`, `Tasks`
//!   (`run_v2::services_server::{Services, ServicesServer}`,
//!   `run_v2::services_client::ServicesClient`, and so on).
//! - [`longrunning`] (`google.longrunning`): `Operation` and the `Operations` service.
//! - [`rpc`] (`google.rpc`): `Status`. [`api`] (`google.api`): `LaunchStage`, `HttpRule`.
//! - Well-known types come from `pbjson_types` (`Duration`, `Empty`), except three it does not
//!   map as proto3 JSON says: [`any::Any`] (JSON with `"@type"`), [`field_mask::FieldMask`]
//!   (JSON `"a.b,c"`) and [`timestamp::Timestamp`] (JSON `"...Z"`).
//! - [`enum_numbers`] rewrites enum names to numbers, for `$alt=json;enum-encoding=int`.

pub mod any;
pub mod enum_numbers;
pub mod field_mask;
pub mod timestamp;

/// The generated code, nested as its proto packages are (prost's cross-package paths are
/// relative, `super::super::...`). Lints are the generator's business, not ours.
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    rustdoc::all,
    unreachable_pub,
    unused_qualifications
)]
pub mod google {
    pub mod api {
        include!(concat!(env!("OUT_DIR"), "/google.api.rs"));
        include!(concat!(env!("OUT_DIR"), "/google.api.serde.rs"));
    }
    pub mod cloud {
        pub mod run {
            pub mod v2 {
                include!(concat!(env!("OUT_DIR"), "/google.cloud.run.v2.rs"));
                include!(concat!(env!("OUT_DIR"), "/google.cloud.run.v2.serde.rs"));
            }
        }
    }
    pub mod longrunning {
        include!(concat!(env!("OUT_DIR"), "/google.longrunning.rs"));
        include!(concat!(env!("OUT_DIR"), "/google.longrunning.serde.rs"));
    }
    pub mod rpc {
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
        include!(concat!(env!("OUT_DIR"), "/google.rpc.serde.rs"));
    }
}

pub use google::api;
pub use google::cloud::run::v2 as run_v2;
pub use google::longrunning;
pub use google::rpc;

/// The compiled `FileDescriptorSet` of everything above (imports included): for gRPC
/// reflection, and for walking messages by field (as [`enum_numbers`] does).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/runlet_api_descriptors.bin"));

#[cfg(test)]
mod tests;
