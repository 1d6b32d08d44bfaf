//! The RLS bench: what row-level security costs each module's hot queries. Every query runs as
//! the application role through the policies and, interleaved in the same run, as a role that
//! bypasses RLS (the superuser) with the tenant predicate written out; a function that takes
//! the tenant as an argument is called with it on both sides.
//!
//! Three tenants of interest hold 100, 10,000 and 100,000 rows in every module's tables (users
//! and members included), beside 1,000 neighbour tenants of 100 members each. For each query and
//! size, `--rounds` rounds run both subjects for `--phase-ms` each on `--concurrency`
//! connections (8 by default), each connection in one transaction with the tenant and actor
//! set, looping over the prepared statement as pgbench does; the subject that goes first
//! alternates between rounds. The ratio of a round is the bypassing role's queries per second
//! over the application role's; each query and size reports the median of its rounds. Before
//! measuring, both subjects' answers are compared, so a fast but wrong policy does not pass.
//!
//! Everything happens in a scratch database `pgstrata_bench_<pid>`, dropped at the end.

use crate::scratch::{APP_ROLE, Scratch, create_app_role, round};
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgConnection, PgPool, Row};
use std::collections::BTreeMap;
use std::error::Error;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// What `main` passes in.
#[derive(Debug)]
pub struct Options {
    pub url: String,
    pub clients: usize,
    pub phase: Duration,
    pub rounds: usize,
    pub keep_database: bool,
    /// Print each query's plan as the application role at the largest size, then measure.
    pub explain: bool,
}

/// Rows of each tenant of interest, in every module's tables.
const SIZES: [i64; 3] = [100, 10_000, 100_000];
/// The tenants of interest are numbered 1, 2 and 3 in the load script, one per size.
const TENANT_NOS: [i64; 3] = [1, 2, 3];
const GOAL_RATIO: f64 = 1.10;
const GOAL_MEDIAN: f64 = 1.03;
const BASELINE_LABEL: &str = "the same query with the tenant predicate written out, as a role that bypasses RLS";

/// What a query binds, taken from the tenant of interest it runs in.
#[derive(Debug, Clone, Copy)]
enum Arg {
    Tenant,
    Actor,
    /// The nil uuid: the keyset start of a first page.
    Nil,
    /// A member's email, in another case than stored.
    MemberEmail,
    /// The address of a pending invitation, in another case than stored.
    InviteeEmail,
    /// An invitation's token.
    Token,
    /// A job of the tenant.
    Job,
    /// A resource with tens of audit records.
    Resource,
    /// An actor with audit records.
    AuditActor,
    /// Start and end of a ten-day window of audit records.
    From,
    To,
}

/// A hot query: the application role's statement (through the policies) and the baseline's.
struct Query {
    module: &'static str,
    name: &'static str,
    rls: &'static str,
    rls_args: &'static [Arg],
    base: &'static str,
    base_args: &'static [Arg],
}

const fn same(module: &'static str, name: &'static str, sql: &'static str, args: &'static [Arg]) -> Query {
    Query {
        module,
        name,
        rls: sql,
        rls_args: args,
        base: sql,
        base_args: args,
    }
}

use Arg::*;

/// Every module's tenant-scoped hot queries (queries.md). Where the crate's own builder already
/// names the tenant, both sides run the same statement and only the role differs.
static QUERIES: [Query; 19] = [
    same(
        "tenancy",
        "tenant-by-id",
        "SELECT * FROM tenancy.tenants WHERE id = $1",
        &[Tenant],
    ),
    same(
        "tenancy",
        "membership-of-user",
        "SELECT id, role FROM tenancy.memberships WHERE tenant_id = $1 AND user_id = $2",
        &[Tenant, Actor],
    ),
    same(
        "tenancy",
        "memberships-page",
        "SELECT * FROM tenancy.memberships WHERE tenant_id = $1 AND id > $2 ORDER BY tenant_id, id LIMIT 20",
        &[Tenant, Nil],
    ),
    Query {
        module: "tenancy",
        name: "member-directory",
        // The product's directory query (memberships::directory_stmt) reads the view.
        rls: "SELECT id, user_id, role, email, display_name FROM tenancy.member_directory \
               WHERE tenant_id = $1 AND id > $2 LIMIT 20",
        rls_args: &[Tenant, Nil],
        base: "SELECT m.id, m.user_id, m.role, u.email, u.display_name \
                 FROM tenancy.memberships m JOIN tenancy.users u ON u.id = m.user_id \
                WHERE m.tenant_id = $1 AND m.id > $2 ORDER BY m.tenant_id, m.id LIMIT 20",
        base_args: &[Tenant, Nil],
    },
    Query {
        module: "tenancy",
        name: "user-by-email",
        rls: "SELECT * FROM tenancy.users WHERE email_key = lower($1)",
        rls_args: &[MemberEmail],
        base: "SELECT * FROM tenancy.users u WHERE u.email_key = lower($1) \
                 AND (u.id = $2 OR EXISTS (SELECT 1 FROM tenancy.memberships m \
                                            WHERE m.tenant_id = $3 AND m.user_id = u.id))",
        base_args: &[MemberEmail, Actor, Tenant],
    },
    same(
        "tenancy",
        "pending-invitation-by-email",
        "SELECT id, expires_at FROM tenancy.invitations \
          WHERE tenant_id = $1 AND email_key = lower($2) AND status = 'pending'",
        &[Tenant, InviteeEmail],
    ),
    same(
        "tenancy",
        "invitation-by-token",
        "SELECT * FROM tenancy.invitations WHERE tenant_id = $1 AND token_hash = sha256(convert_to($2, 'UTF8'))",
        &[Tenant, Token],
    ),
    Query {
        module: "rbac",
        name: "check-in-policy",
        rls: "SELECT id, title FROM bench.documents WHERE tenant_id = $1 ORDER BY tenant_id, id LIMIT 20",
        rls_args: &[Tenant],
        base: "SELECT id, title FROM bench.documents \
                WHERE tenant_id = $1 AND (SELECT rbac.check('user', $2, 'doc:read')) \
                ORDER BY tenant_id, id LIMIT 20",
        base_args: &[Tenant, Actor],
    },
    same("rbac", "check", "SELECT rbac.check('user', $1, 'doc:read')", &[Actor]),
    same(
        "audit",
        "resource-history",
        "SELECT id, occurred_at, actor_id, action, old_values, new_values FROM audit.records \
          WHERE tenant_id = $1 AND resource_type = 'bench.documents' AND resource_id = $2 \
          ORDER BY occurred_at DESC, id DESC LIMIT 50",
        &[Tenant, Resource],
    ),
    same(
        "audit",
        "actor-activity",
        "SELECT id, occurred_at, action, resource_type, resource_id FROM audit.records \
          WHERE tenant_id = $1 AND actor_id = $2 ORDER BY occurred_at DESC, id DESC LIMIT 50",
        &[Tenant, AuditActor],
    ),
    same(
        "audit",
        "time-range",
        "SELECT id, occurred_at, actor_id, action, resource_type, resource_id FROM audit.records \
          WHERE tenant_id = $1 AND occurred_at >= $2::timestamptz AND occurred_at < $3::timestamptz \
          ORDER BY occurred_at DESC, id DESC LIMIT 50",
        &[Tenant, From, To],
    ),
    Query {
        module: "queue",
        name: "job-by-id",
        rls: "SELECT * FROM queue.jobs WHERE id = $1",
        rls_args: &[Job],
        base: "SELECT * FROM queue.jobs WHERE id = $1 AND tenant_id = $2",
        base_args: &[Job, Tenant],
    },
    Query {
        module: "queue",
        name: "stats",
        rls: "SELECT * FROM queue.stats()",
        rls_args: &[],
        // queue.stats() without the policy counts every tenant's jobs: its body (queue V6), with
        // the tenant.
        base: "SELECT s.queue, s.state, s.jobs, s.age FROM ( \
                 SELECT j.queue, j.state, count(*) AS jobs, now() - min(j.run_at) AS age \
                   FROM queue.jobs j WHERE j.state = 'available' AND j.tenant_id = $1 GROUP BY j.queue, j.state \
                 UNION ALL SELECT j.queue, j.state, count(*), NULL::interval \
                   FROM queue.jobs j WHERE j.state IN ('scheduled', 'retryable') AND j.tenant_id = $1 \
                  GROUP BY j.queue, j.state \
                 UNION ALL SELECT j.queue, j.state, count(*), NULL::interval \
                   FROM queue.jobs j WHERE j.lease_expires_at IS NOT NULL AND j.state = 'running' \
                    AND j.tenant_id = $1 GROUP BY j.queue, j.state \
                 UNION ALL SELECT j.queue, j.state, count(*), NULL::interval \
                   FROM queue.jobs j WHERE j.finalized_at IS NOT NULL AND j.finalized_at > now() - interval '1 day' \
                    AND j.state IN ('completed', 'discarded', 'cancelled') AND j.tenant_id = $1 \
                  GROUP BY j.queue, j.state) s \
               ORDER BY s.queue, s.state",
        base_args: &[Tenant],
    },
    same(
        "billing",
        "has-feature",
        "SELECT billing.tenant_has_feature($1, 'seats')",
        &[Tenant],
    ),
    same(
        "billing",
        "current-plan",
        "SELECT * FROM billing.tenant_current_plan($1)",
        &[Tenant],
    ),
    // events (queries.md): the rollups of the last 30 days, and a user's recent events.
    same(
        "events",
        "daily-counts",
        "SELECT tenant_id, day, name, events FROM events.daily_counts \
          WHERE tenant_id = $1 AND day >= current_date - 30 ORDER BY day, name",
        &[Tenant],
    ),
    same(
        "events",
        "unique-actors",
        "SELECT tenant_id, day, actors FROM events.daily_uniques \
          WHERE tenant_id = $1 AND day >= current_date - 30 ORDER BY day",
        &[Tenant],
    ),
    same(
        "events",
        "recent-events",
        "SELECT tenant_id, event_id, occurred_at, received_at, name, actor, properties, session_id, source \
           FROM events.events WHERE tenant_id = $1 AND actor = 'user-7' \
          ORDER BY occurred_at DESC, event_id DESC LIMIT 50",
        &[Tenant],
    ),
];

/// A tenant of interest and the keys its queries bind.
#[derive(Debug, Clone)]
struct Subject {
    size: i64,
    tenant: Uuid,
    actor: Uuid,
    member_email: String,
    invitee_email: String,
    token: String,
    job: i64,
    resource: String,
    audit_actor: Uuid,
    from: String,
    to: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Rls,
    Base,
}

/// One query at one size: queries per second of each side in each round.
#[derive(Debug, Default, Clone)]
struct Cell {
    rls_qps: Vec<f64>,
    base_qps: Vec<f64>,
    rows: usize,
}

impl Cell {
    fn ratios(&self) -> Vec<f64> {
        self.rls_qps
            .iter()
            .zip(&self.base_qps)
            .map(|(r, b)| if *r > 0.0 { b / r } else { f64::INFINITY })
            .collect()
    }

    fn ratio(&self) -> f64 {
        median(self.ratios())
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// The final JSON line; a struct so that its keys keep this order.
#[derive(Debug, Serialize)]
struct Summary {
    bench: &'static str,
    /// Per query ("module.name"), per tenant size: the median ratio of its rounds.
    ratios: BTreeMap<String, BTreeMap<String, f64>>,
    /// The worst of them, and where.
    ratio: f64,
    worst: String,
    median_ratio: f64,
    goal_ratio: f64,
    goal_median_ratio: f64,
    baseline: &'static str,
    clients: usize,
    rounds: usize,
    phase_ms: u128,
}

/// Creates the scratch database, runs the bench in it, and drops it (unless kept).
pub async fn run(opts: &Options) -> Result<(), Box<dyn Error>> {
    let scratch = Scratch::create(&opts.url).await?;
    let outcome = bench(&scratch.options(), opts).await;
    scratch.finish(outcome, opts.keep_database).await
}

async fn bench(db: &PgConnectOptions, opts: &Options) -> Result<(), Box<dyn Error>> {
    let admin = PgPoolOptions::new().max_connections(2).connect_with(db.clone()).await?;
    pgstrata::Backend::all()?.migrate(&admin).await?;
    create_app_role(&admin).await?;

    eprintln!("Loading data...");
    let started = Instant::now();
    load(&admin).await?;
    let load_time = started.elapsed();
    let (tenants, users) = sqlx::query_as::<_, (i64, i64)>(
        "SELECT (SELECT count(*) FROM tenancy.tenants), (SELECT count(*) FROM tenancy.users)",
    )
    .fetch_one(&admin)
    .await?;
    eprintln!(
        "Loaded {tenants} tenants, {users} users in {:.1} s.",
        load_time.as_secs_f64()
    );
    let mut subjects = Vec::new();
    for (no, size) in TENANT_NOS.into_iter().zip(SIZES) {
        subjects.push(subject(&admin, no, size).await?);
    }
    admin.close().await;

    let pool = |options: PgConnectOptions| {
        PgPoolOptions::new()
            .max_connections(u32::try_from(opts.clients).unwrap_or(8))
            .min_connections(u32::try_from(opts.clients).unwrap_or(8))
            .connect_with(options)
    };
    let app = pool(db.clone().username(APP_ROLE).password(APP_ROLE)).await?;
    let base = pool(db.clone()).await?;

    // Both sides' answers, compared before anything is timed.
    let mut cells: BTreeMap<(usize, usize), Cell> = BTreeMap::new();
    let mut wrong = Vec::new();
    for (qi, q) in QUERIES.iter().enumerate() {
        for (si, s) in subjects.iter().enumerate() {
            let rls = answer(&app, Side::Rls, q, s).await?;
            let bas = answer(&base, Side::Base, q, s).await?;
            if rls != bas || rls.is_empty() {
                wrong.push(format!(
                    "{}.{} at {}: the application role read {} row(s), the baseline {}{}",
                    q.module,
                    q.name,
                    s.size,
                    rls.len(),
                    bas.len(),
                    if rls == bas {
                        " (expected some)"
                    } else {
                        " (different rows)"
                    }
                ));
            }
            cells.insert(
                (qi, si),
                Cell {
                    rows: rls.len(),
                    ..Cell::default()
                },
            );
        }
    }
    if !wrong.is_empty() {
        return Err(format!("the two sides disagree:\n  {}", wrong.join("\n  ")).into());
    }

    if opts.explain
        && let Some(largest) = subjects.last()
    {
        explain(&app, largest).await?;
    }

    // Warm-up: every statement prepared on every connection, the caches filled.
    eprintln!("Warming up...");
    for q in &QUERIES {
        for s in &subjects {
            for (pool, side) in [(&app, Side::Rls), (&base, Side::Base)] {
                phase(pool, side, q, s, opts.clients, Duration::from_millis(50)).await?;
            }
        }
    }

    let total = QUERIES.len() * subjects.len();
    for r in 0..opts.rounds {
        eprintln!("Round {} of {} ({total} queries and sizes)...", r + 1, opts.rounds);
        for (qi, q) in QUERIES.iter().enumerate() {
            for (si, s) in subjects.iter().enumerate() {
                let order = if (r + qi + si) % 2 == 0 {
                    [Side::Rls, Side::Base]
                } else {
                    [Side::Base, Side::Rls]
                };
                for side in order {
                    let pool = if side == Side::Rls { &app } else { &base };
                    let qps = phase(pool, side, q, s, opts.clients, opts.phase).await?;
                    let cell = cells.entry((qi, si)).or_default();
                    match side {
                        Side::Rls => cell.rls_qps.push(qps),
                        Side::Base => cell.base_qps.push(qps),
                    }
                }
            }
        }
    }
    app.close().await;
    base.close().await;

    report(&cells, &subjects, opts, load_time, (tenants, users))?;
    Ok(())
}

/// Set-based load, as the superuser, with triggers off (the guards and the audit capture are
/// not what is measured). Tenant k of interest has `size` users, members, invitations, rbac
/// grants, documents, audit records, jobs and invoices; ids are built from the row's number so
/// that they grow in insertion order like UUIDv7 and every run has the same data.
const LOAD_SQL: &str = r#"
SET session_replication_role = replica;

CREATE TEMP TABLE bench_sizes (t int, size int);
INSERT INTO bench_sizes VALUES (1, 100), (2, 10000), (3, 100000);
INSERT INTO bench_sizes SELECT t, 100 FROM generate_series(1001, 2000) t;

CREATE TEMP TABLE bench_rows AS
SELECT s.t, j, s.t <= 3 AS of_interest,
       ('00000000-0000-7000-8000-' || lpad(to_hex(s.t), 12, '0'))::uuid AS tenant_id,
       (lpad(to_hex(j), 8, '0') || '-0001-7000-8000-' || lpad(to_hex(s.t), 12, '0'))::uuid AS user_id,
       (lpad(to_hex(j), 8, '0') || '-0002-7000-8000-' || lpad(to_hex(s.t), 12, '0'))::uuid AS membership_id,
       (lpad(to_hex(j), 8, '0') || '-0003-7000-8000-' || lpad(to_hex(s.t), 12, '0'))::uuid AS invitation_id
  FROM bench_sizes s, generate_series(0, s.size - 1) j;

INSERT INTO tenancy.tenants (id, slug, name)
SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(t), 12, '0'))::uuid, 'bench-' || t, 'Bench tenant ' || t
  FROM bench_sizes;

INSERT INTO tenancy.users (id, email, display_name)
SELECT user_id, 'u' || j || '@t' || t || '.bench.test', 'User ' || j FROM bench_rows ORDER BY t, j;

INSERT INTO tenancy.memberships (tenant_id, id, user_id, role)
SELECT tenant_id, membership_id, user_id, CASE WHEN j = 0 THEN 'owner' WHEN j % 10 = 0 THEN 'admin' ELSE 'member' END
  FROM bench_rows ORDER BY t, j;

-- Three in four invitations pending.
INSERT INTO tenancy.invitations (tenant_id, id, email, token_hash, status, expires_at, invited_by, accepted_by, accepted_at)
SELECT tenant_id, invitation_id, 'invitee' || j || '@t' || t || '.bench.test',
       sha256(convert_to('token-' || t || '-' || j, 'UTF8')),
       CASE WHEN j % 4 = 3 THEN 'accepted' ELSE 'pending' END, now() + interval '7 days',
       (lpad(to_hex(0), 8, '0') || '-0001-7000-8000-' || lpad(to_hex(t), 12, '0'))::uuid,
       CASE WHEN j % 4 = 3 THEN user_id END, CASE WHEN j % 4 = 3 THEN now() END
  FROM bench_rows WHERE of_interest ORDER BY t, j;

-- rbac: a custom role that reads documents, held by every member of the tenants of interest.
INSERT INTO rbac.permissions (key, description) VALUES ('doc:read', 'Read documents');
INSERT INTO rbac.roles (tenant_id, key, description)
SELECT tenant_id, 'reader', 'Reads documents' FROM bench_rows WHERE of_interest AND j = 0;
INSERT INTO rbac.role_permissions (tenant_id, role_key, permission)
SELECT tenant_id, 'reader', 'doc:read' FROM bench_rows WHERE of_interest AND j = 0;
INSERT INTO rbac.grants (tenant_id, principal_type, principal_id, role_key)
SELECT tenant_id, 'user', user_id, 'reader' FROM bench_rows WHERE of_interest ORDER BY t, j;

-- An application table read through rbac.check inside its policy, as README.md shows.
CREATE SCHEMA bench;
GRANT USAGE ON SCHEMA bench TO pgstrata_app;
CREATE TABLE bench.documents (
    tenant_id uuid   NOT NULL,
    id        bigint NOT NULL,
    title     text   NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
ALTER TABLE bench.documents ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY readers ON bench.documents FOR SELECT USING (
    tenant_id = (SELECT tenancy.current_tenant_id())
    AND (SELECT rbac.check('user', (SELECT tenancy.current_actor_id()), 'doc:read')));
GRANT SELECT ON bench.documents TO pgstrata_app;
INSERT INTO bench.documents (tenant_id, id, title)
SELECT tenant_id, j, 'Document ' || j FROM bench_rows WHERE of_interest ORDER BY t, j;

-- audit: the last 60 days, 20 records per resource, 10 actors.
SELECT audit.create_partition((date_trunc('month', now()) - make_interval(months => m))::date)
  FROM generate_series(1, 3) m;
INSERT INTO audit.records (tenant_id, occurred_at, actor_id, request_id, action, resource_type, resource_id, new_values, origin)
SELECT tenant_id,
       now() - interval '60 days' + (j::float8 / size) * interval '60 days',
       (lpad(to_hex(j % 10), 8, '0') || '-0001-7000-8000-' || lpad(to_hex(t), 12, '0'))::uuid,
       'req-' || j, (ARRAY['insert', 'update', 'update', 'delete'])[j % 4 + 1],
       'bench.documents', (j % greatest(size / 20, 1))::text, jsonb_build_object('n', j), 'capture'
  FROM bench_rows JOIN bench_sizes USING (t) WHERE of_interest ORDER BY t, j;

-- queue: nine in ten jobs completed, the rest ready.
INSERT INTO queue.jobs (kind, tenant_id, payload, state, attempt, finalized_at)
SELECT 'work', tenant_id, jsonb_build_object('n', j),
       CASE WHEN j % 10 = 0 THEN 'available' ELSE 'completed' END,
       CASE WHEN j % 10 = 0 THEN 0 ELSE 1 END,
       CASE WHEN j % 10 = 0 THEN NULL ELSE now() - interval '1 hour' END
  FROM bench_rows WHERE of_interest ORDER BY t, j;

-- billing: one plan with the 'seats' feature; each tenant of interest a linked customer with an
-- active and a cancelled subscription, an 'sso' entitlement, and `size` invoices.
INSERT INTO billing.products (id, name, active, last_event_id) VALUES ('prod_pro', 'Pro', true, 'evt_seed');
INSERT INTO billing.prices (id, product_id, active, currency, unit_amount, type, last_event_id)
VALUES ('price_pro', 'prod_pro', true, 'eur', 4900, 'recurring', 'evt_seed');
INSERT INTO billing.plan_features (product_id, feature) VALUES ('prod_pro', 'seats');
INSERT INTO billing.customer_links (customer_id, tenant_id, source, linked_at)
SELECT 'cus_' || t, tenant_id, 'explicit', now() FROM bench_rows WHERE of_interest AND j = 0;
INSERT INTO billing.customers (tenant_id, id, email, last_event_id)
SELECT tenant_id, 'cus_' || t, 'billing@t' || t || '.bench.test', 'evt_seed' FROM bench_rows WHERE of_interest AND j = 0;
INSERT INTO billing.subscriptions (tenant_id, id, customer_id, status, current_period_start, current_period_end, created, last_event_id)
SELECT tenant_id, 'sub_' || t || '_' || n, 'cus_' || t,
       CASE n WHEN 1 THEN 'active' ELSE 'canceled' END,
       now() - make_interval(days => 10 + 400 * (1 - n)), now() + make_interval(days => 20 - 400 * (1 - n)),
       now() - make_interval(days => 40 + 400 * (1 - n)), 'evt_seed'
  FROM bench_rows, generate_series(0, 1) n WHERE of_interest AND j = 0;
INSERT INTO billing.subscription_items (tenant_id, id, subscription_id, price_id, quantity, last_event_id)
SELECT tenant_id, 'si_' || t || '_' || n, 'sub_' || t || '_' || n, 'price_pro', 5, 'evt_seed'
  FROM bench_rows, generate_series(0, 1) n WHERE of_interest AND j = 0;
INSERT INTO billing.entitlement_summaries (tenant_id, customer_id, last_event_id)
SELECT tenant_id, 'cus_' || t, 'evt_seed' FROM bench_rows WHERE of_interest AND j = 0;
INSERT INTO billing.active_entitlements (tenant_id, id, customer_id, lookup_key)
SELECT tenant_id, 'ent_' || t, 'cus_' || t, 'sso' FROM bench_rows WHERE of_interest AND j = 0;
INSERT INTO billing.invoices (tenant_id, id, customer_id, subscription_id, status, currency, amount_due, created, last_event_id)
SELECT tenant_id, 'in_' || t || '_' || lpad(j::text, 6, '0'), 'cus_' || t, 'sub_' || t || '_1', 'paid', 'eur', 4900,
       now() - make_interval(days => j % 1000), 'evt_seed'
  FROM bench_rows WHERE of_interest ORDER BY t, j;

-- events: `size` events over the last 20 days, five names, 100 actors; the rollups built from
-- them as the ingest trigger keeps them.
SELECT events.create_partition((date_trunc('month', now()) - interval '1 month')::date);
INSERT INTO events.events (tenant_id, event_id, occurred_at, name, actor, properties)
SELECT tenant_id, (lpad(to_hex(j), 8, '0') || '-0004-7000-8000-' || lpad(to_hex(t), 12, '0'))::uuid,
       now() - interval '20 days' + (j::float8 / size) * interval '20 days',
       (ARRAY['signup', 'login', 'project.created', 'invite.sent', 'purchase'])[j % 5 + 1],
       'user-' || (j % 100), jsonb_build_object('n', j)
  FROM bench_rows JOIN bench_sizes USING (t) WHERE of_interest ORDER BY t, j;
INSERT INTO events.daily_counts (tenant_id, day, name, events)
SELECT tenant_id, (occurred_at AT TIME ZONE 'UTC')::date, name, count(*) FROM events.events GROUP BY 1, 2, 3;
INSERT INTO events.daily_actors (tenant_id, day, actor)
SELECT DISTINCT tenant_id, (occurred_at AT TIME ZONE 'UTC')::date, actor FROM events.events;
INSERT INTO events.daily_uniques (tenant_id, day, actors)
SELECT tenant_id, day, count(*) FROM events.daily_actors GROUP BY 1, 2;

RESET session_replication_role;
DROP TABLE bench_rows;
DROP TABLE bench_sizes;
"#;

async fn load(admin: &PgPool) -> Result<(), sqlx::Error> {
    // One connection: the script's temporary tables and session setting live in its session.
    let mut conn = admin.acquire().await?;
    sqlx::raw_sql(LOAD_SQL).execute(&mut *conn).await?;
    // Fresh statistics and a visibility map, as a long-running database would have.
    sqlx::raw_sql("VACUUM ANALYZE").execute(&mut *conn).await?;
    Ok(())
}

/// The keys of tenant `no`'s queries, read back from the loaded data.
async fn subject(admin: &PgPool, no: i64, size: i64) -> Result<Subject, Box<dyn Error>> {
    let tenant: Uuid =
        sqlx::query_scalar("SELECT ('00000000-0000-7000-8000-' || lpad(to_hex($1::int), 12, '0'))::uuid")
            .bind(no)
            .fetch_one(admin)
            .await?;
    let member = |j: i64| format!("{j:08x}-0001-7000-8000-{no:012x}");
    let actor = Uuid::parse_str(&member(0))?;
    let audit_actor = Uuid::parse_str(&member(3))?;
    let job: i64 = sqlx::query_scalar("SELECT max(id) FROM queue.jobs WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(admin)
        .await?;
    let (from, to): (String, String) =
        sqlx::query_as("SELECT (now() - interval '35 days')::text, (now() - interval '25 days')::text")
            .fetch_one(admin)
            .await?;
    Ok(Subject {
        size,
        tenant,
        actor,
        member_email: format!("U{}@T{no}.bench.test", size / 2),
        invitee_email: format!("Invitee{}@T{no}.bench.test", size / 2),
        token: format!("token-{no}-{}", size / 2),
        job,
        resource: ((size / 2) % (size / 20).max(1)).to_string(),
        audit_actor,
        from,
        to,
    })
}

fn bind<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    args: &[Arg],
    s: &'q Subject,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    for a in args {
        q = match a {
            Tenant => q.bind(s.tenant),
            Actor => q.bind(s.actor),
            Nil => q.bind(Uuid::nil()),
            MemberEmail => q.bind(s.member_email.as_str()),
            InviteeEmail => q.bind(s.invitee_email.as_str()),
            Token => q.bind(s.token.as_str()),
            Job => q.bind(s.job),
            Resource => q.bind(s.resource.as_str()),
            AuditActor => q.bind(s.audit_actor),
            From => q.bind(s.from.as_str()),
            To => q.bind(s.to.as_str()),
        };
    }
    q
}

async fn run_once(conn: &mut PgConnection, side: Side, q: &Query, s: &Subject) -> Result<Vec<PgRow>, sqlx::Error> {
    let (sql, args) = match side {
        Side::Rls => (q.rls, q.rls_args),
        Side::Base => (q.base, q.base_args),
    };
    bind(sqlx::query(sql), args, s).fetch_all(conn).await
}

/// Opens the transaction a request would: the tenant and the actor set for it only.
async fn begin(conn: &mut PgConnection, s: &Subject) -> Result<(), sqlx::Error> {
    sqlx::query("BEGIN").execute(&mut *conn).await?;
    sqlx::query("SELECT set_config('app.tenant_id', $1, true), set_config('app.actor_id', $2, true)")
        .bind(s.tenant.to_string())
        .bind(s.actor.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The side's answer as text, row by row, so both sides can be compared.
async fn answer(pool: &PgPool, side: Side, q: &Query, s: &Subject) -> Result<Vec<String>, Box<dyn Error>> {
    let mut conn = pool.acquire().await?;
    begin(&mut conn, s).await?;
    let rows = run_once(&mut conn, side, q, s).await?;
    sqlx::query("ROLLBACK").execute(&mut *conn).await?;
    // The first column of every query is a key or the answer; compare it as text.
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let raw = row.try_get_raw(0)?;
        out.push(format!("{:?}", raw.as_bytes().ok()));
    }
    Ok(out)
}

/// Prints every query's plan as the application role, in the tenant's context (the policies
/// are part of the plan). Functions show only their call: their inner plans are in queries.md.
async fn explain(app: &PgPool, s: &Subject) -> Result<(), Box<dyn Error>> {
    let mut conn = app.acquire().await?;
    for q in &QUERIES {
        begin(&mut conn, s).await?;
        let rows = bind(
            sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN (COSTS OFF) {}", q.rls))),
            q.rls_args,
            s,
        )
        .fetch_all(&mut *conn)
        .await?;
        let plan = rows
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<Vec<_>, _>>()?;
        sqlx::query("ROLLBACK").execute(&mut *conn).await?;
        println!(
            "-- {}.{} at {} rows, as the application role\n{}\n",
            q.module,
            q.name,
            s.size,
            plan.join("\n")
        );
    }
    Ok(())
}

/// `clients` connections run the query back to back for `length`, each in one transaction;
/// returns queries per second.
async fn phase(
    pool: &PgPool,
    side: Side,
    q: &'static Query,
    s: &Subject,
    clients: usize,
    length: Duration,
) -> Result<f64, Box<dyn Error>> {
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut conn = pool.acquire().await?;
        begin(&mut conn, s).await?;
        conns.push(conn);
    }
    let started = Instant::now();
    let deadline = started + length;
    let mut tasks = Vec::with_capacity(clients);
    for mut conn in conns {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                run_once(&mut conn, side, q, &s).await?;
                done += 1;
            }
            sqlx::query("ROLLBACK").execute(&mut *conn).await?;
            Ok::<u64, sqlx::Error>(done)
        }));
    }
    let mut total = 0u64;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

fn report(
    cells: &BTreeMap<(usize, usize), Cell>,
    subjects: &[Subject],
    opts: &Options,
    load_time: Duration,
    (tenants, users): (i64, i64),
) -> Result<(), serde_json::Error> {
    println!();
    println!(
        "rls bench: {tenants} tenants, {users} users, loaded in {:.1} s; tenants of interest hold {} rows in every module",
        load_time.as_secs_f64(),
        SIZES.map(|s| s.to_string()).join(", ")
    );
    println!(
        "{} rounds x {} ms per side, {} connections each in one transaction (tenant set), prepared statements",
        opts.rounds,
        opts.phase.as_millis(),
        opts.clients
    );
    println!("rls: the application role through the policies; base: {BASELINE_LABEL}");
    println!("ratio: base q/s over rls q/s, median of the rounds (1.00 = RLS costs nothing)");
    println!();
    let mut header = format!("{:<32}", "query");
    for s in subjects {
        header += &format!(
            " | {:>8} {:>8} {:>6}",
            format!("rls@{}", short(s.size)),
            "base",
            "ratio"
        );
    }
    println!("{header}");
    println!("{}", "-".repeat(header.len()));

    let mut ratios: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    let mut all = Vec::new();
    let mut worst = (0.0f64, String::new());
    for (qi, q) in QUERIES.iter().enumerate() {
        let key = format!("{}.{}", q.module, q.name);
        let mut line = format!("{key:<32}");
        for (si, s) in subjects.iter().enumerate() {
            let Some(cell) = cells.get(&(qi, si)) else { continue };
            let ratio = cell.ratio();
            line += &format!(
                " | {:>8.0} {:>8.0} {:>6.3}",
                median(cell.rls_qps.clone()),
                median(cell.base_qps.clone()),
                ratio
            );
            ratios
                .entry(key.clone())
                .or_default()
                .insert(s.size.to_string(), round(ratio, 3));
            all.push(ratio);
            if ratio > worst.0 {
                worst = (ratio, format!("{key}@{}", s.size));
            }
        }
        println!("{line}");
    }
    let median_ratio = median(all);
    println!();
    println!(
        "worst ratio {:.3} ({}), goal <= {GOAL_RATIO}: {}",
        worst.0,
        worst.1,
        if worst.0 <= GOAL_RATIO { "met" } else { "missed" }
    );
    println!(
        "median ratio over all queries and sizes {median_ratio:.3}, goal <= {GOAL_MEDIAN}: {}",
        if median_ratio <= GOAL_MEDIAN { "met" } else { "missed" }
    );
    let rows: Vec<String> = QUERIES
        .iter()
        .enumerate()
        .map(|(qi, q)| {
            let per: Vec<String> = (0..subjects.len())
                .map(|si| cells.get(&(qi, si)).map_or(0, |c| c.rows).to_string())
                .collect();
            format!("{} {}", q.name, per.join("/"))
        })
        .collect();
    println!("rows per answer (both sides equal): {}", rows.join(", "));

    let summary = Summary {
        bench: "rls",
        ratios,
        ratio: round(worst.0, 3),
        worst: worst.1,
        median_ratio: round(median_ratio, 3),
        goal_ratio: GOAL_RATIO,
        goal_median_ratio: GOAL_MEDIAN,
        baseline: BASELINE_LABEL,
        clients: opts.clients,
        rounds: opts.rounds,
        phase_ms: opts.phase.as_millis(),
    };
    println!();
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

fn short(size: i64) -> String {
    if size >= 1000 {
        format!("{}k", size / 1000)
    } else {
        size.to_string()
    }
}
