//! The eventstore module's key types, listed in [`crate::MODULE`]'s `column_types` so the
//! generated rows carry them.

pgstrata_core::uuid_id!(
    /// The id of an event (`eventstore.events.event_id`): chosen by the appender (UUIDv7 by
    /// default), so a retried append of the same event is refused as a duplicate, not stored twice.
    EventId,
    "event id"
);
