//! The HTTP sink: each message POSTed to one URL as JSON, at least once, in order per
//! aggregate, with the message id as its `Idempotency-Key`.

use crate::error::{Error, Result, SinkError};
use crate::relay::{Message, Sink};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pgstrata_core::https::{MaybeTlsStream, TlsConnector};
use sqlx::PgConnection;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;

/// The header that carries a message's id (unique across tenants, the same on every
/// redelivery): a receiver deduplicates by it.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// How an [`HttpSink`] posts.
#[derive(Debug, Clone)]
pub struct HttpSinkConfig {
    /// Attempts per message within one round (1 to 20), before the partition is rolled back
    /// and tried again in a later round.
    pub attempts: u32,
    /// The pause after the first failed attempt, doubled after each one (with jitter).
    pub first_backoff: Duration,
    /// The longest pause between two attempts.
    pub max_backoff: Duration,
    /// One attempt's limit: connecting, sending and reading the answer.
    pub timeout: Duration,
    /// Aggregates posted at once (1 to 256); one aggregate's messages are posted one after the
    /// other, in order.
    pub concurrency: usize,
}

impl Default for HttpSinkConfig {
    fn default() -> Self {
        Self {
            attempts: 5,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            concurrency: 16,
        }
    }
}

/// POSTs each message, as the JSON of [`Message`], to a configured URL (D-221).
///
/// At least once: the relay's checkpoint moves after the receiver answered 2xx for every
/// message of the partition's batch, so a crash, a failed round or a later message's failure
/// may post a message again. Every request carries `Idempotency-Key: <message id>` (the same
/// on each redelivery) and `Content-Type: application/json`, plus the headers added with
/// [`HttpSink::header`]. Messages of one aggregate are posted in order, the next only after
/// the previous one's 2xx; different aggregates go concurrently. Any other answer, a
/// connection error or a timeout is retried with backoff; after
/// [`HttpSinkConfig::attempts`] the partition rolls back and comes again in a later round (a
/// receiver that refuses a message forever blocks its partition: answer 2xx to what you set
/// aside). The round's transaction stays open while it posts, which holds back every reader of
/// the horizon on the server (D-170): keep the timeout and attempts short.
///
/// The URL is the operator's configuration, not a tenant's, so it is not put through the
/// webhooks module's address guard. `https://` URLs are served through
/// `pgstrata_core::https` (webpki roots; [`HttpSink::tls`] sets another connector, with a
/// private root for example), the certificate checked against the URL's host.
#[derive(Debug, Clone)]
pub struct HttpSink {
    name: String,
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    url: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    config: HttpSinkConfig,
    client: Client<SinkConnector, Full<Bytes>>,
}

impl HttpSink {
    /// A sink named `name` posting to `url` (`http://host[:port]/path`).
    pub fn new(name: impl Into<String>, url: &str) -> Result<Self> {
        Self::with_config(name, url, HttpSinkConfig::default())
    }

    /// [`HttpSink::new`] with a configuration.
    pub fn with_config(name: impl Into<String>, url: &str, config: HttpSinkConfig) -> Result<Self> {
        let invalid = |field: &'static str, reason: String| Error::InvalidField { field, reason };
        let uri: Uri = url.parse().map_err(|e| invalid("url", format!("{url:?}: {e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(invalid("url", format!("{url:?} is not an http:// or https:// URL")));
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid("url", format!("{url:?} has no host")));
        }
        if !(1..=20).contains(&config.attempts) {
            return Err(invalid(
                "attempts",
                format!("attempts must be 1 to 20, got {}", config.attempts),
            ));
        }
        if !(1..=256).contains(&config.concurrency) {
            return Err(invalid(
                "concurrency",
                format!("concurrency must be 1 to 256, got {}", config.concurrency),
            ));
        }
        if config.timeout.is_zero() {
            return Err(invalid("timeout", "the timeout must be more than zero".into()));
        }
        let tls = TlsConnector::builder()
            .build()
            .map_err(|e| invalid("tls", e.to_string()))?;
        let client = client(&config, tls);
        Ok(Self {
            name: name.into(),
            inner: Arc::new(Inner {
                url: uri,
                headers: Vec::new(),
                config,
                client,
            }),
        })
    }

    /// Adds a header to every request (an `Authorization`, a tenant of the receiver's).
    pub fn header(mut self, name: &str, value: &str) -> Result<Self> {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| Error::InvalidField {
            field: "header",
            reason: format!("{name:?}: {e}"),
        })?;
        let value = HeaderValue::from_str(value).map_err(|e| Error::InvalidField {
            field: "header",
            reason: format!("the value of {name}: {e}"),
        })?;
        if name == CONTENT_TYPE || name.as_str() == IDEMPOTENCY_KEY {
            return Err(Error::InvalidField {
                field: "header",
                reason: format!("{name} is set by the sink"),
            });
        }
        let inner = Arc::get_mut(&mut self.inner).ok_or_else(|| Error::InvalidField {
            field: "header",
            reason: "add headers before the sink is cloned".into(),
        })?;
        inner.headers.push((name, value));
        Ok(self)
    }

    /// Replaces the TLS connector of `https://` URLs (one that trusts a private root, say).
    pub fn tls(mut self, tls: TlsConnector) -> Result<Self> {
        let inner = Arc::get_mut(&mut self.inner).ok_or_else(|| Error::InvalidField {
            field: "tls",
            reason: "set the TLS connector before the sink is cloned".into(),
        })?;
        inner.client = client(&inner.config, tls);
        Ok(self)
    }

    /// The URL it posts to.
    pub fn url(&self) -> String {
        self.inner.url.to_string()
    }
}

/// The pooled HTTP/1 client over [`SinkConnector`].
fn client(config: &HttpSinkConfig, tls: TlsConnector) -> Client<SinkConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(config.concurrency)
        .build(SinkConnector {
            tls,
            connect_timeout: config.timeout,
        })
}

/// Connects to the URL's host (each of its addresses in turn), with TLS for `https://`.
#[derive(Debug, Clone)]
struct SinkConnector {
    tls: TlsConnector,
    connect_timeout: Duration,
}

impl tower_service::Service<Uri> for SinkConnector {
    type Response = TokioIo<MaybeTlsStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (tls, timeout) = (self.tls.clone(), self.connect_timeout);
        Box::pin(async move {
            let https = uri.scheme_str() == Some("https");
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{uri} has no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let within = |what: &str| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{what} within {} ms", timeout.as_millis()),
                )
            };
            let tcp = tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), port)))
                .await
                .map_err(|_| within("no connection"))??;
            let _ = tcp.set_nodelay(true);
            if !https {
                return Ok(TokioIo::new(MaybeTlsStream::Plain(tcp)));
            }
            let stream = tokio::time::timeout(timeout, tls.connect(&host, tcp))
                .await
                .map_err(|_| within("no TLS handshake"))?
                .map_err(|e| io::Error::other(format!("TLS with {host}: {e}")))?;
            Ok(TokioIo::new(MaybeTlsStream::Tls(stream)))
        })
    }
}

impl Inner {
    /// One attempt: `Ok` on a 2xx, otherwise what went wrong.
    async fn attempt(&self, message: &Message, body: &Bytes) -> Result<(), String> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(IDEMPOTENCY_KEY, message.id.0.to_string());
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(body.clone()))
            .map_err(|e| format!("invalid request: {e}"))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| describe(&e))?;
            let status = response.status();
            // Read the answer to its end, so the connection can be used again.
            let _ = response.into_body().collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("the receiver answered {status}"))
            }
        };
        match tokio::time::timeout(self.config.timeout, exchange).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {} ms", self.config.timeout.as_millis())),
        }
    }

    /// Posts one aggregate's messages in order, each until a 2xx or out of attempts.
    async fn post_in_order(&self, messages: &[Message]) -> Result<(), String> {
        for m in messages {
            let body = Bytes::from(serde_json::to_vec(m).map_err(|e| e.to_string())?);
            let mut attempt = 1;
            loop {
                match self.attempt(m, &body).await {
                    Ok(()) => break,
                    Err(error) if attempt >= self.config.attempts => {
                        return Err(format!(
                            "message {} to {}: {error} (attempt {attempt} of {})",
                            m.id, self.url, self.config.attempts
                        ));
                    }
                    Err(error) => {
                        tracing::debug!(message_id = %m.id, attempt, error = %error, "outbox http sink: retrying");
                        tokio::time::sleep(self.backoff(attempt)).await;
                        attempt += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// The pause after `attempt` failed attempts: doubling from the first backoff, capped,
    /// between half and all of it.
    fn backoff(&self, attempt: u32) -> Duration {
        use std::hash::BuildHasher;
        let base = self
            .config
            .first_backoff
            .saturating_mul(1u32 << Ord::min(attempt - 1, 16))
            .min(self.config.max_backoff);
        let jitter = std::collections::hash_map::RandomState::new().hash_one(attempt) % 1000;
        base.mul_f64(0.5 + jitter as f64 / 2000.0)
    }
}

/// The error's chain of causes, in one line.
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl Sink for HttpSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, _conn: &mut PgConnection, batch: &[Message]) -> Result<(), SinkError> {
        // The aggregates of the batch, each with its messages in order.
        let mut groups: Vec<Vec<Message>> = Vec::new();
        let mut index: std::collections::HashMap<(uuid::Uuid, &str, &str), usize> = std::collections::HashMap::new();
        for m in batch {
            let key = (m.tenant_id.0, m.aggregate_type.as_str(), m.aggregate_id.as_str());
            let i = *index.entry(key).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[i].push(m.clone());
        }
        let mut running = tokio::task::JoinSet::new();
        let mut groups = groups.into_iter();
        let mut first_error: Option<String> = None;
        loop {
            while first_error.is_none() && running.len() < self.inner.config.concurrency {
                let Some(group) = groups.next() else { break };
                let inner = Arc::clone(&self.inner);
                running.spawn(async move { inner.post_in_order(&group).await });
            }
            match running.join_next().await {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(error))) => {
                    first_error.get_or_insert(error);
                }
                Some(Err(join)) => {
                    first_error.get_or_insert(format!("a posting task failed: {join}"));
                }
            }
        }
        match first_error {
            None => Ok(()),
            Some(error) => Err(error.into()),
        }
    }
}
