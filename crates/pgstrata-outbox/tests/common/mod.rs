//! Fixtures: a database with tenancy and outbox (and queue, where a test needs it), two tenants,
//! pools as the unprivileged login roles; on the shared test server, or on a server of the test
//! binary's own for the tests that depend on the xmin horizon (a transaction of any other test
//! on the same server would hold the relays back).

#![allow(dead_code)]

use pgstrata_core::migrate::{Migrator, Module};
use pgstrata_core::server::ThrowawayServer;
use pgstrata_core::testing::{APP_LOGIN_ROLE, Owner, TestDb, WORKER_LOGIN_ROLE, ensure_login_role, with_database};
use pgstrata_core::{TenantContext, TenantId, TenantTx, begin_tenant};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use std::str::FromStr;
use std::sync::OnceLock;
use uuid::Uuid;

pub fn migrator() -> Migrator {
    Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_outbox::MODULE]).unwrap()
}

pub fn migrator_with(extra: &'static Module) -> Migrator {
    Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_outbox::MODULE, extra]).unwrap()
}

pub struct Fixture {
    pub db: TestDb,
    pub app: PgPool,
    pub worker: PgPool,
    pub a: TenantId,
    pub b: TenantId,
}

/// Migrated database on the shared test server, tenants A and B, pools as the application
/// and worker login roles.
pub async fn fixture_by(owner: Owner) -> Fixture {
    let db = TestDb::migrated_by(&migrator(), owner).await.unwrap();
    let (a, b) = tenants(&db.admin).await;
    let app = db.app_pool(10).await.unwrap();
    let worker = db.pool_as(WORKER_LOGIN_ROLE, 10).await.unwrap();
    Fixture { db, app, worker, a, b }
}

pub async fn fixture() -> Fixture {
    fixture_by(Owner::Superuser).await
}

impl Fixture {
    pub async fn close(self) {
        self.app.close().await;
        self.worker.close().await;
        self.db.close().await.unwrap();
    }
}

/// Tenants A and B, created as the admin.
pub async fn tenants(admin: &PgPool) -> (TenantId, TenantId) {
    let a = TenantId(Uuid::now_v7());
    let b = TenantId(Uuid::now_v7());
    for (t, slug) in [(a, "tenant-a"), (b, "tenant-b")] {
        sqlx::query("INSERT INTO tenancy.tenants (id, slug, name) VALUES ($1, $2, $2)")
            .bind(t.0)
            .bind(slug)
            .execute(admin)
            .await
            .unwrap();
    }
    (a, b)
}

/// A transaction as the application role in `tenant`.
pub async fn tx(pool: &PgPool, tenant: TenantId) -> TenantTx<'static> {
    begin_tenant(pool, &TenantContext::tenant(tenant)).await.unwrap()
}

/// This test binary's own server, started on first use and stopped when the process exits.
pub fn own_server() -> &'static ThrowawayServer {
    static SERVER: OnceLock<ThrowawayServer> = OnceLock::new();
    SERVER.get_or_init(|| ThrowawayServer::start().expect("starting this test binary's own server"))
}

/// A migrated database on [`own_server`]: admin, application and worker pools, tenants A, B.
pub struct OwnDb {
    pub admin: PgPool,
    pub app: PgPool,
    pub worker: PgPool,
    pub admin_options: PgConnectOptions,
    pub a: TenantId,
    pub b: TenantId,
}

pub async fn own_db(name: &str, migrator: &Migrator) -> OwnDb {
    let url = own_server().url();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    pgstrata_core::sql::trusted(format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let admin_options = PgConnectOptions::from_str(&with_database(&url, name)).unwrap();
    let mut owner = admin_options.connect().await.unwrap();
    migrator.up(&mut owner).await.unwrap();
    // The group roles exist now (tenancy's migrations); the login roles hold one each.
    ensure_login_role(&mut conn, APP_LOGIN_ROLE, "IN ROLE pgstrata_app")
        .await
        .unwrap();
    ensure_login_role(&mut conn, WORKER_LOGIN_ROLE, "IN ROLE pgstrata_worker")
        .await
        .unwrap();
    let pool = |role: Option<&str>, max: u32| {
        let options = match role {
            Some(r) => admin_options.clone().username(r).password(r),
            None => admin_options.clone(),
        };
        PgPoolOptions::new().max_connections(max).connect_with(options)
    };
    let admin = pool(None, 10).await.unwrap();
    let app = pool(Some(APP_LOGIN_ROLE), 20).await.unwrap();
    let worker = pool(Some(WORKER_LOGIN_ROLE), 10).await.unwrap();
    let (a, b) = tenants(&admin).await;
    OwnDb {
        admin,
        app,
        worker,
        admin_options,
        a,
        b,
    }
}

impl OwnDb {
    /// A pool of `max` connections as the worker role, its sessions named `name` (so a test can
    /// find and terminate their backends).
    pub async fn worker_pool_named(&self, name: &str, max: u32) -> PgPool {
        PgPoolOptions::new()
            .max_connections(max)
            .connect_with(
                self.admin_options
                    .clone()
                    .username(WORKER_LOGIN_ROLE)
                    .password(WORKER_LOGIN_ROLE)
                    .application_name(name),
            )
            .await
            .unwrap()
    }
}

/// A small deterministic generator (xorshift), so a failing run can be replayed from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// A seed from the clock, printed so a failure names it.
pub fn seed() -> u64 {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7);
    eprintln!("seed {s}");
    s
}
