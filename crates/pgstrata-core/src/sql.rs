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

/// Declares a module's SQL functions as one sea-query identifier enum, for `Func::cust`: each
/// variant is written as its schema-qualified name, unquoted (`audit.seal`), as the builders
/// call them. Codegen renders tables, not functions, so each module lists the functions it
/// calls with this macro; `ALL` lets a test check that every one exists in the schema.
///
/// ```
/// use sea_query::{Expr, Func, Query};
/// pgstrata_core::sql_functions!(
///     /// The `shop` schema's functions.
///     pub ShopFn, "shop" {
///         PlaceOrder = "place_order",
///         Stats = "stats",
///     }
/// );
/// assert_eq!(ShopFn::PlaceOrder.qualified_name(), "shop.place_order");
/// assert_eq!(ShopFn::ALL, &[ShopFn::PlaceOrder, ShopFn::Stats]);
/// let (sql, _) = pgstrata_core::sql::build(Query::select().expr(Func::cust(ShopFn::PlaceOrder).arg(Expr::val(7))));
/// assert_eq!(sql, "SELECT shop.place_order($1)");
/// let (sql, _) = pgstrata_core::sql::build(
///     Query::select().column(sea_query::Asterisk).from_function(Func::cust(ShopFn::Stats), pgstrata_core::sql::Rows),
/// );
/// assert_eq!(sql, r#"SELECT * FROM shop.stats() AS "r""#);
/// ```
#[macro_export]
macro_rules! sql_functions {
    ($(#[$meta:meta])* $vis:vis $name:ident, $schema:literal { $($(#[$vmeta:meta])* $variant:ident = $function:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        #[allow(dead_code)]
        impl $name {
            /// Every function, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The function's name as written in SQL: `schema.function`.
            pub fn qualified_name(&self) -> &'static str {
                match self {
                    $($name::$variant => concat!($schema, ".", $function),)+
                }
            }
        }

        impl $crate::__private::sea_query::Iden for $name {
            fn unquoted(&self) -> &str {
                self.qualified_name()
            }
        }
    };
}

/// The alias of a set-returning function in `FROM` (`SELECT * FROM audit.verify($1) AS "r"`):
/// the rows are read by column name, so the alias is never referred to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rows;

impl sea_query::Iden for Rows {
    fn unquoted(&self) -> &str {
        "r"
    }
}
