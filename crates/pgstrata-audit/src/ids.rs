//! The audit module's key and state types, listed in [`crate::MODULE`]'s `column_types` so the
//! generated rows carry them.

use serde::{Deserialize, Serialize};

/// The id of an audit record (`audit.records.id`, a bigint identity): increasing in insertion
/// order, unique across tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
#[sqlx(transparent)]
#[serde(transparent)]
pub struct RecordId(pub i64);

impl std::fmt::Display for RecordId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<RecordId> for sea_query::Value {
    fn from(id: RecordId) -> Self {
        id.0.into()
    }
}

pgstrata_core::text_enum!(
    /// Which writer wrote a record (`audit.records.origin`). Only these two SECURITY DEFINER
    /// functions insert records, so a captured change can never be passed off as an event or
    /// the other way round. Records written before audit V2 have none (`None`).
    RecordOrigin, "record origin" {
        /// The capture trigger that `audit.enable` attaches (`audit.capture()`): a row change.
        Capture = "capture",
        /// `audit.record()` ([`crate::capture::record`]): an application event.
        Event = "event",
    }
);

pgstrata_core::text_enum!(
    /// Where the capture trigger of an audited table takes the tenant from (`audit.tables.tenant_source`).
    TenantSource, "tenant source" {
        /// The row's `tenant_id` column.
        Column = "column",
        /// The row is a tenant (`tenancy.tenants`): its own `id`.
        SelfRow = "self",
        /// The transaction's context (`app.tenant_id`), for tables without a tenant column.
        Context = "context",
    }
);
