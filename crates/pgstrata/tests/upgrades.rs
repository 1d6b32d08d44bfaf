//! psql installs upgrade with the files under `schemas/<module>/upgrades/`: each file is what
//! `pgstrata schema upgrade` renders; applied in order from V1 they give the catalog the
//! migrator gives and a history the migrator reads as its own; applied out of order they are
//! refused with nothing changed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata::Backend;
use pgstrata_core::catalog;
use pgstrata_core::migrate::{MigrationState, Migrator};
use pgstrata_core::testing::{TestDb, psql_file};
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::canonicalize(&root).unwrap_or(root)
}

#[tokio::test]
async fn upgrade_files_are_current_and_take_a_v1_install_to_the_latest_version() {
    let root = repo_root();
    let backend = Backend::all().unwrap();
    for module in backend.modules() {
        let migrator = Migrator::new(backend.migrator().with_dependencies(module.name).unwrap()).unwrap();
        let upgrades: Vec<_> = module.migrations.iter().filter(|f| f.version > 1).collect();
        for file in &upgrades {
            let path = root.join(module.upgrade_path(file));
            let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                on_disk == module.upgrade_sql(file.version).unwrap(),
                "{} is out of date: run `cargo run -p pgstrata-cli -- schema upgrade {} {} > {}`",
                module.upgrade_path(file),
                module.name,
                file.version,
                module.upgrade_path(file)
            );
        }
        if upgrades.is_empty() {
            continue;
        }

        let db = TestDb::new().await.unwrap();
        let mut conn = db.admin_conn().await.unwrap();
        migrator.up_to(&mut conn, Some(module.name), Some(1)).await.unwrap();
        let url = db.url().unwrap();

        // Out of order: refused, and the install stays at V1.
        if let Some(skip) = upgrades.get(1) {
            let err = psql_file(&url, &root.join(module.upgrade_path(skip)), false).unwrap_err();
            assert!(err.contains("this file upgrades"), "{}: {err}", module.name);
            let at: i32 = pgstrata_core::sql::trusted_as::<(i32,)>(format!(
                "SELECT max(version) FROM {}",
                module.history_table()
            ))
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .0;
            assert_eq!(at, 1, "{}: a refused upgrade changed the history", module.name);
        }

        for file in &upgrades {
            psql_file(&url, &root.join(module.upgrade_path(file)), false)
                .unwrap_or_else(|e| panic!("{}: {e}", module.upgrade_path(file)));
        }
        // Applying the last one again is refused too.
        let last = upgrades.last().unwrap();
        assert!(psql_file(&url, &root.join(module.upgrade_path(last)), false).is_err());

        let status = migrator.status(&mut conn).await.unwrap();
        let not_applied: Vec<_> = status
            .iter()
            .filter(|s| s.state != MigrationState::Applied)
            .map(|s| format!("{} V{} {}", s.module, s.version, s.state))
            .collect();
        assert!(not_applied.is_empty(), "{}: {not_applied:?}", module.name);
        assert!(migrator.up(&mut conn).await.unwrap().is_empty());

        let reference = TestDb::migrated(&migrator).await.unwrap();
        let mut reference_conn = reference.admin_conn().await.unwrap();
        assert_eq!(
            catalog::snapshot(&mut conn, &[module.name]).await.unwrap(),
            catalog::snapshot(&mut reference_conn, &[module.name]).await.unwrap(),
            "{}: upgrading with psql gives another catalog than migrating",
            module.name
        );
        drop(conn);
        drop(reference_conn);
        reference.close().await.unwrap();
        db.close().await.unwrap();
    }
}
