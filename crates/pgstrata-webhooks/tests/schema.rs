//! webhooks' SQL artefacts agree: schema.sql via psql equals the migrations, generated types
//! equal the catalog, the seed loads (twice, idempotently), and the builders' functions exist.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::Artefacts;

#[tokio::test]
async fn schema_sql_and_generated_types_match_the_migrations() {
    let migrator = Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_webhooks::MODULE]).unwrap();
    let compared = Artefacts {
        module: &pgstrata_webhooks::MODULE,
        psql_files: &[
            ("schemas/tenancy/schema.sql", true),
            ("schemas/webhooks/schema.sql", true),
            ("schemas/tenancy/seed.sql", true),
            ("schemas/webhooks/seed.sql", true),
            ("schemas/webhooks/seed.sql", true),
        ],
        schemas: &["webhooks", "tenancy"],
        generated_rs: include_str!("../src/generated.rs"),
    }
    .check(&migrator)
    .await
    .unwrap();
    assert!(compared.snapshot.contains("deliveries_due_idx"));
    let mut a = compared.migrated.admin_conn().await.unwrap();
    let mut b = compared.copied.admin_conn().await.unwrap();

    // The seed's endpoint got its first secret, and its message was stored once.
    let (endpoints, secrets, messages): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM webhooks.endpoints), (SELECT count(*) FROM webhooks.secrets),
                (SELECT count(*) FROM webhooks.messages)",
    )
    .fetch_one(&mut b)
    .await
    .unwrap();
    assert_eq!((endpoints, secrets, messages), (1, 1, 1));
    let functions: Vec<String> = sqlx::query_scalar(
        "SELECT n.nspname || '.' || p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname = 'webhooks'",
    )
    .fetch_all(&mut a)
    .await
    .unwrap();
    for f in pgstrata_webhooks::functions::WebhooksFn::ALL {
        let name = f.qualified_name();
        assert!(
            functions.iter().any(|g| g == name),
            "{name} is not a function of webhooks"
        );
    }
    drop((a, b));
    compared.migrated.close().await.unwrap();
    compared.copied.close().await.unwrap();
}
