//! The `coffer` binary: wiring only.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use coffer::configuration::Settings;
use coffer::startup::{build_ledger, run_workers, Application};
use std::path::PathBuf;

// glibc's malloc spent ~27% of the server's CPU on the queued path (consolidating and
// splitting chunks); mimalloc's thread-local free lists took fresh-queued from ~3.2k/s to
// ~4.0k/s in same-machine A/B runs (BENCHMARKS.md, round 4).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "coffer",
    version,
    about = "A Blnk-compatible double-entry ledger server"
)]
struct Cli {
    /// Config file (Blnk's blnk.json keys; JSON or TOML). Default: ./blnk.json if present.
    #[arg(long, global = true, env = "COFFER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API server (the default). Embedded mode also runs the queue workers.
    Start,
    /// Run the queue workers.
    Workers,
    /// Drive a running server with a benchmark scenario and report the figures.
    Bench(coffer::bench::BenchArgs),
    /// Answer every request with 200 and count them: a webhook receiver for benchmarks.
    BenchReceiver(coffer::bench::receiver::ReceiverArgs),
    /// Inspect the outbox's events: list and redrive dead ones, count them by sink.
    Events {
        #[command(subcommand)]
        action: coffer::events_cli::EventsCommand,
    },
    /// Manage the database schema.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
}

#[derive(Subcommand)]
enum MigrateAction {
    Up,
    Down,
    Status,
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut settings =
        coffer::telemetry::while_loading("info", || Settings::load(cli.config.as_deref()))?;
    let command = cli.command.unwrap_or(Command::Start);
    // Logs always; traces only from the server and the workers, when configured.
    let service = match command {
        Command::Start => Some("coffer"),
        Command::Workers => Some("coffer-worker"),
        _ => None,
    };
    // The events commands print tables and JSON on stdout, where the logs go too: only
    // warnings by default.
    let level = if matches!(command, Command::Events { .. }) {
        "warn"
    } else {
        "info"
    };
    let telemetry = coffer::telemetry::install(level, &settings, service);
    match command {
        Command::Start => {
            Application::build(settings)
                .await?
                .run_until_stopped()
                .await?
        }
        Command::Workers => run_workers(settings).await?,
        Command::Bench(args) => coffer::bench::run(args).await?,
        Command::BenchReceiver(args) => coffer::bench::receiver::run(args).await?,
        Command::Events { action } => coffer::events_cli::run(&settings, action).await?,
        Command::Migrate { action } => {
            settings.auto_migrate = false;
            let ledger = build_ledger(&settings, false).await?;
            let store = ledger.store();
            match action {
                MigrateAction::Up => store.migrate_up().await?,
                MigrateAction::Down => store.migrate_down(Some(1)).await?,
                MigrateAction::Status => {
                    for (name, applied) in store.migration_status().await? {
                        println!("{} {name}", if applied { "applied" } else { "pending" });
                    }
                }
            }
        }
    }
    telemetry.shutdown();
    Ok(())
}
