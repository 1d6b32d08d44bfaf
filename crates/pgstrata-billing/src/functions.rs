//! The `billing` schema's SQL functions as sea-query identifiers, schema-qualified, for the
//! builders (`Func::cust(Function::ProcessEvent)`). Codegen renders tables and columns; these
//! are the entry points the crate calls.

use sea_query::Iden;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Function {
    ProcessEvent,
    ApplyRefetched,
    LinkCustomer,
    TenantHasFeature,
    TenantCurrentPlan,
    Ledger,
    RetryFailed,
    PruneEvents,
    BackfillPosition,
    BackfillAdvance,
}

impl Iden for Function {
    fn unquoted(&self) -> &str {
        match self {
            Function::ProcessEvent => "billing.process_event",
            Function::ApplyRefetched => "billing.apply_refetched",
            Function::LinkCustomer => "billing.link_customer",
            Function::TenantHasFeature => "billing.tenant_has_feature",
            Function::TenantCurrentPlan => "billing.tenant_current_plan",
            Function::Ledger => "billing.ledger",
            Function::RetryFailed => "billing.retry_failed",
            Function::PruneEvents => "billing.prune_events",
            Function::BackfillPosition => "billing.backfill_position",
            Function::BackfillAdvance => "billing.backfill_advance",
        }
    }
}

/// A duration as an `interval` argument: `CAST($n AS interval)` of its seconds as text
/// (`'259200 seconds'`), since sea-query binds no interval values.
pub(crate) fn interval(d: std::time::Duration) -> sea_query::FunctionCall {
    sea_query::Func::cast_as(format!("{} seconds", d.as_secs_f64()), "interval")
}
