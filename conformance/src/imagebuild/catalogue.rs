//! The conformance suite's image set: what each test image holds and [`build_test_images`],
//! which writes them all.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};

use super::broken::{non_utf8_file, truncate_file, write_bad_digest_oci_archive};
use super::config::{ImageConfig, Platform};
use super::docker::write_docker_archive;
use super::layer::{build_layer, ImageFile, Layer};
use super::layout::{write_oci_archive, write_oci_index_archive, PlatformImage};

/// Name of the probe image in `probe.oci.tar`.
pub const PROBE_IMAGE: &str = "docker.io/library/probe:latest";
/// Tag of the probe image in `probe.docker.tar`.
pub const PROBE_DOCKER_IMAGE: &str = "probe-docker:latest";
/// Name of the multi-platform probe image in `probe-multi.oci.tar`.
pub const PROBE_MULTI_IMAGE: &str = "docker.io/library/probe-multi:latest";
/// Name of the non-root probe image in `probe-user.oci.tar`.
pub const PROBE_USER_IMAGE: &str = "docker.io/library/probe-user:latest";
/// Name of the busybox image in `busybox.oci.tar`.
pub const BUSYBOX_IMAGE: &str = "docker.io/library/busybox:latest";
/// Name of the image in `arm64-only.oci.tar`.
pub const ARM64_ONLY_IMAGE: &str = "docker.io/library/arm64-only:latest";
/// Name of the image in `bad-digest.oci.tar`.
pub const BAD_DIGEST_IMAGE: &str = "docker.io/library/bad-digest:latest";
/// Name of the image in `non-utf8.oci.tar`.
pub const NON_UTF8_IMAGE: &str = "docker.io/library/non-utf8:latest";

/// `PATH` set in the test images.
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// `/etc/passwd` of the test images.
pub const ETC_PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
/// `/etc/group` of the test images. `staff` lists root and nobody as members: root (no
/// `USER`) gets it as a supplementary group, as Docker gives it; `USER 65534:65534` names
/// its group, so it gets none.
pub const ETC_GROUP: &str = "root:x:0:\nstaff:x:50:root,nobody\nnogroup:x:65534:\n";

/// Applets linked to `/bin/busybox` in the busybox image.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "sleep", "env", "httpd", "wget", "id", "true", "false",
];

/// Host inputs of [`build_test_images`].
#[derive(Debug, Clone)]
pub struct TestImageSources {
    /// The probe binary (static, linux/amd64).
    pub probe: PathBuf,
    /// A static busybox binary.
    pub busybox: PathBuf,
}

/// An archive written by [`build_test_images`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenArchive {
    /// Where it was written.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// The image name it carries (for the truncated archive: the name the
    /// intact archive would carry).
    pub image: String,
    /// What the archive is for.
    pub description: &'static str,
}

/// `/tmp` (1777), `/etc/passwd`, `/etc/group`.
pub(super) fn base_files() -> Vec<ImageFile> {
    vec![
        ImageFile::dir("tmp", 0o1777),
        ImageFile::dir("etc", 0o755),
        ImageFile::bytes("etc/passwd", ETC_PASSWD, 0o644),
        ImageFile::bytes("etc/group", ETC_GROUP, 0o644),
    ]
}

/// The files of the probe image: `/probe` (0755) plus [`base_files`].
pub fn probe_files(probe: &Path) -> Vec<ImageFile> {
    let mut files = vec![ImageFile::host_file("probe", probe, 0o755)];
    files.extend(base_files());
    files
}

/// The config of the probe image.
pub fn probe_config() -> ImageConfig {
    ImageConfig {
        entrypoint: vec!["/probe".into()],
        cmd: Vec::new(),
        env: vec![DEFAULT_PATH_ENV.into(), "PROBE_IMAGE_ENV=from-image".into()],
        working_dir: Some("/".into()),
        user: None,
        exposed_port: Some(8080),
    }
}

/// The files of the busybox image: `/bin/busybox`, applet symlinks and
/// [`base_files`].
pub fn busybox_files(busybox: &Path) -> Vec<ImageFile> {
    let mut files = vec![
        ImageFile::dir("bin", 0o755),
        ImageFile::host_file("bin/busybox", busybox, 0o755),
    ];
    files.extend(
        BUSYBOX_APPLETS
            .iter()
            .map(|applet| ImageFile::symlink(format!("bin/{applet}"), "busybox")),
    );
    files.extend(base_files());
    files
}

/// The config of the busybox image.
pub fn busybox_config() -> ImageConfig {
    ImageConfig {
        cmd: vec!["/bin/sh".into()],
        env: vec![DEFAULT_PATH_ENV.into()],
        ..ImageConfig::default()
    }
}

/// A placeholder layer for non-amd64 platforms.
pub(super) fn placeholder_layer(platform: &Platform) -> Result<Layer> {
    build_layer(&[ImageFile::bytes(
        "PLATFORM",
        format!(
            "placeholder layer for {}/{}\n",
            platform.os, platform.architecture
        ),
        0o644,
    )])
}

/// Writes every conformance test archive into `out_dir` (created if
/// missing) and returns what was written, in order:
///
/// * `probe.oci.tar`, `probe.docker.tar`, `probe-multi.oci.tar`,
///   `probe-user.oci.tar`, `busybox.oci.tar` — valid images;
/// * `truncated.oci.tar`, `arm64-only.oci.tar`, `bad-digest.oci.tar`,
///   `non-utf8.oci.tar` — for negative tests.
pub fn build_test_images(
    out_dir: &Path,
    sources: &TestImageSources,
) -> Result<Vec<WrittenArchive>> {
    fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let amd64 = Platform::linux_amd64();
    let arm64 = Platform::linux_arm64();
    ensure!(
        sources.probe.is_file(),
        "probe binary {} not found (build it with `cargo build --release --target x86_64-unknown-linux-gnu -p runlet-probe` or pass --probe)",
        sources.probe.display()
    );
    ensure!(
        sources.busybox.is_file(),
        "busybox binary {} not found (pass --busybox)",
        sources.busybox.display()
    );

    let probe_layer = [build_layer(&probe_files(&sources.probe))?];
    let probe_config = probe_config();
    let arm64_layer = [placeholder_layer(&arm64)?];
    let mut written = Vec::new();
    let mut record = |name: &str, image: &str, description: &'static str| -> Result<PathBuf> {
        let path = out_dir.join(name);
        let size = fs::metadata(&path)
            .with_context(|| format!("stat {}", path.display()))?
            .len();
        written.push(WrittenArchive {
            path: path.clone(),
            size,
            image: image.into(),
            description,
        });
        Ok(path)
    };

    let probe_path = out_dir.join("probe.oci.tar");
    write_oci_archive(
        &probe_path,
        PROBE_IMAGE,
        &probe_layer,
        &probe_config,
        &amd64,
    )?;
    record("probe.oci.tar", PROBE_IMAGE, "probe image (OCI archive)")?;

    write_docker_archive(
        &out_dir.join("probe.docker.tar"),
        PROBE_DOCKER_IMAGE,
        &probe_layer,
        &probe_config,
        &amd64,
    )?;
    record(
        "probe.docker.tar",
        PROBE_DOCKER_IMAGE,
        "probe image (docker-save archive)",
    )?;

    write_oci_index_archive(
        &out_dir.join("probe-multi.oci.tar"),
        PROBE_MULTI_IMAGE,
        &[
            PlatformImage {
                platform: &arm64,
                layers: &arm64_layer,
                config: &probe_config,
            },
            PlatformImage {
                platform: &amd64,
                layers: &probe_layer,
                config: &probe_config,
            },
        ],
    )?;
    record(
        "probe-multi.oci.tar",
        PROBE_MULTI_IMAGE,
        "probe image, multi-platform index (arm64 + amd64)",
    )?;

    let user_config = ImageConfig {
        user: Some("65534:65534".into()),
        working_dir: Some("/tmp".into()),
        ..probe_config.clone()
    };
    write_oci_archive(
        &out_dir.join("probe-user.oci.tar"),
        PROBE_USER_IMAGE,
        &probe_layer,
        &user_config,
        &amd64,
    )?;
    record(
        "probe-user.oci.tar",
        PROBE_USER_IMAGE,
        "probe image running as 65534:65534 in /tmp",
    )?;

    let busybox_layer = [build_layer(&busybox_files(&sources.busybox))?];
    write_oci_archive(
        &out_dir.join("busybox.oci.tar"),
        BUSYBOX_IMAGE,
        &busybox_layer,
        &busybox_config(),
        &amd64,
    )?;
    record("busybox.oci.tar", BUSYBOX_IMAGE, "static busybox image")?;

    let probe_size = fs::metadata(&probe_path)
        .with_context(|| format!("stat {}", probe_path.display()))?
        .len();
    truncate_file(
        &probe_path,
        &out_dir.join("truncated.oci.tar"),
        probe_size * 6 / 10,
    )?;
    record(
        "truncated.oci.tar",
        PROBE_IMAGE,
        "negative: probe.oci.tar cut to 60%",
    )?;

    write_oci_archive(
        &out_dir.join("arm64-only.oci.tar"),
        ARM64_ONLY_IMAGE,
        &arm64_layer,
        &probe_config,
        &arm64,
    )?;
    record(
        "arm64-only.oci.tar",
        ARM64_ONLY_IMAGE,
        "negative: only a linux/arm64 manifest",
    )?;

    // The corrupted layer must not be shared with any valid image: containerd
    // skips ingesting a blob whose digest it already has, which would hide
    // the corruption.
    let mut bad_digest = probe_files(&sources.probe);
    bad_digest.push(ImageFile::bytes(
        "BAD_DIGEST",
        "this layer's blob is corrupted on purpose\n",
        0o644,
    ));
    write_bad_digest_oci_archive(
        &out_dir.join("bad-digest.oci.tar"),
        BAD_DIGEST_IMAGE,
        &[build_layer(&bad_digest)?],
        &probe_config,
        &amd64,
    )?;
    record(
        "bad-digest.oci.tar",
        BAD_DIGEST_IMAGE,
        "negative: layer blob does not match its digest",
    )?;

    let mut non_utf8 = probe_files(&sources.probe);
    non_utf8.push(non_utf8_file());
    write_oci_archive(
        &out_dir.join("non-utf8.oci.tar"),
        NON_UTF8_IMAGE,
        &[build_layer(&non_utf8)?],
        &probe_config,
        &amd64,
    )?;
    record(
        "non-utf8.oci.tar",
        NON_UTF8_IMAGE,
        "negative: layer has a file name that is not UTF-8",
    )?;

    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imagebuild::testutil::*;
    use crate::imagebuild::ANNOTATION_CONTAINERD_IMAGE_NAME;
    use oci_spec::image::{ImageIndex, ImageManifest};

    #[test]
    fn test_image_set_builds() {
        let busybox = Path::new("/bin/busybox");
        if !busybox.is_file() {
            eprintln!("skipping: /bin/busybox not installed");
            return;
        }
        let sources = TestImageSources {
            probe: PathBuf::from("/bin/true"),
            busybox: busybox.into(),
        };
        let (d1, d2) = (scratch("set1"), scratch("set2"));
        let first = build_test_images(&d1, &sources).unwrap();
        let second = build_test_images(&d2, &sources).unwrap();
        let names: Vec<_> = first
            .iter()
            .map(|w| w.path.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "probe.oci.tar",
                "probe.docker.tar",
                "probe-multi.oci.tar",
                "probe-user.oci.tar",
                "busybox.oci.tar",
                "truncated.oci.tar",
                "arm64-only.oci.tar",
                "bad-digest.oci.tar",
                "non-utf8.oci.tar"
            ]
        );
        for (a, b) in first.iter().zip(&second) {
            assert_eq!(
                fs::read(&a.path).unwrap(),
                fs::read(&b.path).unwrap(),
                "{:?} differs",
                a.path
            );
            assert_eq!(a.size, fs::metadata(&a.path).unwrap().len());
        }

        let probe = tar_map(&fs::read(d1.join("probe.oci.tar")).unwrap());
        let index: ImageIndex = serde_json::from_slice(&probe["index.json"]).unwrap();
        assert_eq!(
            annotation(&index.manifests()[0], ANNOTATION_CONTAINERD_IMAGE_NAME),
            PROBE_IMAGE
        );

        let user = tar_map(&fs::read(d1.join("probe-user.oci.tar")).unwrap());
        let index: ImageIndex = serde_json::from_slice(&user["index.json"]).unwrap();
        assert_eq!(
            annotation(&index.manifests()[0], ANNOTATION_CONTAINERD_IMAGE_NAME),
            PROBE_USER_IMAGE
        );
        let cfg = check_manifest(&user, &index.manifests()[0]);
        assert_eq!(
            cfg.config().as_ref().unwrap().user().as_deref(),
            Some("65534:65534")
        );
        assert_eq!(
            cfg.config().as_ref().unwrap().working_dir().as_deref(),
            Some("/tmp")
        );

        let bb = tar_map(&fs::read(d1.join("busybox.oci.tar")).unwrap());
        let index: ImageIndex = serde_json::from_slice(&bb["index.json"]).unwrap();
        let manifest: ImageManifest =
            serde_json::from_slice(blob(&bb, &index.manifests()[0])).unwrap();
        let layer = tar_entries(&gunzip(blob(&bb, &manifest.layers()[0])));
        let sh = layer.iter().find(|(p, _, _)| p == b"bin/sh").unwrap();
        assert_eq!(sh.1, tar::EntryType::Symlink);
        let busybox_entry = layer.iter().find(|(p, _, _)| p == b"bin/busybox").unwrap();
        assert_eq!(busybox_entry.2, fs::read(busybox).unwrap());

        let truncated = first
            .iter()
            .find(|w| w.path.ends_with("truncated.oci.tar"))
            .unwrap();
        assert!(truncated.size < first[0].size);
        fs::remove_dir_all(d1).unwrap();
        fs::remove_dir_all(d2).unwrap();
    }
}
