//! Reading a tenant's events: one stream in version order, a category or the whole log in
//! position order, a page at a time.
//!
//! These read what has committed now, for the request path (load an aggregate, show a history).
//! Following the log as it grows is a subscription's work ([`crate::subscription`]): a position
//! cursor here could pass a position whose transaction commits later.

use crate::append::check_stream;
use crate::error::{Error, Result};
use crate::generated::{Event, Events, Streams};
use pgstrata_core::sql::{self, Built};
use pgstrata_core::{Page, TenantId, TenantTx};
use sea_query::{Expr, ExprTrait, Order, Query, SelectStatement};

/// Every column of `eventstore.events`, `txid` read as a bigint (xid8 has no Rust decoder; its
/// text is the 64-bit transaction id).
pub(crate) fn event_columns(q: &mut SelectStatement) -> &mut SelectStatement {
    q.columns([
        Events::TenantId,
        Events::EventId,
        Events::Stream,
        Events::Category,
        Events::Version,
        Events::Position,
    ])
    .expr_as(Expr::col(Events::Txid).cast_as("text").cast_as("bigint"), Events::Txid)
    .columns([
        Events::Type,
        Events::Data,
        Events::Metadata,
        Events::CausationId,
        Events::CorrelationId,
        Events::ActorId,
        Events::RequestId,
        Events::RecordedAt,
    ])
}

/// The events of `stream` after version `page.after` (from the first when `None`), in version
/// order. Folding them gives the aggregate at the version of the last one, which is the
/// expected version of the next append.
pub async fn read_stream(tx: &mut TenantTx<'_>, stream: &str, page: &Page<i64>) -> Result<Vec<Event>> {
    let built = read_stream_stmt(tx.tenant_id(), stream, page)?;
    Ok(sql::query_as(built).fetch_all(&mut **tx).await?)
}

/// The SQL of [`read_stream`].
///
/// ```
/// use pgstrata_core::{Page, TenantId};
/// let (sql, _) = pgstrata_eventstore::read::read_stream_stmt(TenantId::new(), "order-42", &Page::after(3, 100)).unwrap();
/// assert_eq!(
///     sql,
///     r#"SELECT "tenant_id", "event_id", "stream", "category", "version", "position", CAST(CAST("txid" AS text) AS bigint) AS "txid", "type", "data", "metadata", "causation_id", "correlation_id", "actor_id", "request_id", "recorded_at" FROM "eventstore"."events" WHERE "tenant_id" = $1 AND "stream" = $2 AND "version" > $3 ORDER BY "version" ASC LIMIT $4"#
/// );
/// ```
pub fn read_stream_stmt(tenant: TenantId, stream: &str, page: &Page<i64>) -> Result<Built> {
    page.validate()?;
    check_stream(stream)?;
    let mut q = Query::select();
    event_columns(&mut q)
        .from(Events::qualified())
        .and_where(Expr::col(Events::TenantId).eq(tenant.0))
        .and_where(Expr::col(Events::Stream).eq(stream))
        .and_where(Expr::col(Events::Version).gt(page.after.unwrap_or(0)))
        .order_by(Events::Version, Order::Asc)
        .limit(page.limit);
    Ok(sql::build(&q))
}

/// The events of `category` (every stream `category-...`) after position `page.after`, in
/// position order.
pub async fn read_category(tx: &mut TenantTx<'_>, category: &str, page: &Page<i64>) -> Result<Vec<Event>> {
    let built = read_category_stmt(tx.tenant_id(), Some(category), page)?;
    Ok(sql::query_as(built).fetch_all(&mut **tx).await?)
}

/// Every event of the tenant after position `page.after`, in position order.
pub async fn read_all(tx: &mut TenantTx<'_>, page: &Page<i64>) -> Result<Vec<Event>> {
    let built = read_category_stmt(tx.tenant_id(), None, page)?;
    Ok(sql::query_as(built).fetch_all(&mut **tx).await?)
}

/// The SQL of [`read_category`] (`Some`) and [`read_all`] (`None`).
///
/// ```
/// use pgstrata_core::{Page, TenantId};
/// let (sql, _) = pgstrata_eventstore::read::read_category_stmt(TenantId::new(), Some("order"), &Page::first(100)).unwrap();
/// assert!(sql.ends_with(r#"FROM "eventstore"."events" WHERE "tenant_id" = $1 AND "category" = $2 AND "position" > $3 ORDER BY "position" ASC LIMIT $4"#));
/// let (sql, _) = pgstrata_eventstore::read::read_category_stmt(TenantId::new(), None, &Page::first(100)).unwrap();
/// assert!(sql.ends_with(r#"FROM "eventstore"."events" WHERE "tenant_id" = $1 AND "position" > $2 ORDER BY "position" ASC LIMIT $3"#));
/// ```
pub fn read_category_stmt(tenant: TenantId, category: Option<&str>, page: &Page<i64>) -> Result<Built> {
    page.validate()?;
    let mut q = Query::select();
    event_columns(&mut q)
        .from(Events::qualified())
        .and_where(Expr::col(Events::TenantId).eq(tenant.0));
    if let Some(c) = category {
        if c.is_empty() || c.len() > 200 || c.contains('-') {
            return Err(Error::InvalidField {
                field: "category",
                reason: format!("{c:?} is not a category (the part of a stream name before its first '-')"),
            });
        }
        q.and_where(Expr::col(Events::Category).eq(c));
    }
    q.and_where(Expr::col(Events::Position).gt(page.after.unwrap_or(0)))
        .order_by(Events::Position, Order::Asc)
        .limit(page.limit);
    Ok(sql::build(&q))
}

/// The stream's version (the number of its events), 0 when it has none.
pub async fn stream_version(tx: &mut TenantTx<'_>, stream: &str) -> Result<i64> {
    let built = stream_version_stmt(tx.tenant_id(), stream)?;
    let row: Option<(i64,)> = sql::query_as(built).fetch_optional(&mut **tx).await?;
    Ok(row.map(|(v,)| v).unwrap_or(0))
}

/// The SQL of [`stream_version`].
///
/// ```
/// let (sql, _) = pgstrata_eventstore::read::stream_version_stmt(pgstrata_core::TenantId::new(), "order-42").unwrap();
/// assert_eq!(sql, r#"SELECT "version" FROM "eventstore"."streams" WHERE "tenant_id" = $1 AND "stream" = $2"#);
/// ```
pub fn stream_version_stmt(tenant: TenantId, stream: &str) -> Result<Built> {
    check_stream(stream)?;
    Ok(sql::build(
        Query::select()
            .column(Streams::Version)
            .from(Streams::qualified())
            .and_where(Expr::col(Streams::TenantId).eq(tenant.0))
            .and_where(Expr::col(Streams::Stream).eq(stream)),
    ))
}

/// The stream's row (its version, its last event's txid, when it was created and last
/// appended to), `None` when it has no events.
pub async fn stream(tx: &mut TenantTx<'_>, stream: &str) -> Result<Option<crate::Stream>> {
    let built = stream_stmt(tx.tenant_id(), stream)?;
    Ok(sql::query_as(built).fetch_optional(&mut **tx).await?)
}

/// The SQL of [`stream()`].
///
/// ```
/// let (sql, _) = pgstrata_eventstore::read::stream_stmt(pgstrata_core::TenantId::new(), "order-42").unwrap();
/// assert_eq!(
///     sql,
///     r#"SELECT "tenant_id", "stream", "version", CAST(CAST("last_txid" AS text) AS bigint) AS "last_txid", "created_at", "updated_at" FROM "eventstore"."streams" WHERE "tenant_id" = $1 AND "stream" = $2"#
/// );
/// ```
pub fn stream_stmt(tenant: TenantId, stream: &str) -> Result<Built> {
    check_stream(stream)?;
    Ok(sql::build(
        Query::select()
            .columns([Streams::TenantId, Streams::Stream, Streams::Version])
            .expr_as(
                Expr::col(Streams::LastTxid).cast_as("text").cast_as("bigint"),
                Streams::LastTxid,
            )
            .columns([Streams::CreatedAt, Streams::UpdatedAt])
            .from(Streams::qualified())
            .and_where(Expr::col(Streams::TenantId).eq(tenant.0))
            .and_where(Expr::col(Streams::Stream).eq(stream)),
    ))
}
