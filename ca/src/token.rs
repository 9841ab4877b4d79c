//! Join tokens: how a workload off Kubernetes proves who it is to the CA.
//!
//! Format: `base64url(JSON claims) "." base64url(HMAC-SHA256(key, first part))`,
//! with claims `{sub, exp, jti, single_use}`. Two dot-separated parts, so a
//! join token is never confused with a JWT (three parts) such as a Kubernetes
//! service-account token.
//!
//! The HMAC key lives in the CA directory (`join-token.key`, 0600). HMAC
//! rather than the CA's signing key because only the CA verifies these
//! tokens, and HMAC keeps verification off the signing path's cost.
//!
//! Replay protection for single-use tokens: the `jti` of each used token is
//! remembered until the token's own expiry, in memory and, when the CA has a
//! directory, appended to `used-join-tokens` and reloaded at start, so a
//! restart does not make a used token valid again. Time-bound (multi-use)
//! tokens are valid until `exp`, any number of times.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mesh_model::SpiffeId;
use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::authority::write_file;

/// File holding the HMAC key.
pub const TOKEN_KEY: &str = "join-token.key";
/// File recording used single-use token ids.
pub const USED_TOKENS: &str = "used-join-tokens";

/// Why a join token was not issued or not accepted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token is not `claims.signature` in base64url.
    #[error("join token is malformed: {0}")]
    Malformed(&'static str),
    /// The signature does not verify with this CA's key.
    #[error("join token signature is invalid (was it issued by this CA?)")]
    BadSignature,
    /// The token has expired.
    #[error("join token expired {0} s ago; issue a new one with `mesh-ca token create`")]
    Expired(u64),
    /// A single-use token was presented a second time.
    #[error("join token {0} is single-use and was already used")]
    Replayed(String),
    /// The subject is not a valid SPIFFE ID.
    #[error("join token subject is not a valid SPIFFE ID: {0}")]
    Subject(#[source] mesh_model::SpiffeIdError),
    /// The key or used-token file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The key file holds no valid key.
    #[error("{0}: not a base64 key of at least 32 bytes")]
    BadKey(PathBuf),
}

/// The claims a join token carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenClaims {
    /// The SPIFFE ID the bearer may get certificates for.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Random token id (for replay protection).
    pub jti: String,
    /// Whether the token may be used only once.
    #[serde(default)]
    pub single_use: bool,
}

/// Issues and verifies join tokens with one HMAC key.
pub struct JoinTokens {
    key: hmac::Key,
    /// Used single-use token ids and their expiry (unix seconds).
    used: Mutex<HashMap<String, u64>>,
    used_file: Option<PathBuf>,
}

impl std::fmt::Debug for JoinTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinTokens")
            .field("used_file", &self.used_file)
            .finish_non_exhaustive()
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl JoinTokens {
    /// Tokens keyed by `secret`, with used ids kept in memory only.
    pub fn in_memory(secret: &[u8]) -> Self {
        JoinTokens {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            used: Mutex::new(HashMap::new()),
            used_file: None,
        }
    }

    /// Loads the key from `dir` (creating a random one on first use) and the
    /// used-token record.
    pub fn load_or_create(dir: &Path) -> Result<Self, TokenError> {
        let key_path = dir.join(TOKEN_KEY);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TokenError::Io { path, source }
        };
        let secret = match std::fs::read_to_string(&key_path) {
            Ok(s) => URL_SAFE_NO_PAD
                .decode(s.trim())
                .ok()
                .filter(|k| k.len() >= 32)
                .ok_or_else(|| TokenError::BadKey(key_path.clone()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret: [u8; 32] = rand::random();
                write_file(&key_path, &URL_SAFE_NO_PAD.encode(secret), true).map_err(|e| {
                    TokenError::Io {
                        path: key_path.clone(),
                        source: std::io::Error::other(e.to_string()),
                    }
                })?;
                secret.to_vec()
            }
            Err(e) => return Err(io(&key_path)(e)),
        };
        let used_path = dir.join(USED_TOKENS);
        let now = unix(SystemTime::now());
        let mut used = HashMap::new();
        match std::fs::read_to_string(&used_path) {
            Ok(s) => {
                for line in s.lines() {
                    if let Some((jti, exp)) = line.split_once(' ')
                        && let Ok(exp) = exp.parse::<u64>()
                        && exp > now
                    {
                        used.insert(jti.to_string(), exp);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&used_path)(e)),
        }
        Ok(JoinTokens {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            used: Mutex::new(used),
            used_file: Some(used_path),
        })
    }

    /// Issues a token for `id`, valid for `ttl` from now.
    pub fn create(&self, id: &SpiffeId, ttl: Duration, single_use: bool) -> String {
        let jti: [u8; 16] = rand::random();
        let claims = JoinTokenClaims {
            sub: id.to_string(),
            exp: unix(SystemTime::now() + ttl),
            jti: URL_SAFE_NO_PAD.encode(jti),
            single_use,
        };
        self.encode(&claims)
    }

    /// Signs arbitrary claims (tests use it to forge expired tokens).
    pub fn encode(&self, claims: &JoinTokenClaims) -> String {
        // Serialising a struct of strings, integers and a bool cannot fail.
        let json = serde_json::to_vec(claims).unwrap_or_default();
        let body = URL_SAFE_NO_PAD.encode(json);
        let sig = hmac::sign(&self.key, body.as_bytes());
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    /// Verifies a token now; see [`JoinTokens::verify_at`].
    pub fn verify(&self, token: &str) -> Result<SpiffeId, TokenError> {
        self.verify_at(token, SystemTime::now())
    }

    /// Verifies the signature and expiry at `now`, consumes a single-use
    /// token, and returns the identity it grants.
    pub fn verify_at(&self, token: &str, now: SystemTime) -> Result<SpiffeId, TokenError> {
        let (body, sig) = token
            .split_once('.')
            .ok_or(TokenError::Malformed("expected two dot-separated parts"))?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
        hmac::verify(&self.key, body.as_bytes(), &sig).map_err(|_| TokenError::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::Malformed("claims are not base64url"))?;
        let claims: JoinTokenClaims = serde_json::from_slice(&json)
            .map_err(|_| TokenError::Malformed("claims are not JSON"))?;
        let now = unix(now);
        if claims.exp <= now {
            return Err(TokenError::Expired(now - claims.exp));
        }
        let id: SpiffeId = claims.sub.parse().map_err(TokenError::Subject)?;
        if claims.single_use {
            self.consume(&claims.jti, claims.exp, now)?;
        }
        Ok(id)
    }

    fn consume(&self, jti: &str, exp: u64, now: u64) -> Result<(), TokenError> {
        // A poisoned lock only means another thread panicked mid-insert; the
        // map is still a valid set of ids.
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if used.contains_key(jti) {
            return Err(TokenError::Replayed(jti.to_string()));
        }
        used.retain(|_, e| *e > now);
        used.insert(jti.to_string(), exp);
        if let Some(path) = &self.used_file {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| TokenError::Io {
                    path: path.clone(),
                    source,
                })?;
            writeln!(f, "{jti} {exp}").map_err(|source| TokenError::Io {
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// True when `token` has the shape of a join token (two parts) rather than
/// a JWT (three parts).
pub fn looks_like_join_token(token: &str) -> bool {
    token.split('.').count() == 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> SpiffeId {
        "spiffe://cluster.local/ns/default/sa/reviews"
            .parse()
            .unwrap()
    }

    #[test]
    fn time_bound_token_grants_its_identity_repeatedly() {
        let t = JoinTokens::in_memory(&[7; 32]);
        let token = t.create(&id(), Duration::from_secs(60), false);
        assert!(looks_like_join_token(&token));
        assert_eq!(t.verify(&token).unwrap(), id());
        assert_eq!(t.verify(&token).unwrap(), id());
    }

    #[test]
    fn expired_token_is_rejected() {
        let t = JoinTokens::in_memory(&[7; 32]);
        let token = t.create(&id(), Duration::from_secs(60), false);
        let later = SystemTime::now() + Duration::from_secs(120);
        let err = t.verify_at(&token, later).unwrap_err();
        assert!(matches!(err, TokenError::Expired(_)), "{err}");
    }

    #[test]
    fn single_use_token_is_rejected_when_replayed() {
        let t = JoinTokens::in_memory(&[7; 32]);
        let token = t.create(&id(), Duration::from_secs(60), true);
        t.verify(&token).unwrap();
        let err = t.verify(&token).unwrap_err();
        assert!(matches!(err, TokenError::Replayed(_)), "{err}");
    }

    #[test]
    fn used_single_use_tokens_stay_used_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let token = {
            let t = JoinTokens::load_or_create(dir.path()).unwrap();
            let token = t.create(&id(), Duration::from_secs(60), true);
            t.verify(&token).unwrap();
            token
        };
        let t = JoinTokens::load_or_create(dir.path()).unwrap();
        assert!(matches!(t.verify(&token), Err(TokenError::Replayed(_))));
    }

    #[test]
    fn token_signed_with_another_key_is_rejected() {
        let a = JoinTokens::in_memory(&[7; 32]);
        let b = JoinTokens::in_memory(&[8; 32]);
        let token = a.create(&id(), Duration::from_secs(60), false);
        assert!(matches!(b.verify(&token), Err(TokenError::BadSignature)));
    }

    #[test]
    fn tampered_claims_are_rejected() {
        let t = JoinTokens::in_memory(&[7; 32]);
        let token = t.create(&id(), Duration::from_secs(60), false);
        let (_, sig) = token.split_once('.').unwrap();
        let forged = JoinTokenClaims {
            sub: "spiffe://cluster.local/ns/kube-system/sa/admin".into(),
            exp: u64::MAX,
            jti: "x".into(),
            single_use: false,
        };
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert!(matches!(
            t.verify(&format!("{body}.{sig}")),
            Err(TokenError::BadSignature)
        ));
    }
}
