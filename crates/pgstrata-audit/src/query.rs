//! The three questions, each answered from an index, newest first, with keyset pagination:
//!
//! - what happened to this record: `records_resource_idx (tenant_id, resource_type, resource_id, occurred_at, id)`
//! - what did this person do: `records_actor_idx (tenant_id, actor_id, occurred_at, id)`
//! - what happened between these times: the primary key `(tenant_id, occurred_at, id)`, and
//!   only the months of the range are read (partition pruning).
//!
//! A page continues after the `(occurred_at, id)` of the previous page's last record, so its
//! cost does not grow with depth.

use crate::error::{Error, Result};
use crate::generated::{AuditSchema, Records};
use chrono::{DateTime, Utc};
use pgstrata_core::page::{DEFAULT_PAGE_SIZE, InvalidPage, MAX_PAGE_SIZE};
use pgstrata_core::sql::{self, Built};
use pgstrata_core::{TenantId, UserId};
use sea_query::{Expr, ExprTrait, Order, Query};
use sqlx::PgConnection;

/// A record as read back. `txid` is the `xid8` transaction id as a number.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct AuditRecord {
    pub tenant_id: TenantId,
    pub id: i64,
    pub occurred_at: DateTime<Utc>,
    pub txid: i64,
    pub actor_id: Option<uuid::Uuid>,
    pub request_id: Option<String>,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub old_values: Option<serde_json::Value>,
    pub new_values: Option<serde_json::Value>,
    pub details: Option<serde_json::Value>,
    /// `capture` (the row trigger) or `event` (`audit.record`); `None` for records written
    /// before audit V2.
    pub origin: Option<String>,
}

/// Where the previous page ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    pub occurred_at: DateTime<Utc>,
    pub id: i64,
}

impl From<&AuditRecord> for Cursor {
    fn from(r: &AuditRecord) -> Self {
        Self {
            occurred_at: r.occurred_at,
            id: r.id,
        }
    }
}

/// A query over one tenant's records. Filters combine with AND.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditQuery {
    tenant: TenantId,
    resource: Option<(String, Option<String>)>,
    actor: Option<UserId>,
    action: Option<String>,
    from: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    after: Option<Cursor>,
    limit: u64,
}

impl AuditQuery {
    pub fn new(tenant: TenantId) -> Self {
        Self {
            tenant,
            resource: None,
            actor: None,
            action: None,
            from: None,
            until: None,
            after: None,
            limit: DEFAULT_PAGE_SIZE,
        }
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

    pub fn actor(mut self, actor: UserId) -> Self {
        self.actor = Some(actor);
        self
    }

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

    /// The page after `cursor`.
    pub fn after(mut self, cursor: Cursor) -> Self {
        self.after = Some(cursor);
        self
    }

    /// Page size, 1 to 1000.
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = limit;
        self
    }

    /// The statement.
    ///
    /// ```
    /// use pgstrata_audit::AuditQuery;
    /// use pgstrata_core::TenantId;
    /// let t = TenantId("0190b6a0-0000-7000-8000-000000000001".parse().unwrap());
    /// let (sql, _) = AuditQuery::new(t).resource("billing.invoices", "42").limit(20).build().unwrap();
    /// assert_eq!(
    ///     sql,
    ///     r#"SELECT "tenant_id", "id", "occurred_at", "txid"::text::bigint AS "txid", "actor_id", "request_id", "action", "resource_type", "resource_id", "old_values", "new_values", "details", "origin" FROM "audit"."records" WHERE "tenant_id" = $1 AND "resource_type" = $2 AND "resource_id" = $3 ORDER BY "occurred_at" DESC, "id" DESC LIMIT $4"#
    /// );
    /// ```
    pub fn build(&self) -> Result<Built> {
        if !(1..=MAX_PAGE_SIZE).contains(&self.limit) {
            return Err(Error::Page(InvalidPage { limit: self.limit }));
        }
        if let (Some(from), Some(until)) = (self.from, self.until)
            && from >= until
        {
            return Err(Error::InvalidField {
                field: "time range",
                reason: format!("from ({from}) must be before until ({until})"),
            });
        }
        let mut q = Query::select();
        q.columns([Records::TenantId, Records::Id, Records::OccurredAt])
            .expr_as(Expr::cust(r#""txid"::text::bigint"#), Records::Txid)
            .columns([
                Records::ActorId,
                Records::RequestId,
                Records::Action,
                Records::ResourceType,
                Records::ResourceId,
                Records::OldValues,
                Records::NewValues,
                Records::Details,
                Records::Origin,
            ])
            .from((AuditSchema, Records::Table))
            .and_where(Expr::col(Records::TenantId).eq(self.tenant.0));
        if let Some((resource_type, resource_id)) = &self.resource {
            q.and_where(Expr::col(Records::ResourceType).eq(resource_type.as_str()));
            if let Some(id) = resource_id {
                q.and_where(Expr::col(Records::ResourceId).eq(id.as_str()));
            }
        }
        if let Some(actor) = self.actor {
            q.and_where(Expr::col(Records::ActorId).eq(actor.0));
        }
        if let Some(action) = &self.action {
            q.and_where(Expr::col(Records::Action).eq(action.as_str()));
        }
        if let Some(from) = self.from {
            q.and_where(Expr::col(Records::OccurredAt).gte(from));
        }
        if let Some(until) = self.until {
            q.and_where(Expr::col(Records::OccurredAt).lt(until));
        }
        if let Some(c) = self.after {
            // Row comparison: the index walks on from the cursor instead of filtering.
            q.and_where(
                Expr::tuple([Expr::col(Records::OccurredAt), Expr::col(Records::Id)])
                    .lt(Expr::tuple([Expr::val(c.occurred_at), Expr::val(c.id)])),
            );
        }
        q.order_by(Records::OccurredAt, Order::Desc)
            .order_by(Records::Id, Order::Desc)
            .limit(self.limit);
        Ok(sql::build(&q))
    }

    /// Runs the query; the connection's transaction must have this tenant in context (the
    /// records are under row-level security).
    pub async fn fetch(&self, conn: &mut PgConnection) -> Result<Vec<AuditRecord>> {
        Ok(sql::query_as::<AuditRecord>(self.build()?).fetch_all(conn).await?)
    }

    /// The query for the page after `rows`, or `None` when `rows` was the last page.
    pub fn next_page(&self, rows: &[AuditRecord]) -> Option<Self> {
        if (rows.len() as u64) < self.limit {
            return None;
        }
        rows.last().map(|r| self.clone().after(Cursor::from(r)))
    }
}
