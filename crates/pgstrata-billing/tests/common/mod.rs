//! Shared fixtures: a migrated database, the sync login role, tenants, and the Stripe event
//! fixtures of a subscription lifecycle, made unique per test case by suffixing every id.
#![allow(dead_code)]

pub use pgstrata_billing::fixtures::retag;
use pgstrata_billing::{Outcome, Processed};
use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::{TestDb, ensure_login_role};
use pgstrata_core::{TenantContext, TenantId};
use serde_json::Value;
use sqlx::postgres::PgConnectOptions;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Login role the webhook path runs as in tests: a member of pgstrata_billing_sync only.
pub const SYNC_LOGIN: &str = "pgstrata_test_billing_sync";

pub fn migrator() -> Migrator {
    Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_billing::MODULE]).unwrap()
}

pub async fn migrated_db() -> TestDb {
    let db = TestDb::migrated(&migrator()).await.unwrap();
    ensure_sync_login(&db).await;
    db
}

/// The webhook path's login role (cluster-wide, kept between runs).
pub async fn ensure_sync_login(db: &TestDb) {
    let mut conn = db.admin_conn().await.unwrap();
    ensure_login_role(&mut conn, SYNC_LOGIN, "IN ROLE pgstrata_billing_sync")
        .await
        .unwrap();
}

pub fn sync_options(db: &TestDb) -> PgConnectOptions {
    db.login_options(SYNC_LOGIN)
}

/// A pool of the webhook path's role.
pub async fn sync_pool(db: &TestDb, max: u32) -> PgPool {
    db.pool_as(SYNC_LOGIN, max).await.unwrap()
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

/// The lifecycle's events in Stripe's order (the files are numbered in that order).
pub fn lifecycle_files() -> Vec<(String, Value)> {
    pgstrata_billing::fixtures::lifecycle().unwrap()
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
    mirror_except(admin, tag, tenant, &[]).await
}

/// [`mirror`] without the columns named in `except` (e.g. the raw `object`, to compare the
/// mirrors of two API versions, whose objects differ in shape).
pub async fn mirror_except(admin: &PgPool, tag: &str, tenant: TenantId, except: &[&str]) -> String {
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
            "SELECT coalesce(jsonb_agg(to_jsonb(t) - 'synced_at' - $3::text[] ORDER BY t.{order}), '[]')::text \
               FROM billing.{table} t WHERE {filter} AND $1 IS NOT NULL AND $2 IS NOT NULL"
        );
        let rows: String = pgstrata_core::sql::trusted(sql)
            .bind(&suffix)
            .bind(tenant.0)
            .bind(except)
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
pub async fn app_tx(app: &PgPool, tenant: TenantId) -> pgstrata_core::TenantTx<'static> {
    pgstrata_core::begin_tenant(app, &TenantContext::tenant(tenant))
        .await
        .unwrap()
}

/// A database whose schemas `owner` installed, with the sync login role.
pub async fn migrated_db_by(owner: pgstrata_core::testing::Owner) -> TestDb {
    let db = TestDb::migrated_by(&migrator(), owner).await.unwrap();
    ensure_sync_login(&db).await;
    db
}

/// The lifecycle's customer id for a case.
pub fn customer_id(events: &[(String, Value)]) -> String {
    event(events, "03")["data"]["object"]["id"].as_str().unwrap().to_owned()
}

/// A `checkout.session.completed` event for `customer`, naming a tenant the way the caller
/// chose (`metadata` and `client_reference_id` as given, `Value::Null` to leave one out).
pub fn checkout_completed(id: &str, customer: &str, metadata: Value, client_reference_id: Value) -> Value {
    serde_json::json!({
        "id": id,
        "object": "event",
        "api_version": "2025-03-31.basil",
        "type": "checkout.session.completed",
        "created": 1_764_547_200,
        "livemode": false,
        "data": {"object": {
            "id": format!("cs_test_{id}"),
            "object": "checkout.session",
            "mode": "subscription",
            "status": "complete",
            "payment_status": "paid",
            "customer": customer,
            "client_reference_id": client_reference_id,
            "metadata": if metadata.is_null() { serde_json::json!({}) } else { metadata },
        }}
    })
}

/// SplitMix64: a small, well-mixed generator, enough to draw permutations reproducibly.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A delivery order: every event at least once, about a third of them two or three times,
/// shuffled (Fisher-Yates).
pub fn delivery_order(rng: &mut Rng, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in 0..n {
        match rng.below(10) {
            0..=1 => order.push(i),
            2 => order.extend([i, i]),
            _ => {}
        }
    }
    for i in (1..order.len()).rev() {
        let j = rng.below(i + 1);
        order.swap(i, j);
    }
    order
}

/// A mirrored subscription's status and the event that set it.
pub async fn status_of(admin: &PgPool, sub: &str) -> (String, String) {
    sqlx::query_as("SELECT status, last_event_id FROM billing.subscriptions WHERE id = $1")
        .bind(sub)
        .fetch_one(admin)
        .await
        .unwrap()
}

/// The id of the lifecycle's subscription.
pub fn sub_id(events: &[(String, Value)]) -> String {
    event(events, "04")["data"]["object"]["id"].as_str().unwrap().to_owned()
}
