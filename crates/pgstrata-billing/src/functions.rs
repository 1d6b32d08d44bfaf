//! The `billing` schema's SQL functions as sea-query identifiers, schema-qualified, for the
//! builders (`Func::cust(Function::ProcessEvent)`), declared with
//! `pgstrata_core::sql_functions!`. Codegen renders tables and columns; these are the entry
//! points the crate calls.

pgstrata_core::sql_functions!(
    pub(crate) Function, "billing" {
        ProcessEvent = "process_event",
        ApplyRefetched = "apply_refetched",
        LinkCustomer = "link_customer",
        TenantHasFeature = "tenant_has_feature",
        TenantCurrentPlan = "tenant_current_plan",
        Ledger = "ledger",
        RetryFailed = "retry_failed",
        PruneEvents = "prune_events",
        BackfillPosition = "backfill_position",
        BackfillAdvance = "backfill_advance",
    }
);

/// A duration as an `interval` argument: `CAST($n AS interval)` of its seconds as text
/// (`'259200 seconds'`), since sea-query binds no interval values.
pub(crate) fn interval(d: std::time::Duration) -> sea_query::FunctionCall {
    sea_query::Func::cast_as(format!("{} seconds", d.as_secs_f64()), "interval")
}
