//! Verification of Stripe's `Stripe-Signature` header: `t=<unix time>,v1=<hex>[,v1=<hex>...]`
//! where each `v1` is HMAC-SHA256 over `"{t}.{body}"` keyed with an endpoint secret. Several
//! secrets may be valid at once while a secret is rolled; `v0` and unknown schemes are ignored.

use crate::error::SignatureError;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::fmt;
use std::time::Duration;

type HmacSha256 = Hmac<Sha256>;

/// Stripe's libraries allow five minutes between signing and verifying.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// The endpoint secrets (`whsec_...`) and the timestamp tolerance.
#[derive(Clone)]
pub struct Verifier {
    secrets: Vec<Vec<u8>>,
    tolerance: Duration,
}

impl fmt::Debug for Verifier {
    // Secrets never reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("secrets", &self.secrets.len())
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

impl Verifier {
    /// A verifier accepting a signature made with any of `secrets` (the current one, and during
    /// a roll the one being retired). At least one non-empty secret is required.
    pub fn new<S: AsRef<str>>(secrets: impl IntoIterator<Item = S>) -> Result<Self, crate::Error> {
        let secrets: Vec<Vec<u8>> = secrets
            .into_iter()
            .map(|s| s.as_ref().trim().as_bytes().to_vec())
            .collect();
        if secrets.is_empty() || secrets.iter().any(Vec::is_empty) {
            return Err(crate::Error::Config(
                "give at least one webhook signing secret, none of them empty".into(),
            ));
        }
        Ok(Self {
            secrets,
            tolerance: DEFAULT_TOLERANCE,
        })
    }

    /// Replaces the default five-minute tolerance.
    pub fn with_tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Verifies `header` for `body` at the current time; returns the signed timestamp.
    pub fn verify(&self, body: &[u8], header: &str) -> Result<i64, SignatureError> {
        self.verify_at(body, header, chrono::Utc::now().timestamp())
    }

    /// Verifies `header` for `body` as of `now` (Unix seconds).
    pub fn verify_at(&self, body: &[u8], header: &str, now: i64) -> Result<i64, SignatureError> {
        let mut timestamp = None;
        let mut signatures = Vec::new();
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", t)) => timestamp = Some(t),
                Some(("v1", sig)) => signatures.push(sig),
                _ => {}
            }
        }
        let t = timestamp.ok_or(SignatureError::MissingTimestamp)?;
        let ts: i64 = t.parse().map_err(|_| SignatureError::BadTimestamp(t.to_owned()))?;
        if signatures.is_empty() {
            return Err(SignatureError::MissingSignature);
        }
        let tolerance = i64::try_from(self.tolerance.as_secs()).unwrap_or(i64::MAX);
        let age = now.saturating_sub(ts);
        if age.saturating_abs() > tolerance {
            return Err(SignatureError::OutsideTolerance {
                age_secs: age,
                tolerance_secs: tolerance,
            });
        }
        for secret in &self.secrets {
            for sig in &signatures {
                // A v1 that is not 64 hex digits cannot match; skip it rather than fail, as
                // Stripe may add signatures in other encodings.
                let Some(tag) = decode_hex(sig) else { continue };
                let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
                    continue;
                };
                mac.update(t.as_bytes());
                mac.update(b".");
                mac.update(body);
                // verify_slice compares in constant time.
                if mac.verify_slice(&tag).is_ok() {
                    return Ok(ts);
                }
            }
        }
        Err(SignatureError::NoMatch)
    }
}

/// The `Stripe-Signature` header Stripe would send for `body` signed with `secret` at
/// `timestamp`: for tests, local tooling and replays.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = match HmacSha256::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; this arm is unreachable.
        Err(_) => return format!("t={timestamp}"),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const BODY: &[u8] = br#"{"id":"evt_1","object":"event"}"#;
    const NOW: i64 = 1_767_225_600;

    #[test]
    fn valid_signature_is_accepted() {
        let v = Verifier::new(["whsec_current"]).unwrap();
        assert_eq!(v.verify_at(BODY, &sign("whsec_current", NOW, BODY), NOW + 10), Ok(NOW));
    }

    #[test]
    fn wrong_secret_is_refused() {
        let v = Verifier::new(["whsec_current"]).unwrap();
        let header = sign("whsec_other", NOW, BODY);
        assert_eq!(v.verify_at(BODY, &header, NOW), Err(SignatureError::NoMatch));
    }

    #[test]
    fn old_and_future_timestamps_are_refused() {
        let v = Verifier::new(["whsec_current"]).unwrap();
        let old = sign("whsec_current", NOW - 301, BODY);
        assert_eq!(
            v.verify_at(BODY, &old, NOW),
            Err(SignatureError::OutsideTolerance {
                age_secs: 301,
                tolerance_secs: 300
            })
        );
        let future = sign("whsec_current", NOW + 400, BODY);
        assert!(matches!(
            v.verify_at(BODY, &future, NOW),
            Err(SignatureError::OutsideTolerance { .. })
        ));
        // A wider tolerance takes the old one.
        let wide = v.with_tolerance(Duration::from_secs(600));
        assert_eq!(wide.verify_at(BODY, &old, NOW), Ok(NOW - 301));
    }

    #[test]
    fn rotated_secrets_are_all_accepted() {
        // During a roll Stripe signs with both secrets; either configured secret suffices, and
        // a header signed only with the retiring secret still verifies.
        let v = Verifier::new(["whsec_new", "whsec_old"]).unwrap();
        let old_only = sign("whsec_old", NOW, BODY);
        assert_eq!(v.verify_at(BODY, &old_only, NOW), Ok(NOW));
        let both = format!(
            "{},v1={}",
            sign("whsec_new", NOW, BODY),
            sign("whsec_old", NOW, BODY).rsplit("v1=").next().unwrap()
        );
        assert_eq!(v.verify_at(BODY, &both, NOW), Ok(NOW));
        let only_new = Verifier::new(["whsec_new"]).unwrap();
        assert_eq!(only_new.verify_at(BODY, &old_only, NOW), Err(SignatureError::NoMatch));
    }

    #[test]
    fn tampered_body_is_refused() {
        let v = Verifier::new(["whsec_current"]).unwrap();
        let header = sign("whsec_current", NOW, BODY);
        let tampered = br#"{"id":"evt_2","object":"event"}"#;
        assert_eq!(v.verify_at(tampered, &header, NOW), Err(SignatureError::NoMatch));
        // A tampered timestamp is the same as a tampered body.
        let moved = header.replacen(&format!("t={NOW}"), &format!("t={}", NOW + 1), 1);
        assert_eq!(v.verify_at(BODY, &moved, NOW), Err(SignatureError::NoMatch));
    }

    #[test]
    fn malformed_headers_say_what_is_missing() {
        let v = Verifier::new(["whsec_current"]).unwrap();
        assert_eq!(v.verify_at(BODY, "v1=00", NOW), Err(SignatureError::MissingTimestamp));
        assert_eq!(
            v.verify_at(BODY, "t=abc,v1=00", NOW),
            Err(SignatureError::BadTimestamp("abc".into()))
        );
        assert_eq!(
            v.verify_at(BODY, &format!("t={NOW},v0=00"), NOW),
            Err(SignatureError::MissingSignature)
        );
        assert_eq!(
            v.verify_at(BODY, &format!("t={NOW},v1=zz"), NOW),
            Err(SignatureError::NoMatch)
        );
        assert!(Verifier::new(Vec::<String>::new()).is_err());
        assert!(Verifier::new([""]).is_err());
        assert!(!format!("{v:?}").contains("whsec"));
    }
}
