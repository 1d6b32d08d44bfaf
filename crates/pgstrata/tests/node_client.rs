//! The TypeScript client (`clients/node`) against real PostgreSQL: this test prepares a fresh
//! database (tenancy, rbac, queue and eventstore migrated), and runs the package's `npm test`
//! with the application's login role (a member of `pgstrata_app` only) and the admin in its
//! environment. The TypeScript tests check tenant isolation over a pool of 2 connections, that
//! nothing is visible or writable outside `withTenant`, rollback with no context left on the
//! pooled connection, and the typed errors, for node-postgres, Drizzle and Prisma.
//!
//! It also hands the package the Rust side of the error contract: `sqlstate::ALL`, and the
//! `DbError` variant each SQLSTATE becomes (raised in PostgreSQL and converted here), which the
//! TypeScript error classes must match.
//!
//! Needs Node.js, npm and the package's dependencies (`npm ci` in clients/node). Without them
//! the test says what is missing and passes, unless `PGSTRATA_REQUIRE_SQL_TOOLS=1` (set by
//! `.ci/run`, which installs them), when it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata::core::error::sqlstate;
use pgstrata::core::testing::{APP_LOGIN_ROLE, TestDb};
use pgstrata::{Backend, DbError};
use std::path::{Path, PathBuf};
use std::process::Command;

fn package_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/node");
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

/// Whether a missing tool fails the test (CI) or skips it.
fn missing(what: &str) {
    let message = format!("{what}: the TypeScript client is not checked here");
    assert!(
        std::env::var("PGSTRATA_REQUIRE_SQL_TOOLS").as_deref() != Ok("1"),
        "{message} (PGSTRATA_REQUIRE_SQL_TOOLS=1)"
    );
    eprintln!("skipped: {message}");
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// `url` with its user and password replaced (`postgres://user:password@host:port/db?..`).
fn with_login(url: &str, user: &str, password: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let host = rest[..authority_end]
        .rsplit_once('@')
        .map_or(&rest[..authority_end], |(_, h)| h);
    format!(
        "{}{user}:{password}@{host}{}",
        &url[..scheme_end],
        &rest[authority_end..]
    )
}

/// The `DbError` variant's name (`StaleVersion`, `Other`, ...) of each SQLSTATE, raised here.
async fn rust_variants(db: &TestDb) -> serde_json::Map<String, serde_json::Value> {
    let standard = [
        "23505", "23503", "23514", "23502", "22P02", "22023", "42501", "40001", "40P01", "XX000", "P0001",
    ];
    let mut variants = serde_json::Map::new();
    for code in sqlstate::ALL.iter().copied().chain(standard) {
        assert!(code.bytes().all(|b| b.is_ascii_alphanumeric()), "{code}");
        // The code is one of the constants above, checked to be alphanumeric.
        let raised = pgstrata::core::sql::trusted(format!(
            "DO $$ BEGIN RAISE EXCEPTION 'raised by the test' USING ERRCODE = '{code}'; END $$"
        ))
        .execute(&db.admin)
        .await
        .expect_err("RAISE raises");
        let err = DbError::from(raised);
        assert_eq!(err.code().unwrap_or(code), code, "{err:?}");
        let debug = format!("{err:?}");
        let variant: String = debug.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        variants.insert(code.to_owned(), variant.into());
    }
    variants
}

#[tokio::test]
async fn the_typescript_client_passes_its_tests() {
    let dir = package_dir();
    let Some(npm) = on_path("npm") else {
        missing("npm is not installed (Node.js 20.19 or later)");
        return;
    };
    if !dir.join("node_modules").is_dir() {
        missing(&format!("{} has no node_modules (run `npm ci` there)", dir.display()));
        return;
    }

    let backend = Backend::builder()
        .with_named("rbac")
        .unwrap()
        .with_named("queue")
        .unwrap()
        .with_named("eventstore")
        .unwrap()
        .build()
        .unwrap();
    let db = TestDb::migrated(backend.migrator()).await.unwrap();
    let admin_url = db.url().unwrap();
    let app_url = with_login(&admin_url, APP_LOGIN_ROLE, APP_LOGIN_ROLE);
    let variants = serde_json::Value::Object(rust_variants(&db).await).to_string();

    let out = Command::new(npm)
        .arg("test")
        .current_dir(&dir)
        .env("PGSTRATA_TEST_APP_URL", &app_url)
        .env("PGSTRATA_TEST_ADMIN_URL", &admin_url)
        .env("PGSTRATA_SQLSTATE_ALL", sqlstate::ALL.join(","))
        .env("PGSTRATA_RUST_ERROR_VARIANTS", variants)
        .output()
        .expect("running npm test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "npm test failed:\n{stdout}\n{stderr}");
    // node:test's summary: every test ran (none skipped for a missing variable) and passed.
    let count = |key: &str| -> u32 {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("# {key} ")))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `# {key}` in npm test's output:\n{stdout}"))
    };
    assert!(count("pass") >= 24, "fewer TypeScript tests than written:\n{stdout}");
    assert_eq!(count("fail"), 0, "{stdout}");
    assert_eq!(count("skipped"), 0, "a TypeScript test was skipped:\n{stdout}");
    eprintln!("TypeScript client: {} tests passed", count("pass"));
    db.close().await.unwrap();
}

#[test]
fn logins_replace_the_user_of_a_url() {
    assert_eq!(
        with_login("postgres://postgres@127.0.0.1:5432/db", "app", "pw"),
        "postgres://app:pw@127.0.0.1:5432/db"
    );
    assert_eq!(
        with_login("postgres://u:p@h/db?sslmode=disable", "app", "pw"),
        "postgres://app:pw@h/db?sslmode=disable"
    );
    assert_eq!(with_login("postgres://h:5/db", "a", "b"), "postgres://a:b@h:5/db");
}
