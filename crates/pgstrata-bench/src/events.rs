//! The events bench: ingest through the public API beside the raw limit, and the questions at
//! scale.
//!
//! - Ingest: `--events` events (1,000 tenants, realistic properties, the last days) in batches
//!   of `--batch` through `events::ingest::collect` on one connection as the worker (a batch
//!   ledger row, one COPY, the rollup trigger), interleaved batch by batch with three
//!   baselines on the same rows, each into its own copy of the partitioned table (same
//!   partitions, same indexes, no trigger): a plain `COPY` (no dedup: the raw limit), a
//!   multi-row `INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING`, and `COPY` into a
//!   temporary staging table then `INSERT ... SELECT ... ON CONFLICT DO NOTHING` (the two
//!   per-row dedup designs). Then every batch again: a retry writes nothing.
//! - Scale: events are added with `generate_series` up to `--scale` (10M), then the BRIN index
//!   on the time is compared with a btree on the same column, and the daily counts (rollup),
//!   the unique actors (rollup), a partial-day count (raw), an actor's recent events (raw) and a
//!   three-step funnel (raw) are timed, median of `--repeat` runs over different tenants.
//!   `--explain` prints their plans.

use crate::scratch::{Scratch, WORKER_ROLE, create_worker_role, round};
use chrono::{DateTime, Duration as Span, Utc};
use pgstrata::events::{BatchId, NewEvent, ingest};
use pgstrata_core::TenantId;
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use std::error::Error;
use std::fmt::Write as _;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// What `main` passes in.
#[derive(Debug)]
pub struct Options {
    pub url: String,
    pub events: usize,
    pub batch: usize,
    pub tenants: usize,
    pub scale: i64,
    pub repeat: usize,
    pub explain: bool,
    pub keep_database: bool,
}

const GOAL_RATIO: f64 = 0.8;
const BASELINE_LABEL: &str = "plain COPY into the same partitioned table (same indexes), no dedup, no rollups";
const NAMES: [&str; 12] = [
    "page.viewed",
    "page.viewed",
    "page.viewed",
    "signup",
    "project.created",
    "invite.sent",
    "search",
    "page.viewed",
    "export",
    "purchase",
    "settings.changed",
    "logout",
];
const BROWSERS: [&str; 4] = ["Firefox", "Chrome", "Safari", "Edge"];

/// The three baseline tables: `events.events`' columns, constraints, indexes and partitions,
/// without its trigger and policies.
fn baseline_sql(months: &[String]) -> String {
    let mut sql = String::from("CREATE SCHEMA bench;\n");
    for t in ["raw", "unnest", "staged"] {
        let _ = writeln!(
            sql,
            "CREATE TABLE bench.{t} (LIKE events.events INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES) PARTITION BY RANGE (occurred_at);"
        );
        for m in months {
            let _ = writeln!(
                sql,
                "CREATE TABLE bench.{t}_p{} PARTITION OF bench.{t} FOR VALUES FROM ('{m}') TO ('{m}'::date + interval '1 month');",
                m.replace('-', "").get(..6).unwrap_or_default()
            );
        }
    }
    sql
}

/// The `i`th event of the load: tenant `i % tenants`, 20 actors per tenant, evenly spread over
/// the last 7 days in time order (as a collector receives them).
fn event(i: usize, n: usize, tenants: &[TenantId], start: DateTime<Utc>) -> (TenantId, NewEvent) {
    let t = i % tenants.len();
    let k = i / tenants.len();
    let at = start + Span::milliseconds((i as i64) * (7 * 86_400_000 - 60_000) / n.max(1) as i64);
    let props = serde_json::json!({
        "path": format!("/app/projects/{}/board", k % 500),
        "referrer": if k.is_multiple_of(3) { "https://www.google.com/" } else { "" },
        "browser": BROWSERS[k % BROWSERS.len()],
        "os": if k.is_multiple_of(2) { "macOS" } else { "Windows" },
        "plan": if t.is_multiple_of(4) { "enterprise" } else { "pro" },
        "duration_ms": (i * 37) % 5_000,
        "utm": {"source": "newsletter", "campaign": "2026-12"},
    });
    let e = NewEvent::new(NAMES[(i / 7) % NAMES.len()], format!("user-{}", k % 20))
        .id(pgstrata::events::EventId(Uuid::from_u64_pair(
            0x0190_0000_0000_7000,
            0x8000_0000_0000_0000 | i as u64,
        )))
        .at(at)
        .properties(props)
        .session(format!("s-{}-{}", t, k / 20))
        .source("web");
    (tenants[t], e)
}

/// COPY text of the rows, for the baselines (the module encodes its own the same way).
fn copy_text(rows: &[(TenantId, NewEvent)]) -> Vec<u8> {
    fn esc(out: &mut String, v: &str) {
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
        }
    }
    let mut out = String::with_capacity(rows.len() * 300);
    for (t, e) in rows {
        let _ = write!(
            out,
            "{t}\t{}\t{}\t",
            e.id,
            e.occurred_at.format("%Y-%m-%d %H:%M:%S%.6f+00")
        );
        esc(&mut out, &e.name);
        out.push('\t');
        esc(&mut out, &e.actor);
        out.push('\t');
        esc(&mut out, &e.properties.to_string());
        out.push('\t');
        esc(&mut out, e.session_id.as_deref().unwrap_or_default());
        out.push('\t');
        esc(&mut out, e.source.as_deref().unwrap_or_default());
        out.push('\n');
    }
    out.into_bytes()
}

const COLUMNS: &str = "tenant_id, event_id, occurred_at, name, actor, properties, session_id, source";

async fn copy_into(conn: &mut PgConnection, table: &str, data: &[u8]) -> Result<u64, sqlx::Error> {
    let mut copy = conn
        .copy_in_raw(&format!("COPY {table} ({COLUMNS}) FROM STDIN"))
        .await?;
    copy.send(data).await?;
    copy.finish().await
}

async fn unnest_into(conn: &mut PgConnection, rows: &[(TenantId, NewEvent)]) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO bench.unnest (tenant_id, event_id, occurred_at, name, actor, properties, session_id, source)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::text[], $5::text[], $6::jsonb[], $7::text[], $8::text[])
         ON CONFLICT DO NOTHING",
    )
    .bind(rows.iter().map(|(t, _)| t.0).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, e)| e.id.0).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, e)| e.occurred_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, e)| e.name.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, e)| e.actor.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, e)| e.properties.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, e)| e.session_id.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, e)| e.source.clone()).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

async fn staged_into(conn: &mut PgConnection, data: &[u8]) -> Result<u64, sqlx::Error> {
    let mut tx = conn.begin().await?;
    copy_into(&mut tx, "pg_temp.staging", data).await?;
    let done = sqlx::query(
        "INSERT INTO bench.staged (tenant_id, event_id, occurred_at, name, actor, properties, session_id, source)
         SELECT tenant_id, event_id, occurred_at, name, actor, properties, session_id, source FROM pg_temp.staging
         ON CONFLICT DO NOTHING",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(done.rows_affected())
}

#[derive(Debug, Default, Clone, Copy)]
struct Clock {
    elapsed: Duration,
    rows: u64,
}

impl Clock {
    fn rate(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(Debug, Serialize)]
struct Summary {
    bench: &'static str,
    events: usize,
    tenants: usize,
    batch: usize,
    ingest_rows_per_s: u64,
    baseline: &'static str,
    baseline_rows_per_s: u64,
    ratio: f64,
    goal_ratio: f64,
    unnest_on_conflict_rows_per_s: u64,
    staged_on_conflict_rows_per_s: u64,
    retry_rows_per_s: u64,
    scale_events: i64,
    brin_bytes: i64,
    btree_on_time_bytes: i64,
    daily_counts_ms: f64,
    unique_actors_ms: f64,
    partial_day_count_ms: f64,
    recent_events_ms: f64,
    funnel_ms: f64,
}

pub async fn run(opts: &Options) -> Result<(), Box<dyn Error>> {
    let scratch = Scratch::create(&opts.url).await?;
    let outcome = bench(&scratch.options(), opts).await;
    scratch.finish(outcome, opts.keep_database).await
}

async fn bench(db: &PgConnectOptions, opts: &Options) -> Result<(), Box<dyn Error>> {
    let admin = PgPoolOptions::new().max_connections(2).connect_with(db.clone()).await?;
    pgstrata::Backend::builder()
        .with_named("events")?
        .build()?
        .migrate(&admin)
        .await?;
    create_worker_role(&admin).await?;
    let tenants: Vec<TenantId> = (0..opts.tenants).map(|_| TenantId(Uuid::now_v7())).collect();
    sqlx::query(
        "INSERT INTO tenancy.tenants (id, slug, name) SELECT t, 'bench-' || i, 'Bench ' || i
           FROM unnest($1::uuid[]) WITH ORDINALITY AS x(t, i)",
    )
    .bind(tenants.iter().map(|t| t.0).collect::<Vec<_>>())
    .execute(&admin)
    .await?;
    let months: Vec<String> = sqlx::query_scalar("SELECT lower_bound::date::text FROM events.partitions()")
        .fetch_all(&admin)
        .await?;
    pgstrata::core::sql::raw(&baseline_sql(&months)).execute(&admin).await?;

    let mut worker = db.clone().username(WORKER_ROLE).password(WORKER_ROLE).connect().await?;
    let mut plain = db.clone().connect().await?;
    sqlx::raw_sql("CREATE TEMP TABLE staging (LIKE events.events INCLUDING DEFAULTS)")
        .execute(&mut plain)
        .await?;

    let start = Utc::now() - Span::days(7);
    let n = opts.events;
    let (mut ingest_c, mut raw_c, mut unnest_c, mut staged_c, mut retry_c) = (
        Clock::default(),
        Clock::default(),
        Clock::default(),
        Clock::default(),
        Clock::default(),
    );
    let mut ids = Vec::new();
    eprintln!(
        "Ingesting {n} events over {} tenants in batches of {}, interleaved with the baselines...",
        opts.tenants, opts.batch
    );
    let mut first = 0;
    while first < n {
        let last = (first + opts.batch).min(n);
        let rows: Vec<(TenantId, NewEvent)> = (first..last).map(|i| event(i, n, &tenants, start)).collect();
        let id = BatchId::new();
        ids.push((id, first, last));
        // The order of the subjects rotates, so none always runs after another's writes.
        for turn in 0..4 {
            match (turn + first / opts.batch) % 4 {
                0 => {
                    let t = Instant::now();
                    let r = ingest::collect(&mut worker, id, &rows).await?;
                    ingest_c.elapsed += t.elapsed();
                    ingest_c.rows += r.inserted;
                }
                1 => {
                    let t = Instant::now();
                    let data = copy_text(&rows);
                    raw_c.rows += copy_into(&mut plain, "bench.raw", &data).await?;
                    raw_c.elapsed += t.elapsed();
                }
                2 => {
                    let t = Instant::now();
                    unnest_c.rows += unnest_into(&mut plain, &rows).await?;
                    unnest_c.elapsed += t.elapsed();
                }
                _ => {
                    let t = Instant::now();
                    let data = copy_text(&rows);
                    staged_c.rows += staged_into(&mut plain, &data).await?;
                    staged_c.elapsed += t.elapsed();
                    sqlx::raw_sql("TRUNCATE pg_temp.staging").execute(&mut plain).await?;
                }
            }
        }
        first = last;
    }
    for c in [&ingest_c, &raw_c, &unnest_c, &staged_c] {
        if c.rows != n as u64 {
            return Err(format!("a subject stored {} rows of {n}", c.rows).into());
        }
    }
    eprintln!("Retrying every batch...");
    for (id, first, last) in &ids {
        let rows: Vec<(TenantId, NewEvent)> = (*first..*last).map(|i| event(i, n, &tenants, start)).collect();
        let t = Instant::now();
        let r = ingest::collect(&mut worker, *id, &rows).await?;
        retry_c.elapsed += t.elapsed();
        retry_c.rows += rows.len() as u64;
        if r.inserted != 0 {
            return Err(format!("a retried batch stored {} events", r.inserted).into());
        }
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events.events")
        .fetch_one(&admin)
        .await?;
    let counted: i64 = sqlx::query_scalar("SELECT sum(events)::bigint FROM events.daily_counts")
        .fetch_one(&admin)
        .await?;
    if stored != n as i64 || counted != n as i64 {
        return Err(format!("{stored} events stored and {counted} counted, of {n}").into());
    }
    drop(worker);
    sqlx::raw_sql("DROP SCHEMA bench CASCADE").execute(&admin).await?;

    let ratio = ingest_c.rate() / raw_c.rate();
    println!("{:<46} | {:>12} | {:>8}", "ingest of events", "rows/s", "vs raw");
    println!("{}", "-".repeat(72));
    for (label, c) in [
        ("events::ingest::collect (ledger + COPY + rollups)", ingest_c),
        ("raw COPY, no dedup (the limit)", raw_c),
        ("unnest INSERT ON CONFLICT DO NOTHING", unnest_c),
        ("COPY to staging + INSERT ON CONFLICT", staged_c),
        ("a retried batch (nothing written)", retry_c),
    ] {
        println!("{label:<46} | {:>12.0} | {:>8.3}", c.rate(), c.rate() / raw_c.rate());
    }
    println!("goal: ingest >= {GOAL_RATIO} x raw COPY");

    let s = scale(&admin, opts, &tenants).await?;
    plain.close().await?;
    admin.close().await;

    let summary = Summary {
        bench: "events",
        events: n,
        tenants: opts.tenants,
        batch: opts.batch,
        ingest_rows_per_s: ingest_c.rate().round() as u64,
        baseline: BASELINE_LABEL,
        baseline_rows_per_s: raw_c.rate().round() as u64,
        ratio: round(ratio, 3),
        goal_ratio: GOAL_RATIO,
        unnest_on_conflict_rows_per_s: unnest_c.rate().round() as u64,
        staged_on_conflict_rows_per_s: staged_c.rate().round() as u64,
        retry_rows_per_s: retry_c.rate().round() as u64,
        scale_events: s.events,
        brin_bytes: s.brin_bytes,
        btree_on_time_bytes: s.btree_bytes,
        daily_counts_ms: round(s.daily_counts_ms, 3),
        unique_actors_ms: round(s.unique_actors_ms, 3),
        partial_day_count_ms: round(s.partial_ms, 3),
        recent_events_ms: round(s.recent_ms, 3),
        funnel_ms: round(s.funnel_ms, 3),
    };
    println!();
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

struct Scaled {
    events: i64,
    brin_bytes: i64,
    btree_bytes: i64,
    daily_counts_ms: f64,
    unique_actors_ms: f64,
    partial_ms: f64,
    recent_ms: f64,
    funnel_ms: f64,
}

/// Size of an index on `events.events`: the sum over its partitions.
async fn index_bytes(admin: &PgPool, parent: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(sum(pg_relation_size(i.inhrelid)), 0)::bigint FROM pg_inherits i
          WHERE i.inhparent = to_regclass($1)",
    )
    .bind(parent)
    .fetch_one(admin)
    .await
}

async fn scale(admin: &PgPool, opts: &Options, tenants: &[TenantId]) -> Result<Scaled, Box<dyn Error>> {
    let have: i64 = sqlx::query_scalar("SELECT count(*) FROM events.events")
        .fetch_one(admin)
        .await?;
    let add = (opts.scale - have).max(0);
    eprintln!("Adding {add} events with generate_series (90 days back, the rollups kept by the trigger)...");
    sqlx::raw_sql(
        "UPDATE events.settings SET accept_late_days = 120;
         SELECT count(*) FROM events.maintain();",
    )
    .execute(admin)
    .await?;
    // In slices, so that each statement's transition table stays a bounded size.
    let slice = 1_000_000i64;
    let mut done = 0;
    while done < add {
        let k = slice.min(add - done);
        sqlx::query(
            "INSERT INTO events.events (tenant_id, event_id, occurred_at, name, actor, properties, session_id, source)
             SELECT t.id, gen_random_uuid(),
                    now() - interval '90 days' + (g * (interval '83 days' / $2)),
                    (ARRAY['page.viewed', 'page.viewed', 'signup', 'project.created', 'invite.sent', 'search',
                           'page.viewed', 'export', 'purchase', 'logout'])[(g / 7) % 10 + 1],
                    'user-' || (g / $3) % 50,
                    jsonb_build_object('path', '/app/projects/' || g % 500 || '/board', 'browser', 'Firefox',
                                       'plan', 'pro', 'duration_ms', g % 5000),
                    's-' || g / 20, 'web'
               FROM generate_series($1 + 1, $1 + $4) g
               JOIN LATERAL (SELECT ($5::uuid[])[(g % $3) + 1] AS id) t ON true",
        )
        .bind(done)
        .bind(add as f64)
        .bind(tenants.len() as i64)
        .bind(k)
        .bind(tenants.iter().map(|t| t.0).collect::<Vec<_>>())
        .execute(admin)
        .await?;
        done += k;
        eprintln!("  {done} / {add}");
    }
    sqlx::raw_sql("VACUUM ANALYZE events.events, events.daily_counts, events.daily_uniques")
        .execute(admin)
        .await?;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events.events")
        .fetch_one(admin)
        .await?;
    let brin_bytes = index_bytes(admin, "events.events_occurred_brin").await?;
    eprintln!("Building a btree on occurred_at to compare sizes...");
    sqlx::raw_sql("CREATE INDEX bench_occurred_btree ON events.events (occurred_at)")
        .execute(admin)
        .await?;
    let btree_bytes = index_bytes(admin, "events.bench_occurred_btree").await?;
    sqlx::raw_sql("DROP INDEX events.bench_occurred_btree")
        .execute(admin)
        .await?;
    println!(
        "\nat {events} events: BRIN on occurred_at {} kB, a btree on it {} kB ({:.0}x)",
        brin_bytes / 1024,
        btree_bytes / 1024,
        btree_bytes as f64 / brin_bytes.max(1) as f64
    );

    // The questions, as the owner with the tenant written out (the plans of queries.md are the
    // application role's; the bench times the statements the module sends).
    let mut conn = admin.acquire().await?;
    let today = Utc::now().date_naive();
    let questions: [(&str, String); 5] = [
        (
            "daily counts, 30 days (rollup)",
            "SELECT day, name, events FROM events.daily_counts WHERE tenant_id = $1 AND day >= $2::date - 30 AND day < $2::date ORDER BY day, name".into(),
        ),
        (
            "unique actors, 30 days (rollup)",
            "SELECT day, actors FROM events.daily_uniques WHERE tenant_id = $1 AND day >= $2::date - 30 AND day < $2::date ORDER BY day".into(),
        ),
        (
            "partial-day count of a name (raw)",
            "SELECT count(*) FROM events.events WHERE tenant_id = $1 AND name = 'signup' AND occurred_at >= $2::date - 20 + interval '9 hours' AND occurred_at < $2::date - 20 + interval '17 hours'".into(),
        ),
        (
            "an actor's 50 recent events (raw)",
            "SELECT * FROM events.events WHERE tenant_id = $1 AND actor = 'user-7' AND $2::date IS NOT NULL ORDER BY occurred_at DESC, event_id DESC LIMIT 50".into(),
        ),
        (
            "funnel signup > project.created > purchase, 30 days, 7-day window (raw)",
            "SELECT * FROM events.funnel(ARRAY['signup', 'project.created', 'purchase'], $2::date - 37, $2::date - 7, interval '7 days') WHERE $1::uuid IS NOT NULL".into(),
        ),
    ];
    let mut medians = Vec::new();
    println!("{:<72} | {:>10}", "question (one tenant, median)", "ms");
    println!("{}", "-".repeat(86));
    for (label, sql) in &questions {
        if opts.explain {
            let plan: Vec<String> =
                pgstrata::core::sql::trusted_as::<(String,)>(format!("EXPLAIN (ANALYZE, COSTS OFF, BUFFERS) {sql}"))
                    .bind(tenants[0].0)
                    .bind(today)
                    .fetch_all(&mut *conn)
                    .await?
                    .into_iter()
                    .map(|(l,)| l)
                    .collect();
            println!("-- {label}\n{}\n", plan.join("\n"));
        }
        // The funnel runs as the tenant (its SQL reads the context); the others name it.
        let mut times = Vec::new();
        for r in 0..opts.repeat.max(1) {
            let tenant = tenants[(r * 37) % tenants.len()];
            let mut tx = conn.begin().await?;
            sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
                .bind(tenant.to_string())
                .execute(&mut *tx)
                .await?;
            let t = Instant::now();
            pgstrata::core::sql::trusted(sql.clone())
                .bind(tenant.0)
                .bind(today)
                .fetch_all(&mut *tx)
                .await?;
            times.push(t.elapsed());
            tx.rollback().await?;
        }
        times.sort();
        let ms = times[times.len() / 2].as_secs_f64() * 1000.0;
        println!("{label:<72} | {ms:>10.3}");
        medians.push(ms);
    }
    Ok(Scaled {
        events,
        brin_bytes,
        btree_bytes,
        daily_counts_ms: medians[0],
        unique_actors_ms: medians[1],
        partial_ms: medians[2],
        recent_ms: medians[3],
        funnel_ms: medians[4],
    })
}
