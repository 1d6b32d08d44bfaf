//! The SQL contract as teams on other stacks check it: each module's pgTAP suites
//! (`schemas/<module>/tests/*.sql`, plpgsql_check's included) run by `pg_prove` against databases
//! built from the `schema.sql` files alone, and the pg_cron recipes (`schemas/<module>/cron.sql`)
//! loaded and run on a server with pg_cron preloaded.
//!
//! pgTAP, pg_prove, plpgsql_check and pg_cron are separate packages. Without them these tests
//! say what is missing and pass, unless `PGSTRATA_REQUIRE_SQL_TOOLS=1` (set by `.ci/run`, which
//! installs them), when a missing tool fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata_core::server::{ThrowawayServer, find_bin_dir};
use pgstrata_core::testing::{TestDb, ensure_login_role, psql_file, with_database};
use sqlx::{Connection, PgConnection};
use std::path::{Path, PathBuf};
use std::process::Command;

const MODULES: [&str; 9] = [
    "tenancy",
    "rbac",
    "queue",
    "billing",
    "audit",
    "events",
    "outbox",
    "eventstore",
    "webhooks",
];

fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::canonicalize(&root).unwrap_or(root)
}

/// Whether a missing tool fails the test (CI) or skips it (a machine without the packages).
fn missing(what: &str) {
    let message = format!("{what}: the SQL contract is not checked here");
    assert!(
        std::env::var("PGSTRATA_REQUIRE_SQL_TOOLS").as_deref() != Ok("1"),
        "{message} (PGSTRATA_REQUIRE_SQL_TOOLS=1)"
    );
    eprintln!("skipped: {message}");
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

fn psql_bin() -> PathBuf {
    find_bin_dir()
        .map(|d| d.join("psql"))
        .filter(|p| p.is_file())
        .or_else(|| on_path("psql"))
        .unwrap_or_else(|| "psql".into())
}

/// The suites of `module`, in file order.
fn suites(module: &str) -> Vec<PathBuf> {
    let dir = repo_root().join("schemas").join(module).join("tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no pgTAP suite in {}", dir.display());
    files
}

/// Runs `pg_prove` on `files` against `url`; panics with its output unless every assertion
/// passed. Returns how many assertions ran.
fn prove(pg_prove: &Path, url: &str, files: &[PathBuf]) -> u64 {
    let out = Command::new(pg_prove)
        .arg("--psql-bin")
        .arg(psql_bin())
        .args(["--failures", "-d", url])
        .args(files)
        .output()
        .expect("running pg_prove");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pg_prove failed:\n{stdout}\n{stderr}");
    stdout
        .split("Tests=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no test count in pg_prove's output:\n{stdout}"))
}

/// A database holding `modules`, loaded from their `schema.sql` with psql, as a team would.
async fn install(modules: &[&str]) -> TestDb {
    let db = TestDb::new().await.unwrap();
    for module in modules {
        let file = repo_root().join("schemas").join(module).join("schema.sql");
        psql_file(&db.url().unwrap(), &file, false).unwrap_or_else(|e| panic!("loading {module}: {e}"));
    }
    db
}

/// pg_prove, when the tools the suites need are here.
async fn tools() -> Option<PathBuf> {
    let Some(pg_prove) = on_path("pg_prove") else {
        missing("pg_prove is not installed (Debian: apt-get install pgtap)");
        return None;
    };
    let db = TestDb::new().await.unwrap();
    let available: Vec<String> = sqlx::query_scalar(
        "SELECT name::text FROM pg_available_extensions WHERE name IN ('pgtap', 'plpgsql_check') ORDER BY 1",
    )
    .fetch_all(&db.admin)
    .await
    .unwrap();
    db.close().await.unwrap();
    if available.len() < 2 {
        missing(&format!(
            "the server offers {available:?} of the extensions pgtap and plpgsql_check \
             (Debian: apt-get install postgresql-<major>-pgtap postgresql-<major>-plpgsql-check)"
        ));
        return None;
    }
    Some(pg_prove)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_modules_suites_pass_on_an_install_from_schema_sql_alone() {
    let Some(pg_prove) = tools().await else { return };
    let db = install(&MODULES).await;
    let url = db.url().unwrap();
    let mut counts = Vec::new();
    for module in MODULES {
        let files = suites(module);
        let n = tokio::task::block_in_place(|| prove(&pg_prove, &url, &files));
        counts.push(format!("{module}: {n} assertions in {} files", files.len()));
    }
    println!("pgTAP, all modules installed:\n  {}", counts.join("\n  "));
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn each_modules_suites_pass_with_only_tenancy_beside_it() {
    let Some(pg_prove) = tools().await else { return };
    for module in MODULES {
        let modules: Vec<&str> = if module == "tenancy" {
            vec!["tenancy"]
        } else {
            vec!["tenancy", module]
        };
        let db = install(&modules).await;
        let url = db.url().unwrap();
        let n = tokio::task::block_in_place(|| prove(&pg_prove, &url, &suites(module)));
        println!("pgTAP, {modules:?} installed: {module} {n} assertions");
        db.close().await.unwrap();
    }
}

/// Loads a cron recipe with psql, naming the database and role its jobs run as.
fn load_recipe(url: &str, module: &str, vars: &[(&str, &str)]) {
    let mut cmd = Command::new(psql_bin());
    cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url]);
    for (name, value) in vars {
        cmd.args(["-v", &format!("{name}={value}")]);
    }
    let out = cmd
        .arg("-f")
        .arg(repo_root().join("schemas").join(module).join("cron.sql"))
        .output()
        .expect("running psql");
    assert!(
        out.status.success(),
        "loading schemas/{module}/cron.sql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cron_recipes_schedule_every_periodic_task_and_pg_cron_runs_them() {
    let Some(lib) = find_bin_dir().and_then(|b| b.parent().map(|p| p.join("lib/pg_cron.so"))) else {
        return missing("no PostgreSQL server binaries");
    };
    if !lib.is_file() {
        return missing("pg_cron is not installed (Debian: apt-get install postgresql-<major>-cron)");
    }
    // pg_cron needs shared_preload_libraries, which only a start sets: a server of our own.
    let server = ThrowawayServer::start_with(&[
        ("shared_preload_libraries", "pg_cron"),
        ("cron.database_name", "postgres"),
        ("cron.use_background_workers", "on"),
    ])
    .unwrap();
    let cron_url = server.url();
    let app_url = with_database(&cron_url, "app");
    let mut cron = PgConnection::connect(&cron_url).await.unwrap();
    for statement in ["CREATE EXTENSION pg_cron", "CREATE DATABASE app"] {
        sqlx::raw_sql(statement).execute(&mut cron).await.unwrap();
    }
    // Every module of the build, in dependency order; the recipes of those with periodic work.
    let backend = pgstrata::Backend::all().unwrap();
    for module in backend.modules() {
        let file = repo_root().join("schemas").join(module.name).join("schema.sql");
        psql_file(&app_url, &file, false).unwrap_or_else(|e| panic!("loading {}: {e}", module.name));
    }
    ensure_login_role(&mut cron, "cron_worker", "IN ROLE pgstrata_worker")
        .await
        .unwrap();
    ensure_login_role(&mut cron, "cron_sync", "IN ROLE pgstrata_billing_sync")
        .await
        .unwrap();

    // Loaded twice: the second load updates the same jobs.
    for _ in 0..2 {
        for module in backend.modules().iter().filter(|m| !m.maintenance.is_empty()) {
            load_recipe(
                &cron_url,
                module.name,
                &[("db", "app"), ("worker", "cron_worker"), ("sync", "cron_sync")],
            );
        }
    }
    let jobs: Vec<(i64, String, String, String, String, bool)> =
        sqlx::query_as("SELECT jobid, jobname, database, username, command, active FROM cron.job ORDER BY jobname")
            .fetch_all(&mut cron)
            .await
            .unwrap();
    let names: Vec<&str> = jobs.iter().map(|j| j.1.as_str()).collect();
    let mut expected_names: Vec<String> = backend
        .modules()
        .iter()
        .flat_map(|m| m.maintenance.iter().map(|t| format!("pgstrata:app:{}", t.name)))
        .collect();
    expected_names.sort();
    assert_eq!(names, expected_names);
    assert!(names.contains(&"pgstrata:app:audit.seal"), "{names:?}");
    for (_, name, database, username, _, active) in &jobs {
        let expected = if name.contains("billing") {
            "cron_sync"
        } else {
            "cron_worker"
        };
        assert_eq!(
            (database.as_str(), username.as_str(), *active),
            ("app", expected, true),
            "{name}"
        );
    }

    // Every job once at the next minute, as pg_cron runs them: in app, as their role.
    sqlx::query("SELECT cron.alter_job(jobid, schedule => '* * * * *') FROM cron.job")
        .execute(&mut cron)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(100);
    loop {
        let runs: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT DISTINCT ON (j.jobname) j.jobname, d.status, d.return_message
               FROM cron.job j JOIN cron.job_run_details d ON d.jobid = j.jobid
              WHERE d.status IN ('succeeded', 'failed')
              ORDER BY j.jobname, d.end_time DESC",
        )
        .fetch_all(&mut cron)
        .await
        .unwrap();
        let failed: Vec<_> = runs.iter().filter(|r| r.1 == "failed").collect();
        assert!(failed.is_empty(), "cron jobs failed: {failed:?}");
        if runs.len() == jobs.len() {
            println!(
                "pg_cron ran every job once: {:?}",
                runs.iter().map(|r| &r.0).collect::<Vec<_>>()
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pg_cron ran {runs:?} of {names:?} within 100 s"
        );
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    cron.close().await.unwrap();
    drop(server);
}
