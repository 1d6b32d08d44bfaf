//! Appending events to a stream at the version the appender read.
//!
//! [`append`] locks the stream's row, compares its version with the [`ExpectedVersion`] and
//! inserts the events at the next versions, all in `eventstore.append` (SECURITY DEFINER), so
//! a client that skips this crate gets the same rule. Concurrent appenders to one stream queue
//! on the row lock: the first wins, every other one is refused with
//! [`Error::WrongExpectedVersion`](crate::Error::WrongExpectedVersion) carrying the version it
//! now has, and the stream stays gapless.

use crate::error::{Error, Result};
use crate::functions::EventstoreFn;
use crate::generated::Events;
use crate::ids::EventId;
use pgstrata_core::TenantTx;
use pgstrata_core::sql::{self, Built, Rows};
use sea_query::{Expr, Func, Query};
use uuid::Uuid;

/// Most events one append takes (the stream stays locked while they are inserted).
pub const MAX_EVENTS_PER_APPEND: usize = 1000;
/// Largest serialized `data` of one event, in bytes (the table stores at most 256 KiB).
pub const MAX_DATA_BYTES: usize = 128 * 1024;
/// Largest serialized `metadata` of one event, in bytes.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;

/// What the appender knows of the stream it appends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ExpectedVersion {
    /// The stream has no event yet (a new aggregate).
    NoStream,
    /// The stream is at exactly this version (the number of events read from it).
    Exact(i64),
    /// Whatever the version: imports and repairs, as `pgstrata_operator` only. The request path
    /// is refused (`eventstore.append_any` is not granted to `pgstrata_app`).
    Any,
}

impl ExpectedVersion {
    /// The version the SQL function compares, `None` for [`ExpectedVersion::Any`].
    fn as_sql(self) -> Option<i64> {
        match self {
            ExpectedVersion::NoStream => Some(0),
            ExpectedVersion::Exact(v) => Some(v),
            ExpectedVersion::Any => None,
        }
    }
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(v) => write!(f, "{v}"),
            ExpectedVersion::Any => f.write_str("any"),
        }
    }
}

/// An event to append: its type and data, optionally its id, metadata and the event that
/// caused it. The actor and the request id come from the transaction's context.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NewEvent {
    pub event_id: EventId,
    #[serde(rename = "type")]
    pub event_type: String,
    pub data: serde_json::Value,
    pub metadata: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
}

impl NewEvent {
    /// An event of `event_type` with `data` (a JSON object) and a fresh UUIDv7 id.
    pub fn new(event_type: impl Into<String>, data: serde_json::Value) -> Self {
        Self {
            event_id: EventId::new(),
            event_type: event_type.into(),
            data,
            metadata: serde_json::json!({}),
            causation_id: None,
            correlation_id: None,
        }
    }

    /// The id to store (a retry of the same append then stores nothing twice).
    pub fn id(mut self, event_id: EventId) -> Self {
        self.event_id = event_id;
        self
    }

    /// Free-form metadata (a JSON object): schema version, client, ...
    pub fn metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = metadata;
        self
    }

    /// The event or command that caused this event.
    pub fn caused_by(mut self, causation_id: Uuid) -> Self {
        self.causation_id = Some(causation_id);
        self
    }

    /// The conversation (workflow, saga, request chain) this event belongs to.
    pub fn correlated(mut self, correlation_id: Uuid) -> Self {
        self.correlation_id = Some(correlation_id);
        self
    }

    /// The checks the table makes, before any SQL, so a bad event is named by its position.
    fn check(&self, index: usize) -> Result<()> {
        let bad = |field: &'static str, reason: String| Error::InvalidEvent {
            index: Some(index),
            field,
            reason,
        };
        let t = &self.event_type;
        if t.is_empty() || t.chars().count() > 200 || t.chars().any(char::is_control) {
            return Err(bad(
                "type",
                format!("{t:?} is not 1 to 200 characters without control characters"),
            ));
        }
        for (field, value, max) in [
            ("data", &self.data, MAX_DATA_BYTES),
            ("metadata", &self.metadata, MAX_METADATA_BYTES),
        ] {
            if !value.is_object() {
                return Err(bad(field, "must be a JSON object".into()));
            }
            let size = value.to_string().len();
            if size > max {
                return Err(bad(field, format!("{size} bytes serialized, at most {max}")));
            }
        }
        Ok(())
    }
}

/// Checks a stream name as `eventstore.append` does: 1 to 200 characters, no whitespace or
/// control characters. The category is the part before the first `-` (`order-42` is in `order`).
pub fn check_stream(stream: &str) -> Result<()> {
    if stream.is_empty() || stream.chars().count() > 200 || stream.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(Error::InvalidField {
            field: "stream",
            reason: format!("{stream:?} is not 1 to 200 characters without whitespace or control characters"),
        });
    }
    Ok(())
}

/// One appended event: its id, its version in the stream and its global position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Appended {
    pub event_id: EventId,
    pub version: i64,
    pub position: i64,
}

/// Appends `events` to `stream` in the transaction's tenant if the stream is at `expected`.
/// Returns the stored events in order; the last one's version is the stream's new version.
/// A stale `expected` is [`Error::WrongExpectedVersion`] with the current version, and nothing
/// is written (the transaction is aborted: roll it back, read again, decide again).
pub async fn append(
    tx: &mut TenantTx<'_>,
    stream: &str,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> Result<Vec<Appended>> {
    let built = append_stmt(stream, expected, events)?;
    sql::query_as(built)
        .fetch_all(&mut **tx)
        .await
        .map_err(|e| Error::from(e).for_append(stream, expected))
}

/// The SQL of [`append`]: `eventstore.append`, or `eventstore.append_any` for
/// [`ExpectedVersion::Any`]. Checks every argument first.
///
/// ```
/// use pgstrata_eventstore::{ExpectedVersion, NewEvent, append::append_stmt};
/// let events = [NewEvent::new("OrderPlaced", serde_json::json!({"items": 2}))];
/// let (sql, _) = append_stmt("order-42", ExpectedVersion::Exact(3), &events).unwrap();
/// assert_eq!(sql, r#"SELECT "event_id", "version", "position" FROM eventstore.append($1, $2, $3) AS "r""#);
/// let (sql, _) = append_stmt("order-42", ExpectedVersion::Any, &events).unwrap();
/// assert_eq!(sql, r#"SELECT "event_id", "version", "position" FROM eventstore.append_any($1, $2) AS "r""#);
/// assert!(append_stmt("order 42", ExpectedVersion::NoStream, &events).is_err());
/// assert!(append_stmt("order-42", ExpectedVersion::NoStream, &[]).is_err());
/// ```
pub fn append_stmt(stream: &str, expected: ExpectedVersion, events: &[NewEvent]) -> Result<Built> {
    check_stream(stream)?;
    if events.is_empty() || events.len() > MAX_EVENTS_PER_APPEND {
        return Err(Error::InvalidField {
            field: "events",
            reason: format!("{} events: append 1 to {MAX_EVENTS_PER_APPEND}", events.len()),
        });
    }
    if let ExpectedVersion::Exact(v) = expected
        && v < 0
    {
        return Err(Error::InvalidField {
            field: "expected_version",
            reason: format!("{v}: a version is 0 (no stream) or more"),
        });
    }
    for (i, e) in events.iter().enumerate() {
        e.check(i)?;
    }
    let payload = serde_json::to_value(events).map_err(|e| Error::InvalidField {
        field: "events",
        reason: e.to_string(),
    })?;
    let call = match expected.as_sql() {
        Some(v) => Func::cust(EventstoreFn::Append).args([Expr::val(stream), Expr::val(v), Expr::val(payload)]),
        None => Func::cust(EventstoreFn::AppendAny).args([Expr::val(stream), Expr::val(payload)]),
    };
    Ok(sql::build(
        Query::select()
            .columns([Events::EventId, Events::Version, Events::Position])
            .from_function(call, Rows),
    ))
}
