//! Retention and health: deleting delivered messages, what holds the relays back, per-sink
//! counts. Worker role (the stats also for the operator).

use crate::error::{Error, Result};
use crate::functions::OutboxFn;
use chrono::{DateTime, Utc};
use pgstrata_core::sql::{self, Built, Rows};
use sea_query::{Asterisk, Expr, ExprTrait as _, Func, Query};
use sqlx::PgConnection;
use std::time::Duration;

/// The statement of [`cleanup`].
///
/// ```
/// let (sql, _) = pgstrata_outbox::health::cleanup_stmt(std::time::Duration::from_secs(86_400), 10_000);
/// assert_eq!(sql, "SELECT outbox.cleanup(CAST($1 AS interval), $2)");
/// ```
pub fn cleanup_stmt(older_than: Duration, limit: i32) -> Built {
    sql::build(Query::select().expr(Func::cust(OutboxFn::Cleanup).args([
        Expr::val(format!("{} milliseconds", older_than.as_millis())).cast_as("interval"),
        Expr::val(limit),
    ])))
}

/// Deletes up to `limit` (1 to 1,000,000) messages published more than `older_than` ago that
/// every registered sink has passed, and forgets aggregates idle as long. Returns how many
/// messages it deleted; call it again while it returns `limit`.
pub async fn cleanup(conn: &mut PgConnection, older_than: Duration, limit: i32) -> Result<i32> {
    if !(1..=1_000_000).contains(&limit) {
        return Err(Error::InvalidField {
            field: "limit",
            reason: format!("must be 1 to 1000000, got {limit}"),
        });
    }
    let (n,) = sql::query_as(cleanup_stmt(older_than, limit)).fetch_one(conn).await?;
    Ok(n)
}

/// A transaction holding every relay back: committed messages wait above it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct HeldBack {
    /// The oldest running transaction's id (the horizon).
    pub xid: i64,
    /// Its backend, when the caller may see it (`pg_terminate_backend(pid)` ends it).
    pub pid: Option<i32>,
    /// Committed messages waiting above the horizon.
    pub messages: i64,
    /// The oldest waiting message's publish time.
    pub oldest: DateTime<Utc>,
    /// How long that message has waited.
    pub held_seconds: f64,
}

impl std::fmt::Display for HeldBack {
    /// `relay held back by xid N for T seconds (M messages waiting, backend pid P)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "relay held back by xid {} for {:.0} seconds ({} message(s) waiting",
            self.xid, self.held_seconds, self.messages
        )?;
        match self.pid {
            Some(pid) => write!(f, ", backend pid {pid})"),
            None => write!(f, ")"),
        }
    }
}

/// The statement of [`held_back`].
///
/// ```
/// assert_eq!(pgstrata_outbox::health::held_back_stmt().0, r#"SELECT * FROM outbox.held_back() AS "r""#);
/// ```
pub fn held_back_stmt() -> Built {
    sql::build(
        Query::select()
            .column(Asterisk)
            .from_function(Func::cust(OutboxFn::HeldBack), Rows),
    )
}

/// The running transaction that keeps committed messages from the relays, if any: the metric
/// "relay held back by xid N for T seconds". A long transaction anywhere on the server (any
/// database: transaction ids are server-wide) holds every relay back while it runs.
pub async fn held_back(conn: &mut PgConnection) -> Result<Option<HeldBack>> {
    Ok(sql::query_as(held_back_stmt()).fetch_optional(conn).await?)
}

/// A sink's progress.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SinkStats {
    pub sink: String,
    /// Messages delivered since the sink was registered.
    pub delivered: i64,
    /// The last time a checkpoint of the sink moved.
    pub last_delivery: DateTime<Utc>,
}

/// The statement of [`sink_stats`].
///
/// ```
/// assert_eq!(pgstrata_outbox::health::sink_stats_stmt().0, r#"SELECT * FROM outbox.sink_stats() AS "r""#);
/// ```
pub fn sink_stats_stmt() -> Built {
    sql::build(
        Query::select()
            .column(Asterisk)
            .from_function(Func::cust(OutboxFn::SinkStats), Rows),
    )
}

/// Every sink's progress, by name.
pub async fn sink_stats(conn: &mut PgConnection) -> Result<Vec<SinkStats>> {
    Ok(sql::query_as(sink_stats_stmt()).fetch_all(conn).await?)
}
