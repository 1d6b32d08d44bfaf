//! Configuration from the environment. Every variable is checked at startup and a refusal
//! names the variable and what it needs; no message repeats a URL's password or a secret.
//!
//! | variable | meaning | default |
//! | --- | --- | --- |
//! | `DATABASE_URL` | the schemas' owner: runs the migrations at startup | required |
//! | `APP_DATABASE_URL` | the request path: a login role granted `pgstrata_app` only | `DATABASE_URL` |
//! | `WORKER_DATABASE_URL` | the queue worker and the audit sealer: a login role granted `pgstrata_worker` | `DATABASE_URL` |
//! | `BILLING_DATABASE_URL` | the Stripe webhook: a login role granted `pgstrata_billing_sync` | `DATABASE_URL` |
//! | `JWT_SECRET` | the HS256 secret bearer tokens are signed with, at least 32 bytes | required |
//! | `STRIPE_WEBHOOK_SECRET` | `whsec_...`, comma-separated while rolling it | webhook route off |
//! | `LISTEN` | address to serve on | `127.0.0.1:3000` |
//!
//! With one URL for everything (a superuser, as in development) the example runs, but row-level
//! security then binds nothing: production gives each path its own role (SECURITY.md).

use crate::auth::TokenKey;
use pgstrata::billing::Verifier;
use pgstrata::core::connect::DatabaseUrl;
use std::net::SocketAddr;

/// Where the server listens when `LISTEN` is not set.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3000";

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{var} is not set: {hint}")]
    Missing { var: &'static str, hint: &'static str },
    #[error("{var} is invalid: {reason}")]
    Invalid { var: &'static str, reason: String },
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: DatabaseUrl,
    pub app_database_url: DatabaseUrl,
    pub worker_database_url: DatabaseUrl,
    pub billing_database_url: DatabaseUrl,
    pub tokens: TokenKey,
    /// `None`: no `STRIPE_WEBHOOK_SECRET`, the webhook route is not served.
    pub stripe: Option<Verifier>,
    pub listen: SocketAddr,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
    }

    /// Reads variables through `get` (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let url = |var: &'static str, value: &str| {
            DatabaseUrl::parse(value).map_err(|e| ConfigError::Invalid {
                var,
                reason: e.to_string(),
            })
        };
        let owner = get("DATABASE_URL").ok_or(ConfigError::Missing {
            var: "DATABASE_URL",
            hint: "the URL of the role that owns the schemas (it runs the migrations)",
        })?;
        let database_url = url("DATABASE_URL", &owner)?;
        if database_url.is_pooled() {
            return Err(ConfigError::Invalid {
                var: "DATABASE_URL",
                reason: "migrations need a direct connection, not a transaction pooler (pgbouncer=true)".into(),
            });
        }
        let or_owner = |var: &'static str| url(var, &get(var).unwrap_or_else(|| owner.clone()));
        let secret = get("JWT_SECRET").ok_or(ConfigError::Missing {
            var: "JWT_SECRET",
            hint: "the HS256 secret your login service signs bearer tokens with (at least 32 bytes)",
        })?;
        let tokens = TokenKey::new(secret.as_bytes()).map_err(|e| ConfigError::Invalid {
            var: "JWT_SECRET",
            reason: e.to_string(),
        })?;
        let stripe = get("STRIPE_WEBHOOK_SECRET")
            .map(|secrets| Verifier::new(secrets.split(',')))
            .transpose()
            .map_err(|e| ConfigError::Invalid {
                var: "STRIPE_WEBHOOK_SECRET",
                reason: e.to_string(),
            })?;
        let listen = get("LISTEN").unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen = listen.parse().map_err(|_| ConfigError::Invalid {
            var: "LISTEN",
            reason: format!("{listen:?} is not an address such as 127.0.0.1:3000 or [::]:8080"),
        })?;
        Ok(Self {
            app_database_url: or_owner("APP_DATABASE_URL")?,
            worker_database_url: or_owner("WORKER_DATABASE_URL")?,
            billing_database_url: or_owner("BILLING_DATABASE_URL")?,
            database_url,
            tokens,
            stripe,
            listen,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashMap;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        let map: HashMap<&str, &str> = vars.iter().copied().collect();
        move |var| map.get(var).map(|v| (*v).to_owned())
    }

    const SECRET: (&str, &str) = ("JWT_SECRET", "0123456789abcdef0123456789abcdef");

    #[test]
    fn defaults_fill_in_around_the_two_required_variables() {
        let config = Config::from_lookup(lookup(&[("DATABASE_URL", "postgres://owner@db/app"), SECRET])).unwrap();
        assert_eq!(config.app_database_url.describe(), "owner@db:5432/app");
        assert_eq!(config.worker_database_url.describe(), "owner@db:5432/app");
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert!(config.stripe.is_none());
        let config = Config::from_lookup(lookup(&[
            ("DATABASE_URL", "postgres://owner@db/app"),
            ("APP_DATABASE_URL", "postgres://web@db/app"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_new,whsec_old"),
            ("LISTEN", "0.0.0.0:8080"),
            SECRET,
        ]))
        .unwrap();
        assert_eq!(config.app_database_url.describe(), "web@db:5432/app");
        assert!(config.stripe.is_some());
        assert_eq!(config.listen.port(), 8080);
    }

    #[test]
    fn refusals_name_the_variable_and_hide_secrets() {
        let err = |vars: &[(&str, &str)]| Config::from_lookup(lookup(vars)).unwrap_err().to_string();
        assert!(err(&[SECRET]).starts_with("DATABASE_URL is not set"));
        assert!(err(&[("DATABASE_URL", "postgres://o@db/app")]).starts_with("JWT_SECRET is not set"));
        let short = err(&[("DATABASE_URL", "postgres://o@db/app"), ("JWT_SECRET", "hunter2")]);
        assert!(
            short.starts_with("JWT_SECRET is invalid") && !short.contains("hunter2"),
            "{short}"
        );
        let scheme = err(&[("DATABASE_URL", "mysql://o:pw@db/app"), SECRET]);
        assert!(
            scheme.starts_with("DATABASE_URL is invalid") && !scheme.contains("pw@"),
            "{scheme}"
        );
        let pooled = err(&[("DATABASE_URL", "postgres://o@db/app?pgbouncer=true"), SECRET]);
        assert!(pooled.contains("direct connection"), "{pooled}");
        let listen = err(&[("DATABASE_URL", "postgres://o@db/app"), ("LISTEN", "port 80"), SECRET]);
        assert!(listen.starts_with("LISTEN is invalid"), "{listen}");
        let stripe = err(&[
            ("DATABASE_URL", "postgres://o@db/app"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_a,"),
            SECRET,
        ]);
        assert!(stripe.starts_with("STRIPE_WEBHOOK_SECRET is invalid"), "{stripe}");
    }
}
