//! eventstore's SQL artefacts agree: schema.sql via psql equals the migrations, generated types
//! equal the catalog, the seed loads (twice, appending once), and the builders' functions exist.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::Artefacts;

#[tokio::test]
async fn schema_sql_and_generated_types_match_the_migrations() {
    let migrator = Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_eventstore::MODULE]).unwrap();
    let compared = Artefacts {
        module: &pgstrata_eventstore::MODULE,
        psql_files: &[
            ("schemas/tenancy/schema.sql", true),
            ("schemas/eventstore/schema.sql", true),
            ("schemas/tenancy/seed.sql", true),
            ("schemas/eventstore/seed.sql", true),
            ("schemas/eventstore/seed.sql", true),
        ],
        schemas: &["eventstore", "tenancy"],
        generated_rs: include_str!("../src/generated.rs"),
    }
    .check(&migrator)
    .await
    .unwrap();
    assert!(compared.snapshot.contains("events_txid_idx"));
    assert!(compared.snapshot.contains("subscriptions_live_key"));
    let mut a = compared.migrated.admin_conn().await.unwrap();
    let mut b = compared.copied.admin_conn().await.unwrap();

    // The seed's order was appended once though the seed was loaded twice.
    let seeded: (i64, Option<i64>) = sqlx::query_as("SELECT count(*), max(version) FROM eventstore.events")
        .fetch_one(&mut b)
        .await
        .unwrap();
    assert_eq!(seeded, (3, Some(3)));
    // The function identifiers the builders call name functions that exist.
    let functions: Vec<String> = sqlx::query_scalar(
        "SELECT n.nspname || '.' || p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname = 'eventstore'",
    )
    .fetch_all(&mut a)
    .await
    .unwrap();
    for f in pgstrata_eventstore::functions::EventstoreFn::ALL {
        let name = f.qualified_name();
        assert!(
            functions.iter().any(|g| g == name),
            "{name} is not a function of eventstore"
        );
    }
    // The doctor's tenancy and security rules hold on the module's tables.
    let reports = pgstrata_core::doctor::check_tables(&mut a, &pgstrata_tenancy::TENANT_ROOT, &["eventstore"])
        .await
        .unwrap();
    assert!(
        reports.iter().all(|r| r.ok()),
        "{}",
        pgstrata_core::doctor::render(&reports)
    );
    let problems = pgstrata_core::doctor::security_problems(&mut a, &["eventstore"])
        .await
        .unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    drop((a, b));
    compared.migrated.close().await.unwrap();
    compared.copied.close().await.unwrap();
}
