//! Where registry credentials come from, in order: `--registry-auth-file` /
//! `REGISTRY_AUTH_FILE` (containers-auth.json: `auths`), then the docker config
//! (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`): `credHelpers` for the
//! registry, `credsStore`, then `auths`. A helper is run as `docker-credential-<name> get`
//! with the registry on stdin (how `gcloud auth configure-docker` works). Nothing here logs a
//! secret; [`Credentials`]'s `Debug` hides the password.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde::Deserialize;

use super::RegistryError;

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

/// What a lookup found, and where it looked (for the message when access is refused).
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    pub credentials: Option<Credentials>,
    pub looked: Vec<String>,
}

/// The parts of a docker config / containers-auth.json runlet reads.
#[derive(Debug, Default, Deserialize)]
pub struct AuthConfig {
    #[serde(default)]
    pub auths: HashMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    pub cred_helpers: HashMap<String, String>,
    #[serde(default, rename = "credsStore")]
    pub creds_store: Option<String>,
}

/// One `auths` entry: `auth` (base64 of `user:password`) or the two fields.
#[derive(Debug, Default, Deserialize)]
pub struct AuthEntry {
    #[serde(default)]
    pub auth: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

/// The keys an `auths` map may use for `host`: bare, with a scheme, with `/v1/`, and Docker
/// Hub's historical spelling.
pub fn keys_for(host: &str) -> Vec<String> {
    let mut hosts = vec![host.to_string()];
    if host == "docker.io" {
        hosts.push("index.docker.io".into());
        hosts.push("registry-1.docker.io".into());
    }
    let mut out = Vec::new();
    for h in hosts {
        out.push(h.clone());
        out.push(format!("https://{h}"));
        out.push(format!("http://{h}"));
        out.push(format!("https://{h}/v1/"));
        out.push(format!("https://{h}/v2/"));
    }
    out
}

/// The credentials of an `auths` map for `host`, if any.
pub fn from_auths(
    auths: &HashMap<String, AuthEntry>,
    host: &str,
) -> Result<Option<Credentials>, RegistryError> {
    let Some(entry) = keys_for(host).iter().find_map(|k| auths.get(k)) else {
        return Ok(None);
    };
    if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        return Ok(Some(Credentials {
            username: u.clone(),
            password: p.clone(),
        }));
    }
    let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| {
            RegistryError::Credentials(format!("the auth entry for {host} is not base64"))
        })?;
    let text = String::from_utf8(decoded).map_err(|_| {
        RegistryError::Credentials(format!("the auth entry for {host} is not UTF-8"))
    })?;
    let (u, p) = text.split_once(':').ok_or_else(|| {
        RegistryError::Credentials(format!("the auth entry for {host} is not user:password"))
    })?;
    Ok(Some(Credentials {
        username: u.to_string(),
        password: p.to_string(),
    }))
}

/// The docker config file: `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

fn read_config(path: &Path) -> Result<Option<AuthConfig>, RegistryError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            RegistryError::Credentials(format!("{} is not a valid auth file: {e}", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RegistryError::Config {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// Runs `docker-credential-<helper> get` for `host`. A helper that knows nothing of the
/// registry (non-zero exit, "credentials not found") gives `None`.
pub fn from_helper(helper: &str, host: &str) -> Result<Option<Credentials>, RegistryError> {
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| RegistryError::Credentials(format!("running {program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(host.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| RegistryError::Credentials(format!("running {program}: {e}")))?;
    if !out.status.success() {
        return Ok(None);
    }
    let answer: HelperAnswer = serde_json::from_slice(&out.stdout).map_err(|_| {
        RegistryError::Credentials(format!("{program} answered something that is not its JSON"))
    })?;
    // "<token>" marks an identity token (an OAuth refresh token), which runlet cannot use.
    if answer.username == "<token>" || answer.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials {
        username: answer.username,
        password: answer.secret,
    }))
}

/// Looks credentials for `host` up in `auth_file` and the docker config, in that order.
pub fn lookup(host: &str, auth_file: Option<&Path>) -> Result<Lookup, RegistryError> {
    let mut looked = Vec::new();
    if let Some(path) = auth_file {
        looked.push(format!("{} (auths)", path.display()));
        if let Some(cfg) = read_config(path)? {
            if let Some(c) = from_auths(&cfg.auths, host)? {
                return Ok(Lookup {
                    credentials: Some(c),
                    looked,
                });
            }
        }
    } else {
        looked.push("REGISTRY_AUTH_FILE (not set)".into());
    }
    let Some(path) = docker_config_path() else {
        return Ok(Lookup {
            credentials: None,
            looked,
        });
    };
    let Some(cfg) = read_config(&path)? else {
        looked.push(format!("{} (absent)", path.display()));
        return Ok(Lookup {
            credentials: None,
            looked,
        });
    };
    if let Some(helper) = keys_for(host).iter().find_map(|k| cfg.cred_helpers.get(k)) {
        looked.push(format!(
            "{} credHelpers: docker-credential-{helper}",
            path.display()
        ));
        if let Some(c) = from_helper(helper, host)? {
            return Ok(Lookup {
                credentials: Some(c),
                looked,
            });
        }
    }
    if let Some(store) = &cfg.creds_store {
        looked.push(format!(
            "{} credsStore: docker-credential-{store}",
            path.display()
        ));
        if let Some(c) = from_helper(store, host)? {
            return Ok(Lookup {
                credentials: Some(c),
                looked,
            });
        }
    }
    looked.push(format!("{} (auths)", path.display()));
    Ok(Lookup {
        credentials: from_auths(&cfg.auths, host)?,
        looked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auths(json: &str) -> HashMap<String, AuthEntry> {
        serde_json::from_str::<AuthConfig>(json).unwrap().auths
    }

    #[test]
    fn auths_entries_in_their_spellings() {
        // base64("alice:s3cr:et") — a password may hold a colon.
        let a = auths(
            r#"{"auths":{"https://reg.lan:5000":{"auth":"YWxpY2U6czNjcjpldA=="},
            "https://index.docker.io/v1/":{"username":"bob","password":"pw"}}}"#,
        );
        let table = [
            ("reg.lan:5000", Some(("alice", "s3cr:et"))),
            ("docker.io", Some(("bob", "pw"))),
            ("other:5000", None),
        ];
        for (host, want) in table {
            let got = from_auths(&a, host).unwrap();
            let want = want.map(|(u, p)| Credentials {
                username: u.into(),
                password: p.into(),
            });
            assert_eq!(got, want, "{host}");
        }
    }

    #[test]
    fn a_bad_auth_entry_is_refused_without_echoing_it() {
        let a = auths(r#"{"auths":{"reg":{"auth":"!!!notbase64"}}}"#);
        let e = from_auths(&a, "reg").unwrap_err().to_string();
        assert!(e.contains("reg") && !e.contains("notbase64"), "{e}");
    }

    #[test]
    fn debug_hides_the_password() {
        let c = Credentials {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
