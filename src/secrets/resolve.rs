//! The values of a container's secret references, read from the store when the container
//! is created: variables for its environment, files for its secret directories.

use std::fmt;

use thiserror::Error;

use super::store::{SecretError, SecretStore};
use crate::spec::secrets::{SecretBindings, SecretRef};

/// A reference that could not be read, with where the container wanted it.
#[derive(Debug, Error)]
pub enum ResolveError {
    /// The cause is in the message (not a source, so that a chain says it once).
    #[error("{key}: {cause}")]
    Store {
        /// The variable or file path the secret was for.
        key: String,
        cause: SecretError,
    },
    #[error("{key}: secret {secret} is not UTF-8 text without NUL bytes, which an environment variable needs; mount it as a file instead")]
    NotText { key: String, secret: String },
}

impl ResolveError {
    /// The reference names nothing in the store (a missing secret or version).
    pub fn is_not_found(&self) -> bool {
        match self {
            ResolveError::Store { cause, .. } => cause.is_not_found(),
            ResolveError::NotText { .. } => false,
        }
    }
}

/// One secret directory as the container sees it: the files in it, with their contents.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretDir {
    /// The directory in the container (absolute).
    pub mount: String,
    /// (path relative to `mount`, contents).
    pub files: Vec<(String, Vec<u8>)>,
}

/// Never prints a value.
impl fmt::Debug for SecretDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.files.iter().map(|(p, _)| p.as_str()).collect();
        f.debug_struct("SecretDir")
            .field("mount", &self.mount)
            .field("files", &names)
            .finish()
    }
}

/// What a container gets of its secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    pub env: Vec<(String, String)>,
    pub dirs: Vec<SecretDir>,
}

/// Never prints a value.
impl fmt::Debug for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Resolved")
            .field("env", &names)
            .field("dirs", &self.dirs)
            .finish()
    }
}

/// Reads every reference of `b` from `store`; the first that fails is named.
pub fn resolve(b: &SecretBindings, store: &SecretStore) -> Result<Resolved, ResolveError> {
    let project = b.project();
    let read = |key: String, r: &SecretRef| {
        let (p, s) = r.qualified(project);
        store
            .access(p, s, r.version)
            .map_err(|cause| ResolveError::Store { key, cause })
    };
    let mut out = Resolved::default();
    for (k, r) in &b.env {
        let bytes = read(k.clone(), r)?;
        let text = String::from_utf8(bytes)
            .ok()
            .filter(|t| !t.contains('\0'))
            .ok_or_else(|| ResolveError::NotText {
                key: k.clone(),
                secret: r.to_string(),
            })?;
        out.env.push((k.clone(), text));
    }
    for (mount, files) in b.mounts() {
        let mut dir = SecretDir {
            mount: mount.to_string(),
            files: Vec::new(),
        };
        for f in files {
            dir.files.push((f.path.clone(), read(f.key(), &f.secret)?));
        }
        out.dirs.push(dir);
    }
    Ok(out)
}

/// Checks that every reference of `b` names a version in `store` (at the door, before a
/// container is made); the values are not kept.
pub fn check(b: &SecretBindings, store: &SecretStore) -> Result<(), ResolveError> {
    resolve(b, store).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::secrets::{SecretFile, Version};

    fn r(secret: &str, version: Version) -> SecretRef {
        SecretRef {
            secret: secret.into(),
            version,
        }
    }

    #[test]
    fn references_become_values_and_failures_name_them() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SecretStore::new(tmp.path());
        store.create("local", "db", Some(b"pw1")).unwrap();
        store.add_version("local", "db", b"pw2").unwrap();
        store
            .create("other", "cert", Some(b"\x00\xffbinary"))
            .unwrap();
        let mut b = SecretBindings {
            project: String::new(),
            env: vec![
                ("OLD".into(), r("db", Version::Number(1))),
                ("NEW".into(), r("db", Version::Latest)),
            ],
            files: vec![SecretFile {
                mount: "/certs".into(),
                path: "tls.key".into(),
                secret: r("projects/other/secrets/cert", Version::Latest),
            }],
        };
        let got = resolve(&b, &store).unwrap();
        assert_eq!(
            got.env,
            vec![("OLD".into(), "pw1".into()), ("NEW".into(), "pw2".into())]
        );
        assert_eq!(got.dirs[0].mount, "/certs");
        assert_eq!(
            got.dirs[0].files,
            vec![("tls.key".to_string(), b"\x00\xffbinary".to_vec())]
        );
        // Debug output holds names, never values.
        let dbg = format!("{got:?}");
        assert!(!dbg.contains("pw1") && !dbg.contains("binary"), "{dbg}");
        assert!(dbg.contains("OLD") && dbg.contains("tls.key"), "{dbg}");

        b.env.push((
            "BIN".into(),
            r("projects/other/secrets/cert", Version::Number(1)),
        ));
        let e = resolve(&b, &store).unwrap_err();
        assert!(!e.is_not_found());
        assert!(
            e.to_string()
                .starts_with("BIN: secret projects/other/secrets/cert:1 is not UTF-8"),
            "{e}"
        );
        b.env.pop();
        b.env.push(("X".into(), r("db", Version::Number(3))));
        let e = check(&b, &store).unwrap_err();
        assert!(e.is_not_found());
        assert_eq!(
            e.to_string(),
            "X: secret version projects/local/secrets/db/versions/3 was not found"
        );
        b.project = "p2".into();
        let e = check(&b, &store).unwrap_err();
        assert_eq!(
            e.to_string(),
            "OLD: secret projects/p2/secrets/db was not found"
        );
    }
}
