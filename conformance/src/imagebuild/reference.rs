//! Image references as the builder normalizes them (`probe` → `docker.io/library/probe:latest`).

use std::collections::HashMap;

use anyhow::{ensure, Result};

use super::layout::{ANNOTATION_CONTAINERD_IMAGE_NAME, ANNOTATION_REF_NAME};

/// A parsed, normalized image reference (`name:tag`, no digests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Fully qualified repository, e.g. `docker.io/library/probe`.
    pub name: String,
    /// Tag, e.g. `latest`.
    pub tag: String,
}

impl ImageRef {
    /// Parses and normalizes a reference the way Docker/containerd do:
    /// `probe` → `docker.io/library/probe:latest`,
    /// `foo/bar:v1` → `docker.io/foo/bar:v1`, `localhost:5000/x` stays on
    /// its registry. Digest references are rejected.
    pub fn parse(reference: &str) -> Result<ImageRef> {
        ensure!(
            !reference.contains('@'),
            "digest references are not supported: {reference:?}"
        );
        let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
        let (repo, tag) = match reference[last_slash..].rfind(':') {
            Some(i) => (
                &reference[..last_slash + i],
                &reference[last_slash + i + 1..],
            ),
            None => (reference, "latest"),
        };
        ensure!(
            !repo.is_empty() && !tag.is_empty(),
            "invalid image reference {reference:?}"
        );
        let (domain, path) = match repo.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                (first, rest)
            }
            _ => ("docker.io", repo),
        };
        ensure!(!path.is_empty(), "invalid image reference {reference:?}");
        let path = if domain == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        Ok(ImageRef {
            name: format!("{domain}/{path}"),
            tag: tag.to_string(),
        })
    }

    /// The full reference, `name:tag`.
    pub fn full(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }

    /// The `index.json` annotations naming this image.
    pub(super) fn annotations(&self) -> HashMap<String, String> {
        HashMap::from([
            (ANNOTATION_CONTAINERD_IMAGE_NAME.to_string(), self.full()),
            (ANNOTATION_REF_NAME.to_string(), self.tag.clone()),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_refs_normalize() {
        let full = |r: &str| ImageRef::parse(r).unwrap().full();
        assert_eq!(full("probe"), "docker.io/library/probe:latest");
        assert_eq!(
            full("probe-user:latest"),
            "docker.io/library/probe-user:latest"
        );
        assert_eq!(
            full("docker.io/library/probe:latest"),
            "docker.io/library/probe:latest"
        );
        assert_eq!(full("foo/bar:v1"), "docker.io/foo/bar:v1");
        assert_eq!(full("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(full("ghcr.io/a/b:1.2"), "ghcr.io/a/b:1.2");
        assert_eq!(
            ImageRef::parse("docker.io/library/probe:latest")
                .unwrap()
                .tag,
            "latest"
        );
        assert!(ImageRef::parse("probe@sha256:00").is_err());
        assert!(ImageRef::parse("probe:").is_err());
    }
}
