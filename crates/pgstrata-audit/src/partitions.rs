//! Monthly partitions of `audit.records`: created ahead, dropped whole when expired.

use crate::error::Result;
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

/// A partition and its bounds.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Partition {
    pub name: String,
    pub lower_bound: chrono::DateTime<chrono::Utc>,
    pub upper_bound: chrono::DateTime<chrono::Utc>,
}

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
    Ok(sqlx::query_as("SELECT action, partition FROM audit.maintain($1, $2)")
        .bind(ahead)
        .bind(retention_months)
        .fetch_all(conn)
        .await?)
}

/// The partitions, oldest first.
pub async fn list(conn: &mut PgConnection) -> Result<Vec<Partition>> {
    Ok(
        sqlx::query_as("SELECT name, lower_bound, upper_bound FROM audit.partitions()")
            .fetch_all(conn)
            .await?,
    )
}
