//! Partition maintenance: months are created ahead, only expired months are dropped, a missing
//! month is a clear error, and doctor warns before partitions run out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::fixture;
use pgstrata_audit::partitions;

async fn names(db: &pgstrata_core::testing::TestDb) -> Vec<String> {
    let mut conn = db.admin.acquire().await.unwrap();
    partitions::list(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect()
}

#[tokio::test]
async fn maintenance_creates_ahead_and_drops_only_expired_months() {
    let f = fixture().await;
    let mut conn = f.db.admin_conn().await.unwrap();

    // Migrating created this month and the next three; running again does nothing.
    let before = names(&f.db).await;
    assert_eq!(before.len(), 4, "{before:?}");
    assert_eq!(partitions::maintain(&mut conn, None, None).await.unwrap(), vec![]);
    assert!(
        pgstrata_core::doctor::partition_warnings(&mut conn, &["audit"])
            .await
            .unwrap()
            .is_empty()
    );

    // Seen from 2025-06-15 with 12 months of retention: 2024-04 and 2024-05 are wholly older
    // than 2024-06-15 and go; 2024-06 still holds days inside the retention and stays.
    for month in ["2024-04-01", "2024-05-01", "2024-06-01", "2024-07-01"] {
        sqlx::query("SELECT audit.create_partition($1::date)")
            .bind(month)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    // A record in a month about to be dropped (written by the owner with an explicit time).
    sqlx::query(
        "INSERT INTO audit.records (tenant_id, occurred_at, action, resource_type) VALUES ($1, '2024-05-20', 'user.login', 'user')",
    )
    .bind(f.a.0)
    .execute(&mut conn)
    .await
    .unwrap();
    // Retention drops only sealed months (a month with unsealed records is kept).
    common::seal_all(&f.db).await;
    let steps: Vec<(String, String)> =
        sqlx::query_as("SELECT action, partition FROM audit.maintain(2, 12, '2025-06-15 12:00+00')")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        steps,
        vec![
            ("created".into(), "records_p202506".into()),
            ("created".into(), "records_p202507".into()),
            ("created".into(), "records_p202508".into()),
            ("dropped".into(), "records_p202404".into()),
            ("dropped".into(), "records_p202405".into()),
        ]
    );
    let after = names(&f.db).await;
    assert!(after.contains(&"records_p202406".to_owned()) && after.contains(&"records_p202407".to_owned()));
    for kept in &before {
        assert!(after.contains(kept), "{kept} was dropped");
    }
    let old: i64 = sqlx::query_scalar("SELECT count(*) FROM audit.records WHERE occurred_at < '2024-06-01'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(old, 0);
    // Each new partition carries the TRUNCATE guard.
    let truncate = sqlx::query("TRUNCATE audit.records_p202507").execute(&mut conn).await;
    assert_eq!(common::code(truncate), "42501");

    // Bad settings are refused with a clear error.
    let bad = partitions::maintain(&mut conn, Some(0), None).await;
    assert!(
        matches!(
            &bad,
            Err(pgstrata_audit::Error::Db(pgstrata_core::DbError::InvalidInput { .. }))
        ),
        "{bad:?}"
    );
    drop(conn);
    f.app.close().await;
    f.db.close().await.unwrap();
}

#[tokio::test]
async fn running_out_of_partitions_warns_then_fails_clearly() {
    let f = fixture().await;
    let mut conn = f.db.admin_conn().await.unwrap();
    // Lose the future months: doctor warns.
    let future: Vec<String> = sqlx::query_scalar("SELECT name FROM audit.partitions() WHERE lower_bound > now()")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(future.len(), 3);
    for name in &future[1..] {
        pgstrata_core::sql::trusted(format!("DROP TABLE audit.{name}"))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let warnings = pgstrata_core::doctor::partition_warnings(&mut conn, &["audit", "tenancy"])
        .await
        .unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("audit.records has 1 partition(s)"),
        "{warnings:?}"
    );

    // A write into a month with no partition names the problem and the fix.
    let err = sqlx::query(
        "INSERT INTO audit.records (tenant_id, occurred_at, action, resource_type) VALUES ($1, now() + interval '5 years', 'user.login', 'user')",
    )
    .bind(f.a.0)
    .execute(&mut conn)
    .await
    .unwrap_err();
    let err = pgstrata_audit::Error::from(err);
    assert!(matches!(err, pgstrata_audit::Error::NoPartition { .. }), "{err:?}");
    assert!(err.to_string().contains("pgstrata audit maintain"));
    // A CHECK of the audited table names its constraint: the table's refusal, not a missing
    // month.
    sqlx::raw_sql("ALTER TABLE billing.invoices ADD CONSTRAINT invoices_amount_positive CHECK (amount > 0)")
        .execute(&mut conn)
        .await
        .unwrap();
    let mut t = common::tx(&f.app, f.a, None, None).await;
    let err = sqlx::query("INSERT INTO billing.invoices (tenant_id, number, amount) VALUES ($1, 'INV-0', 0)")
        .bind(f.a.0)
        .execute(&mut *t)
        .await
        .unwrap_err();
    let err = pgstrata_audit::Error::from(err);
    assert!(
        matches!(
            &err,
            pgstrata_audit::Error::Db(pgstrata_core::DbError::InvalidInput { constraint: Some(c), .. })
                if c == "invoices_amount_positive"
        ),
        "{err:?}"
    );
    drop(t);

    // Maintenance puts them back and the warning goes away.
    let steps = partitions::maintain(&mut conn, None, None).await.unwrap();
    assert_eq!(steps.len(), 2);
    assert!(
        pgstrata_core::doctor::partition_warnings(&mut conn, &["audit"])
            .await
            .unwrap()
            .is_empty()
    );
    drop(conn);
    f.app.close().await;
    f.db.close().await.unwrap();
}
