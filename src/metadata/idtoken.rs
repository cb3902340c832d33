//! ID tokens (`.../identity?audience=`): JWTs signed with runlet's own RS256 key, made when
//! first needed (one per runlet process), with the public key published as a JWKS at
//! [`super::answer::JWKS_PATH`] so that a local service can verify calls from another.
//! Google does not know this key: Google APIs will not accept these tokens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The `iss` of runlet's ID tokens.
pub const ISSUER: &str = "http://metadata.google.internal/runlet";
/// How long an ID token is valid (Google's: one hour).
pub const LIFETIME_SECS: u64 = 3600;

/// runlet's signing key and its id.
pub struct Signer256 {
    key: SigningKey<Sha256>,
    public: rsa::RsaPublicKey,
    kid: String,
}

impl Signer256 {
    /// A new 2048-bit key (takes a moment: call it off the async workers).
    pub fn generate() -> Result<Self, rsa::Error> {
        let private = RsaPrivateKey::new(&mut rand::thread_rng(), 2048)?;
        let public = private.to_public_key();
        let kid = hex::encode(&Sha256::digest(public.n().to_bytes_be())[..8]);
        Ok(Signer256 {
            key: SigningKey::<Sha256>::new(private),
            public,
            kid,
        })
    }

    /// The JWKS with the public key.
    pub fn jwks(&self) -> Value {
        json!({"keys": [{
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": self.kid,
            "n": B64.encode(self.public.n().to_bytes_be()),
            "e": B64.encode(self.public.e().to_bytes_be()),
        }]})
    }

    /// A signed token for `audience`, naming `email`, issued at `now` (seconds since the epoch).
    pub fn id_token(&self, audience: &str, email: &str, now: u64) -> String {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.kid});
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims(audience, email, now).to_string())
        );
        let sig = self.key.sign(input.as_bytes());
        format!("{input}.{}", B64.encode(sig.to_bytes()))
    }
}

/// The claims of an ID token.
pub fn claims(audience: &str, email: &str, now: u64) -> Value {
    json!({
        "iss": ISSUER,
        "aud": audience,
        "sub": email,
        "email": email,
        "email_verified": true,
        "iat": now,
        "exp": now + LIFETIME_SECS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::signature::Verifier;

    #[test]
    fn a_token_verifies_with_the_published_key() {
        let s = Signer256::generate().unwrap();
        let t = s.id_token("https://svc.example", "sa@p.iam.gserviceaccount.com", 1000);
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value = serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "RS256");
        let c: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            c,
            claims("https://svc.example", "sa@p.iam.gserviceaccount.com", 1000)
        );
        assert_eq!(c["exp"], 4600);
        // Rebuild the public key from the JWKS, as a verifier would.
        let jwk = &s.jwks()["keys"][0];
        assert_eq!(jwk["kid"], header["kid"]);
        let n = rsa::BigUint::from_bytes_be(&B64.decode(jwk["n"].as_str().unwrap()).unwrap());
        let e = rsa::BigUint::from_bytes_be(&B64.decode(jwk["e"].as_str().unwrap()).unwrap());
        let key = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(rsa::RsaPublicKey::new(n, e).unwrap());
        let sig =
            rsa::pkcs1v15::Signature::try_from(B64.decode(parts[2]).unwrap().as_slice()).unwrap();
        key.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .unwrap();
        assert!(key.verify(b"other", &sig).is_err());
    }
}
