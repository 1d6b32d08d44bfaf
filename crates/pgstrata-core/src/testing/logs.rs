//! What the code logged during a test: a small `tracing` subscriber that keeps every event as a
//! line (`LEVEL target: message key=value ... in span > span`), so a test can assert that a
//! failure a loop swallowed was logged, or that a decision was logged and not returned.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// The lines logged while the guard of [`CapturedLogs::start`] is alive, on this thread (use a
/// current-thread runtime, `#[tokio::test]`'s default).
#[derive(Debug, Clone, Default)]
pub struct CapturedLogs {
    lines: Arc<Mutex<Vec<String>>>,
}

impl CapturedLogs {
    /// Starts capturing on this thread until the guard is dropped.
    pub fn start() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = CapturedLogs::default();
        let subscriber = Capture {
            lines: logs.lines.clone(),
            spans: Mutex::new(Vec::new()),
            stack: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
        };
        (logs, tracing::subscriber::set_default(subscriber))
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The lines containing every one of `needles`.
    pub fn matching(&self, needles: &[&str]) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .collect()
    }
}

struct Capture {
    lines: Arc<Mutex<Vec<String>>>,
    /// (id, `name{fields}`) of the spans alive.
    spans: Mutex<Vec<(u64, String)>>,
    /// Entered spans, innermost last.
    stack: Mutex<Vec<u64>>,
    next_id: AtomicU64,
}

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut fields = Fields(String::new());
        span.record(&mut fields);
        if let Ok(mut spans) = self.spans.lock() {
            spans.push((id, format!("{}{{{}}}", span.metadata().name(), fields.0.trim())));
        }
        Id::from_u64(id)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let meta = event.metadata();
        let mut fields = Fields(format!("{} {}:", meta.level(), meta.target()));
        event.record(&mut fields);
        let stack = self.stack.lock().map(|s| s.clone()).unwrap_or_default();
        if !stack.is_empty() {
            let spans = self.spans.lock().map(|s| s.clone()).unwrap_or_default();
            let names: Vec<&str> = stack
                .iter()
                .filter_map(|id| spans.iter().find(|(i, _)| i == id).map(|(_, n)| n.as_str()))
                .collect();
            let _ = write!(fields.0, " in {}", names.join(" > "));
        }
        if let Ok(mut lines) = self.lines.lock() {
            lines.push(fields.0);
        }
    }

    fn enter(&self, span: &Id) {
        if let Ok(mut stack) = self.stack.lock() {
            stack.push(span.into_u64());
        }
    }

    fn exit(&self, span: &Id) {
        if let Ok(mut stack) = self.stack.lock()
            && let Some(at) = stack.iter().rposition(|id| *id == span.into_u64())
        {
            stack.remove(at);
        }
    }
}
