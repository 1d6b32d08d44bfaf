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
    let a = db.tenant("tenant-a").await.unwrap();
    let b = db.tenant("tenant-b").await.unwrap();
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

/// The test root certificate (PEM) the https receivers' certificate chains to; it is valid for
/// `localhost`, 127.0.0.1 and ::1 (made as pgstrata-core's tests/https.rs says).
pub const TEST_ROOT_PEM: &[u8] = include_bytes!("../../../pgstrata-core/tests/fixtures/tls/ca.pem");
const TEST_SERVER_CERT: &[u8] = include_bytes!("../../../pgstrata-core/tests/fixtures/tls/server.pem");
const TEST_SERVER_KEY: &[u8] = include_bytes!("../../../pgstrata-core/tests/fixtures/tls/server.key.pem");

/// A TLS listener for axum: accepts TCP, runs the handshake in its own task, hands over the
/// TLS streams that completed (and counts the handshakes that failed).
pub struct TlsListener {
    local: std::net::SocketAddr,
    rx: tokio::sync::mpsc::UnboundedReceiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        std::net::SocketAddr,
    )>,
}

impl TlsListener {
    pub async fn bind(failed_handshakes: Arc<AtomicUsize>) -> TlsListener {
        use rustls::pki_types::pem::PemObject;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                pgstrata_core::https::pem_certificates(TEST_SERVER_CERT).unwrap(),
                rustls::pki_types::PrivateKeyDer::from_pem_slice(TEST_SERVER_KEY).unwrap(),
            )
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, peer)) = listener.accept().await {
                let (acceptor, tx, failed) = (acceptor.clone(), tx.clone(), failed_handshakes.clone());
                tokio::spawn(async move {
                    match acceptor.accept(tcp).await {
                        Ok(tls) => {
                            let _ = tx.send((tls, peer));
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        TlsListener { local, rx }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

impl Receiver {
    pub async fn start(answer: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (receiver, app) = Receiver::app(format!("http://{addr}/hook"), answer);
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        receiver
    }

    /// An https receiver on 127.0.0.1 whose certificate (for `localhost`, 127.0.0.1, ::1)
    /// chains to [`TEST_ROOT_PEM`]; `host` is the URL's host. Also returns the count of failed
    /// handshakes.
    pub async fn start_https(
        host: &str,
        answer: impl Fn(usize) -> Reply + Send + Sync + 'static,
    ) -> (Receiver, Arc<AtomicUsize>) {
        let failed: Arc<AtomicUsize> = Arc::default();
        let listener = TlsListener::bind(failed.clone()).await;
        let port = listener.local.port();
        let (receiver, app) = Receiver::app(format!("https://{host}:{port}/hook"), answer);
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (receiver, failed)
    }

    fn app(url: String, answer: impl Fn(usize) -> Reply + Send + Sync + 'static) -> (Receiver, Router) {
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
        let receiver = Receiver {
            url,
            log,
            in_flight,
            max_in_flight,
        };
        (receiver, app)
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
