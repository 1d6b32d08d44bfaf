//! The delivery client: hyper's pooled HTTP/1 client (connections are kept and reused per
//! scheme and host) over the [`VettedConnector`] (http, and https with TLS), no redirects
//! followed (a 3xx is an answer like any other, and a failure), a timeout per attempt covering
//! connect, TLS, request and the body read, and the first 20 kB of the answer kept.

use super::ssrf::{AddressPolicy, ConnectError, VettedConnector};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pgstrata_core::https::TlsConnector;
use std::time::{Duration, Instant};

/// How much of an answer's body is kept in the attempt log.
pub const RESPONSE_BODY_LIMIT: usize = 20 * 1024;

/// What one POST got: the status (None when no answer came), the first 20 kB of the body,
/// the receiver's `Retry-After` in seconds, the time taken, and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: Option<u16>,
    pub body: String,
    pub retry_after_s: Option<i32>,
    pub duration: Duration,
    pub error: Option<String>,
}

/// The HTTP client of the dispatcher (cheap to clone: the pool is shared).
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: Client<VettedConnector, Full<Bytes>>,
    timeout: Duration,
}

impl HttpClient {
    /// A client that connects only where `policy` allows, checks https receivers' certificates
    /// with `tls`, and gives each attempt `timeout`.
    pub fn new(policy: AddressPolicy, timeout: Duration, tls: TlsConnector) -> Self {
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build(VettedConnector::new(policy, timeout, tls));
        Self { inner, timeout }
    }

    /// POSTs `body` to `url` with `headers`.
    pub async fn post(&self, url: &str, headers: &[(String, String)], body: Bytes) -> Answer {
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.timeout, self.exchange(url, headers, body)).await;
        let duration = started.elapsed();
        match outcome {
            Ok(Ok((status, body, retry_after_s))) => Answer {
                status: Some(status),
                body,
                retry_after_s,
                duration,
                error: None,
            },
            Ok(Err(error)) => Answer {
                status: None,
                body: String::new(),
                retry_after_s: None,
                duration,
                error: Some(error),
            },
            Err(_) => Answer {
                status: None,
                body: String::new(),
                retry_after_s: None,
                duration,
                error: Some(format!("timed out after {} ms", self.timeout.as_millis())),
            },
        }
    }

    async fn exchange(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<(u16, String, Option<i32>), String> {
        let mut request = Request::builder().method(Method::POST).uri(url);
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| format!("invalid request: {e}"))?;
        let response = self.inner.request(request).await.map_err(|e| describe(&e))?;
        let status = response.status().as_u16();
        let retry_after_s = response
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        // Read up to the limit; a longer body is cut (and its connection not reused).
        let mut kept: Vec<u8> = Vec::new();
        let mut body = response.into_body();
        while kept.len() < RESPONSE_BODY_LIMIT {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        let room = RESPONSE_BODY_LIMIT - kept.len();
                        kept.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
                // The status arrived: it is the answer, even if the body was cut short.
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "webhooks: the answer's body was cut short");
                    break;
                }
                None => break,
            }
        }
        Ok((status, cut(&kept), retry_after_s))
    }
}

/// The bytes as text, cut at a character boundary within the limit (invalid UTF-8 replaced).
fn cut(bytes: &[u8]) -> String {
    let mut s = String::from_utf8_lossy(bytes).into_owned();
    while s.len() > RESPONSE_BODY_LIMIT {
        s.pop();
    }
    s
}

/// `Retry-After`: delay-seconds, or an HTTP date (seconds from now, at least 0).
pub fn parse_retry_after(value: &str) -> Option<i32> {
    let value = value.trim();
    if let Ok(s) = value.parse::<i64>() {
        return Some(s.clamp(0, i64::from(i32::MAX)) as i32);
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let s = (at.timestamp() - chrono::Utc::now().timestamp()).max(0);
    Some(s.min(i64::from(i32::MAX)) as i32)
}

/// The error's cause, with the SSRF refusal or connection failure named when there is one.
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(c) = s.downcast_ref::<ConnectError>() {
            return c.to_string();
        }
        source = s.source();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("120"), Some(120));
        assert_eq!(parse_retry_after(" 0 "), Some(0));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(0));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(90)).to_rfc2822();
        let s = parse_retry_after(&later).unwrap_or(0);
        assert!((85..=90).contains(&s), "{s}");
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn cut_keeps_characters_whole() {
        let body = "é".repeat(RESPONSE_BODY_LIMIT);
        let kept = cut(&body.as_bytes()[..RESPONSE_BODY_LIMIT + 1]);
        assert!(kept.len() <= RESPONSE_BODY_LIMIT);
    }
}
