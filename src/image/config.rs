//! The parts of an image config runlet uses to run a container, read from the OCI image
//! config document (`oci_spec::image::ImageConfiguration`).

use oci_spec::image::{Arch, Descriptor, ImageConfiguration, Os};

/// The runtime part of an image config (the `config` object of the OCI image config).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunConfig {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

impl From<&ImageConfiguration> for RunConfig {
    fn from(image: &ImageConfiguration) -> Self {
        let Some(c) = image.config() else {
            return RunConfig::default();
        };
        RunConfig {
            entrypoint: c.entrypoint().clone(),
            cmd: c.cmd().clone(),
            env: c.env().clone(),
            working_dir: c.working_dir().clone(),
            user: c.user().clone(),
        }
    }
}

/// Parses an image config document.
pub fn parse(bytes: &[u8]) -> Result<ImageConfiguration, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// True for the only platform runlet runs (contract IMG-1).
pub fn is_linux_amd64(os: &Os, arch: &Arch) -> bool {
    *os == Os::Linux && *arch == Arch::Amd64
}

/// True for an index entry for linux/amd64 (one without a platform is not: contract IMG-3).
pub fn is_amd64_entry(d: &Descriptor) -> bool {
    d.platform()
        .as_ref()
        .is_some_and(|p| is_linux_amd64(p.os(), p.architecture()))
}
