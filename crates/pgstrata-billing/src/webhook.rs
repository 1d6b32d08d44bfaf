//! Receiving Stripe events: verify, then claim and apply in one statement.

use crate::error::{MalformedEvent, Result};
use crate::signature::Verifier;
use pgstrata_core::TenantId;
use serde_json::Value;
use sqlx::PgConnection;
use std::future::Future;
use uuid::Uuid;

/// What happened to one delivered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The event's object state is now mirrored.
    Applied,
    /// The mirror already holds a greater state of the object (a late event); recorded, no change.
    Stale,
    /// The event id was processed before: nothing done.
    Duplicate,
    /// A type the mirror does not handle; recorded in the ledger.
    Ignored,
    /// The event's customer is not linked to a tenant yet; kept in the ledger and applied when
    /// the customer is linked (by its or a checkout session's metadata, or by
    /// [`link_customer`](crate::link_customer)).
    Deferred,
    /// Applying raised an error, recorded on the ledger row; delivering the event again (or
    /// `billing.retry_failed()`) retries it. Answer Stripe with a 5xx so that it redelivers.
    Failed,
    /// A state the mirror does not take (a period ending before it starts, a live subscription
    /// that has ended, an object naming no customer): recorded with the reason in `error`,
    /// never applied. Delivering it again changes nothing, so answer Stripe with a 2xx.
    Rejected,
}

impl Outcome {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "applied" => Outcome::Applied,
            "stale" => Outcome::Stale,
            "duplicate" => Outcome::Duplicate,
            "ignored" => Outcome::Ignored,
            "deferred" => Outcome::Deferred,
            "failed" => Outcome::Failed,
            "rejected" => Outcome::Rejected,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Stale => "stale",
            Outcome::Duplicate => "duplicate",
            Outcome::Ignored => "ignored",
            Outcome::Deferred => "deferred",
            Outcome::Failed => "failed",
            Outcome::Rejected => "rejected",
        }
    }

    /// Whether Stripe should be told to deliver the event again (HTTP 5xx).
    pub fn should_retry(self) -> bool {
        self == Outcome::Failed
    }
}

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

#[derive(sqlx::FromRow)]
struct Row {
    outcome: String,
    tie: bool,
    incomplete: bool,
    object_type: Option<String>,
    object_id: Option<String>,
    tenant_id: Option<Uuid>,
    error: Option<String>,
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
    let row: Row = sqlx::query_as(PROCESS_SQL).bind(text).fetch_one(conn).await?;
    processed(ids, row)
}

const PROCESS_SQL: &str =
    "SELECT outcome, tie, incomplete, object_type, object_id, tenant_id, error FROM billing.process_event($1::jsonb)";

/// Applies an event whose authenticity is established otherwise (fetched from Stripe's API,
/// replayed from an archive, or verified by [`process_webhook`]).
pub async fn apply_event(conn: &mut PgConnection, event: &Value) -> Result<Processed> {
    let ids = check_event(event)?;
    // Bound as text like process_webhook's body: both share one prepared statement per
    // connection, whose parameter type is set by its first use.
    let text = serde_json::to_string(event).map_err(|e| MalformedEvent(format!("event is not serializable: {e}")))?;
    let row: Row = sqlx::query_as(PROCESS_SQL).bind(text).fetch_one(conn).await?;
    processed(ids, row)
}

fn processed((event_id, event_type): (String, String), row: Row) -> Result<Processed> {
    let outcome = Outcome::parse(&row.outcome).ok_or_else(|| {
        MalformedEvent(format!(
            "unexpected outcome {:?} from billing.process_event",
            row.outcome
        ))
    })?;
    Ok(Processed {
        event_id,
        event_type,
        outcome,
        tie: row.tie,
        incomplete: row.incomplete,
        object_kind: row.object_type,
        object_id: row.object_id,
        tenant_id: row.tenant_id.map(TenantId),
        error: row.error,
    })
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
    let fetched = hook.refetch(kind, id).await.map_err(|reason| crate::Error::Refetch {
        kind: kind.clone(),
        id: id.clone(),
        reason,
    })?;
    match fetched {
        Some(object) => apply_refetched(conn, kind, &object).await.map(Some),
        None => Ok(None),
    }
}

/// Applies an object fetched from Stripe's API as its current state.
pub async fn apply_refetched(conn: &mut PgConnection, kind: &str, object: &Value) -> Result<Outcome> {
    let outcome: String = sqlx::query_scalar("SELECT outcome FROM billing.apply_refetched($1, $2)")
        .bind(kind)
        .bind(sqlx::types::Json(object))
        .fetch_one(conn)
        .await?;
    Outcome::parse(&outcome)
        .ok_or_else(|| MalformedEvent(format!("unexpected outcome {outcome:?} from billing.apply_refetched")).into())
}

/// Links a Stripe customer to `tenant` and applies the customer's deferred events; returns how
/// many. For the server code that has just created the customer through Stripe's API on behalf
/// of `tenant`: the connection's role must be a member of `pgstrata_billing_sync` (the
/// application's request path cannot link; see `billing.link_customer(text, uuid)`). Prefer
/// setting `metadata.tenant_id` when creating the customer: the webhook then links it.
///
/// Errors: a customer linked to another tenant is [`DbError::Forbidden`] (the message does not
/// name that tenant); an unknown or deleted tenant is [`DbError::NotFound`]; an empty or
/// overlong customer id is [`DbError::InvalidInput`]. Linking again to the same tenant is not
/// an error.
///
/// [`DbError::Forbidden`]: pgstrata_core::DbError::Forbidden
/// [`DbError::NotFound`]: pgstrata_core::DbError::NotFound
/// [`DbError::InvalidInput`]: pgstrata_core::DbError::InvalidInput
pub async fn link_customer(conn: &mut PgConnection, customer_id: &str, tenant: TenantId) -> Result<i32> {
    Ok(sqlx::query_scalar("SELECT billing.link_customer($1, $2)")
        .bind(customer_id)
        .bind(tenant.0)
        .fetch_one(conn)
        .await?)
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
