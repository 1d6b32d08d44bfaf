//! outbox's SQL artefacts agree: schema.sql via psql equals the migrations, generated types
//! equal the catalog, the seed loads (twice, adding nothing), the builders' functions exist, and
//! doctor finds the tables and functions sound.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use pgstrata_core::testing::Artefacts;

#[tokio::test]
async fn schema_sql_and_generated_types_match_the_migrations() {
    let compared = Artefacts {
        module: &pgstrata_outbox::MODULE,
        psql_files: &[
            ("schemas/tenancy/schema.sql", true),
            ("schemas/outbox/schema.sql", true),
            ("schemas/tenancy/seed.sql", true),
            ("schemas/outbox/seed.sql", true),
            ("schemas/outbox/seed.sql", true),
        ],
        schemas: &["outbox", "tenancy"],
        generated_rs: include_str!("../src/generated.rs"),
    }
    .check(&common::migrator())
    .await
    .unwrap();
    assert!(compared.snapshot.contains("messages_relay_idx"));
    let mut a = compared.migrated.admin_conn().await.unwrap();
    let mut b = compared.copied.admin_conn().await.unwrap();

    // The seed published its two messages once, though it was loaded twice, and registered
    // the demo sink.
    let seeded: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox.messages")
        .fetch_one(&mut b)
        .await
        .unwrap();
    assert_eq!(seeded, 2);
    let checkpoints: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox.checkpoints WHERE sink = 'demo'")
        .fetch_one(&mut b)
        .await
        .unwrap();
    assert_eq!(checkpoints, 32);

    let functions: Vec<String> = sqlx::query_scalar(
        "SELECT n.nspname || '.' || p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname = 'outbox'",
    )
    .fetch_all(&mut a)
    .await
    .unwrap();
    for f in pgstrata_outbox::functions::OutboxFn::ALL {
        let name = f.qualified_name();
        assert!(
            functions.iter().any(|g| g == name),
            "{name} is not a function of outbox"
        );
    }

    // Tenant tables follow the tenancy rules; definer functions pin their search_path.
    let reports = pgstrata_core::doctor::check_tables(&mut a, &pgstrata_tenancy::TENANT_ROOT, &["outbox"])
        .await
        .unwrap();
    assert_eq!(reports.len(), 4, "{reports:?}");
    for r in &reports {
        assert!(r.ok(), "{}", pgstrata_core::doctor::render(std::slice::from_ref(r)));
    }
    let security = pgstrata_core::doctor::security_problems(&mut a, &["outbox"])
        .await
        .unwrap();
    assert!(security.is_empty(), "{security:?}");
    drop((a, b));
    compared.migrated.close().await.unwrap();
    compared.copied.close().await.unwrap();
}
