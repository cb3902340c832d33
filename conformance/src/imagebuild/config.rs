//! The image config: the runtime part the catalogue chooses ([`ImageConfig`]), the platform an
//! image is built for, and the config document written into the archives (an `oci_spec`
//! `ImageConfiguration`).

use anyhow::{Context, Result};
use oci_spec::image::{
    ConfigBuilder, HistoryBuilder, ImageConfiguration, ImageConfigurationBuilder, RootFsBuilder,
};
use serde::Serialize;

use super::layer::Layer;

/// Fixed `created` timestamp of every image config (matches [`super::FIXED_MTIME`]).
pub const FIXED_CREATED: &str = "2024-01-01T00:00:00Z";

/// The runtime part of an image config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Entrypoint`; omitted from the config when empty.
    pub entrypoint: Vec<String>,
    /// `Cmd`; omitted from the config when empty.
    pub cmd: Vec<String>,
    /// `Env`, as `KEY=value` strings.
    pub env: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
    /// `User` (e.g. `65534:65534`).
    pub user: Option<String>,
    /// A single `ExposedPorts` entry, `<port>/tcp`.
    pub exposed_port: Option<u16>,
}

/// The platform an image is built for (`os`/`architecture`[/`variant`]), GOOS/GOARCH
/// spelling; written as an `oci_spec` `Platform`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// CPU architecture, e.g. `amd64`, `arm64`.
    pub architecture: String,
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// Optional architecture variant, e.g. `v8`.
    pub variant: Option<String>,
}

impl Platform {
    fn linux(architecture: &str) -> Self {
        Platform {
            architecture: architecture.into(),
            os: "linux".into(),
            variant: None,
        }
    }

    /// `linux/amd64`.
    pub fn linux_amd64() -> Self {
        Self::linux("amd64")
    }

    /// `linux/arm64`.
    pub fn linux_arm64() -> Self {
        Self::linux("arm64")
    }

    /// As the OCI image spec writes it in an index.
    pub fn to_oci(&self) -> Result<oci_spec::image::Platform> {
        let mut b = oci_spec::image::PlatformBuilder::default()
            .architecture(self.architecture.as_str())
            .os(self.os.as_str());
        if let Some(v) = &self.variant {
            b = b.variant(v.as_str());
        }
        b.build().context("building a platform")
    }
}

/// The image config document for `layers` on `platform`.
pub fn image_configuration(
    config: &ImageConfig,
    layers: &[Layer],
    platform: &Platform,
) -> Result<ImageConfiguration> {
    let some = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    let mut run = ConfigBuilder::default().env(config.env.clone());
    if let Some(user) = &config.user {
        run = run.user(user.as_str());
    }
    if let Some(port) = config.exposed_port {
        run = run.exposed_ports(vec![format!("{port}/tcp")]);
    }
    if let Some(entrypoint) = some(&config.entrypoint) {
        run = run.entrypoint(entrypoint);
    }
    if let Some(cmd) = some(&config.cmd) {
        run = run.cmd(cmd);
    }
    if let Some(dir) = &config.working_dir {
        run = run.working_dir(dir.as_str());
    }
    let history = (0..layers.len())
        .map(|i| {
            HistoryBuilder::default()
                .created(FIXED_CREATED)
                .created_by(format!("runlet-conformance imagebuild: layer {i}"))
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut image = ImageConfigurationBuilder::default()
        .created(FIXED_CREATED)
        .architecture(platform.architecture.as_str())
        .os(platform.os.as_str())
        .config(run.build()?)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>())
                .build()?,
        )
        .history(history);
    if let Some(v) = &platform.variant {
        image = image.variant(v.as_str());
    }
    Ok(image.build()?)
}

/// Serializes the image config blob for `layers` on `platform`.
pub fn config_json(config: &ImageConfig, layers: &[Layer], platform: &Platform) -> Result<Vec<u8>> {
    to_json(&image_configuration(config, layers, platform)?)
}

/// Deterministic JSON: through `serde_json::Value`, whose maps sort their keys (oci-spec keeps
/// annotations and exposed ports in `HashMap`s, whose order changes from run to run).
pub(super) fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(&serde_json::to_value(value)?).context("serializing JSON")
}
