//! Shared set-up for the rbac tests: a database with tenancy and rbac migrated.
#![allow(dead_code)]

use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::TestDb;

pub fn migrator() -> Migrator {
    Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_rbac::MODULE]).unwrap()
}

pub async fn migrated_db() -> TestDb {
    TestDb::migrated(&migrator()).await.unwrap()
}
