//! `pgstrata`: the operator's command line.
//!
//! Every command connects to `--database-url` / `DATABASE_URL` and exits 2 without one: a
//! deploy script that lost its variable must fail, not migrate a scratch server. Only `demo`
//! (and `codegen`, which works on a scratch database of its own) start a throwaway PostgreSQL
//! from the local server binaries when no URL is given.

mod demo;
mod stripe;

use clap::{Args, Parser, Subcommand};
use pgstrata::core::connect::DatabaseUrl;
use pgstrata::core::migrate::{DownTo, LockWait, MigrationState, PlannedStep, Removal};
use pgstrata::core::server::ThrowawayServer;
use pgstrata::{Backend, MigrateError, Migrator};
use sqlx::{Connection, PgConnection};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

const EXIT_CODES: &str = "Exit codes:
  0  success (also: nothing to do)
  1  a check failed: doctor, migrate status (DIVERGENT or MISSING), codegen --check, audit verify;
     queue retry|cancel changed nothing (no such job, or its state does not allow it)
  2  usage: bad arguments, no database URL, an invalid URL, an unknown module
  3  refused as unsafe: removing a module without --yes, removing a module another applied
     module depends on, a target below 0, a transaction pooler's URL (pgbouncer=true)
  4  cannot connect (refused, authentication, --connect-timeout)
  5  timed out waiting for the migration lock (--lock-timeout)
  6  the work failed in the database (a migration, a statement)";

#[derive(Debug, Parser)]
#[command(
    name = "pgstrata",
    version,
    about = "Migrate, check and seed the pgstrata PostgreSQL modules",
    after_help = EXIT_CODES
)]
struct Cli {
    /// PostgreSQL URL (postgres:// or postgresql://). Required by every command that touches a
    /// database, except `demo` and `codegen`, which start a throwaway server without it.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,

    /// Modules to work on (comma-separated); `migrate up` adds the modules they depend on.
    /// Default: every module in this build.
    #[arg(long, value_delimiter = ',', global = true)]
    modules: Vec<String>,

    /// Seconds to wait for the connection to the database.
    #[arg(long, global = true, default_value_t = 10, value_name = "SECS")]
    connect_timeout: u64,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply, revert or list migrations.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Load the demo data of every module (idempotent).
    Seed,
    /// Check every tenant table against the isolation rules; exits 1 on any failure.
    Doctor {
        /// Print the findings as JSON.
        #[arg(long)]
        json: bool,
        /// Also check the tables of this schema of the application's (repeatable), with the
        /// same rules as pgstrata's own tables.
        #[arg(long = "schema", value_name = "SCHEMA")]
        schemas: Vec<String>,
    },
    /// Make an application table a tenant table: tenant_id (with --add-column, on an empty
    /// table), forced row-level security and the tenant policy; lists what it could not fix and
    /// exits 1 while anything is left. Run it as the table's owner.
    TenantTable {
        /// The table, schema-qualified (e.g. app.projects).
        table: String,
        /// Add `tenant_id uuid NOT NULL` (defaulting to the tenant in context) when missing.
        #[arg(long)]
        add_column: bool,
    },
    /// Print a module's consolidated schema (what schemas/<module>/schema.sql holds).
    Schema {
        #[command(subcommand)]
        action: SchemaAction,
    },
    /// Regenerate each module's row types (generated.rs) and its Drizzle and Prisma schemas
    /// (schemas/<module>/drizzle.ts, schema.prisma) from a freshly migrated scratch database.
    Codegen {
        /// Workspace root (holds crates/ and schemas/).
        #[arg(long, default_value = ".")]
        root: PathBuf,
        /// Only report files that are out of date; exit 1 if any.
        #[arg(long)]
        check: bool,
    },
    /// Migrate, seed and walk through what row-level security protects (a throwaway server
    /// without a database URL).
    Demo,
    /// Inspect and maintain the job queue.
    Queue {
        #[command(subcommand)]
        action: QueueAction,
    },
    /// Maintain and check the audit log (seal and maintain as pgstrata_worker or the owner; verify
    /// as pgstrata_worker, pgstrata_operator or the owner).
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Maintain the analytics events (as pgstrata_worker or the owner): partitions and the
    /// global retention, a tenant's shorter retention.
    Events {
        #[command(subcommand)]
        action: EventsAction,
    },
    /// Read and maintain the Stripe event ledger (events as pgstrata_billing_sync or
    /// pgstrata_operator; retry and prune as pgstrata_billing_sync or the owner).
    Billing {
        #[command(subcommand)]
        action: BillingAction,
    },
    /// Run the modules' periodic maintenance (audit sealing and partitions, queue pruning,
    /// events retention, billing retries) as jobs of the queue, each once per period however
    /// many workers run, until Ctrl-C or SIGTERM. Runs the tasks of the roles this login holds
    /// (pgstrata_worker; pgstrata_billing_sync for billing's).
    Worker {
        /// Enqueue the current period of every task, run them, and exit.
        #[arg(long)]
        once: bool,
    },
    /// The outbox's sinks and what holds the relays back (as pgstrata_worker or the owner);
    /// cleanup of delivered messages.
    Outbox {
        #[command(subcommand)]
        action: OutboxAction,
    },
    /// A tenant's webhooks: its endpoints, their attempts, and replays (in the tenant's
    /// context, as the application role or the owner).
    Webhooks {
        #[command(subcommand)]
        action: WebhooksAction,
    },
    /// The event store: a tenant's stream and its events (in the tenant's context, as the
    /// application role or the owner), the subscriptions' checkpoints and backlog (as
    /// pgstrata_worker or the owner).
    Eventstore {
        #[command(subcommand)]
        action: EventstoreAction,
    },
}

#[derive(Debug, Subcommand)]
enum EventstoreAction {
    /// A stream's version, when it was created and last appended to, and its snapshots.
    Stream {
        #[arg(long)]
        tenant: pgstrata::TenantId,
        stream: String,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A stream's events in version order, after --after.
    Read {
        #[arg(long)]
        tenant: pgstrata::TenantId,
        stream: String,
        /// The version to read after (0: from the first event).
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// How many (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: u64,
        /// Print the events as JSON (data and metadata included).
        #[arg(long)]
        json: bool,
    },
    /// Every subscription and projection generation: checkpoint, events processed, events
    /// waiting after it, and which generation is live. A projection is rebuilt by the
    /// application that holds its code (`subscription::rebuild`); a rebuild in progress shows
    /// here as a generation that is not live.
    Subscriptions {
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum OutboxAction {
    /// Messages delivered per sink, and the transaction holding the relays back, if any.
    Status,
    /// Delete messages every sink has passed, published more than --older-than-hours ago, in
    /// rounds until none is left.
    Cleanup {
        #[arg(long, default_value_t = 168)]
        older_than_hours: u64,
        /// Messages deleted per round (each round its own transaction).
        #[arg(long, default_value_t = 10_000)]
        batch: i32,
    },
}

#[derive(Debug, Subcommand)]
enum WebhooksAction {
    /// The tenant's endpoints: URL, event type patterns, and why a disabled one was disabled.
    Endpoints {
        #[arg(long)]
        tenant: pgstrata::TenantId,
        /// Print the endpoints as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The tenant's attempts, newest first, of one endpoint or message if given.
    Attempts {
        #[arg(long)]
        tenant: pgstrata::TenantId,
        #[arg(long)]
        endpoint: Option<pgstrata::webhooks::EndpointId>,
        #[arg(long)]
        message: Option<pgstrata::webhooks::MessageId>,
        /// How many (1 to 1000).
        #[arg(long, default_value_t = 50)]
        limit: u64,
        /// Print the attempts as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Sends one message again (--message, to every endpoint or --endpoint), or every failed
    /// delivery of messages sent since a time (--failed-since 2026-01-31T00:00:00Z).
    Replay {
        #[arg(long)]
        tenant: pgstrata::TenantId,
        #[arg(long, conflicts_with = "failed_since", required_unless_present = "failed_since")]
        message: Option<pgstrata::webhooks::MessageId>,
        #[arg(long)]
        failed_since: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long)]
        endpoint: Option<pgstrata::webhooks::EndpointId>,
    },
}

#[derive(Debug, Subcommand)]
enum BillingAction {
    /// The newest ledger events, with the reason of each failure or rejection.
    Events {
        /// Only events of this status: processed, ignored, deferred, failed or rejected.
        #[arg(long)]
        status: Option<pgstrata::billing::EventStatus>,
        /// How many (1 to 1000).
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
    /// Apply failed events again, oldest first (after a fix).
    Retry {
        #[arg(long, default_value_t = 100)]
        limit: i32,
    },
    /// Delete processed, ignored and rejected events older than the retention (at least 7 days).
    Prune {
        #[arg(long, default_value_t = 90)]
        older_than_days: u64,
    },
    /// Fill the mirror from Stripe's API: products, prices, customers, subscriptions and
    /// invoices (parents first), 100 per page, each object applied like a webhook event stamped
    /// with its page's fetch time, so a newer webhook always wins. A run that stops goes on
    /// where it stopped. Progress on stderr, the report on stdout.
    Sync {
        /// The Stripe secret or restricted key (read access to those lists). Prefer the
        /// environment variable: a flag shows in the process list. Never printed.
        #[arg(long, env = "STRIPE_API_KEY", hide_env_values = true, value_name = "KEY",
              value_parser = parse_api_key)]
        api_key: Option<stripe::ApiKey>,
        /// Where the API is: Stripe's by default; a local server or proxy for tests.
        #[arg(long, default_value = stripe::STRIPE_API, value_name = "URL")]
        api_base: String,
        /// Also trust these root certificates (PEM) for an https:// --api-base: a proxy's or
        /// a private CA's. The Mozilla roots (webpki-roots) are always trusted.
        #[arg(long, value_name = "FILE")]
        ca_file: Option<PathBuf>,
        /// Only these lists (comma-separated), in this order; default: all five.
        #[arg(long, value_delimiter = ',')]
        resources: Vec<pgstrata::billing::BackfillResource>,
        /// Start every list from its beginning, not where the last run stopped.
        #[arg(long)]
        restart: bool,
        /// Seconds subtracted from each page's fetch time: how far this machine's clock may run
        /// ahead of Stripe's.
        #[arg(long, default_value_t = 60, value_name = "SECS")]
        clock_margin: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn parse_api_key(key: &str) -> Result<stripe::ApiKey, String> {
    stripe::ApiKey::new(key.to_owned())
}

#[derive(Debug, Subcommand)]
enum AuditAction {
    /// Create the next months' partitions and drop expired ones (defaults: audit.settings).
    Maintain {
        /// Months to create ahead of the current one.
        #[arg(long)]
        ahead: Option<i32>,
        /// Months of history to keep.
        #[arg(long)]
        retention_months: Option<i32>,
    },
    /// Chain every committed, unsealed record into its tenant's hash chain.
    Seal,
    /// Recompute every chain; exits 1 and prints the first broken link of each broken chain.
    Verify,
}

#[derive(Debug, Subcommand)]
enum EventsAction {
    /// Create the months events may fall in and drop expired ones (defaults: events.settings).
    Maintain {
        /// Months to create ahead of the current one.
        #[arg(long)]
        ahead: Option<i32>,
        /// Months of history to keep.
        #[arg(long)]
        retention_months: Option<i32>,
    },
    /// Delete events older than their tenant's retention_days, in rounds, until none is left.
    Purge {
        /// Events deleted per round (each round its own transaction).
        #[arg(long, default_value_t = 10_000)]
        batch: i32,
    },
}

#[derive(Debug, Subcommand)]
enum QueueAction {
    /// Jobs by queue and state (finished ones: those of the last day), and how long the oldest
    /// ready job has waited.
    Stats,
    /// Jobs, newest first, one page at a time (the next page: --after the last id shown).
    List {
        /// Only jobs in these states (comma-separated): available, scheduled, running,
        /// retryable, completed, discarded, cancelled.
        #[arg(long, value_delimiter = ',')]
        state: Vec<pgstrata::queue::JobState>,
        /// Only jobs of this kind.
        #[arg(long)]
        kind: Option<String>,
        /// Only jobs of this queue.
        #[arg(long)]
        queue: Option<String>,
        /// Only jobs of this tenant (a uuid), or `none` for system jobs.
        #[arg(long)]
        tenant: Option<String>,
        /// Jobs older than this id (the last id of the previous page).
        #[arg(long)]
        after: Option<i64>,
        /// How many (1 to 1000).
        #[arg(long, default_value_t = 50)]
        limit: u64,
        /// Print the jobs as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Per queue: jobs by unfinished state, the oldest ready job's wait, and the jobs finished
    /// within the window (as pgstrata_worker or the owner).
    Metrics {
        /// The window of the finished counts, in seconds (1 to 3600).
        #[arg(long, default_value_t = 60)]
        window_secs: u64,
        /// Print the rows as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Put a discarded or cancelled job back in line, with one more attempt; exits 1 when the
    /// job does not exist or is in another state.
    Retry { id: i64 },
    /// Cancel an unfinished job (a running one's worker then fails to complete it); exits 1 when
    /// the job does not exist or is finished.
    Cancel { id: i64 },
    /// Bring back jobs whose lease expired (dead workers) and make due jobs available.
    Rescue,
    /// Delete finished jobs older than the retention.
    Prune {
        /// Retention in hours.
        #[arg(long, default_value_t = 24)]
        older_than_hours: u64,
    },
}

#[derive(Debug, Args)]
struct RunOptions {
    /// Print the SQL the run would apply, and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Seconds to wait for another run's migration lock (0: no limit). While waiting, the
    /// holder is reported every 5 s.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    lock_timeout: u64,
}

#[derive(Debug, Subcommand)]
enum MigrateAction {
    /// Apply pending migrations of the modules (and the modules they depend on), then the
    /// modules' after-migrate steps.
    Up {
        /// Stop at this version of the one module given with --modules.
        #[arg(long)]
        target: Option<i32>,
        #[command(flatten)]
        run: RunOptions,
    },
    /// Revert the newest applied migration (of one module with --modules, else of all), or
    /// every migration newer than --target. Removing a module (dropping its schema) needs --yes
    /// and is refused while another applied module depends on it.
    Down {
        /// Revert every migration newer than this version; 0 removes the module (with no
        /// --modules: every module).
        #[arg(long, allow_hyphen_values = true)]
        target: Option<i32>,
        /// Confirm dropping schemas when a module is removed.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        run: RunOptions,
    },
    /// Show applied, pending and divergent migrations.
    Status {
        /// Print the migrations as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum SchemaAction {
    /// Print the consolidated DDL of a module.
    Print { module: String },
    /// Print the upgrade of a psql install of a module to VERSION (from the version before it).
    Upgrade { module: String, version: i32 },
}

/// A failure with its exit code (see `EXIT_CODES`).
#[derive(Debug)]
enum Failure {
    Usage(String),
    Refused(String),
    Connect(String),
    LockTimeout(String),
    Failed(String),
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Refused(_) => 3,
            Failure::Connect(_) => 4,
            Failure::LockTimeout(_) => 5,
            Failure::Failed(_) => 6,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Usage(m)
            | Failure::Refused(m)
            | Failure::Connect(m)
            | Failure::LockTimeout(m)
            | Failure::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Failure {}

impl From<MigrateError> for Failure {
    fn from(e: MigrateError) -> Self {
        let text = e.to_string();
        match e {
            MigrateError::UnknownModule(_)
            | MigrateError::MissingDependency { .. }
            | MigrateError::DependencyCycle(_)
            | MigrateError::InvalidModule { .. } => Failure::Usage(text),
            MigrateError::InvalidTarget(_)
            | MigrateError::RemovalNotConfirmed(_)
            | MigrateError::Dependent { .. }
            | MigrateError::UnknownApplied { .. }
            | MigrateError::NotOneSession(_) => Failure::Refused(text),
            MigrateError::LockTimeout(_) => Failure::LockTimeout(text),
            _ => Failure::Failed(text),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            let code = match e.downcast_ref::<Failure>() {
                Some(f) => f.exit_code(),
                None => match e.downcast::<MigrateError>() {
                    Ok(m) => {
                        let f = Failure::from(*m);
                        eprintln!("error: {f}");
                        return ExitCode::from(f.exit_code());
                    }
                    Err(other) => {
                        eprintln!("error: {other}");
                        return ExitCode::from(6);
                    }
                },
            };
            eprintln!("error: {e}");
            ExitCode::from(code)
        }
    }
}

type AnyError = Box<dyn std::error::Error>;

/// A database to work on: the given URL, or a throwaway server kept alive while this lives.
struct Target {
    url: DatabaseUrl,
    _server: Option<ThrowawayServer>,
}

/// The URL to work on; without one, only the commands that may start a throwaway server do.
fn database(url: Option<String>, command: &str, throwaway_allowed: bool) -> Result<Target, AnyError> {
    if let Some(url) = url {
        let url = DatabaseUrl::parse(&url).map_err(|e| Failure::Usage(e.to_string()))?;
        // The worker runs through a transaction pooler (it polls instead of listening).
        if url.is_pooled() && command != "worker" {
            return Err(Failure::Refused(format!(
                "the database URL is marked as a transaction pooler (pgbouncer=true): `pgstrata {command}` needs a \
                 direct connection to PostgreSQL (migrations hold their lease on one session, and the CLI runs \
                 statements outside transactions); use the server's own address"
            ))
            .into());
        }
        return Ok(Target { url, _server: None });
    }
    if !throwaway_allowed {
        return Err(Failure::Usage(format!(
            "no database URL: set DATABASE_URL or pass --database-url to run `pgstrata {command}` \
             (only `pgstrata demo` starts a throwaway server)"
        ))
        .into());
    }
    eprintln!("No DATABASE_URL or --database-url: starting a throwaway PostgreSQL from the local server binaries...");
    let server = ThrowawayServer::start()?;
    let url = DatabaseUrl::parse(&server.url())?;
    eprintln!(
        "Throwaway server at {} (deleted when this command exits).\n",
        url.describe()
    );
    Ok(Target {
        url,
        _server: Some(server),
    })
}

async fn connect(url: &DatabaseUrl, timeout_secs: u64) -> Result<PgConnection, Failure> {
    let timeout = Duration::from_secs(timeout_secs.max(1));
    match tokio::time::timeout(timeout, PgConnection::connect_with(&url.options())).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(Failure::Connect(format!("cannot connect to {}: {e}", url.describe()))),
        Err(_) => Err(Failure::Connect(format!(
            "cannot connect to {} within {} s (--connect-timeout)",
            url.describe(),
            timeout.as_secs()
        ))),
    }
}

/// Every module of this build, waiting for the migration lock as `run` says and reporting the
/// holder on stderr while it waits.
fn migrator(run: Option<&RunOptions>) -> Result<Migrator, AnyError> {
    let mut wait = LockWait::default();
    if let Some(run) = run {
        wait.timeout = (run.lock_timeout > 0).then(|| Duration::from_secs(run.lock_timeout));
    }
    wait.on_wait = Some(Arc::new(|holder| eprintln!("waiting for {holder}")));
    Ok(Backend::all()?.migrator().clone().with_lock_wait(wait))
}

/// The modules named with --modules, each known to this build.
fn named_modules<'a>(migrator: &Migrator, names: &'a [String]) -> Result<Vec<&'a str>, Failure> {
    for name in names {
        if !migrator.modules().iter().any(|m| m.name == name) {
            return Err(Failure::Usage(format!(
                "unknown module {name:?}; this build has: {}",
                module_names(migrator.modules().iter().map(|m| m.name))
            )));
        }
    }
    Ok(names.iter().map(String::as_str).collect())
}

async fn run(cli: Cli) -> Result<ExitCode, AnyError> {
    let run_options = match &cli.command {
        Command::Migrate {
            action: MigrateAction::Up { run, .. } | MigrateAction::Down { run, .. },
        } => Some(run),
        _ => None,
    };
    let migrator = migrator(run_options)?;
    let named = named_modules(&migrator, &cli.modules)?;
    // The modules other commands work on: the named ones, or all.
    let scope: Vec<&str> = if named.is_empty() {
        migrator.modules().iter().map(|m| m.name).collect()
    } else {
        named.clone()
    };

    // Commands that need no database.
    if let Command::Schema { action } = &cli.command {
        let (SchemaAction::Print { module } | SchemaAction::Upgrade { module, .. }) = action;
        let m = migrator
            .modules()
            .iter()
            .find(|m| m.name == module)
            .ok_or_else(|| Failure::Usage(format!("unknown module {module:?}")))?;
        match action {
            SchemaAction::Print { .. } => print!("{}", m.schema_sql()),
            SchemaAction::Upgrade { version, .. } => print!(
                "{}",
                m.upgrade_sql(*version).ok_or_else(|| Failure::Usage(format!(
                    "{module} has no upgrade to V{version}: upgrades exist for V2 to V{}",
                    m.latest_version()
                )))?
            ),
        }
        return Ok(ExitCode::SUCCESS);
    }

    let (name, throwaway) = match &cli.command {
        Command::Migrate { action } => (
            match action {
                MigrateAction::Up { .. } => "migrate up",
                MigrateAction::Down { .. } => "migrate down",
                MigrateAction::Status { .. } => "migrate status",
            },
            false,
        ),
        Command::Seed => ("seed", false),
        Command::Doctor { .. } => ("doctor", false),
        Command::TenantTable { .. } => ("tenant-table", false),
        Command::Codegen { .. } => ("codegen", true),
        Command::Demo => ("demo", true),
        Command::Queue { .. } => ("queue", false),
        Command::Audit { .. } => ("audit", false),
        Command::Events { .. } => ("events", false),
        Command::Billing { .. } => ("billing", false),
        Command::Worker { .. } => ("worker", false),
        Command::Outbox { .. } => ("outbox", false),
        Command::Webhooks { .. } => ("webhooks", false),
        Command::Eventstore { .. } => ("eventstore", false),
        Command::Schema { .. } => ("schema", false),
    };
    let target = database(cli.database_url, name, throwaway)?;
    let mut conn = connect(&target.url, cli.connect_timeout).await?;
    match cli.command {
        Command::Migrate {
            action: MigrateAction::Up { target, run },
        } => return migrate_up(&mut conn, &migrator, &named, target, &run).await,
        Command::Migrate {
            action: MigrateAction::Down { target, yes, run },
        } => return migrate_down(&mut conn, &migrator, &named, target, yes, &run).await,
        Command::Migrate {
            action: MigrateAction::Status { json },
        } => {
            let rows: Vec<_> = migrator
                .status(&mut conn)
                .await?
                .into_iter()
                .filter(|r| scope.contains(&r.module))
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<12} {:>7}  {:<30} {:<10} applied on",
                    "module", "version", "name", "state"
                );
                for r in &rows {
                    println!(
                        "{:<12} {:>7}  {:<30} {:<10} {}",
                        r.module,
                        r.version,
                        r.name,
                        r.state.to_string(),
                        r.applied_on.as_deref().unwrap_or("-")
                    );
                }
            }
            if rows
                .iter()
                .any(|r| matches!(r.state, MigrationState::Divergent | MigrationState::Missing))
            {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Seed => {
            migrator.seed(&mut conn).await?;
            println!("seeded: {}", module_names(migrator.modules().iter().map(|m| m.name)));
        }
        Command::Doctor { json, schemas } => {
            let tables: Vec<&str> = scope
                .iter()
                .copied()
                .chain(schemas.iter().map(String::as_str))
                .collect();
            return doctor(&mut conn, &migrator, &scope, &tables, json).await;
        }
        Command::TenantTable { table, add_column } => return tenant_table(&mut conn, &table, add_column).await,
        Command::Codegen { root, check } => return codegen(&mut conn, &target.url, &migrator, &root, check).await,
        Command::Demo => {
            let steps = migrator.up(&mut conn).await?;
            report_steps("applied", &steps);
            migrator.seed(&mut conn).await?;
            println!("seeded: {}\n", module_names(migrator.modules().iter().map(|m| m.name)));
            demo::tour(&mut conn).await?;
            println!();
            return doctor(&mut conn, &migrator, &scope, &scope, false).await;
        }
        Command::Queue { action } => return queue(&mut conn, action).await,
        Command::Audit { action } => return audit(&mut conn, action).await,
        Command::Events { action } => events(&mut conn, action).await?,
        Command::Billing { action } => billing(&mut conn, action).await?,
        Command::Worker { once } => return worker(&mut conn, &target.url, &migrator, &scope, once).await,
        Command::Outbox { action } => outbox(&mut conn, action).await?,
        Command::Webhooks { action } => webhooks(&mut conn, action).await?,
        Command::Eventstore { action } => return eventstore(&mut conn, action).await,
        Command::Schema { .. } => unreachable!("handled above"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn migrate_up(
    conn: &mut PgConnection,
    migrator: &Migrator,
    named: &[&str],
    target: Option<i32>,
    run: &RunOptions,
) -> Result<ExitCode, AnyError> {
    if let Some(t) = target
        && named.len() != 1
    {
        return Err(Failure::Usage(format!("--target {t} is a version of one module: add --modules <name>")).into());
    }
    let only: Vec<Option<&str>> = if named.is_empty() {
        vec![None]
    } else {
        // In dependency order, so that each run finds its dependencies migrated.
        migrator
            .modules()
            .iter()
            .filter(|m| named.contains(&m.name))
            .map(|m| Some(m.name))
            .collect()
    };
    if run.dry_run {
        let mut printed = Vec::new();
        let mut after = Vec::new();
        for o in &only {
            let (steps, hooks) = migrator.plan_up(conn, *o, target).await?;
            for s in steps {
                if !printed
                    .iter()
                    .any(|p: &PlannedStep| p.module == s.module && p.version == s.version)
                {
                    printed.push(s);
                }
            }
            for h in hooks {
                if !after.contains(&h) {
                    after.push(h);
                }
            }
        }
        print_plan("migrate up", &printed, &[]);
        for (module, sql) in after {
            println!("-- ==== after the run: module {module} ====\n{}\n", sql.trim_end());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut steps = Vec::new();
    for o in only {
        steps.extend(migrator.up_to(conn, o, target).await?);
    }
    report_steps("applied", &steps);
    Ok(ExitCode::SUCCESS)
}

async fn migrate_down(
    conn: &mut PgConnection,
    migrator: &Migrator,
    named: &[&str],
    target: Option<i32>,
    yes: bool,
    run: &RunOptions,
) -> Result<ExitCode, AnyError> {
    let only = match named {
        [] => None,
        [one] => Some(*one),
        _ => return Err(Failure::Usage("migrate down works on one module (--modules <name>) or on all".into()).into()),
    };
    let to = match target {
        None => DownTo::OneStep,
        Some(t) if t > 0 && only.is_none() => {
            return Err(
                Failure::Usage(format!("--target {t} is a version of one module: add --modules <name>")).into(),
            );
        }
        Some(t) => DownTo::Version(t),
    };
    let plan = migrator.plan_down(conn, only, to).await?;
    if run.dry_run {
        print_plan("migrate down", &plan.steps, &plan.removed);
        return Ok(ExitCode::SUCCESS);
    }
    if plan.steps.is_empty() && plan.removed.is_empty() {
        println!("nothing to revert: no migration of the selected modules is applied");
        return Ok(ExitCode::SUCCESS);
    }
    let removal = if plan.removed.is_empty() || yes || confirmed_on_terminal(&plan.removed)? {
        Removal::Allowed
    } else {
        Removal::Refused
    };
    let steps = migrator.revert(conn, only, to, removal).await?;
    report_steps("reverted", &steps);
    for m in &plan.removed {
        println!("removed module {m}: its schema and migration history are dropped");
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks on the terminal before a removal; without one (a script, CI) the answer is no.
fn confirmed_on_terminal(removed: &[&str]) -> Result<bool, AnyError> {
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return Ok(false);
    }
    eprint!(
        "This removes module(s) {}: their schemas and all their data are dropped. Type yes to go on: ",
        removed.join(", ")
    );
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

/// Prints what a run would do, as SQL a reader can check.
fn print_plan(what: &str, steps: &[PlannedStep], removed: &[&str]) {
    if steps.is_empty() && removed.is_empty() {
        println!("-- {what} --dry-run: nothing to do");
        return;
    }
    println!(
        "-- {what} --dry-run: nothing was changed. A run would execute, under the migration lock, \
         each file in its own transaction with its history row:\n"
    );
    for s in steps {
        println!(
            "-- ==== {} ({} V{}) ====\n{}\n",
            s.file,
            s.module,
            s.version,
            s.sql.trim_end()
        );
    }
    for m in removed {
        println!("-- then removes module {m}: DROP TABLE pgstrata.{m}_history");
    }
}

async fn queue(conn: &mut PgConnection, action: QueueAction) -> Result<ExitCode, AnyError> {
    use pgstrata::queue::{Error, JobFilter, JobId, client, inspect};
    match action {
        QueueAction::List {
            state,
            kind,
            queue,
            tenant,
            after,
            limit,
            json,
        } => {
            let mut filter = JobFilter::new().states(state);
            if let Some(kind) = kind {
                filter = filter.kind(kind);
            }
            if let Some(queue) = queue {
                filter = filter.queue(queue);
            }
            match tenant.as_deref() {
                None => {}
                Some("none") => filter = filter.system(),
                Some(t) => {
                    let t = t
                        .parse()
                        .map_err(|e| Failure::Usage(format!("--tenant {t:?} is neither a uuid nor `none`: {e}")))?;
                    filter = filter.tenant(t);
                }
            }
            let page = pgstrata::core::Page {
                after: after.map(JobId),
                limit,
            };
            let jobs = match inspect::list_all(conn, &filter, &page).await {
                Err(e @ (Error::InvalidPage(_) | Error::InvalidQueue(_))) => {
                    return Err(Failure::Usage(e.to_string()).into());
                }
                other => other?,
            };
            // On stderr, so that --json output stays one document.
            if let Some(next) = page.next(&jobs, |j| j.id) {
                eprintln!("more: add --after {}", next.after.map_or(0, |id| id.0));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:>10}  {:<16} {:<24} {:<10} {:>7}  {:<36}  run at / finished at",
                "id", "queue", "kind", "state", "attempt", "tenant"
            );
            for j in &jobs {
                let at = j.finalized_at.unwrap_or(j.run_at);
                println!(
                    "{:>10}  {:<16} {:<24} {:<10} {:>7}  {:<36}  {}{}",
                    j.id,
                    j.queue,
                    j.kind,
                    j.state.as_str(),
                    format!("{}/{}", j.attempt, j.max_attempts),
                    j.tenant_id.map_or("-".into(), |t| t.0.to_string()),
                    at.format("%Y-%m-%d %H:%M:%S"),
                    last_error(&j.errors)
                        .map(|e| format!("  last error: {e}"))
                        .unwrap_or_default()
                );
            }
        }
        QueueAction::Metrics { window_secs, json } => {
            let window = std::time::Duration::from_secs(window_secs);
            let rows = match inspect::metrics(conn, window).await {
                Err(e @ Error::InvalidField { .. }) => return Err(Failure::Usage(e.to_string()).into()),
                other => other?,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<20} {:>9} {:>9} {:>9} {:>9}  {:>12}  finished in the last {window_secs} s",
                "queue", "available", "scheduled", "running", "retryable", "oldest ready"
            );
            for r in rows {
                println!(
                    "{:<20} {:>9} {:>9} {:>9} {:>9}  {:>12}  {} completed, {} discarded, {} cancelled",
                    r.queue,
                    r.available,
                    r.scheduled,
                    r.running,
                    r.retryable,
                    r.oldest_available_secs.map_or("-".into(), |s| format!("{s:.1} s")),
                    r.completed,
                    r.discarded,
                    r.cancelled
                );
            }
        }
        QueueAction::Retry { id } | QueueAction::Cancel { id } => {
            let (verb, done) = match action {
                QueueAction::Retry { .. } => ("retried", client::retry(conn, JobId(id)).await),
                _ => ("cancelled", client::cancel(conn, JobId(id)).await),
            };
            match done {
                Ok(()) => println!("job {id} {verb}"),
                Err(e @ (Error::NotFound { .. } | Error::Gone { .. })) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::FAILURE);
                }
                Err(e) => return Err(e.into()),
            }
        }
        QueueAction::Stats => {
            let rows = client::stats(conn).await?;
            println!(
                "{:<20} {:<10} {:>10}  oldest ready job waited",
                "queue", "state", "jobs"
            );
            for r in rows {
                let waited = r
                    .oldest_available_secs
                    .map(|s| format!("{s:.1} s"))
                    .unwrap_or_else(|| "-".into());
                println!("{:<20} {:<10} {:>10}  {waited}", r.queue, r.state.as_str(), r.jobs);
            }
        }
        QueueAction::Rescue => {
            let rescued = client::rescue(conn).await?;
            let promoted = client::promote_due(conn).await?;
            println!("rescued {rescued} job(s) with expired leases; made {promoted} due job(s) available");
        }
        QueueAction::Prune { older_than_hours } => {
            let retention = std::time::Duration::from_secs(older_than_hours * 3600);
            let mut total = 0;
            // Bounded batches, so a large backlog never holds one long transaction.
            loop {
                let deleted = client::prune(conn, retention).await?;
                total += deleted;
                if deleted == 0 {
                    break;
                }
            }
            println!("pruned {total} finished job(s) older than {older_than_hours} h");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The message of a job's last recorded error.
fn last_error(errors: &serde_json::Value) -> Option<String> {
    let last = errors.as_array()?.last()?;
    let text = last.get("error")?.as_str()?;
    // One line, and not the whole of a long one.
    let line: String = text.lines().next().unwrap_or_default().chars().take(120).collect();
    Some(line)
}

async fn audit(conn: &mut PgConnection, action: AuditAction) -> Result<ExitCode, AnyError> {
    use pgstrata::audit::{chain, partitions};
    match action {
        AuditAction::Maintain {
            ahead,
            retention_months,
        } => {
            let steps = partitions::maintain(conn, ahead, retention_months).await?;
            if steps.is_empty() {
                println!("audit partitions: nothing to do");
            }
            for s in steps {
                println!("{} audit.{}", s.action, s.partition);
            }
        }
        AuditAction::Seal => {
            let mut total = 0;
            // Bounded batches, each its own transaction.
            loop {
                let n = chain::seal(conn, 10_000).await?;
                total += n;
                if n < 10_000 {
                    break;
                }
            }
            println!("sealed {total} audit record(s)");
        }
        AuditAction::Verify => {
            let broken = chain::verify(conn, None).await?;
            for b in &broken {
                println!(
                    "tenant {} seq {} record {}: {}",
                    b.tenant_id.0,
                    b.seq,
                    b.id.map_or("-".into(), |i| i.to_string()),
                    b.problem
                );
            }
            if !broken.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
            println!("audit chains: every sealed record is intact");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn webhooks(conn: &mut PgConnection, action: WebhooksAction) -> Result<(), AnyError> {
    use pgstrata::webhooks::{endpoints, history};
    let tenant = match &action {
        WebhooksAction::Endpoints { tenant, .. }
        | WebhooksAction::Attempts { tenant, .. }
        | WebhooksAction::Replay { tenant, .. } => *tenant,
    };
    let mut tx = pgstrata::begin_tenant(&mut *conn, &pgstrata::TenantContext::tenant(tenant)).await?;
    match action {
        WebhooksAction::Endpoints { json, .. } => {
            let mut all = Vec::new();
            let mut page = Some(pgstrata::Page::first(1000));
            while let Some(p) = page {
                let rows = endpoints::list(&mut tx, &p).await?;
                page = p.next(&rows, |e| e.id);
                all.extend(rows);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if all.is_empty() {
                println!("webhooks: no endpoints in tenant {tenant}");
            }
            if !json {
                for e in &all {
                    let state = if e.enabled {
                        "enabled".to_owned()
                    } else {
                        format!("disabled: {}", e.disabled_reason.as_deref().unwrap_or("-"))
                    };
                    println!("{} {} [{}] {}", e.id, e.url, e.event_types.join(","), state);
                }
            }
        }
        WebhooksAction::Attempts {
            endpoint,
            message,
            limit,
            json,
            ..
        } => {
            let filter = history::AttemptFilter { endpoint, message };
            let rows = history::attempts(&mut tx, &filter, &pgstrata::Page::first(limit)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                println!("webhooks: no attempts");
            }
            if !json {
                for a in &rows {
                    println!(
                        "{} {} message {} attempt {} ({}) {} {} {} ms{}",
                        a.id,
                        a.started_at.to_rfc3339(),
                        a.message_id,
                        a.attempt,
                        a.trigger,
                        a.state,
                        a.status_code.map(|c| c.to_string()).unwrap_or_else(|| "-".to_owned()),
                        a.duration_ms.unwrap_or(0),
                        a.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
                    );
                }
            }
        }
        WebhooksAction::Replay {
            message,
            failed_since,
            endpoint,
            ..
        } => {
            let n = match (message, failed_since) {
                (Some(m), _) => history::replay(&mut tx, m, endpoint).await?,
                (None, Some(since)) => history::replay_failed(&mut tx, since, endpoint).await?,
                (None, None) => return Err(Failure::Usage("give --message or --failed-since".to_owned()).into()),
            };
            println!("webhooks: {n} deliver(y/ies) queued again");
        }
    }
    tx.commit().await?;
    Ok(())
}

async fn eventstore(conn: &mut PgConnection, action: EventstoreAction) -> Result<ExitCode, AnyError> {
    use pgstrata::eventstore::{read, snapshot, subscription};
    match action {
        EventstoreAction::Stream { tenant, stream, json } => {
            let mut tx = pgstrata::begin_tenant(&mut *conn, &pgstrata::TenantContext::tenant(tenant)).await?;
            let row = read::stream(&mut tx, &stream).await?;
            let snapshots = snapshot::list(&mut tx, &stream).await?;
            tx.commit().await?;
            let Some(row) = row else {
                eprintln!("eventstore: tenant {tenant} has no stream {stream:?}");
                return Ok(ExitCode::FAILURE);
            };
            if json {
                let snaps: Vec<_> = snapshots
                    .iter()
                    .map(|s| serde_json::json!({"name": s.name, "version": s.version, "taken_at": s.taken_at}))
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({"stream": row, "snapshots": snaps}))?
                );
            } else {
                println!(
                    "stream {}: version {}, created {}, last append {}",
                    row.stream,
                    row.version,
                    row.created_at.to_rfc3339(),
                    row.updated_at.to_rfc3339()
                );
                for s in &snapshots {
                    println!(
                        "snapshot {}: version {} ({} event(s) after it), taken {}",
                        s.name,
                        s.version,
                        row.version - s.version,
                        s.taken_at.to_rfc3339()
                    );
                }
            }
        }
        EventstoreAction::Read {
            tenant,
            stream,
            after,
            limit,
            json,
        } => {
            let mut tx = pgstrata::begin_tenant(&mut *conn, &pgstrata::TenantContext::tenant(tenant)).await?;
            let page = pgstrata::Page {
                after: Some(after),
                limit,
            };
            let events = read::read_stream(&mut tx, &stream, &page).await?;
            tx.commit().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&events)?);
            } else {
                if events.is_empty() {
                    println!("eventstore: no events in {stream:?} after version {after}");
                }
                for e in &events {
                    println!(
                        "{} v{} @{} {} {} {}",
                        e.stream,
                        e.version,
                        e.position,
                        e.recorded_at.to_rfc3339(),
                        e.r#type,
                        e.data
                    );
                }
            }
        }
        EventstoreAction::Subscriptions { json } => {
            let rows = subscription::status(conn).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                if rows.is_empty() {
                    println!("eventstore: no subscriptions");
                }
                for s in &rows {
                    let behind = if s.behind >= subscription::BEHIND_COUNT_LIMIT {
                        format!("{}+", s.behind)
                    } else {
                        s.behind.to_string()
                    };
                    println!(
                        "{} gen {}{} [{}]: {} processed, {} behind, checkpoint ({}, {}), moved {}",
                        s.name,
                        s.generation,
                        if s.live { " live" } else { " rebuilding" },
                        s.category.as_deref().unwrap_or("all categories"),
                        s.events,
                        behind,
                        s.txid,
                        s.position,
                        s.updated_at.to_rfc3339()
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn events(conn: &mut PgConnection, action: EventsAction) -> Result<(), AnyError> {
    use pgstrata::events::retention;
    match action {
        EventsAction::Maintain {
            ahead,
            retention_months,
        } => {
            let steps = retention::maintain(conn, ahead, retention_months).await?;
            if steps.is_empty() {
                println!("events partitions: nothing to do");
            }
            for s in steps {
                println!("{} events.{}", s.action, s.partition);
            }
        }
        EventsAction::Purge { batch } => {
            let mut total = 0;
            // Bounded rounds, each its own transaction, so vacuum keeps up between them.
            loop {
                let n = retention::purge(conn, batch).await?;
                total += n;
                if n < i64::from(batch) {
                    break;
                }
            }
            println!("purged {total} event(s) past their tenant's retention");
        }
    }
    Ok(())
}

async fn billing(conn: &mut PgConnection, action: BillingAction) -> Result<(), AnyError> {
    use pgstrata::billing::ledger;
    match action {
        BillingAction::Events { status, limit } => {
            let events = ledger::events(conn, status, &pgstrata::core::Page::first(limit)).await?;
            if events.is_empty() {
                println!("billing ledger: no events");
            }
            for e in events {
                println!(
                    "{} {:<9} {:<45} {} {} attempts {}{}",
                    e.received_at.format("%Y-%m-%d %H:%M:%S"),
                    e.status.as_str(),
                    e.event_type,
                    e.id,
                    e.object_id.as_deref().unwrap_or("-"),
                    e.attempts,
                    e.error.map(|r| format!(": {r}")).unwrap_or_default()
                );
            }
        }
        BillingAction::Retry { limit } => {
            let n = ledger::retry_failed(conn, limit).await?;
            println!("billing: {n} failed event(s) now applied");
        }
        BillingAction::Prune { older_than_days } => {
            let n = ledger::prune(conn, std::time::Duration::from_secs(older_than_days * 86_400)).await?;
            println!("billing: pruned {n} event(s) older than {older_than_days} days");
        }
        BillingAction::Sync {
            api_key,
            api_base,
            ca_file,
            resources,
            restart,
            clock_margin,
            json,
        } => {
            use pgstrata::billing::backfill::{BackfillOptions, BackfillResource, backfill};
            let key = api_key.ok_or_else(|| {
                Failure::Usage("billing sync needs a Stripe API key: set STRIPE_API_KEY (or pass --api-key)".into())
            })?;
            let roots = match &ca_file {
                Some(path) => Some(
                    std::fs::read(path).map_err(|e| Failure::Usage(format!("--ca-file {}: {e}", path.display())))?,
                ),
                None => None,
            };
            let api = stripe::StripeApi::new(&api_base, key, roots.as_deref()).map_err(Failure::Usage)?;
            let options = BackfillOptions {
                resources: if resources.is_empty() {
                    BackfillResource::ALL.to_vec()
                } else {
                    resources
                },
                restart,
                clock_margin: Duration::from_secs(clock_margin),
            };
            let report = backfill(conn, &api, &options, |p| {
                eprintln!(
                    "billing sync: {} page {}, {} object(s){}",
                    p.resource,
                    p.pages,
                    p.objects,
                    if p.done { ", done" } else { "" }
                );
            })
            .await
            .map_err(|e| Failure::Failed(format!("billing sync stopped (run it again to go on from there): {e}")))?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "pages": report.pages,
                        "applied": report.applied,
                        "stale": report.stale,
                        "deferred": report.deferred,
                        "failed": report.failed,
                        "rejected": report.rejected,
                    })
                );
            } else {
                println!(
                    "billing sync: {} page(s); {} applied, {} stale (a newer state was mirrored), {} deferred (customer not linked), {} failed, {} rejected",
                    report.pages, report.applied, report.stale, report.deferred, report.failed, report.rejected
                );
                if report.failed > 0 {
                    println!(
                        "billing sync: see `pgstrata billing events --status failed`, then `pgstrata billing retry`"
                    );
                }
            }
        }
    }
    Ok(())
}

fn module_names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}

fn report_steps(verb: &str, steps: &[pgstrata::core::migrate::Step]) {
    if steps.is_empty() {
        println!("nothing {verb}: already at the requested version");
    }
    for s in steps {
        println!("{verb} {} V{}__{}", s.module, s.version, s.name);
    }
}

/// `scope` names the modules whose migrations are checked; `tables` the schemas whose tables
/// are (the modules' and the application's own).
async fn doctor(
    conn: &mut PgConnection,
    migrator: &Migrator,
    scope: &[&str],
    tables: &[&str],
    json: bool,
) -> Result<ExitCode, AnyError> {
    let mut migrations = Vec::new();
    for r in migrator.status(conn).await? {
        if !scope.contains(&r.module) {
            continue;
        }
        match r.state {
            MigrationState::Applied => {}
            MigrationState::Pending => migrations.push(format!(
                "migration {} V{}__{} is pending: run `pgstrata migrate up`",
                r.module, r.version, r.name
            )),
            MigrationState::Divergent | MigrationState::Missing => migrations.push(format!(
                "migration {} V{}__{} is {}",
                r.module, r.version, r.name, r.state
            )),
        }
    }
    let reports = pgstrata::core::doctor::check_tables(conn, &pgstrata::tenancy::TENANT_ROOT, tables).await?;
    let mut warnings = pgstrata::core::doctor::partition_warnings(conn, tables).await?;
    if scope.contains(&"audit") {
        warnings.extend(audit_warnings(conn).await?);
    }
    if scope.contains(&"queue") {
        let modules: Vec<_> = migrator
            .modules()
            .iter()
            .copied()
            .filter(|m| scope.contains(&m.name))
            .collect();
        let tasks = pgstrata::maintenance::tasks(&modules, &MAINTENANCE_ROLES);
        warnings.extend(pgstrata::maintenance::overdue(conn, &tasks).await?);
    }
    if scope.contains(&"outbox") {
        warnings.extend(outbox_warnings(conn).await?);
    }
    let security = pgstrata::core::doctor::security_problems(conn, tables).await?;
    let ok = migrations.is_empty() && !reports.is_empty() && reports.iter().all(|r| r.ok()) && security.is_empty();
    if json {
        let tables: Vec<_> = reports
            .iter()
            .map(|r| {
                serde_json::json!({
                    "table": r.table,
                    "kind": r.kind.to_string(),
                    "ok": r.ok(),
                    "checks": r.checks.iter().map(|c| serde_json::json!({
                        "name": c.name, "ok": c.ok, "detail": c.detail,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let report = serde_json::json!({
            "ok": ok,
            "migrations": migrations,
            "tables": tables,
            "warnings": warnings,
            "security": security,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for m in &migrations {
            println!("{m}");
        }
        print!("{}", pgstrata::core::doctor::render(&reports));
        for warning in &warnings {
            println!("warning: {warning}");
        }
        for problem in &security {
            println!("security: {problem}");
        }
        println!("doctor: {}", if ok { "all checks passed" } else { "FAILED" });
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `pgstrata tenant-table`: one line per step, `done` or `TODO`.
async fn tenant_table(conn: &mut PgConnection, table: &str, add_column: bool) -> Result<ExitCode, AnyError> {
    let steps = pgstrata::tenancy::tables::make_tenant_table(conn, table, add_column).await?;
    for s in &steps {
        println!(
            "{:<4}  {:<11}  {}",
            if s.done { "done" } else { "TODO" },
            s.step,
            s.detail
        );
    }
    let left = steps.iter().filter(|s| !s.done).count();
    if left == 0 {
        println!("{table} is a tenant table: check it with `pgstrata doctor --schema <its schema>`");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{left} step(s) left to the application");
        Ok(ExitCode::FAILURE)
    }
}

/// Records older than this and still unsealed mean no sealer is running (or something blocks
/// it): twelve of the `Sealer`'s default 5 s intervals.
const UNSEALED_WARNING_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Doctor's audit checks: committed records left unsealed past a few seal intervals.
async fn audit_warnings(conn: &mut PgConnection) -> Result<Vec<String>, AnyError> {
    let installed: bool = sqlx::query_scalar("SELECT to_regprocedure('audit.unsealed()') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !installed {
        return Ok(vec![]);
    }
    let unsealed = match pgstrata::audit::chain::unsealed(conn).await {
        Ok(u) => u,
        Err(pgstrata::audit::Error::Db(pgstrata::core::DbError::Forbidden { .. })) => {
            return Ok(vec![
                "audit: this role may not count unsealed records (connect as the owner, pgstrata_worker or pgstrata_operator)"
                    .into(),
            ]);
        }
        Err(e) => return Err(e.into()),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let limit = UNSEALED_WARNING_AFTER.as_secs();
    Ok(match unsealed.oldest {
        Some(oldest) if now.saturating_sub(u64::try_from(oldest.timestamp()).unwrap_or(0)) > limit => vec![format!(
            "audit: {} record(s) are not sealed yet, the oldest written at {} (over {} s ago): is a sealer running? \
             Run `pgstrata audit seal` or a `Sealer` as pgstrata_worker; a sealer that keeps failing with \
             SealerBusy is blocked by another",
            unsealed.unsealed,
            oldest.to_rfc3339(),
            UNSEALED_WARNING_AFTER.as_secs()
        )],
        _ => vec![],
    })
}

/// The roles maintenance tasks run as.
const MAINTENANCE_ROLES: [&str; 2] = ["pgstrata_worker", "pgstrata_billing_sync"];

/// `pgstrata worker`: the tasks of the installed modules (in scope) that this login's roles
/// may run, on one executor of the `pgstrata` queue.
async fn worker(
    conn: &mut PgConnection,
    url: &DatabaseUrl,
    migrator: &Migrator,
    scope: &[&str],
    once: bool,
) -> Result<ExitCode, AnyError> {
    use pgstrata::maintenance::{self, MaintenanceJob};
    use pgstrata::queue::{Worker, WorkerConfig};

    if !scope.contains(&"queue") {
        return Err(Failure::Usage(
            "`pgstrata worker` runs the tasks as jobs of the queue module: include queue in --modules".into(),
        )
        .into());
    }
    let held: Vec<String> = sqlx::query_scalar(
        "SELECT r FROM unnest($1::text[]) r WHERE pg_has_role(current_user, r, 'MEMBER') ORDER BY r",
    )
    .bind(&MAINTENANCE_ROLES[..])
    .fetch_all(&mut *conn)
    .await?;
    let held: Vec<&str> = held.iter().map(String::as_str).collect();
    let modules: Vec<_> = migrator
        .modules()
        .iter()
        .copied()
        .filter(|m| scope.contains(&m.name))
        .collect();
    for task in maintenance::tasks(&modules, &MAINTENANCE_ROLES) {
        if !held.contains(&task.role) {
            eprintln!("skipping {}: this login is not a member of {}", task.name, task.role);
        }
    }
    let tasks = maintenance::tasks(&modules, &held);
    if tasks.is_empty() {
        return Err(Failure::Usage(format!(
            "no maintenance task to run: connect as a login holding {}",
            MAINTENANCE_ROLES.join(" or ")
        ))
        .into());
    }
    let mut config = WorkerConfig::new(maintenance::QUEUE);
    if url.is_pooled() {
        config = config.behind_pooler();
    }
    let mut config = maintenance::configure(config, &tasks)?;
    config.name = format!("pgstrata worker {}", std::process::id());
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with(url.options())
        .await?;
    let worker = Worker::new(pool.clone(), config.clone())?.register::<MaintenanceJob, _>(maintenance::runner(&tasks));
    let names: Vec<&str> = tasks.iter().map(|t| t.name).collect();
    let token = pgstrata::CancellationToken::new();
    if once {
        let due = pgstrata::queue::periodic::enqueue_due(conn, &config.periodic, chrono::Utc::now()).await?;
        eprintln!(
            "pgstrata worker: {} task(s), {} due now: {}",
            tasks.len(),
            due.len(),
            names.join(", ")
        );
        worker.run_until_drained(token).await?;
        for line in maintenance::overdue(conn, &tasks).await? {
            println!("warning: {line}");
        }
        println!("worker: done");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "pgstrata worker: {} task(s) on queue {}: {}; Ctrl-C or SIGTERM to stop",
        tasks.len(),
        maintenance::QUEUE,
        names.join(", ")
    );
    let stop = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.cancel();
    });
    worker.run(token).await?;
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C, or SIGTERM (how service managers stop a process).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Migrates a scratch database on the same server, renders every module's generated files (the
/// Rust row types, the Drizzle and the Prisma schema), drops the scratch.
async fn codegen(
    conn: &mut PgConnection,
    url: &DatabaseUrl,
    migrator: &Migrator,
    root: &std::path::Path,
    check: bool,
) -> Result<ExitCode, AnyError> {
    let scratch = format!("pgstrata_codegen_{}", std::process::id());
    pgstrata::core::sql::trusted(format!("CREATE DATABASE \"{scratch}\""))
        .execute(&mut *conn)
        .await?;
    let result = async {
        let options = url.options().database(&scratch);
        let mut scratch_conn = PgConnection::connect_with(&options).await?;
        migrator.up(&mut scratch_conn).await?;
        let mut stale = Vec::new();
        for m in migrator.modules() {
            let rendered = pgstrata::core::codegen::render_all(&mut scratch_conn, m).await?;
            let schemas = root.join("schemas").join(m.name);
            let files = [
                (
                    root.join("crates")
                        .join(format!("pgstrata-{}", m.name))
                        .join("src/generated.rs"),
                    rendered.rust,
                ),
                (schemas.join("drizzle.ts"), rendered.drizzle),
                (schemas.join("schema.prisma"), rendered.prisma),
            ];
            for (path, code) in files {
                let current = std::fs::read_to_string(&path).unwrap_or_default();
                if current == code {
                    println!("up to date: {}", path.display());
                } else if check {
                    println!("OUT OF DATE: {}", path.display());
                    stale.push(path);
                } else {
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    std::fs::write(&path, code)?;
                    println!("wrote {}", path.display());
                }
            }
        }
        scratch_conn.close().await?;
        Ok::<_, AnyError>(stale.is_empty())
    }
    .await;
    pgstrata::core::sql::trusted(format!("DROP DATABASE IF EXISTS \"{scratch}\" WITH (FORCE)"))
        .execute(&mut *conn)
        .await?;
    Ok(if result? { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn outbox(conn: &mut PgConnection, action: OutboxAction) -> Result<(), AnyError> {
    use pgstrata::outbox::health;
    match action {
        OutboxAction::Status => {
            for s in health::sink_stats(conn).await? {
                println!(
                    "sink {}: {} delivered, last at {}",
                    s.sink,
                    s.delivered,
                    s.last_delivery.to_rfc3339()
                );
            }
            match health::held_back(conn).await? {
                Some(held) => println!("{held}"),
                None => println!("relays: no committed message waits behind a running transaction"),
            }
        }
        OutboxAction::Cleanup {
            older_than_hours,
            batch,
        } => {
            let older_than = std::time::Duration::from_secs(older_than_hours.saturating_mul(3600));
            let mut total = 0;
            // Bounded rounds, each its own transaction, so vacuum keeps up between them.
            loop {
                let n = health::cleanup(conn, older_than, batch).await?;
                total += n;
                if n < batch {
                    break;
                }
            }
            println!("outbox: deleted {total} delivered message(s)");
        }
    }
    Ok(())
}

/// Messages held back longer than this by a running transaction mean a transaction that
/// should have ended (idle in transaction, a stuck migration, a forgotten psql session).
const HELD_BACK_WARNING_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Doctor's outbox check: the metric "relay held back by xid N for T seconds", past a minute.
async fn outbox_warnings(conn: &mut PgConnection) -> Result<Vec<String>, AnyError> {
    let installed: bool = sqlx::query_scalar("SELECT to_regprocedure('outbox.held_back()') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !installed {
        return Ok(vec![]);
    }
    let held = match pgstrata::outbox::health::held_back(conn).await {
        Ok(held) => held,
        Err(pgstrata::outbox::Error::Db(pgstrata::core::DbError::Forbidden { .. })) => {
            return Ok(vec![
                "outbox: this role may not read what holds the relays back (connect as the owner or pgstrata_worker)"
                    .into(),
            ]);
        }
        Err(e) => return Err(e.into()),
    };
    Ok(match held {
        Some(held) if held.held_seconds > HELD_BACK_WARNING_AFTER.as_secs_f64() => vec![format!(
            "outbox: {held}: end that transaction (pg_terminate_backend) or find why it stays open; \
             no relay delivers the messages committed after it began until it ends"
        )],
        _ => vec![],
    })
}
