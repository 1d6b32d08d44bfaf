//! Monthly partitions of `audit.records`: created ahead, dropped whole when expired.

use crate::error::Result;
use crate::functions::AuditFn;
use pgstrata_core::sql::{self, Built, Rows};
use sea_query::{Asterisk, Expr, Func, Query};
use sqlx::PgConnection;

pgstrata_core::text_enum!(
    /// What [`maintain`] did to a partition.
    MaintainAction, "maintain action" {
        /// A month was created ahead.
        Created = "created",
        /// An expired month was dropped, with its seals.
        Dropped = "dropped",
        /// An expired month still holds unsealed records, so it was kept: run a sealer, then
        /// maintain again (later months wait for it).
        KeptUnsealed = "kept_unsealed",
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

/// Creates the current month and `ahead` months after it (default: `audit.settings`, 3), and
/// drops the partitions whose whole month is older than `retention_months` (default 12).
/// Run as `pgstrata_worker` (or the owner). Before a month is dropped, each tenant's chain
/// checkpoint moves past it, so `verify` stays clean. Dropping takes a brief exclusive lock on
/// the log, waiting at most 5 s for it.
pub async fn maintain(
    conn: &mut PgConnection,
    ahead: Option<i32>,
    retention_months: Option<i32>,
) -> Result<Vec<MaintainStep>> {
    Ok(sql::query_as(maintain_stmt(ahead, retention_months))
        .fetch_all(conn)
        .await?)
}

/// The SQL of [`maintain`]; `None` takes the default of `audit.settings`.
///
/// ```
/// let (sql, _) = pgstrata_audit::partitions::maintain_stmt(Some(3), None);
/// assert_eq!(sql, r#"SELECT * FROM audit.maintain($1, $2) AS "r""#);
/// ```
pub fn maintain_stmt(ahead: Option<i32>, retention_months: Option<i32>) -> Built {
    let f = Func::cust(AuditFn::Maintain).args([Expr::val(ahead), Expr::val(retention_months)]);
    sql::build(Query::select().column(Asterisk).from_function(f, Rows))
}

/// The partitions, oldest first.
pub async fn list(conn: &mut PgConnection) -> Result<Vec<Partition>> {
    Ok(sql::query_as(list_stmt()).fetch_all(conn).await?)
}

/// The SQL of [`list`].
///
/// ```
/// let (sql, _) = pgstrata_audit::partitions::list_stmt();
/// assert_eq!(sql, r#"SELECT * FROM audit.partitions() AS "r""#);
/// ```
pub fn list_stmt() -> Built {
    sql::build(
        Query::select()
            .column(Asterisk)
            .from_function(Func::cust(AuditFn::Partitions), Rows),
    )
}
