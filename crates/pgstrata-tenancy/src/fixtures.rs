//! Test support for code built on this module: tenants that exist, without going through the
//! request path. Since tenancy V3 a context whose tenant has no row is no tenant at all, so a
//! test that makes up tenant ids must create their rows first.

use pgstrata_core::TenantId;
use sqlx::PgConnection;

/// Inserts a live, active tenant row for each id (slug `t-<id>`), as the connection's role,
/// which must be the owner or a superuser (the request path sets its own context to create
/// one). Ids that exist already are left alone.
pub async fn insert_tenants(conn: &mut PgConnection, ids: &[TenantId]) -> Result<(), sqlx::Error> {
    let ids: Vec<uuid::Uuid> = ids.iter().map(|t| t.0).collect();
    sqlx::query(
        "INSERT INTO tenancy.tenants (id, slug, name)
         SELECT id, 't-' || replace(id::text, '-', ''), 'Tenant ' || id FROM unnest($1::uuid[]) AS u(id)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(ids)
    .execute(conn)
    .await
    .map(drop)
}
