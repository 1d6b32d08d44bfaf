//! An event as a client sends it, and the checks it passes before any SQL runs.

use crate::error::{Error, Result};
use crate::ids::EventId;
use chrono::{DateTime, Utc};
use serde_json::Value;

/// Longest event name, in characters (the CHECK `events_name_format` says the same).
pub const MAX_NAME_CHARS: usize = 200;
/// Longest actor, session id, in characters.
pub const MAX_ACTOR_CHARS: usize = 200;
pub const MAX_SESSION_CHARS: usize = 200;
/// Longest source, in characters.
pub const MAX_SOURCE_CHARS: usize = 100;
/// Largest `properties`, as compact JSON. The database's CHECK caps the stored (binary) form at
/// twice this, for writers that skip this crate.
pub const MAX_PROPERTIES_BYTES: usize = 32 * 1024;

/// An event to track: built with [`NewEvent::new`] (a fresh UUIDv7 id, occurred now, no
/// properties) and the setters, or from the fields a client sent.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NewEvent {
    /// The dedup key: a retry must send the same id.
    pub id: EventId,
    pub name: String,
    /// The user id, or the anonymous id when the user is not known.
    pub actor: String,
    /// The client's clock.
    pub occurred_at: DateTime<Utc>,
    /// A JSON object.
    pub properties: Value,
    pub session_id: Option<String>,
    pub source: Option<String>,
}

impl NewEvent {
    /// An event named `name` by `actor`, occurring now, with a fresh id and no properties.
    pub fn new(name: impl Into<String>, actor: impl Into<String>) -> Self {
        Self {
            id: EventId::new(),
            name: name.into(),
            actor: actor.into(),
            occurred_at: Utc::now(),
            properties: Value::Object(Default::default()),
            session_id: None,
            source: None,
        }
    }

    /// The client's id for the event (a retry sends the same one).
    pub fn id(mut self, id: EventId) -> Self {
        self.id = id;
        self
    }

    /// When it happened, by the client's clock.
    pub fn at(mut self, occurred_at: DateTime<Utc>) -> Self {
        self.occurred_at = occurred_at;
        self
    }

    /// Its properties: a JSON object.
    pub fn properties(mut self, properties: Value) -> Self {
        self.properties = properties;
        self
    }

    pub fn session(mut self, session_id: impl Into<String>) -> Self {
        self.session_id = Some(session_id.into());
        self
    }

    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Checks everything but the time window (which is the server's clock's) and the catalog
    /// (which is the database's), and returns the properties as compact JSON.
    pub(crate) fn check(&self) -> std::result::Result<String, (&'static str, String)> {
        if self.id.0.is_nil() {
            return Err(("event_id", "the nil UUID is not an event id".into()));
        }
        text("name", &self.name, MAX_NAME_CHARS)?;
        if self.name.chars().any(char::is_control) {
            return Err(("name", "an event name has no control characters".into()));
        }
        text("actor", &self.actor, MAX_ACTOR_CHARS)?;
        if let Some(s) = &self.session_id {
            text("session_id", s, MAX_SESSION_CHARS)?;
        }
        if let Some(s) = &self.source {
            text("source", s, MAX_SOURCE_CHARS)?;
        }
        if !self.properties.is_object() {
            return Err(("properties", "properties must be a JSON object".into()));
        }
        let json = self.properties.to_string();
        if json.len() > MAX_PROPERTIES_BYTES {
            return Err((
                "properties",
                format!("{} bytes of JSON, over the cap of {MAX_PROPERTIES_BYTES}", json.len()),
            ));
        }
        // PostgreSQL text and jsonb hold no NUL character.
        if json.contains("\\u0000") {
            return Err(("properties", "a string holds a NUL character (\\u0000)".into()));
        }
        Ok(json)
    }

    /// [`Self::check`] as the module's error, for the event at `index` of a batch (or alone).
    pub(crate) fn checked(&self, index: Option<usize>) -> Result<String> {
        self.check().map_err(|(field, reason)| Error::InvalidEvent {
            index,
            event_id: Some(self.id),
            field,
            reason,
        })
    }
}

fn text(field: &'static str, value: &str, max: usize) -> std::result::Result<(), (&'static str, String)> {
    let chars = value.chars().count();
    if chars == 0 || chars > max {
        return Err((field, format!("{chars} characters, want 1 to {max}")));
    }
    if value.contains('\0') {
        return Err((field, "holds a NUL character".into()));
    }
    Ok(())
}
