//! Receiving Stripe events: verify, then claim and apply in one statement.

use crate::error::{About, Error, MalformedEvent, Result};
use crate::functions::Function;
use crate::signature::Verifier;
use pgstrata_core::TenantId;
use pgstrata_core::sql::{self, Built};
use sea_query::{Asterisk, Expr, Func, Query};
use serde_json::Value;
use sqlx::PgConnection;
use std::future::Future;

pub use crate::ids::Outcome;

/// The result of processing one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Processed {
    pub event_id: String,
    pub event_type: String,
    pub outcome: Outcome,
    /// The event met a mirrored state of the same second; the tie rule decided. See
    /// [`refetch_on_tie`] to ask Stripe instead.
    pub tie: bool,
    /// The object carried a list Stripe cut short (`has_more` on a subscription's items or an
    /// entitlement summary): the listed rows were applied and none removed. [`refetch_on_tie`]
    /// fetches the whole object.
    pub incomplete: bool,
    /// `customer`, `product`, `price`, `subscription`, `invoice` or `entitlement_summary`;
    /// `None` for an ignored type.
    pub object_kind: Option<String>,
    pub object_id: Option<String>,
    pub tenant_id: Option<TenantId>,
    /// Why applying failed ([`Outcome::Failed`]) or was refused ([`Outcome::Rejected`]).
    pub error: Option<String>,
}

/// A row of `billing.process_event`.
#[derive(sqlx::FromRow)]
struct Row {
    outcome: Outcome,
    tie: bool,
    incomplete: bool,
    object_type: Option<String>,
    object_id: Option<String>,
    tenant_id: Option<TenantId>,
    error: Option<String>,
}

/// The statement of [`process_webhook`]: `billing.process_event` of the body as received.
/// The body is bound as text and cast by the server, so the bytes Stripe signed are the bytes
/// stored (no serializing again).
///
/// ```
/// let (sql, _) = pgstrata_billing::webhook::process_webhook_stmt(r#"{"id": "evt_1"}"#);
/// assert_eq!(sql, r#"SELECT * FROM billing.process_event(CAST($1 AS jsonb)) AS "e""#);
/// ```
pub fn process_webhook_stmt(body: &str) -> Built {
    sql::build(Query::select().column(Asterisk).from_function(
        Func::cust(Function::ProcessEvent).arg(Func::cast_as(body, "jsonb")),
        "e",
    ))
}

/// Verifies a webhook delivery and applies its event: the raw body exactly as received and
/// the `Stripe-Signature` header. A bad signature or a malformed body is an error and writes
/// nothing. Runs one statement on `conn` (join a transaction of yours by passing it); the
/// connection's role must be a member of `pgstrata_billing_sync`.
pub async fn process_webhook(
    conn: &mut PgConnection,
    verifier: &Verifier,
    body: &[u8],
    signature_header: &str,
) -> Result<Processed> {
    verifier.verify(body, signature_header)?;
    let event: Value = serde_json::from_slice(body).map_err(|e| MalformedEvent(format!("body is not JSON: {e}")))?;
    let ids = check_event(&event)?;
    // The body is valid JSON, hence UTF-8: bind it as received rather than serializing again.
    let text = std::str::from_utf8(body).map_err(|e| MalformedEvent(format!("body is not UTF-8: {e}")))?;
    let row: Row = sql::query_as(process_webhook_stmt(text)).fetch_one(conn).await?;
    Ok(processed(ids, row))
}

/// The statement of [`apply_event`]: [`process_webhook_stmt`] of the event's text, so both
/// share one prepared statement per connection. A value that is not a Stripe event (no `id`,
/// `type`, `created` or `data.object`) is [`Error::Malformed`].
///
/// ```
/// use serde_json::json;
/// use pgstrata_billing::webhook::apply_event_stmt;
/// let event = json!({"id": "evt_1", "type": "product.created", "created": 1, "data": {"object": {}}});
/// let (sql, _) = apply_event_stmt(&event).unwrap();
/// assert_eq!(sql, r#"SELECT * FROM billing.process_event(CAST($1 AS jsonb)) AS "e""#);
/// assert!(apply_event_stmt(&json!({"id": "evt_1"})).is_err());
/// ```
pub fn apply_event_stmt(event: &Value) -> Result<Built> {
    check_event(event)?;
    let text = serde_json::to_string(event).map_err(|e| MalformedEvent(format!("event is not serializable: {e}")))?;
    Ok(process_webhook_stmt(&text))
}

/// Applies an event whose authenticity is established otherwise (fetched from Stripe's API,
/// replayed from an archive, or verified by [`process_webhook`]).
pub async fn apply_event(conn: &mut PgConnection, event: &Value) -> Result<Processed> {
    let ids = check_event(event)?;
    let row: Row = sql::query_as(apply_event_stmt(event)?).fetch_one(conn).await?;
    Ok(processed(ids, row))
}

fn processed((event_id, event_type): (String, String), row: Row) -> Processed {
    // One event per Stripe event applied: failures and refusals at warn, so they are seen.
    match row.outcome {
        Outcome::Failed | Outcome::Rejected => tracing::warn!(
            event_id = %event_id, event_type = %event_type, outcome = %row.outcome,
            error = row.error.as_deref().unwrap_or_default(), "stripe event not applied"
        ),
        _ => tracing::info!(
            event_id = %event_id, event_type = %event_type, outcome = %row.outcome,
            tenant_id = row.tenant_id.map(tracing::field::display), "stripe event"
        ),
    }
    Processed {
        event_id,
        event_type,
        outcome: row.outcome,
        tie: row.tie,
        incomplete: row.incomplete,
        object_kind: row.object_type,
        object_id: row.object_id,
        tenant_id: row.tenant_id,
        error: row.error,
    }
}

/// Checks the fields the ledger needs, naming the first one that is wrong.
fn check_event(event: &Value) -> Result<(String, String), MalformedEvent> {
    let obj = event
        .as_object()
        .ok_or_else(|| MalformedEvent("the body is not a JSON object".into()))?;
    let id = obj
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty() && id.len() <= 255)
        .ok_or_else(|| MalformedEvent("\"id\" must be a string of 1 to 255 characters".into()))?;
    let ty = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| MalformedEvent(format!("event {id}: \"type\" must be a string")))?;
    if obj.get("created").and_then(Value::as_i64).is_none() {
        return Err(MalformedEvent(format!(
            "event {id}: \"created\" must be a Unix timestamp"
        )));
    }
    if !obj
        .get("data")
        .and_then(|d| d.get("object"))
        .is_some_and(Value::is_object)
    {
        return Err(MalformedEvent(format!("event {id}: \"data.object\" must be an object")));
    }
    Ok((id.to_owned(), ty.to_owned()))
}

/// Fetches an object's current state from Stripe, for [`refetch_on_tie`]. Implement it with
/// the Stripe client of your choice (e.g. `GET /v1/subscriptions/{id}` with every page of its
/// items). For `entitlement_summary` the id is the customer's: return
/// `{"customer": id, "entitlements": {"data": [...every page...], "has_more": false}}`.
pub trait Refetch {
    /// The object as Stripe has it now, or `None` to keep what the mirror has.
    fn refetch(&self, kind: &str, id: &str) -> impl Future<Output = Result<Option<Value>, String>> + Send;
}

/// When `processed` met a same-second tie or was incomplete, asks `hook` for the object's
/// current state and applies it (stamped with the current time, so it outranks every event
/// created before). Returns the outcome of that apply, or `None` when there was nothing to
/// fetch or nothing was fetched.
/// Call it after the event's transaction has committed: it makes a network request.
pub async fn refetch_on_tie(
    conn: &mut PgConnection,
    processed: &Processed,
    hook: &impl Refetch,
) -> Result<Option<Outcome>> {
    let (true, Some(kind), Some(id)) = (
        processed.tie || processed.incomplete,
        &processed.object_kind,
        &processed.object_id,
    ) else {
        return Ok(None);
    };
    // An entitlement summary is fetched by listing the customer's entitlements: worth it for
    // a cut-short list, not for a tie (whose rule already chose).
    if kind == "entitlement_summary" && !processed.incomplete {
        return Ok(None);
    }
    let fetched = hook.refetch(kind, id).await.map_err(|reason| Error::Refetch {
        kind: kind.clone(),
        id: id.clone(),
        reason,
    })?;
    match fetched {
        Some(object) => apply_refetched(conn, kind, &object).await.map(Some),
        None => Ok(None),
    }
}

/// The statement of [`apply_refetched`]: `billing.apply_refetched(kind, object)`.
///
/// ```
/// use serde_json::json;
/// let (sql, _) = pgstrata_billing::webhook::apply_refetched_stmt("subscription", &json!({"id": "sub_1"}));
/// assert_eq!(sql, r#"SELECT "outcome" FROM billing.apply_refetched($1, $2) AS "r""#);
/// ```
pub fn apply_refetched_stmt(kind: &str, object: &Value) -> Built {
    sql::build(Query::select().column("outcome").from_function(
        Func::cust(Function::ApplyRefetched).args([Expr::val(kind), Expr::val(object.clone())]),
        "r",
    ))
}

/// Applies an object fetched from Stripe's API as its current state.
pub async fn apply_refetched(conn: &mut PgConnection, kind: &str, object: &Value) -> Result<Outcome> {
    let (outcome,): (Outcome,) = sql::query_as(apply_refetched_stmt(kind, object))
        .fetch_one(conn)
        .await?;
    Ok(outcome)
}

/// The statement of [`link_customer`]: `billing.link_customer(customer, tenant)`. An empty or
/// overlong customer id is [`Error::InvalidField`].
///
/// ```
/// use pgstrata_billing::webhook::link_customer_stmt;
/// let (sql, _) = link_customer_stmt("cus_1", pgstrata_core::TenantId::new()).unwrap();
/// assert_eq!(sql, "SELECT billing.link_customer($1, $2)");
/// assert!(link_customer_stmt("", pgstrata_core::TenantId::new()).is_err());
/// ```
pub fn link_customer_stmt(customer_id: &str, tenant: TenantId) -> Result<Built> {
    if customer_id.is_empty() || customer_id.chars().count() > 255 {
        return Err(Error::InvalidField {
            field: "customer id",
            reason: format!(
                "a Stripe customer id has 1 to 255 characters, got {}",
                customer_id.chars().count()
            ),
        });
    }
    Ok(sql::build(Query::select().expr(
        Func::cust(Function::LinkCustomer).args([Expr::val(customer_id), Expr::val(tenant)]),
    )))
}

/// Links a Stripe customer to `tenant` and applies the customer's deferred events; returns how
/// many. For the server code that has just created the customer through Stripe's API on behalf
/// of `tenant`: the connection's role must be a member of `pgstrata_billing_sync` (the
/// application's request path cannot link; see `billing.link_customer(text, uuid)`). Prefer
/// setting `metadata.tenant_id` when creating the customer: the webhook then links it.
///
/// Errors: a customer linked to another tenant is [`Error::LinkedElsewhere`] (which does not
/// name that tenant); an unknown or deleted tenant is [`Error::NotFound`]; an empty or overlong
/// customer id is [`Error::InvalidField`]. Linking again to the same tenant is not an error.
pub async fn link_customer(conn: &mut PgConnection, customer_id: &str, tenant: TenantId) -> Result<i32> {
    let (applied,): (i32,) = sql::query_as(link_customer_stmt(customer_id, tenant)?)
        .fetch_one(conn)
        .await
        .map_err(|e| {
            Error::from_db(
                e.into(),
                About::Link {
                    customer: customer_id,
                    tenant,
                },
            )
        })?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn malformed_events_name_the_field() {
        let cases = [
            (json!([1]), "not a JSON object"),
            (json!({"type": "x"}), "\"id\""),
            (json!({"id": "evt_1", "created": 1}), "\"type\""),
            (
                json!({"id": "evt_1", "type": "x", "created": "yesterday"}),
                "\"created\"",
            ),
            (
                json!({"id": "evt_1", "type": "x", "created": 1, "data": {}}),
                "\"data.object\"",
            ),
        ];
        for (event, expected) in cases {
            let err = check_event(&event).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(expected), "{event}: {err}");
        }
        let ok = json!({"id": "evt_1", "type": "x", "created": 1, "data": {"object": {}}});
        assert_eq!(check_event(&ok).ok(), Some(("evt_1".into(), "x".into())));
    }
}
