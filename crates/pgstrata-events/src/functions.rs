//! sea-query identifiers of the `events` schema's SQL functions, which the operations call.
//!
//! Declared with `pgstrata_core::sql_functions!`; `tests/schema.rs` checks that each one names a
//! function of the `events` schema.

pgstrata_core::sql_functions!(
    /// A function of the `events` schema, schema-qualified, for `Func::cust`.
    pub EventsFn, "events" {
        BeginBatch = "begin_batch",
        Funnel = "funnel",
        EraseActor = "erase_actor",
        Purge = "purge",
        Maintain = "maintain",
        Partitions = "partitions",
    }
);
