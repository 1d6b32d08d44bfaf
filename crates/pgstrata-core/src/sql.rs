//! The one place where SQL built at run time is handed to sqlx.
//!
//! sqlx 0.9 accepts only `&'static str` or `AssertSqlSafe(..)`. Builders in pgstrata render SQL
//! with sea-query from identifiers fixed at compile time and bind every value, so the assertion
//! holds; routing all of them through here keeps that claim in one auditable spot.

use sea_query::PostgresQueryBuilder;
use sea_query_sqlx::{SqlxBinder, SqlxValues};
use sqlx::postgres::PgArguments;
use sqlx::{AssertSqlSafe, FromRow, Postgres, postgres::PgRow};

/// A rendered statement: SQL text with `$n` placeholders and its bound values.
pub type Built = (String, SqlxValues);

/// Renders a sea-query statement for PostgreSQL.
pub fn build<S: SqlxBinder>(statement: &S) -> Built {
    statement.build_sqlx(PostgresQueryBuilder)
}

/// A statement ready to execute.
pub fn query((sql, values): Built) -> sqlx::query::Query<'static, Postgres, SqlxValues> {
    sqlx::query_with(AssertSqlSafe(sql), values)
}

/// A statement whose rows decode into `T`.
pub fn query_as<T>((sql, values): Built) -> sqlx::query::QueryAs<'static, Postgres, T, SqlxValues>
where
    T: for<'r> FromRow<'r, PgRow>,
{
    sqlx::query_as_with(AssertSqlSafe(sql), values)
}

/// SQL text assembled at run time from identifiers the caller controls (a module's history
/// table, a generated database name), never from user input. Values are still bound.
pub fn trusted(sql: String) -> sqlx::query::Query<'static, Postgres, PgArguments> {
    sqlx::query(AssertSqlSafe(sql))
}

/// [`trusted`], decoding rows into `T`.
pub fn trusted_as<T>(sql: String) -> sqlx::query::QueryAs<'static, Postgres, T, PgArguments>
where
    T: for<'r> FromRow<'r, PgRow>,
{
    sqlx::query_as(AssertSqlSafe(sql))
}

/// Multi-statement SQL text (migrations, seeds) embedded in the binary.
pub fn raw(sql: &str) -> sqlx::RawSql {
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
}
