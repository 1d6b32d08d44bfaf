//! `pgstrata`: the operator's command line.
//!
//! Every command connects to `--database-url` / `DATABASE_URL`; without one it starts a
//! throwaway PostgreSQL from the locally installed server binaries and says so.

mod demo;

use clap::{Parser, Subcommand};
use pgstrata::core::migrate::MigrationState;
use pgstrata::core::server::ThrowawayServer;
use pgstrata::{Backend, Migrator};
use sqlx::{Connection, PgConnection};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "pgstrata",
    version,
    about = "Migrate, check and seed the pgstrata PostgreSQL modules"
)]
struct Cli {
    /// PostgreSQL URL; without it a throwaway server is started for this command.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,

    /// Modules to work on (comma-separated); default: every module in this build.
    #[arg(long, value_delimiter = ',', global = true)]
    modules: Vec<String>,

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
    Doctor,
    /// Print a module's consolidated schema (what schemas/<module>/schema.sql holds).
    Schema {
        #[command(subcommand)]
        action: SchemaAction,
    },
    /// Regenerate each module's row types from a freshly migrated database.
    Codegen {
        /// Workspace root (holds crates/).
        #[arg(long, default_value = ".")]
        root: PathBuf,
        /// Only report files that are out of date; exit 1 if any.
        #[arg(long)]
        check: bool,
    },
    /// Migrate, seed and walk through what row-level security protects.
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
enum QueueAction {
    /// Jobs by queue and state, and how long the oldest ready job has waited.
    Stats,
    /// Bring back jobs whose lease expired (dead workers) and make due jobs available.
    Rescue,
    /// Delete finished jobs older than the retention.
    Prune {
        /// Retention in hours.
        #[arg(long, default_value_t = 24)]
        older_than_hours: u64,
    },
}

#[derive(Debug, Subcommand)]
enum MigrateAction {
    /// Apply pending migrations (up to --target).
    Up {
        #[arg(long)]
        target: Option<i32>,
    },
    /// Revert migrations newer than --target; 0 removes the modules entirely.
    Down {
        #[arg(long)]
        target: i32,
    },
    /// Show applied, pending and divergent migrations.
    Status,
}

#[derive(Debug, Subcommand)]
enum SchemaAction {
    /// Print the consolidated DDL of a module.
    Print { module: String },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type AnyError = Box<dyn std::error::Error>;

/// A database to work on: the given URL, or a throwaway server kept alive while this lives.
struct Target {
    url: String,
    _server: Option<ThrowawayServer>,
}

fn database(url: Option<String>) -> Result<Target, AnyError> {
    if let Some(url) = url {
        return Ok(Target { url, _server: None });
    }
    eprintln!("No DATABASE_URL or --database-url: starting a throwaway PostgreSQL from the local server binaries...");
    let server = ThrowawayServer::start()?;
    let url = server.url();
    eprintln!("Throwaway server at {url} (deleted when this command exits).\n");
    Ok(Target {
        url,
        _server: Some(server),
    })
}

fn backend(modules: &[String]) -> Result<Backend, AnyError> {
    if modules.is_empty() {
        return Ok(Backend::all()?);
    }
    let mut builder = Backend::builder();
    for name in modules {
        builder = builder.with_named(name)?;
    }
    Ok(builder.build()?)
}

async fn run(cli: Cli) -> Result<ExitCode, AnyError> {
    let backend = backend(&cli.modules)?;
    let migrator = backend.migrator();

    // Commands that need no database.
    if let Command::Schema {
        action: SchemaAction::Print { module },
    } = &cli.command
    {
        let m = migrator
            .modules()
            .iter()
            .find(|m| m.name == module)
            .ok_or_else(|| format!("unknown module {module:?}"))?;
        print!("{}", m.schema_sql());
        return Ok(ExitCode::SUCCESS);
    }

    let target = database(cli.database_url)?;
    let mut conn = PgConnection::connect(&target.url).await?;
    match cli.command {
        Command::Migrate {
            action: MigrateAction::Up { target },
        } => {
            let only = single_module(migrator, target)?;
            let steps = migrator.up_to(&mut conn, only, target).await?;
            report_steps("applied", &steps);
        }
        Command::Migrate {
            action: MigrateAction::Down { target },
        } => {
            let only = single_module(migrator, Some(target).filter(|t| *t > 0))?;
            let steps = migrator.down(&mut conn, only, target).await?;
            report_steps("reverted", &steps);
        }
        Command::Migrate {
            action: MigrateAction::Status,
        } => {
            let rows = migrator.status(&mut conn).await?;
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
            if rows
                .iter()
                .any(|r| matches!(r.state, MigrationState::Divergent | MigrationState::Missing))
            {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Seed => {
            migrator.seed(&mut conn).await?;
            println!("seeded: {}", module_names(migrator));
        }
        Command::Doctor => return doctor(&mut conn, migrator).await,
        Command::Codegen { root, check } => return codegen(&mut conn, &target.url, migrator, &root, check).await,
        Command::Demo => {
            let steps = migrator.up(&mut conn).await?;
            report_steps("applied", &steps);
            migrator.seed(&mut conn).await?;
            println!("seeded: {}\n", module_names(migrator));
            demo::tour(&mut conn).await?;
            println!();
            return doctor(&mut conn, migrator).await;
        }
        Command::Queue { action } => queue(&mut conn, action).await?,
        Command::Audit { action } => return audit(&mut conn, action).await,
        Command::Schema { .. } => unreachable!("handled above"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn queue(conn: &mut PgConnection, action: QueueAction) -> Result<(), AnyError> {
    use pgstrata::queue::client;
    match action {
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
                println!("{:<20} {:<10} {:>10}  {waited}", r.queue, r.state, r.jobs);
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
    Ok(())
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

/// A target version means one module's version, so it needs exactly one module.
fn single_module(migrator: &Migrator, target: Option<i32>) -> Result<Option<&'static str>, AnyError> {
    match (target, migrator.modules()) {
        (None, _) => Ok(None),
        (Some(_), [one]) => Ok(Some(one.name)),
        (Some(t), _) => Err(format!("--target {t} is a version of one module: add --modules <name>").into()),
    }
}

fn module_names(migrator: &Migrator) -> String {
    migrator.modules().iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
}

fn report_steps(verb: &str, steps: &[pgstrata::core::migrate::Step]) {
    if steps.is_empty() {
        println!("nothing {verb}: already at the requested version");
    }
    for s in steps {
        println!("{verb} {} V{}__{}", s.module, s.version, s.name);
    }
}

async fn doctor(conn: &mut PgConnection, migrator: &Migrator) -> Result<ExitCode, AnyError> {
    let mut ok = true;
    let status = migrator.status(conn).await?;
    for r in &status {
        match r.state {
            MigrationState::Applied => {}
            MigrationState::Pending => {
                ok = false;
                println!(
                    "migration {} V{}__{} is pending: run `pgstrata migrate up`",
                    r.module, r.version, r.name
                )
            }
            MigrationState::Divergent | MigrationState::Missing => {
                ok = false;
                println!("migration {} V{}__{} is {}", r.module, r.version, r.name, r.state)
            }
        }
    }
    let schemas: Vec<&str> = migrator.modules().iter().map(|m| m.name).collect();
    let reports = pgstrata::core::doctor::check_tables(conn, &schemas).await?;
    print!("{}", pgstrata::core::doctor::render(&reports));
    for warning in pgstrata::core::doctor::partition_warnings(conn, &schemas).await? {
        println!("warning: {warning}");
    }
    if schemas.contains(&"audit") {
        for warning in audit_warnings(conn).await? {
            println!("warning: {warning}");
        }
    }
    ok &= !reports.is_empty() && reports.iter().all(|r| r.ok());
    let security = pgstrata::core::doctor::security_problems(conn, &schemas).await?;
    for problem in &security {
        println!("security: {problem}");
    }
    ok &= security.is_empty();
    println!("doctor: {}", if ok { "all checks passed" } else { "FAILED" });
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
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

/// Migrates a scratch database on the same server, renders every module, drops the scratch.
async fn codegen(
    conn: &mut PgConnection,
    url: &str,
    migrator: &Migrator,
    root: &std::path::Path,
    check: bool,
) -> Result<ExitCode, AnyError> {
    let scratch = format!("pgstrata_codegen_{}", std::process::id());
    pgstrata::core::sql::trusted(format!("CREATE DATABASE \"{scratch}\""))
        .execute(&mut *conn)
        .await?;
    let result = async {
        let options = url.parse::<sqlx::postgres::PgConnectOptions>()?.database(&scratch);
        let mut scratch_conn = PgConnection::connect_with(&options).await?;
        migrator.up(&mut scratch_conn).await?;
        let mut stale = Vec::new();
        for m in migrator.modules() {
            let code = pgstrata::core::codegen::render_schema(&mut scratch_conn, m.name).await?;
            let path = root
                .join("crates")
                .join(format!("pgstrata-{}", m.name))
                .join("src/generated.rs");
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current == code {
                println!("up to date: {}", path.display());
            } else if check {
                println!("OUT OF DATE: {}", path.display());
                stale.push(path);
            } else {
                std::fs::write(&path, code)?;
                println!("wrote {}", path.display());
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
