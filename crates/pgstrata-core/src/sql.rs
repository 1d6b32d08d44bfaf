//! The one place where SQL built at run time is handed to sqlx.
//!
//! sqlx 0.9 accepts only `&'static str` or `AssertSqlSafe(..)`. Builders in pgstrata render SQL
//! with sea-query from identifiers fixed at compile time and bind every value, so the assertion
//! holds; routing all of them through here keeps that claim in one auditable spot.

use sea_query::{PostgresQueryBuilder, QueryStatementWriter};
use sea_query_sqlx::{SqlxBinder, SqlxValues};
use sqlx::postgres::PgArguments;
use sqlx::{AssertSqlSafe, FromRow, Postgres, postgres::PgRow};

/// A rendered statement: SQL text with `$n` placeholders and its bound values.
pub type Built = (String, SqlxValues);

/// Renders a sea-query statement for PostgreSQL.
pub fn build<S: SqlxBinder>(statement: &S) -> Built {
    statement.build_sqlx(PostgresQueryBuilder)
}

/// Renders a sea-query statement with its values inlined (for docs and golden tests only).
pub fn to_sql<S: QueryStatementWriter>(statement: &S) -> String {
    statement.to_string(PostgresQueryBuilder)
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

/// A statement returning one column.
pub fn query_scalar<T>((sql, values): Built) -> sqlx::query::QueryScalar<'static, Postgres, T, SqlxValues>
where
    (T,): for<'r> FromRow<'r, PgRow>,
{
    sqlx::query_scalar_with(AssertSqlSafe(sql), values)
}

/// Multi-statement SQL text (migrations, seeds) embedded in the binary.
pub fn raw(sql: &str) -> sqlx::RawSql {
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
}

/// Plain SQL with bound arguments, for catalog queries assembled at run time.
pub fn query_args(sql: String, args: PgArguments) -> sqlx::query::Query<'static, Postgres, PgArguments> {
    sqlx::query_with(AssertSqlSafe(sql), args)
}
