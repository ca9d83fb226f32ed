//! `coffer events`: the dead events of the outbox listed (`dead`) and made pending again
//! (`redrive`, attempts reset), and its rows counted by sink (`stats`). It opens the
//! database only (no Redis, no ledger actors) and never migrates it. The queries are the
//! core's ([`coffer_actors::events::admin`]); this module parses and prints.

use crate::configuration::Settings;
use anyhow::Context;
use coffer_actors::events::admin::{DeadEvent, Redrive, SinkStats, LIST_LIMIT_MAX};
use coffer_actors::store::{PoolSettings, Store};
use std::io::Write;

#[derive(clap::Subcommand, Debug)]
pub enum EventsCommand {
    /// List dead events (out of attempts), newest first, with their last error.
    Dead {
        /// Only this sink's (`webhook`, `search`, `hook:<id>`, …).
        #[arg(long)]
        sink: Option<String>,
        /// At most this many (up to 10000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make dead events pending again, due now, with their attempts reset.
    Redrive {
        /// The events' ids (repeat the flag, or give several after it).
        #[arg(long = "id", num_args = 1.., required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<i64>,
        /// Every dead event (of `--sink`, when given).
        #[arg(long)]
        all: bool,
        /// Only this sink's.
        #[arg(long)]
        sink: Option<String>,
    },
    /// Pending, dead and delivered (kept) events by sink, and the oldest pending one's age.
    Stats {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Opens the configured database (as `coffer start` would, but with two connections and
/// no migration).
async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let url = settings
        .database_url
        .clone()
        .unwrap_or_else(|| settings.sqlite_url());
    let pool = PoolSettings {
        connections_max: 2,
        connections_min: 0,
        runtime_threads: 1,
        tcp_nodelay_relay: false,
        ..PoolSettings::default()
    };
    Store::connect(&url, &pool, false)
        .await
        .context("opening the database")
}

pub async fn run(settings: &Settings, command: EventsCommand) -> anyhow::Result<()> {
    let store = open_store(settings).await?;
    let mut out = std::io::stdout().lock();
    execute(
        &store,
        command,
        chrono::Utc::now().timestamp_millis(),
        &mut out,
    )
    .await
}

/// Runs `command` on `store`, printing to `out` (`now_ms`: for the ages shown).
pub async fn execute(
    store: &Store,
    command: EventsCommand,
    now_ms: i64,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match command {
        EventsCommand::Dead { sink, limit, json } => {
            let dead = store
                .dead_events(sink, limit.min(LIST_LIMIT_MAX))
                .await
                .context("listing dead events")?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&dead)?)?;
            } else {
                print_dead(&dead, out)?;
            }
        }
        EventsCommand::Redrive { ids, all, sink } => {
            let which = if all { Redrive::All } else { Redrive::Ids(ids) };
            let count = store
                .redrive_events(which, sink)
                .await
                .context("redriving dead events")?;
            writeln!(out, "{count} dead events made pending again")?;
        }
        EventsCommand::Stats { json } => {
            let stats = store
                .outbox_sink_stats(true)
                .await
                .context("counting outbox events")?;
            if json {
                let rows: Vec<serde_json::Value> = stats
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "sink": s.sink, "pending": s.pending, "dead": s.dead,
                            "delivered": s.delivered, "oldest_pending_ms": s.oldest_pending_ms,
                            "lag_ms": s.lag_ms(now_ms),
                        })
                    })
                    .collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
            } else {
                print_stats(&stats, now_ms, out)?;
            }
        }
    }
    Ok(())
}

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// One line of text: errors may hold newlines.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn print_dead(dead: &[DeadEvent], out: &mut impl Write) -> std::io::Result<()> {
    if dead.is_empty() {
        return writeln!(out, "no dead events");
    }
    writeln!(
        out,
        "{:>10}  {:<16}  {:<24}  {:<28}  {:>8}  {:<24}  {:<24}  LAST ERROR",
        "ID", "SINK", "EVENT", "ENTITY", "ATTEMPTS", "CREATED", "DEAD SINCE"
    )?;
    for event in dead {
        writeln!(
            out,
            "{:>10}  {:<16}  {:<24}  {:<28}  {:>8}  {:<24}  {:<24}  {}",
            event.id,
            event.sink,
            event.event,
            event.entity_id,
            event.attempts,
            time(event.created_ms),
            time(event.dead_since_ms),
            one_line(event.last_error.as_deref().unwrap_or("-")),
        )?;
    }
    Ok(())
}

fn print_stats(stats: &[SinkStats], now_ms: i64, out: &mut impl Write) -> std::io::Result<()> {
    if stats.is_empty() {
        return writeln!(out, "the outbox is empty");
    }
    writeln!(
        out,
        "{:<24}  {:>10}  {:>10}  {:>12}  OLDEST PENDING",
        "SINK", "PENDING", "DEAD", "DELIVERED"
    )?;
    for sink in stats {
        let oldest = match sink.oldest_pending_ms {
            Some(ms) => format!("{} ({} ms ago)", time(ms), sink.lag_ms(now_ms)),
            None => "-".to_owned(),
        };
        writeln!(
            out,
            "{:<24}  {:>10}  {:>10}  {:>12}  {oldest}",
            sink.sink, sink.pending, sink.dead, sink.delivered
        )?;
    }
    Ok(())
}
