//! Conformance tooling for runlet.
//!
//! * [`imagebuild`] – deterministic builder for the OCI / docker-save image
//!   archives the conformance tests import into runlet.

pub mod imagebuild;
