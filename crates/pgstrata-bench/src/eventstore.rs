//! The eventstore bench: appends per second with an expected version, on N connections to
//! distinct streams and to one hot stream, and the catch-up rate of a projection, each beside a
//! baseline in the same run.
//!
//! - Appends: `eventstore::append::append` as the application role (the stream's row locked,
//!   the version compared, the events inserted, in the definer function) beside the postgres-es
//!   shape: a plain `INSERT` of the next version into a table keyed by `(stream, version)`,
//!   where the primary key's collision is the conflict. Distinct streams: each connection
//!   appends to its own stream at the version it holds in memory (an aggregate kept loaded).
//!   Hot stream: every connection reads the version, appends at it, and on a conflict reads
//!   again. Interleaved phases of `--seconds`, `--rounds` times; medians reported.
//! - Catch-up: a projection (one upsert per event into a per-stream count, in the batch's
//!   transaction with the checkpoint) replays the whole log through `subscription::catch_up`
//!   (the horizon, the `(txid, position)` cursor, the guarded checkpoint) beside the same
//!   projection fed by a plain `position > $last` cursor, which is what skips late commits.
//! - Loading a long stream: `snapshot::load` of a stream of 100, 1,000 and 10,000 events with
//!   a snapshot 50 events before its end (what a load then reads: the snapshot and 50 events),
//!   folded, beside the same stream folded from its first event.

use crate::scratch::{APP_ROLE, Scratch, WORKER_ROLE, create_app_role, create_worker_role, round};
use pgstrata::eventstore::subscription::{self, Projection};
use pgstrata::eventstore::{Error, Event, ExpectedVersion, NewEvent, append, read};
use pgstrata::{TenantContext, TenantId};
use serde::Serialize;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What `main` passes in.
#[derive(Debug)]
pub struct Options {
    pub url: String,
    pub connections: usize,
    pub seconds: f64,
    pub rounds: usize,
    pub keep_database: bool,
}

const BASELINE_APPEND: &str = "plain INSERT of the next version in the same tenant transaction, (stream, version) primary key as the conflict (postgres-es)";
const BASELINE_CATCH_UP: &str = "the same projection fed by a position > $last cursor (skips late commits)";

/// The baseline's table, and the projection's read model.
const SETUP_SQL: &str = r#"
CREATE SCHEMA bench_naive;
CREATE TABLE bench_naive.events (
    tenant_id uuid NOT NULL, stream text NOT NULL, version bigint NOT NULL,
    position bigint GENERATED ALWAYS AS IDENTITY, type text NOT NULL, data jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, stream, version));
CREATE INDEX ON bench_naive.events (position);
GRANT USAGE ON SCHEMA bench_naive TO pgstrata_app, pgstrata_worker;
GRANT SELECT, INSERT ON bench_naive.events TO pgstrata_app;
CREATE TABLE bench_naive.counts (subject text NOT NULL, tenant_id uuid NOT NULL, stream text NOT NULL,
                                 events bigint NOT NULL, PRIMARY KEY (subject, tenant_id, stream));
CREATE TABLE bench_naive.cursor (subject text PRIMARY KEY, position bigint NOT NULL);
GRANT SELECT, INSERT, UPDATE, DELETE ON bench_naive.counts, bench_naive.cursor TO pgstrata_worker;
-- The position cursor's own index, so the baseline walks the log in order as ours does.
CREATE INDEX bench_position_idx ON eventstore.events (position);
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    Eventstore,
    Naive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Distinct,
    Hot,
}

#[derive(Debug, Serialize)]
struct AppendLine {
    bench: &'static str,
    case: &'static str,
    connections: usize,
    appends_per_s: u64,
    conflicts_per_s: u64,
    baseline: &'static str,
    baseline_appends_per_s: u64,
    baseline_conflicts_per_s: u64,
    ratio: f64,
}

#[derive(Debug, Serialize)]
struct SnapshotLine {
    bench: &'static str,
    case: &'static str,
    events: i64,
    after_snapshot: i64,
    loads_per_s: f64,
    baseline: &'static str,
    baseline_loads_per_s: f64,
    ratio: f64,
}

const BASELINE_SNAPSHOT: &str = "the same stream read and folded from its first event (no snapshot)";

/// Events after the snapshot in the load bench.
const TAIL: i64 = 50;

/// The fold the load bench runs: the sum of the events' amounts.
fn fold(start: i64, events: &[Event]) -> i64 {
    start
        + events
            .iter()
            .map(|e| e.data["amount"].as_i64().unwrap_or(0))
            .sum::<i64>()
}

/// Loads per second of `stream` by the fold `name` (which has a snapshot or not), over `loads`
/// tenant transactions; checks the fold's result.
async fn loads(
    app: &PgPool,
    tenant: TenantId,
    stream: &str,
    name: &str,
    loads: usize,
    expected: i64,
) -> Result<f64, Box<dyn std::error::Error>> {
    use pgstrata::eventstore::snapshot;
    let started = Instant::now();
    for _ in 0..loads {
        let mut tx = pgstrata::begin_tenant(app, &TenantContext::tenant(tenant)).await?;
        let (snap, events) = snapshot::load(&mut tx, stream, name).await?;
        let start = snap.map_or(0, |s| s.state["total"].as_i64().unwrap_or(0));
        let total = fold(start, &events);
        tx.commit().await?;
        if total != expected {
            return Err(format!("{stream}: the fold gave {total}, not {expected}").into());
        }
    }
    Ok(loads as f64 / started.elapsed().as_secs_f64())
}

/// For streams of 100, 1,000 and 10,000 events: loads with a snapshot `TAIL` events before the
/// end beside loads from the first event.
async fn snapshot_lines(app: &PgPool, tenant: TenantId) -> Result<Vec<SnapshotLine>, Box<dyn std::error::Error>> {
    use pgstrata::eventstore::snapshot;
    let mut lines = Vec::new();
    for n in [100_i64, 1_000, 10_000] {
        let stream = format!("long-{n}");
        let mut version = 0;
        while version < n {
            let chunk: Vec<NewEvent> = (version + 1..=(version + 1000).min(n))
                .map(|i| {
                    NewEvent::new(
                        "Added",
                        json!({ "amount": i, "sku": format!("sku-{}", i % 97), "note": "a line of an order" }),
                    )
                })
                .collect();
            let mut tx = pgstrata::begin_tenant(app, &TenantContext::tenant(tenant)).await?;
            let expected = if version == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(version)
            };
            version = append::append(&mut tx, &stream, expected, &chunk)
                .await?
                .last()
                .map_or(version, |a| a.version);
            tx.commit().await?;
        }
        let at = n - TAIL;
        let mut tx = pgstrata::begin_tenant(app, &TenantContext::tenant(tenant)).await?;
        snapshot::save(&mut tx, &stream, "sum.v1", at, &json!({ "total": at * (at + 1) / 2 })).await?;
        tx.commit().await?;
        let expected = n * (n + 1) / 2;
        let repeat = (200_000 / n as usize).clamp(20, 2000);
        // Warm both paths once, then measure each twice, alternating.
        loads(app, tenant, &stream, "sum.v1", 2, expected).await?;
        loads(app, tenant, &stream, "none.v1", 2, expected).await?;
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..2 {
            ours.push(loads(app, tenant, &stream, "sum.v1", repeat, expected).await?);
            theirs.push(loads(app, tenant, &stream, "none.v1", repeat, expected).await?);
        }
        let (o, t) = (median(ours.into_iter()), median(theirs.into_iter()));
        eprintln!("load of {n} events: {o:.0}/s from a snapshot {TAIL} events back, {t:.0}/s from the first event");
        lines.push(SnapshotLine {
            bench: "eventstore",
            case: "load_stream_with_snapshot",
            events: n,
            after_snapshot: TAIL,
            loads_per_s: round(o, 1),
            baseline: BASELINE_SNAPSHOT,
            baseline_loads_per_s: round(t, 1),
            ratio: round(o / t.max(0.001), 2),
        });
    }
    Ok(lines)
}

#[derive(Debug, Serialize)]
struct CatchUpLine {
    bench: &'static str,
    case: &'static str,
    events: u64,
    events_per_s: u64,
    baseline: &'static str,
    baseline_events_per_s: u64,
    ratio: f64,
}

pub async fn run(opts: &Options) -> Result<(), Box<dyn std::error::Error>> {
    let scratch = Scratch::create(&opts.url).await?;
    let outcome = run_in(opts, &scratch).await;
    scratch.finish(outcome, opts.keep_database).await
}

async fn run_in(opts: &Options, scratch: &Scratch) -> Result<(), Box<dyn std::error::Error>> {
    let admin = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(scratch.options())
        .await?;
    pgstrata::Backend::builder()
        .with(&pgstrata::eventstore::MODULE)
        .build()?
        .migrate(&admin)
        .await?;
    create_app_role(&admin).await?;
    create_worker_role(&admin).await?;
    sqlx::raw_sql(SETUP_SQL).execute(&admin).await?;
    let tenant = TenantId::new();
    sqlx::query("INSERT INTO tenancy.tenants (id, slug, name) VALUES ($1, 'bench', 'Bench')")
        .bind(tenant.0)
        .execute(&admin)
        .await?;
    let app = PgPoolOptions::new()
        .max_connections(opts.connections as u32)
        .connect_with(scratch.options().username(APP_ROLE).password(APP_ROLE))
        .await?;
    let worker = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(scratch.options().username(WORKER_ROLE).password(WORKER_ROLE))
        .await?;

    // Appends, interleaved rounds.
    let phase = Duration::from_secs_f64(opts.seconds);
    let mut lines = Vec::new();
    for case in [Case::Distinct, Case::Hot] {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for r in 0..opts.rounds {
            for subject in [Subject::Eventstore, Subject::Naive] {
                let (appends, conflicts) = appends(&app, tenant, subject, case, r, opts.connections, phase).await?;
                let rate = (
                    appends as f64 / phase.as_secs_f64(),
                    conflicts as f64 / phase.as_secs_f64(),
                );
                eprintln!(
                    "{case:?} {subject:?} round {r}: {:.0} appends/s, {:.0} conflicts/s",
                    rate.0, rate.1
                );
                match subject {
                    Subject::Eventstore => ours.push(rate),
                    Subject::Naive => theirs.push(rate),
                }
            }
        }
        let (a, c) = (median(ours.iter().map(|r| r.0)), median(ours.iter().map(|r| r.1)));
        let (ba, bc) = (median(theirs.iter().map(|r| r.0)), median(theirs.iter().map(|r| r.1)));
        lines.push(AppendLine {
            bench: "eventstore",
            case: match case {
                Case::Distinct => "append_distinct_streams",
                Case::Hot => "append_hot_stream",
            },
            connections: opts.connections,
            appends_per_s: a.round() as u64,
            conflicts_per_s: c.round() as u64,
            baseline: BASELINE_APPEND,
            baseline_appends_per_s: ba.round() as u64,
            baseline_conflicts_per_s: bc.round() as u64,
            ratio: round(a / ba.max(1.0), 2),
        });
    }

    // Loading long streams with and without a snapshot.
    let snapshots = snapshot_lines(&app, tenant).await?;

    // Catch-up over the log the appends left (the baseline's log is the same size).
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM eventstore.events")
        .fetch_one(&admin)
        .await?;
    let mut conn = worker.acquire().await?;
    subscription::create(&mut conn, "bench.counts", None).await?;
    // The subscription reads below the xmin horizon: wait until every appending transaction
    // has ended (an open transaction elsewhere on the server would hold it back; run the bench
    // on a server of its own, without DATABASE_URL, for a clean figure).
    let waited = Instant::now();
    while !sqlx::query_scalar::<_, bool>(
        "SELECT coalesce(max(txid) < pg_snapshot_xmin(pg_current_snapshot()), true) FROM eventstore.events",
    )
    .fetch_one(&mut *conn)
    .await?
    {
        if waited.elapsed() > Duration::from_secs(60) {
            return Err(
                "an open transaction on this server holds the xmin horizon back: run the bench on a server of its own"
                    .into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    let applied = subscription::catch_up(&mut conn, &Counts, 1000).await?;
    let ours = applied as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let naive = naive_catch_up(&mut conn).await?;
    let theirs = naive as f64 / started.elapsed().as_secs_f64();
    if applied != events as u64 {
        return Err(format!("the projection applied {applied} of {events} events").into());
    }
    eprintln!(
        "catch-up: {ours:.0} events/s through the subscription, {theirs:.0} events/s by position ({naive} events)"
    );
    drop(conn);

    println!(
        "{:<26} {:>12} {:>12} {:>14} {:>14}",
        "case", "per s", "conflicts/s", "baseline/s", "baseline c/s"
    );
    for l in &lines {
        println!(
            "{:<26} {:>12} {:>12} {:>14} {:>14}",
            l.case, l.appends_per_s, l.conflicts_per_s, l.baseline_appends_per_s, l.baseline_conflicts_per_s
        );
    }
    println!(
        "{:<26} {:>12} {:>12} {:>14}",
        "projection_catch_up",
        ours.round(),
        "",
        theirs.round()
    );
    for l in &lines {
        println!("{}", serde_json::to_string(l)?);
    }
    for l in &snapshots {
        println!("{}", serde_json::to_string(l)?);
    }
    println!(
        "{}",
        serde_json::to_string(&CatchUpLine {
            bench: "eventstore",
            case: "projection_catch_up",
            events: applied,
            events_per_s: ours.round() as u64,
            baseline: BASELINE_CATCH_UP,
            baseline_events_per_s: theirs.round() as u64,
            ratio: round(ours / theirs.max(1.0), 2),
        })?
    );
    app.close().await;
    worker.close().await;
    admin.close().await;
    Ok(())
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// `connections` tasks append for `phase`; returns (appends, conflicts).
async fn appends(
    app: &PgPool,
    tenant: TenantId,
    subject: Subject,
    case: Case,
    round: usize,
    connections: usize,
    phase: Duration,
) -> Result<(u64, u64), Box<dyn std::error::Error>> {
    let stop = Arc::new(AtomicBool::new(false));
    let (done, conflicts) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (app, stop, done, conflicts) = (app.clone(), stop.clone(), done.clone(), conflicts.clone());
        let tag = match subject {
            Subject::Eventstore => "es",
            Subject::Naive => "naive",
        };
        let stream = match case {
            Case::Distinct => format!("bench-{tag}{round}x{c}"),
            Case::Hot => format!("hot-{tag}{round}"),
        };
        tasks.push(tokio::spawn(async move {
            let mut conn = app.acquire().await?;
            // The version this connection holds in memory (distinct streams only).
            let mut held = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let ok = match (subject, case) {
                    (Subject::Eventstore, _) => es_append(&mut conn, tenant, &stream, case, &mut held).await?,
                    (Subject::Naive, _) => naive_append(&mut conn, tenant, &stream, case, &mut held).await?,
                };
                if ok {
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    conflicts.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    tokio::time::sleep(phase).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?.map_err(|e| e.to_string())?;
    }
    Ok((done.load(Ordering::Relaxed), conflicts.load(Ordering::Relaxed)))
}

fn event(n: i64) -> NewEvent {
    NewEvent::new("Incremented", json!({"n": n, "note": "an order line moved one step"}))
}

/// One append through the module; `false` on a wrong expected version.
async fn es_append(
    conn: &mut PgConnection,
    tenant: TenantId,
    stream: &str,
    case: Case,
    held: &mut i64,
) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    let mut tx = pgstrata::begin_tenant(&mut *conn, &TenantContext::tenant(tenant)).await?;
    let version = match case {
        Case::Distinct => *held,
        Case::Hot => read::stream_version(&mut tx, stream).await?,
    };
    let expected = if version == 0 {
        ExpectedVersion::NoStream
    } else {
        ExpectedVersion::Exact(version)
    };
    match append::append(&mut tx, stream, expected, &[event(version + 1)]).await {
        Ok(_) => {
            tx.commit().await?;
            *held = version + 1;
            Ok(true)
        }
        Err(Error::WrongExpectedVersion { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The baseline's append: the next version inserted, the primary key as the conflict.
async fn naive_append(
    conn: &mut PgConnection,
    tenant: TenantId,
    stream: &str,
    case: Case,
    held: &mut i64,
) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    // The same tenant transaction as the module's side, so the difference is the append.
    let mut tx = pgstrata::begin_tenant(&mut *conn, &TenantContext::tenant(tenant)).await?;
    let version = match case {
        Case::Distinct => *held,
        Case::Hot => sqlx::query_scalar::<_, Option<i64>>(
            "SELECT max(version) FROM bench_naive.events WHERE tenant_id = $1 AND stream = $2",
        )
        .bind(tenant.0)
        .bind(stream)
        .fetch_one(&mut *tx)
        .await?
        .unwrap_or(0),
    };
    let inserted = sqlx::query(
        "INSERT INTO bench_naive.events (tenant_id, stream, version, type, data) VALUES ($1, $2, $3, 'Incremented', $4)",
    )
    .bind(tenant.0)
    .bind(stream)
    .bind(version + 1)
    .bind(json!({"n": version + 1, "note": "an order line moved one step"}))
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {
            tx.commit().await?;
            *held = version + 1;
            Ok(true)
        }
        Err(e)
            if e.as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == "23505") =>
        {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// The projection both sides feed: one upsert per event into a per-stream count.
#[derive(Debug)]
struct Counts;

async fn count(conn: &mut PgConnection, subject: &str, events: &[Event]) -> Result<(), sqlx::Error> {
    for e in events {
        sqlx::query(
            "INSERT INTO bench_naive.counts (subject, tenant_id, stream, events) VALUES ($1, $2, $3, 1)
             ON CONFLICT (subject, tenant_id, stream) DO UPDATE SET events = counts.events + 1",
        )
        .bind(subject)
        .bind(e.tenant_id.0)
        .bind(&e.stream)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

impl Projection for Counts {
    fn name(&self) -> &str {
        "bench.counts"
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        _generation: i32,
        events: &[Event],
    ) -> pgstrata::eventstore::Result<()> {
        Ok(count(conn, "eventstore", events).await?)
    }
}

/// The same projection fed by `position > $last`, its cursor moved in the batch's transaction.
async fn naive_catch_up(conn: &mut PgConnection) -> Result<u64, Box<dyn std::error::Error>> {
    sqlx::query("INSERT INTO bench_naive.cursor (subject, position) VALUES ('naive', 0)")
        .execute(&mut *conn)
        .await?;
    let mut applied = 0u64;
    loop {
        let mut tx = conn.begin().await?;
        let last: i64 =
            sqlx::query_scalar("SELECT position FROM bench_naive.cursor WHERE subject = 'naive' FOR UPDATE")
                .fetch_one(&mut *tx)
                .await?;
        let events: Vec<Event> = sqlx::query_as(
            "SELECT tenant_id, event_id, stream, category, version, position, txid::text::bigint AS txid, type, data,
                    metadata, causation_id, correlation_id, actor_id, request_id, recorded_at
               FROM eventstore.events WHERE position > $1 ORDER BY position LIMIT 1000",
        )
        .bind(last)
        .fetch_all(&mut *tx)
        .await?;
        let Some(end) = events.last().map(|e| e.position) else {
            return Ok(applied);
        };
        count(&mut tx, "naive", &events).await?;
        sqlx::query("UPDATE bench_naive.cursor SET position = $1 WHERE subject = 'naive'")
            .bind(end)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        applied += events.len() as u64;
    }
}
