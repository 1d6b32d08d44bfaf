//! The dispatcher: claims due deliveries across tenants (as `pgstrata_worker`), signs and posts
//! them, and reports each outcome.
//!
//! It follows the queue's runtime: a claim is one transaction that takes deliveries with
//! `SKIP LOCKED`, puts them under a lease and writes their attempt rows; the HTTP request runs
//! outside any transaction; the outcome is reported by `webhooks.complete`, guarded by the
//! attempt number. A dispatcher that dies mid-request leaves the attempt running until its
//! lease expires; the next claim marks it lost and the delivery goes out again with the same
//! `webhook-id`. Several dispatchers (processes or tasks) share the work; the claim keeps each
//! endpoint within its concurrency cap and rate limit and shares a batch fairly between tenants
//! and endpoints, so a slow or failing endpoint holds at most its cap of requests.
//!
//! ```no_run
//! use pgstrata_webhooks::dispatch::{AddressPolicy, Dispatcher, DispatcherConfig};
//! # async fn run(worker_pool: sqlx::PgPool) -> pgstrata_webhooks::Result<()> {
//! let dispatcher = Dispatcher::new(worker_pool, DispatcherConfig::new("dispatcher-1")).await?;
//! let token = pgstrata_core::CancellationToken::new();
//! dispatcher.run(token).await;
//! # Ok(()) }
//! ```

pub mod client;
pub mod ssrf;

pub use client::{Answer, HttpClient};
pub use pgstrata_core::https::TlsConnector;
pub use ssrf::{AddressPolicy, ConnectError, Net};

use crate::error::{Error, Result};
use crate::functions::WebhooksFn;
use crate::ids::{AttemptId, AttemptTrigger, DeliveryId, EndpointId, MessageId};
use crate::signing::signature_header;
use hyper::body::Bytes;
use pgstrata_core::sql::{self, Built, Rows};
use pgstrata_core::{CancellationToken, TenantId};
use sea_query::{Asterisk, Expr, ExprTrait, Func, Query};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// The channel `webhooks.send` and the replays notify at commit.
pub const CHANNEL: &str = "pgstrata_webhooks";

/// The channel `webhooks.complete` notifies when it disables an endpoint (JSON: kind,
/// tenant_id, endpoint_id, reason), so the tenant can be told by another channel.
pub const NOTICE_CHANNEL: &str = "pgstrata_webhooks_notices";

/// How a dispatcher works.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// Written on claims and attempts (`worker`), to find a dispatcher in the log.
    pub name: String,
    /// Requests in flight at once, at most.
    pub concurrency: usize,
    /// Deliveries claimed at once, at most (1 to 1000).
    pub batch: usize,
    /// Per attempt: connect, send, read the answer. None: `webhooks.settings.timeout_ms`.
    pub timeout: Option<Duration>,
    /// The lease is the timeout plus this: long enough that a live dispatcher always reports
    /// before it expires.
    pub lease_margin: Duration,
    /// When idle, look for due deliveries (retries coming due) this often; a send wakes it at
    /// once through NOTIFY.
    pub idle: Duration,
    /// Where it may connect (public addresses, plus what is allow-listed).
    pub policy: AddressPolicy,
    /// How https receivers' certificates are checked. None: the webpki roots.
    pub tls: Option<TlsConnector>,
    pub user_agent: String,
}

impl DispatcherConfig {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            concurrency: 32,
            batch: 32,
            timeout: None,
            lease_margin: Duration::from_secs(30),
            idle: Duration::from_secs(1),
            policy: AddressPolicy::public_only(),
            tls: None,
            user_agent: format!("pgstrata-webhooks/{}", env!("CARGO_PKG_VERSION")),
        }
    }

    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self.batch = self.batch.min(self.concurrency);
        self
    }

    pub fn batch(mut self, n: usize) -> Self {
        self.batch = n.clamp(1, 1000);
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    pub fn lease_margin(mut self, m: Duration) -> Self {
        self.lease_margin = m;
        self
    }

    pub fn idle(mut self, d: Duration) -> Self {
        self.idle = d;
        self
    }

    pub fn policy(mut self, p: AddressPolicy) -> Self {
        self.policy = p;
        self
    }

    /// Checks https receivers' certificates with `tls` (e.g. the webpki roots plus an operator's
    /// private root: `TlsConnector::builder().add_roots_pem(pem)?.build()?`).
    pub fn tls(mut self, tls: TlsConnector) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// A delivery as the claim hands it over.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub tenant_id: TenantId,
    pub delivery_id: DeliveryId,
    pub attempt: i32,
    pub attempt_id: AttemptId,
    pub message_id: MessageId,
    pub event_type: String,
    pub payload: Vec<u8>,
    pub endpoint_id: EndpointId,
    pub url: String,
    pub headers: serde_json::Value,
    pub keys: Vec<Vec<u8>>,
    pub trigger: AttemptTrigger,
}

/// Claims up to `limit` due deliveries for `worker` under `lease` (as `pgstrata_worker`).
pub async fn claim(conn: &mut sqlx::PgConnection, limit: usize, worker: &str, lease: Duration) -> Result<Vec<Claimed>> {
    Ok(sql::query_as(claim_stmt(limit, worker, lease)).fetch_all(conn).await?)
}

/// The SQL of [`claim`].
///
/// ```
/// let (sql, _) = pgstrata_webhooks::dispatch::claim_stmt(10, "w1", std::time::Duration::from_secs(45));
/// assert_eq!(sql, r#"SELECT * FROM webhooks.claim($1, $2, CAST($3 AS interval)) AS "r""#);
/// ```
pub fn claim_stmt(limit: usize, worker: &str, lease: Duration) -> Built {
    sql::build(
        Query::select().column(Asterisk).from_function(
            Func::cust(WebhooksFn::Claim)
                .arg(Expr::val(i32::try_from(limit).unwrap_or(1000)))
                .arg(Expr::val(worker.to_owned()))
                .arg(Expr::val(format!("{} milliseconds", lease.as_millis())).cast_as("interval")),
            Rows,
        ),
    )
}

/// Reports an attempt's answer; the delivery's new state (`succeeded`, `pending`, `failed`,
/// `disabled`), or None when the attempt was no longer the delivery's (rescued or erased).
pub async fn complete(conn: &mut sqlx::PgConnection, claimed: &Claimed, answer: &Answer) -> Result<Option<String>> {
    let (state,): (Option<String>,) = sql::query_as(complete_stmt(claimed, answer)).fetch_one(conn).await?;
    Ok(state)
}

/// The SQL of [`complete`].
pub fn complete_stmt(claimed: &Claimed, answer: &Answer) -> Built {
    sql::build(
        Query::select().expr(
            Func::cust(WebhooksFn::Complete)
                .arg(Expr::val(claimed.tenant_id))
                .arg(Expr::val(claimed.delivery_id))
                .arg(Expr::val(claimed.attempt))
                .arg(Expr::val(answer.status.map(i32::from)))
                .arg(Expr::val(answer.body.clone()))
                .arg(Expr::val(
                    i32::try_from(answer.duration.as_millis()).unwrap_or(i32::MAX),
                ))
                .arg(Expr::val(answer.error.clone()))
                .arg(Expr::val(answer.retry_after_s)),
        ),
    )
}

/// The headers of an attempt: content type, user agent, the endpoint's own, and the three
/// Standard Webhooks headers signed with every live key, at `timestamp`.
pub fn request_headers(claimed: &Claimed, timestamp: i64, user_agent: &str) -> Vec<(String, String)> {
    let id = claimed.message_id.to_string();
    let keys: Vec<&[u8]> = claimed.keys.iter().map(Vec::as_slice).collect();
    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("user-agent".to_owned(), user_agent.to_owned()),
    ];
    if let Some(custom) = claimed.headers.as_object() {
        for (name, value) in custom {
            if let Some(v) = value.as_str() {
                headers.push((name.clone(), v.to_owned()));
            }
        }
    }
    headers.push(("webhook-id".to_owned(), id.clone()));
    headers.push(("webhook-timestamp".to_owned(), timestamp.to_string()));
    headers.push((
        "webhook-signature".to_owned(),
        signature_header(&keys, &id, timestamp, &claimed.payload),
    ));
    headers
}

/// Delivers webhooks; see the module documentation.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    config: DispatcherConfig,
    client: HttpClient,
    lease: Duration,
}

impl Dispatcher {
    /// A dispatcher on `pool`, whose role must hold `pgstrata_worker` (the request path's role
    /// cannot claim deliveries).
    pub async fn new(pool: PgPool, config: DispatcherConfig) -> Result<Self> {
        let (worker, timeout_ms): (bool, i32) = sqlx::query_as(
            "SELECT pg_catalog.pg_has_role('pgstrata_worker', 'MEMBER'), s.timeout_ms FROM webhooks.settings s",
        )
        .fetch_one(&pool)
        .await?;
        if !worker {
            return Err(Error::InvalidInput {
                field: "pool",
                reason: "the dispatcher's role must be a member of pgstrata_worker".to_owned(),
            });
        }
        let timeout = config
            .timeout
            .unwrap_or(Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(15_000)));
        let lease = (timeout + config.lease_margin).max(Duration::from_secs(1));
        let tls = match &config.tls {
            Some(tls) => tls.clone(),
            None => TlsConnector::builder().build().map_err(|e| Error::InvalidInput {
                field: "tls",
                reason: e.to_string(),
            })?,
        };
        let client = HttpClient::new(config.policy.clone(), timeout, tls);
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                config,
                client,
                lease,
            }),
        })
    }

    /// The HTTP client (the same one the dispatcher posts with).
    pub fn client(&self) -> &HttpClient {
        &self.inner.client
    }

    /// Claims one batch, delivers it and reports every outcome; returns how many were claimed.
    pub async fn run_once(&self) -> Result<usize> {
        let claimed = self.claim(self.inner.config.batch).await?;
        let n = claimed.len();
        let mut tasks = JoinSet::new();
        for c in claimed {
            let inner = self.inner.clone();
            tasks.spawn(async move { inner.deliver(c).await });
        }
        while tasks.join_next().await.is_some() {}
        Ok(n)
    }

    async fn claim(&self, limit: usize) -> Result<Vec<Claimed>> {
        let mut conn = self.inner.pool.acquire().await?;
        claim(&mut conn, limit, &self.inner.config.name, self.inner.lease).await
    }

    /// Delivers until `token` is cancelled; then waits for the requests in flight up to the
    /// timeout (those still running are left to their leases). Database errors are logged and
    /// retried with backoff; nothing here returns an error.
    pub async fn run(&self, token: CancellationToken) {
        let config = &self.inner.config;
        let mut listener = match PgListener::connect_with(&self.inner.pool).await {
            Ok(mut l) => match l.listen(CHANNEL).await {
                Ok(()) => Some(l),
                Err(e) => {
                    tracing::warn!(error = %e, "webhooks dispatcher: LISTEN failed, polling only");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "webhooks dispatcher: no listener connection, polling only");
                None
            }
        };
        let mut inflight: JoinSet<()> = JoinSet::new();
        let mut backoff = Duration::from_millis(100);
        loop {
            if token.is_cancelled() {
                break;
            }
            let free = config.concurrency.saturating_sub(inflight.len());
            let mut claimed = 0;
            if free > 0 {
                match self.claim(free.min(config.batch)).await {
                    Ok(rows) => {
                        backoff = Duration::from_millis(100);
                        claimed = rows.len();
                        for c in rows {
                            let inner = self.inner.clone();
                            inflight.spawn(async move { inner.deliver(c).await });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "webhooks dispatcher: claim failed, retrying");
                        tokio::select! {
                            _ = token.cancelled() => break,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                        continue;
                    }
                }
            }
            // Full, or a whole batch came back (there may be more): go on as soon as a slot frees.
            if inflight.len() >= config.concurrency {
                let _ = inflight.join_next().await;
                continue;
            }
            if claimed > 0 && claimed == free.min(config.batch) {
                continue;
            }
            // Idle: wake on a send, a finished request, the poll interval or cancellation.
            tokio::select! {
                _ = token.cancelled() => break,
                _ = async {
                    match listener.as_mut() {
                        Some(l) => { let _ = l.recv().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {}
                Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
                _ = tokio::time::sleep(config.idle) => {}
            }
        }
        let deadline = tokio::time::sleep(self.inner.client_timeout());
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = inflight.join_next() => if next.is_none() { break },
                _ = &mut deadline => {
                    inflight.abort_all();
                    break;
                }
            }
        }
    }
}

impl Inner {
    fn client_timeout(&self) -> Duration {
        self.lease.saturating_sub(self.config.lease_margin)
    }

    /// Signs, posts and reports one delivery. A report that fails is logged: the lease then
    /// expires and the delivery goes out again with the same webhook-id.
    async fn deliver(&self, claimed: Claimed) {
        let answer = if claimed.keys.is_empty() {
            Answer {
                status: None,
                body: String::new(),
                retry_after_s: None,
                duration: Duration::ZERO,
                error: Some("the endpoint has no live secret: rotate one in".to_owned()),
            }
        } else {
            let headers = request_headers(&claimed, chrono::Utc::now().timestamp(), &self.config.user_agent);
            self.client
                .post(&claimed.url, &headers, Bytes::from(claimed.payload.clone()))
                .await
        };
        let reported = match self.pool.acquire().await {
            Ok(mut conn) => complete(&mut conn, &claimed, &answer).await,
            Err(e) => Err(e.into()),
        };
        match reported {
            Ok(Some(state)) if state == "disabled" => tracing::warn!(
                tenant_id = %claimed.tenant_id, endpoint_id = %claimed.endpoint_id,
                "webhooks: endpoint disabled (see webhooks.notices)"
            ),
            Ok(Some(_)) => {}
            Ok(None) => tracing::debug!(
                delivery_id = %claimed.delivery_id, attempt = claimed.attempt,
                "webhooks: the attempt was no longer the delivery's (lease expired or message erased)"
            ),
            Err(e) => tracing::warn!(
                delivery_id = %claimed.delivery_id, attempt = claimed.attempt, error = %e,
                "webhooks: reporting the outcome failed; the lease will expire and the delivery go out again"
            ),
        }
    }
}
