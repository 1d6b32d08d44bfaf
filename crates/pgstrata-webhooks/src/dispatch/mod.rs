//! The dispatcher: claims due deliveries across tenants (as `pgstrata_worker`), signs and posts
//! them, and reports each outcome.
//!
//! It follows the queue's runtime: a claim is one transaction that takes deliveries with
//! `SKIP LOCKED`, puts them under a lease and writes their attempt rows; the HTTP request runs
//! outside any transaction; the outcome is reported by `webhooks.complete`, guarded by the
//! attempt number. A dispatcher that dies mid-request leaves the attempt running until its
//! lease expires; the next claim marks it lost and the delivery goes out again with the same
//! `webhook-id`. A running dispatcher reports the outcomes its finished requests have produced
//! together, with `webhooks.complete_many` (one transaction for all that are waiting, so a busy
//! dispatcher commits one per batch rather than one per delivery). Several dispatchers (processes or tasks) share the work; the claim keeps each
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

/// Outcomes reported in one `complete_many` call, at most.
const REPORT_BATCH: usize = 500;

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

/// The SQL of [`complete_many`]: parallel arrays, one element per outcome (tenant, delivery,
/// attempt, status, response body, duration in ms, error, Retry-After in seconds).
pub const COMPLETE_MANY_SQL: &str =
    "SELECT delivery_id, state FROM webhooks.complete_many($1, $2, $3, $4, $5, $6, $7, $8)";

/// Reports a batch of attempts' answers in one statement (at most 1000); each delivery's new
/// state, as [`complete`] returns it. A delivery missing from the result, or with no state, was
/// no longer in that attempt (rescued or erased).
pub async fn complete_many(
    conn: &mut sqlx::PgConnection,
    outcomes: &[(&Claimed, &Answer)],
) -> Result<Vec<(DeliveryId, Option<String>)>> {
    if outcomes.is_empty() {
        return Ok(Vec::new());
    }
    if outcomes.len() > 1000 {
        return Err(Error::InvalidInput {
            field: "outcomes",
            reason: format!("{} outcomes, more than 1000: report them in batches", outcomes.len()),
        });
    }
    let tenants: Vec<uuid::Uuid> = outcomes.iter().map(|(c, _)| c.tenant_id.0).collect();
    let deliveries: Vec<i64> = outcomes.iter().map(|(c, _)| c.delivery_id.0).collect();
    let attempts: Vec<i32> = outcomes.iter().map(|(c, _)| c.attempt).collect();
    let statuses: Vec<Option<i32>> = outcomes.iter().map(|(_, a)| a.status.map(i32::from)).collect();
    let bodies: Vec<String> = outcomes.iter().map(|(_, a)| a.body.clone()).collect();
    let durations: Vec<i32> = outcomes
        .iter()
        .map(|(_, a)| i32::try_from(a.duration.as_millis()).unwrap_or(i32::MAX))
        .collect();
    let errors: Vec<Option<String>> = outcomes.iter().map(|(_, a)| a.error.clone()).collect();
    let retry_after: Vec<Option<i32>> = outcomes.iter().map(|(_, a)| a.retry_after_s).collect();
    let rows: Vec<(i64, Option<String>)> = sqlx::query_as(COMPLETE_MANY_SQL)
        .bind(tenants)
        .bind(deliveries)
        .bind(attempts)
        .bind(statuses)
        .bind(bodies)
        .bind(durations)
        .bind(errors)
        .bind(retry_after)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(|(id, state)| (DeliveryId(id), state)).collect())
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

    /// Claims one batch, delivers it and reports every outcome (in one transaction); returns
    /// how many were claimed.
    pub async fn run_once(&self) -> Result<usize> {
        let claimed = self.claim(self.inner.config.batch).await?;
        let n = claimed.len();
        let mut tasks = JoinSet::new();
        for c in claimed {
            let inner = self.inner.clone();
            tasks.spawn(async move {
                let answer = inner.post(&c).await;
                (c, answer)
            });
        }
        let mut outcomes = Vec::with_capacity(n);
        while let Some(done) = tasks.join_next().await {
            if let Ok(outcome) = done {
                outcomes.push(outcome);
            }
        }
        self.inner.report(&outcomes).await;
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
        // Finished requests go to one reporter, which reports all that are waiting at once.
        let (reports, mut outcomes) = tokio::sync::mpsc::channel::<(Claimed, Answer)>(config.concurrency * 4);
        let reporter = {
            let inner = self.inner.clone();
            tokio::spawn(async move {
                let mut batch = Vec::new();
                while let Some(first) = outcomes.recv().await {
                    batch.push(first);
                    while batch.len() < REPORT_BATCH {
                        match outcomes.try_recv() {
                            Ok(next) => batch.push(next),
                            Err(_) => break,
                        }
                    }
                    inner.report(&batch).await;
                    batch.clear();
                }
            })
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            if token.is_cancelled() {
                break;
            }
            let free = config.concurrency.saturating_sub(inflight.len());
            // A claim costs a transaction (a WAL flush) and, on a busy endpoint, a turn at one of
            // its lanes: with requests in flight, claim once half a batch of slots is free, not
            // for every slot that frees.
            if free < config.batch.div_ceil(2) && !inflight.is_empty() {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = inflight.join_next() => {}
                }
                continue;
            }
            let mut claimed = 0;
            if free > 0 {
                match self.claim(free.min(config.batch)).await {
                    Ok(rows) => {
                        backoff = Duration::from_millis(100);
                        claimed = rows.len();
                        for c in rows {
                            let (inner, reports) = (self.inner.clone(), reports.clone());
                            inflight.spawn(async move {
                                let answer = inner.post(&c).await;
                                // Fails only when the reporter is gone (shutting down): the
                                // lease then expires and the delivery goes out again.
                                let _ = reports.send((c, answer)).await;
                            });
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
        // The reporter reports what is left, then ends with the channel.
        drop(reports);
        let _ = reporter.await;
    }
}

impl Inner {
    fn client_timeout(&self) -> Duration {
        self.lease.saturating_sub(self.config.lease_margin)
    }

    /// Signs and posts one delivery.
    async fn post(&self, claimed: &Claimed) -> Answer {
        if claimed.keys.is_empty() {
            Answer {
                status: None,
                body: String::new(),
                retry_after_s: None,
                duration: Duration::ZERO,
                error: Some("the endpoint has no live secret: rotate one in".to_owned()),
            }
        } else {
            let headers = request_headers(claimed, chrono::Utc::now().timestamp(), &self.config.user_agent);
            self.client
                .post(&claimed.url, &headers, Bytes::from(claimed.payload.clone()))
                .await
        }
    }

    /// Reports outcomes with `webhooks.complete_many`, in batches, retrying a failed report a
    /// few times (a deadlock between two reporters, a lost connection). A report that still
    /// fails is logged: the leases then expire and the deliveries go out again with the same
    /// webhook-id.
    async fn report(&self, outcomes: &[(Claimed, Answer)]) {
        for chunk in outcomes.chunks(REPORT_BATCH) {
            let pairs: Vec<(&Claimed, &Answer)> = chunk.iter().map(|(c, a)| (c, a)).collect();
            let mut wait = Duration::from_millis(20);
            let mut tries = 0;
            let reported = loop {
                tries += 1;
                let result = match self.pool.acquire().await {
                    Ok(mut conn) => complete_many(&mut conn, &pairs).await,
                    Err(e) => Err(e.into()),
                };
                match result {
                    Err(e) if tries < 4 => {
                        tracing::debug!(error = %e, "webhooks: reporting outcomes failed, retrying");
                        tokio::time::sleep(wait).await;
                        wait *= 4;
                    }
                    other => break other,
                }
            };
            match reported {
                Ok(states) => {
                    for (delivery_id, state) in states {
                        match state.as_deref() {
                            Some("disabled") => {
                                let endpoint = chunk
                                    .iter()
                                    .find(|(c, _)| c.delivery_id == delivery_id)
                                    .map(|(c, _)| c.endpoint_id.to_string())
                                    .unwrap_or_default();
                                tracing::warn!(
                                    endpoint_id = %endpoint,
                                    "webhooks: endpoint disabled (see webhooks.notices)"
                                );
                            }
                            Some(_) => {}
                            None => tracing::debug!(
                                delivery_id = %delivery_id,
                                "webhooks: the attempt was no longer the delivery's (lease expired or message erased)"
                            ),
                        }
                    }
                }
                Err(e) => tracing::warn!(
                    outcomes = chunk.len(), error = %e,
                    "webhooks: reporting outcomes failed; the leases will expire and the deliveries go out again"
                ),
            }
        }
    }
}
