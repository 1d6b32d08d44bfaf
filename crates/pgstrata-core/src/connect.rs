//! Database URLs and connect options: the checks the CLI applies to a URL, and the options a
//! connection through a transaction pooler (PgBouncer in transaction mode) needs.
//!
//! Through a transaction pooler each transaction may run on another server session. pgstrata's
//! tenant context is transaction-local, so it is safe there; what breaks is session state:
//!
//! - sqlx's prepared statements. sqlx 0.9 names every prepared statement (`sqlx_s_1`, ...)
//!   even with the statement cache off, and never closes it when the cache is off; another
//!   client's statement of the same name then collides on the same server session
//!   (`prepared statement "sqlx_s_1" already exists`). [`pooled_options`] turns the cache off,
//!   and the pooler must drop each client's statements when it takes a server session back:
//!   PgBouncer 1.18 with `server_reset_query = DEALLOCATE ALL` and
//!   `server_reset_query_always = 1`.
//! - Statements outside a transaction: sqlx parses and executes a statement with parameters in
//!   two round trips, which a transaction pooler may send to two server sessions. Through a
//!   pooler run every statement inside a transaction (`begin_tenant`, `pool.begin()`).
//! - Migrations, which hold their lease on one session for the whole run: they need a direct
//!   connection, and refuse a URL marked `pgbouncer=true`.

use sqlx::postgres::PgConnectOptions;
use std::str::FromStr;

/// The URL query parameter that marks a transaction pooler: `?pgbouncer=true`.
pub const POOLER_PARAM: &str = "pgbouncer";

/// Why a database URL was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    #[error("the database URL must start with postgres:// or postgresql://, not {0:?}")]
    Scheme(String),
    #[error("the database URL is not valid: {0}")]
    Invalid(String),
    #[error("{POOLER_PARAM}={0:?} in the database URL: use true or false")]
    PoolerValue(String),
}

/// A checked database URL.
#[derive(Debug, Clone)]
pub struct DatabaseUrl {
    options: PgConnectOptions,
    pooled: bool,
}

impl DatabaseUrl {
    /// Checks the scheme (`postgres` or `postgresql`) and the rest of the URL, and reads the
    /// pooler marker `pgbouncer=true` (removed before sqlx sees the URL). Error messages never
    /// repeat the URL, which may hold a password.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let scheme = url.split_once("://").map_or("", |(s, _)| s);
        if !matches!(scheme, "postgres" | "postgresql") {
            let shown = if scheme.is_empty() || scheme.len() > 20 {
                "(no scheme)"
            } else {
                scheme
            };
            return Err(UrlError::Scheme(shown.into()));
        }
        let (base, query) = url.split_once('?').map_or((url, ""), |(b, q)| (b, q));
        let mut pooled = false;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some((POOLER_PARAM, value)) => {
                    pooled = match value {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        other => return Err(UrlError::PoolerValue(other.into())),
                    }
                }
                _ => kept.push(pair),
            }
        }
        let rebuilt = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let options = PgConnectOptions::from_str(&rebuilt).map_err(|e| {
            // sqlx's message may quote the URL: keep only its kind.
            let text = e.to_string();
            UrlError::Invalid(if text.contains(&rebuilt) {
                "cannot parse it".into()
            } else {
                text
            })
        })?;
        Ok(Self {
            options: if pooled { pooled_options(options) } else { options },
            pooled,
        })
    }

    /// Whether the URL is marked as a transaction pooler (`pgbouncer=true`).
    pub fn is_pooled(&self) -> bool {
        self.pooled
    }

    /// Connect options; for a pooled URL, with [`pooled_options`] applied.
    pub fn options(&self) -> PgConnectOptions {
        self.options.clone()
    }

    /// `user@host:port/database`, without the password, for messages.
    pub fn describe(&self) -> String {
        let o = &self.options;
        format!(
            "{}@{}:{}/{}",
            o.get_username(),
            o.get_host(),
            o.get_port(),
            o.get_database().unwrap_or(o.get_username())
        )
    }
}

/// Connect options for a transaction pooler (PgBouncer in transaction mode): sqlx's statement
/// cache off, so no statement is expected to outlive its transaction's server session, and
/// no `extra_float_digits` startup parameter, which PgBouncer refuses unless told to ignore
/// it. The pooler must also drop prepared statements between clients (module docs).
pub fn pooled_options(options: PgConnectOptions) -> PgConnectOptions {
    options.statement_cache_capacity(0).extra_float_digits(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_and_the_pooler_marker() {
        assert!(DatabaseUrl::parse("postgres://u@h/db").is_ok());
        assert!(DatabaseUrl::parse("postgresql://u@h:5433/db?sslmode=disable").is_ok());
        for bad in ["mysql://u@h/db", "u@h/db", "http://h", ""] {
            let err = DatabaseUrl::parse(bad).unwrap_err();
            assert!(matches!(err, UrlError::Scheme(_)), "{bad}: {err}");
        }
        let secret = DatabaseUrl::parse("mysql://u:hunter2@h/db").unwrap_err().to_string();
        assert!(!secret.contains("hunter2"), "{secret}");
        let pooled = DatabaseUrl::parse("postgres://u@h:6432/db?sslmode=disable&pgbouncer=true").unwrap();
        assert!(pooled.is_pooled());
        assert_eq!(pooled.describe(), "u@h:6432/db");
        assert!(
            !DatabaseUrl::parse("postgres://u@h/db?pgbouncer=false")
                .unwrap()
                .is_pooled()
        );
        assert!(matches!(
            DatabaseUrl::parse("postgres://u@h/db?pgbouncer=maybe"),
            Err(UrlError::PoolerValue(_))
        ));
    }
}
