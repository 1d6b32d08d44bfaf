//! Transaction-local tenant and actor context.
//!
//! The context lives in `app.tenant_id`, `app.actor_id` and `app.request_id`, always set with
//! `set_config(.., true)`: it ends with the transaction, so a pooled connection (PgBouncer in
//! transaction mode included) never carries one request's tenant into the next. A session-level
//! `SET` would leak, which is why this module offers no way to make one.

use crate::error::DbError;
use crate::ids::{TenantId, UserId};
use sqlx::{Acquire, PgConnection, Postgres, Transaction};

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

/// Where tenants live, as the module that owns them declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantRoot {
    /// The schema-qualified table of tenants, keyed by `id` (e.g. `tenancy.tenants`).
    pub table: &'static str,
    /// The call every tenant table's policy compares `tenant_id` with: the tenant in context,
    /// when it exists and is active (e.g. `tenancy.current_tenant_id()`).
    pub current_tenant: &'static str,
    /// The call the root's own policy compares `id` with: the raw context value.
    pub context_tenant: &'static str,
}

/// A transaction that carries its tenant: what [`begin_tenant`] returns, and what every
/// tenant-scoped operation of every module takes.
///
/// The tenant is set once, when the transaction opens, and operations read it from here (and
/// the database reads it from the context), so a call cannot name one tenant while the
/// transaction is scoped to another. It derefs to [`PgConnection`] for the application's own
/// statements (`.execute(&mut *tx)`); commit it with [`TenantTx::commit`], and dropping it
/// rolls back.
#[derive(Debug)]
pub struct TenantTx<'c> {
    tx: Transaction<'c, Postgres>,
    ctx: TenantContext,
}

impl<'c> TenantTx<'c> {
    /// The tenant whose rows this transaction sees.
    pub fn tenant_id(&self) -> TenantId {
        self.ctx.tenant_id
    }

    /// The acting user, when there is one.
    pub fn actor_id(&self) -> Option<UserId> {
        self.ctx.actor_id
    }

    /// The whole context the transaction was opened with.
    pub fn context(&self) -> &TenantContext {
        &self.ctx
    }

    /// Commits the transaction (a savepoint release when it was opened inside another).
    pub async fn commit(self) -> Result<(), DbError> {
        self.tx.commit().await?;
        Ok(())
    }

    /// Rolls back explicitly (dropping the transaction does the same, without waiting).
    pub async fn rollback(self) -> Result<(), DbError> {
        self.tx.rollback().await?;
        Ok(())
    }
}

impl std::ops::Deref for TenantTx<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for TenantTx<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

/// Opens a transaction with the tenant context set: on a pool (`begin_tenant(&pool, &ctx)`),
/// or on a connection the caller holds (`begin_tenant(&mut *conn, &ctx)`, a savepoint when that
/// connection is already inside a transaction). Commit it with [`TenantTx::commit`]; dropping
/// it rolls back.
pub async fn begin_tenant<'c, A>(conn: A, ctx: &TenantContext) -> Result<TenantTx<'c>, DbError>
where
    A: Acquire<'c, Database = Postgres>,
{
    let mut tx = conn.begin().await?;
    set_tenant_context(&mut tx, ctx).await?;
    tracing::debug!(
        tenant_id = %ctx.tenant_id,
        actor_id = ctx.actor_id.map(tracing::field::display),
        request_id = ctx.request_id.as_deref(),
        "tenant transaction"
    );
    Ok(TenantTx { tx, ctx: ctx.clone() })
}
