//! billing's SQL artefacts agree: schema.sql via psql equals the migrations, generated types
//! equal the catalog.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::{Artefacts, TestDb};

#[tokio::test]
async fn schema_sql_and_generated_types_match_the_migrations() {
    let migrator = Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_billing::MODULE]).unwrap();
    let compared = Artefacts {
        module: &pgstrata_billing::MODULE,
        psql_files: &[
            ("schemas/tenancy/schema.sql", false),
            ("schemas/billing/schema.sql", false),
            ("schemas/billing/seed.sql", false),
        ],
        schemas: &["billing"],
        generated_rs: include_str!("../src/generated.rs"),
    }
    .check(&migrator)
    .await
    .unwrap();
    assert!(compared.snapshot.contains("events_deferred_idx"));
    compared.migrated.close().await.unwrap();
    compared.copied.close().await.unwrap();
}

/// The doctor's tenancy rules hold for every billing table: tenant tables have forced RLS,
/// the tenant policy and tenant-led keys; global tables reference no tenant table.
#[tokio::test]
async fn every_billing_table_passes_the_doctor() {
    let migrator = Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_billing::MODULE]).unwrap();
    let db = TestDb::migrated(&migrator).await.unwrap();
    let mut conn = db.admin_conn().await.unwrap();
    let reports = pgstrata_core::doctor::check_tables(&mut conn, &pgstrata_tenancy::TENANT_ROOT, &["billing"])
        .await
        .unwrap();
    let tenant_tables = reports
        .iter()
        .filter(|r| r.kind == pgstrata_core::doctor::TableKind::Tenant)
        .count();
    assert_eq!(tenant_tables, 6, "{}", pgstrata_core::doctor::render(&reports));
    assert!(
        reports.iter().all(|r| r.ok()),
        "{}",
        pgstrata_core::doctor::render(&reports)
    );
    // And the static security rules (definer search_path, no PUBLIC execute).
    let problems = pgstrata_core::doctor::security_problems(&mut conn, &["billing"])
        .await
        .unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
    drop(conn);
    db.close().await.unwrap();
}

/// Links made before V2 by `billing.link_customer(customer)`, which any tenant could call, are
/// kept and reported by the migration with a count (and how many the customer's own metadata
/// contradicts), never silently kept or dropped.
#[tokio::test]
async fn v2_reports_the_links_any_tenant_could_have_made() {
    let migrator = Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_billing::MODULE]).unwrap();
    let db = TestDb::new().await.unwrap();
    let mut conn = db.admin_conn().await.unwrap();
    migrator.up_to(&mut conn, Some("tenancy"), None).await.unwrap();
    migrator.up_to(&mut conn, Some("billing"), Some(1)).await.unwrap();
    let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    sqlx::query(
        "INSERT INTO tenancy.tenants (id, slug, name) VALUES ($1, 'a-' || replace($1::text, '-', ''), 'A'),
                                                           ($2, 'b-' || replace($2::text, '-', ''), 'B');
         ",
    )
    .bind(a)
    .bind(b)
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO billing.customer_links (customer_id, tenant_id, source, linked_at)
         VALUES ('cus_claimed', $2, 'explicit', now()), ('cus_own', $1, 'explicit', now()),
                ('cus_meta', $1, 'metadata', now())",
    )
    .bind(a)
    .bind(b)
    .execute(&mut conn)
    .await
    .unwrap();
    // cus_claimed's own metadata names tenant A; B linked it first (its events then failed).
    sqlx::query(
        "INSERT INTO billing.events (id, type, created, status, object_type, object_id, customer_id, payload, error)
         VALUES ('evt_claimed', 'customer.updated', now(), 'failed', 'customer', 'cus_claimed', 'cus_claimed',
                 jsonb_build_object('data', jsonb_build_object('object',
                     jsonb_build_object('id', 'cus_claimed', 'metadata', jsonb_build_object('tenant_id', $1::text)))),
                 'PS403: customer cus_claimed has metadata.tenant_id of another tenant')",
    )
    .bind(a)
    .execute(&mut conn)
    .await
    .unwrap();

    let v2 = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../migrations/billing/V2__hardening.sql"
    ))
    .unwrap();
    let (_, stderr) = pgstrata_core::testing::psql_script(&db.url().unwrap(), &v2).unwrap();
    assert!(
        stderr.contains("WARNING:  billing V2: 2 Stripe customer link(s)") && stderr.contains("1 of them contradict"),
        "{stderr}"
    );
    let kept: Vec<(String, String)> =
        sqlx::query_as("SELECT customer_id, source FROM billing.customer_links ORDER BY customer_id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        kept,
        [
            ("cus_claimed".into(), "explicit".into()),
            ("cus_meta".into(), "metadata".into()),
            ("cus_own".into(), "explicit".into()),
        ]
    );
    drop(conn);
    db.close().await.unwrap();
}

/// Down to V1 (V3 then V2) brings V1's entry points back (with the pinned search_path kept) and
/// renames the new link sources; up again restores V2.
#[tokio::test]
async fn v2_down_and_up_again() {
    let migrator = Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_billing::MODULE]).unwrap();
    let db = TestDb::migrated(&migrator).await.unwrap();
    let mut conn = db.admin_conn().await.unwrap();
    let tenant = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO tenancy.tenants (id, slug, name) VALUES ($1, 'd-' || replace($1::text, '-', ''), 'D')")
        .bind(tenant)
        .execute(&mut conn)
        .await
        .unwrap();
    let linked: i32 = sqlx::query_scalar("SELECT billing.link_customer('cus_down', $1)")
        .bind(tenant)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(linked, 0);
    let functions = "SELECT string_agg(p.oid::regprocedure::text || ' definer=' || p.prosecdef, ', ' ORDER BY 1)
                       FROM pg_proc p WHERE p.pronamespace = 'billing'::regnamespace AND p.proname = 'link_customer'";
    let before: String = sqlx::query_scalar(functions).fetch_one(&mut conn).await.unwrap();

    migrator.down(&mut conn, Some("billing"), 1).await.unwrap();
    let v1: String = sqlx::query_scalar(functions).fetch_one(&mut conn).await.unwrap();
    assert_eq!(v1, "billing.link_customer(text) definer=true");
    let source: String = sqlx::query_scalar("SELECT source FROM billing.customer_links WHERE customer_id = 'cus_down'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(source, "explicit");
    let empty_path: Vec<String> = sqlx::query_scalar(
        "SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = 'billing'::regnamespace
            AND (p.prosecdef OR p.prolang <> (SELECT l.oid FROM pg_language l WHERE l.lanname = 'sql'))
            AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(
        empty_path.is_empty(),
        "the down migration keeps search_path pinned: {empty_path:?}"
    );

    migrator.up(&mut conn).await.unwrap();
    let again: String = sqlx::query_scalar(functions).fetch_one(&mut conn).await.unwrap();
    assert_eq!(again, before);
    drop(conn);
    db.close().await.unwrap();
}
