//! Test support: a fresh database per test, on the server at `DATABASE_URL` or on a throwaway
//! server started once per test process; and an unprivileged login role to test isolation as.
//!
//! Public so that applications can test their own code against pgstrata the same way.

pub mod logs;
pub mod plans;

use crate::migrate::{MigrateError, Migrator, Module};
use crate::server::{ServerError, ThrowawayServer};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::sync::Mutex;

/// Login role the isolation tests connect as: granted `pgstrata_app`, and nothing else. Not a
/// superuser, not an owner, no BYPASSRLS.
pub const APP_LOGIN_ROLE: &str = "pgstrata_test_app";
/// Login role granted `pgstrata_worker` only: background work across tenants.
pub const WORKER_LOGIN_ROLE: &str = "pgstrata_test_worker";
/// Login role granted `pgstrata_operator` only: the fields only the business may change.
pub const OPERATOR_LOGIN_ROLE: &str = "pgstrata_test_operator";
/// Login role that owns a [`Owner::NonSuperuser`] install: CREATEROLE, nothing more.
pub const OWNER_LOGIN_ROLE: &str = "pgstrata_test_owner";
const DB_PREFIX: &str = "pgstrata_test_";

/// What can go wrong while preparing a test database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestDbError {
    #[error("DATABASE_URL is not a valid PostgreSQL URL: {0}")]
    BadUrl(#[source] sqlx::Error),
    #[error("no DATABASE_URL and no throwaway server: {0}")]
    Server(#[from] ServerError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    #[error("psql failed: {0}")]
    Psql(String),
    #[error(transparent)]
    Codegen(#[from] crate::codegen::CodegenError),
}

/// A database that exists for one test. Call [`TestDb::close`] at the end to drop it; a
/// database left behind by a crashed test is dropped by the next test process.
#[derive(Debug)]
pub struct TestDb {
    /// Pool connected as the server's admin user (a superuser: bypasses RLS, sets up fixtures).
    pub admin: PgPool,
    name: String,
    server: PgConnectOptions,
    owner: Owner,
}

/// Who installs (and so owns) the schemas of a test database. SECURITY DEFINER functions run
/// as this role, so every attack runs against both kinds of install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The server's admin user, as in most development setups.
    Superuser,
    /// [`OWNER_LOGIN_ROLE`]: owns the database, may create roles, nothing more; forced RLS
    /// applies to it.
    NonSuperuser,
}

impl Owner {
    /// Both kinds, for tests that must hold on each.
    pub const BOTH: [Owner; 2] = [Owner::Superuser, Owner::NonSuperuser];
}

static THROWAWAY: OnceLock<Result<(ThrowawayServer, String), String>> = OnceLock::new();
static PREPARED: Mutex<bool> = Mutex::const_new(false);
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The admin URL of the test server: `DATABASE_URL`, else a throwaway server for this process.
pub fn server_url() -> Result<String, TestDbError> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return Ok(url);
    }
    let started = THROWAWAY.get_or_init(|| {
        ThrowawayServer::start()
            .map(|s| {
                let url = s.url();
                (s, url)
            })
            .map_err(|e| e.to_string())
    });
    match started {
        Ok((_, url)) => Ok(url.clone()),
        Err(e) => Err(TestDbError::Server(ServerError::Command {
            step: "starting a throwaway server",
            detail: e.clone(),
        })),
    }
}

impl TestDb {
    /// Creates an empty database.
    pub async fn new() -> Result<Self, TestDbError> {
        let server = PgConnectOptions::from_str(&server_url()?).map_err(TestDbError::BadUrl)?;
        let mut admin_conn = server.connect().await?;
        prepare_server(&mut admin_conn).await?;
        let name = format!(
            "{DB_PREFIX}{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        crate::sql::trusted(format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin_conn)
            .await?;
        admin_conn.close().await?;
        let admin = PgPoolOptions::new()
            .max_connections(10)
            .connect_with(server.clone().database(&name))
            .await?;
        Ok(Self {
            admin,
            name,
            server,
            owner: Owner::Superuser,
        })
    }

    /// Creates a database and migrates the given modules into it, as the admin user.
    pub async fn migrated(migrator: &Migrator) -> Result<Self, TestDbError> {
        Self::migrated_by(migrator, Owner::Superuser).await
    }

    /// Creates a database owned by `owner` and migrates the given modules into it as that role.
    pub async fn migrated_by(migrator: &Migrator, owner: Owner) -> Result<Self, TestDbError> {
        let mut db = Self::new().await?;
        if owner == Owner::NonSuperuser {
            crate::sql::trusted(format!("ALTER DATABASE \"{}\" OWNER TO {OWNER_LOGIN_ROLE}", db.name))
                .execute(&db.admin)
                .await?;
            db.owner = owner;
        }
        let mut conn = db.owner_options().connect().await?;
        migrator.up(&mut conn).await?;
        conn.close().await?;
        Ok(db)
    }

    /// Who installed this database's schemas.
    pub fn owner(&self) -> Owner {
        self.owner
    }

    /// Connect options as the role that installed the schemas (see [`Owner`]).
    pub fn owner_options(&self) -> PgConnectOptions {
        match self.owner {
            Owner::Superuser => self.admin_options(),
            Owner::NonSuperuser => self.login_options(OWNER_LOGIN_ROLE),
        }
    }

    /// Connect options as one of the test login roles (whose password is its name).
    pub fn login_options(&self, role: &str) -> PgConnectOptions {
        self.admin_options().username(role).password(role)
    }

    /// A pool of `max` connections as one of the test login roles.
    pub async fn pool_as(&self, role: &str, max: u32) -> Result<PgPool, TestDbError> {
        Ok(PgPoolOptions::new()
            .max_connections(max)
            .connect_with(self.login_options(role))
            .await?)
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// URL of this database as the admin user (for psql and other tools).
    pub fn url(&self) -> Result<String, TestDbError> {
        Ok(with_database(&server_url()?, &self.name))
    }

    /// Connect options for this database as the admin user.
    pub fn admin_options(&self) -> PgConnectOptions {
        self.server.clone().database(&self.name)
    }

    /// Connect options for this database as the unprivileged application role.
    pub fn app_options(&self) -> PgConnectOptions {
        self.login_options(APP_LOGIN_ROLE)
    }

    /// A pool of `max` connections as the unprivileged application role.
    pub async fn app_pool(&self, max: u32) -> Result<PgPool, TestDbError> {
        self.pool_as(APP_LOGIN_ROLE, max).await
    }

    /// One connection as the admin user.
    pub async fn admin_conn(&self) -> Result<PgConnection, TestDbError> {
        Ok(self.admin_options().connect().await?)
    }

    /// A tenant with `slug` as its slug and name, inserted by the admin user (bypassing the
    /// policies that the tests then attack).
    pub async fn tenant(&self, slug: &str) -> Result<crate::TenantId, TestDbError> {
        let id = crate::TenantId::new();
        sqlx::query("INSERT INTO tenancy.tenants (id, slug, name) VALUES ($1, $2, $2)")
            .bind(id)
            .bind(slug)
            .execute(&self.admin)
            .await?;
        Ok(id)
    }

    /// Drops the database.
    pub async fn close(self) -> Result<(), TestDbError> {
        self.admin.close().await;
        let mut conn = self.server.connect().await?;
        drop_database(&mut conn, &self.name).await?;
        Ok(())
    }
}

/// Loads a SQL file with `psql -v ON_ERROR_STOP=1`, as a team copying `schema.sql` would.
/// Returns psql's error output when it fails.
pub fn psql_file(url: &str, file: &std::path::Path, single_transaction: bool) -> Result<(), String> {
    let psql = crate::server::find_bin_dir()
        .map(|d| d.join("psql"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| "psql".into());
    let mut cmd = std::process::Command::new(psql);
    cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f"])
        .arg(file);
    if single_transaction {
        cmd.arg("--single-transaction");
    }
    let out = cmd.output().map_err(|e| format!("cannot run psql: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The workspace root, where `schemas/` and `migrations/` live.
fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A module's SQL artefacts, as its schema test checks them: `schemas/<module>/schema.sql` is
/// what the migrations render, the files a team loads with psql give the catalog the
/// migrations give, and the checked-in `generated.rs`, `drizzle.ts` and `schema.prisma` are what
/// codegen renders.
#[derive(Debug)]
pub struct Artefacts<'a> {
    pub module: &'static Module,
    /// Repo-relative files loaded with psql into an empty database, in order, each with
    /// whether it runs as a single transaction.
    pub psql_files: &'a [(&'a str, bool)],
    /// Schemas whose catalogs are compared.
    pub schemas: &'a [&'a str],
    /// The crate's checked-in `generated.rs` (`include_str!`).
    pub generated_rs: &'a str,
}

/// The two databases an [`Artefacts`] check compared, for the test's own further checks.
#[derive(Debug)]
pub struct Compared {
    /// Migrated by the migrator.
    pub migrated: TestDb,
    /// Loaded from the psql files.
    pub copied: TestDb,
    /// The catalog snapshot both gave.
    pub snapshot: String,
}

impl Artefacts<'_> {
    /// Runs the three checks; panics naming the stale file and the command that renews it.
    pub async fn check(&self, migrator: &Migrator) -> Result<Compared, TestDbError> {
        let name = self.module.name;
        let on_disk = std::fs::read_to_string(repo_root().join(format!("schemas/{name}/schema.sql")))
            .map_err(|e| TestDbError::Psql(format!("schemas/{name}/schema.sql: {e}")))?;
        assert!(
            on_disk == self.module.schema_sql(),
            "schemas/{name}/schema.sql is out of date: run \
             `cargo run -p pgstrata-cli -- schema print {name} > schemas/{name}/schema.sql`"
        );
        let migrated = TestDb::migrated(migrator).await?;
        let copied = TestDb::new().await?;
        for (file, single_transaction) in self.psql_files {
            psql_file(&copied.url()?, &repo_root().join(file), *single_transaction).map_err(TestDbError::Psql)?;
        }
        let mut a = migrated.admin_conn().await?;
        let mut b = copied.admin_conn().await?;
        let snapshot = crate::catalog::snapshot(&mut a, self.schemas).await?;
        assert_eq!(snapshot, crate::catalog::snapshot(&mut b, self.schemas).await?);
        let rendered = crate::codegen::render_all(&mut a, self.module).await?;
        assert!(
            rendered.rust == self.generated_rs,
            "crates/pgstrata-{name}/src/generated.rs is out of date: run `cargo run -p pgstrata-cli -- codegen`"
        );
        assert_typescript_schemas_current(name, &rendered);
        a.close().await?;
        b.close().await?;
        Ok(Compared {
            migrated,
            copied,
            snapshot,
        })
    }
}

/// Panics unless `schemas/<module>/drizzle.ts` and `schema.prisma` are what codegen renders
/// (`rendered`), naming the stale file and the command that renews it.
pub fn assert_typescript_schemas_current(module: &str, rendered: &crate::codegen::Rendered) {
    for (file, fresh) in [("drizzle.ts", &rendered.drizzle), ("schema.prisma", &rendered.prisma)] {
        let path = repo_root().join(format!("schemas/{module}/{file}"));
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == *fresh,
            "schemas/{module}/{file} is out of date: run `cargo run -p pgstrata-cli -- codegen`"
        );
    }
}

/// Runs a SQL script with psql and returns what it printed on stdout and stderr (where
/// NOTICEs go, e.g. auto_explain's plans).
pub fn psql_script(url: &str, script: &str) -> Result<(String, String), String> {
    let out = psql(url)
        .args(["-c", script])
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok((stdout, stderr))
    } else {
        Err(stderr)
    }
}

/// psql from the server's binaries (or PATH), quiet, stopping at the first error.
fn psql(url: &str) -> std::process::Command {
    let psql = crate::server::find_bin_dir()
        .map(|d| d.join("psql"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| "psql".into());
    let mut cmd = std::process::Command::new(psql);
    cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url]);
    cmd
}

/// `url` with its database (path) replaced by `name`; query parameters are kept.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

async fn drop_database(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    crate::sql::trusted(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(conn)
        .await
        .map(drop)
}

/// What a statement did, for attack tests: `ok <rows>` when it ran, else its SQLSTATE (so a
/// test names the refusal it expects, not a message).
pub async fn outcome(conn: &mut PgConnection, sql: &str) -> String {
    match crate::sql::trusted(sql.to_owned()).execute(&mut *conn).await {
        Ok(done) => format!("ok {}", done.rows_affected()),
        Err(e) => e
            .as_database_error()
            .and_then(|d| d.code().map(|c| c.into_owned()))
            .unwrap_or_else(|| format!("no SQLSTATE: {e}")),
    }
}

/// Creates the LOGIN role `name` (its password is its name; not a superuser, no BYPASSRLS)
/// unless it exists, with `attributes` such as `IN ROLE pgstrata_app`. Roles are cluster-wide
/// and concurrent test processes create the same ones, so a lost race is not an error.
pub async fn ensure_login_role(conn: &mut PgConnection, name: &str, attributes: &str) -> Result<(), sqlx::Error> {
    assert!(
        name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
        "role names here are lowercase identifiers: {name:?}"
    );
    crate::sql::trusted(format!(
        "DO $$ BEGIN
             IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{name}') THEN
                 CREATE ROLE {name} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB PASSWORD '{name}' {attributes};
             END IF;
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
    ))
    .execute(conn)
    .await
    .map(drop)
}

/// Once per process: create the application roles, and drop databases left behind by test
/// processes that no longer run.
async fn prepare_server(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    let mut prepared = PREPARED.lock().await;
    if *prepared {
        return Ok(());
    }
    // Roles are cluster-wide and other test processes do the same at the same time. The
    // group roles exist before any migration so that the login roles can be members of them.
    sqlx::raw_sql(
        "DO $$ DECLARE r text; BEGIN
             FOREACH r IN ARRAY ARRAY['pgstrata_app', 'pgstrata_worker', 'pgstrata_operator'] LOOP
                 BEGIN
                     IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
                         EXECUTE format('CREATE ROLE %I NOLOGIN NOSUPERUSER NOBYPASSRLS', r);
                     END IF;
                 EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
                 END;
             END LOOP;
         END $$;",
    )
    .execute(&mut *conn)
    .await?;
    ensure_login_role(&mut *conn, APP_LOGIN_ROLE, "IN ROLE pgstrata_app").await?;
    ensure_login_role(&mut *conn, WORKER_LOGIN_ROLE, "IN ROLE pgstrata_worker").await?;
    ensure_login_role(&mut *conn, OPERATOR_LOGIN_ROLE, "IN ROLE pgstrata_operator").await?;
    ensure_login_role(&mut *conn, OWNER_LOGIN_ROLE, "CREATEROLE").await?;
    let stale: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'pgstrata\\_test\\_%'")
            .fetch_all(&mut *conn)
            .await?;
    for name in stale {
        let pid = name
            .trim_start_matches(DB_PREFIX)
            .split('_')
            .next()
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = drop_database(conn, &name).await;
        }
    }
    *prepared = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_is_replaced_in_urls() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "t1"),
            "postgres://u@h:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "t1"),
            "postgres://u@h/t1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h:1", "t1"), "postgres://u@h:1/t1");
    }
}
