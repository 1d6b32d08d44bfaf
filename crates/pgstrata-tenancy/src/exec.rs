//! Running built statements and turning database refusals into this crate's errors.
//! Every operation module goes through here, so the mapping lives once.

use crate::error::{Error, Result};
use pgstrata_core::error::DbError;
use pgstrata_core::sql::{self, Built};
use sqlx::PgConnection;
use sqlx::postgres::PgRow;
use uuid::Uuid;

/// Maps a database error, letting `named` translate known constraint names first.
pub(crate) fn map_err(e: sqlx::Error, named: impl Fn(&DbError) -> Option<Error>) -> Error {
    let db = DbError::from(e);
    named(&db).unwrap_or(Error::Db(db))
}

/// The row a statement returns, or `NotFound`.
pub(crate) async fn one<T>(
    conn: &mut PgConnection,
    built: Built,
    entity: &'static str,
    id: Uuid,
    named: impl Fn(&DbError) -> Option<Error>,
) -> Result<T>
where
    T: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
{
    sql::query_as::<T>(built)
        .fetch_optional(conn)
        .await
        .map_err(|e| map_err(e, named))?
        .ok_or(Error::NotFound { entity, id })
}

/// The rows a statement returns.
pub(crate) async fn all<T>(conn: &mut PgConnection, built: Built) -> Result<Vec<T>>
where
    T: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
{
    Ok(sql::query_as::<T>(built).fetch_all(conn).await?)
}

/// Runs a versioned UPDATE: a stale version becomes `StaleVersion` with the current version
/// the database reported, no row becomes `NotFound`.
pub(crate) async fn versioned<T>(
    conn: &mut PgConnection,
    built: Built,
    entity: &'static str,
    id: Uuid,
    expected: i64,
    named: impl Fn(&DbError) -> Option<Error>,
) -> Result<T>
where
    T: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
{
    one(conn, built, entity, id, |db| match db {
        DbError::StaleVersion { current, .. } => Some(Error::StaleVersion {
            entity,
            id,
            expected,
            current: *current,
        }),
        other => named(other),
    })
    .await
}

/// No constraint names to translate.
pub(crate) fn none(_: &DbError) -> Option<Error> {
    None
}
