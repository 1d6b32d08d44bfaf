//! pgstrata: the PostgreSQL data layer of a B2B SaaS, as composable modules.
//!
//! Each module is a Postgres schema with its own migrations, enabled by a cargo feature and
//! re-exported here (`pgstrata::tenancy`). [`Backend`] layers the enabled modules and migrates
//! them in dependency order, under one migration lease, so every app instance can call it at
//! startup:
//!
//! ```no_run
//! # async fn start() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = sqlx::PgPool::connect(&std::env::var("DATABASE_URL")?).await?;
//! let backend = pgstrata::Backend::all()?;
//! backend.migrate(&pool).await?;
//! # Ok(()) }
//! ```
//!
//! This crate composes modules and defines no tables of its own.

pub use pgstrata_core as core;
pub use pgstrata_core::{
    CancellationToken, DbError, MigrateError, Migrator, Module, Page, TenantContext, TenantId, TenantTx, UserId,
    begin_tenant, set_tenant_context,
};

#[cfg(feature = "tenancy")]
pub use pgstrata_tenancy as tenancy;

#[cfg(feature = "rbac")]
pub use pgstrata_rbac as rbac;

#[cfg(feature = "queue")]
pub use pgstrata_queue as queue;

#[cfg(feature = "audit")]
pub use pgstrata_audit as audit;
#[cfg(feature = "billing")]
pub use pgstrata_billing as billing;
#[cfg(feature = "events")]
pub use pgstrata_events as events;
#[cfg(feature = "outbox")]
pub use pgstrata_outbox as outbox;

#[cfg(feature = "queue")]
pub mod maintenance;
#[cfg(feature = "eventstore")]
pub use pgstrata_eventstore as eventstore;
#[cfg(feature = "webhooks")]
pub use pgstrata_webhooks as webhooks;

use pgstrata_core::migrate::Step;
use sqlx::PgPool;

/// Every module compiled into this build (by cargo feature), in no particular order.
pub fn available_modules() -> Vec<&'static Module> {
    vec![
        #[cfg(feature = "tenancy")]
        &pgstrata_tenancy::MODULE,
        #[cfg(feature = "rbac")]
        &pgstrata_rbac::MODULE,
        #[cfg(feature = "queue")]
        &pgstrata_queue::MODULE,
        #[cfg(feature = "billing")]
        &pgstrata_billing::MODULE,
        #[cfg(feature = "audit")]
        &pgstrata_audit::MODULE,
        #[cfg(feature = "events")]
        &pgstrata_events::MODULE,
        #[cfg(feature = "outbox")]
        &pgstrata_outbox::MODULE,
        #[cfg(feature = "eventstore")]
        &pgstrata_eventstore::MODULE,
        #[cfg(feature = "webhooks")]
        &pgstrata_webhooks::MODULE,
    ]
}

/// A set of enabled modules, ordered by their dependencies.
#[derive(Debug, Clone)]
pub struct Backend {
    migrator: Migrator,
}

/// Builds a [`Backend`] from chosen modules.
#[derive(Debug, Default)]
pub struct BackendBuilder {
    modules: Vec<&'static Module>,
    lock_wait: pgstrata_core::migrate::LockWait,
}

impl BackendBuilder {
    /// Enables a module; the modules it depends on are enabled with it (see [`Self::build`]).
    pub fn with(mut self, module: &'static Module) -> Self {
        self.modules.push(module);
        self
    }

    /// Enables a module compiled into this build by name, e.g. `"tenancy"`.
    pub fn with_named(self, name: &str) -> Result<Self, MigrateError> {
        let module = available_modules()
            .into_iter()
            .find(|m| m.name == name)
            .ok_or_else(|| MigrateError::UnknownModule(name.into()))?;
        Ok(self.with(module))
    }

    /// How a migration run waits for another run's lease: a timeout and a progress callback.
    pub fn lock_wait(mut self, lock_wait: pgstrata_core::migrate::LockWait) -> Self {
        self.lock_wait = lock_wait;
        self
    }

    /// Adds the modules the chosen ones depend on (transitively; `rbac` brings `tenancy`) and
    /// orders them. A dependency must be compiled into this build (its cargo feature).
    pub fn build(mut self) -> Result<Backend, MigrateError> {
        let available = available_modules();
        let mut i = 0;
        while i < self.modules.len() {
            for dep in self.modules[i].depends_on {
                if !self.modules.iter().any(|m| m.name == *dep) {
                    let found =
                        available
                            .iter()
                            .find(|m| m.name == *dep)
                            .ok_or_else(|| MigrateError::MissingDependency {
                                module: self.modules[i].name.into(),
                                missing: format!("{dep} (enable the `{dep}` feature of pgstrata)"),
                            })?;
                    self.modules.push(found);
                }
            }
            i += 1;
        }
        Ok(Backend {
            migrator: Migrator::new(self.modules)?.with_lock_wait(self.lock_wait),
        })
    }
}

impl Backend {
    pub fn builder() -> BackendBuilder {
        BackendBuilder::default()
    }

    /// Every module compiled into this build.
    pub fn all() -> Result<Self, MigrateError> {
        Ok(Backend {
            migrator: Migrator::new(available_modules())?,
        })
    }

    /// The enabled modules in dependency order.
    pub fn modules(&self) -> &[&'static Module] {
        self.migrator.modules()
    }

    /// The migrator, for status, down migrations and seeding.
    pub fn migrator(&self) -> &Migrator {
        &self.migrator
    }

    /// Applies every pending migration of every enabled module, then the modules'
    /// `after_migrate` steps (audit's defaults) if anything was applied. Safe to call from
    /// many processes at once: one applies, the others wait and find nothing left to do.
    ///
    /// Needs a direct connection to PostgreSQL, not a transaction pooler: the run holds its
    /// lease on one session and refuses to go on when its statements reach another.
    pub async fn migrate(&self, pool: &PgPool) -> Result<Vec<Step>, MigrateError> {
        let mut conn = pool.acquire().await.map_err(MigrateError::from)?;
        self.migrator.up(&mut conn).await
    }
}

/// The README's Rust examples are compiled as doc tests, so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
