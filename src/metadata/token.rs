//! Access tokens from the host's credentials: a command (`--token-command`, run with
//! `sh -c`) whose output is the token, cached until it expires; or a service-account key
//! file (`--token-key-file`) through Google's own auth crate (`google-cloud-auth`), which
//! signs a self-signed JWT access token with the key locally (Google accepts these for its
//! APIs in place of an OAuth exchange; no request leaves the host to make one).
//!
//! The command prints either a bare token (`gcloud auth print-access-token`), which is
//! cached for [`BARE_TOKEN_LIFE`] (its real expiry is unknown), or Google's token JSON
//! (`{"access_token": ..., "expires_in": SECONDS}`), cached until a minute before it
//! expires. With no command configured there is no token: the server answers 404 with
//! [`NOT_CONFIGURED`], rather than a fake token that fails later.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// How long a bare token printed by the command is used.
pub const BARE_TOKEN_LIFE: Duration = Duration::from_secs(300);
/// Tokens are fetched again this long before they expire.
const MARGIN: Duration = Duration::from_secs(60);

/// The body of `token` when neither a command nor a key file is configured.
pub const NOT_CONFIGURED: &str = "No access token: runlet has no credentials configured. Start runlet with --token-command \"gcloud auth print-access-token\" (or another command printing an access token, or Google's token JSON), or with --token-key-file KEY.json (a service-account key), to serve one.\n";

/// A token and how long it is valid from when it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub access_token: String,
    pub expires_in: Duration,
}

/// The command's output to a token: Google's token JSON or a bare token.
pub fn parse(output: &str) -> Option<Token> {
    let out = output.trim();
    if out.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(out).ok()?;
        let t = v["access_token"].as_str().filter(|t| !t.is_empty())?;
        let secs = v["expires_in"].as_u64().unwrap_or(3600);
        return Some(Token {
            access_token: t.to_string(),
            expires_in: Duration::from_secs(secs),
        });
    }
    let t = out.lines().next()?.trim();
    (!t.is_empty() && !t.contains(char::is_whitespace)).then(|| Token {
        access_token: t.to_string(),
        expires_in: BARE_TOKEN_LIFE,
    })
}

/// Where tokens come from (the flags), before anything is read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TokenConfig {
    /// Nothing configured: `token` answers 404.
    #[default]
    None,
    /// `--token-command CMD`.
    Command(String),
    /// `--token-key-file PATH`: a service-account key (JSON, as `gcloud iam
    /// service-accounts keys create` writes it).
    KeyFile(std::path::PathBuf),
}

impl TokenConfig {
    /// The configuration from the two flags (clap makes them exclusive); empty means unset.
    pub fn from_flags(command: Option<&str>, key_file: Option<&std::path::Path>) -> Self {
        match (command, key_file) {
            (Some(c), _) if !c.trim().is_empty() => TokenConfig::Command(c.to_string()),
            (_, Some(p)) if !p.as_os_str().is_empty() => TokenConfig::KeyFile(p.to_path_buf()),
            _ => TokenConfig::None,
        }
    }
}

/// A service-account key file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("--token-key-file {path}: {detail}")]
pub struct KeyFileError {
    pub path: String,
    pub detail: String,
}

/// What makes a token.
enum Origin {
    None,
    Command(String),
    KeyFile(google_cloud_auth::credentials::AccessTokenCredentials),
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::None => f.write_str("None"),
            Origin::Command(c) => f.debug_tuple("Command").field(c).finish(),
            Origin::KeyFile(_) => f.write_str("KeyFile"),
        }
    }
}

/// Where tokens come from, with the cache.
#[derive(Debug)]
pub struct TokenSource {
    origin: Origin,
    cached: Mutex<Option<(Token, Instant)>>,
}

impl Default for TokenSource {
    fn default() -> Self {
        TokenSource::new(None)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum TokenError {
    /// No command configured.
    NotConfigured,
    /// The command failed or printed no token.
    Command(String),
    /// The key file's credentials could not sign a token.
    KeyFile(String),
}

/// A key file's credentials: the key checked now, so that a bad file stops runlet at start
/// rather than at an instance's first token request.
fn key_file_credentials(
    path: &std::path::Path,
) -> Result<google_cloud_auth::credentials::AccessTokenCredentials, KeyFileError> {
    use google_cloud_auth::credentials::service_account::{AccessSpecifier, Builder};
    let fail = |detail: String| KeyFileError {
        path: path.display().to_string(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let key: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| fail(format!("not JSON: {e}")))?;
    if key["type"] != "service_account" {
        return Err(fail(format!(
            "not a service-account key (its \"type\" is {}, not \"service_account\")",
            key["type"]
        )));
    }
    // google-cloud-auth signs with rustls' crypto provider; runlet's is ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Builder::new(key)
        .with_access_specifier(AccessSpecifier::from_scopes(super::SCOPES.to_vec()))
        .build_access_token_credentials()
        .map_err(|e| fail(e.to_string()))
}

/// The `exp` claim of a JWT, if `token` is one.
fn jwt_expiry(token: &str) -> Option<u64> {
    use base64::Engine;
    let claims = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes).ok()?["exp"].as_u64()
}

impl TokenSource {
    pub fn new(command: Option<String>) -> Self {
        let origin = match command.filter(|c| !c.trim().is_empty()) {
            Some(c) => Origin::Command(c),
            None => Origin::None,
        };
        TokenSource {
            origin,
            cached: Mutex::new(None),
        }
    }

    /// The source the flags configure; a key file is read and checked now.
    pub fn from_config(cfg: &TokenConfig) -> Result<Self, KeyFileError> {
        Ok(match cfg {
            TokenConfig::None => TokenSource::new(None),
            TokenConfig::Command(c) => TokenSource::new(Some(c.clone())),
            TokenConfig::KeyFile(p) => TokenSource {
                origin: Origin::KeyFile(key_file_credentials(p)?),
                cached: Mutex::new(None),
            },
        })
    }

    /// A valid token: the cached one, or a fresh one from the command or key. Returns the
    /// token and the seconds left.
    pub async fn get(&self) -> Result<(String, u64), TokenError> {
        if matches!(self.origin, Origin::None) {
            return Err(TokenError::NotConfigured);
        }
        let mut cached = self.cached.lock().await;
        if let Some((t, at)) = cached.as_ref() {
            let left = t.expires_in.saturating_sub(at.elapsed());
            if left > MARGIN {
                return Ok((t.access_token.clone(), left.as_secs()));
            }
        }
        let t = match &self.origin {
            Origin::None => return Err(TokenError::NotConfigured),
            Origin::Command(cmd) => from_command(cmd).await?,
            Origin::KeyFile(creds) => {
                let token = creds
                    .access_token()
                    .await
                    .map_err(|e| TokenError::KeyFile(e.to_string()))?
                    .token;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let secs = jwt_expiry(&token).map_or(3600, |exp| exp.saturating_sub(now));
                Token {
                    access_token: token,
                    expires_in: Duration::from_secs(secs),
                }
            }
        };
        let r = (t.access_token.clone(), t.expires_in.as_secs());
        *cached = Some((t, Instant::now()));
        Ok(r)
    }
}

/// Runs the token command and reads its token.
async fn from_command(cmd: &str) -> Result<Token, TokenError> {
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| TokenError::Command(format!("running the token command: {e}")))?;
    if !out.status.success() {
        return Err(TokenError::Command(format!(
            "the token command failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    parse(&String::from_utf8_lossy(&out.stdout))
        .ok_or_else(|| TokenError::Command("the token command printed no token".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_to_tokens() {
        let bare = |t: &str| {
            Some(Token {
                access_token: t.into(),
                expires_in: BARE_TOKEN_LIFE,
            })
        };
        let cases = [
            ("ya29.abc\n", bare("ya29.abc")),
            ("  ya29.abc  ", bare("ya29.abc")),
            (
                r#"{"access_token":"t1","expires_in":120,"token_type":"Bearer"}"#,
                Some(Token {
                    access_token: "t1".into(),
                    expires_in: Duration::from_secs(120),
                }),
            ),
            (r#"{"access_token":""}"#, None),
            ("", None),
            ("two words", None),
        ];
        for (out, want) in cases {
            assert_eq!(parse(out), want, "{out:?}");
        }
    }

    #[tokio::test]
    async fn nothing_configured_and_a_command_cached() {
        assert_eq!(
            TokenSource::new(None).get().await,
            Err(TokenError::NotConfigured)
        );
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("n");
        let src = TokenSource::new(Some(format!("echo x >> {}; echo tok-1", count.display())));
        assert_eq!(src.get().await.unwrap().0, "tok-1");
        assert_eq!(src.get().await.unwrap().0, "tok-1");
        assert_eq!(
            std::fs::read_to_string(&count).unwrap().lines().count(),
            1,
            "cached"
        );
        let bad = TokenSource::new(Some("exit 3".into()));
        assert!(matches!(bad.get().await, Err(TokenError::Command(_))));
    }

    /// A service-account key file as Google writes it, with a key made here.
    fn key_file(dir: &std::path::Path) -> (std::path::PathBuf, rsa::RsaPublicKey) {
        use rsa::pkcs8::EncodePrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        let pem = key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        let json = serde_json::json!({
            "type": "service_account",
            "project_id": "p1",
            "private_key_id": "kid-1",
            "private_key": pem.as_str(),
            "client_email": "sa@p1.iam.gserviceaccount.com",
            "client_id": "1",
            // Never contacted: the crate signs a self-signed JWT.
            "token_uri": "http://127.0.0.1:9/token",
        });
        let path = dir.join("key.json");
        std::fs::write(&path, json.to_string()).unwrap();
        (path, key.to_public_key())
    }

    #[tokio::test]
    async fn a_key_file_gives_self_signed_jwts_of_its_account() {
        use base64::Engine;
        use rsa::signature::Verifier;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let dir = tempfile::tempdir().unwrap();
        let (path, public) = key_file(dir.path());
        let src = TokenSource::from_config(&TokenConfig::KeyFile(path)).unwrap();
        let (token, secs) = src.get().await.unwrap();
        assert!((3500..=3610).contains(&secs), "{secs}");
        assert_eq!(src.get().await.unwrap().0, token, "cached");
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "{token}");
        let json = |i: usize| -> serde_json::Value {
            serde_json::from_slice(&b64.decode(parts[i]).unwrap()).unwrap()
        };
        let (header, claims) = (json(0), json(1));
        assert_eq!(header["alg"], "RS256", "{header}");
        assert_eq!(header["kid"], "kid-1", "{header}");
        assert_eq!(claims["iss"], "sa@p1.iam.gserviceaccount.com", "{claims}");
        assert_eq!(claims["sub"], "sa@p1.iam.gserviceaccount.com", "{claims}");
        assert_eq!(claims["scope"], super::super::SCOPES.join(" "), "{claims}");
        let (iat, exp) = (
            claims["iat"].as_u64().unwrap(),
            claims["exp"].as_u64().unwrap(),
        );
        assert!((3600..=3630).contains(&(exp - iat)), "{claims}");
        let key = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(public);
        let sig =
            rsa::pkcs1v15::Signature::try_from(b64.decode(parts[2]).unwrap().as_slice()).unwrap();
        key.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .expect("signed with the key file's key");
    }

    #[test]
    fn unusable_key_files_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let cases = [
            (dir.path().join("absent.json"), "No such file"),
            (write("text", "hello"), "not JSON"),
            (
                write("user.json", r#"{"type":"authorized_user"}"#),
                "not a service-account key",
            ),
            (write("nokey.json", r#"{"type":"service_account"}"#), ""),
        ];
        for (path, want) in cases {
            let e = TokenSource::from_config(&TokenConfig::KeyFile(path.clone()))
                .expect_err(&path.display().to_string())
                .to_string();
            assert!(
                e.contains(&path.display().to_string()) && e.contains(want),
                "{e}"
            );
        }
    }

    #[test]
    fn flags_to_token_config() {
        let p = std::path::Path::new("/k.json");
        let cases = [
            ((None, None), TokenConfig::None),
            ((Some(""), None), TokenConfig::None),
            ((Some("cmd"), None), TokenConfig::Command("cmd".into())),
            ((None, Some(p)), TokenConfig::KeyFile(p.into())),
        ];
        for ((c, k), want) in cases {
            assert_eq!(TokenConfig::from_flags(c, k), want, "{c:?} {k:?}");
        }
    }
}
