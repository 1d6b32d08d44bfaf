//! The migration engine every module uses.
//!
//! - Each module ships refinery-format files `V{n}__{name}.sql` with a paired
//!   `V{n}__{name}.down.sql`, embedded at compile time with [`migration!`](crate::migration).
//! - refinery orders, checksums and applies the up files through its `driver` module; each module has
//!   its own history table `pgstrata.<module>_history`, so modules version independently.
//! - A whole run (every module, up or down) holds the migration lease, a row of
//!   `pgstrata.migration_lock` that only the schemas' owner may update, so N app instances
//!   starting at once apply each migration exactly once and no other role can block them.
//! - Down runs the `.down.sql` files newest first and removes each history row in the same
//!   transaction; target 0 removes the module and its history table. Removing a module is
//!   refused while another module applied in the database depends on it (read from the history
//!   tables' comments, which record each module's dependencies).
//! - A module may declare SQL that runs after every run that applied a migration
//!   ([`Module::after_migrate`]), so every path that migrates (the CLI, `Backend::migrate`,
//!   tests) runs the same lifecycle.

mod driver;

use crate::error::DbError;
use driver::RefineryConn;
use refinery_core::{Runner, Target};
use sqlx::{Connection, PgConnection};
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Schema that holds the per-module history tables.
pub const HISTORY_SCHEMA: &str = "pgstrata";

/// One migration: its version, name and both directions of SQL.
#[derive(Debug, Clone, Copy)]
pub struct MigrationFile {
    pub version: i32,
    pub name: &'static str,
    pub up: &'static str,
    pub down: &'static str,
}

impl MigrationFile {
    /// The refinery name, `V{n}__{name}`.
    pub fn refinery_name(&self) -> String {
        format!("V{}__{}", self.version, self.name)
    }

    /// The checksum refinery records for this migration.
    pub fn checksum(&self) -> Result<u64, MigrateError> {
        Ok(self.refinery_migration()?.checksum())
    }

    fn refinery_migration(&self) -> Result<refinery_core::Migration, MigrateError> {
        refinery_core::Migration::unapplied(&self.refinery_name(), self.up).map_err(|e| MigrateError::InvalidModule {
            module: String::new(),
            reason: format!("migration {} is misnamed: {e}", self.refinery_name()),
        })
    }
}

/// Embeds `V<version>__<name>.sql` and its `.down.sql` from the calling crate's `migrations/`
/// folder. In the repository that folder is a symlink to the top-level `migrations/<module>/`
/// (the SQL's one home); `cargo package` follows it, so a published crate carries its files.
/// The module name is kept in the call for the reader: it names that folder.
#[macro_export]
macro_rules! migration {
    ($module:literal, $version:literal, $name:literal) => {
        $crate::migrate::MigrationFile {
            version: $version,
            name: $name,
            up: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/migrations/V",
                $version,
                "__",
                $name,
                ".sql"
            )),
            down: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/migrations/V",
                $version,
                "__",
                $name,
                ".down.sql"
            )),
        }
    };
}

/// A module: a Postgres schema of the same name, its migrations and its seed data.
#[derive(Debug)]
pub struct Module {
    /// Module and Postgres schema name, e.g. `tenancy`.
    pub name: &'static str,
    /// Modules whose schema this one references; they migrate first and revert last.
    pub depends_on: &'static [&'static str],
    /// Migrations in version order.
    pub migrations: &'static [MigrationFile],
    /// Demo data (idempotent SQL), loaded by `pgstrata seed`.
    pub seed: &'static str,
    /// SQL run after every migration run that applied something, while this module is
    /// installed (audit: `SELECT audit.enable_defaults()`, which audits the tables of modules
    /// migrated after it). Idempotent.
    pub after_migrate: Option<&'static str>,
    /// The Rust type codegen gives a column, by `table.column`: the module's typed ids and
    /// state enums (e.g. `("memberships.id", "crate::MembershipId")`). Unlisted `tenant_id` and
    /// `user_id` uuid columns get core's `TenantId` and `UserId`; every other column the type
    /// of its SQL type.
    pub column_types: &'static [(&'static str, &'static str)],
    /// The module's periodic work (sealing, retention, partitions): run as jobs of the queue by
    /// `pgstrata worker`, or scheduled with pg_cron by `schemas/<module>/cron.sql`, which a test
    /// keeps equal to this list.
    pub maintenance: &'static [Maintenance],
}

/// One periodic task of a module: a SQL statement, when it runs, and the role it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Maintenance {
    /// `<module>.<task>`, e.g. `audit.seal`; pg_cron's job for it is `pgstrata:<db>:<name>`.
    pub name: &'static str,
    /// A five-field cron expression, in UTC.
    pub schedule: &'static str,
    /// The statement it runs (one statement, no parameters).
    pub sql: &'static str,
    /// The role that may run it: `pgstrata_worker`, or `pgstrata_billing_sync` for billing's.
    pub role: &'static str,
}

impl Module {
    /// The history table of this module, schema-qualified.
    pub fn history_table(&self) -> String {
        format!("{HISTORY_SCHEMA}.{}_history", self.name)
    }

    /// The source path of a migration, as a user would find it in the repository.
    pub fn file_path(&self, file: &MigrationFile) -> String {
        format!("migrations/{}/{}.sql", self.name, file.refinery_name())
    }

    /// The latest version this build knows.
    pub fn latest_version(&self) -> i32 {
        self.migrations.iter().map(|m| m.version).max().unwrap_or(0)
    }

    /// The comment on the module's history table: it records the module's dependencies in the
    /// database, where a later `down` reads them.
    pub fn history_comment(&self) -> String {
        format!(
            "pgstrata module {}: migration history; {DEPENDS_ON_TAG} {}",
            self.name,
            self.depends_on.join(",")
        )
    }

    /// The consolidated DDL of the module: its up migrations in order, each followed by the
    /// history row the migrator would write, as one script to load with psql (this is what
    /// `schemas/<module>/schema.sql` holds). A database loaded from it is one the migrator
    /// sees as migrated, so `pgstrata migrate up` upgrades it later.
    pub fn schema_sql(&self) -> String {
        let mut out = format!(
            "-- pgstrata module `{}`: consolidated schema (migrations V1..V{}).\n\
             -- Generated by `pgstrata schema print {}`; load with: psql -v ON_ERROR_STOP=1 -f schema.sql\n\
             -- Each migration is recorded in {} as `pgstrata migrate` records it, so the migrator\n\
             -- can upgrade this database later.\n",
            self.name,
            self.latest_version(),
            self.name,
            self.history_table()
        );
        out.push_str(&format!(
            "\nCREATE SCHEMA IF NOT EXISTS {HISTORY_SCHEMA};\n{};\nCOMMENT ON TABLE {} IS '{}';\n",
            history_table_ddl(&self.history_table()),
            self.history_table(),
            self.history_comment()
        ));
        for file in self.migrations {
            self.push_recorded(&mut out, file);
        }
        self.push_after_migrate(&mut out);
        out
    }

    /// The upgrade of a psql install from `version - 1` to `version`
    /// (`schemas/<module>/upgrades/V{n}__{name}.sql`): the migration and its history row in one
    /// transaction, refused unless the database is at `version - 1`, then the after-migrate
    /// step. `None` for V1 (that is `schema.sql`) and for versions this build does not have.
    pub fn upgrade_sql(&self, version: i32) -> Option<String> {
        let file = self.migrations.iter().find(|m| m.version == version && version > 1)?;
        let history = self.history_table();
        let from = version - 1;
        let mut out = format!(
            "-- pgstrata module `{name}`: upgrade from V{from} to V{version} ({file_name}).\n\
             -- Generated by `pgstrata schema upgrade {name} {version}`; apply with:\n\
             --   psql -v ON_ERROR_STOP=1 -f {upgrade_path}\n\
             -- after every earlier upgrade. It refuses a database that is not at V{from} and records\n\
             -- itself in {history}, as `pgstrata migrate` does, so the two can be mixed.\n\n\
             BEGIN;\n\n\
             DO $pgstrata_upgrade$\n\
             DECLARE\n    v_at int;\n\
             BEGIN\n\
             \x20   IF to_regclass('{history}') IS NULL THEN\n\
             \x20       RAISE EXCEPTION '{name} has no migration history: load schemas/{name}/schema.sql, or adopt an existing install with `pgstrata migrate baseline`';\n\
             \x20   END IF;\n\
             \x20   SELECT coalesce(max(version), 0) INTO v_at FROM {history};\n\
             \x20   IF v_at <> {from} THEN\n\
             \x20       RAISE EXCEPTION '{name} is at V%, and this file upgrades V{from} to V{version}', v_at;\n\
             \x20   END IF;\n\
             END\n\
             $pgstrata_upgrade$;\n",
            name = self.name,
            file_name = file.refinery_name(),
            upgrade_path = self.upgrade_path(file),
        );
        self.push_recorded(&mut out, file);
        self.push_after_migrate(&mut out);
        out.push_str("\nCOMMIT;\n");
        Some(out)
    }

    /// Where [`Module::upgrade_sql`] is kept in the repository.
    pub fn upgrade_path(&self, file: &MigrationFile) -> String {
        format!("schemas/{}/upgrades/{}.sql", self.name, file.refinery_name())
    }

    /// A migration's SQL followed by the history row `pgstrata migrate` would write for it.
    fn push_recorded(&self, out: &mut String, file: &MigrationFile) {
        out.push_str(&format!("\n-- ==== {} ====\n\n", self.file_path(file)));
        out.push_str(file.up.trim_end());
        out.push('\n');
        // A misnamed file has no checksum; `Migrator::new` refuses such a module anyway.
        match file.checksum() {
            Ok(checksum) => out.push_str(&format!(
                "\nINSERT INTO {} (version, name, applied_on, checksum)\n\
                 VALUES ({}, '{}', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), '{}');\n",
                self.history_table(),
                file.version,
                file.name,
                checksum
            )),
            Err(e) => out.push_str(&format!("\n-- not recorded: {e}\n")),
        }
    }

    fn push_after_migrate(&self, out: &mut String) {
        if let Some(sql) = self.after_migrate {
            let sql = sql.trim_end().trim_end_matches(';');
            out.push_str(&format!("\n-- ==== after the migrations ====\n\n{sql};\n"));
        }
    }
}

/// Marks the dependency list in a history table's comment.
const DEPENDS_ON_TAG: &str = "depends_on:";

/// refinery's history table, created the way refinery creates it.
fn history_table_ddl(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (\n    version INT4 PRIMARY KEY,\n    name VARCHAR(255),\n    \
         applied_on VARCHAR(255),\n    checksum VARCHAR(255))"
    )
}

/// How far [`Migrator::revert`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownTo {
    /// The newest applied migration only (of the one module, or of all the selected modules).
    OneStep,
    /// Every migration newer than this version; 0 removes the module.
    Version(i32),
}

/// Whether a revert may remove a module (run its first migration's down file, which drops its
/// schema, and drop its history table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Allowed,
    Refused,
}

/// One migration a run would apply or revert, with the SQL it would run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStep {
    pub module: &'static str,
    pub version: i32,
    pub name: String,
    /// The file the SQL comes from, e.g. `migrations/tenancy/V1__tenancy.down.sql`.
    pub file: String,
    pub sql: &'static str,
}

/// What a revert would do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DownPlan {
    /// Newest first.
    pub steps: Vec<PlannedStep>,
    /// Modules left with no migration: their schema and history table are dropped.
    pub removed: Vec<&'static str>,
}

/// Who holds the migration lease a run is waiting for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    pub pid: Option<i32>,
    /// The holder's `application_name` (`pgstrata migrate <id>`).
    pub holder: Option<String>,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// How long this run has waited so far.
    pub waited: Duration,
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the migration lock held by pid ")?;
        match self.pid {
            Some(pid) => write!(f, "{pid}")?,
            None => write!(f, "?")?,
        }
        if let Some(since) = self.since {
            write!(f, " since {}", since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))?;
        }
        write!(f, " (waited {} s)", self.waited.as_secs())
    }
}

/// How a run waits for the migration lease while another run holds it.
#[derive(Clone, Default)]
pub struct LockWait {
    /// Give up after this long with [`MigrateError::LockTimeout`]; `None` waits as long as the
    /// holder's session lives.
    pub timeout: Option<Duration>,
    /// Called when the run starts to wait, then every [`LockWait::REPORT_EVERY`].
    pub on_wait: Option<OnWait>,
}

/// The progress callback of [`LockWait`].
pub type OnWait = Arc<dyn Fn(&LockHolder) + Send + Sync>;

impl LockWait {
    /// How often `on_wait` is called while the run waits.
    pub const REPORT_EVERY: Duration = Duration::from_secs(5);
}

impl fmt::Debug for LockWait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockWait")
            .field("timeout", &self.timeout)
            .field("on_wait", &self.on_wait.is_some())
            .finish()
    }
}

/// Why a migration run stopped. Nothing is half-applied: each migration commits or rolls back
/// as a whole, and a run stops at the first failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    #[error("module {module:?} is not valid: {reason}")]
    InvalidModule { module: String, reason: String },

    #[error("unknown module {0:?}")]
    UnknownModule(String),

    #[error("module {module:?} depends on {missing:?}, which is not enabled")]
    MissingDependency { module: String, missing: String },

    #[error("modules depend on each other in a cycle: {0}")]
    DependencyCycle(String),

    #[error(
        "{file} was changed after it was applied (recorded checksum {applied}, file checksum {current}); \
         applied migrations are immutable: restore the file and put the change in a new migration"
    )]
    Divergent {
        module: String,
        file: String,
        applied: u64,
        current: u64,
    },

    #[error("version {version} of module {module:?} is applied in the database but this build has no such migration")]
    Missing { module: String, version: i32 },

    #[error(
        "cannot remove module {module:?}: module {dependent:?} is applied in this database and depends on it; \
         remove {dependent:?} first"
    )]
    Dependent { module: String, dependent: String },

    #[error(
        "cannot remove module {module:?}: module {other:?} is applied in this database, this build does not know \
         it and its history does not say what it depends on; remove {other:?} first or use a build that includes it"
    )]
    UnknownApplied { module: String, other: String },

    #[error("target version {0} is below 0")]
    InvalidTarget(i32),

    #[error(
        "this would remove module(s) {}: their schemas and data are dropped; confirm the removal \
         (`pgstrata migrate down ... --yes`)", .0.join(", ")
    )]
    RemovalNotConfirmed(Vec<String>),

    #[error("timed out waiting for {0}; try again when that run has finished, or end its session if it is stuck")]
    LockTimeout(LockHolder),

    #[error(
        "a migration run needs one server session, and {0}: a transaction pooler (PgBouncer in \
         transaction mode) is in between; connect migrations directly to PostgreSQL"
    )]
    NotOneSession(String),

    #[error("after migrating, module {module:?}'s after_migrate step failed: {source}")]
    AfterMigrate {
        module: String,
        #[source]
        source: DbError,
    },

    #[error("applying {file} failed: {source}")]
    Apply {
        file: String,
        #[source]
        source: DbError,
    },

    #[error("reverting {file} failed: {source}")]
    Revert {
        file: String,
        #[source]
        source: DbError,
    },

    #[error("migration history: {0}")]
    Db(#[from] DbError),

    #[error("refinery: {0}")]
    Refinery(String),
}

impl From<sqlx::Error> for MigrateError {
    fn from(e: sqlx::Error) -> Self {
        // 26000: a statement prepared a moment ago on this connection is gone, which happens
        // when a transaction pooler sends the next message to another server session.
        if let Some(db) = e.as_database_error()
            && db.code().as_deref() == Some("26000")
        {
            return MigrateError::NotOneSession(format!(
                "the server lost a statement just prepared ({})",
                db.message()
            ));
        }
        MigrateError::Db(e.into())
    }
}

/// State of one migration in one database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MigrationState {
    Applied,
    Pending,
    /// Applied, but the file changed since.
    Divergent,
    /// Applied, but this build has no such file.
    Missing,
}

impl fmt::Display for MigrationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MigrationState::Applied => "applied",
            MigrationState::Pending => "pending",
            MigrationState::Divergent => "DIVERGENT",
            MigrationState::Missing => "MISSING",
        })
    }
}

/// One row of `migrate status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MigrationStatus {
    pub module: &'static str,
    pub version: i32,
    pub name: String,
    pub state: MigrationState,
    pub applied_on: Option<String>,
}

/// A migration applied or reverted by a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub module: &'static str,
    pub version: i32,
    pub name: String,
}

/// An applied history row as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
struct HistoryRow {
    version: i32,
    name: String,
    applied_on: String,
    checksum: String,
}

/// Runs the migrations of a set of modules in dependency order.
#[derive(Debug, Clone)]
pub struct Migrator {
    /// Topologically sorted: every module after the modules it depends on.
    modules: Vec<&'static Module>,
    lock_wait: LockWait,
}

impl Migrator {
    /// Orders the modules by their dependencies; every dependency must be in the set.
    pub fn new(modules: impl IntoIterator<Item = &'static Module>) -> Result<Self, MigrateError> {
        let mut pending: Vec<&'static Module> = Vec::new();
        for m in modules {
            if !pending.iter().any(|p| p.name == m.name) {
                pending.push(m);
            }
        }
        for m in &pending {
            validate_module(m)?;
            for dep in m.depends_on {
                if !pending.iter().any(|p| p.name == *dep) {
                    return Err(MigrateError::MissingDependency {
                        module: m.name.into(),
                        missing: (*dep).into(),
                    });
                }
            }
        }
        let mut sorted: Vec<&'static Module> = Vec::new();
        while !pending.is_empty() {
            let ready = pending
                .iter()
                .position(|m| m.depends_on.iter().all(|d| sorted.iter().any(|s| s.name == *d)));
            match ready {
                Some(i) => sorted.push(pending.remove(i)),
                None => {
                    let names: Vec<_> = pending.iter().map(|m| m.name).collect();
                    return Err(MigrateError::DependencyCycle(names.join(", ")));
                }
            }
        }
        Ok(Self {
            modules: sorted,
            lock_wait: LockWait::default(),
        })
    }

    /// How runs wait for the migration lease (default: as long as the holder lives, silently).
    pub fn with_lock_wait(mut self, lock_wait: LockWait) -> Self {
        self.lock_wait = lock_wait;
        self
    }

    /// Modules in dependency order.
    pub fn modules(&self) -> &[&'static Module] {
        &self.modules
    }

    /// The named module and every module it depends on (transitively), in dependency order.
    pub fn with_dependencies(&self, name: &str) -> Result<Vec<&'static Module>, MigrateError> {
        let mut wanted = BTreeSet::from([self.find(name)?.name]);
        // Dependents come after their dependencies, so one pass from the end collects them all.
        for m in self.modules.iter().rev() {
            if wanted.contains(m.name) {
                wanted.extend(m.depends_on.iter().copied());
            }
        }
        Ok(self
            .modules
            .iter()
            .filter(|m| wanted.contains(m.name))
            .copied()
            .collect())
    }

    fn select(&self, only: Option<&str>) -> Result<Vec<&'static Module>, MigrateError> {
        match only {
            None => Ok(self.modules.clone()),
            Some(name) => Ok(vec![self.find(name)?]),
        }
    }

    /// Applies every pending migration of every module.
    pub async fn up(&self, conn: &mut PgConnection) -> Result<Vec<Step>, MigrateError> {
        self.up_to(conn, None, None).await
    }

    /// Applies pending migrations of one module and the modules it depends on (or of all, with
    /// `None`), the named module up to `target` (or the latest) and its dependencies to their
    /// latest. After a run that applied anything, the `after_migrate` step of every installed
    /// module runs, under the same lease.
    pub async fn up_to(
        &self,
        conn: &mut PgConnection,
        only: Option<&str>,
        target: Option<i32>,
    ) -> Result<Vec<Step>, MigrateError> {
        let selected = match only {
            None => self.modules.clone(),
            Some(name) => self.with_dependencies(name)?,
        };
        self.with_lock(conn, async |conn: &mut PgConnection, lease: &Lease| {
            sqlx::raw_sql("CREATE SCHEMA IF NOT EXISTS pgstrata")
                .execute(&mut *conn)
                .await?;
            let mut steps = Vec::new();
            for module in selected {
                lease.check(conn).await?;
                let module_target = match only {
                    Some(name) if name != module.name => None,
                    _ => target,
                };
                steps.extend(up_module(conn, module, module_target).await?);
            }
            if !steps.is_empty() {
                self.after_migrate(conn).await?;
            }
            Ok(steps)
        })
        .await
    }

    /// The migrations [`Migrator::up_to`] would apply now, with their SQL, and the
    /// `after_migrate` steps that would follow (module, SQL). Takes no lease and changes nothing.
    pub async fn plan_up(
        &self,
        conn: &mut PgConnection,
        only: Option<&str>,
        target: Option<i32>,
    ) -> Result<(Vec<PlannedStep>, Vec<(&'static str, &'static str)>), MigrateError> {
        let selected = match only {
            None => self.modules.clone(),
            Some(name) => self.with_dependencies(name)?,
        };
        let mut steps = Vec::new();
        let mut installed = BTreeSet::new();
        for module in &selected {
            let module_target = match only {
                Some(name) if name != module.name => None,
                _ => target,
            };
            let history = read_history(conn, module).await?;
            check_history(module, &history)?;
            for file in module.migrations {
                let wanted = module_target.is_none_or(|t| file.version <= t);
                if wanted && !history.iter().any(|h| h.version == file.version) {
                    steps.push(PlannedStep {
                        module: module.name,
                        version: file.version,
                        name: file.name.into(),
                        file: module.file_path(file),
                        sql: file.up,
                    });
                    installed.insert(module.name);
                }
            }
        }
        let mut after = Vec::new();
        if !steps.is_empty() {
            for module in &self.modules {
                if let Some(sql) = module.after_migrate
                    && (installed.contains(module.name) || applied_version(conn, module).await? > 0)
                {
                    after.push((module.name, sql));
                }
            }
        }
        Ok((steps, after))
    }

    /// Reverts migrations newer than `target`, dependents first. Target 0 removes the module
    /// (its schema and its history table); it is refused while another module applied in the
    /// database depends on it. Same as [`Migrator::revert`] with [`DownTo::Version`] and
    /// [`Removal::Allowed`].
    pub async fn down(
        &self,
        conn: &mut PgConnection,
        only: Option<&str>,
        target: i32,
    ) -> Result<Vec<Step>, MigrateError> {
        self.revert(conn, only, DownTo::Version(target), Removal::Allowed).await
    }

    /// What [`Migrator::revert`] would do now. Takes no lease and changes nothing; refuses as
    /// the revert would (a target below 0, a module another applied module depends on).
    pub async fn plan_down(
        &self,
        conn: &mut PgConnection,
        only: Option<&str>,
        to: DownTo,
    ) -> Result<DownPlan, MigrateError> {
        if let DownTo::Version(v) = to
            && v < 0
        {
            return Err(MigrateError::InvalidTarget(v));
        }
        let selected = self.select(only)?;
        let mut histories = Vec::new();
        for module in &selected {
            let history = read_history(conn, module).await?;
            histories.push((*module, history));
        }
        // (module, history row) pairs to revert, newest first.
        let mut rows: Vec<(&'static Module, HistoryRow)> = Vec::new();
        match to {
            DownTo::Version(v) => {
                for (module, history) in histories.iter().rev() {
                    for row in history.iter().rev().filter(|h| h.version > v) {
                        rows.push((module, row.clone()));
                    }
                }
            }
            DownTo::OneStep => {
                // The newest applied migration; on a tie, the dependent module's.
                let mut newest: Option<(&'static Module, &HistoryRow, time::OffsetDateTime)> = None;
                for (module, history) in histories.iter().rev() {
                    if let Some(row) = history.iter().max_by_key(|h| h.version) {
                        let at = parse_applied_on(row)?;
                        if newest.as_ref().is_none_or(|(_, _, best)| at > *best) {
                            newest = Some((module, row, at));
                        }
                    }
                }
                rows.extend(newest.map(|(m, row, _)| (m, row.clone())));
            }
        }
        let mut plan = DownPlan::default();
        for (module, row) in &rows {
            let file = applied_file(module, row)?;
            plan.steps.push(PlannedStep {
                module: module.name,
                version: row.version,
                name: row.name.clone(),
                file: module.file_path(file).replace(".sql", ".down.sql"),
                sql: file.down,
            });
        }
        for (module, history) in &histories {
            let reverted = rows.iter().filter(|(m, _)| m.name == module.name).count();
            let removed = match to {
                DownTo::Version(v) => v == 0,
                DownTo::OneStep => reverted > 0 && reverted == history.len(),
            };
            if removed && (reverted > 0 || history_exists(conn, module).await?) {
                plan.removed.push(module.name);
            }
        }
        self.check_dependents(conn, &plan.removed).await?;
        Ok(plan)
    }

    /// Reverts as far as `to` says, dependents first; see [`Migrator::plan_down`]. Nothing
    /// applied is a no-op that takes no lease. A revert that removes a module needs
    /// [`Removal::Allowed`].
    pub async fn revert(
        &self,
        conn: &mut PgConnection,
        only: Option<&str>,
        to: DownTo,
        removal: Removal,
    ) -> Result<Vec<Step>, MigrateError> {
        let preview = self.plan_down(conn, only, to).await?;
        if preview.steps.is_empty() && preview.removed.is_empty() {
            return Ok(Vec::new());
        }
        if !preview.removed.is_empty() && removal == Removal::Refused {
            return Err(MigrateError::RemovalNotConfirmed(
                preview.removed.iter().map(|m| (*m).to_owned()).collect(),
            ));
        }
        self.with_lock(conn, async |conn: &mut PgConnection, lease: &Lease| {
            // Planned again under the lease: another run may have changed the history since.
            let plan = self.plan_down(conn, only, to).await?;
            if !plan.removed.is_empty() && removal == Removal::Refused {
                return Err(MigrateError::RemovalNotConfirmed(
                    plan.removed.iter().map(|m| (*m).to_owned()).collect(),
                ));
            }
            let mut steps = Vec::new();
            for planned in &plan.steps {
                lease.check(conn).await?;
                let module = self.find(planned.module)?;
                let mut tx = conn.begin().await?;
                crate::sql::raw(planned.sql)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| MigrateError::Revert {
                        file: planned.file.clone(),
                        source: e.into(),
                    })?;
                let delete = format!("DELETE FROM {} WHERE version = $1", module.history_table());
                crate::sql::trusted(delete)
                    .bind(planned.version)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                tracing::info!(module = planned.module, version = planned.version, name = %planned.name, "reverted migration");
                steps.push(Step {
                    module: planned.module,
                    version: planned.version,
                    name: planned.name.clone(),
                });
            }
            for name in &plan.removed {
                let module = self.find(name)?;
                if history_exists(conn, module).await? {
                    let drop = format!("DROP TABLE {}", module.history_table());
                    crate::sql::trusted(drop).execute(&mut *conn).await?;
                }
            }
            drop_history_schema_if_unused(conn).await?;
            Ok(steps)
        })
        .await
    }

    /// Refuses to remove a module while another module applied in the database depends on it.
    /// The applied modules are the history tables with rows; each table's comment names the
    /// module's dependencies (a table without one falls back to this build's declaration).
    async fn check_dependents(&self, conn: &mut PgConnection, removed: &[&'static str]) -> Result<(), MigrateError> {
        if removed.is_empty() {
            return Ok(());
        }
        let tables: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT c.relname::text, pg_catalog.obj_description(c.oid, 'pg_class')
               FROM pg_catalog.pg_class c
              WHERE c.relnamespace = pg_catalog.to_regnamespace('pgstrata') AND c.relkind = 'r'
                AND c.relname LIKE '%\\_history'
              ORDER BY 1",
        )
        .fetch_all(&mut *conn)
        .await?;
        for (table, comment) in tables {
            let Some(name) = table.strip_suffix("_history") else {
                continue;
            };
            if removed.contains(&name) {
                continue;
            }
            let quoted = table.replace('"', "\"\"");
            let (applied,): (bool,) =
                crate::sql::trusted_as(format!("SELECT EXISTS (SELECT 1 FROM {HISTORY_SCHEMA}.\"{quoted}\")"))
                    .fetch_one(&mut *conn)
                    .await?;
            if !applied {
                continue;
            }
            let recorded = comment.as_deref().and_then(|c| {
                c.split_once(DEPENDS_ON_TAG)
                    .map(|(_, deps)| deps.split(',').map(|d| d.trim().to_owned()).collect::<Vec<_>>())
            });
            let depends_on: Vec<String> = match recorded {
                Some(deps) => deps,
                None => match self.modules.iter().find(|m| m.name == name) {
                    Some(m) => m.depends_on.iter().map(|d| (*d).to_owned()).collect(),
                    None => {
                        return Err(MigrateError::UnknownApplied {
                            module: removed.join(", "),
                            other: name.into(),
                        });
                    }
                },
            };
            if let Some(module) = removed.iter().find(|r| depends_on.iter().any(|d| d == **r)) {
                return Err(MigrateError::Dependent {
                    module: (*module).into(),
                    dependent: name.into(),
                });
            }
        }
        Ok(())
    }

    /// Runs the `after_migrate` step of every installed module, in dependency order.
    async fn after_migrate(&self, conn: &mut PgConnection) -> Result<(), MigrateError> {
        for module in &self.modules {
            if let Some(sql) = module.after_migrate
                && applied_version(conn, module).await? > 0
            {
                tracing::debug!(module = module.name, "running the after-migrate step");
                crate::sql::raw(sql)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| MigrateError::AfterMigrate {
                        module: module.name.into(),
                        source: e.into(),
                    })?;
            }
        }
        Ok(())
    }

    /// Applied, pending, divergent and missing migrations of every module.
    pub async fn status(&self, conn: &mut PgConnection) -> Result<Vec<MigrationStatus>, MigrateError> {
        let mut out = Vec::new();
        for module in &self.modules {
            let history = read_history(conn, module).await?;
            for file in module.migrations {
                let row = history.iter().find(|h| h.version == file.version);
                let state = match row {
                    None => MigrationState::Pending,
                    Some(h) if h.checksum == file.checksum()?.to_string() && h.name == file.name => {
                        MigrationState::Applied
                    }
                    Some(_) => MigrationState::Divergent,
                };
                out.push(MigrationStatus {
                    module: module.name,
                    version: file.version,
                    name: file.name.into(),
                    state,
                    applied_on: row.map(|h| h.applied_on.clone()),
                });
            }
            for h in history
                .iter()
                .filter(|h| !module.migrations.iter().any(|f| f.version == h.version))
            {
                out.push(MigrationStatus {
                    module: module.name,
                    version: h.version,
                    name: h.name.clone(),
                    state: MigrationState::Missing,
                    applied_on: Some(h.applied_on.clone()),
                });
            }
        }
        Ok(out)
    }

    /// Loads every module's seed data, in dependency order, in one transaction.
    pub async fn seed(&self, conn: &mut PgConnection) -> Result<(), MigrateError> {
        let mut tx = conn.begin().await?;
        for module in &self.modules {
            crate::sql::raw(module.seed)
                .execute(&mut *tx)
                .await
                .map_err(|e| MigrateError::Apply {
                    file: format!("schemas/{}/seed.sql", module.name),
                    source: e.into(),
                })?;
        }
        tx.commit().await?;
        Ok(())
    }

    fn find(&self, name: &str) -> Result<&'static Module, MigrateError> {
        self.modules
            .iter()
            .find(|m| m.name == name)
            .copied()
            .ok_or_else(|| MigrateError::UnknownModule(name.into()))
    }

    /// Runs `f` while holding the migration lease on `conn`, and releases it on every path.
    ///
    /// The lease is the one row of `pgstrata.migration_lock`. Only roles that may UPDATE it
    /// (the owner; PUBLIC has no privilege on the table or its schema) can take it, unlike an
    /// advisory lock key, which any role can take to stall every migration. A lease outlives
    /// the run's per-migration transactions; it is held by this session's `application_name`,
    /// which is set to a unique value for the run, so a lease whose session has ended (the
    /// process died) is taken over instead of waited for, even if another session reuses its
    /// pid.
    async fn with_lock<T>(
        &self,
        conn: &mut PgConnection,
        f: impl AsyncFnOnce(&mut PgConnection, &Lease) -> Result<T, MigrateError>,
    ) -> Result<T, MigrateError> {
        ensure_lock_table(conn).await?;
        let previous_name: String = sqlx::query_scalar("SELECT current_setting('application_name')")
            .fetch_one(&mut *conn)
            .await?;
        let holder = format!("pgstrata migrate {}", uuid::Uuid::now_v7().simple());
        sqlx::query("SELECT set_config('application_name', $1, false)")
            .bind(&holder)
            .execute(&mut *conn)
            .await?;
        let span = tracing::info_span!("pgstrata.migrate", holder = %holder);
        let result = async {
            let lease = take_lease(conn, &holder, &self.lock_wait).await?;
            tracing::debug!(pid = lease.pid, "took the migration lease");
            let result = f(&mut *conn, &lease).await;
            let released = release_lease(conn, &holder).await;
            if let Err(e) = &result {
                tracing::error!(error = %e, "migration run failed");
            }
            result.and_then(|value| released.map(|_| value))
        }
        .instrument(span)
        .await;
        let restored = sqlx::query("SELECT set_config('application_name', $1, false)")
            .bind(&previous_name)
            .execute(&mut *conn)
            .await;
        let value = result?;
        restored?;
        Ok(value)
    }
}

/// The lease a run holds: the session that took it.
#[derive(Debug)]
struct Lease {
    pid: i32,
}

impl Lease {
    /// Every statement of a run must reach the session that holds the lease. Behind a
    /// transaction pooler consecutive statements may reach different server sessions, and
    /// the lease (a session's `application_name` and pid) would protect nothing.
    async fn check(&self, conn: &mut PgConnection) -> Result<(), MigrateError> {
        let pid: i32 = sqlx::query_scalar("SELECT pg_catalog.pg_backend_pid()")
            .fetch_one(&mut *conn)
            .await?;
        if pid != self.pid {
            return Err(MigrateError::NotOneSession(format!(
                "its statements reached two (backend pid {} holds the lease, {pid} answered now)",
                self.pid
            )));
        }
        Ok(())
    }
}

fn parse_applied_on(row: &HistoryRow) -> Result<time::OffsetDateTime, MigrateError> {
    time::OffsetDateTime::parse(&row.applied_on, &time::format_description::well_known::Rfc3339).map_err(|e| {
        MigrateError::Refinery(format!(
            "history row {}: applied_on {:?} is not RFC 3339: {e}",
            row.version, row.applied_on
        ))
    })
}

/// Applied rows must match this build's files (as refinery checks before a run).
fn check_history(module: &Module, history: &[HistoryRow]) -> Result<(), MigrateError> {
    for row in history {
        applied_file(module, row)?;
    }
    Ok(())
}

/// The file an applied history row was run from, refused when this build lacks it or its
/// checksum changed since.
fn applied_file<'m>(module: &'m Module, row: &HistoryRow) -> Result<&'m MigrationFile, MigrateError> {
    let Some(file) = module.migrations.iter().find(|f| f.version == row.version) else {
        return Err(MigrateError::Missing {
            module: module.name.into(),
            version: row.version,
        });
    };
    let current = file.checksum()?;
    if row.checksum != current.to_string() {
        return Err(MigrateError::Divergent {
            module: module.name.into(),
            file: module.file_path(file),
            applied: row.checksum.parse().unwrap_or_default(),
            current,
        });
    }
    Ok(file)
}

fn validate_module(m: &Module) -> Result<(), MigrateError> {
    let invalid = |reason: String| MigrateError::InvalidModule {
        module: m.name.into(),
        reason,
    };
    if m.name.is_empty() || !m.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return Err(invalid("name must be lowercase letters and underscores".into()));
    }
    let mut seen = BTreeSet::new();
    for f in m.migrations {
        if f.version < 1 || !seen.insert(f.version) {
            return Err(invalid(format!("version {} is repeated or below 1", f.version)));
        }
        f.refinery_migration()
            .map_err(|_| invalid(format!("{} is not a refinery name", f.refinery_name())))?;
    }
    Ok(())
}

/// Creates the history schema and the lease row unless they exist. Two migrators may race to
/// create them: the loser's duplicate-object error means the other one did it.
async fn ensure_lock_table(conn: &mut PgConnection) -> Result<(), MigrateError> {
    const CREATE: &str = "CREATE SCHEMA IF NOT EXISTS pgstrata;
        CREATE TABLE IF NOT EXISTS pgstrata.migration_lock (
            id         boolean     NOT NULL DEFAULT true PRIMARY KEY CHECK (id),
            holder_pid integer,
            holder     text,
            taken_at   timestamptz
        );
        COMMENT ON TABLE pgstrata.migration_lock IS
            'The migration lease: one row, updatable only by the schemas'' owner. citus: local';
        INSERT INTO pgstrata.migration_lock (id) VALUES (true) ON CONFLICT (id) DO NOTHING;";
    for attempt in 0..3 {
        match sqlx::raw_sql(CREATE).execute(&mut *conn).await {
            Ok(_) => return Ok(()),
            Err(e) if attempt < 2 && is_lost_create_race(&e) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn is_lost_create_race(e: &sqlx::Error) -> bool {
    // unique_violation on the catalogs, duplicate_table, duplicate_schema, duplicate_object
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| matches!(c.as_ref(), "23505" | "42P07" | "42P06" | "42710"))
}

/// Frees the lease, unless the run removed the lease table with the last module.
async fn release_lease(conn: &mut PgConnection, holder: &str) -> Result<(), MigrateError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('pgstrata.migration_lock') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if exists {
        sqlx::query(
            "UPDATE pgstrata.migration_lock SET holder_pid = NULL, holder = NULL, taken_at = NULL
              WHERE holder = $1",
        )
        .bind(holder)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// After the last module is removed, the history schema and its lease go too, so that a
/// database migrated down to 0 holds nothing of pgstrata. A migrator waiting on the lease
/// meanwhile finds the table gone and creates it again.
async fn drop_history_schema_if_unused(conn: &mut PgConnection) -> Result<(), MigrateError> {
    sqlx::raw_sql(
        "DO $$ BEGIN
             IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class
                             WHERE relnamespace = 'pgstrata'::regnamespace
                               AND relname NOT IN ('migration_lock', 'migration_lock_pkey'))
             THEN DROP SCHEMA pgstrata CASCADE; END IF;
         END $$",
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Waits until this session holds the lease: free, or held by a session that no longer exists.
/// Concurrent takers serialise on the row; the loser re-reads it, finds it held and waits,
/// reporting the holder through `wait.on_wait` and giving up after `wait.timeout`.
async fn take_lease(conn: &mut PgConnection, holder: &str, wait: &LockWait) -> Result<Lease, MigrateError> {
    let started = Instant::now();
    let mut reported: Option<Instant> = None;
    let mut pause = Duration::from_millis(20);
    loop {
        let attempt = sqlx::query_scalar::<_, i32>(
            "UPDATE pgstrata.migration_lock l
                SET holder_pid = pg_catalog.pg_backend_pid(), holder = $1, taken_at = pg_catalog.now()
              WHERE l.id AND (l.holder IS NULL OR NOT EXISTS (
                    SELECT 1 FROM pg_catalog.pg_stat_activity a
                     WHERE a.pid = l.holder_pid AND a.application_name = l.holder))
             RETURNING l.holder_pid",
        )
        .bind(holder)
        .fetch_optional(&mut *conn)
        .await;
        match attempt {
            Ok(Some(pid)) => return Ok(Lease { pid }),
            Ok(None) => {}
            // The holder removed the last module and the lease with it.
            Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42P01") => {
                ensure_lock_table(conn).await?;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        let waited = started.elapsed();
        let timed_out = wait.timeout.is_some_and(|t| waited >= t);
        let due = reported.is_none_or(|at| at.elapsed() >= LockWait::REPORT_EVERY);
        if timed_out || due {
            let current = current_holder(conn, waited).await?;
            if timed_out {
                tracing::warn!(
                    holder_pid = current.pid.unwrap_or_default(),
                    waited_ms = waited.as_millis() as u64,
                    "timed out waiting for the migration lock"
                );
                return Err(MigrateError::LockTimeout(current));
            }
            tracing::info!(
                holder_pid = current.pid.unwrap_or_default(),
                waited_ms = waited.as_millis() as u64,
                "waiting for the migration lock"
            );
            if let Some(report) = &wait.on_wait {
                report(&current);
            }
            reported = Some(Instant::now());
        }
        let mut sleep = pause;
        if let Some(t) = wait.timeout {
            sleep = sleep.min(t.saturating_sub(waited)).max(Duration::from_millis(1));
        }
        tokio::time::sleep(sleep).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

async fn current_holder(conn: &mut PgConnection, waited: Duration) -> Result<LockHolder, MigrateError> {
    type Row = (Option<i32>, Option<String>, Option<chrono::DateTime<chrono::Utc>>);
    let row: Option<Row> = sqlx::query_as("SELECT holder_pid, holder, taken_at FROM pgstrata.migration_lock")
        .fetch_optional(&mut *conn)
        .await?;
    let (pid, holder, since) = row.unwrap_or_default();
    Ok(LockHolder {
        pid,
        holder,
        since,
        waited,
    })
}

async fn history_exists(conn: &mut PgConnection, module: &Module) -> Result<bool, MigrateError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(module.history_table())
        .fetch_one(&mut *conn)
        .await?;
    Ok(exists)
}

async fn read_history(conn: &mut PgConnection, module: &Module) -> Result<Vec<HistoryRow>, MigrateError> {
    if !history_exists(conn, module).await? {
        return Ok(Vec::new());
    }
    // The table name comes from a validated module name, never from input.
    let sql = format!(
        "SELECT version, name, applied_on, checksum FROM {} ORDER BY version",
        module.history_table()
    );
    Ok(crate::sql::trusted_as::<HistoryRow>(sql).fetch_all(&mut *conn).await?)
}

async fn applied_version(conn: &mut PgConnection, module: &Module) -> Result<i32, MigrateError> {
    Ok(read_history(conn, module)
        .await?
        .iter()
        .map(|h| h.version)
        .max()
        .unwrap_or(0))
}

async fn up_module(
    conn: &mut PgConnection,
    module: &'static Module,
    target: Option<i32>,
) -> Result<Vec<Step>, MigrateError> {
    let migrations = module
        .migrations
        .iter()
        .map(|f| f.refinery_migration())
        .collect::<Result<Vec<_>, _>>()?;
    let mut runner = Runner::new(&migrations)
        .set_target(target.map_or(Target::Latest, Target::Version))
        .set_abort_divergent(true)
        .set_abort_missing(true);
    runner.set_migration_table_name(module.history_table());
    let mut driver = RefineryConn::new(conn);
    let report = match runner.run_async(&mut driver).await {
        Ok(report) => report,
        Err(e) => return Err(refinery_error(module, e, driver.last_error.take())),
    };
    let steps: Vec<Step> = report
        .applied_migrations()
        .iter()
        .map(|m| Step {
            module: module.name,
            version: m.version(),
            name: m.name().to_owned(),
        })
        .collect();
    for step in &steps {
        tracing::info!(module = step.module, version = step.version, name = %step.name, "applied migration");
    }
    if !steps.is_empty() {
        // Records the module's dependencies where a later `down` reads them.
        let comment = format!(
            "COMMENT ON TABLE {} IS '{}'",
            module.history_table(),
            module.history_comment()
        );
        crate::sql::trusted(comment).execute(&mut *conn).await?;
    }
    Ok(steps)
}

fn refinery_error(module: &Module, err: refinery_core::Error, db_error: Option<sqlx::Error>) -> MigrateError {
    use refinery_core::error::Kind;
    match err.kind() {
        Kind::DivergentVersion(applied, current) => {
            let file = module
                .migrations
                .iter()
                .find(|f| f.version == current.version())
                .map(|f| module.file_path(f))
                .unwrap_or_else(|| {
                    format!(
                        "migrations/{}/V{}__{}.sql",
                        module.name,
                        current.version(),
                        current.name()
                    )
                });
            MigrateError::Divergent {
                module: module.name.into(),
                file,
                applied: applied.checksum(),
                current: current.checksum(),
            }
        }
        Kind::MissingVersion(m) => MigrateError::Missing {
            module: module.name.into(),
            version: m.version(),
        },
        // refinery says "error applying migration V1__x": name our file and keep the
        // classified database error rather than its text.
        Kind::Connection(msg, source) => match (msg.strip_prefix("error applying migration "), db_error) {
            (Some(name), Some(db)) => MigrateError::Apply {
                file: format!("migrations/{}/{}.sql", module.name, name),
                source: db.into(),
            },
            (_, Some(db)) => MigrateError::Db(db.into()),
            (_, None) => MigrateError::Refinery(format!("{msg}: {source}")),
        },
        other => MigrateError::Refinery(other.to_string()),
    }
}
