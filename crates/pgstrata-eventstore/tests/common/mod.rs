//! A database with tenancy and eventstore, two tenants, pools as the unprivileged roles, and a
//! test projection that checks what it is given.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::{Owner, TestDb, WORKER_LOGIN_ROLE};
use pgstrata_core::{TenantContext, TenantId, begin_tenant};
use pgstrata_eventstore::subscription::Projection;
use pgstrata_eventstore::{Error, Event};
use sqlx::{PgConnection, PgPool};

pub struct Fixture {
    pub db: TestDb,
    pub app: PgPool,
    pub worker: PgPool,
    pub a: TenantId,
    pub b: TenantId,
}

pub fn migrator() -> Migrator {
    Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_eventstore::MODULE]).unwrap()
}

/// Migrated database, tenants A and B, pools as the application and the worker login roles.
pub async fn fixture() -> Fixture {
    fixture_by(Owner::Superuser).await
}

/// [`fixture`], with the schemas installed by `owner`.
pub async fn fixture_by(owner: Owner) -> Fixture {
    let db = TestDb::migrated_by(&migrator(), owner).await.unwrap();
    let a = db.tenant("tenant-a").await.unwrap();
    let b = db.tenant("tenant-b").await.unwrap();
    let app = db.app_pool(20).await.unwrap();
    let worker = db.pool_as(WORKER_LOGIN_ROLE, 5).await.unwrap();
    Fixture { db, app, worker, a, b }
}

impl Fixture {
    pub async fn close(self) {
        self.app.close().await;
        self.worker.close().await;
        self.db.close().await.unwrap();
    }
}

/// A transaction as the application role in `tenant`.
pub async fn tx(pool: &PgPool, tenant: TenantId) -> pgstrata_core::TenantTx<'static> {
    begin_tenant(pool, &TenantContext::tenant(tenant)).await.unwrap()
}

/// Runs the calling test again in a child process of this test binary without `DATABASE_URL`,
/// so that its `TestDb` starts a throwaway server of its own: tests that depend on the
/// cluster-wide xmin horizon must not share a server with other tests' long transactions.
/// Returns `true` in the parent (which then only checks the child's result), `false` in the
/// child, which runs the test's body.
pub fn rerun_on_own_server(test: &str) -> bool {
    if std::env::var_os("PGSTRATA_OWN_SERVER_TEST").is_some() {
        return false;
    }
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env_remove("DATABASE_URL")
        .env("PGSTRATA_OWN_SERVER_TEST", "1")
        .status()
        .unwrap();
    assert!(status.success(), "{test} on its own server: {status}");
    true
}

/// The table [`Seen`] writes: one row per event applied, keyed by generation and event id (so
/// an event applied twice fails the batch), and per stream the last version applied.
pub async fn create_seen_tables(db: &TestDb) {
    sqlx::raw_sql(
        "CREATE TABLE public.seen (generation int NOT NULL, tenant_id uuid NOT NULL, event_id uuid NOT NULL,
                                   stream text NOT NULL, version bigint NOT NULL, position bigint NOT NULL,
                                   PRIMARY KEY (generation, tenant_id, event_id));
         CREATE TABLE public.seen_streams (generation int NOT NULL, tenant_id uuid NOT NULL, stream text NOT NULL,
                                           version bigint NOT NULL, events bigint NOT NULL,
                                           PRIMARY KEY (generation, tenant_id, stream));
         GRANT SELECT, INSERT, UPDATE, DELETE ON public.seen, public.seen_streams TO pgstrata_worker;",
    )
    .execute(&db.admin)
    .await
    .unwrap();
}

/// A projection that records every event and refuses one out of its stream's order: version
/// N+1 must follow version N of the same stream, in the same generation.
#[derive(Debug, Clone)]
pub struct Seen {
    pub name: String,
}

impl Projection for Seen {
    fn name(&self) -> &str {
        &self.name
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        generation: i32,
        events: &[Event],
    ) -> pgstrata_eventstore::Result<()> {
        for e in events {
            let last: Option<i64> = sqlx::query_scalar(
                "SELECT version FROM public.seen_streams WHERE generation = $1 AND tenant_id = $2 AND stream = $3",
            )
            .bind(generation)
            .bind(e.tenant_id.0)
            .bind(&e.stream)
            .fetch_optional(&mut *conn)
            .await?;
            if last.unwrap_or(0) + 1 != e.version {
                return Err(Error::Projection {
                    name: self.name.clone(),
                    message: format!("{} version {} after {:?}", e.stream, e.version, last),
                });
            }
            sqlx::query(
                "INSERT INTO public.seen_streams (generation, tenant_id, stream, version, events) VALUES ($1, $2, $3, $4, 1)
                 ON CONFLICT (generation, tenant_id, stream) DO UPDATE SET version = excluded.version, events = seen_streams.events + 1",
            )
            .bind(generation)
            .bind(e.tenant_id.0)
            .bind(&e.stream)
            .bind(e.version)
            .execute(&mut *conn)
            .await?;
            sqlx::query("INSERT INTO public.seen (generation, tenant_id, event_id, stream, version, position) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(generation)
                .bind(e.tenant_id.0)
                .bind(e.event_id.0)
                .bind(&e.stream)
                .bind(e.version)
                .bind(e.position)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    async fn retire(&self, conn: &mut PgConnection, generation: i32) -> pgstrata_eventstore::Result<()> {
        for table in ["public.seen", "public.seen_streams"] {
            pgstrata_core::sql::trusted(format!("DELETE FROM {table} WHERE generation = $1"))
                .bind(generation)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

/// Every committed event as `tenant stream version event_id`, sorted, read as the admin.
pub async fn committed(db: &TestDb) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT format('%s %s %s %s', tenant_id, stream, version, event_id) FROM eventstore.events ORDER BY 1",
    )
    .fetch_all(&db.admin)
    .await
    .unwrap()
}

/// What [`Seen`] recorded in `generation`, in the same form as [`committed`].
pub async fn seen(db: &TestDb, generation: i32) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT format('%s %s %s %s', tenant_id, stream, version, event_id) FROM public.seen WHERE generation = $1 ORDER BY 1",
    )
    .bind(generation)
    .fetch_all(&db.admin)
    .await
    .unwrap()
}
