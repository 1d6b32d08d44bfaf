//! The event ledger for operators: what failed, waits, was ignored or rejected, and why;
//! applying failures again; pruning what is done with. Ledger work is global (it runs before
//! any tenant is known), so these take a connection of `pgstrata_billing_sync` or
//! `pgstrata_operator`, not a tenant transaction.

use crate::error::{Error, Result};
use crate::functions::{Function, interval};
use crate::ids::EventStatus;
use chrono::{DateTime, Utc};
use pgstrata_core::sql::{self, Built};
use pgstrata_core::{Page, TenantId};
use sea_query::{Asterisk, Expr, Func, Query};
use sqlx::PgConnection;
use std::time::Duration;

/// What the ledger is ordered by, newest first: when an event was received, then its id. A
/// page of [`events`] continues after the key of the previous page's last event.
pub type LedgerKey = (DateTime<Utc>, String);

/// One ledger row, without its payload.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LedgerEvent {
    pub id: String,
    #[sqlx(rename = "type")]
    pub event_type: String,
    pub status: EventStatus,
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

impl LedgerEvent {
    /// Its place in the ledger, for [`Page::next`].
    pub fn key(&self) -> LedgerKey {
        (self.received_at, self.id.clone())
    }
}

/// The statement of [`events`]: a page of `billing.ledger`, of one `status` or all. A size
/// outside 1..=1000 is [`Error::InvalidPage`].
///
/// ```
/// use pgstrata_billing::{EventStatus, ledger::events_stmt};
/// use pgstrata_core::Page;
/// let (sql, _) = events_stmt(Some(EventStatus::Failed), &Page::first(50)).unwrap();
/// assert_eq!(sql, r#"SELECT * FROM billing.ledger($1, $2, $3, $4) AS "l""#);
/// assert!(events_stmt(None, &Page::first(0)).is_err());
/// ```
pub fn events_stmt(status: Option<EventStatus>, page: &Page<LedgerKey>) -> Result<Built> {
    page.validate()?;
    let (after_received, after_id) = match &page.after {
        Some((at, id)) => (Some(*at), Some(id.clone())),
        None => (None, None),
    };
    Ok(sql::build(Query::select().column(Asterisk).from_function(
        Func::cust(Function::Ledger).args([
            Expr::val(status.map(|s| s.as_str().to_owned())),
            Expr::val(page.limit as i32),
            Expr::val(after_received),
            Expr::val(after_id),
        ]),
        "l",
    )))
}

/// A page of the ledger, newest first, of one `status` or all: `Page::first(n)`, then
/// `page.next(&rows, LedgerEvent::key)`. Run it as `pgstrata_billing_sync` or
/// `pgstrata_operator`.
pub async fn events(
    conn: &mut PgConnection,
    status: Option<EventStatus>,
    page: &Page<LedgerKey>,
) -> Result<Vec<LedgerEvent>> {
    Ok(sql::query_as(events_stmt(status, page)?).fetch_all(conn).await?)
}

/// The statement of [`retry_failed`]. A `limit` below 1 is [`Error::InvalidField`].
///
/// ```
/// let (sql, _) = pgstrata_billing::ledger::retry_failed_stmt(100).unwrap();
/// assert_eq!(sql, "SELECT billing.retry_failed($1)");
/// assert!(pgstrata_billing::ledger::retry_failed_stmt(0).is_err());
/// ```
pub fn retry_failed_stmt(limit: i32) -> Result<Built> {
    if limit < 1 {
        return Err(Error::InvalidField {
            field: "limit",
            reason: format!("retry at least 1 event, got {limit}"),
        });
    }
    Ok(sql::build(
        Query::select().expr(Func::cust(Function::RetryFailed).arg(limit)),
    ))
}

/// Applies up to `limit` failed events again, oldest first (after a fix, say); returns how
/// many now succeed. Run it as `pgstrata_billing_sync`.
pub async fn retry_failed(conn: &mut PgConnection, limit: i32) -> Result<i32> {
    let (n,): (i32,) = sql::query_as(retry_failed_stmt(limit)?).fetch_one(conn).await?;
    Ok(n)
}

/// The least [`prune`] keeps: Stripe redelivers for up to 3 days, and an event pruned before its
/// last redelivery would be claimed again.
pub const MIN_RETENTION: Duration = Duration::from_secs(7 * 86_400);

/// The statement of [`prune`]. Less than [`MIN_RETENTION`] is [`Error::InvalidField`].
///
/// ```
/// use std::time::Duration;
/// let (sql, _) = pgstrata_billing::ledger::prune_stmt(Duration::from_secs(90 * 86_400)).unwrap();
/// assert_eq!(sql, "SELECT billing.prune_events(CAST($1 AS interval))");
/// assert!(pgstrata_billing::ledger::prune_stmt(Duration::from_secs(86_400)).is_err());
/// ```
pub fn prune_stmt(older_than: Duration) -> Result<Built> {
    if older_than < MIN_RETENTION {
        return Err(Error::InvalidField {
            field: "older_than",
            reason: format!(
                "keep at least 7 days of events (Stripe redelivers for 3), got {} s",
                older_than.as_secs()
            ),
        });
    }
    Ok(sql::build(
        Query::select().expr(Func::cust(Function::PruneEvents).arg(interval(older_than))),
    ))
}

/// Deletes the processed, ignored and rejected events received more than `older_than` ago (at
/// least [`MIN_RETENTION`]; deferred and failed events are kept); returns how many. Run it as
/// `pgstrata_billing_sync`.
pub async fn prune(conn: &mut PgConnection, older_than: Duration) -> Result<i64> {
    let (n,): (i64,) = sql::query_as(prune_stmt(older_than)?).fetch_one(conn).await?;
    Ok(n)
}
