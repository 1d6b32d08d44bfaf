//! The three questions, each answered from an index, newest first, with keyset pagination:
//!
//! - what happened to this record: `records_resource_idx (tenant_id, resource_type, resource_id, occurred_at, id)`
//! - what did this person do: `records_actor_idx (tenant_id, actor_id, occurred_at, id)`
//! - what happened between these times: the primary key `(tenant_id, occurred_at, id)`, and
//!   only the months of the range are read (partition pruning).
//!
//! [`list`] reads the records of the transaction's tenant that a [`RecordFilter`] selects, one
//! [`Page<Cursor>`] at a time: a page continues after the `(occurred_at, id)` of the previous
//! page's last record, so its cost does not grow with depth.

use crate::error::{Error, Result};
use crate::generated::{Record, Records};
use crate::ids::RecordId;
use chrono::{DateTime, Utc};
use pgstrata_core::sql::{self, Built};
use pgstrata_core::{Page, TenantId, TenantTx, UserId};
use sea_query::{Expr, ExprTrait, Order, Query};

/// Where a page of records ends: the ordering key `(occurred_at, id)` of its last record, the
/// key of [`Page<Cursor>`]. Records of one transaction share `occurred_at`, so the id is part
/// of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    pub occurred_at: DateTime<Utc>,
    pub id: RecordId,
}

impl Cursor {
    /// The key of `record`: pass it to [`Page::next`] (`page.next(&rows, Cursor::of)`).
    pub fn of(record: &Record) -> Self {
        Self {
            occurred_at: record.occurred_at,
            id: record.id,
        }
    }
}

impl From<&Record> for Cursor {
    fn from(record: &Record) -> Self {
        Self::of(record)
    }
}

/// Which records of the tenant to list. Filters combine with AND; the default selects every
/// record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordFilter {
    resource: Option<(String, Option<String>)>,
    actor: Option<UserId>,
    action: Option<String>,
    from: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
}

impl RecordFilter {
    /// Every record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records of one resource (`resource_type` is `schema.table` for row changes).
    pub fn resource(mut self, resource_type: impl Into<String>, resource_id: impl Into<String>) -> Self {
        self.resource = Some((resource_type.into(), Some(resource_id.into())));
        self
    }

    /// Records of every resource of a type.
    pub fn resource_type(mut self, resource_type: impl Into<String>) -> Self {
        self.resource = Some((resource_type.into(), None));
        self
    }

    /// Records written with this user as the actor.
    pub fn actor(mut self, actor: UserId) -> Self {
        self.actor = Some(actor);
        self
    }

    /// Records of one action (`insert`, `update`, `delete`, or an event's name).
    pub fn action(mut self, action: impl Into<String>) -> Self {
        self.action = Some(action.into());
        self
    }

    /// `from <= occurred_at < until`; either end may be open.
    pub fn between(mut self, from: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> Self {
        self.from = from;
        self.until = until;
        self
    }
}

/// The statement of [`list`]: `tenant`'s records selected by `filter`, newest first, one page.
/// The tenant is written out (`tenant_id = $1`) so each index is entered by its first column;
/// the row-level policy restricts the rows to the same tenant. Refuses a page size outside
/// 1..=1000 ([`Error::InvalidPage`]) and an empty time range (`InvalidField`, "time range").
///
/// ```
/// use pgstrata_audit::{Cursor, RecordFilter, RecordId, query::list_stmt};
/// use pgstrata_core::{Page, TenantId};
/// let t: TenantId = "0190b6a0-0000-7000-8000-000000000001".parse().unwrap();
/// let filter = RecordFilter::new().resource("billing.invoices", "42");
/// let (sql, _) = list_stmt(t, &filter, &Page::first(20)).unwrap();
/// assert_eq!(
///     sql,
///     r#"SELECT "tenant_id", "id", "occurred_at", CAST(CAST("txid" AS text) AS bigint) AS "txid", "actor_id", "request_id", "action", "resource_type", "resource_id", "old_values", "new_values", "details", "seq", "prev_hash", "hash", "origin" FROM "audit"."records" WHERE "tenant_id" = $1 AND "resource_type" = $2 AND "resource_id" = $3 ORDER BY "occurred_at" DESC, "id" DESC LIMIT $4"#
/// );
///
/// // The next page continues after the last record's (occurred_at, id).
/// let after = Cursor { occurred_at: "2026-10-01T00:00:00Z".parse().unwrap(), id: RecordId(700000) };
/// let actor = "0190b6a0-0000-7000-8000-0000000000a7".parse().unwrap();
/// let (sql, _) = list_stmt(t, &RecordFilter::new().actor(actor), &Page::after(after, 50)).unwrap();
/// assert!(sql.ends_with(
///     r#"WHERE "tenant_id" = $1 AND "actor_id" = $2 AND ("occurred_at", "id") < ($3, $4) ORDER BY "occurred_at" DESC, "id" DESC LIMIT $5"#
/// ));
/// assert!(list_stmt(t, &filter, &Page::first(1001)).is_err());
/// ```
pub fn list_stmt(tenant: TenantId, filter: &RecordFilter, page: &Page<Cursor>) -> Result<Built> {
    page.validate()?;
    if let (Some(from), Some(until)) = (filter.from, filter.until)
        && from >= until
    {
        return Err(Error::InvalidField {
            field: "time range",
            reason: format!("from ({from}) must be before until ({until})"),
        });
    }
    let mut q = Query::select();
    q.columns([Records::TenantId, Records::Id, Records::OccurredAt])
        // xid8 has no Rust decoder; its text is the 64-bit transaction id.
        .expr_as(
            Expr::col(Records::Txid).cast_as("text").cast_as("bigint"),
            Records::Txid,
        )
        .columns([
            Records::ActorId,
            Records::RequestId,
            Records::Action,
            Records::ResourceType,
            Records::ResourceId,
            Records::OldValues,
            Records::NewValues,
            Records::Details,
            Records::Seq,
            Records::PrevHash,
            Records::Hash,
            Records::Origin,
        ])
        .from(Records::qualified())
        .and_where(Expr::col(Records::TenantId).eq(tenant));
    if let Some((resource_type, resource_id)) = &filter.resource {
        q.and_where(Expr::col(Records::ResourceType).eq(resource_type.as_str()));
        if let Some(id) = resource_id {
            q.and_where(Expr::col(Records::ResourceId).eq(id.as_str()));
        }
    }
    if let Some(actor) = filter.actor {
        q.and_where(Expr::col(Records::ActorId).eq(actor));
    }
    if let Some(action) = &filter.action {
        q.and_where(Expr::col(Records::Action).eq(action.as_str()));
    }
    if let Some(from) = filter.from {
        q.and_where(Expr::col(Records::OccurredAt).gte(from));
    }
    if let Some(until) = filter.until {
        q.and_where(Expr::col(Records::OccurredAt).lt(until));
    }
    if let Some(c) = page.after {
        // Row comparison: the index walks on from the cursor instead of filtering.
        q.and_where(
            Expr::tuple([Expr::col(Records::OccurredAt), Expr::col(Records::Id)])
                .lt(Expr::tuple([Expr::val(c.occurred_at), Expr::val(c.id)])),
        );
    }
    q.order_by(Records::OccurredAt, Order::Desc)
        .order_by(Records::Id, Order::Desc)
        .limit(page.limit);
    Ok(sql::build(&q))
}

/// The records of the transaction's tenant that `filter` selects, newest first, one page; the
/// next page is `page.next(&rows, Cursor::of)`.
pub async fn list(tx: &mut TenantTx<'_>, filter: &RecordFilter, page: &Page<Cursor>) -> Result<Vec<Record>> {
    let built = list_stmt(tx.tenant_id(), filter, page)?;
    Ok(sql::query_as::<Record>(built).fetch_all(&mut **tx).await?)
}
