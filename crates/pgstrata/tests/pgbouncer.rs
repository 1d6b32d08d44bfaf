//! The Rust API through PgBouncer in transaction mode: migrations run directly, then the tenancy
//! flows, rbac checks and isolation checks run as the application role through a real
//! PgBouncer started here, with the connect options of `pgstrata::core::connect`. Migrations
//! through the pooler are refused. Then jobs are enqueued by requests and run by workers, both
//! through the pooler.
//!
//! Skipped, saying so, when no `pgbouncer` binary is installed (`apt-get install pgbouncer`);
//! `.ci/run` installs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata::core::connect::DatabaseUrl;
use pgstrata::core::testing::{APP_LOGIN_ROLE, TestDb, WORKER_LOGIN_ROLE, server_url};
use pgstrata::tenancy::{memberships, tenants, users};
use pgstrata::{Backend, MigrateError, Page, TenantContext};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;

fn pgbouncer_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join("pgbouncer"))
        .find(|p| p.is_file())
}

/// A PgBouncer in transaction mode in front of the test server, stopped when dropped.
struct Bouncer {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Bouncer {
    fn start(binary: &PathBuf, server: &PgConnectOptions, users: &[(&str, &str)]) -> Bouncer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("pgstrata-pgbouncer-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let auth: String = users.iter().map(|(u, p)| format!("\"{u}\" \"{p}\"\n")).collect();
        std::fs::write(dir.join("users.txt"), auth).unwrap();
        // The reset drops each client's prepared statements when its server session goes back
        // to the pool (sqlx names them even with its cache off; see pgstrata::core::connect).
        let config = format!(
            "[databases]\n* = host={} port={}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
             unix_socket_dir =\nauth_type = trust\nauth_file = {}\npool_mode = transaction\n\
             default_pool_size = 2\nmax_client_conn = 100\nserver_reset_query = DEALLOCATE ALL\n\
             server_reset_query_always = 1\n",
            server.get_host(),
            server.get_port(),
            dir.join("users.txt").display()
        );
        std::fs::write(dir.join("pgbouncer.ini"), config).unwrap();
        let mut cmd = Command::new(binary);
        // PgBouncer refuses to run as root.
        if std::env::var("USER").as_deref() == Ok("root") || is_root() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            cmd.args(["-u", "postgres"]);
        }
        let child = cmd
            .arg(dir.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut bouncer = Bouncer { child, dir, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return bouncer;
            }
            if let Ok(Some(status)) = bouncer.child.try_wait() {
                panic!("pgbouncer exited at start: {status}");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = bouncer.child.kill();
        panic!("pgbouncer did not listen on {port}");
    }

    /// A URL through the pooler, marked as one.
    fn url(&self, user: &str, password: &str, database: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{database}?pgbouncer=true",
            self.port
        )
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

async fn visible_memberships(tx: &mut sqlx::PgConnection) -> Vec<uuid::Uuid> {
    sqlx::query_scalar("SELECT tenant_id FROM tenancy.memberships")
        .fetch_all(tx)
        .await
        .unwrap()
}

#[tokio::test]
async fn tenancy_flows_and_isolation_through_pgbouncer_in_transaction_mode() {
    let Some(binary) = pgbouncer_binary() else {
        eprintln!("SKIPPED: no pgbouncer binary (apt-get install pgbouncer); .ci/run installs it");
        return;
    };
    let db = TestDb::new().await.unwrap();
    // Migrations go directly to PostgreSQL.
    let backend = Backend::all().unwrap();
    backend.migrate(&db.admin).await.unwrap();

    let server = PgConnectOptions::from_str(&server_url().unwrap()).unwrap();
    let admin_user = server.get_username().to_owned();
    let bouncer = Bouncer::start(
        &binary,
        &server,
        &[(admin_user.as_str(), ""), (APP_LOGIN_ROLE, APP_LOGIN_ROLE)],
    );

    // Through the pooler, a migration run is refused, and changes nothing.
    let pooled_admin = DatabaseUrl::parse(&bouncer.url(&admin_user, "", db.name())).unwrap();
    assert!(pooled_admin.is_pooled());
    let admin_pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(pooled_admin.options())
        .await
        .unwrap();
    let err = backend.migrate(&admin_pool).await.unwrap_err();
    assert!(matches!(err, MigrateError::NotOneSession(_)), "{err}");
    assert!(err.to_string().contains("transaction pooler"), "{err}");
    admin_pool.close().await;

    // The application role through the pooler: more clients than server sessions, so every
    // client's transactions run on sessions other clients used before.
    let app_url = DatabaseUrl::parse(&bouncer.url(APP_LOGIN_ROLE, APP_LOGIN_ROLE, db.name())).unwrap();
    let app = PgPoolOptions::new()
        .max_connections(6)
        .min_connections(6)
        .connect_with(app_url.options())
        .await
        .unwrap();
    let mut founders = Vec::new();
    let mut tenant_ids = Vec::new();
    for slug in ["acme", "globex"] {
        let mut conn = app.acquire().await.unwrap();
        let founder = users::register(
            &mut conn,
            &users::NewUser {
                email: format!("founder@{slug}.example"),
                display_name: format!("Founder of {slug}"),
            },
        )
        .await
        .unwrap();
        let tenant = tenants::create_tenant(&mut conn, &tenants::NewTenant::new(slug, slug), Some(founder.id))
            .await
            .unwrap();
        founders.push(founder.id);
        tenant_ids.push(tenant.id);
    }

    let mut tasks = Vec::new();
    for worker in 0..6usize {
        let app = app.clone();
        let tenant_ids = tenant_ids.clone();
        let founders = founders.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..40usize {
                let i = (worker + round) % 2;
                let (tenant, other) = (tenant_ids[i], tenant_ids[1 - i]);
                let ctx = TenantContext::tenant(tenant).with_actor(founders[i]);
                let mut tx = pgstrata::begin_tenant(&app, &ctx).await.unwrap();
                let members = memberships::list(&mut tx, &Default::default(), &Page::first(20))
                    .await
                    .unwrap();
                assert_eq!(members.len(), 1);
                assert!(members.iter().all(|m| m.tenant_id == tenant));
                assert_eq!(visible_memberships(&mut tx).await, [tenant.0]);
                let visible = tenants::list(&mut tx, &Default::default(), &Page::first(20))
                    .await
                    .unwrap();
                assert_eq!(visible.iter().map(|t| t.id).collect::<Vec<_>>(), [tenant]);
                let moved = sqlx::query("UPDATE tenancy.memberships SET role = 'member' WHERE tenant_id = $1")
                    .bind(other.0)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                assert_eq!(moved.rows_affected(), 0, "another tenant's rows are out of reach");
                let owner = pgstrata::rbac::Principal::user(founders[i]);
                let stranger = pgstrata::rbac::Principal::user(founders[1 - i]);
                assert!(
                    pgstrata::rbac::check(&mut tx, &owner, "invoice:delete", None)
                        .await
                        .unwrap()
                );
                assert!(
                    !pgstrata::rbac::check(&mut tx, &stranger, "invoice:delete", None)
                        .await
                        .unwrap()
                );
                tx.commit().await.unwrap();

                // The next transaction, on whatever session the pooler gives, has no tenant.
                let mut tx = app.begin().await.unwrap();
                assert!(visible_memberships(&mut tx).await.is_empty(), "no context, no rows");
                let planted = memberships::add_stmt(tenant, founders[i], "member").unwrap();
                let planted = pgstrata::core::sql::query(planted).execute(&mut *tx).await;
                assert!(planted.is_err(), "no context, no writes");
                tx.rollback().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    app.close().await;
    drop(bouncer);
    db.close().await.unwrap();
}

/// A job of the queue test below: its number, recorded by the handler.
#[derive(serde::Serialize, serde::Deserialize)]
struct Numbered {
    n: i64,
}

impl pgstrata::queue::JobKind for Numbered {
    const KIND: &'static str = "numbered";
}

/// Records each run with the tenant its transaction had; the primary key refuses a second run.
struct Recorder;

impl pgstrata::queue::Handler<Numbered> for Recorder {
    async fn handle(
        &self,
        tx: &mut sqlx::PgConnection,
        job: Numbered,
        meta: &pgstrata::queue::JobMeta,
    ) -> Result<(), pgstrata::queue::worker::HandlerError> {
        sqlx::query(
            "INSERT INTO public.runs (job_id, n, tenant) VALUES ($1, $2, current_setting('app.tenant_id', true))",
        )
        .bind(meta.id.0)
        .bind(job.n)
        .execute(tx)
        .await?;
        Ok(())
    }
}

/// Requests enqueue in their tenant transactions and three workers (polling, since a pooler
/// cannot keep a LISTEN) run the jobs, all through PgBouncer in transaction mode with fewer server
/// sessions than clients: every job runs exactly once, in its tenant's context.
#[tokio::test]
async fn jobs_are_enqueued_and_run_through_pgbouncer_in_transaction_mode() {
    let Some(binary) = pgbouncer_binary() else {
        eprintln!("SKIPPED: no pgbouncer binary (apt-get install pgbouncer); .ci/run installs it");
        return;
    };
    let db = TestDb::new().await.unwrap();
    Backend::all().unwrap().migrate(&db.admin).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE public.runs (job_id bigint PRIMARY KEY, n bigint NOT NULL, tenant text);
         GRANT INSERT ON public.runs TO pgstrata_worker;",
    )
    .execute(&db.admin)
    .await
    .unwrap();
    let tenants: Vec<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO tenancy.tenants (slug, name) VALUES ('acme', 'Acme'), ('globex', 'Globex') RETURNING id",
    )
    .fetch_all(&db.admin)
    .await
    .unwrap();

    let server = PgConnectOptions::from_str(&server_url().unwrap()).unwrap();
    let bouncer = Bouncer::start(
        &binary,
        &server,
        &[(APP_LOGIN_ROLE, APP_LOGIN_ROLE), (WORKER_LOGIN_ROLE, WORKER_LOGIN_ROLE)],
    );
    let app_url = DatabaseUrl::parse(&bouncer.url(APP_LOGIN_ROLE, APP_LOGIN_ROLE, db.name())).unwrap();
    let app = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(app_url.options())
        .await
        .unwrap();
    const JOBS: i64 = 300;
    for n in 0..JOBS {
        let tenant = pgstrata::TenantId(tenants[usize::try_from(n % 2).unwrap()]);
        let mut tx = pgstrata::begin_tenant(&app, &TenantContext::tenant(tenant))
            .await
            .unwrap();
        pgstrata::queue::client::enqueue(&mut tx, &pgstrata::queue::NewJob::of(&Numbered { n }).unwrap())
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    app.close().await;

    let worker_url = DatabaseUrl::parse(&bouncer.url(WORKER_LOGIN_ROLE, WORKER_LOGIN_ROLE, db.name())).unwrap();
    let mut runs = Vec::new();
    for i in 0..3 {
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .connect_with(worker_url.options())
            .await
            .unwrap();
        let mut config = pgstrata::queue::WorkerConfig::new("default").behind_pooler();
        config.concurrency = 2;
        config.poll_interval = std::time::Duration::from_millis(50);
        config.name = format!("pooled-{i}");
        let worker = pgstrata::queue::Worker::new(pool, config)
            .unwrap()
            .register::<Numbered, _>(Recorder);
        runs.push(tokio::spawn(
            worker.run_until_drained(pgstrata::CancellationToken::new()),
        ));
    }
    // A worker whose statements the pooler breaks retries them forever: bound the wait.
    for run in runs {
        tokio::time::timeout(std::time::Duration::from_secs(120), run)
            .await
            .expect("the workers drain the queue through the pooler")
            .unwrap()
            .unwrap();
    }
    let (count, distinct, in_context): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT n),
                count(*) FILTER (WHERE tenant = (SELECT tenant_id::text FROM queue.jobs j WHERE j.id = runs.job_id))
           FROM public.runs",
    )
    .fetch_one(&db.admin)
    .await
    .unwrap();
    assert_eq!((count, distinct, in_context), (JOBS, JOBS, JOBS));
    let unfinished: i64 = sqlx::query_scalar("SELECT count(*) FROM queue.jobs WHERE state <> 'completed'")
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert_eq!(unfinished, 0);
    drop(bouncer);
    db.close().await.unwrap();
}
