//! Subscriptions and projections: following the log across tenants, as `pgstrata_worker`.
//!
//! A subscription is a named checkpoint, `(txid, position)` of the last event it processed, in
//! `eventstore.subscriptions`. [`read_after`] returns the next events after a checkpoint, and
//! only events whose transactions have all ended: it reads below the xmin horizon of its
//! snapshot (`pg_snapshot_xmin(pg_current_snapshot())`). A transaction that took its position
//! early and commits late is therefore never skipped (the classic `WHERE position > $last`
//! bug); it is waited for, and so is everything after it. The price: one long transaction
//! anywhere on the server holds every subscription back until it ends (D-187).
//!
//! A [`Projection`] folds events into read-model tables. [`step`] runs one batch in one
//! transaction: it locks the subscription's row (one runner at a time, the others skip it),
//! reads the batch, lets the projection write its read models, and moves the checkpoint, guarded
//! by the checkpoint it read, before it commits. Read models and checkpoint move together or not
//! at all, so each event is applied exactly once. [`run`] repeats it until cancelled.
//!
//! Read models carry a generation: [`rebuild`] replays the log from position 0 into a new
//! generation beside the live one, then, in one transaction that holds the live row, catches
//! up to the horizon and makes the new generation live; readers follow
//! `eventstore.live_generation(name)` and never see a half-built generation (D-190).

use crate::error::{Error, Result};
use crate::functions::EventstoreFn;
use crate::generated::{Event, Subscriptions};
use crate::read::event_columns;
use pgstrata_core::CancellationToken;
use pgstrata_core::sql::{self, Built, Rows};
use sea_query::{Expr, ExprTrait, Func, OnConflict, Query};
use sqlx::{Acquire, PgConnection, PgPool};
use std::time::Duration;

/// Largest batch one step reads.
pub const MAX_BATCH: i32 = 10_000;

/// Where a subscription is: the ordering txid and position of the last event it processed
/// (`Checkpoint::START` before the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    pub txid: i64,
    pub position: i64,
}

impl Checkpoint {
    /// Before the first event.
    pub const START: Checkpoint = Checkpoint { txid: 0, position: 0 };

    /// The checkpoint just after `event`.
    pub fn of(event: &Event) -> Self {
        Checkpoint {
            txid: event.txid,
            position: event.position,
        }
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(Error::InvalidField {
            field: "subscription",
            reason: format!("{name:?} is not 1 to 200 characters without control characters"),
        });
    }
    Ok(())
}

fn check_category(category: Option<&str>) -> Result<()> {
    match category {
        Some(c) if c.is_empty() || c.len() > 200 || c.contains('-') => Err(Error::InvalidField {
            field: "category",
            reason: format!("{c:?} is not a category (the part of a stream name before its first '-')"),
        }),
        _ => Ok(()),
    }
}

/// Creates the subscription `name` (every category when `category` is `None`) at the start of
/// the log, live at generation 1, unless it exists. As `pgstrata_worker` or the owner.
pub async fn create(conn: &mut PgConnection, name: &str, category: Option<&str>) -> Result<()> {
    sql::query(create_stmt(name, category)?).execute(conn).await?;
    Ok(())
}

/// The SQL of [`create`].
///
/// ```
/// let (sql, _) = pgstrata_eventstore::subscription::create_stmt("courier-tasks", Some("order")).unwrap();
/// assert_eq!(sql, r#"INSERT INTO "eventstore"."subscriptions" ("name", "category") VALUES ($1, $2) ON CONFLICT  DO NOTHING"#);
/// ```
pub fn create_stmt(name: &str, category: Option<&str>) -> Result<Built> {
    check_name(name)?;
    check_category(category)?;
    Ok(sql::build(
        Query::insert()
            .into_table(Subscriptions::qualified())
            .columns([Subscriptions::Name, Subscriptions::Category])
            .values_panic([Expr::val(name), Expr::val(category.map(str::to_owned))])
            .on_conflict(OnConflict::new().do_nothing().to_owned()),
    ))
}

/// The next at most `limit` events after `after` (of `category`, or all), in `(txid, position)`
/// order, every one of them from a transaction that has ended, across tenants. As
/// `pgstrata_worker`. An empty result means caught up with the horizon, not with the newest
/// event: a transaction still open holds back everything after it.
pub async fn read_after(
    conn: &mut PgConnection,
    after: Checkpoint,
    category: Option<&str>,
    limit: i32,
) -> Result<Vec<Event>> {
    Ok(sql::query_as(read_after_stmt(after, category, limit)?)
        .fetch_all(conn)
        .await?)
}

/// The SQL of [`read_after`].
///
/// ```
/// use pgstrata_eventstore::subscription::{Checkpoint, read_after_stmt};
/// let (sql, _) = read_after_stmt(Checkpoint::START, None, 500).unwrap();
/// assert!(sql.starts_with(r#"SELECT "tenant_id", "event_id", "stream""#));
/// assert!(sql.ends_with(r#"FROM eventstore.read_after(CAST(CAST($1 AS text) AS xid8), $2, $3, $4) AS "r""#));
/// assert!(read_after_stmt(Checkpoint::START, None, 0).is_err());
/// ```
pub fn read_after_stmt(after: Checkpoint, category: Option<&str>, limit: i32) -> Result<Built> {
    check_category(category)?;
    if !(1..=MAX_BATCH).contains(&limit) {
        return Err(Error::InvalidField {
            field: "limit",
            reason: format!("{limit}: read 1 to {MAX_BATCH} events at a time"),
        });
    }
    let f = Func::cust(EventstoreFn::ReadAfter).args([
        Expr::val(after.txid).cast_as("text").cast_as("xid8"),
        Expr::val(after.position),
        Expr::val(category.map(str::to_owned)),
        Expr::val(limit),
    ]);
    let mut q = Query::select();
    event_columns(&mut q).from_function(f, Rows);
    Ok(sql::build(&q))
}

/// A subscription's row as a runner sees it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
struct Locked {
    generation: i32,
    category: Option<String>,
    txid: i64,
    position: i64,
}

/// Locks the row of `name` at `generation` (the live one when `None`) for this transaction, or
/// returns `None` when another runner holds it. Unknown names are an error.
async fn lock(conn: &mut PgConnection, name: &str, generation: Option<i32>) -> Result<Option<Locked>> {
    let mut q = Query::select();
    q.columns([Subscriptions::Generation, Subscriptions::Category])
        .expr_as(
            Expr::col(Subscriptions::Txid).cast_as("text").cast_as("bigint"),
            Subscriptions::Txid,
        )
        .column(Subscriptions::Position)
        .from(Subscriptions::qualified())
        .and_where(Expr::col(Subscriptions::Name).eq(name));
    match generation {
        Some(g) => q.and_where(Expr::col(Subscriptions::Generation).eq(g)),
        None => q.and_where(Expr::col(Subscriptions::Live).eq(true)),
    };
    let mut exists = q.clone();
    q.lock_with_behavior(sea_query::LockType::Update, sea_query::LockBehavior::SkipLocked);
    if let Some(row) = sql::query_as::<Locked>(sql::build(&q))
        .fetch_optional(&mut *conn)
        .await?
    {
        return Ok(Some(row));
    }
    let found: Option<Locked> = sql::query_as(sql::build(&*exists.limit(1)))
        .fetch_optional(&mut *conn)
        .await?;
    match found {
        Some(_) => Ok(None),
        None => Err(Error::UnknownSubscription { name: name.to_owned() }),
    }
}

/// Moves the checkpoint of a locked row, guarded by the checkpoint it had.
async fn advance(conn: &mut PgConnection, name: &str, row: &Locked, to: Checkpoint, events: usize) -> Result<()> {
    let built = sql::build(
        Query::update()
            .table(Subscriptions::qualified())
            .value(Subscriptions::Txid, Expr::val(to.txid).cast_as("text").cast_as("xid8"))
            .value(Subscriptions::Position, to.position)
            .value(
                Subscriptions::Events,
                Expr::col(Subscriptions::Events).add(events as i64),
            )
            .value(Subscriptions::UpdatedAt, Expr::cust("now()"))
            .and_where(Expr::col(Subscriptions::Name).eq(name))
            .and_where(Expr::col(Subscriptions::Generation).eq(row.generation))
            .and_where(Expr::col(Subscriptions::Txid).eq(Expr::val(row.txid).cast_as("text").cast_as("xid8")))
            .and_where(Expr::col(Subscriptions::Position).eq(row.position)),
    );
    let done = sql::query(built).execute(conn).await?;
    if done.rows_affected() != 1 {
        // The row is locked by this transaction, so only a bug gets here.
        return Err(Error::Projection {
            name: name.to_owned(),
            message: format!("the checkpoint of generation {} moved under its lock", row.generation),
        });
    }
    Ok(())
}

/// Folds events into read-model tables. Runs as `pgstrata_worker` (or a role holding it), so
/// its tables need explicit grants (and a worker policy when they have forced RLS).
pub trait Projection: Send + Sync {
    /// The subscription's name (its row in `eventstore.subscriptions`).
    fn name(&self) -> &str;

    /// Applies `events` (in log order, across tenants; each event's `tenant_id` says whose) to
    /// the read models of `generation`, in the transaction that then moves the checkpoint. An
    /// error rolls back both.
    fn apply(
        &self,
        conn: &mut PgConnection,
        generation: i32,
        events: &[Event],
    ) -> impl std::future::Future<Output = Result<()>> + Send;

    /// Removes the read models of a generation that is no longer live (after a rebuild), or of
    /// an abandoned rebuild. The default keeps them.
    fn retire(&self, conn: &mut PgConnection, generation: i32) -> impl std::future::Future<Output = Result<()>> + Send {
        let _ = (conn, generation);
        async { Ok(()) }
    }
}

/// What one [`step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// This many events were applied and the checkpoint moved past them.
    Applied(usize),
    /// Nothing below the horizon after the checkpoint.
    CaughtUp,
    /// Another runner holds the subscription (or a rebuild is swapping it).
    Busy,
}

/// Applies one batch of the live generation of `projection`, in one transaction on `conn`.
pub async fn step<P: Projection>(conn: &mut PgConnection, projection: &P, limit: i32) -> Result<Step> {
    let mut tx = conn.begin().await?;
    let step = step_in(&mut tx, projection, None, limit).await?;
    tx.commit().await?;
    Ok(step)
}

/// One batch of `generation` (the live one when `None`) inside the caller's transaction.
async fn step_in<P: Projection>(
    conn: &mut PgConnection,
    projection: &P,
    generation: Option<i32>,
    limit: i32,
) -> Result<Step> {
    let name = projection.name();
    let Some(row) = lock(conn, name, generation).await? else {
        return Ok(Step::Busy);
    };
    let after = Checkpoint {
        txid: row.txid,
        position: row.position,
    };
    let events = read_after(conn, after, row.category.as_deref(), limit).await?;
    let Some(last) = events.last() else {
        return Ok(Step::CaughtUp);
    };
    let to = Checkpoint::of(last);
    projection.apply(conn, row.generation, &events).await?;
    advance(conn, name, &row, to, events.len()).await?;
    Ok(Step::Applied(events.len()))
}

/// How [`run`] paces itself.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Events per transaction (1 to 10,000).
    pub batch: i32,
    /// How long to wait when caught up or busy before looking again.
    pub poll_interval: Duration,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            batch: 500,
            poll_interval: Duration::from_millis(100),
        }
    }
}

/// Runs `projection` until `token` is cancelled, finishing the batch in progress. Database
/// errors are logged and retried after a pause (the batch rolled back, nothing is lost); a
/// projection's own error stops it, since running the same batch again would fail the same way.
pub async fn run<P: Projection>(
    pool: &PgPool,
    projection: &P,
    config: &RunConfig,
    token: CancellationToken,
) -> Result<()> {
    let mut failures = 0u32;
    while !token.is_cancelled() {
        let outcome = match pool.acquire().await {
            Ok(mut conn) => step(&mut conn, projection, config.batch).await,
            Err(e) => Err(Error::from(e)),
        };
        let pause = match outcome {
            Ok(Step::Applied(_)) => {
                failures = 0;
                continue;
            }
            Ok(Step::CaughtUp | Step::Busy) => {
                failures = 0;
                config.poll_interval
            }
            Err(e @ (Error::Projection { .. } | Error::UnknownSubscription { .. })) => return Err(e),
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(subscription = projection.name(), error = %e, "projection batch failed; retrying");
                config.poll_interval * Ord::min(failures, 50)
            }
        };
        tokio::select! {
            _ = token.cancelled() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
    Ok(())
}

/// Applies batches of the live generation until caught up with the horizon (for tests, backfills
/// and one-off catch-ups). Returns the number of events applied; waits while another runner
/// holds the subscription.
pub async fn catch_up<P: Projection>(conn: &mut PgConnection, projection: &P, batch: i32) -> Result<u64> {
    let mut applied = 0u64;
    loop {
        match step(conn, projection, batch).await? {
            Step::Applied(n) => applied += n as u64,
            Step::CaughtUp => return Ok(applied),
            Step::Busy => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// The live generation of a projection's read models (what readers filter on), `None` when the
/// subscription does not exist.
pub async fn live_generation(conn: &mut PgConnection, name: &str) -> Result<Option<i32>> {
    let built = sql::build(Query::select().expr(Func::cust(EventstoreFn::LiveGeneration).arg(Expr::val(name))));
    let (g,): (Option<i32>,) = sql::query_as(built).fetch_one(conn).await?;
    Ok(g)
}

/// Rebuilds `projection` from position 0 into a new generation and makes it live, without
/// stopping readers or the live runner for longer than the last batches. Returns the new
/// generation. Steps, each its own transaction but the swap:
///
/// 1. a row for generation `live + 1` at the start of the log (an abandoned one is retired and
///    started again);
/// 2. batches into it until it reaches the horizon, while the live generation keeps running;
/// 3. the swap: lock the live row (the live runner waits), apply the new generation up to the
///    horizon, make it live;
/// 4. retire the old generation's read models and delete its row.
pub async fn rebuild<P: Projection>(pool: &PgPool, projection: &P, batch: i32) -> Result<i32> {
    let name = projection.name();
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let live = lock_live_waiting(&mut tx, name).await?;
    let generation = live.generation + 1;
    // An abandoned rebuild of the same generation starts again from scratch.
    let stale: Option<(i32,)> = sqlx::query_as(
        "DELETE FROM eventstore.subscriptions WHERE name = $1 AND generation = $2 AND NOT live RETURNING generation",
    )
    .bind(name)
    .bind(generation)
    .fetch_optional(&mut *tx)
    .await?;
    if stale.is_some() {
        projection.retire(&mut tx, generation).await?;
    }
    sqlx::query("INSERT INTO eventstore.subscriptions (name, generation, category, live) VALUES ($1, $2, $3, false)")
        .bind(name)
        .bind(generation)
        .bind(&live.category)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;

    // Catch up beside the live generation.
    loop {
        let mut tx = conn.begin().await?;
        let step = step_in(&mut tx, projection, Some(generation), batch).await?;
        tx.commit().await?;
        if !matches!(step, Step::Applied(_)) {
            break;
        }
    }

    // The swap: with the live row locked no live batch runs; what the new generation lacks is
    // at most what arrived during the catch-up.
    let mut tx = conn.begin().await?;
    let old = lock_live_waiting(&mut tx, name).await?;
    while let Step::Applied(_) = step_in(&mut tx, projection, Some(generation), batch).await? {}
    sqlx::query("UPDATE eventstore.subscriptions SET live = false, updated_at = now() WHERE name = $1 AND generation = $2 AND live")
        .bind(name)
        .bind(old.generation)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE eventstore.subscriptions SET live = true, updated_at = now() WHERE name = $1 AND generation = $2 AND NOT live")
        .bind(name)
        .bind(generation)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(subscription = name, generation, "projection rebuilt and live");

    let mut tx = conn.begin().await?;
    projection.retire(&mut tx, old.generation).await?;
    sqlx::query("DELETE FROM eventstore.subscriptions WHERE name = $1 AND generation = $2 AND NOT live")
        .bind(name)
        .bind(old.generation)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(generation)
}

/// Locks the live row of `name`, waiting for a runner's batch to finish.
async fn lock_live_waiting(conn: &mut PgConnection, name: &str) -> Result<Locked> {
    check_name(name)?;
    let row: Option<Locked> = sqlx::query_as(
        "SELECT generation, category, txid::text::bigint AS txid, position
           FROM eventstore.subscriptions WHERE name = $1 AND live FOR UPDATE",
    )
    .bind(name)
    .fetch_optional(conn)
    .await?;
    row.ok_or_else(|| Error::UnknownSubscription { name: name.to_owned() })
}

/// Where a subscription (or a projection's generation) stands, for operators.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct Status {
    pub name: String,
    pub generation: i32,
    /// `None`: every category.
    pub category: Option<String>,
    /// The generation readers use; a rebuild's generation is not live until it swaps.
    pub live: bool,
    /// The checkpoint: the ordering txid and position of the last event processed.
    pub txid: i64,
    pub position: i64,
    /// Events processed since the generation started.
    pub events: i64,
    /// When the checkpoint last moved.
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// Events after the checkpoint, committed or not yet below the horizon, counted up to
    /// [`BEHIND_COUNT_LIMIT`] (more shows as the limit).
    pub behind: i64,
}

/// How far [`status`] counts the events a subscription has not processed.
pub const BEHIND_COUNT_LIMIT: i64 = 100_000;

/// Every subscription and generation with its checkpoint and how many events wait after it
/// (each counted through its cursor index, up to [`BEHIND_COUNT_LIMIT`]). As
/// `pgstrata_worker` or the owner, which read every tenant's events.
pub async fn status(conn: &mut PgConnection) -> Result<Vec<Status>> {
    Ok(sqlx::query_as(STATUS_SQL)
        .bind(BEHIND_COUNT_LIMIT)
        .fetch_all(conn)
        .await?)
}

/// The SQL of [`status`]: one count per subscription, each branch on its own index.
pub const STATUS_SQL: &str =
    "SELECT s.name, s.generation, s.category, s.live, s.txid::text::bigint AS txid, s.position,
       s.events, s.updated_at,
       CASE WHEN s.category IS NULL
            THEN (SELECT count(*) FROM (SELECT 1 FROM eventstore.events e
                                         WHERE (e.txid, e.position) > (s.txid, s.position) LIMIT $1) b)
            ELSE (SELECT count(*) FROM (SELECT 1 FROM eventstore.events e
                                         WHERE e.category = s.category
                                           AND (e.txid, e.position) > (s.txid, s.position) LIMIT $1) b)
       END AS behind
  FROM eventstore.subscriptions s
 ORDER BY s.name, s.generation";
