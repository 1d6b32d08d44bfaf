//! `pgstrata-bench outbox`: what the outbox costs the business transaction, how fast a relay
//! drains, and how long a message waits between its commit and its delivery.
//!
//! 1. Publish overhead: `--writers` connections run one-row business inserts, each in its own
//!    transaction, alone (the baseline) and with `outbox::publish` beside it, in alternating
//!    phases until `--messages` messages are published, while a relay drains them to an
//!    in-process sink (a projection insert in the relay's transaction). Reported: transactions
//!    per second of each, and their ratio (goal: at most 1.3).
//! 2. Relay throughput: a backlog of `--backlog` messages drained by one relay, beside the
//!    naive poller (`WHERE id > last ORDER BY id`, which skips late commits) into the same sink.
//! 3. Latency: the writers publish at a steady `--rate` messages per second for `--seconds`
//!    with the relay running; commit-to-delivery p50 and p99 (goal: p99 under 100 ms).

use crate::scratch::{APP_ROLE, Scratch, WORKER_ROLE, create_app_role, create_worker_role, percentile_ms, round};
use pgstrata::outbox::{Message, Relay, RelayConfig, Sink, SinkError, publish};
use pgstrata_core::{CancellationToken, TenantContext, TenantId, begin_tenant};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use std::collections::HashMap;
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Debug)]
pub struct Options {
    pub url: String,
    pub messages: usize,
    pub writers: usize,
    pub backlog: usize,
    pub rate: usize,
    pub seconds: u64,
    pub keep_database: bool,
}

pub async fn run(opts: &Options) -> Result<(), Box<dyn Error>> {
    let scratch = Scratch::create(&opts.url).await?;
    let outcome = bench(&scratch.options(), opts).await;
    scratch.finish(outcome, opts.keep_database).await
}

/// The in-process sink: one projection insert per batch in the relay's transaction, and the
/// instant each message arrived (for the latency phase).
struct Projection {
    arrived: Arc<Mutex<HashMap<i64, Instant>>>,
}

impl Sink for Projection {
    fn name(&self) -> &str {
        "projection"
    }

    async fn deliver(&self, conn: &mut PgConnection, batch: &[Message]) -> Result<(), SinkError> {
        let ids: Vec<i64> = batch.iter().map(|m| m.id.0).collect();
        sqlx::query("INSERT INTO public.projection (message_id) SELECT unnest($1::bigint[])")
            .bind(&ids)
            .execute(&mut *conn)
            .await?;
        let now = Instant::now();
        let mut arrived = self.arrived.lock().map_err(|_| "poisoned")?;
        for id in ids {
            arrived.insert(id, now);
        }
        Ok(())
    }
}

/// One business transaction: a row in `public.orders`, and with `publish` its message.
async fn business(app: &PgPool, tenant: TenantId, k: usize, publish_too: bool) -> Result<Option<i64>, Box<dyn Error>> {
    let mut tx = begin_tenant(app, &TenantContext::tenant(tenant)).await?;
    let order = format!("o-{}", k % 1000);
    sqlx::query("INSERT INTO public.orders (tenant_id, order_id, total_cents) VALUES ($1, $2, $3)")
        .bind(tenant.0)
        .bind(&order)
        .bind(k as i64)
        .execute(&mut *tx)
        .await?;
    let id = if publish_too {
        let payload = serde_json::json!({ "order": order, "total_cents": k });
        Some(
            publish::publish(&mut tx, "order", &order, "OrderPlaced", &payload)
                .await?
                .0,
        )
    } else {
        None
    };
    tx.commit().await?;
    Ok(id)
}

/// `count` business transactions on `writers` connections; the elapsed time.
async fn phase(
    app: &PgPool,
    tenants: &[TenantId],
    count: usize,
    publish_too: bool,
) -> Result<Duration, Box<dyn Error>> {
    let start = Instant::now();
    let per = count / tenants.len();
    let mut tasks = Vec::new();
    for (w, &tenant) in tenants.iter().enumerate() {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                // Two writers of one aggregate queue behind each other; a refused older
                // transaction is run again, as an application would.
                loop {
                    match business(&app, tenant, w * per + i, publish_too).await {
                        Ok(_) => break,
                        Err(e) if e.to_string().contains("retry") => continue,
                        Err(e) => return Err(e.to_string()),
                    }
                }
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await?.map_err(|e| -> Box<dyn Error> { e.into() })?;
    }
    Ok(start.elapsed())
}

async fn count(admin: &PgPool, sql: &'static str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(sql).fetch_one(admin).await
}

async fn wait_for(admin: &PgPool, sql: &'static str, target: i64, limit: Duration) -> Result<Duration, Box<dyn Error>> {
    let start = Instant::now();
    while count(admin, sql).await? < target {
        if start.elapsed() > limit {
            return Err(format!("gave up after {limit:?} waiting for {target} rows: {sql}").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(start.elapsed())
}

/// The naive poller: `id > last` in id order into the same projection, one batch per commit.
async fn naive_drain(worker: &mut PgConnection, total: i64) -> Result<Duration, Box<dyn Error>> {
    let start = Instant::now();
    let mut last = 0i64;
    let mut done = 0i64;
    while done < total {
        let mut tx = worker.begin().await?;
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM outbox.messages WHERE id > $1 ORDER BY id LIMIT 500")
            .bind(last)
            .fetch_all(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO public.naive_projection (message_id) SELECT unnest($1::bigint[])")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if let Some(&l) = ids.last() {
            last = l;
        }
        done += ids.len() as i64;
        if ids.is_empty() {
            break;
        }
    }
    Ok(start.elapsed())
}

async fn bench(db: &PgConnectOptions, opts: &Options) -> Result<(), Box<dyn Error>> {
    let admin = PgPoolOptions::new().max_connections(4).connect_with(db.clone()).await?;
    pgstrata::Backend::builder()
        .with_named("outbox")?
        .build()?
        .migrate(&admin)
        .await?;
    create_app_role(&admin).await?;
    create_worker_role(&admin).await?;
    let tenants: Vec<TenantId> = (0..opts.writers).map(|_| TenantId(Uuid::now_v7())).collect();
    sqlx::query(
        "INSERT INTO tenancy.tenants (id, slug, name) SELECT t, 'bench-' || i, 'Bench ' || i
           FROM unnest($1::uuid[]) WITH ORDINALITY AS x(t, i)",
    )
    .bind(tenants.iter().map(|t| t.0).collect::<Vec<_>>())
    .execute(&admin)
    .await?;
    sqlx::raw_sql(
        "CREATE TABLE public.orders (tenant_id uuid NOT NULL, id bigint GENERATED ALWAYS AS IDENTITY,
                                     order_id text NOT NULL, total_cents bigint NOT NULL, PRIMARY KEY (tenant_id, id));
         ALTER TABLE public.orders ENABLE ROW LEVEL SECURITY;
         ALTER TABLE public.orders FORCE ROW LEVEL SECURITY;
         CREATE POLICY tenant_isolation ON public.orders USING (tenant_id = (SELECT tenancy.current_tenant_id()))
             WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()));
         GRANT SELECT, INSERT ON public.orders TO pgstrata_app;
         CREATE TABLE public.projection (message_id bigint NOT NULL);
         CREATE TABLE public.naive_projection (message_id bigint NOT NULL);
         GRANT SELECT, INSERT ON public.projection, public.naive_projection TO pgstrata_worker;",
    )
    .execute(&admin)
    .await?;
    let app = PgPoolOptions::new()
        .max_connections(opts.writers as u32)
        .connect_with(db.clone().username(APP_ROLE).password(APP_ROLE))
        .await?;
    let worker_options = db.clone().username(WORKER_ROLE).password(WORKER_ROLE);
    let worker = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(worker_options.clone())
        .await?;
    let arrived = Arc::new(Mutex::new(HashMap::new()));
    let idle_wait = Duration::from_millis(5);
    let relay = Arc::new(
        Relay::new(
            worker.clone(),
            Projection {
                arrived: arrived.clone(),
            },
        )
        .with_config(RelayConfig {
            partitions_per_round: 32,
            batch_size: 500,
            idle_wait,
        }),
    );
    let start_relay = |relay: Arc<Relay<Projection>>| {
        let token = CancellationToken::new();
        let t = token.clone();
        (token, tokio::spawn(async move { relay.run(t).await }))
    };

    // 1. Publish overhead, with the relay draining.
    eprintln!(
        "Publish overhead: {} messages on {} writers...",
        opts.messages, opts.writers
    );
    let (token, running) = start_relay(relay.clone());
    let rounds = 4;
    let per_round = (opts.messages / rounds / opts.writers).max(1) * opts.writers;
    let (mut plain, mut with_publish) = (Duration::ZERO, Duration::ZERO);
    for r in 0..rounds {
        // Alternate which side goes first.
        let order = if r % 2 == 0 { [false, true] } else { [true, false] };
        for publish_too in order {
            let took = phase(&app, &tenants, per_round, publish_too).await?;
            if publish_too {
                with_publish += took;
            } else {
                plain += took;
            }
        }
    }
    let published = (per_round * rounds) as i64;
    wait_for(
        &admin,
        "SELECT count(*) FROM public.projection",
        published,
        Duration::from_secs(300),
    )
    .await?;
    token.cancel();
    running.await??;
    let plain_tps = published as f64 / plain.as_secs_f64();
    let publish_tps = published as f64 / with_publish.as_secs_f64();
    let overhead = with_publish.as_secs_f64() / plain.as_secs_f64();
    println!(
        "publish: {publish_tps:.0} tx/s with publish, {plain_tps:.0} tx/s insert alone: {overhead:.2}x (goal <= 1.3x)"
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "outbox_publish", "writers": opts.writers, "messages": published,
            "tx_per_s": round(publish_tps, 0), "baseline": "the business insert alone, one transaction each",
            "baseline_tx_per_s": round(plain_tps, 0), "ratio": round(overhead, 3), "goal_ratio_max": 1.3,
        })
    );

    // 2. Relay throughput on a backlog, beside the naive poller.
    eprintln!("Relay throughput: a backlog of {} messages...", opts.backlog);
    sqlx::raw_sql("TRUNCATE public.projection, public.naive_projection")
        .execute(&admin)
        .await?;
    let before = count(&admin, "SELECT count(*) FROM outbox.messages").await?;
    phase(&app, &tenants, opts.backlog, true).await?;
    let backlog = count(&admin, "SELECT count(*) FROM outbox.messages").await? - before;
    let mut naive_conn = sqlx::ConnectOptions::connect(&worker_options).await?;
    let relay_start = Instant::now();
    let (token, running) = start_relay(relay.clone());
    wait_for(
        &admin,
        "SELECT count(*) FROM public.projection",
        backlog,
        Duration::from_secs(300),
    )
    .await?;
    let relay_took = relay_start.elapsed();
    token.cancel();
    running.await??;
    // The naive poller drains the whole table from id 0 (its rate is per message it moved).
    let naive_took = naive_drain(&mut naive_conn, before + backlog).await?;
    let naive_rate = (before + backlog) as f64 / naive_took.as_secs_f64();
    let relay_rate = backlog as f64 / relay_took.as_secs_f64();
    println!("relay: {relay_rate:.0} messages/s; naive id-cursor poller: {naive_rate:.0} messages/s");
    println!(
        "{}",
        serde_json::json!({
            "bench": "outbox_relay", "messages": backlog, "messages_per_s": round(relay_rate, 0),
            "baseline": "naive WHERE id > last poller (skips late commits)",
            "baseline_messages_per_s": round(naive_rate, 0), "ratio": round(relay_rate / naive_rate, 3),
        })
    );

    // 3. Commit-to-delivery latency at a steady rate.
    eprintln!("Latency: {} messages/s for {} s...", opts.rate, opts.seconds);
    arrived.lock().map_err(|_| "poisoned")?.clear();
    let token = CancellationToken::new();
    let running = tokio::spawn(timed_rounds(relay.clone(), idle_wait, token.clone()));
    let committed: Arc<Mutex<Vec<(i64, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let per_writer = opts.rate as f64 / opts.writers as f64;
    let interval = Duration::from_secs_f64(1.0 / per_writer);
    let total_per_writer = (per_writer * opts.seconds as f64) as usize;
    let mut tasks = Vec::new();
    for (w, &tenant) in tenants.iter().enumerate() {
        let (app, committed) = (app.clone(), committed.clone());
        tasks.push(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut late = 0usize;
            for i in 0..total_per_writer {
                ticker.tick().await;
                match business(&app, tenant, 10_000_000 + w * total_per_writer + i, true).await {
                    Ok(Some(id)) => {
                        if let Ok(mut c) = committed.lock() {
                            c.push((id, Instant::now()));
                        }
                    }
                    Ok(None) => {}
                    Err(_) => late += 1,
                }
            }
            late
        }));
    }
    let phase_start = Instant::now();
    for t in tasks {
        t.await?;
    }
    let achieved = committed.lock().map_err(|_| "poisoned")?.len() as f64 / phase_start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    token.cancel();
    let rounds = running.await??;
    let arrived = arrived.lock().map_err(|_| "poisoned")?.clone();
    let committed = committed.lock().map_err(|_| "poisoned")?.clone();
    let mut latencies: Vec<Duration> = committed
        .iter()
        .filter_map(|(id, at)| arrived.get(id).map(|d| d.saturating_duration_since(*at)))
        .collect();
    latencies.sort();
    let undelivered = committed.len() - latencies.len();
    let (p50, p99) = (percentile_ms(&latencies, 0.5), percentile_ms(&latencies, 0.99));
    // The rounds that delivered: how long each took, and how many messages it carried.
    let mut busy: Vec<Duration> = rounds.iter().filter(|r| r.1 > 0).map(|r| r.0).collect();
    busy.sort();
    let carried: usize = rounds.iter().map(|r| r.1).sum();
    let mean_round = busy.iter().sum::<Duration>().as_secs_f64() * 1000.0 / busy.len().max(1) as f64;
    let per_round = carried as f64 / busy.len().max(1) as f64;
    println!(
        "latency at {achieved:.0} messages/s: p50 {p50:.1} ms, p99 {p99:.1} ms (goal p99 < 100 ms), {} measured, \
         {undelivered} not delivered; {} rounds delivered, {mean_round:.1} ms and {per_round:.0} messages each \
         (p99 {:.1} ms)",
        latencies.len(),
        busy.len(),
        percentile_ms(&busy, 0.99),
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "outbox_latency", "target_rate_per_s": opts.rate, "achieved_rate_per_s": round(achieved, 0),
            "measured": latencies.len(), "undelivered": undelivered, "p50_ms": round(p50, 2), "p99_ms": round(p99, 2),
            "goal_p99_ms": 100, "rounds": busy.len(), "round_mean_ms": round(mean_round, 2),
            "round_p99_ms": round(percentile_ms(&busy, 0.99), 2), "messages_per_round": round(per_round, 1),
        })
    );
    Ok(())
}

/// The relay's loop as [`Relay::run`] runs it (the next round at once after one that delivered,
/// `idle` after one that did not; a failed round ends the phase), each round timed: its
/// duration and the messages it delivered.
async fn timed_rounds(
    relay: Arc<Relay<Projection>>,
    idle: Duration,
    token: CancellationToken,
) -> Result<Vec<(Duration, usize)>, pgstrata::outbox::Error> {
    relay.prepare().await?;
    let mut rounds = Vec::new();
    while !token.is_cancelled() {
        let start = Instant::now();
        let round = relay.round().await?;
        rounds.push((start.elapsed(), round.delivered));
        if round.delivered == 0 {
            tokio::select! {
                () = token.cancelled() => break,
                () = tokio::time::sleep(idle) => {}
            }
        }
    }
    Ok(rounds)
}
