//! Access tokens from the host's credentials: a command (`--token-command`, run with
//! `sh -c`) whose output is the token, cached until it expires.
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

/// The body of `token` when no command is configured.
pub const NOT_CONFIGURED: &str = "No access token: runlet has no credentials configured. Start runlet with --token-command \"gcloud auth print-access-token\" (or another command printing an access token, or Google's token JSON) to serve one.\n";

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

/// Where tokens come from, with the cache.
#[derive(Debug, Default)]
pub struct TokenSource {
    command: Option<String>,
    cached: Mutex<Option<(Token, Instant)>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum TokenError {
    /// No command configured.
    NotConfigured,
    /// The command failed or printed no token.
    Command(String),
}

impl TokenSource {
    pub fn new(command: Option<String>) -> Self {
        TokenSource {
            command: command.filter(|c| !c.trim().is_empty()),
            cached: Mutex::new(None),
        }
    }

    /// A valid token: the cached one, or a fresh one from the command. Returns the token
    /// and the seconds left.
    pub async fn get(&self) -> Result<(String, u64), TokenError> {
        let Some(cmd) = &self.command else {
            return Err(TokenError::NotConfigured);
        };
        let mut cached = self.cached.lock().await;
        if let Some((t, at)) = cached.as_ref() {
            let left = t.expires_in.saturating_sub(at.elapsed());
            if left > MARGIN {
                return Ok((t.access_token.clone(), left.as_secs()));
            }
        }
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
        let t = parse(&String::from_utf8_lossy(&out.stdout))
            .ok_or_else(|| TokenError::Command("the token command printed no token".into()))?;
        let r = (t.access_token.clone(), t.expires_in.as_secs());
        *cached = Some((t, Instant::now()));
        Ok(r)
    }
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
}
