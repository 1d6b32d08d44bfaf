//! Capturing: attach the audit trigger to a table, record application events.

use crate::error::{Error, Result};
use crate::functions::{AuditFn, regclass};
use crate::ids::RecordId;
use pgstrata_core::TenantTx;
use pgstrata_core::sql::{self, Built};
use sea_query::{Expr, Func, Query};
use sqlx::PgConnection;

/// How a table is audited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableOptions {
    /// Columns never recorded, e.g. `updated_at`; an update touching only these records nothing.
    pub ignored: Vec<String>,
    /// Columns recorded as `"[redacted]"`, never their value, e.g. token hashes.
    pub redacted: Vec<String>,
}

impl TableOptions {
    pub fn ignore(mut self, column: impl Into<String>) -> Self {
        self.ignored.push(column.into());
        self
    }

    pub fn redact(mut self, column: impl Into<String>) -> Self {
        self.redacted.push(column.into());
        self
    }
}

/// Audits every insert, update and delete of `table` (`schema.table`), replacing earlier
/// options. Runs `audit.enable`, which creates a trigger: call it as the table's owner, e.g. in
/// a migration (a role other than the audit schema's owner also needs `EXECUTE` on
/// `audit.capture()`, which is not granted to PUBLIC). Unknown columns and tables without a
/// primary key are refused.
pub async fn enable(conn: &mut PgConnection, table: &str, options: &TableOptions) -> Result<()> {
    sql::query(enable_stmt(table, options)).execute(conn).await?;
    Ok(())
}

/// The SQL of [`enable`].
///
/// ```
/// use pgstrata_audit::{TableOptions, capture::enable_stmt};
/// let options = TableOptions::default().ignore("updated_at").redact("token_hash");
/// let (sql, _) = enable_stmt("public.projects", &options);
/// assert_eq!(sql, "SELECT audit.enable(CAST($1 AS regclass), $2, $3)");
/// ```
pub fn enable_stmt(table: &str, options: &TableOptions) -> Built {
    sql::build(Query::select().expr(Func::cust(AuditFn::Enable).args([
        Expr::from(regclass(table)),
        Expr::val(options.ignored.clone()),
        Expr::val(options.redacted.clone()),
    ])))
}

/// Stops auditing `table`; its records stay.
pub async fn disable(conn: &mut PgConnection, table: &str) -> Result<()> {
    sql::query(disable_stmt(table)).execute(conn).await?;
    Ok(())
}

/// The SQL of [`disable`].
///
/// ```
/// let (sql, _) = pgstrata_audit::capture::disable_stmt("public.projects");
/// assert_eq!(sql, "SELECT audit.disable(CAST($1 AS regclass))");
/// ```
pub fn disable_stmt(table: &str) -> Built {
    sql::build(Query::select().expr(Func::cust(AuditFn::Disable).arg(regclass(table))))
}

/// The cap on an event's `details`, in bytes of JSON text (`audit.record` refuses larger ones
/// with 22023, `DETAIL: field=details`).
pub const MAX_DETAILS_BYTES: usize = 65_536;

/// The cap on a captured change's `old_values` and `new_values`, each, in bytes of jsonb: a
/// write to an audited table whose recorded values are larger is refused (22023), so large
/// columns should be ignored with [`TableOptions::ignore`].
pub const MAX_VALUES_BYTES: usize = 1_048_576;

/// An application event, e.g. `user.login` on a `user`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Lowercase dotted name: `user.login`, `role.granted`.
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub details: Option<serde_json::Value>,
}

impl Event {
    pub fn new(action: impl Into<String>, resource_type: impl Into<String>) -> Self {
        Self {
            action: action.into(),
            resource_type: resource_type.into(),
            resource_id: None,
            details: None,
        }
    }

    pub fn resource_id(mut self, id: impl Into<String>) -> Self {
        self.resource_id = Some(id.into());
        self
    }

    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    fn validate(&self) -> Result<()> {
        let valid_part = |p: &str| {
            p.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        if self.action.len() > 100 || !self.action.split('.').all(valid_part) {
            return Err(Error::InvalidField {
                field: "action",
                reason: format!(
                    "{:?} is not a lowercase dotted name such as user.login (a-z, 0-9, _, at most 100)",
                    self.action
                ),
            });
        }
        if self.resource_type.is_empty() || self.resource_type.chars().count() > 200 {
            return Err(Error::InvalidField {
                field: "resource_type",
                reason: "1 to 200 characters".into(),
            });
        }
        if self.resource_id.as_ref().is_some_and(|id| id.chars().count() > 500) {
            return Err(Error::InvalidField {
                field: "resource_id",
                reason: "at most 500 characters".into(),
            });
        }
        // The database measures its own JSON text, which may differ by a few spaces; this
        // catches the real mistakes early, the database has the last word.
        if let Some(details) = &self.details {
            let bytes = details.to_string().len();
            if bytes > MAX_DETAILS_BYTES {
                return Err(Error::InvalidField {
                    field: "details",
                    reason: format!("{bytes} bytes of JSON, at most {MAX_DETAILS_BYTES}"),
                });
            }
        }
        Ok(())
    }
}

/// Records `event` in the transaction's tenant, committed or rolled back with the rest of the
/// transaction; the actor and request id are the transaction's too (`audit.record` reads them
/// from the context, so they cannot be forged). The record's `origin` is
/// [`RecordOrigin::Event`](crate::RecordOrigin::Event): it can never pass for a captured change.
/// Returns the record's id.
pub async fn record(tx: &mut TenantTx<'_>, event: &Event) -> Result<RecordId> {
    let (id,): (RecordId,) = sql::query_as(record_stmt(event)?).fetch_one(&mut **tx).await?;
    Ok(id)
}

/// The SQL of [`record`]; refuses an event whose fields are malformed
/// ([`Error::InvalidField`] naming the field) before it reaches the database.
///
/// ```
/// use pgstrata_audit::{Error, Event, capture::record_stmt};
/// let event = Event::new("invoice.sent", "invoice").resource_id("42");
/// let (sql, _) = record_stmt(&event).unwrap();
/// assert_eq!(sql, "SELECT audit.record($1, $2, $3, $4)");
/// let err = record_stmt(&Event::new("Invoice Sent", "invoice")).unwrap_err();
/// assert!(matches!(err, Error::InvalidField { field: "action", .. }));
/// ```
pub fn record_stmt(event: &Event) -> Result<Built> {
    event.validate()?;
    Ok(sql::build(Query::select().expr(Func::cust(AuditFn::Record).args([
        Expr::val(event.action.clone()),
        Expr::val(event.resource_type.clone()),
        Expr::val(event.resource_id.clone()),
        Expr::val(event.details.clone()),
    ]))))
}

#[cfg(test)]
mod tests {
    use super::Event;

    #[test]
    fn event_names_are_checked_before_the_database() {
        assert!(Event::new("user.login", "user").validate().is_ok());
        assert!(Event::new("role.granted_to.user2", "role").validate().is_ok());
        for bad in ["", "User.login", "user..login", "user.", "1user", "user-login"] {
            assert!(Event::new(bad, "user").validate().is_err(), "{bad:?}");
        }
        assert!(Event::new("user.login", "").validate().is_err());
        let big = serde_json::json!({ "blob": "x".repeat(super::MAX_DETAILS_BYTES) });
        assert!(Event::new("user.login", "user").details(big).validate().is_err());
    }
}
