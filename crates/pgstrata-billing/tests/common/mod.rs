//! Shared fixtures: a migrated database, the sync login role, tenants, and the Stripe event
//! fixtures of a subscription lifecycle, made unique per test case by suffixing every id.
#![allow(dead_code)]

use pgstrata_billing::{Outcome, Processed};
use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::TestDb;
use pgstrata_core::{TenantContext, TenantId};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};
use std::path::PathBuf;
use uuid::Uuid;

/// The tenant named in the fixtures' customer metadata.
pub const FIXTURE_TENANT: &str = "0193f2a4-6c1e-7b2d-9e4f-5a6b7c8d9e0f";
/// Login role the webhook path runs as in tests: a member of pgstrata_billing_sync only.
pub const SYNC_LOGIN: &str = "pgstrata_test_billing_sync";

pub fn migrator() -> Migrator {
    Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_billing::MODULE]).unwrap()
}

pub async fn migrated_db() -> TestDb {
    let db = TestDb::migrated(&migrator()).await.unwrap();
    // Cluster-wide and shared by concurrent test processes, hence the exception handler.
    sqlx::raw_sql(
        "DO $$ BEGIN
             IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgstrata_test_billing_sync') THEN
                 CREATE ROLE pgstrata_test_billing_sync LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE
                     PASSWORD 'pgstrata_test_billing_sync' IN ROLE pgstrata_billing_sync;
             END IF;
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
    )
    .execute(&db.admin)
    .await
    .unwrap();
    db
}

pub fn sync_options(db: &TestDb) -> PgConnectOptions {
    db.admin_options().username(SYNC_LOGIN).password(SYNC_LOGIN)
}

/// A pool of the webhook path's role.
pub async fn sync_pool(db: &TestDb, max: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max)
        .connect_with(sync_options(db))
        .await
        .unwrap()
}

/// A tenant, created by the admin.
pub async fn tenant(db: &TestDb) -> TenantId {
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO tenancy.tenants (id, slug, name) VALUES ($1, 't-' || replace($1::text, '-', ''), 'T')")
        .bind(id)
        .execute(&db.admin)
        .await
        .unwrap();
    TenantId(id)
}

fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The lifecycle's events in Stripe's order (the files are numbered in that order).
pub fn lifecycle_files() -> Vec<(String, Value)> {
    let mut files: Vec<_> = std::fs::read_dir(fixture_dir("lifecycle"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            let value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (name, value)
        })
        .collect()
}

/// Id prefixes of Stripe objects in the fixtures.
const PREFIXES: [&str; 9] = [
    "evt_",
    "cus_",
    "sub_",
    "si_",
    "in_",
    "prod_",
    "price_",
    "ent_test_",
    "feat_",
];

/// `value` with every Stripe id suffixed with `_{tag}` and the fixture tenant replaced, so that
/// each case lives in its own objects and tenant.
pub fn retag(value: &Value, tag: &str, tenant: TenantId) -> Value {
    match value {
        Value::String(s) if s == FIXTURE_TENANT => Value::String(tenant.0.to_string()),
        Value::String(s) => Value::String(retag_str(s, tag)),
        Value::Array(a) => Value::Array(a.iter().map(|v| retag(v, tag, tenant)).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), retag(v, tag, tenant))).collect()),
        other => other.clone(),
    }
}

/// Suffixes every id in a string, also inside URLs such as `/v1/customer/cus_x/entitlements`.
fn retag_str(s: &str, tag: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        out.push_str(token);
        if PREFIXES.iter().any(|p| token.starts_with(p)) {
            out.push('_');
            out.push_str(tag);
        }
        token.clear();
    };
    for c in s.chars() {
        if matches!(c, '/' | '?' | '=' | '&') {
            flush(&mut token, &mut out);
            out.push(c);
        } else {
            token.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

/// The lifecycle for one case: (fixture name, event).
pub fn lifecycle(tag: &str, tenant: TenantId) -> Vec<(String, Value)> {
    lifecycle_files()
        .into_iter()
        .map(|(name, v)| (name, retag(&v, tag, tenant)))
        .collect()
}

/// One event of the lifecycle by the start of its file name (e.g. "04").
pub fn event(events: &[(String, Value)], prefix: &str) -> Value {
    events
        .iter()
        .find(|(n, _)| n.starts_with(prefix))
        .unwrap_or_else(|| panic!("no fixture {prefix}"))
        .1
        .clone()
}

pub async fn apply(conn: &mut PgConnection, event: &Value) -> Processed {
    pgstrata_billing::apply_event(conn, event).await.unwrap()
}

pub async fn apply_expect(conn: &mut PgConnection, event: &Value, outcome: Outcome) -> Processed {
    let p = apply(conn, event).await;
    assert_eq!(p.outcome, outcome, "{} {}: {:?}", p.event_id, p.event_type, p.error);
    p
}

/// Everything mirrored for one case (its tenant's rows and its tagged global rows), without
/// the wall-clock `synced_at`, with the case's tag and tenant replaced by placeholders so that
/// two cases compare equal when their mirrors are the same.
pub async fn mirror(admin: &PgPool, tag: &str, tenant: TenantId) -> String {
    let suffix = format!("%\\_{tag}");
    let mut out = String::new();
    for (table, order) in [
        ("products", "id"),
        ("prices", "id"),
        ("customers", "id"),
        ("subscriptions", "id"),
        ("subscription_items", "id"),
        ("invoices", "id"),
        ("entitlement_summaries", "customer_id"),
        ("active_entitlements", "id"),
    ] {
        let filter = if matches!(table, "products" | "prices") {
            "t.id LIKE $1"
        } else {
            "t.tenant_id = $2"
        };
        let sql = format!(
            "SELECT coalesce(jsonb_agg(to_jsonb(t) - 'synced_at' ORDER BY t.{order}), '[]')::text \
               FROM billing.{table} t WHERE {filter} AND $1 IS NOT NULL AND $2 IS NOT NULL"
        );
        let rows: String = pgstrata_core::sql::trusted(sql)
            .bind(&suffix)
            .bind(tenant.0)
            .fetch_one(admin)
            .await
            .map(|r| sqlx::Row::get(&r, 0))
            .unwrap();
        out.push_str(table);
        out.push_str(": ");
        out.push_str(&rows);
        out.push('\n');
    }
    out.replace(&format!("_{tag}"), "_TAG")
        .replace(&tenant.0.to_string(), "TENANT")
}

/// Opens a transaction as the application role in a tenant's context.
pub async fn app_tx(app: &PgPool, tenant: TenantId) -> sqlx::Transaction<'static, sqlx::Postgres> {
    pgstrata_core::begin_tenant(app, &TenantContext::tenant(tenant))
        .await
        .unwrap()
}
