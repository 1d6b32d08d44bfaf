//! Access questions answered from the mirror, as the application role under row-level
//! security: run them on a connection whose transaction has the tenant's context
//! ([`pgstrata_core::begin_tenant`]); another tenant's id reads nothing and answers no.

use crate::error::Result;
use pgstrata_core::TenantId;
use sqlx::PgConnection;
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
    fn grace_secs(&self) -> f64 {
        self.past_due_grace.as_secs_f64()
    }
}

/// Whether the tenant may use `feature` (a Stripe feature lookup key) now: see
/// `billing.tenant_has_feature`.
pub async fn has_feature(
    conn: &mut PgConnection,
    tenant: TenantId,
    feature: &str,
    rules: &AccessRules,
) -> Result<bool> {
    Ok(
        sqlx::query_scalar("SELECT billing.tenant_has_feature($1, $2, $3 * interval '1 second', coalesce($4, now()))")
            .bind(tenant.0)
            .bind(feature)
            .bind(rules.grace_secs())
            .bind(rules.at)
            .fetch_one(conn)
            .await?,
    )
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
    pub status: String,
    pub has_access: bool,
    pub current_period_end: Option<chrono::DateTime<chrono::Utc>>,
    pub cancel_at_period_end: bool,
    pub items: Vec<PlanItem>,
}

type PlanRow = (
    String,
    String,
    bool,
    Option<chrono::DateTime<chrono::Utc>>,
    bool,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

/// The tenant's current plan, or `None` when it has no subscription.
pub async fn current_plan(
    conn: &mut PgConnection,
    tenant: TenantId,
    rules: &AccessRules,
) -> Result<Option<CurrentPlan>> {
    let rows: Vec<PlanRow> = sqlx::query_as(
        "SELECT subscription_id, status, has_access, current_period_end, cancel_at_period_end, \
                item_id, price_id, product_id, product_name, quantity \
           FROM billing.tenant_current_plan($1, $2 * interval '1 second', coalesce($3, now()))",
    )
    .bind(tenant.0)
    .bind(rules.grace_secs())
    .bind(rules.at)
    .fetch_all(conn)
    .await?;
    let mut plan: Option<CurrentPlan> = None;
    for (sub, status, has_access, period_end, cancel, item, price, product, name, quantity) in rows {
        let plan = plan.get_or_insert_with(|| CurrentPlan {
            subscription_id: sub,
            status,
            has_access,
            current_period_end: period_end,
            cancel_at_period_end: cancel,
            items: Vec::new(),
        });
        if let (Some(item_id), Some(price_id)) = (item, price) {
            plan.items.push(PlanItem {
                item_id,
                price_id,
                product_id: product,
                product_name: name,
                quantity,
            });
        }
    }
    Ok(plan)
}
