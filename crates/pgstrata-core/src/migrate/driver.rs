//! refinery's async driver traits, implemented over a sqlx connection.
//!
//! refinery discovers, orders and checksums migrations but ships no sqlx driver; this is that
//! driver. It wraps a borrowed `PgConnection` (a local type, because of the orphan rule) so the
//! runner can use the very connection that holds the migration lease.

use refinery_core::Migration;
use refinery_core::traits::r#async::{AsyncMigrate, AsyncQuery, AsyncTransaction};
use sqlx::{Connection, PgConnection, Row};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A sqlx connection seen through refinery's driver traits.
///
/// refinery boxes driver errors behind a borrowed `dyn Error`; the original sqlx error (with
/// its SQLSTATE and constraint) is kept in `last_error` so the caller can classify it.
#[derive(Debug)]
pub(crate) struct RefineryConn<'c> {
    pub(crate) conn: &'c mut PgConnection,
    pub(crate) last_error: Option<sqlx::Error>,
}

impl<'c> RefineryConn<'c> {
    pub(crate) fn new(conn: &'c mut PgConnection) -> Self {
        Self { conn, last_error: None }
    }

    fn keep<T>(&mut self, result: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        result.map_err(|e| {
            let copy = sqlx::Error::Protocol(e.to_string());
            self.last_error = Some(e);
            copy
        })
    }
}

impl AsyncTransaction for RefineryConn<'_> {
    type Error = sqlx::Error;

    /// Runs the statements (a migration's SQL and its history insert) in one transaction, so
    /// a migration is either applied and recorded, or neither.
    async fn execute<'a, T: Iterator<Item = &'a str> + Send + 'a>(
        &'a mut self,
        queries: T,
    ) -> Result<usize, Self::Error> {
        let result = async {
            let mut tx = self.conn.begin().await?;
            let mut count = 0;
            for sql in queries {
                crate::sql::raw(sql).execute(&mut *tx).await?;
                count += 1;
            }
            tx.commit().await?;
            Ok(count)
        }
        .await;
        self.keep(result)
    }
}

impl AsyncQuery<Vec<Migration>> for RefineryConn<'_> {
    async fn query<'a>(&'a mut self, query: &'a str) -> Result<Vec<Migration>, Self::Error> {
        let result = match crate::sql::raw(query).fetch_all(&mut *self.conn).await {
            Ok(rows) => rows.iter().map(applied_from_row).collect(),
            Err(e) => Err(e),
        };
        self.keep(result)
    }
}

impl AsyncMigrate for RefineryConn<'_> {}

fn applied_from_row(row: &sqlx::postgres::PgRow) -> Result<Migration, sqlx::Error> {
    let version: i32 = row.try_get(0)?;
    let name: String = row.try_get(1)?;
    let applied_on: String = row.try_get(2)?;
    let checksum: String = row.try_get(3)?;
    let applied_on = OffsetDateTime::parse(&applied_on, &Rfc3339)
        .map_err(|e| sqlx::Error::Decode(format!("history row {version}: applied_on {applied_on:?}: {e}").into()))?;
    let checksum = checksum
        .parse::<u64>()
        .map_err(|e| sqlx::Error::Decode(format!("history row {version}: checksum {checksum:?}: {e}").into()))?;
    Ok(Migration::applied(version, name, applied_on, checksum))
}
