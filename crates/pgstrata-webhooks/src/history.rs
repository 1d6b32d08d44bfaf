//! What was sent and what happened: messages, deliveries, attempts and notices, read in the
//! tenant's transaction; replay of one message or of the failures since a time; erasure and
//! retention.

use crate::error::{Error, Result};
use crate::functions::WebhooksFn;
use crate::generated::{Attempt, Attempts, Deliveries, Delivery, Message, Messages, Notice, Notices};
use crate::ids::{AttemptId, EndpointId, MessageId};
use pgstrata_core::sql::{self, Built};
use pgstrata_core::{Page, TenantId, TenantTx};
use sea_query::{Asterisk, Expr, ExprTrait, Func, Order, Query};
use sqlx::PgConnection;

/// A message of the tenant, with its payload bytes.
pub async fn message(tx: &mut TenantTx<'_>, id: MessageId) -> Result<Option<Message>> {
    let built = message_stmt(tx.tenant_id(), id);
    Ok(sql::query_as(built).fetch_optional(&mut **tx).await?)
}

/// The SQL of [`message`].
///
/// ```
/// let (sql, _) = pgstrata_webhooks::history::message_stmt(pgstrata_core::TenantId::new(), pgstrata_webhooks::MessageId::new());
/// assert_eq!(sql, r#"SELECT * FROM "webhooks"."messages" WHERE "tenant_id" = $1 AND "id" = $2"#);
/// ```
pub fn message_stmt(tenant: TenantId, id: MessageId) -> Built {
    sql::build(
        Query::select()
            .column(Asterisk)
            .from(Messages::qualified())
            .and_where(Expr::col(Messages::TenantId).eq(tenant))
            .and_where(Expr::col(Messages::Id).eq(id)),
    )
}

/// The deliveries of a message, one per endpoint it was queued for.
pub async fn deliveries(tx: &mut TenantTx<'_>, message: MessageId) -> Result<Vec<Delivery>> {
    let built = deliveries_stmt(tx.tenant_id(), message);
    Ok(sql::query_as(built).fetch_all(&mut **tx).await?)
}

/// The SQL of [`deliveries`].
///
/// ```
/// let (sql, _) = pgstrata_webhooks::history::deliveries_stmt(pgstrata_core::TenantId::new(), pgstrata_webhooks::MessageId::new());
/// assert_eq!(sql, r#"SELECT * FROM "webhooks"."deliveries" WHERE "tenant_id" = $1 AND "message_id" = $2 ORDER BY "id" ASC"#);
/// ```
pub fn deliveries_stmt(tenant: TenantId, message: MessageId) -> Built {
    sql::build(
        Query::select()
            .column(Asterisk)
            .from(Deliveries::qualified())
            .and_where(Expr::col(Deliveries::TenantId).eq(tenant))
            .and_where(Expr::col(Deliveries::MessageId).eq(message))
            .order_by(Deliveries::Id, Order::Asc),
    )
}

/// Which attempts to list: of one endpoint, of one message, or (neither) all of the tenant's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttemptFilter {
    pub endpoint: Option<EndpointId>,
    pub message: Option<MessageId>,
}

/// A page of the tenant's attempts, newest first.
pub async fn attempts(tx: &mut TenantTx<'_>, filter: &AttemptFilter, page: &Page<AttemptId>) -> Result<Vec<Attempt>> {
    let built = attempts_stmt(tx.tenant_id(), filter, page)?;
    Ok(sql::query_as(built).fetch_all(&mut **tx).await?)
}

/// The SQL of [`attempts`]: walks `attempts_endpoint_idx`, `attempts_message_idx` or the
/// primary key backwards.
///
/// ```
/// use pgstrata_core::Page;
/// use pgstrata_webhooks::history::{attempts_stmt, AttemptFilter};
/// let filter = AttemptFilter { endpoint: Some(pgstrata_webhooks::EndpointId::new()), message: None };
/// let (sql, _) = attempts_stmt(pgstrata_core::TenantId::new(), &filter, &Page::after(pgstrata_webhooks::AttemptId(99), 20)).unwrap();
/// assert_eq!(sql, r#"SELECT * FROM "webhooks"."attempts" WHERE "tenant_id" = $1 AND "endpoint_id" = $2 AND "id" < $3 ORDER BY "id" DESC LIMIT $4"#);
/// ```
pub fn attempts_stmt(tenant: TenantId, filter: &AttemptFilter, page: &Page<AttemptId>) -> Result<Built> {
    page.validate()?;
    let mut q = Query::select();
    q.column(Asterisk)
        .from(Attempts::qualified())
        .and_where(Expr::col(Attempts::TenantId).eq(tenant));
    if let Some(e) = filter.endpoint {
        q.and_where(Expr::col(Attempts::EndpointId).eq(e));
    }
    if let Some(m) = filter.message {
        q.and_where(Expr::col(Attempts::MessageId).eq(m));
    }
    if let Some(after) = page.after {
        q.and_where(Expr::col(Attempts::Id).lt(after));
    }
    q.order_by(Attempts::Id, Order::Desc).limit(page.limit);
    Ok(sql::build(&q))
}

/// A page of the tenant's notices (endpoints disabled, and why), newest first.
pub async fn notices(tx: &mut TenantTx<'_>, page: &Page<i64>) -> Result<Vec<Notice>> {
    let built = notices_stmt(tx.tenant_id(), page)?;
    Ok(sql::query_as(built).fetch_all(&mut **tx).await?)
}

/// The SQL of [`notices`].
///
/// ```
/// use pgstrata_core::Page;
/// let (sql, _) = pgstrata_webhooks::history::notices_stmt(pgstrata_core::TenantId::new(), &Page::first(10)).unwrap();
/// assert_eq!(sql, r#"SELECT * FROM "webhooks"."notices" WHERE "tenant_id" = $1 ORDER BY "id" DESC LIMIT $2"#);
/// ```
pub fn notices_stmt(tenant: TenantId, page: &Page<i64>) -> Result<Built> {
    page.validate()?;
    let mut q = Query::select();
    q.column(Asterisk)
        .from(Notices::qualified())
        .and_where(Expr::col(Notices::TenantId).eq(tenant));
    if let Some(after) = page.after {
        q.and_where(Expr::col(Notices::Id).lt(after));
    }
    q.order_by(Notices::Id, Order::Desc).limit(page.limit);
    Ok(sql::build(&q))
}

/// Replays a message: each of its finished deliveries to an enabled endpoint gets one more
/// attempt, now, marked manual (no automatic retry after it); the receiver sees the same
/// `webhook-id`, and the attempt log a fresh attempt. With `endpoint`, only that endpoint's,
/// and a message it never received (an endpoint added later) is queued for it. Returns how
/// many deliveries were queued (0 when all were still pending or running).
pub async fn replay(tx: &mut TenantTx<'_>, message: MessageId, endpoint: Option<EndpointId>) -> Result<u32> {
    let (n,): (i32,) = sql::query_as(replay_stmt(message, endpoint))
        .fetch_one(&mut **tx)
        .await?;
    Ok(u32::try_from(n).unwrap_or(0))
}

/// The SQL of [`replay`].
///
/// ```
/// let (sql, _) = pgstrata_webhooks::history::replay_stmt(pgstrata_webhooks::MessageId::new(), None);
/// assert_eq!(sql, "SELECT webhooks.replay($1, $2)");
/// ```
pub fn replay_stmt(message: MessageId, endpoint: Option<EndpointId>) -> Built {
    sql::build(
        Query::select().expr(
            Func::cust(WebhooksFn::Replay)
                .arg(Expr::val(message))
                .arg(Expr::val(endpoint.map(|e| e.0))),
        ),
    )
}

/// Replays every failed delivery of the messages sent since `since` (to enabled endpoints;
/// with `endpoint`, that one's): one manual attempt each. The recovery after an outage or
/// after re-enabling a disabled endpoint. Returns how many were queued.
pub async fn replay_failed(
    tx: &mut TenantTx<'_>,
    since: chrono::DateTime<chrono::Utc>,
    endpoint: Option<EndpointId>,
) -> Result<u32> {
    let (n,): (i32,) = sql::query_as(replay_failed_stmt(since, endpoint))
        .fetch_one(&mut **tx)
        .await?;
    Ok(u32::try_from(n).unwrap_or(0))
}

/// The SQL of [`replay_failed`].
///
/// ```
/// let (sql, _) = pgstrata_webhooks::history::replay_failed_stmt(chrono::Utc::now(), None);
/// assert_eq!(sql, "SELECT webhooks.replay_failed($1, $2)");
/// ```
pub fn replay_failed_stmt(since: chrono::DateTime<chrono::Utc>, endpoint: Option<EndpointId>) -> Built {
    sql::build(
        Query::select().expr(
            Func::cust(WebhooksFn::ReplayFailed)
                .arg(Expr::val(since))
                .arg(Expr::val(endpoint.map(|e| e.0))),
        ),
    )
}

/// Erases every message of the tenant with its deliveries and attempts (an erasure request).
/// Endpoints and secrets stay. Returns how many messages.
pub async fn erase(tx: &mut TenantTx<'_>) -> Result<u64> {
    let (n,): (i64,) = sql::query_as(erase_stmt()).fetch_one(&mut **tx).await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The SQL of [`erase`].
///
/// ```
/// let (sql, _) = pgstrata_webhooks::history::erase_stmt();
/// assert_eq!(sql, "SELECT webhooks.erase()");
/// ```
pub fn erase_stmt() -> Built {
    sql::build(Query::select().expr(Func::cust(WebhooksFn::Erase)))
}

/// Deletes up to `limit` messages past their retention, with their deliveries and attempts,
/// and notices as old (as `pgstrata_worker`). Returns how many messages; run it until 0.
pub async fn prune(conn: &mut PgConnection, limit: i32) -> Result<u32> {
    if !(1..=100_000).contains(&limit) {
        return Err(Error::InvalidInput {
            field: "limit",
            reason: format!("{limit} is not 1 to 100000"),
        });
    }
    let (n,): (i32,) = sql::query_as(prune_stmt(limit)).fetch_one(conn).await?;
    Ok(u32::try_from(n).unwrap_or(0))
}

/// The SQL of [`prune`].
///
/// ```
/// let (sql, _) = pgstrata_webhooks::history::prune_stmt(1000);
/// assert_eq!(sql, "SELECT webhooks.prune($1)");
/// ```
pub fn prune_stmt(limit: i32) -> Built {
    sql::build(Query::select().expr(Func::cust(WebhooksFn::Prune).arg(Expr::val(limit))))
}
