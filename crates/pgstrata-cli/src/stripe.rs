//! Stripe's list endpoints over HTTP(S), for `pgstrata billing sync` (the billing crate's
//! backfill makes no HTTP requests of its own: D-067).
//!
//! One GET per page, `Authorization: Bearer <key>`, retried on 429, 5xx and broken connections
//! with a growing pause. The key is never printed: it is held by [`ApiKey`], whose `Debug`
//! hides it, and error messages quote Stripe's answer, never the request.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use pgstrata::billing::backfill::{BackfillResource, StripeList};
use pgstrata_core::https::{MaybeTlsStream, TlsConnector};
use serde_json::Value;
use std::fmt;
use std::time::Duration;
use tokio::net::TcpStream;
use url::Url;

/// Stripe's API, where `billing sync` lists by default.
pub const STRIPE_API: &str = "https://api.stripe.com";

/// Objects per page (Stripe's maximum).
const PAGE_SIZE: u32 = 100;

/// Attempts per page before the run stops (its position is kept: run it again).
const ATTEMPTS: u32 = 4;

/// A Stripe secret or restricted key. Its `Debug` never shows it, and it has no `Display`.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// Refuses an empty key and one that cannot go in an HTTP header.
    pub fn new(key: String) -> Result<Self, String> {
        let key = key.trim().to_owned();
        if key.is_empty() {
            return Err("the Stripe API key is empty".into());
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the Stripe API key has characters a key never has (spaces, control or non-ASCII)".into());
        }
        Ok(ApiKey(key))
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(..)")
    }
}

/// Lists from Stripe's API at `base` (or a server that answers like it), over TLS for
/// `https://` (pgstrata-core's `https`: the webpki roots plus the extra ones given).
#[derive(Debug)]
pub struct StripeApi {
    base: Url,
    key: ApiKey,
    tls: TlsConnector,
    /// The pause before the first retry; doubled for each next one.
    pub retry_pause: Duration,
}

impl StripeApi {
    /// `base` is `https://api.stripe.com` or, for tests and proxies, an `http://` or `https://`
    /// URL with no query. `extra_roots_pem`: certificates (PEM) trusted besides the webpki
    /// roots, for a proxy or a test server with a private CA.
    pub fn new(base: &str, key: ApiKey, extra_roots_pem: Option<&[u8]>) -> Result<Self, String> {
        let base = Url::parse(base).map_err(|e| format!("--api-base {base:?} is not a URL: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() || base.query().is_some() {
            return Err(format!(
                "--api-base must be an http:// or https:// URL with a host and no query, got {base}"
            ));
        }
        let mut tls = TlsConnector::builder();
        if let Some(pem) = extra_roots_pem {
            tls = tls.add_roots_pem(pem).map_err(|e| format!("--ca-file: {e}"))?;
        }
        Ok(StripeApi {
            base,
            key,
            tls: tls.build().map_err(|e| e.to_string())?,
            retry_pause: Duration::from_secs(1),
        })
    }

    /// The URL of one page of `resource`.
    pub fn page_url(&self, resource: BackfillResource, starting_after: Option<&str>) -> Url {
        let mut url = self.base.clone();
        let path = format!("{}/v1/{resource}", url.path().trim_end_matches('/'));
        url.set_path(&path);
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("limit", &PAGE_SIZE.to_string());
            if resource == BackfillResource::Subscriptions {
                // Without it Stripe leaves canceled subscriptions out.
                query.append_pair("status", "all");
            }
            if let Some(after) = starting_after {
                query.append_pair("starting_after", after);
            }
        }
        url
    }

    /// One GET: the status and the body, or why there is none.
    async fn get(&self, url: &Url) -> Result<(StatusCode, Bytes), Failure> {
        let host = url
            .host_str()
            .ok_or_else(|| Failure::Final("the URL has no host".into()))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| Failure::Final("the URL has no port".into()))?;
        let address = match url.host() {
            Some(url::Host::Ipv6(ip)) => format!("[{ip}]:{port}"),
            _ => format!("{host}:{port}"),
        };
        let tcp = tokio::time::timeout(Duration::from_secs(30), TcpStream::connect(&address))
            .await
            .map_err(|_| Failure::Retry(format!("connecting to {address} timed out")))?
            .map_err(|e| Failure::Retry(format!("connecting to {address}: {e}")))?;
        let stream = if url.scheme() == "https" {
            // A certificate the roots do not trust will not be trusted on the next attempt.
            MaybeTlsStream::Tls(
                self.tls
                    .connect(host, tcp)
                    .await
                    .map_err(|e| Failure::Final(e.to_string()))?,
            )
        } else {
            MaybeTlsStream::Plain(tcp)
        };
        self.exchange(TokioIo::new(stream), url).await
    }

    /// The request on an open connection.
    async fn exchange<T>(&self, io: T, url: &Url) -> Result<(StatusCode, Bytes), Failure>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io)
            .await
            .map_err(|e| Failure::Retry(format!("HTTP handshake: {e}")))?;
        tokio::spawn(connection);
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let request = Request::get(target)
            .header(hyper::header::HOST, host)
            .header(hyper::header::AUTHORIZATION, format!("Bearer {}", self.key.0))
            .header(
                hyper::header::USER_AGENT,
                concat!("pgstrata/", env!("CARGO_PKG_VERSION")),
            )
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| Failure::Final(format!("building the request: {e}")))?;
        let response = tokio::time::timeout(Duration::from_secs(80), sender.send_request(request))
            .await
            .map_err(|_| Failure::Retry("no answer within 80 seconds".into()))?
            .map_err(|e| Failure::Retry(format!("HTTP: {e}")))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| Failure::Retry(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok((status, body))
    }
}

/// Why a request got no page.
#[derive(Debug)]
enum Failure {
    /// Worth another attempt (429, 5xx, a broken connection).
    Retry(String),
    /// Not (a 4xx: a bad key, a resource the key may not list).
    Final(String),
}

/// Stripe's own words for an error answer: `{"error": {"message": ...}}`, else the status.
fn describe(status: StatusCode, body: &[u8]) -> String {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned));
    match message {
        Some(m) => format!("Stripe answered {status}: {m}"),
        None => format!("Stripe answered {status}"),
    }
}

impl StripeList for StripeApi {
    async fn page(&self, resource: BackfillResource, starting_after: Option<&str>) -> Result<Value, String> {
        let url = self.page_url(resource, starting_after);
        let mut pause = self.retry_pause;
        let mut attempt = 1;
        loop {
            let failure = match self.get(&url).await {
                Ok((status, body)) if status.is_success() => {
                    return serde_json::from_slice(&body).map_err(|e| format!("the page is not JSON: {e}"));
                }
                Ok((status, body)) if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() => {
                    Failure::Retry(describe(status, &body))
                }
                Ok((status, body)) => Failure::Final(describe(status, &body)),
                Err(f) => f,
            };
            match failure {
                Failure::Retry(reason) if attempt < ATTEMPTS => {
                    eprintln!("billing sync: {resource}: {reason}; again in {}s", pause.as_secs_f32());
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
                Failure::Retry(reason) => return Err(format!("{reason} (after {ATTEMPTS} attempts)")),
                Failure::Final(reason) => return Err(reason),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_listed_100_at_a_time_with_every_subscription_and_the_key_is_never_shown() {
        let key = ApiKey::new("sk_test_secret".into()).unwrap();
        assert!(!format!("{key:?}").contains("secret"));
        let api = StripeApi::new("http://127.0.0.1:9/prefix/", key, None).unwrap();
        assert!(!format!("{api:?}").contains("secret"));
        assert_eq!(
            api.page_url(BackfillResource::Subscriptions, Some("sub_1")).as_str(),
            "http://127.0.0.1:9/prefix/v1/subscriptions?limit=100&status=all&starting_after=sub_1"
        );
        assert_eq!(
            api.page_url(BackfillResource::Products, None).as_str(),
            "http://127.0.0.1:9/prefix/v1/products?limit=100"
        );
        assert!(StripeApi::new("ftp://x", ApiKey::new("k".into()).unwrap(), None).is_err());
        assert!(StripeApi::new("https://x", ApiKey::new("k".into()).unwrap(), Some(b"not pem")).is_err());
        assert!(ApiKey::new(" ".into()).is_err());
        assert!(ApiKey::new("sk test".into()).is_err());
    }
}
