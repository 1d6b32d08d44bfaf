//! Transaction-local tenant and actor context.
//!
//! The context lives in `app.tenant_id`, `app.actor_id` and `app.request_id`, always set with
//! `set_config(.., true)`: it ends with the transaction, so a pooled connection (PgBouncer in
//! transaction mode included) never carries one request's tenant into the next. A session-level
//! `SET` would leak, which is why this module offers no way to make one.

use crate::error::DbError;
use crate::ids::{TenantId, UserId};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

/// Who is acting, for whom: the tenant whose rows are visible, and optionally the user and the
/// request (recorded by the audit module).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantContext {
    pub tenant_id: TenantId,
    pub actor_id: Option<UserId>,
    pub request_id: Option<String>,
}

impl TenantContext {
    /// Context for a tenant with no acting user (jobs, system tasks).
    pub fn tenant(tenant_id: TenantId) -> Self {
        Self {
            tenant_id,
            actor_id: None,
            request_id: None,
        }
    }

    /// Adds the acting user.
    pub fn with_actor(mut self, actor_id: UserId) -> Self {
        self.actor_id = Some(actor_id);
        self
    }

    /// Adds a request id (for the audit trail).
    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }
}

/// Sets the context on a connection that is inside a transaction, for the rest of that
/// transaction. Use it to join the caller's transaction; outside a transaction block
/// PostgreSQL discards the settings at the end of the statement, which fails closed.
pub async fn set_tenant_context(conn: &mut PgConnection, ctx: &TenantContext) -> Result<(), DbError> {
    // One round trip; an absent actor or request id is written as '' so that a value from an
    // earlier statement in the same transaction is cleared rather than inherited.
    sqlx::query(
        "SELECT set_config('app.tenant_id', $1, true), \
                set_config('app.actor_id', $2, true), \
                set_config('app.request_id', $3, true)",
    )
    .bind(ctx.tenant_id.0.to_string())
    .bind(ctx.actor_id.map(|a| a.0.to_string()).unwrap_or_default())
    .bind(ctx.request_id.clone().unwrap_or_default())
    .execute(conn)
    .await?;
    Ok(())
}

/// Sets only the acting user (no tenant), e.g. for a user creating their own identity or
/// accepting an invitation before they belong to any tenant.
pub async fn set_actor(conn: &mut PgConnection, actor_id: UserId) -> Result<(), DbError> {
    sqlx::query("SELECT set_config('app.actor_id', $1, true)")
        .bind(actor_id.0.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

/// Clears tenant, actor and request for the rest of the transaction.
pub async fn clear_context(conn: &mut PgConnection) -> Result<(), DbError> {
    sqlx::query(
        "SELECT set_config('app.tenant_id', '', true), set_config('app.actor_id', '', true), \
                set_config('app.request_id', '', true)",
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Opens a transaction on the pool with the context set. Commit it with `tx.commit()`;
/// dropping it rolls back.
pub async fn begin_tenant(pool: &PgPool, ctx: &TenantContext) -> Result<Transaction<'static, Postgres>, DbError> {
    let mut tx = pool.begin().await?;
    set_tenant_context(&mut tx, ctx).await?;
    Ok(tx)
}
