//! The billing bench: Stripe webhook deliveries applied per second through
//! `pgstrata_billing::process_webhook` (signature, ledger claim, guarded upserts, links),
//! sequentially and on N connections at once, beside a naive handler that verifies the same
//! signature and upserts the payload by object id with no ledger and no guard.
//!
//! The events are the billing crate's lifecycle fixtures (19 events of one subscription, from
//! product creation to cancellation), given fresh ids and a tenant per customer for every
//! run, delivered in Stripe's order per customer. Both run as a LOGIN role that is a member of
//! `pgstrata_billing_sync` only, in a scratch database dropped at the end.

use crate::scratch::{Scratch, round};
use pgstrata::TenantId;
use pgstrata::billing::signature::sign;
use pgstrata::billing::{Outcome, Verifier, fixtures, process_webhook};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What `main` passes in.
#[derive(Debug)]
pub struct Options {
    pub url: String,
    pub customers: usize,
    pub concurrency: usize,
}

const SYNC_LOGIN: &str = "pgstrata_bench_billing";
const SECRET: &str = "whsec_pgstrata_bench";
const BASELINE_LABEL: &str = "naive upsert of the payload by object id, no ledger, no guard";

/// The naive handler's one statement: last write wins, duplicates and stale events included.
const NAIVE_SQL: &str = "INSERT INTO bench_naive.stripe_objects (id, type, data) \
     VALUES (coalesce($1::jsonb -> 'data' -> 'object' ->> 'id', ($1::jsonb -> 'data' -> 'object' ->> 'customer') || '#entitlements'), \
             $1::jsonb ->> 'type', $1::jsonb -> 'data' -> 'object') \
     ON CONFLICT (id) DO UPDATE SET type = EXCLUDED.type, data = EXCLUDED.data, updated_at = now()";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    Pgstrata,
    Naive,
}

/// One delivery: body and Stripe-Signature header, as they arrive over HTTP.
type Delivery = (Vec<u8>, String);

#[derive(Debug, Serialize)]
struct Summary {
    bench: &'static str,
    events: usize,
    events_per_s_sequential: u64,
    events_per_s_concurrent: u64,
    concurrency: usize,
    baseline: &'static str,
    baseline_events_per_s_sequential: u64,
    baseline_events_per_s_concurrent: u64,
    ratio_sequential: f64,
    ratio_concurrent: f64,
}

/// Creates the scratch database, runs the bench in it, and drops it whatever happened.
pub async fn run(opts: &Options) -> Result<(), Box<dyn Error>> {
    let scratch = Scratch::create(&opts.url).await?;
    let outcome = bench(&scratch.options(), opts).await;
    scratch.finish(outcome, false).await
}

async fn bench(db: &PgConnectOptions, opts: &Options) -> Result<(), Box<dyn Error>> {
    let admin = PgPoolOptions::new().max_connections(2).connect_with(db.clone()).await?;
    pgstrata::Backend::all()?.migrate(&admin).await?;
    pgstrata_core::testing::ensure_login_role(
        &mut *admin.acquire().await?,
        "pgstrata_bench_billing",
        "IN ROLE pgstrata_billing_sync",
    )
    .await?;
    sqlx::raw_sql(
        "CREATE SCHEMA bench_naive;
         CREATE TABLE bench_naive.stripe_objects (id text PRIMARY KEY, type text NOT NULL, data jsonb NOT NULL,
                                                  updated_at timestamptz NOT NULL DEFAULT now());
         GRANT USAGE ON SCHEMA bench_naive TO pgstrata_bench_billing;
         GRANT SELECT, INSERT, UPDATE ON bench_naive.stripe_objects TO pgstrata_bench_billing;",
    )
    .execute(&admin)
    .await?;

    let lifecycle: Vec<Value> = fixtures::lifecycle()?.into_iter().map(|(_, event)| event).collect();
    let verifier = Verifier::new([SECRET])?.with_tolerance(Duration::from_secs(24 * 3600));
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(opts.concurrency)?)
        .connect_with(db.clone().username(SYNC_LOGIN).password(SYNC_LOGIN))
        .await?;
    let mut open = Vec::new();
    for _ in 0..opts.concurrency {
        open.push(pool.acquire().await?);
    }
    drop(open);

    // Warm-up (statement caches, PL/pgSQL plans), not measured.
    let warm = deliveries(&admin, &lifecycle, "w", 20).await?;
    drive(&pool, &verifier, Subject::Pgstrata, warm.clone(), 1).await?;
    drive(&pool, &verifier, Subject::Naive, warm, 1).await?;

    let mut rates = Vec::new();
    for (label, subject, workers) in [
        ("pgstrata sequential", Subject::Pgstrata, 1),
        ("naive sequential", Subject::Naive, 1),
        ("pgstrata concurrent", Subject::Pgstrata, opts.concurrency),
        ("naive concurrent", Subject::Naive, opts.concurrency),
    ] {
        let tag = format!("r{}", rates.len());
        let runs = deliveries(&admin, &lifecycle, &tag, opts.customers).await?;
        let events: usize = runs.iter().map(Vec::len).sum();
        eprintln!("{label}: {events} events...");
        let elapsed = drive(&pool, &verifier, subject, runs, workers).await?;
        rates.push((label, events, events as f64 / elapsed.as_secs_f64()));
        if subject == Subject::Pgstrata {
            check_mirror(&admin, &tag, opts.customers).await?;
        }
    }
    pool.close().await;
    admin.close().await;

    println!("{:<22} {:>8} {:>12}", "subject", "events", "events/s");
    for (label, events, rate) in &rates {
        println!("{label:<22} {events:>8} {rate:>12.0}");
    }
    let summary = Summary {
        bench: "billing",
        events: rates[0].1,
        events_per_s_sequential: rates[0].2.round() as u64,
        events_per_s_concurrent: rates[2].2.round() as u64,
        concurrency: opts.concurrency,
        baseline: BASELINE_LABEL,
        baseline_events_per_s_sequential: rates[1].2.round() as u64,
        baseline_events_per_s_concurrent: rates[3].2.round() as u64,
        ratio_sequential: round(rates[0].2 / rates[1].2, 3),
        ratio_concurrent: round(rates[2].2 / rates[3].2, 3),
    };
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

/// One run of deliveries per customer: the lifecycle with ids suffixed `_{tag}_{n}` and the
/// customer's metadata naming a new tenant, signed now.
async fn deliveries(
    admin: &PgPool,
    lifecycle: &[Value],
    tag: &str,
    customers: usize,
) -> Result<Vec<Vec<Delivery>>, Box<dyn Error>> {
    let tenants: Vec<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO tenancy.tenants (slug, name)
         SELECT 'bench-' || $1 || '-' || n, 'Bench ' || n FROM generate_series(1, $2) n RETURNING id",
    )
    .bind(tag)
    .bind(i64::try_from(customers)?)
    .fetch_all(admin)
    .await?;
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
    )?;
    let mut out = Vec::with_capacity(customers);
    for (n, tenant) in tenants.iter().enumerate() {
        let copy = format!("{tag}_{n}");
        let mut run = Vec::with_capacity(lifecycle.len());
        for event in lifecycle {
            let body = serde_json::to_vec(&fixtures::retag(event, &copy, TenantId(*tenant)))?;
            let header = sign(SECRET, now, &body);
            run.push((body, header));
        }
        out.push(run);
    }
    Ok(out)
}

/// Delivers every run on `workers` connections (runs dealt round-robin, each in order) and
/// returns the wall time.
async fn drive(
    pool: &PgPool,
    verifier: &Verifier,
    subject: Subject,
    runs: Vec<Vec<Delivery>>,
    workers: usize,
) -> Result<Duration, Box<dyn Error>> {
    let runs = Arc::new(runs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (pool, verifier, runs) = (pool.clone(), verifier.clone(), runs.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = pool.acquire().await?;
            for run in runs.iter().skip(w).step_by(workers) {
                for (body, header) in run {
                    match subject {
                        Subject::Pgstrata => {
                            let p = process_webhook(&mut conn, &verifier, body, header).await?;
                            if p.outcome == Outcome::Failed {
                                return Err(format!("{}: {:?}", p.event_id, p.error).into());
                            }
                        }
                        Subject::Naive => {
                            verifier.verify(body, header)?;
                            let text = std::str::from_utf8(body)?;
                            sqlx::query(NAIVE_SQL).bind(text).execute(&mut *conn).await?;
                        }
                    }
                }
            }
            Ok::<(), Box<dyn Error + Send + Sync>>(())
        }));
    }
    for t in tasks {
        t.await?.map_err(|e| e.to_string())?;
    }
    Ok(started.elapsed())
}

/// Every customer of a pgstrata run ends canceled with its last invoice paid.
async fn check_mirror(admin: &PgPool, tag: &str, customers: usize) -> Result<(), Box<dyn Error>> {
    let (canceled, paid): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM billing.subscriptions WHERE id LIKE '%\\_' || $1 || '\\_%' AND status = 'canceled'),
                (SELECT count(*) FROM billing.invoices WHERE id LIKE '%\\_' || $1 || '\\_%' AND status = 'paid')",
    )
    .bind(tag)
    .fetch_one(admin)
    .await?;
    if canceled != customers as i64 || paid != 2 * customers as i64 {
        return Err(format!("mirror check failed for {tag}: {canceled} canceled, {paid} paid invoices").into());
    }
    Ok(())
}
