//! `pgstrata-bench`: measures pgstrata modules beside a baseline, in the same run, against the
//! same database, and prints a table followed by one JSON line (for scripts and CI history).
//!
//! ```text
//! cargo run --release -p pgstrata-bench -- rbac
//! cargo run --release -p pgstrata-bench -- queue
//! cargo run --release -p pgstrata-bench -- billing
//! cargo run --release -p pgstrata-bench -- audit
//! cargo run --release -p pgstrata-bench -- rls
//! cargo run --release -p pgstrata-bench -- outbox
//! cargo run --release -p pgstrata-bench -- webhooks
//! ```
//!
//! It connects to `--database-url` / `DATABASE_URL` as a superuser (to create a scratch database
//! and load data past RLS); without one it starts a throwaway PostgreSQL from the locally
//! installed server binaries.

mod audit;
mod billing;
mod events;
mod eventstore;
mod outbox;
mod queue;
mod rbac;
mod rls;
mod scratch;
mod webhooks;

use clap::{Parser, Subcommand};
use pgstrata_core::server::ThrowawayServer;

#[derive(Debug, Parser)]
#[command(
    name = "pgstrata-bench",
    version,
    about = "Benchmark pgstrata modules against a baseline on a real PostgreSQL"
)]
struct Cli {
    /// PostgreSQL URL of a superuser; without it a throwaway server is started for this run.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,

    /// Sequential round trips measured per tenant size (after a warm-up of 100).
    #[arg(long, default_value_t = 2000, global = true)]
    iterations: usize,

    /// Connections running checks at once for the throughput figure.
    #[arg(long, default_value_t = 8, global = true)]
    concurrency: usize,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// rbac.check latency and throughput at 10, 1,000 and 100,000 grants per tenant, beside a
    /// naive join-based check.
    Rbac,

    /// Drain no-op jobs with pgstrata workers (default WorkerConfig) beside pgmq (read 50 +
    /// delete_batch), the seed single-statement SKIP LOCKED loop and a raw batch loop; batch
    /// enqueue rate, enqueue-to-start latency with LISTEN/NOTIFY,
    /// and claim latency with 10k vs 1M jobs in the backlog.
    Queue {
        /// Jobs drained by each subject.
        #[arg(long, default_value_t = 100_000)]
        jobs: usize,

        /// pgstrata workers (each with its own pool), and connections of each baseline loop.
        #[arg(long, default_value_t = 8)]
        workers: usize,

        /// Executors per pgstrata worker (WorkerConfig::concurrency); default: the default
        /// WorkerConfig's.
        #[arg(long)]
        executors: Option<usize>,

        /// The most jobs per pgstrata claim and commit (WorkerConfig::batch_size); default: the
        /// default WorkerConfig's.
        #[arg(long)]
        batch_size: Option<usize>,

        /// Rounds of the four drains, each subject in a different order; the median round of
        /// each is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,

        /// Keep the scratch database for inspection instead of dropping it.
        #[arg(long)]
        keep_database: bool,
    },

    /// Stripe webhook deliveries per second through the billing module (signature, ledger,
    /// guarded mirror), sequentially and on --concurrency connections, beside a naive
    /// handler that upserts the payload with no ledger and no guard.
    Billing {
        /// Customers per measured run (each a 19-event subscription lifecycle).
        #[arg(long, default_value_t = 300)]
        customers: usize,
    },

    /// One-row update and insert transactions on a table with the audit trigger (chain on: a
    /// sealer runs alongside) beside the same table without it; retention of a month by
    /// dropping its partition beside DELETE.
    Audit {
        /// Seconds per measured phase; phases alternate between the two tables.
        #[arg(long, default_value_t = 5)]
        seconds: u64,

        /// Phases per table and operation.
        #[arg(long, default_value_t = 3)]
        rounds: usize,

        /// How often the sealer chains committed records during the audited phases.
        #[arg(long, default_value_t = 1000)]
        seal_interval_ms: u64,

        /// Records in the month retired by each retention method.
        #[arg(long, default_value_t = 1_000_000)]
        retention_rows: i64,

        /// Keep the scratch database for inspection instead of dropping it.
        #[arg(long)]
        keep_database: bool,
    },

    /// Every module's tenant-scoped hot queries as the application role through the policies,
    /// beside the same queries with the tenant predicate written out as a role that bypasses
    /// RLS, at tenants of 100, 10,000 and 100,000 rows; the ratio per query and size.
    /// Ingest through the public API beside a raw COPY, then the questions at scale.
    Events {
        /// Events ingested through the API (and by each baseline).
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        /// Events per batch.
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
        #[arg(long, default_value_t = 1_000)]
        tenants: usize,
        /// Events in the table when the questions are timed (added with generate_series).
        #[arg(long, default_value_t = 10_000_000)]
        scale: i64,
        /// Runs per question (the median is reported).
        #[arg(long, default_value_t = 21)]
        repeat: usize,
        /// Print each question's plan (EXPLAIN ANALYZE) at scale.
        #[arg(long)]
        explain: bool,
        #[arg(long)]
        keep_database: bool,
    },

    /// Event store: appends/s with an expected version on N connections to distinct streams
    /// and to one hot stream, beside a plain INSERT keyed by (stream, version); then a
    /// projection's catch-up rate through the subscription beside a position cursor.
    Eventstore {
        /// Connections appending at once.
        #[arg(long, default_value_t = 8)]
        connections: usize,

        /// Seconds each side appends per round.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,

        /// Interleaved rounds; the medians are reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,

        /// Keep the scratch database for inspection instead of dropping it.
        #[arg(long)]
        keep_database: bool,
    },

    /// Dispatchers delivering messages to a local receiver that answers 200 at once, beside the
    /// same HTTP client posting the same signed bodies from memory (the raw limit); latency
    /// from send to delivery; send() beside a plain insert in a business transaction.
    Webhooks {
        /// Messages delivered in the throughput run.
        #[arg(long, default_value_t = 50_000)]
        messages: usize,
        /// Dispatchers (each its own claim loop).
        #[arg(long, default_value_t = 8)]
        workers: usize,
        /// Requests in flight per dispatcher.
        #[arg(long, default_value_t = 8)]
        per_worker: usize,
        /// Transactions timed for send() and for the plain insert.
        #[arg(long, default_value_t = 5_000)]
        sends: usize,
        #[arg(long)]
        keep_database: bool,
    },

    Rls {
        /// Milliseconds each side runs a query per round.
        #[arg(long, default_value_t = 400)]
        phase_ms: u64,

        /// Interleaved rounds; each query and size reports the median of its rounds.
        #[arg(long, default_value_t = 3)]
        rounds: usize,

        /// Keep the scratch database for inspection instead of dropping it.
        #[arg(long)]
        keep_database: bool,

        /// Print each query's plan as the application role at the largest size first.
        #[arg(long)]
        explain: bool,
    },

    /// Business inserts with and without `outbox::publish` on --writers connections while a
    /// relay drains to an in-process sink; relay throughput on a backlog beside a naive id
    /// poller; commit-to-delivery latency at a steady rate.
    Outbox {
        /// Messages published in the overhead phase (and business inserts without).
        #[arg(long, default_value_t = 200_000)]
        messages: usize,
        /// Writer connections.
        #[arg(long, default_value_t = 8)]
        writers: usize,
        /// Messages in the backlog the relay drains.
        #[arg(long, default_value_t = 100_000)]
        backlog: usize,
        /// Messages per second in the latency phase.
        #[arg(long, default_value_t = 5_000)]
        rate: usize,
        /// Seconds of the latency phase.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long)]
        keep_database: bool,
    },
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();

    // The server, if any, lives until main returns: dropping it stops it.
    let (url, _server) = match cli.database_url {
        Some(url) => (url, None),
        None => {
            eprintln!(
                "No DATABASE_URL or --database-url: starting a throwaway PostgreSQL from the local server binaries..."
            );
            let server = ThrowawayServer::start()?;
            let url = server.url();
            eprintln!("Throwaway server at {url} (deleted when this program exits).");
            (url, Some(server))
        }
    };

    match cli.command {
        Command::Rbac => {
            rbac::run(&rbac::Options {
                url,
                iterations: cli.iterations.max(1),
                concurrency: cli.concurrency.max(1),
            })
            .await
        }
        Command::Queue {
            jobs,
            workers,
            executors,
            batch_size,
            rounds,
            keep_database,
        } => {
            queue::run(&queue::Options {
                url,
                jobs: jobs.max(1),
                workers: workers.max(1),
                executors: executors.map(|e| e.max(1)),
                batch_size: batch_size.map(|b| b.clamp(1, 1000)),
                rounds: rounds.max(1),
                keep_database,
            })
            .await
        }
        Command::Billing { customers } => {
            billing::run(&billing::Options {
                url,
                customers: customers.max(1),
                concurrency: cli.concurrency.max(1),
            })
            .await
        }
        Command::Audit {
            seconds,
            rounds,
            seal_interval_ms,
            retention_rows,
            keep_database,
        } => {
            audit::run(&audit::Options {
                url,
                clients: cli.concurrency.max(1),
                seconds,
                rounds,
                seal_interval_ms,
                retention_rows: retention_rows.max(1),
                keep_database,
            })
            .await
        }
        Command::Events {
            events,
            batch,
            tenants,
            scale,
            repeat,
            explain,
            keep_database,
        } => {
            events::run(&events::Options {
                url,
                events: events.max(1),
                batch: batch.clamp(1, pgstrata::events::ingest::MAX_BATCH),
                tenants: tenants.max(1),
                scale,
                repeat,
                explain,
                keep_database,
            })
            .await
        }
        Command::Eventstore {
            connections,
            seconds,
            rounds,
            keep_database,
        } => {
            eventstore::run(&eventstore::Options {
                url,
                connections: connections.max(1),
                seconds: seconds.max(0.1),
                rounds: rounds.max(1),
                keep_database,
            })
            .await
        }
        Command::Webhooks {
            messages,
            workers,
            per_worker,
            sends,
            keep_database,
        } => {
            webhooks::run(&webhooks::Options {
                url,
                messages: messages.max(1),
                workers: workers.max(1),
                per_worker: per_worker.max(1),
                sends: sends.max(10),
                keep_database,
            })
            .await
        }
        Command::Rls {
            phase_ms,
            rounds,
            keep_database,
            explain,
        } => {
            rls::run(&rls::Options {
                url,
                clients: cli.concurrency.max(1),
                phase: std::time::Duration::from_millis(phase_ms.max(50)),
                rounds: rounds.max(1),
                keep_database,
                explain,
            })
            .await
        }
        Command::Outbox {
            messages,
            writers,
            backlog,
            rate,
            seconds,
            keep_database,
        } => {
            outbox::run(&outbox::Options {
                url,
                messages: messages.max(1),
                writers: writers.max(1),
                backlog: backlog.max(1),
                rate: rate.max(1),
                seconds: seconds.max(1),
                keep_database,
            })
            .await
        }
    }
}
