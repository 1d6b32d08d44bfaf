//! The outbox's keys, listed in [`crate::MODULE`]'s `column_types` so the generated rows carry
//! them.

use serde::{Deserialize, Serialize};

/// The id of a message: `outbox.messages.id`, a `bigint` identity unique across tenants, the key
/// a sink deduplicates redeliveries by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
#[sqlx(transparent)]
#[serde(transparent)]
pub struct MessageId(pub i64);

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<i64> for MessageId {
    fn from(id: i64) -> Self {
        Self(id)
    }
}

impl From<MessageId> for sea_query::Value {
    fn from(id: MessageId) -> Self {
        id.0.into()
    }
}
