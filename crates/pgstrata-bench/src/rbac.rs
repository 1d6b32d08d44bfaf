//! The rbac bench: `rbac.check` latency and throughput as a tenant grows from 10 to 100,000
//! grants, beside a naive join-based check run the same way on the same connections; and the
//! check's latency through a 20-level diamond-shaped role hierarchy (2^20 paths from bottom to
//! top), which resolution must walk visiting each role once.
//!
//! Everything happens in a scratch database `pgstrata_bench_<pid>`, dropped at the end. Data is
//! loaded by the superuser (past RLS and the grant guard); checks run as a LOGIN role that is
//! only granted `pgstrata_app`, so row-level security is part of every measured check.

use crate::scratch::{APP_ROLE, Scratch, create_app_role, percentile_ms, round};
use pgstrata::{DbError, TenantContext, TenantId, begin_tenant};
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};
use std::collections::BTreeMap;
use std::error::Error;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// What `main` passes in.
#[derive(Debug)]
pub struct Options {
    pub url: String,
    pub iterations: usize,
    pub concurrency: usize,
}

const WARMUP: usize = 100;
const THROUGHPUT_TIME: Duration = Duration::from_secs(2);
const GOAL_P50_MS: f64 = 0.3;
const FLATNESS_GOAL: f64 = 1.5;
const BASELINE_LABEL: &str = "naive join, no deny/wildcard/inheritance/scope/expiry";

/// The tenants of interest: (tenant number in the load script, grants it holds).
const SIZES: [(i32, i64); 3] = [(1, 10), (2, 1_000), (3, 100_000)];

/// What the measured principal (user 0 of each tenant of interest: a `member`, ten grants) is
/// asked, cycling, so that allow and deny paths, wildcards, inheritance, scopes and expiry all
/// run. `expect` is pgstrata's correct answer given the load script.
struct Case {
    permission: &'static str,
    resource: Option<(&'static str, &'static str)>,
    expect: bool,
    why: &'static str,
}

const CASES: [Case; 9] = [
    case("res3:update", None, true, "res3:*, member's *:update"),
    case("res3:delete", None, false, "deny beats res3:*"),
    case("res2:export", None, true, "inherited over 3 custom roles"),
    case("res2:delete", None, false, "inherited deny beats res2:*"),
    case("res8:delete", Some(("res8", "doc-1")), true, "resource-scoped grant"),
    case("res8:delete", None, false, "scope does not widen"),
    case("res1:read", None, true, "viewer's *:read, two paths"),
    case("res3:read", Some(("res3", "doc-secret")), false, "resource-scoped deny"),
    case("res5:export", None, false, "grant expired"),
];

const fn case(
    permission: &'static str,
    resource: Option<(&'static str, &'static str)>,
    expect: bool,
    why: &'static str,
) -> Case {
    Case {
        permission,
        resource,
        expect,
        why,
    }
}

/// Levels of the diamond: two roles per level, each inheriting from both roles of the next.
const DIAMOND_LEVELS: i32 = 20;
/// Goal for a check through the diamond.
const DIAMOND_GOAL_P50_MS: f64 = 1.0;
/// What the diamond's user is asked, cycling, with the correct answer: the top role's allow,
/// reached through 20 levels, and a permission nothing in the diamond gives.
const DIAMOND_CASES: [(&str, bool); 2] = [("res9:delete", true), ("res9:export", false)];

const CHECK_SQL: &str = "SELECT rbac.check('user', $1, $2, $3, $4)";

/// The check a team writes first. It ignores denies, wildcards, inheritance, scopes and expiry:
/// a speed reference, not a correct check.
const BASELINE_SQL: &str = "SELECT EXISTS (SELECT 1 FROM rbac.grants g \
     LEFT JOIN rbac.role_permissions rp ON rp.role_key = g.role_key \
     WHERE g.principal_id = $1 AND (g.permission = $2 OR rp.permission = $2))";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    Pgstrata,
    Baseline,
}

/// One subject measured at one tenant size.
#[derive(Debug, Clone)]
struct Measured {
    p50_ms: f64,
    p99_ms: f64,
    checks_per_s: f64,
    answers: Vec<bool>,
}

/// The final JSON line; a struct so that its keys keep this order.
#[derive(Debug, Serialize)]
struct Summary {
    bench: &'static str,
    p50_ms: BTreeMap<String, f64>,
    p99_ms: BTreeMap<String, f64>,
    checks_per_s: BTreeMap<String, u64>,
    baseline: &'static str,
    baseline_p50_ms: BTreeMap<String, f64>,
    baseline_checks_per_s: BTreeMap<String, u64>,
    flatness_p50_100k_over_10: f64,
    goal_p50_ms: f64,
    diamond_levels: i32,
    diamond_p50_ms: f64,
    diamond_p99_ms: f64,
    diamond_goal_p50_ms: f64,
}

/// The diamond's measurement.
#[derive(Debug, Clone)]
struct Diamond {
    p50_ms: f64,
    p99_ms: f64,
    answers: Vec<bool>,
}

/// Both subjects at one tenant size.
#[derive(Debug)]
struct Row {
    grants: i64,
    pgstrata: Measured,
    baseline: Measured,
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
    create_app_role(&admin).await?;

    eprintln!("Loading data...");
    let started = Instant::now();
    load(&admin).await?;
    let load_time = started.elapsed();
    let (tenants, users, grants): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM tenancy.tenants), (SELECT count(*) FROM tenancy.users), \
                (SELECT count(*) FROM rbac.grants)",
    )
    .fetch_one(&admin)
    .await?;

    let app = PgPoolOptions::new()
        .max_connections(u32::try_from(opts.concurrency)?)
        .connect_with(db.clone().username(APP_ROLE).password(APP_ROLE))
        .await?;
    // Open every connection now, so that connecting is not counted as checking.
    let mut open = Vec::with_capacity(opts.concurrency);
    for _ in 0..opts.concurrency {
        open.push(app.acquire().await?);
    }
    drop(open);

    let mut rows = Vec::new();
    for (tenant_no, expected_grants) in SIZES {
        let (tenant, principal, grants_in_tenant, principal_grants, member) = subject_of(&admin, tenant_no).await?;
        if grants_in_tenant != expected_grants || principal_grants != 10 || !member {
            return Err(format!(
                "load script out of step: tenant {tenant_no} holds {grants_in_tenant} grants \
                 (expected {expected_grants}); its principal holds {principal_grants} (expected 10), member: {member}"
            )
            .into());
        }
        eprintln!("Measuring at {grants_in_tenant} grants...");
        let pgstrata = measure(&app, Subject::Pgstrata, tenant, principal, opts).await?;
        let baseline = measure(&app, Subject::Baseline, tenant, principal, opts).await?;
        rows.push(Row {
            grants: grants_in_tenant,
            pgstrata,
            baseline,
        });
    }
    eprintln!("Measuring the {DIAMOND_LEVELS}-level diamond...");
    let diamond = measure_diamond(&app, opts).await?;
    app.close().await;
    admin.close().await;

    report(&rows, &diamond, opts, load_time, (tenants, users, grants))?;
    Ok(())
}

/// Set-based load, as the superuser. Ids are md5 of a name, so every run has the same data.
/// Tenants 1, 2 and 3 are the tenants of interest, with one user per ten grants (10, 1,000 and
/// 100,000 grants); the other 997 tenants have five members with two grants each, neighbours
/// that RLS and the indexes must skip.
const LOAD_SQL: &str = r#"
CREATE TEMP TABLE bench_users AS
SELECT t, j,
       md5('pgstrata-bench-tenant-' || t)::uuid AS tenant_id,
       md5('pgstrata-bench-user-' || t || '-' || j)::uuid AS user_id
  FROM generate_series(1, 1000) AS t,
       generate_series(0, CASE t WHEN 1 THEN 0 WHEN 2 THEN 99 WHEN 3 THEN 9999 ELSE 4 END) AS j;

-- res0..res9 x five actions: the catalog wildcards expand over.
INSERT INTO rbac.permissions (key, description)
SELECT 'res' || r || ':' || a, 'bench permission'
  FROM generate_series(0, 9) AS r, unnest(ARRAY['read', 'create', 'update', 'delete', 'export']) AS a;

INSERT INTO tenancy.tenants (id, slug, name)
SELECT md5('pgstrata-bench-tenant-' || t)::uuid, 'bench-' || t, 'Bench tenant ' || t
  FROM generate_series(1, 1000) AS t;

INSERT INTO tenancy.users (id, email, display_name)
SELECT user_id, 'u' || j || '@t' || t || '.bench.test', 'User ' || j FROM bench_users;

-- Every fourth user is a member (user 0, the measured one, among them), the rest viewers.
INSERT INTO tenancy.memberships (tenant_id, user_id, role)
SELECT tenant_id, user_id, CASE WHEN j % 4 = 0 THEN 'member' ELSE 'viewer' END FROM bench_users;

-- Custom roles of the tenants of interest: analyst_l3 > analyst_l2 > analyst_l1 > viewer.
INSERT INTO rbac.roles (tenant_id, key, description)
SELECT md5('pgstrata-bench-tenant-' || t)::uuid, r.key, r.description
  FROM generate_series(1, 3) AS t,
       (VALUES ('analyst_l1', 'Reads res1, everything on res2'),
               ('analyst_l2', 'Updates res4, may not delete res2'),
               ('analyst_l3', 'Creates res6, exports res7'),
               ('auditor', 'Reads everything'),
               ('exporter', 'Exports everything')) AS r(key, description);

INSERT INTO rbac.role_permissions (tenant_id, role_key, permission, effect)
SELECT md5('pgstrata-bench-tenant-' || t)::uuid, p.role_key, p.permission, p.effect
  FROM generate_series(1, 3) AS t,
       (VALUES ('analyst_l1', 'res1:read', 'allow'),
               ('analyst_l1', 'res2:*', 'allow'),
               ('analyst_l2', 'res4:update', 'allow'),
               ('analyst_l2', 'res2:delete', 'deny'),
               ('analyst_l3', 'res6:create', 'allow'),
               ('analyst_l3', 'res7:export', 'allow'),
               ('auditor', '*:read', 'allow'),
               ('exporter', '*:export', 'allow')) AS p(role_key, permission, effect);

INSERT INTO rbac.role_parents (tenant_id, role_key, parent_key)
SELECT md5('pgstrata-bench-tenant-' || t)::uuid, e.role_key, e.parent_key
  FROM generate_series(1, 3) AS t,
       (VALUES ('analyst_l1', 'viewer'),
               ('analyst_l2', 'analyst_l1'),
               ('analyst_l3', 'analyst_l2')) AS e(role_key, parent_key);

-- Ten grants per user of the tenants of interest: a role, wildcard and plain allows, a deny,
-- an expired and an expiring grant, three resource-scoped allows and a resource-scoped deny.
INSERT INTO rbac.grants (tenant_id, principal_type, principal_id, role_key, permission, effect,
                         resource_type, resource_id, expires_at)
SELECT u.tenant_id, 'user', u.user_id, g.role_key, g.permission, g.effect, g.resource_type, g.resource_id, g.expires_at
  FROM bench_users AS u,
       LATERAL (VALUES
           ('analyst_l3'::text, NULL::text, 'allow'::text, NULL::text, NULL::text, NULL::timestamptz),
           (NULL, 'res3:*', 'allow', NULL, NULL, NULL),
           (NULL, 'res' || (u.j % 10) || ':update', 'allow', NULL, NULL, NULL),
           (NULL, 'res3:delete', 'deny', NULL, NULL, NULL),
           (NULL, 'res5:export', 'allow', NULL, NULL, now() - interval '1 day'),
           (NULL, 'res' || ((u.j + 1) % 10) || ':create', 'allow', NULL, NULL, now() + interval '30 days'),
           (NULL, 'res8:delete', 'allow', 'res8', 'doc-' || (u.j * 3), NULL),
           (NULL, 'res8:delete', 'allow', 'res8', 'doc-' || (u.j * 3 + 1), NULL),
           (NULL, 'res8:delete', 'allow', 'res8', 'doc-' || (u.j * 3 + 2), NULL),
           (NULL, 'res3:read', 'deny', 'res3', 'doc-secret', NULL)
       ) AS g(role_key, permission, effect, resource_type, resource_id, expires_at)
 WHERE u.t <= 3;

-- Two grants per user elsewhere.
INSERT INTO rbac.grants (tenant_id, principal_type, principal_id, role_key, permission)
SELECT tenant_id, 'user', user_id, NULL, 'res' || (j % 10) || ':read' FROM bench_users WHERE t > 3
UNION ALL
SELECT tenant_id, 'user', user_id, 'member', NULL FROM bench_users WHERE t > 3;

DROP TABLE bench_users;

-- A 20-level diamond in neighbour tenant 4: dx<l> and dy<l> each inherit from dx<l+1> and
-- dy<l+1>; dx20 holds res9:delete; one user holds dx0 (2^20 paths lead from it to dx20).
INSERT INTO tenancy.users (id, email, display_name)
VALUES (md5('pgstrata-bench-user-diamond')::uuid, 'diamond@t4.bench.test', 'Diamond');
INSERT INTO rbac.roles (tenant_id, key, description)
SELECT md5('pgstrata-bench-tenant-4')::uuid, s || l, 'diamond level ' || l
  FROM generate_series(0, 20) AS l, unnest(ARRAY['dx', 'dy']) AS s;
INSERT INTO rbac.role_permissions (tenant_id, role_key, permission)
VALUES (md5('pgstrata-bench-tenant-4')::uuid, 'dx20', 'res9:delete');
INSERT INTO rbac.role_parents (tenant_id, role_key, parent_key)
SELECT md5('pgstrata-bench-tenant-4')::uuid, a || l, b || (l + 1)
  FROM generate_series(0, 19) AS l, unnest(ARRAY['dx', 'dy']) AS a, unnest(ARRAY['dx', 'dy']) AS b
 ORDER BY l DESC;
INSERT INTO rbac.grants (tenant_id, principal_type, principal_id, role_key)
VALUES (md5('pgstrata-bench-tenant-4')::uuid, 'user', md5('pgstrata-bench-user-diamond')::uuid, 'dx0');
"#;

async fn load(admin: &PgPool) -> Result<(), sqlx::Error> {
    // One connection: the script's temporary table lives in its session.
    let mut conn = admin.acquire().await?;
    sqlx::raw_sql(LOAD_SQL).execute(&mut *conn).await?;
    // Fresh statistics, as a long-running database would have.
    sqlx::query("ANALYZE").execute(&mut *conn).await?;
    Ok(())
}

/// The tenant and measured principal of a tenant of interest, with what the load gave them:
/// (tenant, principal, grants in the tenant, grants of the principal, principal is a member).
async fn subject_of(admin: &PgPool, tenant_no: i32) -> Result<(Uuid, Uuid, i64, i64, bool), sqlx::Error> {
    sqlx::query_as(
        "WITH ids AS (SELECT md5('pgstrata-bench-tenant-' || $1::int)::uuid AS tenant_id,
                             md5('pgstrata-bench-user-' || $1::int || '-0')::uuid AS user_id)
         SELECT ids.tenant_id, ids.user_id,
                (SELECT count(*) FROM rbac.grants g WHERE g.tenant_id = ids.tenant_id),
                (SELECT count(*) FROM rbac.grants g
                  WHERE g.tenant_id = ids.tenant_id AND g.principal_id = ids.user_id),
                EXISTS (SELECT 1 FROM tenancy.memberships m
                         WHERE m.tenant_id = ids.tenant_id AND m.user_id = ids.user_id)
           FROM ids",
    )
    .bind(tenant_no)
    .fetch_one(admin)
    .await
}

/// One round trip: the subject's answer to a case.
async fn ask(conn: &mut PgConnection, subject: Subject, principal: Uuid, case: &Case) -> Result<bool, sqlx::Error> {
    match subject {
        Subject::Pgstrata => {
            sqlx::query_scalar(CHECK_SQL)
                .bind(principal)
                .bind(case.permission)
                .bind(case.resource.map(|r| r.0))
                .bind(case.resource.map(|r| r.1))
                .fetch_one(conn)
                .await
        }
        Subject::Baseline => {
            sqlx::query_scalar(BASELINE_SQL)
                .bind(principal)
                .bind(case.permission)
                .fetch_one(conn)
                .await
        }
    }
}

/// Latency on one connection in one transaction (the tenant set once, as a request handler
/// would), then throughput on `concurrency` connections.
async fn measure(
    app: &PgPool,
    subject: Subject,
    tenant: Uuid,
    principal: Uuid,
    opts: &Options,
) -> Result<Measured, Box<dyn Error>> {
    let ctx = TenantContext::tenant(TenantId(tenant));
    let mut tx = begin_tenant(app, &ctx).await?;
    let mut answers = Vec::with_capacity(CASES.len());
    for case in &CASES {
        answers.push(ask(&mut tx, subject, principal, case).await?);
    }
    // Warm-up: the statement cache, PL/pgSQL's cached plans, the buffer cache.
    for i in 0..WARMUP {
        ask(&mut tx, subject, principal, &CASES[i % CASES.len()]).await?;
    }
    let mut samples = Vec::with_capacity(opts.iterations);
    for i in 0..opts.iterations {
        let case = &CASES[i % CASES.len()];
        let started = Instant::now();
        ask(&mut tx, subject, principal, case).await?;
        samples.push(started.elapsed());
    }
    tx.rollback().await?;
    samples.sort_unstable();

    Ok(Measured {
        p50_ms: percentile_ms(&samples, 0.50),
        p99_ms: percentile_ms(&samples, 0.99),
        checks_per_s: throughput(app, subject, ctx, principal, opts.concurrency).await?,
        answers,
    })
}

/// Latency of checks through the diamond, on one connection in one transaction.
async fn measure_diamond(app: &PgPool, opts: &Options) -> Result<Diamond, Box<dyn Error>> {
    let tenant: Uuid = sqlx::query_scalar("SELECT md5('pgstrata-bench-tenant-4')::uuid")
        .fetch_one(app)
        .await?;
    let user: Uuid = sqlx::query_scalar("SELECT md5('pgstrata-bench-user-diamond')::uuid")
        .fetch_one(app)
        .await?;
    let mut tx = begin_tenant(app, &TenantContext::tenant(TenantId(tenant))).await?;
    let ask = |permission: &'static str| {
        sqlx::query_scalar::<_, bool>(CHECK_SQL)
            .bind(user)
            .bind(permission)
            .bind(None::<&str>)
            .bind(None::<&str>)
    };
    let mut answers = Vec::new();
    for (permission, _) in DIAMOND_CASES {
        answers.push(ask(permission).fetch_one(&mut *tx).await?);
    }
    for i in 0..WARMUP {
        ask(DIAMOND_CASES[i % DIAMOND_CASES.len()].0)
            .fetch_one(&mut *tx)
            .await?;
    }
    let mut samples = Vec::with_capacity(opts.iterations);
    for i in 0..opts.iterations {
        let started = Instant::now();
        ask(DIAMOND_CASES[i % DIAMOND_CASES.len()].0)
            .fetch_one(&mut *tx)
            .await?;
        samples.push(started.elapsed());
    }
    tx.rollback().await?;
    samples.sort_unstable();
    Ok(Diamond {
        p50_ms: percentile_ms(&samples, 0.50),
        p99_ms: percentile_ms(&samples, 0.99),
        answers,
    })
}

/// Checks per second with `concurrency` connections asking back to back for THROUGHPUT_TIME,
/// each in its own transaction with the tenant set.
async fn throughput(
    app: &PgPool,
    subject: Subject,
    ctx: TenantContext,
    principal: Uuid,
    concurrency: usize,
) -> Result<f64, Box<dyn Error>> {
    let started = Instant::now();
    let deadline = started + THROUGHPUT_TIME;
    let mut workers = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let (app, ctx) = (app.clone(), ctx.clone());
        workers.push(tokio::spawn(async move {
            let mut tx = begin_tenant(&app, &ctx).await?;
            let mut done = 0usize;
            while Instant::now() < deadline {
                // Workers start at different cases so that they do not ask in lockstep.
                ask(&mut tx, subject, principal, &CASES[(worker + done) % CASES.len()]).await?;
                done += 1;
            }
            tx.rollback().await?;
            Ok::<usize, DbError>(done)
        }));
    }
    let mut total = 0;
    for worker in workers {
        total += worker.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

fn verdict(allowed: bool) -> &'static str {
    if allowed { "allow" } else { "deny" }
}

fn report(
    rows: &[Row],
    diamond: &Diamond,
    opts: &Options,
    load_time: Duration,
    (tenants, users, grants): (i64, i64, i64),
) -> Result<(), serde_json::Error> {
    println!();
    println!(
        "rbac bench: loaded {tenants} tenants, {users} users, {grants} grants in {:.1} s",
        load_time.as_secs_f64()
    );
    println!(
        "latency: {} sequential checks on one connection, one transaction, tenant set once (after {WARMUP} warm-up)",
        opts.iterations
    );
    println!(
        "checks/s: {} connections for {} s, each in one transaction with the tenant set",
        opts.concurrency,
        THROUGHPUT_TIME.as_secs()
    );
    println!("both run as a pgstrata_app login role, so RLS applies to every check");
    println!("baseline: {BASELINE_LABEL} -- a speed reference, not a correct check");
    println!();
    println!(
        "{:>8} | {:>12} {:>8} {:>10} | {:>12} {:>8} {:>10}",
        "grants", "pgstrata p50", "p99", "checks/s", "baseline p50", "p99", "checks/s"
    );
    println!(
        "{:>8} | {:>12} {:>8} {:>10} | {:>12} {:>8} {:>10}",
        "", "ms", "ms", "", "ms", "ms", ""
    );
    println!("{}", "-".repeat(80));
    for r in rows {
        println!(
            "{:>8} | {:>12.4} {:>8.4} {:>10.0} | {:>12.4} {:>8.4} {:>10.0}",
            r.grants,
            r.pgstrata.p50_ms,
            r.pgstrata.p99_ms,
            r.pgstrata.checks_per_s,
            r.baseline.p50_ms,
            r.baseline.p99_ms,
            r.baseline.checks_per_s
        );
    }

    // The answers, so a fast but wrong run does not go unnoticed.
    println!();
    println!(
        "answers of the measured principal (at each size: {}):",
        sizes_label(rows)
    );
    println!(
        "  {:<32} {:<32} {:<8} {:<20} {:<20}",
        "asked", "why", "expected", "pgstrata", "baseline"
    );
    let mut wrong = 0;
    for (i, case) in CASES.iter().enumerate() {
        let asked = match case.resource {
            Some((rt, rid)) => format!("{} on {rt}/{rid}", case.permission),
            None => case.permission.to_string(),
        };
        let answers = |pick: fn(&Row) -> &Measured| {
            rows.iter()
                .map(|r| verdict(pick(r).answers.get(i).copied().unwrap_or(false)))
                .collect::<Vec<_>>()
                .join("/")
        };
        wrong += rows
            .iter()
            .filter(|r| r.pgstrata.answers.get(i) != Some(&case.expect))
            .count();
        println!(
            "  {:<32} {:<32} {:<8} {:<20} {:<20}",
            asked,
            case.why,
            verdict(case.expect),
            answers(|r| &r.pgstrata),
            answers(|r| &r.baseline)
        );
    }
    if wrong > 0 {
        println!("  WARNING: pgstrata gave {wrong} unexpected answer(s)");
    }

    let p50 = |grants: i64| {
        rows.iter()
            .find(|r| r.grants == grants)
            .map_or(f64::NAN, |r| r.pgstrata.p50_ms)
    };
    let flatness = p50(100_000) / p50(10);
    println!();
    println!(
        "flatness: pgstrata p50 at 100000 grants / at 10 grants = {flatness:.2}x (goal: within {FLATNESS_GOAL}x): {}",
        if flatness <= FLATNESS_GOAL { "yes" } else { "no" }
    );
    let missed: Vec<String> = rows
        .iter()
        .filter(|r| r.pgstrata.p50_ms > GOAL_P50_MS)
        .map(|r| r.grants.to_string())
        .collect();
    println!(
        "goal p50 <= {GOAL_P50_MS} ms: {}",
        if missed.is_empty() {
            "met at every size".to_string()
        } else {
            format!("missed at {} grants", missed.join(", "))
        }
    );

    let diamond_right = DIAMOND_CASES
        .iter()
        .zip(&diamond.answers)
        .all(|((_, expected), got)| expected == got);
    println!();
    println!(
        "diamond: {DIAMOND_LEVELS} levels, 2^{DIAMOND_LEVELS} paths: check p50 {:.4} ms, p99 {:.4} ms \
         (goal p50 < {DIAMOND_GOAL_P50_MS} ms: {}); answers {} (expected {})",
        diamond.p50_ms,
        diamond.p99_ms,
        if diamond.p50_ms < DIAMOND_GOAL_P50_MS {
            "met"
        } else {
            "missed"
        },
        diamond
            .answers
            .iter()
            .map(|a| verdict(*a))
            .collect::<Vec<_>>()
            .join("/"),
        DIAMOND_CASES
            .iter()
            .map(|(_, e)| verdict(*e))
            .collect::<Vec<_>>()
            .join("/"),
    );
    if !diamond_right {
        println!("  WARNING: pgstrata gave an unexpected answer through the diamond");
    }

    // Keys of the per-size maps sort as "10" < "1000" < "100000", the order wanted.
    let ms = |f: fn(&Row) -> f64| rows.iter().map(|r| (r.grants.to_string(), round(f(r), 4))).collect();
    let per_s = |f: fn(&Row) -> f64| {
        rows.iter()
            .map(|r| (r.grants.to_string(), f(r).round() as u64))
            .collect()
    };
    let summary = Summary {
        bench: "rbac",
        p50_ms: ms(|r| r.pgstrata.p50_ms),
        p99_ms: ms(|r| r.pgstrata.p99_ms),
        checks_per_s: per_s(|r| r.pgstrata.checks_per_s),
        baseline: BASELINE_LABEL,
        baseline_p50_ms: ms(|r| r.baseline.p50_ms),
        baseline_checks_per_s: per_s(|r| r.baseline.checks_per_s),
        flatness_p50_100k_over_10: round(flatness, 3),
        goal_p50_ms: GOAL_P50_MS,
        diamond_levels: DIAMOND_LEVELS,
        diamond_p50_ms: round(diamond.p50_ms, 4),
        diamond_p99_ms: round(diamond.p99_ms, 4),
        diamond_goal_p50_ms: DIAMOND_GOAL_P50_MS,
    };
    let line = serde_json::to_string(&summary)?;
    println!();
    println!("{line}");
    Ok(())
}

fn sizes_label(rows: &[Row]) -> String {
    rows.iter().map(|r| r.grants.to_string()).collect::<Vec<_>>().join("/")
}
