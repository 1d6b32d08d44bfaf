//! sea-query identifiers of the `eventstore` schema's SQL functions, which the operations call.
//!
//! Declared with `pgstrata_core::sql_functions!`; `tests/schema.rs` checks that each one names a
//! function of the `eventstore` schema.

pgstrata_core::sql_functions!(
    /// A function of the `eventstore` schema, schema-qualified, for `Func::cust`.
    pub EventstoreFn, "eventstore" {
        Append = "append",
        AppendAny = "append_any",
        ReadAfter = "read_after",
        LiveGeneration = "live_generation",
        SaveSnapshot = "save_snapshot",
    }
);
