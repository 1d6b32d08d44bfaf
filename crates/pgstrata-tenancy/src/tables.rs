//! The application's own tables as tenant tables.
//!
//! [`make_tenant_table`] runs `tenancy.make_tenant_table()`: it adds `tenant_id` when asked (on
//! an empty table), enables and forces row-level security, creates the `tenant_isolation`
//! policy pgstrata's own tables have, and reports what it cannot change by itself (keys other
//! objects depend on, policies that let rows through, a missing grant). Run it in a migration,
//! as the table's owner; `pgstrata doctor --schema <schema>` then checks the result with the
//! same rules as pgstrata's tables.

use crate::Result;
use pgstrata_core::DbError;
use sqlx::PgConnection;

/// One step of [`make_tenant_table`]: done, or left to the application with the reason.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct TableStep {
    /// `column`, `rls`, `policy`, `primary key`, `unique`, `foreign key` or `grant`.
    pub step: String,
    /// Whether the function did it; `false` means the application must.
    pub done: bool,
    /// What was done, or what to do.
    pub detail: String,
}

/// Makes `table` (optionally schema-qualified, as in SQL) a tenant table. With `add_column`, an
/// empty table without `tenant_id` gets one that defaults to the tenant in context. A table
/// that does not exist is [`DbError::NotFound`]; a table of a pgstrata module, a non-uuid
/// `tenant_id` or a table with rows and no column is [`DbError::Rejected`], with nothing
/// changed.
pub async fn make_tenant_table(conn: &mut PgConnection, table: &str, add_column: bool) -> Result<Vec<TableStep>> {
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(table)
        .fetch_one(&mut *conn)
        .await?;
    let Some(table) = exists else {
        return Err(DbError::NotFound {
            message: format!("table {table:?} does not exist (or is not on the search path)"),
        }
        .into());
    };
    Ok(
        sqlx::query_as("SELECT step, done, detail FROM tenancy.make_tenant_table($1::regclass, $2)")
            .bind(table)
            .bind(add_column)
            .fetch_all(conn)
            .await?,
    )
}
