//! Backfill from Stripe's API: list customers, products, prices, subscriptions and invoices
//! page by page and apply every object through the same guarded path as webhooks.
//!
//! Each object is applied as a synthetic event (`bf_...`, type `<kind>.updated`) stamped with
//! the time its page was fetched, minus a margin for clock skew: a webhook event created after
//! that time outranks it, so the backfill never overwrites a newer state, and Stripe's later
//! events keep the mirror current. Objects of customers not linked to a tenant wait in the
//! ledger like any deferred event. The position in each list is kept in the database
//! (`billing.backfill_cursors`): a run that stops goes on where it stopped.

use crate::error::{Error, Result};
use crate::functions::Function;
use crate::webhook::{Outcome, apply_event};
use chrono::{DateTime, Utc};
use pgstrata_core::sql::{self, Built};
use sea_query::{Asterisk, Expr, Func, Query};
use serde_json::{Value, json};
use sqlx::PgConnection;
use std::future::Future;
use std::time::Duration;

pub use crate::ids::BackfillResource;

/// One page of Stripe's list endpoints: `GET /v1/{resource}?limit=100` plus
/// `starting_after={id}` after the first page (for subscriptions, `status=all`, or canceled
/// ones are left out). Implement it with the HTTP client of your choice; return the list
/// object as received (`{"object": "list", "data": [...], "has_more": ...}`).
pub trait StripeList {
    fn page(
        &self,
        resource: BackfillResource,
        starting_after: Option<&str>,
    ) -> impl Future<Output = Result<Value, String>> + Send;
}

/// How to run a backfill.
#[derive(Debug, Clone)]
pub struct BackfillOptions {
    /// Which resources, in this order; every one ([`BackfillResource::ALL`], parents first) by
    /// default.
    pub resources: Vec<BackfillResource>,
    /// Start every list from its beginning instead of where the last run stopped.
    pub restart: bool,
    /// Subtracted from the fetch time: how far this machine's clock may run ahead of Stripe's.
    pub clock_margin: Duration,
}

impl Default for BackfillOptions {
    fn default() -> Self {
        BackfillOptions {
            resources: BackfillResource::ALL.to_vec(),
            restart: false,
            clock_margin: Duration::from_secs(60),
        }
    }
}

/// Progress after each page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub resource: BackfillResource,
    pub pages: i32,
    pub objects: i64,
    pub done: bool,
}

/// What a run did, per outcome of the objects it applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackfillReport {
    pub pages: u64,
    pub applied: u64,
    /// A webhook had already brought a newer state.
    pub stale: u64,
    /// Their customer is not linked to a tenant yet: applied when it is.
    pub deferred: u64,
    pub failed: u64,
    pub rejected: u64,
}

/// The statement that reads where the backfill of `resource` stands (`billing.backfill_position`;
/// no row: not started), forgetting it first when `restart`.
///
/// ```
/// use pgstrata_billing::backfill::{BackfillResource, position_stmt};
/// let (sql, _) = position_stmt(BackfillResource::Prices, false);
/// assert_eq!(sql, r#"SELECT * FROM billing.backfill_position($1, $2) AS "c""#);
/// ```
pub fn position_stmt(resource: BackfillResource, restart: bool) -> Built {
    sql::build(Query::select().column(Asterisk).from_function(
        Func::cust(Function::BackfillPosition).args([Expr::val(resource), Expr::val(restart)]),
        "c",
    ))
}

/// The statement that records a page of `resource` applied (`billing.backfill_advance`): the
/// last object's id, how many objects, and whether it was the last page.
///
/// ```
/// use pgstrata_billing::backfill::{BackfillResource, advance_stmt};
/// let (sql, _) = advance_stmt(BackfillResource::Prices, Some("price_9"), 100, false);
/// assert_eq!(sql, "SELECT billing.backfill_advance($1, $2, $3, $4)");
/// ```
pub fn advance_stmt(resource: BackfillResource, last_id: Option<&str>, objects: i32, done: bool) -> Built {
    sql::build(Query::select().expr(Func::cust(Function::BackfillAdvance).args([
        Expr::val(resource),
        Expr::val(last_id.map(str::to_owned)),
        Expr::val(objects),
        Expr::val(done),
    ])))
}

/// Where a resource's backfill stands.
#[derive(sqlx::FromRow)]
struct Position {
    starting_after: Option<String>,
    pages: i32,
    objects: i64,
    completed: bool,
}

/// Runs the backfill on `conn` (a role that is a member of `pgstrata_billing_sync`), calling
/// `progress` after every page. Each object is its own statement; an error stops the run,
/// whose position is kept up to the last page fully applied.
pub async fn backfill(
    conn: &mut PgConnection,
    list: &impl StripeList,
    options: &BackfillOptions,
    mut progress: impl FnMut(&Progress),
) -> Result<BackfillReport> {
    let mut report = BackfillReport::default();
    for &resource in &options.resources {
        let (kind, event_type) = resource.kind();
        let position: Option<Position> = sql::query_as(position_stmt(resource, options.restart))
            .fetch_optional(&mut *conn)
            .await?;
        let Position {
            starting_after: mut after,
            mut pages,
            mut objects,
            completed: done,
        } = position.unwrap_or(Position {
            starting_after: None,
            pages: 0,
            objects: 0,
            completed: false,
        });
        if done {
            progress(&Progress {
                resource,
                pages,
                objects,
                done,
            });
            continue;
        }
        loop {
            let fetched_at: DateTime<Utc> = Utc::now() - options.clock_margin;
            let page = list
                .page(resource, after.as_deref())
                .await
                .map_err(|reason| Error::Backfill { resource, reason })?;
            let data = page["data"].as_array().ok_or_else(|| Error::Backfill {
                resource,
                reason: "the page has no data list".into(),
            })?;
            let has_more = page["has_more"].as_bool().unwrap_or(false);
            for object in data {
                let id = object["id"].as_str().ok_or_else(|| Error::Backfill {
                    resource,
                    reason: "an object has no id".into(),
                })?;
                let event = json!({
                    "id": format!("bf_{kind}_{id}_{}", fetched_at.timestamp()),
                    "type": event_type,
                    "created": fetched_at.timestamp(),
                    "data": {"object": object},
                });
                let processed = apply_event(&mut *conn, &event).await?;
                match processed.outcome {
                    Outcome::Applied => report.applied += 1,
                    Outcome::Stale | Outcome::Duplicate => report.stale += 1,
                    Outcome::Deferred => report.deferred += 1,
                    Outcome::Failed => report.failed += 1,
                    Outcome::Rejected => report.rejected += 1,
                    Outcome::Ignored => {}
                }
            }
            let last = data.last().and_then(|o| o["id"].as_str()).map(str::to_owned);
            sql::query(advance_stmt(
                resource,
                last.as_deref(),
                data.len() as i32,
                !has_more || last.is_none(),
            ))
            .execute(&mut *conn)
            .await?;
            report.pages += 1;
            pages += 1;
            objects += data.len() as i64;
            let done = !has_more || last.is_none();
            progress(&Progress {
                resource,
                pages,
                objects,
                done,
            });
            if done {
                break;
            }
            after = last;
        }
    }
    Ok(report)
}
