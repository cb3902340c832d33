//! `runlet setup`: pointing other tools at runlet. [`gcloud`]: the gcloud configuration and
//! the host names that make `gcloud run` talk to `runlet daemon`'s API.

pub mod gcloud;
