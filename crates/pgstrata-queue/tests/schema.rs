//! queue's SQL artefacts agree: schema.sql via psql equals the migrations, generated types
//! equal the catalog.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::Artefacts;

#[tokio::test]
async fn schema_sql_and_generated_types_match_the_migrations() {
    let migrator = Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_queue::MODULE]).unwrap();
    let compared = Artefacts {
        module: &pgstrata_queue::MODULE,
        psql_files: &[
            ("schemas/tenancy/schema.sql", false),
            ("schemas/queue/schema.sql", false),
            ("schemas/queue/seed.sql", false),
        ],
        schemas: &["queue"],
        generated_rs: include_str!("../src/generated.rs"),
    }
    .check(&migrator)
    .await
    .unwrap();
    assert!(compared.snapshot.contains("jobs_fetch_idx"));
    // The hand-written function identifiers the builders call name functions that exist.
    let functions: Vec<String> = sqlx::query_scalar(
        "SELECT n.nspname || '.' || p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname = 'queue'",
    )
    .fetch_all(&compared.migrated.admin)
    .await
    .unwrap();
    for f in pgstrata_queue::functions::QueueFn::ALL {
        let name = sea_query::Iden::unquoted(f);
        assert!(functions.iter().any(|g| g == name), "{name} is not a function of queue");
    }
    compared.migrated.close().await.unwrap();
    compared.copied.close().await.unwrap();
}

/// V3 on a V2 database with rows that break its rules: it reports each kind (never dropping
/// them), cuts over-long leases, and its down file gives back V2's catalog.
#[tokio::test]
async fn v3_reports_rows_that_break_its_rules_and_its_down_file_restores_v2() {
    use pgstrata_core::testing::{TestDb, psql_script};
    use sqlx::Connection;
    let migrator = Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_queue::MODULE]).unwrap();
    let db = TestDb::new().await.unwrap();
    let mut conn = db.admin_conn().await.unwrap();
    migrator.up_to(&mut conn, Some("tenancy"), None).await.unwrap();
    migrator.up_to(&mut conn, Some("queue"), Some(2)).await.unwrap();
    let v2 = pgstrata_core::catalog::snapshot(&mut conn, &["queue"]).await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO queue.jobs (kind) VALUES ('system');
         INSERT INTO queue.jobs (kind, tenant_id, state, attempt, lease_expires_at)
             VALUES ('hog', '00000000-0000-7000-8000-00000000000a', 'running', 1, now() + interval '1000 years');
         INSERT INTO queue.periodic_runs (name, period_start) VALUES ('nightly', now());",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let url = db.url().unwrap();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations/queue/");
    let up = std::fs::read_to_string(format!("{root}V3__hardening.sql")).unwrap();
    let (_, reported) = psql_script(&url, &format!("BEGIN;\n{up}\nCOMMIT;")).unwrap();
    for expected in [
        "1 unfinished job(s) have no tenant",
        "1 running job(s) held a lease longer than one day",
        "1 periodic run(s) have no job",
    ] {
        assert!(reported.contains(expected), "{expected:?} not in {reported}");
    }
    let (jobs, runs, lease_ok): (i64, i64, bool) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM queue.jobs), (SELECT count(*) FROM queue.periodic_runs),
                (SELECT lease_expires_at <= now() + interval '1 day' FROM queue.jobs WHERE kind = 'hog')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        (jobs, runs, lease_ok),
        (2, 1, true),
        "nothing dropped, the lease cut to a day"
    );

    let down = std::fs::read_to_string(format!("{root}V3__hardening.down.sql")).unwrap();
    psql_script(&url, &format!("BEGIN;\n{down}\nCOMMIT;")).unwrap();
    let reverted = pgstrata_core::catalog::snapshot(&mut conn, &["queue"]).await.unwrap();
    // Function ACLs: V2 left them at the default (NULL, meaning PUBLIC may execute); the
    // down file grants PUBLIC explicitly, which means the same.
    let normalize = |s: &str| {
        s.lines()
            .map(|l| {
                if l.starts_with("function ") {
                    let (head, rest) = l.split_once(" acl=").unwrap();
                    let (_, tail) = rest.split_once(" comment=").unwrap();
                    format!("{head} comment={tail}")
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(normalize(&reverted), normalize(&v2));
    let (app_claims, public_claims): (bool, bool) = sqlx::query_as(
        "SELECT has_function_privilege('pgstrata_app', 'queue.claim(text, integer, text, interval)', 'EXECUTE'),
                has_function_privilege('public', 'queue.claim(text, integer, text, interval)', 'EXECUTE')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(app_claims && public_claims, "V2's function privileges are back");
    conn.close().await.unwrap();
    db.close().await.unwrap();
}
