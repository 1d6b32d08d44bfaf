//! Snapshots of long streams: the state a fold reached at a version, so that loading an
//! aggregate reads its snapshot and the events after it instead of every event (D-222).
//!
//! Optional, and a cache: the events stay the truth. A snapshot is named after the fold and
//! the shape of its state (`"order.v2"`); code that changes the fold takes a new name and the
//! old snapshots are not read. [`save`] refuses a version the stream has not reached and keeps
//! the newest snapshot. When they pay: measured by `pgstrata-bench eventstore` (queries.md,
//! the event store section); a fold of a few hundred events is faster read whole.
//!
//! ```no_run
//! use pgstrata_core::{TenantContext, begin_tenant};
//! use pgstrata_eventstore::snapshot;
//! # async fn run(pool: sqlx::PgPool, ctx: TenantContext) -> pgstrata_eventstore::Result<()> {
//! let mut tx = begin_tenant(&pool, &ctx).await?;
//! // The snapshot (if any) and the events after it, folded.
//! let (snap, events) = snapshot::load(&mut tx, "order-42", "order.v1").await?;
//! let mut total: i64 = snap.as_ref().map_or(0, |s| s.state["total"].as_i64().unwrap_or(0));
//! for e in &events {
//!     total += e.data["amount"].as_i64().unwrap_or(0);
//! }
//! let version = events.last().map(|e| e.version).or(snap.map(|s| s.version)).unwrap_or(0);
//! // Every 500 events or so, keep the state reached.
//! if events.len() >= 500 {
//!     snapshot::save(&mut tx, "order-42", "order.v1", version, &serde_json::json!({"total": total})).await?;
//! }
//! tx.commit().await?;
//! # Ok(()) }
//! ```

use crate::append::check_stream;
use crate::error::{Error, Result};
use crate::functions::EventstoreFn;
pub use crate::generated::Snapshot;
use crate::generated::{Event, Snapshots};
use pgstrata_core::sql::{self, Built};
use pgstrata_core::{Page, TenantId, TenantTx};
use sea_query::{Expr, ExprTrait, Func, Query};

/// The largest state [`save`] sends, as serialized JSON. The table's own limit is on the
/// stored (binary) size, 1 MiB, which a state under this always meets.
pub const MAX_STATE_BYTES: usize = 512 * 1024;

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(Error::InvalidField {
            field: "name",
            reason: format!("{name:?}: a snapshot's name is 1 to 200 characters without control characters"),
        });
    }
    Ok(())
}

/// Saves `state`, what the fold `name` reached at `version` of `stream`, in the transaction's
/// tenant. Returns `true` when stored, `false` when a snapshot of that version or a newer one
/// is already there (it is kept). A version the stream has not reached, or below 1, is
/// [`Error::InvalidField`] `version`, with nothing written.
pub async fn save(
    tx: &mut TenantTx<'_>,
    stream: &str,
    name: &str,
    version: i64,
    state: &serde_json::Value,
) -> Result<bool> {
    let (stored,) = sql::query_as(save_stmt(stream, name, version, state)?)
        .fetch_one(&mut **tx)
        .await?;
    Ok(stored)
}

/// The SQL of [`save`], after the checks of its arguments.
///
/// ```
/// use pgstrata_eventstore::snapshot::save_stmt;
/// let (sql, _) = save_stmt("order-42", "order.v1", 500, &serde_json::json!({"total": 12})).unwrap();
/// assert_eq!(sql, "SELECT eventstore.save_snapshot($1, $2, $3, $4)");
/// assert!(save_stmt("order-42", "order.v1", 0, &serde_json::json!({})).is_err());
/// ```
pub fn save_stmt(stream: &str, name: &str, version: i64, state: &serde_json::Value) -> Result<Built> {
    check_stream(stream)?;
    check_name(name)?;
    if version < 1 {
        return Err(Error::InvalidField {
            field: "version",
            reason: format!("{version}: a snapshot is of version 1 or more"),
        });
    }
    let size = serde_json::to_vec(state).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > MAX_STATE_BYTES {
        return Err(Error::InvalidField {
            field: "state",
            reason: format!("{size} bytes of JSON, more than {MAX_STATE_BYTES}"),
        });
    }
    Ok(sql::build(Query::select().expr(
        Func::cust(EventstoreFn::SaveSnapshot).args([
            Expr::val(stream),
            Expr::val(name),
            Expr::val(version),
            Expr::val(state.clone()),
        ]),
    )))
}

/// The snapshot of `stream` by the fold `name`, if one was saved.
pub async fn get(tx: &mut TenantTx<'_>, stream: &str, name: &str) -> Result<Option<Snapshot>> {
    Ok(sql::query_as(get_stmt(tx.tenant_id(), stream, name)?)
        .fetch_optional(&mut **tx)
        .await?)
}

/// The SQL of [`get`].
///
/// ```
/// let (sql, _) = pgstrata_eventstore::snapshot::get_stmt(pgstrata_core::TenantId::new(), "order-42", "order.v1").unwrap();
/// assert_eq!(sql, r#"SELECT * FROM "eventstore"."snapshots" WHERE "tenant_id" = $1 AND "stream" = $2 AND "name" = $3"#);
/// ```
pub fn get_stmt(tenant: TenantId, stream: &str, name: &str) -> Result<Built> {
    check_stream(stream)?;
    check_name(name)?;
    Ok(sql::build(
        Query::select()
            .column(sea_query::Asterisk)
            .from(Snapshots::qualified())
            .and_where(Expr::col(Snapshots::TenantId).eq(tenant.0))
            .and_where(Expr::col(Snapshots::Stream).eq(stream))
            .and_where(Expr::col(Snapshots::Name).eq(name)),
    ))
}

/// What loading an aggregate needs: the snapshot of `stream` by the fold `name` (if any) and
/// every event after it, in version order. Without a snapshot, every event of the stream.
/// The version to append at next is the last event's, or the snapshot's when none follows.
pub async fn load(tx: &mut TenantTx<'_>, stream: &str, name: &str) -> Result<(Option<Snapshot>, Vec<Event>)> {
    let snapshot = get(tx, stream, name).await?;
    let mut after = snapshot.as_ref().map(|s| s.version);
    let mut events = Vec::new();
    loop {
        let page = Page { after, limit: 1000 };
        let batch = crate::read::read_stream(tx, stream, &page).await?;
        let full = batch.len() == 1000;
        after = batch.last().map(|e| e.version).or(after);
        events.extend(batch);
        if !full {
            break;
        }
    }
    Ok((snapshot, events))
}

/// Deletes the tenant's snapshots of the fold `name` (one no code reads any more). Returns how
/// many went. Nothing else changes: the events are the truth.
pub async fn delete(tx: &mut TenantTx<'_>, name: &str) -> Result<u64> {
    Ok(sql::query(delete_stmt(tx.tenant_id(), name)?)
        .execute(&mut **tx)
        .await?
        .rows_affected())
}

/// The SQL of [`delete`].
///
/// ```
/// let (sql, _) = pgstrata_eventstore::snapshot::delete_stmt(pgstrata_core::TenantId::new(), "order.v1").unwrap();
/// assert_eq!(sql, r#"DELETE FROM "eventstore"."snapshots" WHERE "tenant_id" = $1 AND "name" = $2"#);
/// ```
pub fn delete_stmt(tenant: TenantId, name: &str) -> Result<Built> {
    check_name(name)?;
    Ok(sql::build(
        Query::delete()
            .from_table(Snapshots::qualified())
            .and_where(Expr::col(Snapshots::TenantId).eq(tenant.0))
            .and_where(Expr::col(Snapshots::Name).eq(name)),
    ))
}

/// The snapshots of `stream`, one per fold name, by name.
pub async fn list(tx: &mut TenantTx<'_>, stream: &str) -> Result<Vec<Snapshot>> {
    Ok(sql::query_as(list_stmt(tx.tenant_id(), stream)?)
        .fetch_all(&mut **tx)
        .await?)
}

/// The SQL of [`list`].
///
/// ```
/// let (sql, _) = pgstrata_eventstore::snapshot::list_stmt(pgstrata_core::TenantId::new(), "order-42").unwrap();
/// assert_eq!(sql, r#"SELECT * FROM "eventstore"."snapshots" WHERE "tenant_id" = $1 AND "stream" = $2 ORDER BY "name" ASC"#);
/// ```
pub fn list_stmt(tenant: TenantId, stream: &str) -> Result<Built> {
    check_stream(stream)?;
    Ok(sql::build(
        Query::select()
            .column(sea_query::Asterisk)
            .from(Snapshots::qualified())
            .and_where(Expr::col(Snapshots::TenantId).eq(tenant.0))
            .and_where(Expr::col(Snapshots::Stream).eq(stream))
            .order_by(Snapshots::Name, sea_query::Order::Asc),
    ))
}
