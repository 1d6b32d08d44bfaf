//! Access questions answered from the mirror, as the application role under row-level
//! security, for the tenant of the transaction ([`pgstrata_core::begin_tenant`]): the tenant
//! is read from the [`TenantTx`], the same one the policies read.

use crate::error::{Error, Result};
use crate::functions::{Function, interval};
use crate::ids::SubscriptionStatus;
use pgstrata_core::sql::{self, Built};
use pgstrata_core::{TenantId, TenantTx};
use sea_query::{Asterisk, Expr, Func, Query};
use std::time::Duration;

/// The configurable part of the status-to-access rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessRules {
    /// How long a `past_due` subscription keeps access after its unpaid period began.
    pub past_due_grace: Duration,
    /// The instant to answer for; `None` is the database's `now()`.
    pub at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Default for AccessRules {
    fn default() -> Self {
        Self {
            past_due_grace: Duration::from_secs(3 * 24 * 3600),
            at: None,
        }
    }
}

impl AccessRules {
    /// `COALESCE($at, CURRENT_TIMESTAMP)`: the instant to answer for.
    fn at(&self) -> Expr {
        Func::coalesce([Expr::val(self.at), Expr::current_timestamp()]).into()
    }
}

/// A feature lookup key is not empty (an empty one never matches: a caller's bug).
fn check_feature(feature: &str) -> Result<()> {
    if feature.is_empty() {
        return Err(Error::InvalidField {
            field: "feature",
            reason: "a feature lookup key is not empty".into(),
        });
    }
    Ok(())
}

/// The statement of [`has_feature`]: `billing.tenant_has_feature` for `tenant`.
///
/// ```
/// use pgstrata_billing::access::{AccessRules, has_feature_stmt};
/// let (sql, values) = has_feature_stmt(pgstrata_core::TenantId::new(), "seats", &AccessRules::default()).unwrap();
/// assert_eq!(
///     sql,
///     "SELECT billing.tenant_has_feature($1, $2, CAST($3 AS interval), COALESCE($4, CURRENT_TIMESTAMP))"
/// );
/// assert_eq!(values.0.0.len(), 4);
/// assert!(has_feature_stmt(pgstrata_core::TenantId::new(), "", &AccessRules::default()).is_err());
/// ```
pub fn has_feature_stmt(tenant: TenantId, feature: &str, rules: &AccessRules) -> Result<Built> {
    check_feature(feature)?;
    Ok(sql::build(Query::select().expr(
        Func::cust(Function::TenantHasFeature).args([
            Expr::val(tenant),
            Expr::val(feature),
            interval(rules.past_due_grace).into(),
            rules.at(),
        ]),
    )))
}

/// Whether the transaction's tenant may use `feature` (a Stripe feature lookup key) now: an
/// active entitlement, or a product feature of a subscription that has access (see
/// `billing.tenant_has_feature`). An empty key is [`Error::InvalidField`].
pub async fn has_feature(tx: &mut TenantTx<'_>, feature: &str, rules: &AccessRules) -> Result<bool> {
    let (yes,): (bool,) = sql::query_as(has_feature_stmt(tx.tenant_id(), feature, rules)?)
        .fetch_one(&mut **tx)
        .await?;
    Ok(yes)
}

/// One item of the current plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanItem {
    pub item_id: String,
    pub price_id: String,
    pub product_id: Option<String>,
    pub product_name: Option<String>,
    pub quantity: Option<i64>,
}

/// The tenant's current subscription: the one with access, else the latest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentPlan {
    pub subscription_id: String,
    pub status: SubscriptionStatus,
    pub has_access: bool,
    pub current_period_end: Option<chrono::DateTime<chrono::Utc>>,
    pub cancel_at_period_end: bool,
    pub items: Vec<PlanItem>,
}

/// A row of `billing.tenant_current_plan`: the subscription, and one of its items.
#[derive(sqlx::FromRow)]
struct PlanRow {
    subscription_id: String,
    status: SubscriptionStatus,
    has_access: bool,
    current_period_end: Option<chrono::DateTime<chrono::Utc>>,
    cancel_at_period_end: bool,
    item_id: Option<String>,
    price_id: Option<String>,
    product_id: Option<String>,
    product_name: Option<String>,
    quantity: Option<i64>,
}

/// The statement of [`current_plan`]: the rows of `billing.tenant_current_plan` for `tenant`,
/// one per item.
///
/// ```
/// use pgstrata_billing::access::{AccessRules, current_plan_stmt};
/// let (sql, _) = current_plan_stmt(pgstrata_core::TenantId::new(), &AccessRules::default());
/// assert_eq!(
///     sql,
///     r#"SELECT * FROM billing.tenant_current_plan($1, CAST($2 AS interval), COALESCE($3, CURRENT_TIMESTAMP)) AS "p""#
/// );
/// ```
pub fn current_plan_stmt(tenant: TenantId, rules: &AccessRules) -> Built {
    sql::build(Query::select().column(Asterisk).from_function(
        Func::cust(Function::TenantCurrentPlan).args([
            Expr::val(tenant),
            interval(rules.past_due_grace).into(),
            rules.at(),
        ]),
        "p",
    ))
}

/// The transaction's tenant's current plan, or `None` when it has no subscription.
pub async fn current_plan(tx: &mut TenantTx<'_>, rules: &AccessRules) -> Result<Option<CurrentPlan>> {
    let rows: Vec<PlanRow> = sql::query_as(current_plan_stmt(tx.tenant_id(), rules))
        .fetch_all(&mut **tx)
        .await?;
    let mut plan: Option<CurrentPlan> = None;
    for row in rows {
        let plan = plan.get_or_insert_with(|| CurrentPlan {
            subscription_id: row.subscription_id,
            status: row.status,
            has_access: row.has_access,
            current_period_end: row.current_period_end,
            cancel_at_period_end: row.cancel_at_period_end,
            items: Vec::new(),
        });
        if let (Some(item_id), Some(price_id)) = (row.item_id, row.price_id) {
            plan.items.push(PlanItem {
                item_id,
                price_id,
                product_id: row.product_id,
                product_name: row.product_name,
                quantity: row.quantity,
            });
        }
    }
    Ok(plan)
}
