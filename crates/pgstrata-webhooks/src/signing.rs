//! Signatures per the Standard Webhooks specification, for the dispatcher and for receivers.
//!
//! Each request carries `webhook-id` (the message id), `webhook-timestamp` (Unix seconds) and
//! `webhook-signature`: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one per live key,
//! separated by spaces (during a rotation the old and the new key both sign). The body is the
//! exact bytes stored by `send`: a receiver must verify the raw body it received, before any JSON
//! parsing, since a re-serialised body (key order, whitespace, unicode escapes) no longer matches.
//!
//! ```
//! use pgstrata_webhooks::signing::{Secret, Verifier, signature_header};
//! let secret: Secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().unwrap();
//! let body = br#"{"type": "invoice.paid",  "amount": 42}"#;
//! let header = signature_header(&[secret.as_bytes()], "msg_1", 1_700_000_000, body);
//! let verifier = Verifier::new(vec![secret]);
//! assert!(verifier.verify_at("msg_1", "1700000000", &header, body, 1_700_000_010).is_ok());
//! ```

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The prefix of a secret's text form.
pub const SECRET_PREFIX: &str = "whsec_";

/// How far a `webhook-timestamp` may be from the receiver's clock, either way (replay window).
pub const DEFAULT_TOLERANCE_S: i64 = 300;

/// A signing key: 24 to 64 random bytes, written `whsec_<base64>`. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// A secret that is not `whsec_` + base64 of 24 to 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid webhook secret: {0}")]
pub struct InvalidSecret(&'static str);

impl Secret {
    /// The key as raw bytes (24 to 64).
    pub fn from_bytes(key: Vec<u8>) -> Result<Self, InvalidSecret> {
        if !(24..=64).contains(&key.len()) {
            return Err(InvalidSecret("a key has 24 to 64 bytes"));
        }
        Ok(Self(key))
    }

    /// The raw key, as HMAC takes it.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The text form to show the tenant once and to configure a receiver with: `whsec_<base64>`.
    pub fn expose(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }
}

impl std::str::FromStr for Secret {
    type Err = InvalidSecret;

    /// `whsec_<base64>` (the prefix may be left out, as receivers' libraries accept).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b64 = s.strip_prefix(SECRET_PREFIX).unwrap_or(s);
        let key = STANDARD
            .decode(b64)
            .map_err(|_| InvalidSecret("expected whsec_ followed by base64"))?;
        Secret::from_bytes(key)
    }
}

/// The base64 HMAC-SHA256 of `{id}.{timestamp}.{body}` under `key`.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    STANDARD.encode(mac(key, id, timestamp, body).finalize().into_bytes())
}

/// The `webhook-signature` header value: `v1,<signature>` per key, separated by spaces.
pub fn signature_header(keys: &[&[u8]], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|key| format!("v1,{}", signature(key, id, timestamp, body)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC accepts a key of any length, so this never fails.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable_hmac(),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

#[cold]
fn unreachable_hmac() -> ! {
    // Hmac<Sha256>::new_from_slice accepts every key length (keys longer than a block are hashed).
    panic!("HMAC-SHA256 refused a key")
}

/// Why a request's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A header is missing (`webhook-id`, `webhook-timestamp` or `webhook-signature`).
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// `webhook-timestamp` is not a whole number of seconds.
    #[error("webhook-timestamp is not a Unix time in seconds")]
    BadTimestamp,
    /// The timestamp is further from the receiver's clock than the tolerance: a replay, or a
    /// clock to fix.
    #[error("webhook-timestamp is {0} s away from now, more than the tolerance")]
    Expired(i64),
    /// No `v1` signature matches any of the receiver's secrets.
    #[error("no signature matches")]
    NoMatch,
}

/// Verifies requests as a receiver: the headers and the raw body against its secrets (several
/// during a rotation), in constant time, within a replay window.
#[derive(Debug, Clone)]
pub struct Verifier {
    secrets: Vec<Secret>,
    tolerance_s: i64,
}

impl Verifier {
    /// A verifier for these secrets, with the default tolerance of 5 minutes.
    pub fn new(secrets: Vec<Secret>) -> Self {
        Self {
            secrets,
            tolerance_s: DEFAULT_TOLERANCE_S,
        }
    }

    /// The replay window, in seconds either way.
    pub fn tolerance(mut self, seconds: i64) -> Self {
        self.tolerance_s = seconds;
        self
    }

    /// Verifies with the system clock.
    pub fn verify(&self, id: &str, timestamp: &str, signatures: &str, body: &[u8]) -> Result<(), VerifyError> {
        self.verify_at(id, timestamp, signatures, body, chrono::Utc::now().timestamp())
    }

    /// Verifies the three headers' values and the raw body, at `now` (Unix seconds).
    pub fn verify_at(
        &self,
        id: &str,
        timestamp: &str,
        signatures: &str,
        body: &[u8],
        now: i64,
    ) -> Result<(), VerifyError> {
        let ts: i64 = timestamp.trim().parse().map_err(|_| VerifyError::BadTimestamp)?;
        let skew = now.saturating_sub(ts);
        if skew.abs() > self.tolerance_s {
            return Err(VerifyError::Expired(skew));
        }
        for candidate in signatures.split(' ') {
            let Some(b64) = candidate.strip_prefix("v1,") else {
                continue;
            };
            let Ok(tag) = STANDARD.decode(b64) else {
                continue;
            };
            for secret in &self.secrets {
                // verify_slice compares in constant time.
                if mac(secret.as_bytes(), id, ts, body).verify_slice(&tag).is_ok() {
                    return Ok(());
                }
            }
        }
        Err(VerifyError::NoMatch)
    }

    /// Verifies a request's headers (`webhook-id`, `webhook-timestamp`, `webhook-signature`) and
    /// raw body, with the system clock.
    pub fn verify_headers(&self, headers: &hyper::HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
        let get = |name: &'static str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or(VerifyError::MissingHeader(name))
        };
        self.verify(
            get("webhook-id")?,
            get("webhook-timestamp")?,
            get("webhook-signature")?,
            body,
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn matches_the_reference_signature() {
        let secret: Secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = signature(secret.as_bytes(), "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn refuses_other_bodies_keys_and_old_timestamps() {
        let a = Secret::from_bytes(vec![1; 32]).unwrap();
        let b = Secret::from_bytes(vec![2; 32]).unwrap();
        let body = b"{\"a\": 1}";
        let header = signature_header(&[a.as_bytes()], "m", 1000, body);
        let v = Verifier::new(vec![b.clone()]);
        assert_eq!(v.verify_at("m", "1000", &header, body, 1000), Err(VerifyError::NoMatch));
        let v = Verifier::new(vec![b, a]);
        assert_eq!(v.verify_at("m", "1000", &header, body, 1000), Ok(()));
        assert_eq!(
            v.verify_at("m", "1000", &header, b"{\"a\":1}", 1000),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(v.verify_at("n", "1000", &header, body, 1000), Err(VerifyError::NoMatch));
        assert_eq!(
            v.verify_at("m", "1000", &header, body, 1301),
            Err(VerifyError::Expired(301))
        );
        assert_eq!(
            v.verify_at("m", "x", &header, body, 1000),
            Err(VerifyError::BadTimestamp)
        );
        assert!("whsec_AAAA".parse::<Secret>().is_err());
        assert_eq!(
            Secret::from_bytes(vec![7; 32])
                .unwrap()
                .expose()
                .parse::<Secret>()
                .unwrap()
                .as_bytes(),
            &[7; 32]
        );
    }
}
