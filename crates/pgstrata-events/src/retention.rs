//! Partitions, retention and erasure.
//!
//! - [`maintain`] (worker): creates every month an accepted event can fall in and months ahead,
//!   drops whole months past the global retention (`events.settings.retention_months`), with
//!   the actors of their days; the daily counts are kept.
//! - [`purge`] (worker): a tenant's shorter retention (`events.tenant_settings.retention_days`,
//!   the operator's, e.g. from its plan), by deletes in limited rounds (D-127 says what they cost).
//! - [`erase_actor`] (the tenant's transaction): every event of one actor, through the actor
//!   index, with the rollups corrected; no partition is rewritten.

use crate::error::Result;
use crate::functions::EventsFn;
use pgstrata_core::TenantTx;
use pgstrata_core::sql::{self, Built, Rows};
use sea_query::{Asterisk, Expr, Func, Query};
use sqlx::PgConnection;

pgstrata_core::text_enum!(
    /// What [`maintain`] did to a partition.
    MaintainAction, "maintain action" {
        /// A month was created.
        Created = "created",
        /// An expired month was dropped.
        Dropped = "dropped",
    }
);

/// One step `maintain` took.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MaintainStep {
    pub action: MaintainAction,
    pub partition: String,
}

/// A partition and its bounds (the type every month-partitioned module shares).
pub use pgstrata_core::partitions::Partition;

/// Creates the months from the oldest one a late event may still fall in to `ahead` months
/// after the current one (default: `events.settings`, 3), and drops the months whose whole
/// month is older than `retention_months` (default 13). Run as `pgstrata_worker` (or the
/// owner), daily. Dropping takes a brief exclusive lock on the table, waiting at most 5 s.
pub async fn maintain(
    conn: &mut PgConnection,
    ahead: Option<i32>,
    retention_months: Option<i32>,
) -> Result<Vec<MaintainStep>> {
    Ok(sql::query_as(maintain_stmt(ahead, retention_months))
        .fetch_all(conn)
        .await?)
}

/// The SQL of [`maintain`]; `None` takes the default of `events.settings`.
///
/// ```
/// let (sql, _) = pgstrata_events::retention::maintain_stmt(Some(3), None);
/// assert_eq!(sql, r#"SELECT * FROM events.maintain($1, $2) AS "r""#);
/// ```
pub fn maintain_stmt(ahead: Option<i32>, retention_months: Option<i32>) -> Built {
    let f = Func::cust(EventsFn::Maintain).args([Expr::val(ahead), Expr::val(retention_months)]);
    sql::build(Query::select().column(Asterisk).from_function(f, Rows))
}

/// The partitions, oldest first.
pub async fn partitions(conn: &mut PgConnection) -> Result<Vec<Partition>> {
    Ok(sql::query_as(partitions_stmt()).fetch_all(conn).await?)
}

/// The SQL of [`partitions`].
///
/// ```
/// let (sql, _) = pgstrata_events::retention::partitions_stmt();
/// assert_eq!(sql, r#"SELECT * FROM events.partitions() AS "r""#);
/// ```
pub fn partitions_stmt() -> Built {
    sql::build(
        Query::select()
            .column(Asterisk)
            .from_function(Func::cust(EventsFn::Partitions), Rows),
    )
}

/// Deletes up to `limit` events older than their tenant's `retention_days`, and the actors of
/// those days; returns how many events it deleted. One transaction per call: run it until it
/// returns 0 (`pgstrata events purge` does). As `pgstrata_worker`.
pub async fn purge(conn: &mut PgConnection, limit: i32) -> Result<i64> {
    let (n,): (i64,) = sql::query_as(purge_stmt(limit)).fetch_one(conn).await?;
    Ok(n)
}

/// The SQL of [`purge`].
///
/// ```
/// let (sql, _) = pgstrata_events::retention::purge_stmt(10_000);
/// assert_eq!(sql, r#"SELECT events.purge($1)"#);
/// ```
pub fn purge_stmt(limit: i32) -> Built {
    sql::build(Query::select().expr(Func::cust(EventsFn::Purge).arg(Expr::val(limit))))
}

/// Erases every event of `actor` in the transaction's tenant (a data-subject request), with
/// the rollups corrected so they agree with the events left; returns how many it erased.
pub async fn erase_actor(tx: &mut TenantTx<'_>, actor: &str) -> Result<i64> {
    let (n,): (i64,) = sql::query_as(erase_actor_stmt(actor)).fetch_one(&mut **tx).await?;
    Ok(n)
}

/// The SQL of [`erase_actor`].
///
/// ```
/// let (sql, _) = pgstrata_events::retention::erase_actor_stmt("user-1");
/// assert_eq!(sql, r#"SELECT events.erase_actor($1)"#);
/// ```
pub fn erase_actor_stmt(actor: &str) -> Built {
    sql::build(Query::select().expr(Func::cust(EventsFn::EraseActor).arg(Expr::val(actor))))
}
