//! The audit bench: what the audit trigger costs a write, and what dropping a month costs
//! beside deleting it.
//!
//! - Overhead: clients (8 by default) run one-row transactions as the application role, each
//!   in its own tenant, against two identical tables; only `bench.audited` has the audit
//!   trigger. Phases alternate (plain, audited, plain, ...) so drift hits both. The chain is
//!   on: a `Sealer` seals committed records every `--seal-interval-ms` while the audited phase
//!   runs, and the records still unsealed when the phase ends are reported (the delay bound),
//!   then sealed before the next phase so no subject pays for the other's backlog.
//! - Retention: two past months of `--retention-rows` records each; one is removed with
//!   `DELETE` (the append-only triggers switched off for it, as a table without partitions
//!   would do) and then vacuumed, the other by `audit.maintain` dropping its partition.

use crate::scratch::{APP_ROLE, Scratch, create_app_role, round};
use pgstrata::audit::chain::{self, Sealer, SealerConfig};
use pgstrata::core::CancellationToken;
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};
use std::error::Error;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// What `main` passes in.
#[derive(Debug)]
pub struct Options {
    pub url: String,
    pub clients: usize,
    pub seconds: u64,
    pub rounds: usize,
    pub seal_interval_ms: u64,
    pub retention_rows: i64,
    pub keep_database: bool,
}

const GOAL_RATIO: f64 = 1.5;
const ROWS_PER_TENANT: i64 = 1000;
const BASELINE_LABEL: &str = "the same table without the audit trigger";

const TABLES_SQL: &str = r#"
CREATE SCHEMA bench;
GRANT USAGE ON SCHEMA bench TO pgstrata_app;
CREATE TABLE bench.plain (
    tenant_id   uuid        NOT NULL,
    id          bigint      GENERATED ALWAYS AS IDENTITY,
    amount      bigint      NOT NULL,
    status      text        NOT NULL,
    note        text        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE bench.audited (LIKE bench.plain INCLUDING ALL);
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['plain', 'audited'] LOOP
        EXECUTE format('ALTER TABLE bench.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE bench.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON bench.%I
                            USING (tenant_id = (SELECT tenancy.current_tenant_id()))
                            WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()))', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE ON bench.%I TO pgstrata_app', t);
    END LOOP;
END
$$;
SELECT audit.enable('bench.audited', '{updated_at}');
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Update,
    Insert,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Update => "update",
            Op::Insert => "insert",
        }
    }

    fn sql(self, table: &str) -> String {
        match self {
            Op::Update => format!(
                "UPDATE bench.{table} SET amount = amount + 1, status = 'paid', updated_at = now() \
                 WHERE tenant_id = $1 AND id = $2"
            ),
            Op::Insert => {
                format!("INSERT INTO bench.{table} (tenant_id, amount, status, note) VALUES ($1, $2, 'new', 'bench')")
            }
        }
    }
}

/// Transactions committed per second by each subject, over all rounds.
#[derive(Debug, Clone, Copy)]
struct Throughput {
    plain: f64,
    audited: f64,
    max_unsealed: i64,
}

/// The final JSON line; a struct so that its keys keep this order.
#[derive(Debug, Serialize)]
struct Summary {
    bench: &'static str,
    clients: usize,
    update_tx_per_s: u64,
    baseline: &'static str,
    baseline_update_tx_per_s: u64,
    update_overhead_ratio: f64,
    insert_tx_per_s: u64,
    baseline_insert_tx_per_s: u64,
    insert_overhead_ratio: f64,
    goal_ratio: f64,
    chain: &'static str,
    seal_interval_ms: u64,
    max_unsealed_at_phase_end: i64,
    seal_records_per_s: u64,
    retention_rows: i64,
    drop_partition_ms: f64,
    delete_ms: f64,
    vacuum_after_delete_ms: f64,
    delete_over_drop: f64,
    delete_and_vacuum_over_drop: f64,
}

/// Creates the scratch database, runs the bench in it, and drops it whatever happened.
pub async fn run(opts: &Options) -> Result<(), Box<dyn Error>> {
    let scratch = Scratch::create(&opts.url).await?;
    let outcome = bench(&scratch.options(), opts).await;
    scratch.finish(outcome, opts.keep_database).await
}

async fn bench(db: &PgConnectOptions, opts: &Options) -> Result<(), Box<dyn Error>> {
    let admin = PgPoolOptions::new().max_connections(4).connect_with(db.clone()).await?;
    pgstrata::Backend::builder()
        .with_named("tenancy")?
        .with_named("audit")?
        .build()?
        .migrate(&admin)
        .await?;
    create_app_role(&admin).await?;
    sqlx::raw_sql(TABLES_SQL).execute(&admin).await?;

    // One tenant per client, each with its own rows in both tables.
    let tenants: Vec<Uuid> = (0..opts.clients).map(|_| Uuid::now_v7()).collect();
    for (i, t) in tenants.iter().enumerate() {
        sqlx::query("INSERT INTO tenancy.tenants (id, slug, name) VALUES ($1, $2, $2)")
            .bind(t)
            .bind(format!("bench-{i}"))
            .execute(&admin)
            .await?;
        for table in ["plain", "audited"] {
            pgstrata::core::sql::trusted(format!(
                "INSERT INTO bench.{table} (tenant_id, amount, status, note) \
                 SELECT $1, 0, 'open', 'bench' FROM generate_series(1, {ROWS_PER_TENANT})"
            ))
            .bind(t)
            .execute(&admin)
            .await?;
        }
    }
    // The sealer's own rate, on the records the load wrote.
    let started = Instant::now();
    let backlog = seal_backlog(&admin).await?;
    let seal_rate = backlog as f64 / started.elapsed().as_secs_f64();
    sqlx::raw_sql("VACUUM ANALYZE bench.plain, bench.audited, audit.records")
        .execute(&admin)
        .await?;

    let app = PgPoolOptions::new()
        .max_connections(opts.clients as u32)
        .connect_with(db.clone().username(APP_ROLE).password(APP_ROLE))
        .await?;
    let mut measured = Vec::new();
    for op in [Op::Update, Op::Insert] {
        eprintln!(
            "Measuring {} transactions: {} round(s) of {} s per subject, {} clients...",
            op.name(),
            opts.rounds,
            opts.seconds,
            opts.clients
        );
        measured.push((op, throughput(&admin, &app, &tenants, op, opts).await?));
    }
    app.close().await;

    eprintln!(
        "Retention: loading two past months of {} records each...",
        opts.retention_rows
    );
    let (drop_ms, delete_ms, vacuum_ms) = retention(&admin, opts.retention_rows).await?;
    admin.close().await;

    println!(
        "{:<8} | {:>12} {:>12} {:>8} | {:>16}",
        "op", "audited tx/s", "plain tx/s", "ratio", "unsealed at end"
    );
    println!("{}", "-".repeat(66));
    for (op, t) in &measured {
        println!(
            "{:<8} | {:>12.0} {:>12.0} {:>8.3} | {:>16}",
            op.name(),
            t.audited,
            t.plain,
            t.plain / t.audited,
            t.max_unsealed
        );
    }
    println!(
        "chain on: sealer every {} ms; goal ratio <= {GOAL_RATIO}; the sealer alone chains {:.0} records/s",
        opts.seal_interval_ms, seal_rate
    );
    println!(
        "retention of {} records: drop partition {:.1} ms; DELETE {:.1} ms ({:.1}x), then VACUUM {:.1} ms",
        opts.retention_rows,
        drop_ms,
        delete_ms,
        delete_ms / drop_ms,
        vacuum_ms
    );

    let (update, insert) = (measured[0].1, measured[1].1);
    let summary = Summary {
        bench: "audit",
        clients: opts.clients,
        update_tx_per_s: update.audited.round() as u64,
        baseline: BASELINE_LABEL,
        baseline_update_tx_per_s: update.plain.round() as u64,
        update_overhead_ratio: round(update.plain / update.audited, 3),
        insert_tx_per_s: insert.audited.round() as u64,
        baseline_insert_tx_per_s: insert.plain.round() as u64,
        insert_overhead_ratio: round(insert.plain / insert.audited, 3),
        goal_ratio: GOAL_RATIO,
        chain: "sealed after commit by a concurrent Sealer",
        seal_interval_ms: opts.seal_interval_ms,
        max_unsealed_at_phase_end: update.max_unsealed.max(insert.max_unsealed),
        seal_records_per_s: seal_rate.round() as u64,
        retention_rows: opts.retention_rows,
        drop_partition_ms: round(drop_ms, 2),
        delete_ms: round(delete_ms, 2),
        vacuum_after_delete_ms: round(vacuum_ms, 2),
        delete_over_drop: round(delete_ms / drop_ms, 1),
        delete_and_vacuum_over_drop: round((delete_ms + vacuum_ms) / drop_ms, 1),
    };
    println!();
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

/// Alternating phases of both subjects; the sealer runs during every audited phase.
async fn throughput(
    admin: &PgPool,
    app: &PgPool,
    tenants: &[Uuid],
    op: Op,
    opts: &Options,
) -> Result<Throughput, Box<dyn Error>> {
    let duration = Duration::from_secs(opts.seconds.max(1));
    let (mut plain, mut audited, mut max_unsealed) = (0u64, 0u64, 0i64);
    for _ in 0..opts.rounds.max(1) {
        plain += phase(app, tenants, "plain", op, duration).await?;

        let stop = CancellationToken::new();
        let sealer = Sealer::new(
            admin.clone(),
            SealerConfig {
                interval: Duration::from_millis(opts.seal_interval_ms.max(1)),
                batch: 5000,
            },
        );
        let sealing = tokio::spawn(sealer.run(stop.clone()));
        audited += phase(app, tenants, "audited", op, duration).await?;
        // The backlog when the writers stop, before the sealer's last round on cancellation.
        let unsealed: i64 = sqlx::query_scalar("SELECT unsealed FROM audit.unsealed()")
            .fetch_one(admin)
            .await?;
        max_unsealed = max_unsealed.max(unsealed);
        stop.cancel();
        sealing.await?;
        seal_backlog(admin).await?;
    }
    let secs = duration.as_secs_f64() * opts.rounds.max(1) as f64;
    Ok(Throughput {
        plain: plain as f64 / secs,
        audited: audited as f64 / secs,
        max_unsealed,
    })
}

/// One client per tenant, one-row transactions until the time is up; returns the commits.
async fn phase(app: &PgPool, tenants: &[Uuid], table: &str, op: Op, duration: Duration) -> Result<u64, Box<dyn Error>> {
    let deadline = Instant::now() + duration;
    let mut clients = Vec::new();
    for (c, tenant) in tenants.iter().copied().enumerate() {
        let app = app.clone();
        let sql = op.sql(table);
        let ids_sql = format!("SELECT id FROM bench.{table} ORDER BY id");
        clients.push(tokio::spawn(async move {
            let mut conn = app.acquire().await?;
            let ids: Vec<i64> = {
                let mut tx = conn.begin().await?;
                sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
                    .bind(tenant.to_string())
                    .execute(&mut *tx)
                    .await?;
                let ids = pgstrata::core::sql::trusted(ids_sql)
                    .fetch_all(&mut *tx)
                    .await?
                    .iter()
                    .map(|r| sqlx::Row::get::<i64, _>(r, 0))
                    .collect();
                tx.commit().await?;
                ids
            };
            let actor = Uuid::now_v7().to_string();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let id = ids[(n as usize * 7 + c) % ids.len()];
                let mut tx = conn.begin().await?;
                sqlx::query(
                    "SELECT set_config('app.tenant_id', $1, true), set_config('app.actor_id', $2, true), \
                            set_config('app.request_id', $3, true)",
                )
                .bind(tenant.to_string())
                .bind(&actor)
                .bind(format!("bench-{c}-{n}"))
                .execute(&mut *tx)
                .await?;
                pgstrata::core::sql::trusted(sql.clone())
                    .bind(tenant)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                n += 1;
            }
            Ok::<u64, sqlx::Error>(n)
        }));
    }
    let mut total = 0;
    for c in clients {
        total += c.await??;
    }
    Ok(total)
}

/// Seals until nothing is left; returns how many records it sealed.
async fn seal_backlog(admin: &PgPool) -> Result<i64, Box<dyn Error>> {
    let mut conn = admin.acquire().await?;
    let mut total = 0i64;
    loop {
        let n = chain::seal(&mut conn, 10_000).await?;
        if n == 0 {
            return Ok(total);
        }
        total += i64::from(n);
    }
}

/// Loads two past months, deletes one with DELETE and drops the other with audit.maintain
/// (which first moves each tenant's chain checkpoint past the month); returns (drop ms,
/// delete ms, vacuum after the delete ms).
async fn retention(admin: &PgPool, rows: i64) -> Result<(f64, f64, f64), Box<dyn Error>> {
    let mut conn = admin.acquire().await?;
    for (month, start) in [
        ("2020-01-01", "2020-01-01 00:00+00"),
        ("2020-02-01", "2020-02-01 00:00+00"),
    ] {
        sqlx::query("SELECT audit.create_partition($1::date)")
            .bind(month)
            .execute(&mut *conn)
            .await?;
        // Spread over 28 days, in the shape the capture trigger writes, already sealed (an
        // expired month is; maintenance keeps a month with unsealed records). The links are
        // stand-ins: sealing 1M records for real would take minutes and is measured above.
        sqlx::query(
            "INSERT INTO audit.records (tenant_id, occurred_at, actor_id, action, resource_type, resource_id, old_values,
                                        new_values, origin, seq, prev_hash, hash)
             SELECT t.id, $1::timestamptz + (k * (interval '28 days' / $2)), gen_random_uuid(), 'update',
                    'bench.audited', k::text, jsonb_build_object('amount', k), jsonb_build_object('amount', k + 1),
                    'capture', k, sha256(int8send(k - 1)), sha256(int8send(k))
               FROM generate_series(1, $2) k
              CROSS JOIN LATERAL (SELECT id FROM tenancy.tenants ORDER BY id LIMIT 1) t",
        )
        .bind(start)
        .bind(rows)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::raw_sql("CHECKPOINT").execute(&mut *conn).await?;

    // DELETE of a month, as a table without partitions would retire it. The append-only
    // triggers refuse it, so they are switched off for this transaction (superuser only).
    let started = Instant::now();
    let mut tx = conn.begin().await?;
    sqlx::raw_sql("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await?;
    let deleted = sqlx::query(
        "DELETE FROM audit.records WHERE occurred_at >= '2020-02-01 00:00+00' AND occurred_at < '2020-03-01 00:00+00'",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    let delete_ms = started.elapsed().as_secs_f64() * 1000.0;
    // The space of deleted rows is only reusable after a vacuum, which a dropped partition
    // does not need.
    let started = Instant::now();
    sqlx::raw_sql("VACUUM audit.records_p202002")
        .execute(&mut *conn)
        .await?;
    let vacuum_ms = started.elapsed().as_secs_f64() * 1000.0;
    sqlx::raw_sql("DROP TABLE audit.records_p202002")
        .execute(&mut *conn)
        .await?;

    // The same month retired by maintenance: its partition is dropped.
    let started = Instant::now();
    let steps = pgstrata::audit::partitions::maintain(&mut conn, None, Some(12)).await?;
    let drop_ms = started.elapsed().as_secs_f64() * 1000.0;
    let dropped: Vec<&str> = steps
        .iter()
        .filter(|s| s.action == pgstrata::audit::MaintainAction::Dropped)
        .map(|s| s.partition.as_str())
        .collect();
    if deleted != rows as u64 || dropped != ["records_p202001"] {
        return Err(format!("retention setup went wrong: deleted {deleted}, dropped {dropped:?}").into());
    }
    Ok((drop_ms, delete_ms, vacuum_ms))
}
