//! The event ledger for operators: what failed, waits, was ignored or rejected, and why;
//! applying failures again; pruning what is done with.

use crate::error::Result;
use chrono::{DateTime, Utc};
use pgstrata_core::TenantId;
use sqlx::PgConnection;
use std::time::Duration;
use uuid::Uuid;

/// One ledger row, without its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEvent {
    pub id: String,
    pub event_type: String,
    /// `processed`, `ignored`, `deferred`, `failed` or `rejected`.
    pub status: String,
    pub object_type: Option<String>,
    pub object_id: Option<String>,
    pub customer_id: Option<String>,
    pub tenant_id: Option<TenantId>,
    pub attempts: i32,
    /// Why it failed or was rejected.
    pub error: Option<String>,
    pub received_at: DateTime<Utc>,
    pub processed_at: Option<DateTime<Utc>>,
}

type Row = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<Uuid>,
    i32,
    Option<String>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

/// The newest `limit` events (1 to 10,000), of one `status` or all. Run it as
/// `pgstrata_billing_sync` or `pgstrata_operator`.
pub async fn events(conn: &mut PgConnection, status: Option<&str>, limit: i32) -> Result<Vec<LedgerEvent>> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, type, status, object_type, object_id, customer_id, tenant_id, attempts, error, received_at,
                processed_at
           FROM billing.ledger($1, $2)",
    )
    .bind(status)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| LedgerEvent {
            id: r.0,
            event_type: r.1,
            status: r.2,
            object_type: r.3,
            object_id: r.4,
            customer_id: r.5,
            tenant_id: r.6.map(TenantId),
            attempts: r.7,
            error: r.8,
            received_at: r.9,
            processed_at: r.10,
        })
        .collect())
}

/// Applies up to `limit` failed events again, oldest first (after a fix, say); returns how
/// many now succeed. Run it as `pgstrata_billing_sync`.
pub async fn retry_failed(conn: &mut PgConnection, limit: i32) -> Result<i32> {
    Ok(sqlx::query_scalar("SELECT billing.retry_failed($1)")
        .bind(limit)
        .fetch_one(conn)
        .await?)
}

/// Deletes the processed, ignored and rejected events received more than `older_than` ago (at
/// least 7 days; deferred and failed events are kept); returns how many. Run it as
/// `pgstrata_billing_sync`.
pub async fn prune(conn: &mut PgConnection, older_than: Duration) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT billing.prune_events(make_interval(secs => $1))")
            .bind(older_than.as_secs_f64())
            .fetch_one(conn)
            .await?,
    )
}
