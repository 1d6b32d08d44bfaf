//! The webhooks module's key types and states, listed in [`crate::MODULE`]'s `column_types` so
//! the generated rows carry them.

pgstrata_core::uuid_id!(
    /// An endpoint (`webhooks.endpoints.id`).
    EndpointId,
    "endpoint id"
);

pgstrata_core::uuid_id!(
    /// A message (`webhooks.messages.id`): the `webhook-id` header, the same at every attempt
    /// and replay, so a receiver deduplicates on it.
    MessageId,
    "message id"
);

pgstrata_core::uuid_id!(
    /// A signing key of an endpoint (`webhooks.secrets.id`).
    SecretId,
    "secret id"
);

/// A delivery: one message to one endpoint (`webhooks.deliveries.id`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize, sqlx::Type,
)]
#[sqlx(transparent)]
#[serde(transparent)]
pub struct DeliveryId(pub i64);

/// An attempt of a delivery (`webhooks.attempts.id`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize, sqlx::Type,
)]
#[sqlx(transparent)]
#[serde(transparent)]
pub struct AttemptId(pub i64);

impl std::fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Display for AttemptId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<DeliveryId> for sea_query::Value {
    fn from(id: DeliveryId) -> Self {
        id.0.into()
    }
}

impl From<AttemptId> for sea_query::Value {
    fn from(id: AttemptId) -> Self {
        id.0.into()
    }
}

pgstrata_core::text_enum!(
    /// Where a delivery is (`webhooks.deliveries.state`).
    DeliveryState, "delivery state" {
        /// Waiting for its next attempt.
        Pending = "pending",
        /// Claimed by a dispatcher, under a lease.
        Running = "running",
        /// The receiver answered 2xx.
        Succeeded = "succeeded",
        /// Retries exhausted, a manual attempt failed, or the endpoint was disabled.
        Failed = "failed",
    }
);

pgstrata_core::text_enum!(
    /// The outcome of an attempt (`webhooks.attempts.state`).
    AttemptState, "attempt state" {
        /// Posted, no outcome reported yet.
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        /// The dispatcher's lease expired before it reported: the receiver may have got it.
        Lost = "lost",
    }
);

pgstrata_core::text_enum!(
    /// Why an attempt was made (`webhooks.attempts.trigger`).
    AttemptTrigger, "attempt trigger" {
        /// The first attempt or an automatic retry.
        Scheduled = "scheduled",
        /// A replay.
        Manual = "manual",
    }
);

pgstrata_core::text_enum!(
    /// What a notice tells the tenant (`webhooks.notices.kind`).
    NoticeKind, "notice kind" {
        /// An endpoint was disabled by the dispatcher (410, or failing for too long).
        EndpointDisabled = "endpoint_disabled",
    }
);
