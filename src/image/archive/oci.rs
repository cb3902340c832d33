//! Planning an OCI image layout: `index.json` lists images, each a manifest or a nested index
//! from which the linux/amd64 manifest is chosen (contract IMG-3).

use std::path::Path;

use oci_spec::image::{Descriptor, ImageIndex};

use super::plan::{parse, Builder};
use super::scan::Scan;
use super::{reference, ArchiveError, ImportPlan};
use crate::image::config::is_amd64_entry;
use crate::image::media::{self, Kind};

pub(super) fn plan(
    path: &Path,
    scanned: &Scan,
    tag: Option<&str>,
) -> Result<ImportPlan, ArchiveError> {
    let index: ImageIndex = parse(path, "index.json", &scanned.docs["index.json"])?;
    let mut b = Builder {
        path,
        entries: &scanned.entries,
        docs: &scanned.docs,
        blobs: Vec::new(),
    };
    let tops = index.manifests();
    if tops.is_empty() {
        return Err(ArchiveError::Invalid {
            path: path.to_path_buf(),
            detail: "index.json lists no manifests".into(),
        });
    }
    let mut images = Vec::new();
    for top in tops {
        let name = match (tag, image_name(top)) {
            (Some(t), _) if tops.len() == 1 => reference::normalize(t)?,
            (_, Some(n)) => n?,
            (Some(t), None) => reference::normalize(t)?,
            (None, None) => {
                return Err(ArchiveError::NoName {
                    path: path.to_path_buf(),
                })
            }
        };
        let mdesc = match media::kind(top.media_type()) {
            Kind::Index => {
                let digest = top.digest().to_string();
                let nested: ImageIndex = parse(path, &format!("index {digest}"), b.doc(&digest)?)?;
                let list = nested.manifests();
                let chosen = list.iter().find(|d| is_amd64_entry(d)).cloned();
                chosen.ok_or_else(|| ArchiveError::NoAmd64 {
                    path: path.to_path_buf(),
                    image: name.clone(),
                    found: describe_platforms(list),
                })?
            }
            Kind::Manifest => {
                if top.platform().is_some() && !is_amd64_entry(top) {
                    return Err(ArchiveError::NoAmd64 {
                        path: path.to_path_buf(),
                        image: name,
                        found: describe_platforms(std::slice::from_ref(top)),
                    });
                }
                top.clone()
            }
            Kind::Layer | Kind::Other => {
                return Err(ArchiveError::UnsupportedMediaType {
                    path: path.to_path_buf(),
                    what: format!("index.json entry {}", top.digest()),
                    media_type: top.media_type().to_string(),
                })
            }
        };
        images.push(b.add_manifest(&name, &mdesc, None)?);
    }
    Ok(ImportPlan {
        path: path.to_path_buf(),
        blobs: b.blobs,
        images,
    })
}

/// The name an OCI index entry carries: containerd's full-name annotation, or an OCI
/// `ref.name` that is itself a full reference (a bare tag is not enough to name an image).
fn image_name(d: &Descriptor) -> Option<Result<String, reference::ReferenceError>> {
    let annotations = d.annotations().as_ref()?;
    if let Some(n) = annotations.get(media::ANNOTATION_CONTAINERD_IMAGE_NAME) {
        return Some(reference::normalize(n));
    }
    let r = annotations.get(media::ANNOTATION_REF_NAME)?;
    if r.contains('/') || r.contains(':') && !r.starts_with(':') {
        Some(reference::normalize(r))
    } else {
        None
    }
}

fn describe_platforms(ds: &[Descriptor]) -> String {
    let v: Vec<String> = ds
        .iter()
        .map(|d| {
            d.platform()
                .as_ref()
                .map(|p| format!("{}/{}", p.os(), p.architecture()))
                .unwrap_or_else(|| "unspecified".into())
        })
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}
