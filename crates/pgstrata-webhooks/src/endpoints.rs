//! A tenant's endpoints and their signing secrets.
//!
//! An endpoint receives the messages whose event type matches one of its patterns (`*` is one
//! segment, a final `*` the rest: `invoice.*`, `*.created`, `*`) and whose payload contains its
//! filter, if it has one. Creating an endpoint makes its first secret; [`rotate_secret`] makes a
//! new one while the old one keeps signing for a grace period.

use crate::error::{Error, Result};
use crate::functions::WebhooksFn;
use crate::generated::{Endpoint, Endpoints, Secrets};
use crate::ids::{EndpointId, SecretId};
use crate::signing::Secret;
use pgstrata_core::sql::{self, Built};
use pgstrata_core::{Page, TenantId, TenantTx};
use sea_query::{Asterisk, Expr, ExprTrait, Func, Order, Query};
use std::collections::BTreeMap;

/// Header names the dispatcher sets, or that change how a request is framed or routed: an
/// endpoint's custom headers may not use them (the same rule as `webhooks.headers_valid`).
const RESERVED_HEADERS: [&str; 9] = [
    "host",
    "connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "keep-alive",
    "expect",
    "user-agent",
];

/// An endpoint's configuration, to create one or to replace one's ([`update`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NewEndpoint {
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub payload_filter: Option<serde_json::Value>,
    pub enabled: bool,
    pub rate_limit: Option<i32>,
    pub max_in_flight: i32,
    pub fifo: bool,
    pub headers: BTreeMap<String, String>,
}

impl NewEndpoint {
    /// An endpoint for `url` that receives every event type, enabled, 8 attempts in flight.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            description: String::new(),
            event_types: vec!["*".to_owned()],
            payload_filter: None,
            enabled: true,
            rate_limit: None,
            max_in_flight: 8,
            fifo: false,
            headers: BTreeMap::new(),
        }
    }

    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.description = d.into();
        self
    }

    /// The event type patterns it receives (1 to 50).
    pub fn event_types<S: Into<String>>(mut self, patterns: impl IntoIterator<Item = S>) -> Self {
        self.event_types = patterns.into_iter().map(Into::into).collect();
        self
    }

    /// Receives only messages whose payload contains this JSON object (`@>`).
    pub fn payload_filter(mut self, filter: serde_json::Value) -> Self {
        self.payload_filter = Some(filter);
        self
    }

    pub fn enabled(mut self, on: bool) -> Self {
        self.enabled = on;
        self
    }

    /// At most this many attempts started per second.
    pub fn rate_limit(mut self, per_second: i32) -> Self {
        self.rate_limit = Some(per_second);
        self
    }

    /// At most this many attempts in flight at once (1 to 100).
    pub fn max_in_flight(mut self, n: i32) -> Self {
        self.max_in_flight = n;
        self
    }

    /// Delivers in send order, one at a time (a failing message holds the next ones back).
    pub fn fifo(mut self, on: bool) -> Self {
        self.fifo = on;
        self
    }

    /// A header sent with every request to it.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// The checks of the database's CHECK constraints, made first so that the error names the
    /// field and says why. The URL is normalised (as `url::Url` writes it).
    pub fn validate(&self) -> Result<NewEndpoint> {
        let invalid = |field: &'static str, reason: String| Error::InvalidInput { field, reason };
        let url = url::Url::parse(&self.url).map_err(|e| invalid("url", format!("{e}: {:?}", self.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("url", format!("scheme {} is not http or https", url.scheme())));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("url", "the URL has no host".to_owned()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "url",
                "credentials in the URL are refused: use a custom header".to_owned(),
            ));
        }
        if url.fragment().is_some() {
            return Err(invalid("url", "a fragment is never sent: remove it".to_owned()));
        }
        let normalised = url.as_str().to_owned();
        if normalised.len() > 2048 {
            return Err(invalid("url", "longer than 2048 characters".to_owned()));
        }
        if self.description.chars().count() > 1000 {
            return Err(invalid("description", "longer than 1000 characters".to_owned()));
        }
        if self.event_types.is_empty() || self.event_types.len() > 50 {
            return Err(invalid("event_types", "give 1 to 50 patterns".to_owned()));
        }
        for p in &self.event_types {
            if !pattern_valid(p) {
                return Err(invalid(
                    "event_types",
                    format!("{p:?} is not a pattern: dotted segments of letters, digits, _ and -, or *"),
                ));
            }
        }
        if let Some(f) = &self.payload_filter
            && (!f.is_object() || f.to_string().len() > 4096)
        {
            return Err(invalid(
                "payload_filter",
                "a filter is a JSON object of at most 4 kB".to_owned(),
            ));
        }
        if let Some(r) = self.rate_limit
            && !(1..=10_000).contains(&r)
        {
            return Err(invalid("rate_limit", format!("{r} is not 1 to 10000 per second")));
        }
        if !(1..=100).contains(&self.max_in_flight) {
            return Err(invalid(
                "max_in_flight",
                format!("{} is not 1 to 100", self.max_in_flight),
            ));
        }
        if self.headers.len() > 20 {
            return Err(invalid("headers", "at most 20 custom headers".to_owned()));
        }
        for (name, value) in &self.headers {
            let lower = name.to_ascii_lowercase();
            let token = !name.is_empty()
                && name.len() <= 100
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+.^_`|~-".contains(&b));
            if !token
                || RESERVED_HEADERS.contains(&lower.as_str())
                || ["webhook-", "content-", "proxy-"].iter().any(|p| lower.starts_with(p))
            {
                return Err(invalid(
                    "headers",
                    format!("{name:?} is not a header name an endpoint may set"),
                ));
            }
            if value.chars().count() > 1000 || value.chars().any(char::is_control) {
                return Err(invalid(
                    "headers",
                    format!("the value of {name:?} is longer than 1000 characters or has control characters"),
                ));
            }
        }
        Ok(NewEndpoint {
            url: normalised,
            ..self.clone()
        })
    }
}

/// Whether `p` is an event type pattern: dotted segments, each `*` or letters, digits, `_`, `-`.
pub fn pattern_valid(p: &str) -> bool {
    p.len() <= 200
        && p.split('.').all(|s| {
            s == "*" || (!s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
        })
}

/// Whether `t` is an event type: dotted segments of letters, digits, `_` and `-`.
pub fn event_type_valid(t: &str) -> bool {
    t.len() <= 200
        && t.split('.')
            .all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
}

/// The patterns as a `text[]` literal. Valid patterns hold only letters, digits, `_`, `-`,
/// `.` and `*`, so quoting each one is enough.
fn patterns_literal(patterns: &[String]) -> Expr {
    let quoted: Vec<String> = patterns.iter().map(|p| format!("\"{p}\"")).collect();
    Expr::val(format!("{{{}}}", quoted.join(","))).cast_as("text[]")
}

fn headers_json(headers: &BTreeMap<String, String>) -> serde_json::Value {
    serde_json::Value::Object(
        headers
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect(),
    )
}

/// Creates an endpoint (with its first secret) in the tenant.
pub async fn create(tx: &mut TenantTx<'_>, endpoint: &NewEndpoint) -> Result<Endpoint> {
    let built = create_stmt(tx.tenant_id(), endpoint)?;
    sql::query_as(built)
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| Error::from(e).limit_of("endpoints"))
}

/// The SQL of [`create`] (after [`NewEndpoint::validate`]).
///
/// ```
/// use pgstrata_webhooks::endpoints::{create_stmt, NewEndpoint};
/// let (sql, _) = create_stmt(pgstrata_core::TenantId::new(), &NewEndpoint::new("https://example.com/hook")).unwrap();
/// assert_eq!(
///     sql,
///     r#"INSERT INTO "webhooks"."endpoints" ("tenant_id", "url", "description", "event_types", "payload_filter", "enabled", "rate_limit", "max_in_flight", "fifo", "headers") VALUES ($1, $2, $3, CAST($4 AS text[]), $5, $6, $7, $8, $9, $10) RETURNING *"#
/// );
/// ```
pub fn create_stmt(tenant: TenantId, endpoint: &NewEndpoint) -> Result<Built> {
    let e = endpoint.validate()?;
    Ok(sql::build(
        Query::insert()
            .into_table(Endpoints::qualified())
            .columns([
                Endpoints::TenantId,
                Endpoints::Url,
                Endpoints::Description,
                Endpoints::EventTypes,
                Endpoints::PayloadFilter,
                Endpoints::Enabled,
                Endpoints::RateLimit,
                Endpoints::MaxInFlight,
                Endpoints::Fifo,
                Endpoints::Headers,
            ])
            .values_panic([
                Expr::val(tenant),
                Expr::val(e.url),
                Expr::val(e.description),
                patterns_literal(&e.event_types),
                Expr::val(e.payload_filter),
                Expr::val(e.enabled),
                Expr::val(e.rate_limit),
                Expr::val(e.max_in_flight),
                Expr::val(e.fifo),
                Expr::val(headers_json(&e.headers)),
            ])
            .returning_all(),
    ))
}

/// Replaces an endpoint's configuration. Enabling a disabled endpoint clears its reason and
/// its run of failures; its deliveries that failed meanwhile come back with
/// [`crate::history::replay_failed`].
pub async fn update(tx: &mut TenantTx<'_>, id: EndpointId, endpoint: &NewEndpoint) -> Result<Endpoint> {
    let built = update_stmt(tx.tenant_id(), id, endpoint)?;
    sql::query_as(built)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| not_found(id))
}

/// The SQL of [`update`].
///
/// ```
/// use pgstrata_webhooks::endpoints::{update_stmt, NewEndpoint};
/// let (sql, _) = update_stmt(pgstrata_core::TenantId::new(), pgstrata_webhooks::EndpointId::new(), &NewEndpoint::new("https://example.com/")).unwrap();
/// assert_eq!(
///     sql,
///     r#"UPDATE "webhooks"."endpoints" SET "url" = $1, "description" = $2, "event_types" = CAST($3 AS text[]), "payload_filter" = $4, "enabled" = $5, "rate_limit" = $6, "max_in_flight" = $7, "fifo" = $8, "headers" = $9 WHERE "tenant_id" = $10 AND "id" = $11 RETURNING *"#
/// );
/// ```
pub fn update_stmt(tenant: TenantId, id: EndpointId, endpoint: &NewEndpoint) -> Result<Built> {
    let e = endpoint.validate()?;
    Ok(sql::build(
        Query::update()
            .table(Endpoints::qualified())
            .values([
                (Endpoints::Url, Expr::val(e.url)),
                (Endpoints::Description, Expr::val(e.description)),
                (Endpoints::EventTypes, patterns_literal(&e.event_types)),
                (Endpoints::PayloadFilter, Expr::val(e.payload_filter)),
                (Endpoints::Enabled, Expr::val(e.enabled)),
                (Endpoints::RateLimit, Expr::val(e.rate_limit)),
                (Endpoints::MaxInFlight, Expr::val(e.max_in_flight)),
                (Endpoints::Fifo, Expr::val(e.fifo)),
                (Endpoints::Headers, Expr::val(headers_json(&e.headers))),
            ])
            .and_where(Expr::col(Endpoints::TenantId).eq(tenant))
            .and_where(Expr::col(Endpoints::Id).eq(id))
            .returning_all(),
    ))
}

/// Enables or disables an endpoint (a tenant's disable is recorded as its reason). While
/// disabled, new messages are not queued for it and its queued deliveries wait.
pub async fn set_enabled(tx: &mut TenantTx<'_>, id: EndpointId, enabled: bool) -> Result<Endpoint> {
    let built = set_enabled_stmt(tx.tenant_id(), id, enabled);
    sql::query_as(built)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| not_found(id))
}

/// The SQL of [`set_enabled`].
///
/// ```
/// let (sql, _) = pgstrata_webhooks::endpoints::set_enabled_stmt(pgstrata_core::TenantId::new(), pgstrata_webhooks::EndpointId::new(), true);
/// assert_eq!(sql, r#"UPDATE "webhooks"."endpoints" SET "enabled" = $1 WHERE "tenant_id" = $2 AND "id" = $3 RETURNING *"#);
/// ```
pub fn set_enabled_stmt(tenant: TenantId, id: EndpointId, enabled: bool) -> Built {
    sql::build(
        Query::update()
            .table(Endpoints::qualified())
            .value(Endpoints::Enabled, enabled)
            .and_where(Expr::col(Endpoints::TenantId).eq(tenant))
            .and_where(Expr::col(Endpoints::Id).eq(id))
            .returning_all(),
    )
}

/// An endpoint of the tenant.
pub async fn get(tx: &mut TenantTx<'_>, id: EndpointId) -> Result<Option<Endpoint>> {
    let built = get_stmt(tx.tenant_id(), id);
    Ok(sql::query_as(built).fetch_optional(&mut **tx).await?)
}

/// The SQL of [`get`].
///
/// ```
/// let (sql, _) = pgstrata_webhooks::endpoints::get_stmt(pgstrata_core::TenantId::new(), pgstrata_webhooks::EndpointId::new());
/// assert_eq!(sql, r#"SELECT * FROM "webhooks"."endpoints" WHERE "tenant_id" = $1 AND "id" = $2"#);
/// ```
pub fn get_stmt(tenant: TenantId, id: EndpointId) -> Built {
    sql::build(
        Query::select()
            .column(Asterisk)
            .from(Endpoints::qualified())
            .and_where(Expr::col(Endpoints::TenantId).eq(tenant))
            .and_where(Expr::col(Endpoints::Id).eq(id)),
    )
}

/// A page of the tenant's endpoints, oldest first.
pub async fn list(tx: &mut TenantTx<'_>, page: &Page<EndpointId>) -> Result<Vec<Endpoint>> {
    let built = list_stmt(tx.tenant_id(), page)?;
    Ok(sql::query_as(built).fetch_all(&mut **tx).await?)
}

/// The SQL of [`list`].
///
/// ```
/// use pgstrata_core::Page;
/// let (sql, _) = pgstrata_webhooks::endpoints::list_stmt(pgstrata_core::TenantId::new(), &Page::first(10)).unwrap();
/// assert_eq!(sql, r#"SELECT * FROM "webhooks"."endpoints" WHERE "tenant_id" = $1 ORDER BY "tenant_id" ASC, "id" ASC LIMIT $2"#);
/// ```
pub fn list_stmt(tenant: TenantId, page: &Page<EndpointId>) -> Result<Built> {
    page.validate()?;
    let mut q = Query::select();
    q.column(Asterisk)
        .from(Endpoints::qualified())
        .and_where(Expr::col(Endpoints::TenantId).eq(tenant));
    if let Some(after) = page.after {
        q.and_where(Expr::col(Endpoints::Id).gt(after));
    }
    q.order_by(Endpoints::TenantId, Order::Asc)
        .order_by(Endpoints::Id, Order::Asc)
        .limit(page.limit);
    Ok(sql::build(&q))
}

/// Deletes an endpoint with its secrets, deliveries and attempts, and the payloads no other
/// endpoint of the tenant still has to receive.
pub async fn delete(tx: &mut TenantTx<'_>, id: EndpointId) -> Result<()> {
    let built = delete_stmt(tx.tenant_id(), id);
    let done = sql::query(built).execute(&mut **tx).await?;
    if done.rows_affected() == 0 {
        return Err(not_found(id));
    }
    Ok(())
}

/// The SQL of [`delete`].
///
/// ```
/// let (sql, _) = pgstrata_webhooks::endpoints::delete_stmt(pgstrata_core::TenantId::new(), pgstrata_webhooks::EndpointId::new());
/// assert_eq!(sql, r#"DELETE FROM "webhooks"."endpoints" WHERE "tenant_id" = $1 AND "id" = $2"#);
/// ```
pub fn delete_stmt(tenant: TenantId, id: EndpointId) -> Built {
    sql::build(
        Query::delete()
            .from_table(Endpoints::qualified())
            .and_where(Expr::col(Endpoints::TenantId).eq(tenant))
            .and_where(Expr::col(Endpoints::Id).eq(id)),
    )
}

fn not_found(id: EndpointId) -> Error {
    Error::NotFound {
        message: format!("no endpoint {id} in this tenant"),
    }
}

/// A live signing key of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSecret {
    pub id: SecretId,
    pub secret: Secret,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// None for the current key; the end of the grace period of a rotated one.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(sqlx::FromRow)]
struct SecretRow {
    id: SecretId,
    key: Vec<u8>,
    created_at: chrono::DateTime<chrono::Utc>,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The endpoint's live keys, the current one first: what a receiver should accept.
pub async fn secrets(tx: &mut TenantTx<'_>, endpoint: EndpointId) -> Result<Vec<LiveSecret>> {
    let built = secrets_stmt(tx.tenant_id(), endpoint);
    let rows: Vec<SecretRow> = sql::query_as(built).fetch_all(&mut **tx).await?;
    rows.into_iter()
        .map(|r| {
            Ok(LiveSecret {
                id: r.id,
                secret: Secret::from_bytes(r.key).map_err(|e| Error::InvalidInput {
                    field: "key",
                    reason: e.to_string(),
                })?,
                created_at: r.created_at,
                expires_at: r.expires_at,
            })
        })
        .collect()
}

/// The SQL of [`secrets`].
///
/// ```
/// let (sql, _) = pgstrata_webhooks::endpoints::secrets_stmt(pgstrata_core::TenantId::new(), pgstrata_webhooks::EndpointId::new());
/// assert_eq!(
///     sql,
///     r#"SELECT "id", "key", "created_at", "expires_at" FROM "webhooks"."secrets" WHERE "tenant_id" = $1 AND "endpoint_id" = $2 AND ("expires_at" IS NULL OR "expires_at" > (now())) ORDER BY "expires_at" IS NOT NULL ASC, "created_at" DESC"#
/// );
/// ```
pub fn secrets_stmt(tenant: TenantId, endpoint: EndpointId) -> Built {
    sql::build(
        Query::select()
            .columns([Secrets::Id, Secrets::Key, Secrets::CreatedAt, Secrets::ExpiresAt])
            .from(Secrets::qualified())
            .and_where(Expr::col(Secrets::TenantId).eq(tenant))
            .and_where(Expr::col(Secrets::EndpointId).eq(endpoint))
            .and_where(
                Expr::col(Secrets::ExpiresAt)
                    .is_null()
                    .or(Expr::col(Secrets::ExpiresAt).gt(Expr::cust("now()"))),
            )
            .order_by_expr(Expr::col(Secrets::ExpiresAt).is_not_null(), Order::Asc)
            .order_by(Secrets::CreatedAt, Order::Desc),
    )
}

/// Rotates the endpoint's key: the current one keeps signing (both are sent, as Standard
/// Webhooks allows) until `grace` has passed, and `key` (or a random one) becomes current.
/// Returns the new key, to show the tenant.
pub async fn rotate_secret(
    tx: &mut TenantTx<'_>,
    endpoint: EndpointId,
    grace: std::time::Duration,
    key: Option<&Secret>,
) -> Result<LiveSecret> {
    let built = rotate_secret_stmt(endpoint, grace, key)?;
    let (id,): (SecretId,) = sql::query_as(built)
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| Error::from(e).limit_of("secrets"))?;
    secrets(tx, endpoint)
        .await?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| not_found(endpoint))
}

/// The SQL of [`rotate_secret`].
///
/// ```
/// let (sql, _) = pgstrata_webhooks::endpoints::rotate_secret_stmt(pgstrata_webhooks::EndpointId::new(), std::time::Duration::from_secs(3600), None).unwrap();
/// assert_eq!(sql, r#"SELECT webhooks.rotate_secret($1, CAST($2 AS interval), $3)"#);
/// ```
pub fn rotate_secret_stmt(endpoint: EndpointId, grace: std::time::Duration, key: Option<&Secret>) -> Result<Built> {
    if grace > std::time::Duration::from_secs(30 * 86_400) {
        return Err(Error::InvalidInput {
            field: "grace",
            reason: "a grace period is at most 30 days".to_owned(),
        });
    }
    Ok(sql::build(
        Query::select().expr(
            Func::cust(WebhooksFn::RotateSecret)
                .arg(Expr::val(endpoint))
                .arg(Expr::val(format!("{} milliseconds", grace.as_millis())).cast_as("interval"))
                .arg(Expr::val(key.map(|k| k.as_bytes().to_vec()))),
        ),
    ))
}
