//! events' SQL artefacts agree: schema.sql via psql equals the migrations, generated types
//! equal the catalog, the seed loads, and the builders' functions exist.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::Artefacts;

#[tokio::test]
async fn schema_sql_and_generated_types_match_the_migrations() {
    let migrator = Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_events::MODULE]).unwrap();
    let compared = Artefacts {
        module: &pgstrata_events::MODULE,
        psql_files: &[
            ("schemas/tenancy/schema.sql", true),
            ("schemas/events/schema.sql", true),
            ("schemas/tenancy/seed.sql", true),
            ("schemas/events/seed.sql", true),
            ("schemas/events/seed.sql", true),
        ],
        schemas: &["events", "tenancy"],
        generated_rs: include_str!("../src/generated.rs"),
    }
    .check(&migrator)
    .await
    .unwrap();
    assert!(compared.snapshot.contains("events_occurred_brin"));
    assert!(compared.snapshot.contains("events_after_insert"));
    let mut a = compared.migrated.admin_conn().await.unwrap();
    let mut b = compared.copied.admin_conn().await.unwrap();

    // The seed's events were counted by the rollups, once though it was loaded twice.
    let seeded: i64 = sqlx::query_scalar("SELECT sum(events)::bigint FROM events.daily_counts")
        .fetch_one(&mut b)
        .await
        .unwrap();
    assert_eq!(seeded, 3);
    // The function identifiers the builders call name functions that exist.
    let functions: Vec<String> = sqlx::query_scalar(
        "SELECT n.nspname || '.' || p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname = 'events'",
    )
    .fetch_all(&mut a)
    .await
    .unwrap();
    for f in pgstrata_events::functions::EventsFn::ALL {
        let name = f.qualified_name();
        assert!(
            functions.iter().any(|g| g == name),
            "{name} is not a function of events"
        );
    }
    drop((a, b));
    compared.migrated.close().await.unwrap();
    compared.copied.close().await.unwrap();
}
