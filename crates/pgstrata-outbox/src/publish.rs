//! Publishing: a message written in the business transaction, so it exists exactly when the
//! business change it announces committed.

use crate::error::{Error, Result};
use crate::functions::OutboxFn;
use crate::ids::MessageId;
use pgstrata_core::TenantTx;
use pgstrata_core::sql::{self, Built};
use sea_query::{Expr, Func, Query};

/// The longest `aggregate_type`, `aggregate_id` and `event_type`, in characters (Debezium's
/// `varchar(255)`).
pub const MAX_NAME_CHARS: usize = 255;

/// The largest payload [`publish`] sends, as serialized JSON. The table's own limit is on the
/// stored (binary) size, 256 KiB, which a payload under this always meets.
pub const MAX_PAYLOAD_BYTES: usize = 128 * 1024;

/// Checks a message's fields before any SQL, as the table's constraints would.
fn validate(aggregate_type: &str, aggregate_id: &str, event_type: &str, payload: &serde_json::Value) -> Result<()> {
    for (field, value) in [
        ("aggregate_type", aggregate_type),
        ("aggregate_id", aggregate_id),
        ("event_type", event_type),
    ] {
        let chars = value.chars().count();
        if chars == 0 || chars > MAX_NAME_CHARS {
            return Err(Error::InvalidMessage {
                field,
                reason: format!("must be 1 to {MAX_NAME_CHARS} characters, got {chars}"),
            });
        }
        if value.chars().any(char::is_control) {
            return Err(Error::InvalidMessage {
                field,
                reason: "must not contain control characters".into(),
            });
        }
    }
    let size = serde_json::to_vec(payload).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > MAX_PAYLOAD_BYTES {
        return Err(Error::InvalidMessage {
            field: "payload",
            reason: format!("{size} bytes of JSON, more than {MAX_PAYLOAD_BYTES}"),
        });
    }
    Ok(())
}

/// The statement of [`publish`]: `outbox.publish`, after the checks of the fields.
///
/// ```
/// use pgstrata_outbox::publish::publish_stmt;
/// let (sql, _) = publish_stmt("order", "o-1", "OrderPlaced", &serde_json::json!({"total": 12})).unwrap();
/// assert_eq!(sql, "SELECT outbox.publish($1, $2, $3, $4)");
/// assert!(publish_stmt("", "o-1", "OrderPlaced", &serde_json::json!({})).is_err());
/// ```
pub fn publish_stmt(
    aggregate_type: &str,
    aggregate_id: &str,
    event_type: &str,
    payload: &serde_json::Value,
) -> Result<Built> {
    validate(aggregate_type, aggregate_id, event_type, payload)?;
    Ok(sql::build(Query::select().expr(Func::cust(OutboxFn::Publish).args([
        Expr::val(aggregate_type.to_owned()),
        Expr::val(aggregate_id.to_owned()),
        Expr::val(event_type.to_owned()),
        Expr::val(payload.clone()),
    ]))))
}

/// Publishes a message of the transaction's tenant, in that transaction: relays see it when
/// (and only if) the transaction commits. Returns its id.
///
/// Messages of one aggregate (`aggregate_type`, `aggregate_id`) are delivered in the order
/// their transactions committed. To keep that true, the database refuses a transaction that
/// is older than one that already published for the same aggregate and committed, with
/// [`pgstrata_core::DbError::Retryable`] (40001): run the whole transaction again. Bad fields
/// are [`Error::InvalidMessage`], with nothing written; no tenant in context (or a suspended
/// one) is `Forbidden`.
pub async fn publish(
    tx: &mut TenantTx<'_>,
    aggregate_type: &str,
    aggregate_id: &str,
    event_type: &str,
    payload: &serde_json::Value,
) -> Result<MessageId> {
    let (id,) = sql::query_as(publish_stmt(aggregate_type, aggregate_id, event_type, payload)?)
        .fetch_one(&mut **tx)
        .await?;
    Ok(id)
}
