//! The example served over real HTTP on 127.0.0.1, against a fresh migrated database, as the
//! unprivileged roles production uses: the request path logs in as `pgstrata_test_app`
//! (granted `pgstrata_app` only), the worker as `pgstrata_test_worker`, the Stripe webhook as
//! a role granted `pgstrata_billing_sync` only. The client is hyper's, which axum already
//! builds on.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use axum::body::Bytes;
use backend::auth::{Claims, TokenKey};
use backend::background::{self, Settings};
use backend::error::ApiError;
use backend::webhooks::StripeWebhook;
use backend::{AppState, app, schema};
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use pgstrata::billing::Verifier;
use pgstrata::core::testing::{TestDb, WORKER_LOGIN_ROLE, ensure_login_role};
use pgstrata::tenancy::{tenants, users};
use pgstrata::{TenantId, UserId};
use serde_json::Value;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub mod logs;

pub const JWT_SECRET: &[u8] = b"a test secret of at least thirty-two bytes";
pub const STRIPE_SECRET: &str = "whsec_backend_example_test";
/// The webhook path's login role: a member of pgstrata_billing_sync only.
pub const SYNC_LOGIN: &str = "pgstrata_test_billing_sync";

/// A running server and what a test needs around it.
pub struct Fixture {
    pub db: TestDb,
    pub app_pool: PgPool,
    pub key: TokenKey,
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    stop: CancellationToken,
    server: JoinHandle<()>,
    background: Option<(CancellationToken, JoinHandle<Result<(), ApiError>>)>,
}

/// Someone signed up: a user who owns a tenant, and a token for it.
#[derive(Debug, Clone)]
pub struct Account {
    pub user: UserId,
    pub tenant: TenantId,
    pub email: String,
    pub token: String,
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_owned())
    }

    pub fn etag(&self) -> String {
        self.header("etag")
            .unwrap_or_else(|| panic!("no ETag: {} {}", self.status, self.text()))
    }
}

/// A request to send.
#[derive(Debug, Default, Clone)]
pub struct Req {
    pub token: Option<String>,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<Vec<u8>>,
}

impl Req {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    pub fn json(mut self, value: Value) -> Self {
        self.body = Some(serde_json::to_vec(&value).unwrap());
        self.headers.push(("content-type", "application/json".into()));
        self
    }
    pub fn raw(mut self, body: Vec<u8>) -> Self {
        self.body = Some(body);
        self
    }
}

impl Fixture {
    /// A migrated database and the application serving on a free port; with `worker`, the
    /// background loops run too (as the worker role).
    pub async fn start(worker: bool) -> Self {
        logs::install();
        let db = TestDb::migrated(schema::backend().unwrap().migrator()).await.unwrap();
        let mut admin = db.admin_conn().await.unwrap();
        ensure_login_role(&mut admin, SYNC_LOGIN, "IN ROLE pgstrata_billing_sync")
            .await
            .unwrap();
        drop(admin);
        let app_pool = db.app_pool(8).await.unwrap();
        let key = TokenKey::new(JWT_SECRET).unwrap();
        let state = AppState {
            pool: app_pool.clone(),
            tokens: Arc::new(key.clone()),
            stripe: Some(StripeWebhook {
                pool: db.pool_as(SYNC_LOGIN, 2).await.unwrap(),
                verifier: Verifier::new([STRIPE_SECRET]).unwrap(),
            }),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let serve = axum::serve(listener, app(state)).with_graceful_shutdown(stop.clone().cancelled_owned());
        let server = tokio::spawn(async move { serve.await.unwrap() });
        let background = if worker {
            let mut settings = Settings::new().unwrap();
            settings.worker.poll_interval = Duration::from_millis(100);
            settings.worker.maintenance_interval = Duration::from_millis(200);
            settings.worker.shutdown_timeout = Duration::from_secs(5);
            settings.sealer.interval = Duration::from_millis(200);
            let pool = db.pool_as(WORKER_LOGIN_ROLE, 6).await.unwrap();
            let token = CancellationToken::new();
            let handle = tokio::spawn(background::run(pool, settings, token.clone()));
            Some((token, handle))
        } else {
            None
        };
        Self {
            db,
            app_pool,
            key,
            base,
            client: Client::builder(TokioExecutor::new()).build_http(),
            stop,
            server,
            background,
        }
    }

    /// Stops the server (and the background loops, which must end cleanly) and drops the
    /// database.
    pub async fn stop(self) {
        self.stop.cancel();
        self.server.await.unwrap();
        if let Some((token, handle)) = self.background {
            token.cancel();
            tokio::time::timeout(Duration::from_secs(15), handle)
                .await
                .expect("background loops stop when cancelled")
                .unwrap()
                .unwrap();
        }
        self.app_pool.close().await;
        self.db.close().await.unwrap();
    }

    /// A token for `user` in `tenant`, valid for an hour.
    pub fn token(&self, user: UserId, tenant: TenantId) -> String {
        self.key.sign(&Claims::new(user, tenant, 3600))
    }

    /// A user registering itself (as the application role, as a sign-up would).
    pub async fn register(&self, name: &str) -> (UserId, String) {
        let email = format!("{name}+{}@example.com", Uuid::now_v7().simple());
        let mut conn = self.app_pool.acquire().await.unwrap();
        let user = users::register(
            &mut conn,
            &users::NewUser {
                email: email.clone(),
                display_name: name.into(),
            },
        )
        .await
        .unwrap();
        (user.id, email)
    }

    /// A user and the tenant it creates (and so owns).
    pub async fn sign_up(&self, name: &str) -> Account {
        let (user, email) = self.register(name).await;
        let slug = format!("{name}-{}", Uuid::now_v7().simple());
        let mut conn = self.app_pool.acquire().await.unwrap();
        let tenant = tenants::create_tenant(&mut conn, &tenants::NewTenant::new(slug, name), Some(user))
            .await
            .unwrap()
            .id;
        Account {
            user,
            tenant,
            email,
            token: self.token(user, tenant),
        }
    }

    /// `invitee` (registered) joins `owner`'s tenant as `role` through the HTTP flow: the
    /// owner invites, the invitee accepts. Returns the invitee's account in that tenant.
    pub async fn join(&self, owner: &Account, name: &str, role: &str) -> Account {
        let (user, email) = self.register(name).await;
        let invited = self
            .send(
                Method::POST,
                "/invitations",
                Req::new()
                    .token(&owner.token)
                    .json(serde_json::json!({ "email": email, "role": role })),
            )
            .await;
        assert_eq!(invited.status, StatusCode::CREATED, "{}", invited.text());
        let token = self.token(user, owner.tenant);
        let accepted = self
            .send(
                Method::POST,
                "/invitations/accept",
                Req::new()
                    .token(&token)
                    .json(serde_json::json!({ "token": invited.json()["token"] })),
            )
            .await;
        assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.text());
        Account {
            user,
            tenant: owner.tenant,
            email,
            token,
        }
    }

    pub async fn send(&self, method: Method, path: impl Into<String>, req: Req) -> Reply {
        let path = path.into();
        let mut builder = Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some(token) = &req.token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in &req.headers {
            builder = builder.header(*name, value);
        }
        let request = builder
            .body(Full::new(Bytes::from(req.body.unwrap_or_default())))
            .unwrap();
        let response = self.client.request(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
        Reply { status, headers, body }
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.send(Method::GET, path, Req::new().token(token)).await
    }

    /// Creates a project as `account`; returns its id and ETag.
    pub async fn create_project(&self, account: &Account, name: &str) -> (String, String) {
        let reply = self
            .send(
                Method::POST,
                "/projects",
                Req::new()
                    .token(&account.token)
                    .json(serde_json::json!({ "name": name })),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
        (reply.json()["id"].as_str().unwrap().to_owned(), reply.etag())
    }
}
