//! Table-driven tests over the archives the conformance image builder makes: each good one
//! plans, each broken one is refused with the error that names what is wrong.

use std::path::{Path, PathBuf};

use runlet_conformance::imagebuild as ib;

use super::{plan_import, NoProgress};

fn files() -> Vec<ib::ImageFile> {
    vec![
        ib::ImageFile::bytes("probe", b"#!fake probe".to_vec(), 0o755),
        ib::ImageFile::dir("tmp", 0o1777),
        ib::ImageFile::bytes("etc/passwd", ib::ETC_PASSWD, 0o644),
    ]
}

fn layer(extra: Option<ib::ImageFile>) -> ib::Layer {
    let mut f = files();
    f.extend(extra);
    ib::build_layer(&f).unwrap()
}

fn oci(out: &Path, name: &str, platform: &ib::Platform) {
    ib::write_oci_archive(out, name, &[layer(None)], &ib::probe_config(), platform).unwrap();
}

/// Writes one archive into `dir` and returns its path.
type Make = fn(&Path) -> PathBuf;

pub(super) fn good_oci(dir: &Path) -> PathBuf {
    let out = dir.join("probe.oci.tar");
    oci(&out, "probe", &ib::Platform::linux_amd64());
    out
}

pub(super) fn good_docker(dir: &Path) -> PathBuf {
    let out = dir.join("probe.docker.tar");
    let layers = [
        layer(None),
        layer(Some(ib::ImageFile::bytes("x", "x", 0o644))),
    ];
    let (cfg, amd64) = (ib::probe_config(), ib::Platform::linux_amd64());
    ib::write_docker_archive(&out, "probe-docker:v1", &layers, &cfg, &amd64).unwrap();
    out
}

fn index(dir: &Path, platforms: &[ib::Platform]) -> PathBuf {
    let out = dir.join("multi.oci.tar");
    let cfg = ib::probe_config();
    let layers: Vec<[ib::Layer; 1]> = platforms
        .iter()
        .map(|p| {
            [layer(Some(ib::ImageFile::bytes(
                "PLATFORM",
                p.architecture.clone(),
                0o644,
            )))]
        })
        .collect();
    let images: Vec<ib::PlatformImage> = platforms
        .iter()
        .zip(&layers)
        .map(|(platform, layers)| ib::PlatformImage {
            platform,
            layers,
            config: &cfg,
        })
        .collect();
    ib::write_oci_index_archive(&out, "probe-multi", &images).unwrap();
    out
}

pub(super) fn good_index(dir: &Path) -> PathBuf {
    index(
        dir,
        &[ib::Platform::linux_arm64(), ib::Platform::linux_amd64()],
    )
}

fn index_without_amd64(dir: &Path) -> PathBuf {
    index(dir, &[ib::Platform::linux_arm64()])
}

fn arm64_only(dir: &Path) -> PathBuf {
    let out = dir.join("arm64-only.oci.tar");
    oci(&out, "arm64-only", &ib::Platform::linux_arm64());
    out
}

fn truncated(dir: &Path) -> PathBuf {
    let good = good_oci(dir);
    let out = dir.join("truncated.oci.tar");
    let len = std::fs::metadata(&good).unwrap().len();
    ib::truncate_file(&good, &out, len * 6 / 10).unwrap();
    out
}

fn cut_at_end_marker(dir: &Path) -> PathBuf {
    let good = good_oci(dir);
    let out = dir.join("no-end.oci.tar");
    let len = std::fs::metadata(&good).unwrap().len();
    ib::truncate_file(&good, &out, len - 1024).unwrap();
    out
}

fn bad_digest(dir: &Path) -> PathBuf {
    let out = dir.join("bad-digest.oci.tar");
    let (cfg, amd64) = (ib::probe_config(), ib::Platform::linux_amd64());
    ib::write_bad_digest_oci_archive(&out, "bad-digest", &[layer(None)], &cfg, &amd64).unwrap();
    out
}

fn non_utf8(dir: &Path) -> PathBuf {
    let out = dir.join("non-utf8.oci.tar");
    let (cfg, amd64) = (ib::probe_config(), ib::Platform::linux_amd64());
    let layers = [layer(Some(ib::non_utf8_file()))];
    ib::write_oci_archive(&out, "non-utf8", &layers, &cfg, &amd64).unwrap();
    out
}

fn empty(dir: &Path) -> PathBuf {
    let out = dir.join("empty.tar");
    std::fs::write(&out, b"").unwrap();
    out
}

fn not_a_tar(dir: &Path) -> PathBuf {
    let out = dir.join("text.tar");
    std::fs::write(&out, "this is not a tar archive\n".repeat(100)).unwrap();
    out
}

fn neither_layout(dir: &Path) -> PathBuf {
    let out = dir.join("plain.tar");
    let l = ib::build_layer(&files()).unwrap();
    std::fs::write(&out, l.tar_bytes).unwrap();
    out
}

/// What a refusal of an arm64-only image says (tests/ and conformance/ look for linux/amd64).
const NO_AMD64: &str = "no linux/amd64 variant (found: linux/arm64)";

#[test]
fn each_archive_plans_or_is_refused_with_its_reason() {
    // (archive, the image names it plans to or the refusal, a word the message must hold:
    // tests/ and conformance/ look for these).
    type Want = Result<&'static [&'static str], &'static str>;
    let table: [(&str, Make, Want, &str); 12] = [
        ("oci", good_oci, Ok(&["docker.io/library/probe:latest"]), ""),
        (
            "docker",
            good_docker,
            Ok(&["docker.io/library/probe-docker:v1"]),
            "",
        ),
        (
            "index",
            good_index,
            Ok(&["docker.io/library/probe-multi:latest"]),
            "",
        ),
        ("truncated", truncated, Err("Corrupt"), "truncated"),
        (
            "no end marker",
            cut_at_end_marker,
            Err("Corrupt"),
            "truncated",
        ),
        ("arm64 only", arm64_only, Err("NoAmd64"), NO_AMD64),
        (
            "index without amd64",
            index_without_amd64,
            Err("NoAmd64"),
            NO_AMD64,
        ),
        (
            "bad digest",
            bad_digest,
            Err("DigestMismatch"),
            "does not match its digest",
        ),
        ("non-UTF-8 name", non_utf8, Err("NonUtf8Name"), "not UTF-8"),
        ("empty file", empty, Err("Corrupt"), "corrupt"),
        ("not a tar", not_a_tar, Err("Corrupt"), "corrupt"),
        (
            "neither layout",
            neither_layout,
            Err("UnknownFormat"),
            "neither",
        ),
    ];
    for (what, make, want, needle) in table {
        let dir = tempfile::tempdir().unwrap();
        let result = plan_import(&make(dir.path()), None, &mut NoProgress);
        match (&result, want) {
            (Ok(plan), Ok(names)) => {
                let got: Vec<&str> = plan.images.iter().map(|i| i.name.as_str()).collect();
                assert_eq!(got, names, "{what}");
            }
            (Err(e), Err(variant)) => {
                assert!(format!("{e:?}").starts_with(variant), "{what}: {e:?}");
                let text = e.to_string();
                assert!(
                    text.contains(needle),
                    "{what}: {text} should say {needle:?}"
                );
            }
            _ => panic!("{what}: {result:?}, want {want:?}"),
        }
    }
}

#[test]
fn a_tag_names_a_single_image_and_renames_a_named_one() {
    let dir = tempfile::tempdir().unwrap();
    let table: [(Make, &str); 2] = [(good_oci, "app:1"), (good_docker, "other/app")];
    for (make, tag) in table {
        let plan = plan_import(&make(dir.path()), Some(tag), &mut NoProgress).unwrap();
        let want = crate::image::reference::normalize(tag).unwrap();
        assert_eq!(plan.images.len(), 1);
        assert_eq!(plan.images[0].name, want);
    }
}

#[test]
fn a_plan_lists_children_before_parents_with_gc_labels() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_import(&good_docker(dir.path()), None, &mut NoProgress).unwrap();
    let image = &plan.images[0];
    let pos = |digest: String| plan.blobs.iter().position(|b| b.digest == digest).unwrap();
    let manifest = pos(image.target.digest().to_string());
    assert!(pos(image.config.digest().to_string()) < manifest);
    for (i, l) in image.layers.iter().enumerate() {
        let at = pos(l.desc.digest().to_string());
        assert!(at < manifest);
        assert_eq!(
            plan.blobs[at].labels["containerd.io/uncompressed"],
            l.diff_id
        );
        assert_eq!(
            plan.blobs[manifest].labels[&format!("containerd.io/gc.ref.content.l.{i}")],
            l.desc.digest().to_string()
        );
    }
    assert_eq!(
        plan.total_bytes(),
        plan.blobs.iter().map(|b| b.size).sum::<u64>()
    );
}
