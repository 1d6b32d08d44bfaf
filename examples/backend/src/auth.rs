//! Bearer tokens: JSON Web Tokens signed with HMAC-SHA256 (HS256), verified with the `hmac`
//! and `sha2` crates the billing module already uses for Stripe's signatures (D-087).
//!
//! A token carries `sub` (the user id, a `tenancy.users` id), `tenant` (the tenant id the
//! token acts in) and `exp` (Unix seconds); `nbf` and `iat` are honoured when present.
//! Whoever issues tokens (your login service) is the trust boundary of design.md: it must only
//! put a tenant in a token for a user who chose it. Inside the tenant the database decides
//! what the user may do (membership role, grants), so a token naming a tenant the user does
//! not belong to reaches nothing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use pgstrata::{TenantId, UserId};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// Shortest accepted secret: RFC 7518 §3.2 requires an HS256 key of at least 256 bits.
pub const MIN_SECRET_BYTES: usize = 32;

/// Clock skew tolerated between the token's issuer and this server, in seconds.
pub const LEEWAY_SECS: i64 = 30;

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The acting user.
    pub sub: UserId,
    /// The tenant the token acts in.
    pub tenant: TenantId,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Not valid before, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Issued at, Unix seconds (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
}

impl Claims {
    /// Claims for `user` in `tenant`, valid for `ttl_secs` from now.
    pub fn new(user: UserId, tenant: TenantId, ttl_secs: i64) -> Self {
        let now = chrono::Utc::now().timestamp();
        Self {
            sub: user,
            tenant,
            exp: now.saturating_add(ttl_secs),
            nbf: None,
            iat: Some(now),
        }
    }
}

/// Why a request was not authenticated (HTTP 401). The messages say what to fix and never
/// repeat the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("missing Authorization header: send `Authorization: Bearer <token>`")]
    Missing,
    #[error("the Authorization header is not `Bearer <token>`")]
    NotBearer,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token algorithm {0:?} is not accepted: tokens must be signed with HS256")]
    Algorithm(String),
    #[error("the token's signature does not match: it was not issued with this server's secret")]
    BadSignature,
    #[error("the token expired at {exp} (Unix time): get a new one")]
    Expired { exp: i64 },
    #[error("the token is not valid before {nbf} (Unix time)")]
    NotYetValid { nbf: i64 },
}

/// A secret shorter than [`MIN_SECRET_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an HS256 secret needs at least {MIN_SECRET_BYTES} bytes, this one has {0}")]
pub struct WeakSecret(pub usize);

/// The shared secret tokens are signed and verified with.
#[derive(Clone)]
pub struct TokenKey {
    /// HMAC-SHA256 keyed with the secret, cloned for each token.
    mac: HmacSha256,
}

impl fmt::Debug for TokenKey {
    // The secret never reaches logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKey").field("secret", &"[redacted]").finish()
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
}

impl TokenKey {
    pub fn new(secret: &[u8]) -> Result<Self, WeakSecret> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(WeakSecret(secret.len()));
        }
        let mac = HmacSha256::new_from_slice(secret).map_err(|_| WeakSecret(secret.len()))?;
        Ok(Self { mac })
    }

    fn mac(&self) -> HmacSha256 {
        self.mac.clone()
    }

    /// A signed token for `claims`: what your login service issues (and the tests use).
    pub fn sign(&self, claims: &Claims) -> String {
        let header = Header {
            alg: "HS256".into(),
            typ: Some("JWT".into()),
        };
        // Both serialize infallibly: plain structs of strings and numbers.
        let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap_or_default());
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{header}.{payload}");
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }

    /// Verifies a token as of now.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify_at(token, chrono::Utc::now().timestamp())
    }

    /// Verifies a token as of `now` (Unix seconds): the header names HS256, the signature
    /// matches (compared in constant time), and `now` lies within `nbf` and `exp` (with
    /// [`LEEWAY_SECS`]).
    pub fn verify_at(&self, token: &str, now: i64) -> Result<Claims, AuthError> {
        let malformed = |what: &str| AuthError::Malformed(what.to_owned());
        let mut parts = token.split('.');
        let (Some(header_part), Some(payload_part), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("expected three base64url parts separated by dots"));
        };
        let header: Header = URL_SAFE_NO_PAD
            .decode(header_part)
            .ok()
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or_else(|| malformed("the header is not base64url-encoded JSON with an \"alg\""))?;
        // Checked before the signature: "none" and public-key algorithms are never tried.
        if header.alg != "HS256" {
            return Err(AuthError::Algorithm(header.alg.chars().take(20).collect()));
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| malformed("the signature is not base64url"))?;
        let mut mac = self.mac();
        mac.update(header_part.as_bytes());
        mac.update(b".");
        mac.update(payload_part.as_bytes());
        mac.verify_slice(&signature).map_err(|_| AuthError::BadSignature)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload_part)
            .map_err(|_| malformed("the payload is not base64url"))?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|e| {
            AuthError::Malformed(format!(
                "the claims need sub (user id), tenant (tenant id) and exp (Unix seconds): {e}"
            ))
        })?;
        if now > claims.exp.saturating_add(LEEWAY_SECS) {
            return Err(AuthError::Expired { exp: claims.exp });
        }
        if let Some(nbf) = claims.nbf
            && now < nbf.saturating_sub(LEEWAY_SECS)
        {
            return Err(AuthError::NotYetValid { nbf });
        }
        Ok(claims)
    }
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(header: Option<&str>) -> Result<&str, AuthError> {
    let value = header.ok_or(AuthError::Missing)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::NotBearer);
    }
    Ok(token.trim())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key() -> TokenKey {
        TokenKey::new(b"0123456789abcdef0123456789abcdef").unwrap()
    }

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: UserId::new(),
            tenant: TenantId::new(),
            exp,
            nbf: None,
            iat: None,
        }
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let c = claims(1_000);
        let token = key().sign(&c);
        assert_eq!(key().verify_at(&token, 900).unwrap(), c);
        assert_eq!(key().verify_at(&token, 1_000 + LEEWAY_SECS).unwrap(), c);
        assert_eq!(
            key().verify_at(&token, 1_001 + LEEWAY_SECS),
            Err(AuthError::Expired { exp: 1_000 })
        );
    }

    #[test]
    fn another_secret_or_a_changed_payload_is_refused() {
        let token = key().sign(&claims(1_000));
        let other = TokenKey::new(b"another secret of thirty-two bytes!").unwrap();
        assert_eq!(other.verify_at(&token, 0), Err(AuthError::BadSignature));
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(9_999)).unwrap());
        assert_eq!(key().verify_at(&parts.join("."), 0), Err(AuthError::BadSignature));
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused_before_the_signature() {
        let token = key().sign(&claims(1_000));
        let payload = token.split('.').nth(1).unwrap();
        for alg in ["none", "RS256", "HS512"] {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
            let forged = format!("{header}.{payload}.");
            assert_eq!(key().verify_at(&forged, 0), Err(AuthError::Algorithm(alg.into())));
        }
    }

    #[test]
    fn malformed_tokens_say_what_is_wrong() {
        for bad in ["", "abc", "a.b", "a.b.c.d", "!!.e30.AA"] {
            let err = key().verify_at(bad, 0).unwrap_err();
            assert!(matches!(err, AuthError::Malformed(_)), "{bad:?}: {err}");
        }
        // A validly signed token whose claims lack the tenant.
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256"}"#);
        let payload = URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"{}","exp":10}}"#, UserId::new()));
        let mut mac = key().mac();
        mac.update(format!("{header}.{payload}").as_bytes());
        let token = format!(
            "{header}.{payload}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        );
        let err = key().verify_at(&token, 0).unwrap_err().to_string();
        assert!(err.contains("tenant"), "{err}");
    }

    #[test]
    fn not_before_is_honoured() {
        let mut c = claims(10_000);
        c.nbf = Some(5_000);
        let token = key().sign(&c);
        assert_eq!(
            key().verify_at(&token, 1_000),
            Err(AuthError::NotYetValid { nbf: 5_000 })
        );
        assert!(key().verify_at(&token, 5_000).is_ok());
    }

    #[test]
    fn short_secrets_and_other_schemes_are_refused() {
        assert_eq!(TokenKey::new(b"short").unwrap_err(), WeakSecret(5));
        assert_eq!(bearer(None), Err(AuthError::Missing));
        assert_eq!(bearer(Some("Basic dXNlcjpwdw==")), Err(AuthError::NotBearer));
        assert_eq!(bearer(Some("Bearer ")), Err(AuthError::NotBearer));
        assert_eq!(bearer(Some("bearer abc.def.ghi")), Ok("abc.def.ghi"));
        let debug = format!("{:?}", key());
        assert!(!debug.contains("0123"), "{debug}");
    }
}
