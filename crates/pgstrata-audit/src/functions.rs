//! sea-query identifiers of the `audit` schema's SQL functions, which the operations call.
//!
//! Codegen renders tables, not functions, so these are declared here with
//! `pgstrata_core::sql_functions!`; `tests/schema.rs` checks that each one names a function of
//! the `audit` schema, so a renamed function fails a test rather than a call.

pgstrata_core::sql_functions!(
    /// A function of the `audit` schema, schema-qualified, for `Func::cust`.
    pub AuditFn, "audit" {
        Record = "record",
        Enable = "enable",
        Disable = "disable",
        Seal = "seal",
        Verify = "verify",
        Unsealed = "unsealed",
        Maintain = "maintain",
        Partitions = "partitions",
    }
);

/// A table name as the `regclass` argument of `audit.enable` and `audit.disable`:
/// `CAST($n AS regclass)` of the bound text, so an unknown table is refused by the database.
pub(crate) fn regclass(table: &str) -> sea_query::FunctionCall {
    sea_query::Func::cast_as(table, "regclass")
}
