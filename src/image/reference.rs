//! Image names, normalised the way Docker does it: `app` → `docker.io/library/app:latest`.
//!
//! runlet stores every image under its fully qualified name, so `app:tag`,
//! `library/app:tag` and `docker.io/library/app:tag` all mean the same image.

use thiserror::Error;

/// A name that could not be understood as an image reference.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct ReferenceError {
    pub reference: String,
    pub reason: &'static str,
}

/// Normalises `name` to `registry/repository:tag` (or `registry/repository@sha256:...`).
pub fn normalize(name: &str) -> Result<String, ReferenceError> {
    let err = |reason| ReferenceError {
        reference: name.to_string(),
        reason,
    };
    let name = name.trim();
    if name.is_empty() {
        return Err(err("empty name"));
    }
    if name.chars().any(char::is_whitespace) {
        return Err(err("contains whitespace"));
    }
    let (rest, digest) = match name.split_once('@') {
        Some((r, d)) => {
            let hex = d
                .strip_prefix("sha256:")
                .ok_or_else(|| err("digest must start with sha256:"))?;
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err("digest must be sha256: followed by 64 hex digits"));
            }
            (r, Some(d))
        }
        None => (name, None),
    };
    // A tag is after the last ':' that comes after the last '/'.
    let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (repo, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        if t.is_empty()
            || t.len() > 128
            || !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
        {
            return Err(err("tag must be 1-128 characters of [A-Za-z0-9_.-]"));
        }
    }
    if repo.is_empty() {
        return Err(err("empty repository"));
    }
    let mut parts: Vec<&str> = repo.split('/').collect();
    let first = parts[0];
    let has_domain =
        parts.len() > 1 && (first.contains('.') || first.contains(':') || first == "localhost");
    let domain = if has_domain {
        parts.remove(0)
    } else {
        "docker.io"
    };
    let domain = if domain == "index.docker.io" {
        "docker.io"
    } else {
        domain
    };
    if domain == "docker.io" && parts.len() == 1 {
        parts.insert(0, "library");
    }
    for p in &parts {
        if p.is_empty()
            || !p.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_' || b == b'-'
            })
        {
            return Err(err(
                "repository path components must be lowercase [a-z0-9._-]",
            ));
        }
    }
    let mut out = format!("{domain}/{}", parts.join("/"));
    match (tag, digest) {
        (Some(t), Some(d)) => out.push_str(&format!(":{t}@{d}")),
        (Some(t), None) => out.push_str(&format!(":{t}")),
        (None, Some(d)) => out.push_str(&format!("@{d}")),
        (None, None) => out.push_str(":latest"),
    }
    Ok(out)
}

/// A normalised reference taken apart: `registry/repository[:tag][@digest]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts<'a> {
    pub registry: &'a str,
    pub repository: &'a str,
    pub tag: Option<&'a str>,
    pub digest: Option<&'a str>,
}

/// Takes apart a name [`normalize`] returned (it always names its registry). Plain string
/// splitting: the distribution client's own parser compiles a Unicode-aware regular
/// expression on first use, which cost a pull command about 40 ms of CPU.
pub fn parts(normalized: &str) -> Option<Parts<'_>> {
    let (rest, digest) = match normalized.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (normalized, None),
    };
    let (registry, path) = rest.split_once('/')?;
    let last_slash = path.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (repository, tag) = match path[last_slash..].rfind(':') {
        Some(i) => (&path[..last_slash + i], Some(&path[last_slash + i + 1..])),
        None => (path, None),
    };
    (!registry.is_empty() && !repository.is_empty()).then_some(Parts {
        registry,
        repository,
        tag,
        digest,
    })
}

/// The short repository name of a normalised reference (`docker.io/library/app:1` → `app`),
/// used to derive a default service name.
pub fn short_name(normalized: &str) -> &str {
    let no_digest = normalized.split('@').next().unwrap_or(normalized);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    last.split(':').next().unwrap_or(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_docker() {
        let table = [
            ("app", "docker.io/library/app:latest"),
            ("app:tag", "docker.io/library/app:tag"),
            ("library/app:1.0", "docker.io/library/app:1.0"),
            ("docker.io/library/app:1.0", "docker.io/library/app:1.0"),
            ("index.docker.io/user/app", "docker.io/user/app:latest"),
            ("user/app", "docker.io/user/app:latest"),
            ("localhost:5000/app", "localhost:5000/app:latest"),
            ("localhost:5000/app:v2", "localhost:5000/app:v2"),
            ("gcr.io/proj/app:v1", "gcr.io/proj/app:v1"),
            (
                "app@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                "docker.io/library/app@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            ),
        ];
        for (input, want) in table {
            assert_eq!(normalize(input).unwrap(), want, "input {input}");
        }
    }

    #[test]
    fn refuses_bad_names() {
        for bad in [
            "",
            "App",
            "app:",
            "app:bad tag",
            "a b",
            "app@sha256:12",
            "/app",
            "app//x",
        ] {
            assert!(normalize(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn short_names() {
        assert_eq!(short_name("docker.io/library/app:latest"), "app");
        assert_eq!(short_name("localhost:5000/team/app:v2"), "app");
        assert_eq!(short_name("docker.io/library/app@sha256:00"), "app");
    }

    /// Every normalised form splits as the distribution client's own parser reads it.
    #[test]
    fn parts_agree_with_the_distribution_clients_parser() {
        let d = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
        let table = [
            "docker.io/library/app:latest".to_string(),
            "docker.io/user/app:1.0".to_string(),
            "localhost:5000/app:v2".to_string(),
            "127.0.0.1:5000/team/sub/app:v2".to_string(),
            "us-docker.pkg.dev/p/repo/app:tag".to_string(),
            format!("ghcr.io/o/app@{d}"),
            format!("localhost:5000/app:v1@{d}"),
        ];
        for name in &table {
            let p = parts(name).unwrap_or_else(|| panic!("{name}"));
            let theirs: oci_client::Reference = name.parse().unwrap();
            assert_eq!(p.registry, theirs.registry(), "{name}");
            assert_eq!(p.repository, theirs.repository(), "{name}");
            assert_eq!(p.tag, theirs.tag(), "{name}");
            assert_eq!(p.digest, theirs.digest(), "{name}");
        }
        assert_eq!(parts("app"), None);
        assert_eq!(parts("/app:1"), None);
    }
}
