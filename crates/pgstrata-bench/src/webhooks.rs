//! `pgstrata-bench webhooks`: dispatchers delivering messages to a local receiver that answers
//! 200 at once, beside the raw limit of the same HTTP client posting the same signed bodies
//! with the same concurrency straight from memory; send-to-delivery latency; and the cost of
//! `send()` with one matching endpoint beside a plain insert of the same payload into a table
//! of the same shape, each in its own business transaction.

use crate::scratch::{self, APP_ROLE, Scratch, WORKER_ROLE, percentile_ms, round};
use pgstrata::webhooks::dispatch::{
    AddressPolicy, Dispatcher, DispatcherConfig, HttpClient, TlsConnector, request_headers,
};
use pgstrata::webhooks::{NewEndpoint, endpoints, send};
use pgstrata::{TenantContext, TenantId, begin_tenant};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Options {
    pub url: String,
    pub messages: usize,
    pub workers: usize,
    pub per_worker: usize,
    pub sends: usize,
    pub keep_database: bool,
}

pub async fn run(opts: &Options) -> Result<(), Box<dyn Error>> {
    let scratch = Scratch::create(&opts.url).await?;
    let outcome = bench(&scratch.options(), opts).await;
    scratch.finish(outcome, opts.keep_database).await
}

/// A receiver on 127.0.0.1 that answers 200 at once and counts requests.
async fn receiver() -> Result<(String, Arc<AtomicUsize>), Box<dyn Error>> {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let app = axum::Router::new().fallback(move || {
        let c = c.clone();
        async move {
            c.fetch_add(1, Ordering::Relaxed);
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}/hook"), count))
}

fn payload(i: usize) -> Vec<u8> {
    format!(
        r#"{{"type": "invoice.paid", "invoice": "in_{i:08}", "amount": {}, "currency": "eur", "lines": [{{"sku": "plan-pro", "qty": 1}}]}}"#,
        i * 7 % 100_000
    )
    .into_bytes()
}

async fn bench(db: &PgConnectOptions, opts: &Options) -> Result<(), Box<dyn Error>> {
    let admin = PgPoolOptions::new().max_connections(4).connect_with(db.clone()).await?;
    pgstrata::Backend::all()?.migrate(&admin).await?;
    scratch::create_app_role(&admin).await?;
    scratch::create_worker_role(&admin).await?;
    let total = opts.workers * opts.per_worker;
    let app = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(db.clone().username(APP_ROLE).password(APP_ROLE))
        .await?;
    let worker = PgPoolOptions::new()
        .max_connections(u32::try_from(opts.workers * 2 + 2)?)
        .connect_with(db.clone().username(WORKER_ROLE).password(WORKER_ROLE))
        .await?;

    let (url, received) = receiver().await?;
    let tenant = TenantId::new();
    sqlx::query("INSERT INTO tenancy.tenants (id, slug, name) VALUES ($1, 'bench', 'Bench')")
        .bind(tenant.0)
        .execute(&admin)
        .await?;
    let ctx = TenantContext::tenant(tenant);
    let mut tx = begin_tenant(&app, &ctx).await?;
    let endpoint = endpoints::create(
        &mut tx,
        &NewEndpoint::new(&url).max_in_flight(i32::try_from(total.min(100))?),
    )
    .await?;
    let key = endpoints::secrets(&mut tx, endpoint.id).await?.remove(0).secret;
    tx.commit().await?;
    // The plain insert's table: the shape of webhooks.messages, no trigger, no fan-out.
    sqlx::raw_sql(
        "CREATE SCHEMA bench_plain;
         CREATE TABLE bench_plain.messages (tenant_id uuid NOT NULL, id uuid NOT NULL DEFAULT gen_random_uuid(),
             event_type text NOT NULL, payload bytea NOT NULL, idempotency_key text,
             created_at timestamptz NOT NULL DEFAULT now(), expires_at timestamptz NOT NULL DEFAULT now() + interval '30 days',
             PRIMARY KEY (tenant_id, id), UNIQUE (tenant_id, idempotency_key));
         GRANT USAGE ON SCHEMA bench_plain TO pgstrata_app;
         GRANT SELECT, INSERT ON bench_plain.messages TO pgstrata_app;",
    )
    .execute(&admin)
    .await?;

    // 1. send() beside a plain insert, each one business transaction, interleaved in rounds.
    let mut send_times = Vec::new();
    let mut plain_times = Vec::new();
    let rounds = 10;
    for r in 0..rounds {
        for i in 0..opts.sends / rounds {
            let body = payload(r * 100_000 + i);
            let t0 = Instant::now();
            let mut tx = begin_tenant(&app, &ctx).await?;
            send(&mut tx, "invoice.paid", &body).await?;
            tx.commit().await?;
            send_times.push(t0.elapsed());
            let t0 = Instant::now();
            let mut tx = begin_tenant(&app, &ctx).await?;
            sqlx::query("INSERT INTO bench_plain.messages (tenant_id, event_type, payload) VALUES ($1, $2, $3)")
                .bind(tenant.0)
                .bind("invoice.paid")
                .bind(&body)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            plain_times.push(t0.elapsed());
        }
    }
    send_times.sort();
    plain_times.sort();
    let send_p50 = percentile_ms(&send_times, 0.5);
    let plain_p50 = percentile_ms(&plain_times, 0.5);
    // Those sends' deliveries are not part of the throughput run.
    sqlx::query("DELETE FROM webhooks.messages").execute(&admin).await?;

    // 2. Throughput: the messages sent first (500 per transaction), then drained.
    for chunk in (0..opts.messages).collect::<Vec<_>>().chunks(500) {
        let mut tx = begin_tenant(&app, &ctx).await?;
        for &i in chunk {
            send(&mut tx, "invoice.paid", &payload(i)).await?;
        }
        tx.commit().await?;
    }
    sqlx::raw_sql("VACUUM ANALYZE webhooks.deliveries, webhooks.messages")
        .execute(&admin)
        .await?;
    let policy = AddressPolicy::public_only().allow("127.0.0.1/32")?;
    let mut dispatchers = Vec::new();
    for w in 0..opts.workers {
        dispatchers.push(
            Dispatcher::new(
                worker.clone(),
                DispatcherConfig::new(format!("bench-{w}"))
                    .policy(policy.clone())
                    .concurrency(opts.per_worker)
                    .batch(opts.per_worker)
                    .idle(Duration::from_millis(5)),
            )
            .await?,
        );
    }
    let token = pgstrata::CancellationToken::new();
    let before = received.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for d in &dispatchers {
        let (d, token) = (d.clone(), token.clone());
        tasks.push(tokio::spawn(async move { d.run(token).await }));
    }
    loop {
        // Counting the succeeded deliveries reads the whole table: only once the receiver has
        // seen every message (the bench's own polling is not to load the database it measures).
        if received.load(Ordering::Relaxed) - before < opts.messages && started.elapsed() < Duration::from_secs(600) {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM webhooks.deliveries WHERE state = 'succeeded'")
            .fetch_one(&admin)
            .await?;
        if done as usize >= opts.messages {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err(format!("only {done} of {} delivered in 600 s", opts.messages).into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = started.elapsed();
    let delivered = received.load(Ordering::Relaxed) - before;
    let per_s = opts.messages as f64 / drained.as_secs_f64();

    // 3. Latency: with the dispatchers idle, one message per transaction from 4 senders.
    sqlx::query("DELETE FROM webhooks.messages").execute(&admin).await?;
    let latency_messages = 2_000;
    let mut senders = Vec::new();
    for s in 0..4 {
        let (app, ctx) = (app.clone(), ctx.clone());
        senders.push(tokio::spawn(async move {
            for i in 0..latency_messages / 4 {
                let mut tx = begin_tenant(&app, &ctx).await?;
                send(&mut tx, "invoice.paid", &payload(s * 1_000_000 + i)).await?;
                tx.commit().await?;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok::<(), pgstrata::webhooks::Error>(())
        }));
    }
    for s in senders {
        s.await??;
    }
    loop {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM webhooks.deliveries WHERE state = 'succeeded'")
            .fetch_one(&admin)
            .await?;
        if done >= latency_messages as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Commit of the send to the end of the receiver's answer (the attempt's finish), by the
    // server's clock: the message's created_at is its transaction's start, a little earlier.
    let (p50, p99): (f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)
           FROM (SELECT extract(epoch FROM a.finished_at - m.created_at) * 1000 AS ms
                   FROM webhooks.attempts a JOIN webhooks.messages m ON m.tenant_id = a.tenant_id AND m.id = a.message_id) x",
    )
    .fetch_one(&admin)
    .await?;
    token.cancel();
    for t in tasks {
        t.await?;
    }

    // 4. The raw limit: the same client, the same signed bodies, the same concurrency, no
    // database.
    let client = HttpClient::new(policy, Duration::from_secs(15), TlsConnector::builder().build()?);
    let claimed_shape: Vec<_> = (0..opts.messages).collect();
    let next = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(claimed_shape);
    let key = Arc::new(key);
    let raw_started = Instant::now();
    let mut posters = Vec::new();
    for _ in 0..total {
        let (client, next, bodies, key, url) = (client.clone(), next.clone(), bodies.clone(), key.clone(), url.clone());
        posters.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= bodies.len() {
                    break;
                }
                let claimed = pgstrata::webhooks::dispatch::Claimed {
                    tenant_id: TenantId::new(),
                    delivery_id: pgstrata::webhooks::DeliveryId(i as i64),
                    attempt: 1,
                    attempt_id: pgstrata::webhooks::AttemptId(i as i64),
                    message_id: pgstrata::webhooks::MessageId::new(),
                    event_type: "invoice.paid".to_owned(),
                    payload: payload(bodies[i]),
                    endpoint_id: pgstrata::webhooks::EndpointId::new(),
                    url: url.clone(),
                    headers: serde_json::json!({}),
                    keys: vec![key.as_bytes().to_vec()],
                    trigger: pgstrata::webhooks::AttemptTrigger::Scheduled,
                };
                let headers = request_headers(&claimed, chrono::Utc::now().timestamp(), "pgstrata-bench");
                let answer = client.post(&url, &headers, claimed.payload.into()).await;
                if answer.status != Some(200) {
                    return Err(format!("raw post failed: {answer:?}"));
                }
            }
            Ok(())
        }));
    }
    for p in posters {
        p.await??;
    }
    let raw = raw_started.elapsed();
    let raw_per_s = opts.messages as f64 / raw.as_secs_f64();

    let ratio = per_s / raw_per_s;
    let send_ratio = send_p50 / plain_p50;
    println!(
        "webhooks bench: {} messages, {} dispatchers x {} in flight, one endpoint",
        opts.messages, opts.workers, opts.per_worker
    );
    println!(
        "  dispatch:   {per_s:>10.0} deliveries/s ({delivered} requests received, {:.1} s)",
        drained.as_secs_f64()
    );
    println!("  raw client: {raw_per_s:>10.0} posts/s ({:.1} s)", raw.as_secs_f64());
    println!("  latency send commit -> delivered: p50 {p50:.1} ms, p99 {p99:.1} ms ({latency_messages} messages)");
    println!("  send(): p50 {send_p50:.3} ms per transaction, plain insert {plain_p50:.3} ms: {send_ratio:.2}x");
    println!(
        "{}",
        serde_json::json!({
            "bench": "webhooks",
            "messages": opts.messages,
            "dispatchers": opts.workers,
            "in_flight_per_dispatcher": opts.per_worker,
            "deliveries_per_s": round(per_s, 0),
            "baseline": "same HTTP client posting the same signed bodies from memory, same concurrency",
            "baseline_posts_per_s": round(raw_per_s, 0),
            "ratio": round(ratio, 3),
            "latency_p50_ms": round(p50, 1),
            "latency_p99_ms": round(p99, 1),
            "send_p50_ms": round(send_p50, 3),
            "plain_insert_p50_ms": round(plain_p50, 3),
            "send_ratio": round(send_ratio, 3),
        })
    );
    Ok(())
}
