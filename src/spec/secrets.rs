//! Secret references, as a spec keeps them: gcloud's `--set-secrets`, `--update-secrets`,
//! `--remove-secrets`, `--clear-secrets` (`ENV=SECRET:VERSION`, `/dir/file=SECRET:VERSION`),
//! the Admin API's `valueSource.secretKeyRef` and `secret` volumes, the job YAML's
//! `valueFrom.secretKeyRef`. Only references live here: a value is read from the store
//! when a container is created ([`crate::secrets::resolve`]), so what runlet stores and
//! prints never holds one.

use std::fmt;

use super::{bad, check_env_name, split_list, SpecError};

/// The project a short secret name is in unless the caller says otherwise (`--project`).
pub const DEFAULT_PROJECT: &str = "local";

/// A secret version: a number (from 1) or `latest` (the highest enabled one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Latest,
    Number(u32),
}

impl Version {
    /// `latest` or a number from 1; `""` is `latest` (the API's unset version).
    pub fn parse(field: &'static str, text: &str) -> Result<Version, SpecError> {
        match text {
            "" | "latest" => Ok(Version::Latest),
            n => match n.parse::<u32>() {
                Ok(v) if v > 0 => Ok(Version::Number(v)),
                _ => Err(bad(
                    field,
                    format!("version {n:?} is not latest or a number from 1"),
                )),
            },
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Version::Latest => f.write_str("latest"),
            Version::Number(n) => write!(f, "{n}"),
        }
    }
}

/// One secret version: `secret` is a short name (in the spec's project) or a full
/// `projects/P/secrets/S`, kept as given so that it reads back the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    pub secret: String,
    pub version: Version,
}

impl SecretRef {
    /// `SECRET:VERSION`, `projects/P/secrets/S:VERSION` or
    /// `projects/P/secrets/S/versions/VERSION`.
    pub fn parse(field: &'static str, text: &str) -> Result<SecretRef, SpecError> {
        let (secret, version) = match text.split_once("/versions/") {
            Some((s, v)) => (s, v),
            None => text.rsplit_once(':').ok_or_else(|| {
                bad(
                    field,
                    format!("{text:?} is not SECRET:VERSION (e.g. mysecret:latest)"),
                )
            })?,
        };
        if version.is_empty() {
            return Err(bad(field, format!("{text:?} has no version after the ':'")));
        }
        Ok(SecretRef {
            secret: check_secret_name(field, secret)?.to_string(),
            version: Version::parse(field, version)?,
        })
    }

    /// (project, secret id), a short name being in `project`.
    pub fn qualified<'a>(&'a self, project: &'a str) -> (&'a str, &'a str) {
        qualify(&self.secret, project)
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.secret, self.version)
    }
}

/// (project, secret id) of `secret` (short, or `projects/P/secrets/S`).
pub fn qualify<'a>(secret: &'a str, project: &'a str) -> (&'a str, &'a str) {
    match secret
        .strip_prefix("projects/")
        .and_then(|r| r.split_once("/secrets/"))
    {
        Some((p, s)) => (p, s),
        None => (project, secret),
    }
}

/// A secret id as Secret Manager allows it: `[A-Za-z0-9_-]{1,255}`.
pub fn check_secret_id(field: &'static str, id: &str) -> Result<(), SpecError> {
    if id.is_empty()
        || id.len() > 255
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(bad(
            field,
            format!("secret name {id:?} is not 1-255 letters, digits, '_' or '-'"),
        ));
    }
    Ok(())
}

/// A project id: 1-63 lowercase letters, digits or `-` (a project number is digits).
pub fn check_project(field: &'static str, p: &str) -> Result<(), SpecError> {
    if p.is_empty()
        || p.len() > 63
        || !p
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(bad(
            field,
            format!("project {p:?} is not 1-63 lowercase letters, digits or '-'"),
        ));
    }
    Ok(())
}

/// A short name or `projects/P/secrets/S`, checked.
pub fn check_secret_name<'a>(field: &'static str, name: &'a str) -> Result<&'a str, SpecError> {
    if let Some(rest) = name.strip_prefix("projects/") {
        let Some((p, s)) = rest.split_once("/secrets/") else {
            return Err(bad(
                field,
                format!("{name:?} is not a secret name or projects/P/secrets/S"),
            ));
        };
        check_project(field, p)?;
        check_secret_id(field, s)?;
    } else {
        check_secret_id(field, name)?;
    }
    Ok(name)
}

/// A secret file: `secret` at `mount/path` (`path` relative, in the directory `mount`,
/// which the container sees as a read-only tmpfs holding only its secret's files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFile {
    pub mount: String,
    pub path: String,
    pub secret: SecretRef,
}

impl SecretFile {
    /// The flag key: the file's absolute path.
    pub fn key(&self) -> String {
        format!("{}/{}", self.mount.trim_end_matches('/'), self.path)
    }
}

/// A container's secrets: environment variables and files, by reference.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretBindings {
    /// Where short secret names are (the service's or job's project; `local` by default).
    pub project: String,
    pub env: Vec<(String, SecretRef)>,
    pub files: Vec<SecretFile>,
}

impl SecretBindings {
    pub fn is_empty(&self) -> bool {
        self.env.is_empty() && self.files.is_empty()
    }

    /// The project short names resolve in (`local` when unset).
    pub fn project(&self) -> &str {
        if self.project.is_empty() {
            DEFAULT_PROJECT
        } else {
            &self.project
        }
    }

    /// Every reference, named as the container sees it (variable or file path).
    pub fn refs(&self) -> impl Iterator<Item = (String, &SecretRef)> {
        self.env
            .iter()
            .map(|(k, r)| (k.clone(), r))
            .chain(self.files.iter().map(|f| (f.key(), &f.secret)))
    }

    /// The mount directories, each with its files, in the order first named.
    pub fn mounts(&self) -> Vec<(&str, Vec<&SecretFile>)> {
        let mut out: Vec<(&str, Vec<&SecretFile>)> = Vec::new();
        for f in &self.files {
            match out.iter_mut().find(|(m, _)| *m == f.mount) {
                Some((_, v)) => v.push(f),
                None => out.push((&f.mount, vec![f])),
            }
        }
        out
    }

    /// Cloud Run's rules: one secret per mounted directory, a file named once, a variable
    /// not also given a plain value (`plain_env`).
    pub fn check(
        &self,
        field: &'static str,
        plain_env: &[(String, String)],
    ) -> Result<(), SpecError> {
        for (k, _) in &self.env {
            if plain_env.iter().any(|(p, _)| p == k) {
                return Err(bad(
                    field,
                    format!("{k} is set both as a plain variable and from a secret"),
                ));
            }
        }
        for (mount, files) in self.mounts() {
            let inner = mount.trim_end_matches('/');
            if inner.is_empty()
                || !mount.starts_with('/')
                || inner[1..]
                    .split('/')
                    .any(|c| c.is_empty() || c == "." || c == "..")
            {
                return Err(bad(
                    field,
                    format!(
                        "{mount:?}: a secret's directory must be an absolute path other than /"
                    ),
                ));
            }
            let first = &files[0].secret.secret;
            if let Some(other) = files.iter().find(|f| &f.secret.secret != first) {
                return Err(bad(
                    field,
                    format!(
                        "{mount}: secrets {first} and {} are both mounted in this directory; Cloud Run mounts one secret per directory",
                        other.secret.secret
                    ),
                ));
            }
            for (i, f) in files.iter().enumerate() {
                check_rel_path(field, &f.path)?;
                if files[..i].iter().any(|g| g.path == f.path) {
                    return Err(bad(field, format!("{} is given twice", f.key())));
                }
            }
        }
        Ok(())
    }
}

/// A file's path inside its secret directory: relative, no `..`, no empty part.
fn check_rel_path(field: &'static str, p: &str) -> Result<(), SpecError> {
    if p.is_empty()
        || p.starts_with('/')
        || p.split('/').any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(bad(
            field,
            format!("{p:?} is not a relative file path inside the secret's directory"),
        ));
    }
    Ok(())
}

/// gcloud's secret flags as given: `--set-secrets` replaces all, `--clear-secrets` removes
/// all, `--remove-secrets` then `--update-secrets` change some (applied in that order, as
/// gcloud does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretFlags {
    pub set: Vec<String>,
    pub update: Vec<String>,
    pub remove: Vec<String>,
    pub clear: bool,
}

/// What the secret flags say to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretOps {
    /// Start from nothing (`--set-secrets`, `--clear-secrets`).
    pub replace: bool,
    /// Keys (variable names or file paths) to remove.
    pub remove: Vec<String>,
    /// Keys to set: a variable or a file (absolute path).
    pub put: Vec<(String, SecretRef)>,
}

impl SecretOps {
    pub fn is_empty(&self) -> bool {
        !self.replace && self.remove.is_empty() && self.put.is_empty()
    }
}

impl SecretFlags {
    pub fn is_empty(&self) -> bool {
        *self == SecretFlags::default()
    }

    /// Parses the flags, refusing combinations gcloud refuses and bad items, naming the flag.
    pub fn parse(&self) -> Result<SecretOps, SpecError> {
        let given = [
            (!self.set.is_empty(), "--set-secrets"),
            (self.clear, "--clear-secrets"),
            (
                !self.update.is_empty() || !self.remove.is_empty(),
                "--update-secrets/--remove-secrets",
            ),
        ];
        let named: Vec<&str> = given.iter().filter(|g| g.0).map(|g| g.1).collect();
        if named.len() > 1 {
            return Err(bad(
                "--set-secrets",
                format!("at most one of these can be given: {}", named.join(", ")),
            ));
        }
        let mut ops = SecretOps {
            replace: !self.set.is_empty() || self.clear,
            ..Default::default()
        };
        for item in self.remove.iter().flat_map(|s| split_list(s)) {
            if !item.is_empty() {
                check_key("--remove-secrets", &item)?;
                ops.remove.push(item);
            }
        }
        let (field, items) = if self.set.is_empty() {
            ("--update-secrets", &self.update)
        } else {
            ("--set-secrets", &self.set)
        };
        for item in items.iter().flat_map(|s| split_list(s)) {
            if item.is_empty() {
                continue;
            }
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| bad(field, format!("{item:?} is not KEY=SECRET:VERSION")))?;
            check_key(field, k)?;
            let r = SecretRef::parse(field, v)?;
            match ops.put.iter_mut().find(|(ek, _)| ek == k) {
                Some(slot) => slot.1 = r,
                None => ops.put.push((k.to_string(), r)),
            }
        }
        Ok(ops)
    }
}

/// A key is a variable name or an absolute file path (`/dir/file`).
fn check_key(field: &'static str, k: &str) -> Result<(), SpecError> {
    if let Some(rest) = k.strip_prefix('/') {
        match rest.rsplit_once('/') {
            Some((dir, file)) if !dir.is_empty() && !file.is_empty() => check_rel_path(field, rest),
            _ => Err(bad(
                field,
                format!("{k:?}: a secret file's path is /DIRECTORY/FILE (e.g. /secrets/api/key)"),
            )),
        }
    } else {
        check_env_name(field, k)
    }
}

impl SecretBindings {
    /// Applies `ops`: a file key's directory is its parent (gcloud: `/secrets/api/key` mounts
    /// `/secrets/api` holding `key`); a key names a variable or a file of any directory.
    pub fn apply(&mut self, ops: &SecretOps) {
        if ops.replace {
            self.env.clear();
            self.files.clear();
        }
        for k in &ops.remove {
            self.env.retain(|(e, _)| e != k);
            self.files.retain(|f| f.key() != *k);
        }
        for (k, r) in &ops.put {
            if k.starts_with('/') {
                self.files.retain(|f| f.key() != *k);
                let (dir, file) = k.rsplit_once('/').unwrap_or(("", k));
                self.files.push(SecretFile {
                    mount: dir.to_string(),
                    path: file.to_string(),
                    secret: r.clone(),
                });
            } else {
                match self.env.iter_mut().find(|(e, _)| e == k) {
                    Some(slot) => slot.1 = r.clone(),
                    None => self.env.push((k.clone(), r.clone())),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(secret: &str, version: Version) -> SecretRef {
        SecretRef {
            secret: secret.into(),
            version,
        }
    }

    #[test]
    fn references_parse_as_gcloud_writes_them() {
        use Version::*;
        for (text, want) in [
            ("db:1", Ok(r("db", Number(1)))),
            ("db:latest", Ok(r("db", Latest))),
            ("db-pass_2:12", Ok(r("db-pass_2", Number(12)))),
            (
                "projects/p1/secrets/db:3",
                Ok(r("projects/p1/secrets/db", Number(3))),
            ),
            (
                "projects/p1/secrets/db/versions/latest",
                Ok(r("projects/p1/secrets/db", Latest)),
            ),
            ("db", Err("not SECRET:VERSION")),
            ("db:", Err("no version")),
            ("db:0", Err("not latest or a number")),
            ("db:x", Err("not latest or a number")),
            ("d b:1", Err("secret name")),
            (":1", Err("secret name")),
            ("projects/P/secrets/db:1", Err("project")),
            ("projects/p/db:1", Err("projects/P/secrets/S")),
        ] {
            let got = SecretRef::parse("--set-secrets", text);
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{text}"),
                (Err(e), Err(needle)) => {
                    assert_eq!(e.field, "--set-secrets");
                    assert!(e.detail.contains(needle), "{text}: {}", e.detail)
                }
                (g, w) => panic!("{text}: got {g:?}, want {w:?}"),
            }
        }
        assert_eq!(r("db", Version::Latest).to_string(), "db:latest");
        assert_eq!(
            r("projects/p/secrets/s", Version::Number(2)).qualified("local"),
            ("p", "s")
        );
        assert_eq!(r("s", Version::Latest).qualified("local"), ("local", "s"));
    }

    fn flags(f: impl FnOnce(&mut SecretFlags)) -> SecretFlags {
        let mut s = SecretFlags::default();
        f(&mut s);
        s
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_parse_into_operations() {
        let ops = flags(|f| f.set = strings(&["A=a:1,/s/api/key=k:latest", "A=a:2"]))
            .parse()
            .unwrap();
        assert!(ops.replace);
        assert_eq!(
            ops.put,
            vec![
                ("A".to_string(), r("a", Version::Number(2))),
                ("/s/api/key".to_string(), r("k", Version::Latest)),
            ]
        );
        let ops = flags(|f| {
            f.update = strings(&["B=b:1"]);
            f.remove = strings(&["A,/s/api/key"]);
        })
        .parse()
        .unwrap();
        assert!(!ops.replace);
        assert_eq!(ops.remove, strings(&["A", "/s/api/key"]));
        assert!(flags(|f| f.clear = true).parse().unwrap().replace);
        assert!(flags(|_| {}).parse().unwrap().is_empty());
    }

    #[test]
    fn bad_flags_are_refused_naming_the_flag() {
        type Edit = fn(&mut SecretFlags);
        let table: Vec<(Edit, &str, &str)> = vec![
            (|f| f.set = strings(&["A"]), "--set-secrets", "KEY=SECRET"),
            (
                |f| f.set = strings(&["1A=a:1"]),
                "--set-secrets",
                "variable name",
            ),
            (
                |f| f.update = strings(&["A=a"]),
                "--update-secrets",
                "SECRET:VERSION",
            ),
            (
                |f| f.update = strings(&["/key=a:1"]),
                "--update-secrets",
                "/DIRECTORY/FILE",
            ),
            (
                |f| f.update = strings(&["/dir/=a:1"]),
                "--update-secrets",
                "/DIRECTORY/FILE",
            ),
            (
                |f| f.update = strings(&["/d/../x=a:1"]),
                "--update-secrets",
                "relative",
            ),
            (
                |f| f.remove = strings(&["A-B"]),
                "--remove-secrets",
                "variable name",
            ),
            (
                |f| {
                    f.set = strings(&["A=a:1"]);
                    f.clear = true
                },
                "--set-secrets",
                "at most one",
            ),
            (
                |f| {
                    f.set = strings(&["A=a:1"]);
                    f.update = strings(&["B=b:1"])
                },
                "--set-secrets",
                "at most one",
            ),
            (
                |f| {
                    f.clear = true;
                    f.remove = strings(&["B"])
                },
                "--set-secrets",
                "at most one",
            ),
        ];
        for (i, (edit, field, needle)) in table.into_iter().enumerate() {
            let e = flags(edit).parse().unwrap_err();
            assert_eq!(e.field, field, "case {i}: {e}");
            assert!(e.detail.contains(needle), "case {i}: {e}");
        }
    }

    #[test]
    fn operations_apply_as_gcloud_says() {
        let mut b = SecretBindings::default();
        b.apply(
            &flags(|f| f.update = strings(&["A=a:1,/s/api/key=k:1,/s/api/old=k:2"]))
                .parse()
                .unwrap(),
        );
        assert_eq!(b.env, vec![("A".to_string(), r("a", Version::Number(1)))]);
        assert_eq!(b.files.len(), 2);
        assert_eq!(b.files[0].mount, "/s/api");
        assert_eq!(b.files[0].path, "key");
        // Remove first, then update.
        b.apply(
            &flags(|f| {
                f.remove = strings(&["/s/api/old,A"]);
                f.update = strings(&["A=a:latest"]);
            })
            .parse()
            .unwrap(),
        );
        assert_eq!(b.env, vec![("A".to_string(), r("a", Version::Latest))]);
        assert_eq!(
            b.files.iter().map(SecretFile::key).collect::<Vec<_>>(),
            ["/s/api/key"]
        );
        b.apply(&flags(|f| f.set = strings(&["B=b:1"])).parse().unwrap());
        assert_eq!(b.env, vec![("B".to_string(), r("b", Version::Number(1)))]);
        assert!(b.files.is_empty());
        b.apply(&flags(|f| f.clear = true).parse().unwrap());
        assert!(b.is_empty());
    }

    #[test]
    fn bindings_follow_cloud_runs_rules() {
        let file = |mount: &str, path: &str, secret: &str| SecretFile {
            mount: mount.into(),
            path: path.into(),
            secret: r(secret, Version::Latest),
        };
        let ok = SecretBindings {
            project: String::new(),
            env: vec![("A".into(), r("a", Version::Latest))],
            files: vec![
                file("/s", "one", "k"),
                file("/s", "two", "k"),
                file("/t", "x", "j"),
            ],
        };
        ok.check("f", &[("B".into(), "1".into())]).unwrap();
        assert_eq!(ok.project(), "local");
        assert_eq!(ok.mounts().len(), 2);
        for (b, plain, needle) in [
            (ok.clone(), vec![("A".to_string(), "1".to_string())], "both"),
            (
                SecretBindings {
                    files: vec![file("/s", "one", "k"), file("/s", "two", "j")],
                    ..Default::default()
                },
                vec![],
                "one secret per directory",
            ),
            (
                SecretBindings {
                    files: vec![file("/s", "one", "k"), file("/s", "one", "k")],
                    ..Default::default()
                },
                vec![],
                "given twice",
            ),
            (
                SecretBindings {
                    files: vec![file("/", "one", "k")],
                    ..Default::default()
                },
                vec![],
                "absolute path other than /",
            ),
            (
                SecretBindings {
                    files: vec![file("/s", "../one", "k")],
                    ..Default::default()
                },
                vec![],
                "relative",
            ),
        ] {
            let e = b.check("f", &plain).unwrap_err();
            assert!(e.detail.contains(needle), "{}", e.detail);
        }
    }
}
