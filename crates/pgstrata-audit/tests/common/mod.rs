//! A database with tenancy and audit, and an application table `billing.invoices` audited with
//! an ignored and a redacted column, as an application would set it up.

#![allow(dead_code)]

use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::{Owner, TestDb};
use pgstrata_core::{TenantContext, TenantId, UserId, begin_tenant};
use sqlx::PgPool;
use uuid::Uuid;

pub const INVOICES_SQL: &str = r#"
CREATE SCHEMA billing;
GRANT USAGE ON SCHEMA billing TO pgstrata_app;
CREATE TABLE billing.invoices (
    tenant_id   uuid        NOT NULL,
    id          uuid        NOT NULL DEFAULT tenancy.uuid_v7(),
    number      text        NOT NULL,
    amount      bigint      NOT NULL,
    status      text        NOT NULL DEFAULT 'draft',
    pay_token_hash bytea,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
ALTER TABLE billing.invoices ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing.invoices FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON billing.invoices
    USING (tenant_id = (SELECT tenancy.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()));
GRANT SELECT, INSERT, UPDATE, DELETE ON billing.invoices TO pgstrata_app;
"#;

pub struct Fixture {
    pub db: TestDb,
    pub app: PgPool,
    pub a: TenantId,
    pub b: TenantId,
}

pub fn migrator() -> Migrator {
    Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_audit::MODULE]).unwrap()
}

/// Migrated database, `billing.invoices` audited (updated_at ignored, pay_token_hash redacted),
/// tenants A and B, and a pool as the unprivileged application role.
pub async fn fixture() -> Fixture {
    fixture_by(Owner::Superuser).await
}

/// [`fixture`], with the schemas installed by `owner`.
pub async fn fixture_by(owner: Owner) -> Fixture {
    let db = TestDb::migrated_by(&migrator(), owner).await.unwrap();
    sqlx::raw_sql(INVOICES_SQL).execute(&db.admin).await.unwrap();
    let mut conn = db.admin.acquire().await.unwrap();
    let options = pgstrata_audit::TableOptions::default()
        .ignore("updated_at")
        .redact("pay_token_hash");
    pgstrata_audit::capture::enable(&mut conn, "billing.invoices", &options)
        .await
        .unwrap();
    drop(conn);
    let a = db.tenant("tenant-a").await.unwrap();
    let b = db.tenant("tenant-b").await.unwrap();
    let app = db.app_pool(10).await.unwrap();
    Fixture { db, app, a, b }
}

/// A transaction as the application role in `tenant`, acting as `actor`.
pub async fn tx(
    pool: &PgPool,
    tenant: TenantId,
    actor: Option<UserId>,
    request: Option<&str>,
) -> pgstrata_core::TenantTx<'static> {
    let mut ctx = TenantContext::tenant(tenant);
    ctx.actor_id = actor;
    ctx.request_id = request.map(str::to_owned);
    begin_tenant(pool, &ctx).await.unwrap()
}

/// Inserts an invoice in its own transaction and returns its id.
pub async fn invoice(pool: &PgPool, tenant: TenantId, number: &str, amount: i64) -> Uuid {
    let mut t = tx(pool, tenant, None, None).await;
    let id =
        sqlx::query_scalar("INSERT INTO billing.invoices (tenant_id, number, amount) VALUES ($1, $2, $3) RETURNING id")
            .bind(tenant.0)
            .bind(number)
            .bind(amount)
            .fetch_one(&mut *t)
            .await
            .unwrap();
    t.commit().await.unwrap();
    id
}

/// Seals everything committed (as the superuser). A round seals only the records of
/// transactions older than every running one in the cluster, and other tests' transactions
/// come and go, so it retries (bounded) until nothing is left unsealed.
pub async fn seal_all(db: &TestDb) -> i64 {
    let mut conn = db.admin.acquire().await.unwrap();
    let mut total = 0i64;
    for _ in 0..1000 {
        let n = pgstrata_audit::chain::seal(&mut conn, 1000).await.unwrap();
        total += i64::from(n);
        if n < 1000 {
            let left = pgstrata_audit::chain::unsealed(&mut conn).await.unwrap();
            if left.unsealed == 0 {
                return total;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    panic!("records stayed unsealed for 10 s");
}

/// The SQLSTATE of a failed statement.
pub fn code<T: std::fmt::Debug>(r: Result<T, sqlx::Error>) -> String {
    let e = r.expect_err("statement should fail");
    e.as_database_error()
        .and_then(|d| d.code().map(|c| c.into_owned()))
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}
