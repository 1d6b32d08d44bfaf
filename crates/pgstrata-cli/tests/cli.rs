//! The `pgstrata` binary as an operator runs it, on a fresh database per test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata_core::catalog;
use pgstrata_core::testing::TestDb;
use std::process::{Command, Output};

fn pgstrata(url: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgstrata"));
    cmd.args(args).env_remove("DATABASE_URL");
    if let Some(url) = url {
        cmd.env("DATABASE_URL", url);
    }
    cmd.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn migrate_up_doctor_down_to_zero_and_up_again() {
    let db = TestDb::new().await.unwrap();
    let url = db.url().unwrap();
    let mut conn = db.admin_conn().await.unwrap();
    let empty = catalog::user_objects(&mut conn).await.unwrap();

    // Doctor on an empty database: pending migrations are a failure.
    let out = pgstrata(Some(&url), &["doctor"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("pending"));

    let out = pgstrata(Some(&url), &["migrate", "up"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("applied tenancy V1__tenancy"));

    let out = pgstrata(Some(&url), &["doctor"]);
    assert!(out.status.success(), "{}", text(&out));
    for table in ["tenancy.memberships", "rbac.grants"] {
        let line = text(&out)
            .lines()
            .find(|l| l.starts_with(table))
            .map(str::to_owned)
            .unwrap_or_default();
        assert!(line.contains(" tenant ") && line.ends_with(" ok"), "{table}: {line:?}");
    }
    assert!(text(&out).contains("all checks passed"));

    let out = pgstrata(Some(&url), &["migrate", "status"]);
    assert!(out.status.success() && text(&out).contains("applied"), "{}", text(&out));

    let out = pgstrata(Some(&url), &["seed"]);
    assert!(out.status.success(), "{}", text(&out));

    sqlx::raw_sql("SELECT queue.enqueue('mail'), queue.enqueue('mail'), queue.enqueue('report', p_queue => 'slow')")
        .execute(&mut conn)
        .await
        .unwrap();
    let out = pgstrata(Some(&url), &["queue", "stats"]);
    assert!(out.status.success(), "{}", text(&out));
    let line = text(&out)
        .lines()
        .find(|l| l.starts_with("default"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(line.contains("available") && line.contains(" 2 "), "{}", text(&out));
    let out = pgstrata(Some(&url), &["queue", "prune"]);
    assert!(
        out.status.success() && text(&out).contains("pruned 0"),
        "{}",
        text(&out)
    );

    let out = pgstrata(Some(&url), &["migrate", "down", "--target", "0", "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        catalog::user_objects(&mut conn).await.unwrap(),
        empty,
        "down --target 0 leaves nothing"
    );

    let out = pgstrata(Some(&url), &["migrate", "up"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = pgstrata(Some(&url), &["doctor"]);
    assert!(out.status.success(), "{}", text(&out));

    // A weakened table makes doctor fail and name it.
    sqlx::raw_sql("ALTER TABLE tenancy.invitations NO FORCE ROW LEVEL SECURITY")
        .execute(&mut conn)
        .await
        .unwrap();
    let out = pgstrata(Some(&url), &["doctor"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("tenancy.invitations: forced"), "{}", text(&out));

    // So does a definer function that the caller's pg_temp could hijack, or that PUBLIC may run.
    sqlx::raw_sql(
        "ALTER TABLE tenancy.invitations FORCE ROW LEVEL SECURITY;
         CREATE FUNCTION tenancy.hijackable() RETURNS int LANGUAGE sql SECURITY DEFINER
             SET search_path = '' AS 'SELECT 1';",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let out = pgstrata(Some(&url), &["doctor"]);
    assert_eq!(out.status.code(), Some(1));
    for problem in [
        "security: tenancy.hijackable(): SECURITY DEFINER without SET search_path = pg_catalog, pg_temp",
        "security: tenancy.hijackable(): SECURITY DEFINER and executable by PUBLIC",
    ] {
        assert!(text(&out).contains(problem), "{}", text(&out));
    }
    drop(conn);
    db.close().await.unwrap();
}

#[test]
fn schema_print_needs_no_database_and_matches_the_file() {
    let out = pgstrata(None, &["schema", "print", "tenancy"]);
    assert!(out.status.success(), "{}", text(&out));
    let file =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/tenancy/schema.sql")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), file);
    let out = pgstrata(None, &["schema", "print", "nope"]);
    assert!(!out.status.success() && text(&out).contains("unknown module"));
}

#[test]
fn without_a_url_only_demo_starts_a_throwaway_server() {
    for args in [
        &["migrate", "up"][..],
        &["migrate", "down", "--target", "0", "--yes"],
        &["migrate", "status"],
        &["doctor"],
        &["seed"],
        &["queue", "stats"],
        &["audit", "verify"],
    ] {
        let out = pgstrata(None, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("no database URL: set DATABASE_URL"),
            "{}",
            text(&out)
        );
        assert!(!text(&out).contains("throwaway PostgreSQL"), "{}", text(&out));
    }
    let out = pgstrata(None, &["demo"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("starting a throwaway PostgreSQL"));
    assert!(text(&out).contains("applied tenancy V1__tenancy"));
    assert!(text(&out).contains("doctor: all checks passed"), "{}", text(&out));
}

#[test]
fn without_postgresql_installed_demo_says_what_to_install() {
    let out = Command::new(env!("CARGO_BIN_EXE_pgstrata"))
        .args(["demo"])
        .env_remove("DATABASE_URL")
        .env("PGSTRATA_PG_BINDIR", "/nonexistent")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("apt-get install postgresql"), "{}", text(&out));
}

#[test]
fn urls_are_checked_and_a_pooled_url_is_refused() {
    let out = pgstrata(Some("mysql://root:hunter2@127.0.0.1/db"), &["doctor"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("must start with postgres:// or postgresql://"));
    assert!(!text(&out).contains("hunter2"), "the password is never printed");
    let out = pgstrata(Some("postgres://u@127.0.0.1:1/db?pgbouncer=true"), &["migrate", "up"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("transaction pooler (pgbouncer=true)") && text(&out).contains("direct connection"),
        "{}",
        text(&out)
    );
}

#[test]
fn an_unanswered_connection_times_out() {
    // Accepts the connection and never answers the startup message.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = std::time::Instant::now();
    let out = pgstrata(
        Some(&format!("postgres://u@127.0.0.1:{port}/db")),
        &["--connect-timeout", "1", "migrate", "status"],
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("within 1 s (--connect-timeout)"), "{}", text(&out));
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    drop(silent);
}

#[test]
fn help_documents_the_exit_codes() {
    let out = pgstrata(None, &["--help"]);
    assert!(out.status.success());
    for line in [
        "Exit codes:",
        "  3  refused as unsafe",
        "  5  timed out waiting for the migration lock",
    ] {
        assert!(text(&out).contains(line), "{}", text(&out));
    }
}

#[test]
fn an_unknown_module_is_named() {
    let out = pgstrata(
        Some("postgres://nobody@127.0.0.1:1/none"),
        &["migrate", "down", "--target", "1", "--modules", "nope"],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("unknown module"), "{}", text(&out));
}

#[tokio::test]
async fn codegen_check_finds_the_checked_in_types_up_to_date() {
    let db = TestDb::new().await.unwrap();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = pgstrata(Some(&db.url().unwrap()), &["codegen", "--check", "--root", root]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("up to date:") && text(&out).contains("pgstrata-tenancy/src/generated.rs"));
    for file in ["schemas/rbac/drizzle.ts", "schemas/rbac/schema.prisma"] {
        assert!(
            text(&out).contains(&format!("up to date: {root}/{file}")),
            "{}",
            text(&out)
        );
    }

    // A stale copy is reported and fails the check, without being rewritten.
    let scratch = std::env::temp_dir().join(format!("pgstrata-codegen-{}", std::process::id()));
    let crate_src = scratch.join("crates/pgstrata-tenancy/src");
    for module in pgstrata::available_modules() {
        std::fs::create_dir_all(scratch.join(format!("crates/pgstrata-{}/src", module.name))).unwrap();
    }
    std::fs::write(crate_src.join("generated.rs"), "// stale\n").unwrap();
    let out = pgstrata(
        Some(&db.url().unwrap()),
        &["codegen", "--check", "--root", scratch.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("OUT OF DATE"));
    assert_eq!(
        std::fs::read_to_string(crate_src.join("generated.rs")).unwrap(),
        "// stale\n"
    );
    let out = pgstrata(
        Some(&db.url().unwrap()),
        &["codegen", "--root", scratch.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(crate_src.join("generated.rs")).unwrap(),
        include_str!("../../pgstrata-tenancy/src/generated.rs")
    );
    // The Drizzle and Prisma schemas are written beside it.
    assert_eq!(
        std::fs::read_to_string(scratch.join("schemas/rbac/drizzle.ts")).unwrap(),
        include_str!("../../../schemas/rbac/drizzle.ts")
    );
    assert_eq!(
        std::fs::read_to_string(scratch.join("schemas/rbac/schema.prisma")).unwrap(),
        include_str!("../../../schemas/rbac/schema.prisma")
    );
    std::fs::remove_dir_all(scratch).unwrap();
    db.close().await.unwrap();
}

#[tokio::test]
async fn audit_seal_verify_and_maintain() {
    let db = TestDb::new().await.unwrap();
    let url = db.url().unwrap();
    for args in [&["migrate", "up"][..], &["seed"]] {
        let out = pgstrata(Some(&url), args);
        assert!(out.status.success(), "{}", text(&out));
    }
    // A record left unsealed past a few seal intervals: doctor warns until a sealer runs.
    let mut conn = db.admin_conn().await.unwrap();
    sqlx::raw_sql(
        "SELECT audit.create_partition((now() - interval '5 minutes')::date);
         INSERT INTO audit.records (tenant_id, occurred_at, action, resource_type, origin)
         SELECT id, now() - interval '5 minutes', 'user.login', 'user', 'event' FROM tenancy.tenants LIMIT 1;",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let out = pgstrata(Some(&url), &["doctor"]);
    assert!(
        text(&out).contains("warning: audit: ") && text(&out).contains("not sealed yet"),
        "{}",
        text(&out)
    );
    drop(conn);
    let out = pgstrata(Some(&url), &["audit", "seal"]);
    assert!(out.status.success() && text(&out).contains("sealed "), "{}", text(&out));
    let out = pgstrata(Some(&url), &["doctor"]);
    assert!(!text(&out).contains("not sealed yet"), "{}", text(&out));
    let out = pgstrata(Some(&url), &["audit", "verify"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = pgstrata(Some(&url), &["audit", "maintain"]);
    assert!(text(&out).contains("nothing to do"), "{}", text(&out));

    // A record changed behind the triggers' back is named by verify.
    let mut conn = db.admin_conn().await.unwrap();
    sqlx::raw_sql(
        "SET session_replication_role = replica;
         UPDATE audit.records SET action = 'delete'
          WHERE action = 'insert' AND id IN (SELECT id FROM audit.links WHERE seq = 2);
         RESET session_replication_role;",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let out = pgstrata(Some(&url), &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("seq 2 record"), "{}", text(&out));

    // Doctor warns once the months ahead are gone.
    sqlx::raw_sql("DO $$ DECLARE p text; BEGIN FOR p IN SELECT name FROM audit.partitions() WHERE lower_bound > now() LOOP EXECUTE format('DROP TABLE audit.%I', p); END LOOP; END $$")
        .execute(&mut conn)
        .await
        .unwrap();
    let out = pgstrata(Some(&url), &["doctor"]);
    assert!(
        text(&out).contains("warning: audit.records has 0 partition(s)"),
        "{}",
        text(&out)
    );
    drop(conn);
    db.close().await.unwrap();
}

async fn status_json(url: &str) -> Vec<serde_json::Value> {
    let out = pgstrata(Some(url), &["migrate", "status", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn applied(rows: &[serde_json::Value]) -> Vec<String> {
    rows.iter()
        .filter(|r| r["state"] == "applied")
        .map(|r| format!("{} V{}", r["module"].as_str().unwrap(), r["version"]))
        .collect()
}

/// The reproductions of the unsafe `migrate down`: each is refused or does exactly one thing.
#[tokio::test]
async fn migrate_down_is_one_step_by_default_and_refuses_what_would_destroy() {
    let db = TestDb::new().await.unwrap();
    let url = db.url().unwrap();
    let out = pgstrata(Some(&url), &["migrate", "up"]);
    assert!(out.status.success(), "{}", text(&out));
    let all = applied(&status_json(&url).await);

    let out = pgstrata(Some(&url), &["migrate", "down", "--target=-1"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("below 0"), "{}", text(&out));

    // Removing every module needs --yes (no terminal here: no prompt, a refusal).
    let out = pgstrata(Some(&url), &["migrate", "down", "--target", "0"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("--yes"), "{}", text(&out));

    // Tenancy, with every other module applied: refused even with --yes, naming a dependent.
    let out = pgstrata(
        Some(&url),
        &["--modules", "tenancy", "migrate", "down", "--target", "0", "--yes"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("cannot remove module \"tenancy\"") && text(&out).contains("depends on it"),
        "{}",
        text(&out)
    );
    assert_eq!(applied(&status_json(&url).await), all, "nothing was reverted");
    let out = pgstrata(Some(&url), &["doctor"]);
    assert!(out.status.success(), "{}", text(&out));

    // Down with no target: the newest migration only (audit's: the newest of all is events'
    // V1, whose removal needs --yes, as above).
    let out = pgstrata(Some(&url), &["--modules", "audit", "migrate", "down"]);
    assert!(out.status.success(), "{}", text(&out));
    let reverted: Vec<_> = text(&out)
        .lines()
        .filter(|l| l.starts_with("reverted "))
        .map(str::to_owned)
        .collect();
    assert_eq!(reverted.len(), 1, "{}", text(&out));
    assert_eq!(applied(&status_json(&url).await).len(), all.len() - 1);
    let out = pgstrata(Some(&url), &["migrate", "up"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(applied(&status_json(&url).await), all);

    let out = pgstrata(Some(&url), &["migrate", "down", "--target", "0", "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("removed module tenancy"), "{}", text(&out));
    // At 0, down is a no-op.
    for args in [&["migrate", "down"][..], &["migrate", "down", "--target", "0", "--yes"]] {
        let out = pgstrata(Some(&url), args);
        assert!(out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("nothing to revert"), "{}", text(&out));
    }
    db.close().await.unwrap();
}

/// One lifecycle: naming a module brings its dependencies, and audit's after-migrate step
/// audits rbac when the CLI migrates rbac after audit.
#[tokio::test]
async fn modules_bring_their_dependencies_and_audit_picks_up_modules_migrated_later() {
    let db = TestDb::new().await.unwrap();
    let url = db.url().unwrap();
    let out = pgstrata(Some(&url), &["--modules", "audit", "migrate", "up"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("applied tenancy V1__tenancy"), "{}", text(&out));
    let out = pgstrata(Some(&url), &["--modules", "rbac", "migrate", "up"]);
    assert!(out.status.success(), "{}", text(&out));
    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM audit.tables WHERE table_name LIKE 'rbac.%'")
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert!(audited > 0, "rbac's tables are audited after the CLI migrated rbac");
    let out = pgstrata(Some(&url), &["--modules", "tenancy,rbac,audit", "doctor"]);
    assert!(out.status.success(), "{}", text(&out));
    db.close().await.unwrap();
}

#[tokio::test]
async fn json_output_and_dry_runs() {
    let db = TestDb::new().await.unwrap();
    let url = db.url().unwrap();
    let mut conn = db.admin_conn().await.unwrap();
    let empty = catalog::user_objects(&mut conn).await.unwrap();

    let out = pgstrata(Some(&url), &["--modules", "rbac", "migrate", "up", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        printed.contains("-- ==== migrations/tenancy/V1__tenancy.sql"),
        "{printed}"
    );
    assert!(printed.contains(pgstrata::rbac::MODULE.migrations[0].up.trim_end()));
    assert_eq!(
        catalog::user_objects(&mut conn).await.unwrap(),
        empty,
        "a dry run changes nothing"
    );
    assert!(status_json(&url).await.iter().all(|r| r["state"] == "pending"));

    let out = pgstrata(Some(&url), &["migrate", "up"]);
    assert!(out.status.success(), "{}", text(&out));
    let rows = status_json(&url).await;
    let known: usize = pgstrata::available_modules().iter().map(|m| m.migrations.len()).sum();
    assert_eq!(rows.len(), known);
    assert!(
        rows.iter()
            .all(|r| r["state"] == "applied" && r["applied_on"].is_string())
    );

    let out = pgstrata(
        Some(&url),
        &["--modules", "audit", "migrate", "down", "--target", "0", "--dry-run"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("migrations/audit/V1__audit.down.sql") && text(&out).contains("removes module audit"));
    assert_eq!(applied(&status_json(&url).await).len(), known, "nothing reverted");

    let out = pgstrata(Some(&url), &["doctor", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert!(report["tables"].as_array().unwrap().len() > 10);
    sqlx::raw_sql("ALTER TABLE tenancy.invitations NO FORCE ROW LEVEL SECURITY")
        .execute(&mut conn)
        .await
        .unwrap();
    let out = pgstrata(Some(&url), &["doctor", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let invitations = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "tenancy.invitations")
        .unwrap();
    assert_eq!(invitations["ok"], false);
    assert!(
        invitations["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "forced" && c["ok"] == false)
    );
    drop(conn);
    db.close().await.unwrap();
}

#[tokio::test]
async fn waiting_for_the_migration_lock_is_reported_and_times_out() {
    let db = TestDb::new().await.unwrap();
    let url = db.url().unwrap();
    let out = pgstrata(Some(&url), &["--modules", "tenancy", "migrate", "up"]);
    assert!(out.status.success(), "{}", text(&out));
    let mut holder = db.admin_conn().await.unwrap();
    sqlx::raw_sql(
        "SELECT set_config('application_name', 'pgstrata migrate held', false);
         UPDATE pgstrata.migration_lock
            SET holder_pid = pg_backend_pid(), holder = 'pgstrata migrate held', taken_at = now()",
    )
    .execute(&mut holder)
    .await
    .unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut holder)
        .await
        .unwrap();
    let out = pgstrata(Some(&url), &["migrate", "up", "--lock-timeout", "2"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("waiting for the migration lock held by pid {pid} since ")),
        "{stderr}"
    );
    assert!(stderr.contains("timed out waiting for the migration lock"), "{stderr}");
    drop(holder);
    db.close().await.unwrap();
}

/// A database loaded from schemas/*/schema.sql (as psql would, here as raw SQL) is one the
/// migrator knows: status shows every migration applied, up has nothing to do, doctor passes.
#[tokio::test]
async fn an_install_from_schema_sql_is_seen_as_migrated() {
    let db = TestDb::new().await.unwrap();
    let url = db.url().unwrap();
    let mut conn = db.admin_conn().await.unwrap();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    // Every module of the build, in dependency order.
    for module in pgstrata::Backend::all().unwrap().modules().iter().map(|m| m.name) {
        let sql = std::fs::read_to_string(format!("{root}/schemas/{module}/schema.sql")).unwrap();
        pgstrata_core::sql::raw(&sql).execute(&mut conn).await.unwrap();
    }
    let out = pgstrata(Some(&url), &["migrate", "status"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("pending"), "{}", text(&out));
    let out = pgstrata(Some(&url), &["migrate", "up"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("nothing applied"), "{}", text(&out));
    let out = pgstrata(Some(&url), &["doctor"]);
    assert!(out.status.success(), "{}", text(&out));
    // The events module's maintenance: the months exist already, no tenant has a shorter plan.
    let out = pgstrata(Some(&url), &["events", "maintain"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("events partitions: nothing to do"),
        "{}",
        text(&out)
    );
    let out = pgstrata(Some(&url), &["events", "purge"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("purged 0 event(s)"), "{}", text(&out));
    // And it reverts like a migrated one.
    let out = pgstrata(
        Some(&url),
        &["--modules", "audit", "migrate", "down", "--target", "0", "--yes"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("removed module audit"), "{}", text(&out));
    drop(conn);
    db.close().await.unwrap();
}

#[tokio::test]
async fn billing_events_retry_and_prune() {
    let db = TestDb::new().await.unwrap();
    let url = db.url().unwrap();
    let out = pgstrata(Some(&url), &["migrate", "up"]);
    assert!(out.status.success(), "{}", text(&out));
    // One event applied, one failed (a subscription without a status), both as the webhook would.
    let mut conn = db.admin_conn().await.unwrap();
    sqlx::raw_sql(
        r#"SELECT billing.process_event('{"id": "evt_prod_cli", "type": "product.created", "created": 1764550000,
                                          "data": {"object": {"id": "prod_cli", "object": "product", "name": "Pro"}}}');
           SELECT billing.process_event('{"id": "evt_bad_cli", "type": "price.created", "created": 1764550001,
                                          "data": {"object": {"id": "price_cli", "object": "price"}}}');"#,
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let out = pgstrata(Some(&url), &["billing", "events", "--status", "failed"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("evt_bad_cli")
            && text(&out).contains("names no product")
            && !text(&out).contains("evt_prod_cli"),
        "{}",
        text(&out)
    );
    let out = pgstrata(Some(&url), &["billing", "retry"]);
    assert!(text(&out).contains("0 failed event(s) now applied"), "{}", text(&out));
    let out = pgstrata(Some(&url), &["billing", "prune", "--older-than-days", "1"]);
    assert!(
        !out.status.success() && text(&out).contains("at least 7 days"),
        "{}",
        text(&out)
    );
    sqlx::raw_sql("UPDATE billing.events SET received_at = now() - interval '100 days'")
        .execute(&mut conn)
        .await
        .unwrap();
    let out = pgstrata(Some(&url), &["billing", "prune"]);
    assert!(text(&out).contains("pruned 1 event(s)"), "{}", text(&out));
    let out = pgstrata(Some(&url), &["billing", "events"]);
    assert!(
        text(&out).contains("evt_bad_cli") && !text(&out).contains("evt_prod_cli"),
        "{}",
        text(&out)
    );
    drop(conn);
    db.close().await.unwrap();
}

#[tokio::test]
async fn queue_list_retry_and_cancel() {
    let db = TestDb::new().await.unwrap();
    let url = db.url().unwrap();
    let out = pgstrata(Some(&url), &["migrate", "up", "--modules", "queue"]);
    assert!(out.status.success(), "{}", text(&out));
    let mut conn = db.admin_conn().await.unwrap();
    // Jobs 1 to 3: two mails and a report; the report is discarded after its one attempt.
    sqlx::raw_sql(
        "SELECT queue.enqueue('mail'), queue.enqueue('mail'), queue.enqueue('report', p_queue => 'slow', p_max_attempts => 1);
         SELECT count(*) FROM queue.claim('slow', 1, 'w');
         SELECT queue.fail(3, 1, 'upstream said no');",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    let out = pgstrata(Some(&url), &["queue", "list", "--state", "discarded"]);
    assert!(out.status.success(), "{}", text(&out));
    let rows: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(str::to_owned)
        .collect();
    assert_eq!(rows.len(), 1, "{}", text(&out));
    assert!(
        rows[0].contains(" report ")
            && rows[0].contains("discarded")
            && rows[0].contains("last error: upstream said no"),
        "{}",
        text(&out)
    );
    // Pages: the first of two, then the rest after its last id.
    let out = pgstrata(Some(&url), &["queue", "list", "--limit", "2", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let page: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<i64> = page.iter().map(|j| j["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [3, 2]);
    assert!(text(&out).contains("more: add --after 2"), "{}", text(&out));
    let out = pgstrata(
        Some(&url),
        &["queue", "list", "--after", "2", "--kind", "mail", "--json"],
    );
    let page: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page.len(), 1, "{}", text(&out));
    assert_eq!(page[0]["id"], 1);

    let out = pgstrata(Some(&url), &["queue", "retry", "3"]);
    assert!(
        out.status.success() && text(&out).contains("job 3 retried"),
        "{}",
        text(&out)
    );
    let out = pgstrata(Some(&url), &["queue", "cancel", "1"]);
    assert!(
        out.status.success() && text(&out).contains("job 1 cancelled"),
        "{}",
        text(&out)
    );
    // Changing nothing is a failure that says why.
    let out = pgstrata(Some(&url), &["queue", "cancel", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("job 1 is cancelled"), "{}", text(&out));
    let out = pgstrata(Some(&url), &["queue", "retry", "99"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("job 99 not found"), "{}", text(&out));
    let states: Vec<String> = sqlx::query_scalar("SELECT state FROM queue.jobs ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(states, ["cancelled", "available", "available"]);
    let out = pgstrata(Some(&url), &["queue", "metrics", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let counts: Vec<(String, i64, i64)> = rows
        .iter()
        .map(|r| {
            (
                r["queue"].as_str().unwrap().to_owned(),
                r["available"].as_i64().unwrap(),
                r["cancelled"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counts, [("default".into(), 1, 1), ("slow".into(), 1, 0)]);
    // Bad input is a usage error.
    for args in [
        &["queue", "metrics", "--window-secs", "0"][..],
        &["queue", "list", "--limit", "0"],
        &["queue", "list", "--state", "lost"],
        &["queue", "list", "--tenant", "acme"],
    ] {
        let out = pgstrata(Some(&url), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
    }
    drop(conn);
    db.close().await.unwrap();
}

#[tokio::test]
async fn doctor_checks_the_applications_schema_and_tenant_table_fixes_it() {
    let db = TestDb::new().await.unwrap();
    let url = db.url().unwrap();
    let out = pgstrata(Some(&url), &["migrate", "up"]);
    assert!(out.status.success(), "{}", text(&out));
    sqlx::raw_sql(
        "CREATE SCHEMA app;
         CREATE TABLE app.projects (tenant_id uuid NOT NULL REFERENCES tenancy.tenants (id), id uuid NOT NULL,
                                    name text, PRIMARY KEY (tenant_id, id));
         GRANT USAGE ON SCHEMA app TO pgstrata_app;
         GRANT SELECT, INSERT, UPDATE, DELETE ON app.projects TO pgstrata_app;",
    )
    .execute(&db.admin)
    .await
    .unwrap();

    // Without --schema the application's tables are not looked at; with it, the missing RLS fails.
    let out = pgstrata(Some(&url), &["doctor"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("app.projects"), "{}", text(&out));
    let out = pgstrata(Some(&url), &["doctor", "--schema", "app"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("app.projects: rls"), "{}", text(&out));

    let out = pgstrata(Some(&url), &["tenant-table", "app.projects"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("done  policy"), "{}", text(&out));
    let out = pgstrata(Some(&url), &["doctor", "--schema", "app"]);
    assert!(out.status.success(), "{}", text(&out));

    // A table it cannot finish: exit 1, with what is left.
    sqlx::raw_sql("CREATE TABLE app.notes (id int PRIMARY KEY)")
        .execute(&db.admin)
        .await
        .unwrap();
    let out = pgstrata(Some(&url), &["tenant-table", "app.notes", "--add-column"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("TODO  primary key"), "{}", text(&out));
    db.close().await.unwrap();
}

#[tokio::test]
async fn worker_once_runs_every_maintenance_task_and_doctor_stops_warning() {
    let db = TestDb::new().await.unwrap();
    let url = db.url().unwrap();
    let out = pgstrata(Some(&url), &["migrate", "up"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = pgstrata(Some(&url), &["doctor"]);
    assert!(
        text(&out).contains("warning: maintenance task audit.seal (* * * * *) has never completed"),
        "{}",
        text(&out)
    );
    let out = pgstrata(Some(&url), &["worker", "--once"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("audit.seal") && text(&out).contains("worker: done"),
        "{}",
        text(&out)
    );
    let out = pgstrata(Some(&url), &["doctor"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("maintenance task"), "{}", text(&out));
    // The tasks are queue jobs: without the queue module there is nothing to run them on.
    let out = pgstrata(Some(&url), &["--modules", "tenancy,audit", "worker", "--once"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    db.close().await.unwrap();
}

#[tokio::test]
async fn eventstore_stream_read_and_subscriptions() {
    let db = TestDb::new().await.unwrap();
    let url = db.url().unwrap();
    let out = pgstrata(Some(&url), &["migrate", "up", "--modules", "eventstore"]);
    assert!(out.status.success(), "{}", text(&out));
    let tenant = pgstrata_core::TenantId::new().0;
    let mut conn = db.admin_conn().await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        r#"INSERT INTO tenancy.tenants (id, slug, name) VALUES ('{tenant}', 'cli', 'cli');
           BEGIN;
           SELECT set_config('app.tenant_id', '{tenant}', true);
           SELECT * FROM eventstore.append('order-7', 0, '[{{"type": "OrderPlaced", "data": {{"items": 2}}}},
                                                          {{"type": "Paid", "data": {{"cents": 900}}}},
                                                          {{"type": "Shipped"}}]');
           SELECT eventstore.save_snapshot('order-7', 'order.v1', 2, '{{"paid": true}}');
           COMMIT;
           INSERT INTO eventstore.subscriptions (name, category) VALUES ('board', 'order'), ('audit', NULL);
           UPDATE eventstore.subscriptions SET txid = '0', position = 0;"#
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    let t = tenant.to_string();

    let out = pgstrata(Some(&url), &["eventstore", "stream", "--tenant", &t, "order-7"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("stream order-7: version 3"), "{}", text(&out));
    assert!(
        text(&out).contains("snapshot order.v1: version 2 (1 event(s) after it)"),
        "{}",
        text(&out)
    );
    let out = pgstrata(
        Some(&url),
        &["eventstore", "stream", "--tenant", &t, "order-7", "--json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["stream"]["version"], 3);
    assert_eq!(v["snapshots"][0]["name"], "order.v1");
    // Another tenant does not see it: the read runs in the tenant's context.
    let other = pgstrata_core::TenantId::new().0.to_string();
    let out = pgstrata(Some(&url), &["eventstore", "stream", "--tenant", &other, "order-7"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("has no stream"), "{}", text(&out));

    let out = pgstrata(
        Some(&url),
        &["eventstore", "read", "--tenant", &t, "order-7", "--after", "1"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("order-7 v2 ") && lines[0].contains("Paid"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("order-7 v3 ") && lines[1].contains("Shipped"),
        "{lines:?}"
    );
    let out = pgstrata(
        Some(&url),
        &[
            "eventstore",
            "read",
            "--tenant",
            &t,
            "order-7",
            "--limit",
            "1",
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["type"], "OrderPlaced");
    let out = pgstrata(
        Some(&url),
        &["eventstore", "read", "--tenant", &t, "order-7", "--limit", "5000"],
    );
    assert!(!out.status.success(), "{}", text(&out));

    let out = pgstrata(Some(&url), &["eventstore", "subscriptions"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("board gen 1 live [order]: 0 processed, 3 behind"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("audit gen 1 live [all categories]: 0 processed, 3 behind"),
        "{}",
        text(&out)
    );
    let out = pgstrata(Some(&url), &["eventstore", "subscriptions", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["name"], "audit");
    assert_eq!(v[0]["behind"], 3);
    drop(conn);
    db.close().await.unwrap();
}
/// The requests a test server saw: (target, Authorization header).
type RequestLog = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// A local server answering like Stripe's list endpoints: `GET /v1/{resource}` pages of one
/// object (whatever `limit` asks, so every list has several pages) after `starting_after`.
/// `answer` may replace the answer to the nth request (1-based) with a status and body, or act
/// first (a webhook landing while the page is in flight). Logs each request's target and
/// Authorization header.
fn stripe_server(
    objects: std::collections::BTreeMap<String, Vec<serde_json::Value>>,
    answer: impl Fn(usize, &str) -> Option<(u16, String)> + Send + 'static,
) -> (String, RequestLog) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(&stream);
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            let mut authorization = String::new();
            let mut header = String::new();
            while reader.read_line(&mut header).unwrap() > 2 {
                if let Some((name, value)) = header.split_once(':')
                    && name.eq_ignore_ascii_case("authorization")
                {
                    authorization = value.trim().to_owned();
                }
                header.clear();
            }
            let target = request.split_whitespace().nth(1).unwrap_or("").to_owned();
            let n = {
                let mut seen = seen.lock().unwrap();
                seen.push((target.clone(), authorization));
                seen.len()
            };
            let (status, body) = answer(n, &target).unwrap_or_else(|| {
                let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                let list = objects
                    .get(path.trim_start_matches("/v1/"))
                    .cloned()
                    .unwrap_or_default();
                let after = query.split('&').find_map(|p| p.strip_prefix("starting_after="));
                let start = after.map_or(0, |a| list.iter().position(|o| o["id"] == a).unwrap() + 1);
                let page = serde_json::json!({
                    "object": "list", "url": path,
                    "data": list.get(start..start + 1).unwrap_or(&[]),
                    "has_more": start + 1 < list.len(),
                });
                (200, page.to_string())
            });
            let response = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(response.as_bytes()).unwrap();
        }
    });
    (base, log)
}

/// `pgstrata billing sync` against a local Stripe: every list applied under the customer's
/// tenant, as a login role of `pgstrata_billing_sync` only; a 503 retried; a webhook landing
/// while the subscriptions page is in flight keeps its newer state; a run refused midway (403)
/// goes on where it stopped; the key is sent as a bearer token and printed nowhere.
#[tokio::test]
async fn billing_sync_lists_from_stripe_resumes_and_never_beats_a_newer_webhook() {
    use pgstrata::billing::fixtures;
    const KEY: &str = "sk_test_pgstrata_cli_secret";
    let db = TestDb::new().await.unwrap();
    let url = db.url().unwrap();
    let out = pgstrata(Some(&url), &["migrate", "up"]);
    assert!(out.status.success(), "{}", text(&out));
    let mut conn = db.admin_conn().await.unwrap();
    pgstrata_core::testing::ensure_login_role(&mut conn, "pgstrata_cli_billing_sync", "IN ROLE pgstrata_billing_sync")
        .await
        .unwrap();
    let mut sync_url = url::Url::parse(&url).unwrap();
    sync_url.set_username("pgstrata_cli_billing_sync").unwrap();
    sync_url.set_password(Some("pgstrata_cli_billing_sync")).unwrap();
    let sync_url = sync_url.to_string();
    let tenant: sqlx::types::Uuid =
        sqlx::query_scalar("INSERT INTO tenancy.tenants (slug, name) VALUES ('cli-sync', 'Sync') RETURNING id")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let events: std::collections::BTreeMap<String, serde_json::Value> = fixtures::lifecycle()
        .unwrap()
        .into_iter()
        .map(|(name, e)| {
            (
                name[..2].to_owned(),
                fixtures::retag(&e, "cli", pgstrata::TenantId(tenant)),
            )
        })
        .collect();
    let state = |n: &str| events[n]["data"]["object"].clone();
    let objects = std::collections::BTreeMap::from([
        ("products".to_owned(), vec![state("01")]),
        ("prices".to_owned(), vec![state("02")]),
        ("customers".to_owned(), vec![state("08")]),
        ("subscriptions".to_owned(), vec![state("10")]),
        ("invoices".to_owned(), vec![state("06"), state("15")]),
    ]);
    let subscription = state("10")["id"].as_str().unwrap().to_owned();
    let first_invoice = state("06")["id"].as_str().unwrap().to_owned();
    // A newer state (past_due, created after the page was fetched) arrives by webhook while
    // the subscriptions page is in flight.
    let mut newer = events["14"].clone();
    newer["created"] = serde_json::json!(chrono::Utc::now().timestamp() + 5);
    let newer_id = newer["id"].as_str().unwrap().to_owned();
    let webhook_url = url.clone();
    let refuse = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let refusing = refuse.clone();
    let refused_after = format!("starting_after={first_invoice}");
    let webhook_pending = std::sync::atomic::AtomicBool::new(true);
    let (base, log) = stripe_server(objects, move |n, target| {
        if n == 2 {
            return Some((503, r#"{"error": {"message": "try again"}}"#.to_owned()));
        }
        if target.starts_with("/v1/subscriptions") && webhook_pending.swap(false, std::sync::atomic::Ordering::SeqCst) {
            let (url, event) = (webhook_url.clone(), newer.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    use sqlx::Connection;
                    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
                    let outcome: String = sqlx::query_scalar("SELECT outcome FROM billing.process_event($1)")
                        .bind(&event)
                        .fetch_one(&mut c)
                        .await
                        .unwrap();
                    assert_eq!(outcome, "applied");
                });
            })
            .join()
            .unwrap();
        }
        if target.contains(&refused_after) && refusing.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Some((
                403,
                r#"{"error": {"message": "The key may not list invoices"}}"#.to_owned(),
            ));
        }
        None
    });

    // No key: a usage error before any request.
    let out = Command::new(env!("CARGO_BIN_EXE_pgstrata"))
        .args(["billing", "sync", "--api-base", &base])
        .env("DATABASE_URL", &sync_url)
        .env_remove("STRIPE_API_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("STRIPE_API_KEY"), "{}", text(&out));
    assert!(log.lock().unwrap().is_empty());

    let sync = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgstrata"));
        cmd.args(["billing", "sync", "--api-base", &base])
            .args(args)
            .env("DATABASE_URL", &sync_url)
            .env("STRIPE_API_KEY", KEY);
        cmd.output().unwrap()
    };
    // The first run: the 503 is retried; the second invoices page is refused.
    let out = sync(&[]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(
        text(&out).contains("The key may not list invoices") && text(&out).contains("run it again"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("try again"),
        "the retry is reported: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("billing sync: subscriptions page 1, 1 object(s), done"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains(KEY));
    let first_run = log.lock().unwrap().len();
    // products, prices (503), prices again, customers, subscriptions, invoices, invoices (403).
    assert_eq!(first_run, 7, "{:?}", log.lock().unwrap());

    // The second run asks only for what is left.
    let out = sync(&["--json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains(KEY));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["pages"].as_u64(), report["applied"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log[first_run..].iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        [format!("/v1/invoices?limit=100&starting_after={first_invoice}")]
    );
    assert!(log.iter().all(|(_, auth)| auth == &format!("Bearer {KEY}")), "{log:?}");
    assert!(
        log.iter().any(|(t, _)| t == "/v1/subscriptions?limit=100&status=all"),
        "{log:?}"
    );

    // The mirror: under the customer's tenant, the subscription in the webhook's newer state.
    let (status, last, invoices): (String, String, i64) = sqlx::query_as(
        "SELECT s.status, s.last_event_id, (SELECT count(*) FROM billing.invoices i WHERE i.tenant_id = $1)
           FROM billing.subscriptions s WHERE s.tenant_id = $1 AND s.id = $2",
    )
    .bind(tenant)
    .bind(&subscription)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), last.as_str(), invoices),
        ("past_due", newer_id.as_str(), 2)
    );

    // Nothing left to list; --restart lists everything again, all of it stale now.
    let out = sync(&[]);
    assert!(
        out.status.success() && text(&out).contains("0 page(s)"),
        "{}",
        text(&out)
    );
    let out = sync(&[
        "--restart",
        "--clock-margin",
        "3600",
        "--resources",
        "products,subscriptions",
    ]);
    assert!(
        out.status.success() && text(&out).contains("2 page(s); 0 applied, 2 stale"),
        "{}",
        text(&out)
    );
    drop(conn);
    db.close().await.unwrap();
}

/// `billing sync` over HTTPS: against a local TLS server whose certificate (pgstrata-core's test
/// fixtures, for localhost) chains to a root given with `--ca-file`, the page is listed, the key
/// sent inside TLS; without that root the handshake is refused at once (no retry), exit 6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_sync_speaks_https_and_trusts_only_the_roots_it_is_given() {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const KEY: &str = "sk_test_pgstrata_cli_tls_secret";
    let tls_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../pgstrata-core/tests/fixtures/tls");
    let db = TestDb::new().await.unwrap();
    let url = db.url().unwrap();
    let out = pgstrata(Some(&url), &["migrate", "up"]);
    assert!(out.status.success(), "{}", text(&out));

    let config =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                pgstrata_core::https::pem_certificates(&std::fs::read(format!("{tls_dir}/server.pem")).unwrap())
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(&std::fs::read(format!("{tls_dir}/server.key.pem")).unwrap()).unwrap(),
            )
            .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                let n = tls.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            seen.lock().unwrap().push(String::from_utf8_lossy(&head).into_owned());
            let body = r#"{"object": "list", "data": [], "has_more": false}"#;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            tls.write_all(response.as_bytes()).await.unwrap();
            let _ = tls.shutdown().await;
        }
    });
    let base = format!("https://localhost:{port}");
    let sync = move |extra: Vec<String>| {
        let (base, url) = (base.clone(), url.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_pgstrata"))
                .args(["billing", "sync", "--resources", "products", "--api-base", &base])
                .args(extra)
                .env("DATABASE_URL", &url)
                .env("STRIPE_API_KEY", KEY)
                .output()
                .unwrap()
        })
    };
    // The test root is not among the webpki roots: refused, not retried.
    let out = sync(vec![]).await.unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(
        text(&out).contains("TLS handshake with localhost failed"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("again in"), "{}", text(&out));
    assert!(heads.lock().unwrap().is_empty());
    // With it: the page is listed over TLS.
    let out = sync(vec!["--ca-file".into(), format!("{tls_dir}/ca.pem")])
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("billing sync: products page 1, 0 object(s), done"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains(KEY));
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(
        heads[0].starts_with("GET /v1/products?limit=100 HTTP/1.1\r\n"),
        "{heads:?}"
    );
    assert!(
        heads[0].contains(&format!("authorization: Bearer {KEY}\r\n")),
        "{heads:?}"
    );
    db.close().await.unwrap();
}
