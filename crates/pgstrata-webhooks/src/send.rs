//! Sending a message from the business transaction.
//!
//! [`send`] stores the message and queues it for every enabled endpoint of the tenant whose
//! patterns match the event type and whose filter the payload contains, in the caller's
//! transaction: it is delivered if and only if the business write commits. The payload is kept
//! as the exact bytes given, which are the bytes signed and posted.

use crate::endpoints::event_type_valid;
use crate::error::{Error, Result};
use crate::functions::WebhooksFn;
use crate::ids::MessageId;
use pgstrata_core::TenantTx;
use pgstrata_core::sql::{self, Built};
use sea_query::{Expr, Func, Query};

/// The hard ceiling of a payload (`messages_payload_size`); the limit in force is
/// `webhooks.settings.max_payload_bytes` (256 KiB by default), which the database checks.
pub const MAX_PAYLOAD_BYTES: usize = 4 * 1024 * 1024;

/// A message to send: its event type, payload bytes and optional idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub event_type: String,
    pub payload: Vec<u8>,
    pub idempotency_key: Option<String>,
}

impl NewMessage {
    /// A message whose payload is these bytes, as they are (they must be JSON in UTF-8).
    pub fn raw(event_type: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            event_type: event_type.into(),
            payload: payload.into(),
            idempotency_key: None,
        }
    }

    /// A message whose payload is `value` serialised once, here; those bytes are what is signed.
    pub fn json<T: serde::Serialize + ?Sized>(event_type: impl Into<String>, value: &T) -> Result<Self> {
        let payload = serde_json::to_vec(value).map_err(|e| Error::InvalidInput {
            field: "payload",
            reason: e.to_string(),
        })?;
        Ok(Self::raw(event_type, payload))
    }

    /// The caller's key: sending again with it (a retried request) returns the first message.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// The checks the database makes too, first, naming the field.
    pub fn validate(&self) -> Result<()> {
        if !event_type_valid(&self.event_type) {
            return Err(Error::InvalidInput {
                field: "event_type",
                reason: format!(
                    "{:?} is not an event type: dotted segments of letters, digits, _ and -",
                    self.event_type
                ),
            });
        }
        if self.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(Error::TooLarge {
                field: "payload",
                limit: Some(MAX_PAYLOAD_BYTES as i64),
                reason: format!("the payload has {} bytes", self.payload.len()),
            });
        }
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&self.payload) {
            return Err(Error::InvalidInput {
                field: "payload",
                reason: format!("the payload must be JSON in UTF-8: {e}"),
            });
        }
        if let Some(k) = &self.idempotency_key
            && (k.is_empty() || k.chars().count() > 200)
        {
            return Err(Error::InvalidInput {
                field: "idempotency_key",
                reason: "an idempotency key has 1 to 200 characters".to_owned(),
            });
        }
        Ok(())
    }
}

/// Sends `payload` (JSON bytes, kept exactly) as an `event_type` message in the caller's
/// transaction. Returns the message id, the receivers' `webhook-id`.
pub async fn send(tx: &mut TenantTx<'_>, event_type: &str, payload: &[u8]) -> Result<MessageId> {
    send_message(tx, &NewMessage::raw(event_type, payload)).await
}

/// [`send`] of a [`NewMessage`] (with an idempotency key, or a payload serialised by
/// [`NewMessage::json`]).
pub async fn send_message(tx: &mut TenantTx<'_>, message: &NewMessage) -> Result<MessageId> {
    let built = send_stmt(message)?;
    let (id,): (MessageId,) = sql::query_as(built)
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| Error::from(e).limit_of("payload"))?;
    Ok(id)
}

/// The SQL of [`send_message`].
///
/// ```
/// use pgstrata_webhooks::send::{send_stmt, NewMessage};
/// let (sql, _) = send_stmt(&NewMessage::raw("invoice.paid", br#"{"id": 1}"#.to_vec())).unwrap();
/// assert_eq!(sql, "SELECT webhooks.send($1, $2, $3)");
/// ```
pub fn send_stmt(message: &NewMessage) -> Result<Built> {
    message.validate()?;
    Ok(sql::build(
        Query::select().expr(
            Func::cust(WebhooksFn::Send)
                .arg(Expr::val(message.event_type.clone()))
                .arg(Expr::val(message.payload.clone()))
                .arg(Expr::val(message.idempotency_key.clone())),
        ),
    ))
}
