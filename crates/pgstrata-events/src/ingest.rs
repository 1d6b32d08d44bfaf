//! Writing events: one at a time ([`track`]) or in batches through COPY ([`ingest`] in a
//! tenant's transaction, [`collect`] across tenants for an ingest service), deduplicated by
//! event id and safe to retry.
//!
//! A batch is recorded in `events.batches` first (`events.begin_batch`). A batch id already
//! there is a retry: nothing is sent or written and the report says
//! [`IngestOutcome::Duplicate`]. A fresh batch is sent with one `COPY ... FROM STDIN` into a
//! temporary table of the session ([`INBOX_SQL`]: PostgreSQL refuses COPY into a table whose
//! row-level security applies to the caller), then moved by one plain `INSERT ... SELECT`
//! under the policies, with no per-row dedup check. Should some of its events be stored already
//! (the client batched them again under a new id, or two batches overlap), the primary key
//! `(tenant_id, occurred_at, event_id)` refuses the move, which is undone to a savepoint and
//! made again with `ON CONFLICT DO NOTHING` ([`IngestOutcome::Merged`]). Either way each event
//! is stored once and the rollups count it once (D-125).
//!
//! Every event is checked before anything is sent, the time window against the server's clock
//! that `begin_batch` returns; the first bad event fails the whole batch with
//! [`Error::InvalidEvent`] naming its position and id, and nothing of it is written (D-126).

use crate::error::{Error, Result};
use crate::event::NewEvent;
use crate::functions::EventsFn;
use crate::generated::Events;
use crate::ids::{BatchId, EventId};
use chrono::{DateTime, Utc};
use pgstrata_core::sql::{self, Built, Rows};
use pgstrata_core::{DbError, TenantId, TenantTx};
use sea_query::{Asterisk, Expr, ExprTrait, Func, OnConflict, Query};
use sqlx::{Acquire, PgConnection};
use std::fmt::Write as _;

/// Most events in one batch: a batch is checked and encoded in memory before it is sent.
pub const MAX_BATCH: usize = 100_000;

/// The batch's rows go first to a temporary table of the session: PostgreSQL refuses `COPY
/// FROM` into a table whose row-level security applies to the caller (0A000), which is every
/// pgstrata role, so COPY fills this table (no WAL, no index, no policy) and one
/// `INSERT ... SELECT` moves the rows under the policies. Dropped at the end of the transaction
/// that created it, so a transaction pooler never hands it to another client.
pub const INBOX_SQL: &str = "CREATE TEMP TABLE IF NOT EXISTS events_inbox (tenant_id uuid, event_id uuid, \
    occurred_at timestamptz, name text, actor text, properties jsonb, session_id text, source text) ON COMMIT DROP";

/// The COPY of a batch into the inbox.
pub const COPY_SQL: &str = "COPY pg_temp.events_inbox (tenant_id, event_id, occurred_at, name, actor, properties, session_id, source) FROM STDIN";

/// Empties the inbox once its rows are moved (a second batch in the same transaction reuses it).
pub const CLEAR_INBOX_SQL: &str = "TRUNCATE pg_temp.events_inbox";

/// The session's temporary inbox, for `merge_stmt`.
#[derive(Debug, Clone, Copy)]
struct Inbox;

impl sea_query::Iden for Inbox {
    fn unquoted(&self) -> &str {
        "events_inbox"
    }
}

#[derive(Debug, Clone, Copy)]
struct PgTemp;

impl sea_query::Iden for PgTemp {
    fn unquoted(&self) -> &str {
        "pg_temp"
    }
}

const COLUMNS: [Events; 8] = [
    Events::TenantId,
    Events::EventId,
    Events::OccurredAt,
    Events::Name,
    Events::Actor,
    Events::Properties,
    Events::SessionId,
    Events::Source,
];

/// How a batch was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IngestOutcome {
    /// A fresh batch, sent with COPY and moved in whole.
    Copied,
    /// A fresh batch holding events stored already: moved with `ON CONFLICT DO NOTHING`,
    /// those skipped.
    Merged,
    /// A retry of a batch ingested before: nothing written.
    Duplicate,
}

/// What [`ingest`] or [`collect`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct IngestReport {
    pub batch: BatchId,
    pub outcome: IngestOutcome,
    /// Events in the batch.
    pub received: usize,
    /// Events stored by this call (the others were stored before).
    pub inserted: u64,
}

/// Tracks one event in the transaction's tenant, in the caller's transaction (so it commits
/// with the business write). Returns whether it was stored: `false` when an event with its id
/// and time was stored before.
pub async fn track(tx: &mut TenantTx<'_>, event: &NewEvent) -> Result<bool> {
    let built = track_stmt(tx.tenant_id(), event)?;
    match sql::query(built).execute(&mut **tx).await {
        Ok(done) => Ok(done.rows_affected() == 1),
        // One event: the month its time names has no partition.
        Err(e) => Err(match Error::from(e) {
            Error::NoPartition { message } => Error::InvalidEvent {
                index: None,
                event_id: Some(event.id),
                field: "occurred_at",
                reason: format!(
                    "occurred at {}, in a month with no partition: outside the accepted window, \
                     or partitions were not created ahead ({message})",
                    event.occurred_at
                ),
            },
            other => other,
        }),
    }
}

/// The SQL of [`track`]: the event checked, inserted unless stored already.
///
/// ```
/// use pgstrata_events::{NewEvent, ingest::track_stmt};
/// let (sql, _) = track_stmt(pgstrata_core::TenantId::new(), &NewEvent::new("signup", "user-1")).unwrap();
/// assert_eq!(
///     sql,
///     r#"INSERT INTO "events"."events" ("tenant_id", "event_id", "occurred_at", "name", "actor", "properties", "session_id", "source") VALUES ($1, $2, $3, $4, $5, CAST($6 AS jsonb), $7, $8) ON CONFLICT  DO NOTHING"#
/// );
/// ```
pub fn track_stmt(tenant: TenantId, event: &NewEvent) -> Result<Built> {
    let json = event.checked(None)?;
    insert_stmt(&[(tenant, event, json)])
}

/// Multi-row `INSERT ... ON CONFLICT DO NOTHING` of checked events (their properties as JSON).
fn insert_stmt(rows: &[(TenantId, &NewEvent, String)]) -> Result<Built> {
    let mut q = Query::insert();
    q.into_table(Events::qualified()).columns(COLUMNS);
    for (tenant, e, json) in rows {
        q.values([
            Expr::val(*tenant),
            Expr::val(e.id),
            Expr::val(e.occurred_at),
            Expr::val(e.name.as_str()),
            Expr::val(e.actor.as_str()),
            // Bound as text and cast, so the JSON checked is the JSON stored.
            Expr::val(json.as_str()).cast_as("jsonb"),
            Expr::val(e.session_id.clone()),
            Expr::val(e.source.clone()),
        ])
        .map_err(|e| Error::InvalidField {
            field: "events",
            reason: e.to_string(),
        })?;
    }
    q.on_conflict(OnConflict::new().do_nothing().to_owned());
    Ok(sql::build(&q))
}

/// The move of a batch from the inbox into `events.events`: plain for a fresh batch (no
/// per-row arbiter check), `ON CONFLICT DO NOTHING` when the primary key refused the plain one.
///
/// ```
/// let (sql, _) = pgstrata_events::ingest::merge_stmt(true);
/// assert_eq!(
///     sql,
///     r#"INSERT INTO "events"."events" ("tenant_id", "event_id", "occurred_at", "name", "actor", "properties", "session_id", "source") SELECT "tenant_id", "event_id", "occurred_at", "name", "actor", "properties", "session_id", "source" FROM "pg_temp"."events_inbox" ON CONFLICT  DO NOTHING"#
/// );
/// ```
pub fn merge_stmt(skip_stored: bool) -> Built {
    let mut q = Query::insert();
    q.into_table(Events::qualified()).columns(COLUMNS);
    // The select names exactly the columns of the insert, so this cannot fail.
    let _ = q.select_from(Query::select().columns(COLUMNS).from((PgTemp, Inbox)).to_owned());
    if skip_stored {
        q.on_conflict(OnConflict::new().do_nothing().to_owned());
    }
    sql::build(&q)
}

/// Ingests a batch of the transaction's tenant (1 to [`MAX_BATCH`] events) with COPY, in the
/// caller's transaction. Safe to retry with the same `batch` id: a retry writes nothing. Run it
/// in a transaction of its own for a batch from an API endpoint, so that a failed batch leaves
/// nothing (it undoes its own writes to a savepoint either way).
pub async fn ingest(tx: &mut TenantTx<'_>, batch: BatchId, events: &[NewEvent]) -> Result<IngestReport> {
    let tenant = tx.tenant_id();
    let rows: Vec<(TenantId, &NewEvent)> = events.iter().map(|e| (tenant, e)).collect();
    write_batch(tx, batch, rows).await
}

/// Ingests a batch that spans tenants, for an ingest service that receives many tenants'
/// events (a collector) or a backfill, on a connection of `pgstrata_worker`, whose policy lets
/// it insert events and batches of any tenant (and read none). The same rules as [`ingest`]:
/// a retried `batch` writes nothing. Runs in a transaction of its own unless `conn` is in one.
pub async fn collect(conn: &mut PgConnection, batch: BatchId, events: &[(TenantId, NewEvent)]) -> Result<IngestReport> {
    let rows: Vec<(TenantId, &NewEvent)> = events.iter().map(|(t, e)| (*t, e)).collect();
    write_batch(conn, batch, rows).await
}

/// The SQL of recording a batch: its tenants with their event counts.
///
/// ```
/// use pgstrata_events::{BatchId, ingest::begin_batch_stmt};
/// let (sql, _) = begin_batch_stmt(BatchId::new(), &[pgstrata_core::TenantId::new()], &[3]);
/// assert_eq!(sql, r#"SELECT * FROM events.begin_batch($1, CAST($2 AS uuid[]), CAST($3 AS integer[])) AS "r""#);
/// ```
pub fn begin_batch_stmt(batch: BatchId, tenants: &[TenantId], counts: &[i32]) -> Built {
    let tenants: Vec<String> = tenants.iter().map(ToString::to_string).collect();
    let f = Func::cust(EventsFn::BeginBatch).args([
        Expr::val(batch),
        Expr::val(pg_array(&tenants)).cast_as("uuid[]"),
        Expr::val(pg_array(&counts.iter().map(ToString::to_string).collect::<Vec<_>>())).cast_as("integer[]"),
    ]);
    sql::build(Query::select().column(Asterisk).from_function(f, Rows))
}

/// An array literal of plain elements (uuids, integers: nothing to quote).
fn pg_array(items: &[String]) -> String {
    format!("{{{}}}", items.join(","))
}

#[derive(sqlx::FromRow)]
struct Begun {
    fresh: bool,
    server_now: DateTime<Utc>,
    accept_late_s: f64,
    accept_early_s: f64,
}

async fn write_batch(
    conn: &mut PgConnection,
    batch: BatchId,
    rows: Vec<(TenantId, &NewEvent)>,
) -> Result<IngestReport> {
    if rows.is_empty() || rows.len() > MAX_BATCH {
        return Err(Error::InvalidField {
            field: "events",
            reason: format!("a batch holds 1 to {MAX_BATCH} events, got {}", rows.len()),
        });
    }
    let received = rows.len();
    let mut jsons = Vec::with_capacity(rows.len());
    for (i, (_, e)) in rows.iter().enumerate() {
        jsons.push(e.checked(Some(i))?);
    }
    // The position each event had in the caller's batch, for the errors.
    let original: Vec<EventId> = rows.iter().map(|(_, e)| e.id).collect();
    let index_of = |id: EventId| original.iter().position(|o| *o == id);
    // Key order: concurrent overlapping batches take the primary key's locks in the same order,
    // and the btree is filled left to right.
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| {
        let (ta, ea) = rows[a];
        let (tb, eb) = rows[b];
        (ta, ea.occurred_at, ea.id).cmp(&(tb, eb.occurred_at, eb.id))
    });
    let sorted: Vec<(TenantId, &NewEvent, String)> = order
        .iter()
        .map(|&i| (rows[i].0, rows[i].1, std::mem::take(&mut jsons[i])))
        .collect();

    let mut tenants: Vec<TenantId> = Vec::new();
    let mut counts: Vec<i32> = Vec::new();
    for (t, _, _) in &sorted {
        if tenants.last() == Some(t) {
            if let Some(c) = counts.last_mut() {
                *c += 1;
            }
        } else {
            tenants.push(*t);
            counts.push(1);
        }
    }

    // Everything from here is undone to this savepoint (or transaction) on failure.
    let mut sp = conn.begin().await?;
    let result = async {
        let begun: Begun = sql::query_as(begin_batch_stmt(batch, &tenants, &counts))
            .fetch_one(&mut *sp)
            .await?;
        if !begun.fresh {
            return Ok((IngestOutcome::Duplicate, 0));
        }
        let earliest = begun.server_now - seconds(begun.accept_late_s);
        let latest = begun.server_now + seconds(begun.accept_early_s);
        if let Some((_, e, _)) = sorted
            .iter()
            .find(|(_, e, _)| e.occurred_at < earliest || e.occurred_at > latest)
        {
            return Err(Error::InvalidEvent {
                index: index_of(e.id),
                event_id: Some(e.id),
                field: "occurred_at",
                reason: format!(
                    "occurred at {}, outside the accepted window {earliest} to {latest} (the server's clock)",
                    e.occurred_at
                ),
            });
        }
        let data = encode_copy(&sorted);
        sqlx::raw_sql(INBOX_SQL).execute(&mut *sp).await?;
        copy(&mut sp, &data).await?;
        let mut plain = sp.begin().await?;
        let moved = sql::query(merge_stmt(false)).execute(&mut *plain).await;
        let outcome = match moved {
            Ok(done) => {
                plain.commit().await?;
                (IngestOutcome::Copied, done.rows_affected())
            }
            Err(e) => {
                plain.rollback().await?;
                match Error::from(e) {
                    Error::Db(DbError::Conflict { ref constraint, .. }) if is_primary_key(constraint) => {
                        let done = sql::query(merge_stmt(true)).execute(&mut *sp).await?;
                        (IngestOutcome::Merged, done.rows_affected())
                    }
                    other => return Err(other),
                }
            }
        };
        sqlx::raw_sql(CLEAR_INBOX_SQL).execute(&mut *sp).await?;
        Ok(outcome)
    }
    .await;
    match result {
        Ok((outcome, inserted)) => {
            sp.commit().await?;
            tracing::debug!(%batch, ?outcome, received, inserted, "events batch");
            Ok(IngestReport {
                batch,
                outcome,
                received,
                inserted,
            })
        }
        Err(e) => {
            sp.rollback().await?;
            Err(e.in_batch(index_of))
        }
    }
}

/// The primary key of `events.events`, as a unique violation names it: the partition's own
/// index (`events_p202612_pkey`), or the parent's.
fn is_primary_key(constraint: &str) -> bool {
    constraint == "events_pkey" || (constraint.starts_with("events_p") && constraint.ends_with("_pkey"))
}

fn seconds(s: f64) -> chrono::Duration {
    chrono::Duration::milliseconds((s * 1000.0) as i64)
}

async fn copy(conn: &mut PgConnection, data: &[u8]) -> Result<u64> {
    let mut copy = conn.copy_in_raw(COPY_SQL).await?;
    // The connection streams it in chunks of its own.
    if let Err(e) = copy.send(data).await {
        let _ = copy.abort("sending the batch failed").await;
        return Err(e.into());
    }
    Ok(copy.finish().await?)
}

/// The rows in COPY's text format: tab-separated, `\N` for NULL, backslash escapes.
fn encode_copy(rows: &[(TenantId, &NewEvent, String)]) -> Vec<u8> {
    let mut out = String::with_capacity(rows.len() * 256);
    for (tenant, e, json) in rows {
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "{}\t{}\t{}\t",
            tenant,
            e.id,
            e.occurred_at.format("%Y-%m-%d %H:%M:%S%.6f+00")
        );
        escape(&mut out, &e.name);
        out.push('\t');
        escape(&mut out, &e.actor);
        out.push('\t');
        escape(&mut out, json);
        out.push('\t');
        optional(&mut out, e.session_id.as_deref());
        out.push('\t');
        optional(&mut out, e.source.as_deref());
        out.push('\n');
    }
    out.into_bytes()
}

fn optional(out: &mut String, value: Option<&str>) {
    match value {
        Some(v) => escape(out, v),
        None => out.push_str("\\N"),
    }
}

fn escape(out: &mut String, value: &str) {
    if !value.contains(['\\', '\t', '\n', '\r']) {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_what_copy_reads_as_syntax() {
        let e = NewEvent::new("a\tb", "c\\d").session("x\ny");
        let data = encode_copy(&[(TenantId::new(), &e, "{\"k\": \"\\\\\"}".into())]);
        let line = String::from_utf8(data).unwrap_or_default();
        let fields: Vec<&str> = line.trim_end_matches('\n').split('\t').collect();
        assert_eq!(fields.len(), 8, "{line}");
        assert_eq!(fields[3], "a\\tb");
        assert_eq!(fields[4], "c\\\\d");
        assert_eq!(fields[5], "{\"k\": \"\\\\\\\\\"}");
        assert_eq!(fields[6], "x\\ny");
        assert_eq!(fields[7], "\\N");
    }
}
