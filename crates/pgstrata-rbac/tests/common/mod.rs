//! Shared set-up for the rbac tests: a database with tenancy and rbac migrated, and the users
//! and tenants the tests grant to, made in SQL as the application role (the way tenancy's
//! registration and tenant creation make them), so these tests depend on tenancy's schema only.
#![allow(dead_code)]

use pgstrata_core::context::set_actor;
use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::TestDb;
use pgstrata_core::{TenantContext, TenantId, UserId, begin_tenant};
use sqlx::PgPool;

pub fn migrator() -> Migrator {
    Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_rbac::MODULE]).unwrap()
}

pub async fn migrated_db() -> TestDb {
    TestDb::migrated(&migrator()).await.unwrap()
}

/// A user, registered by the application role acting as that user.
pub async fn user(app: &PgPool, email: &str) -> UserId {
    let id = UserId::new();
    let mut tx = app.begin().await.unwrap();
    set_actor(&mut tx, id).await.unwrap();
    sqlx::query("INSERT INTO tenancy.users (id, email, display_name) VALUES ($1, $2, $2)")
        .bind(id)
        .bind(email)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    id
}

/// A tenant founded by `founder` through the application role: the founder bootstrap (the
/// actor becomes the first member of a tenant that has none) makes it the owner.
pub async fn tenant(app: &PgPool, slug: &str, founder: UserId) -> TenantId {
    let id = TenantId::new();
    let mut tx = begin_tenant(app, &TenantContext::tenant(id).with_actor(founder))
        .await
        .unwrap();
    sqlx::query("INSERT INTO tenancy.tenants (id, slug, name) VALUES ($1, $2, $2)")
        .bind(id)
        .bind(slug)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("INSERT INTO tenancy.memberships (tenant_id, user_id, role) VALUES ($1, $2, 'owner')")
        .bind(id)
        .bind(founder)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    id
}

/// Adds a member directly, as the owner of the schema (other members join by invitation).
pub async fn add_member(db: &TestDb, tenant: TenantId, user: UserId, role: &str) {
    sqlx::query("INSERT INTO tenancy.memberships (tenant_id, user_id, role) VALUES ($1, $2, $3)")
        .bind(tenant)
        .bind(user)
        .bind(role)
        .execute(&db.admin)
        .await
        .unwrap();
}
