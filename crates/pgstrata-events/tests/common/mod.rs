//! A database with tenancy and events, two tenants, and pools as the unprivileged roles.

#![allow(dead_code)]

use chrono::{Duration, Utc};
use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::{Owner, TestDb};
use pgstrata_core::{TenantContext, TenantId, begin_tenant};
use pgstrata_events::{EventId, NewEvent};
use sqlx::PgPool;
use uuid::Uuid;

pub struct Fixture {
    pub db: TestDb,
    pub app: PgPool,
    pub a: TenantId,
    pub b: TenantId,
}

pub fn migrator() -> Migrator {
    Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_events::MODULE]).unwrap()
}

/// Migrated database, tenants A and B, a pool as the unprivileged application role.
pub async fn fixture() -> Fixture {
    fixture_by(Owner::Superuser).await
}

/// [`fixture`], with the schemas installed by `owner`.
pub async fn fixture_by(owner: Owner) -> Fixture {
    let db = TestDb::migrated_by(&migrator(), owner).await.unwrap();
    let a = db.tenant("tenant-a").await.unwrap();
    let b = db.tenant("tenant-b").await.unwrap();
    let app = db.app_pool(10).await.unwrap();
    Fixture { db, app, a, b }
}

impl Fixture {
    pub async fn close(self) {
        self.app.close().await;
        self.db.close().await.unwrap();
    }
}

/// A transaction as the application role in `tenant`.
pub async fn tx(pool: &PgPool, tenant: TenantId) -> pgstrata_core::TenantTx<'static> {
    begin_tenant(pool, &TenantContext::tenant(tenant)).await.unwrap()
}

/// `n` events with fixed ids (from `seed`), spread over the last `days` days, 10 names, 50
/// actors, a few properties each.
pub fn events(seed: u64, n: usize, days: i64) -> Vec<NewEvent> {
    let now = Utc::now();
    (0..n)
        .map(|i| {
            let k = seed * 1_000_000 + i as u64;
            let ago = Duration::seconds(((k * 7919) % (days.max(1) as u64 * 86_400 - 60)) as i64 + 60);
            NewEvent::new(format!("event.{}", k % 10), format!("user-{}", (k / 10) % 50))
                .id(event_id(k))
                .at(now - ago)
                .properties(serde_json::json!({"plan": if k.is_multiple_of(2) { "free" } else { "pro" }, "i": k}))
        })
        .collect()
}

pub fn event_id(k: u64) -> EventId {
    EventId(Uuid::from_u64_pair(0x0190_0000_0000_7000, 0x8000_0000_0000_0000 | k))
}

/// The rollups as stored and as recounted from raw events (as the owner, every tenant):
/// `(daily counts, daily uniques)`, each a sorted list of `tenant day name count` lines.
pub async fn rollups_and_recount(db: &TestDb) -> ((Vec<String>, Vec<String>), (Vec<String>, Vec<String>)) {
    let q = |sql: &'static str| async move { sqlx::query_scalar::<_, String>(sql).fetch_all(&db.admin).await.unwrap() };
    let stored_counts = q(
        "SELECT format('%s %s %s %s', tenant_id, day, name, events) FROM events.daily_counts
                            WHERE events > 0 ORDER BY 1",
    )
    .await;
    let stored_uniques = q(
        "SELECT format('%s %s %s', tenant_id, day, actors) FROM events.daily_uniques
                             WHERE actors > 0 ORDER BY 1",
    )
    .await;
    let raw_counts = q("SELECT format('%s %s %s %s', tenant_id, (occurred_at AT TIME ZONE 'UTC')::date, name, count(*))
                          FROM events.events GROUP BY tenant_id, (occurred_at AT TIME ZONE 'UTC')::date, name ORDER BY 1")
    .await;
    let raw_uniques = q(
        "SELECT format('%s %s %s', tenant_id, (occurred_at AT TIME ZONE 'UTC')::date, count(DISTINCT actor))
                           FROM events.events GROUP BY tenant_id, (occurred_at AT TIME ZONE 'UTC')::date ORDER BY 1",
    )
    .await;
    ((stored_counts, stored_uniques), (raw_counts, raw_uniques))
}

pub async fn count_events(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events.events")
        .fetch_one(&db.admin)
        .await
        .unwrap()
}
