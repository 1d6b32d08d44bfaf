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

    let out = pgstrata(Some(&url), &["migrate", "down", "--target", "0"]);
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
fn without_a_url_it_starts_a_throwaway_server_and_says_so() {
    let out = pgstrata(None, &["migrate", "up"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("starting a throwaway PostgreSQL"));
    assert!(text(&out).contains("applied tenancy V1__tenancy"));
}

#[test]
fn without_postgresql_installed_it_says_what_to_install() {
    let out = Command::new(env!("CARGO_BIN_EXE_pgstrata"))
        .args(["doctor"])
        .env_remove("DATABASE_URL")
        .env("PGSTRATA_PG_BINDIR", "/nonexistent")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("apt-get install postgresql"), "{}", text(&out));
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
