//! A database with tenancy and webhooks, two tenants, pools as the unprivileged roles, and real
//! HTTP receivers on loopback.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::{Owner, TestDb, WORKER_LOGIN_ROLE};
use pgstrata_core::{TenantContext, TenantId, begin_tenant};
use pgstrata_webhooks::dispatch::{AddressPolicy, Dispatcher, DispatcherConfig};
use sqlx::PgPool;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

pub struct Fixture {
    pub db: TestDb,
    pub app: PgPool,
    pub worker: PgPool,
    pub a: TenantId,
    pub b: TenantId,
}

pub fn migrator() -> Migrator {
    Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_webhooks::MODULE]).unwrap()
}

pub async fn fixture() -> Fixture {
    fixture_by(Owner::Superuser).await
}

/// Migrated database (installed by `owner`), tenants A and B, pools as the application and
/// worker login roles.
pub async fn fixture_by(owner: Owner) -> Fixture {
    let db = TestDb::migrated_by(&migrator(), owner).await.unwrap();
    let a = TenantId(Uuid::now_v7());
    let b = TenantId(Uuid::now_v7());
    for (t, slug) in [(a, "tenant-a"), (b, "tenant-b")] {
        sqlx::query("INSERT INTO tenancy.tenants (id, slug, name) VALUES ($1, $2, $2)")
            .bind(t.0)
            .bind(slug)
            .execute(&db.admin)
            .await
            .unwrap();
    }
    let app = db.app_pool(10).await.unwrap();
    let worker = db.pool_as(WORKER_LOGIN_ROLE, 20).await.unwrap();
    Fixture { db, app, worker, a, b }
}

impl Fixture {
    pub async fn close(self) {
        self.app.close().await;
        self.worker.close().await;
        self.db.close().await.unwrap();
    }

    /// Changes `webhooks.settings` (as the owner), e.g. `retry_schedule = '{1,1}', jitter = 0`.
    pub async fn settings(&self, assignments: &str) {
        pgstrata_core::sql::trusted(format!("UPDATE webhooks.settings SET {assignments}"))
            .execute(&self.db.admin)
            .await
            .unwrap();
    }

    /// A dispatcher as the worker role that may reach loopback receivers, polling every 50 ms.
    pub async fn dispatcher(
        &self,
        name: &str,
        config: impl FnOnce(DispatcherConfig) -> DispatcherConfig,
    ) -> Dispatcher {
        let base = DispatcherConfig::new(name)
            .policy(loopback())
            .idle(Duration::from_millis(50))
            .timeout(Duration::from_secs(5))
            .lease_margin(Duration::from_secs(5));
        Dispatcher::new(self.worker.clone(), config(base)).await.unwrap()
    }

    /// Runs one claim-and-deliver round after another until `done` holds (or panics after 30 s).
    pub async fn dispatch_until<F, Fut>(&self, dispatcher: &Dispatcher, mut done: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        while !done().await {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "dispatch did not finish in 30 s"
            );
            if dispatcher.run_once().await.unwrap() == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// A query's single value, as the owner.
    pub async fn scalar<T>(&self, sql: &str) -> T
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
    {
        sqlx::query_scalar::<_, T>(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.db.admin)
            .await
            .unwrap()
    }
}

/// The policy of the tests' dispatchers: public addresses and 127.0.0.1.
pub fn loopback() -> AddressPolicy {
    AddressPolicy::public_only().allow("127.0.0.1/32").unwrap()
}

/// A transaction as the application role in `tenant`.
pub async fn tx(pool: &PgPool, tenant: TenantId) -> pgstrata_core::TenantTx<'static> {
    begin_tenant(pool, &TenantContext::tenant(tenant)).await.unwrap()
}

/// A request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }
}

/// How a receiver answers its `n`th request (from 0): status, headers, and a delay first.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// A real HTTP server on 127.0.0.1 that records every request and answers as told.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub log: Arc<Mutex<Vec<Received>>>,
    /// Requests being answered right now, and the most at once.
    pub in_flight: Arc<AtomicUsize>,
    pub max_in_flight: Arc<AtomicUsize>,
}

impl Receiver {
    pub async fn start(answer: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Receiver {
        let log: Arc<Mutex<Vec<Received>>> = Arc::default();
        let in_flight: Arc<AtomicUsize> = Arc::default();
        let max_in_flight: Arc<AtomicUsize> = Arc::default();
        let answer = Arc::new(answer);
        let (l, f, m) = (log.clone(), in_flight.clone(), max_in_flight.clone());
        let app = Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let (log, in_flight, max_in_flight, answer) = (l.clone(), f.clone(), m.clone(), answer.clone());
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                max_in_flight.fetch_max(now, Ordering::SeqCst);
                let n = {
                    let mut log = log.lock().unwrap();
                    log.push(Received {
                        headers,
                        body: body.to_vec(),
                        at: Instant::now(),
                    });
                    log.len() - 1
                };
                let reply = answer(n);
                tokio::time::sleep(reply.delay).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                let mut headers = HeaderMap::new();
                for (name, value) in reply.headers {
                    headers.insert(HeaderName::from_static(name), HeaderValue::from_str(&value).unwrap());
                }
                (StatusCode::from_u16(reply.status).unwrap(), headers, "receiver says hi").into_response()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            log,
            in_flight,
            max_in_flight,
        }
    }

    /// Answers 200 at once.
    pub async fn ok() -> Receiver {
        Receiver::start(|_| Reply::status(200)).await
    }

    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }
}
