//! Running built statements: every operation is a builder plus one of these, and every database
//! refusal goes through [`Error::from_db`] with what the statement was about.

use crate::error::{Error, Result, Subject};
use pgstrata_core::sql::{self, Built};
use sqlx::PgConnection;
use sqlx::postgres::PgRow;

fn map<'s>(s: &'s Subject<'_>) -> impl FnOnce(sqlx::Error) -> Error + 's {
    move |e| Error::from_db(e.into(), s)
}

/// The row a statement returns, if any (reading one row by its key).
pub(crate) async fn optional<T>(conn: &mut PgConnection, built: Built, s: &Subject<'_>) -> Result<Option<T>>
where
    T: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
{
    sql::query_as::<T>(built).fetch_optional(conn).await.map_err(map(s))
}

/// The row a statement returns, or the subject's `NotFound` (changing one row by its key).
pub(crate) async fn one<T>(conn: &mut PgConnection, built: Built, s: &Subject<'_>) -> Result<T>
where
    T: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
{
    optional(conn, built, s).await?.ok_or_else(|| s.not_found())
}

/// The rows a statement returns.
pub(crate) async fn all<T>(conn: &mut PgConnection, built: Built, s: &Subject<'_>) -> Result<Vec<T>>
where
    T: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
{
    sql::query_as::<T>(built).fetch_all(conn).await.map_err(map(s))
}

/// Runs a statement that returns no rows; the subject's `NotFound` when it touched none.
pub(crate) async fn touch_one(conn: &mut PgConnection, built: Built, s: &Subject<'_>) -> Result<()> {
    let done = sql::query(built).execute(conn).await.map_err(map(s))?;
    if done.rows_affected() == 0 {
        return Err(s.not_found());
    }
    Ok(())
}
