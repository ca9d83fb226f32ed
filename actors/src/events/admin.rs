//! Operating the outbox: list the dead events (out of attempts, kept with their last error),
//! make them pending again (a redrive, attempts reset), and count the rows by sink and
//! status. Used by the `coffer events` commands, the workers' health check and the metrics.
//! These statements only read rows or move `dead` ones back to `pending`; claiming and
//! settling stay in [`super::outbox`].

use super::outbox::now_ms;
use crate::store::Store;
use crate::LedgerError;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, QueryResult, Statement, Value};

/// Most dead events listed at once.
pub const LIST_LIMIT_MAX: usize = 10_000;
/// Ids per redrive statement (bind limits), and rows per statement of a redrive of all.
pub const REDRIVE_CHUNK: usize = 500;

/// A dead event, as listed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadEvent {
    pub id: i64,
    pub sink: String,
    pub event: String,
    pub entity_id: String,
    /// Failed deliveries (all of them: the event is out of attempts).
    pub attempts: u32,
    pub last_error: Option<String>,
    /// When the event was written (Unix ms).
    pub created_ms: i64,
    /// When its last attempt failed (Unix ms).
    pub dead_since_ms: i64,
}

/// Which dead events to make pending again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redrive {
    Ids(Vec<i64>),
    All,
}

/// The rows of one sink.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SinkStats {
    pub sink: String,
    pub pending: u64,
    pub dead: u64,
    pub delivered: u64,
    /// Creation time (Unix ms) of the oldest pending event.
    pub oldest_pending_ms: Option<i64>,
}

impl SinkStats {
    /// Age of the oldest pending event at `now_ms` (0 when none is pending).
    pub fn lag_ms(&self, now_ms: i64) -> u64 {
        self.oldest_pending_ms
            .map_or(0, |oldest| u64::try_from(now_ms - oldest).unwrap_or(0))
    }
}

fn placeholder(backend: DbBackend, n: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => "?".to_owned(),
    }
}

fn dead_of(row: &QueryResult) -> Result<DeadEvent, DbErr> {
    let attempts: i32 = row.try_get("", "attempts")?;
    Ok(DeadEvent {
        id: row.try_get("", "id")?,
        sink: row.try_get("", "sink")?,
        event: row.try_get("", "event")?,
        entity_id: row.try_get("", "entity_id")?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        last_error: row.try_get("", "last_error")?,
        created_ms: row.try_get("", "created_ms")?,
        dead_since_ms: row.try_get("", "next_attempt_ms")?,
    })
}

/// `sink = $n` when a sink is given: the condition and its value.
fn sink_filter(backend: DbBackend, n: usize, sink: &Option<String>) -> (String, Vec<Value>) {
    match sink {
        Some(sink) => (
            format!(" AND sink = {}", placeholder(backend, n)),
            vec![sink.clone().into()],
        ),
        None => (String::new(), Vec::new()),
    }
}

impl Store {
    /// Up to `limit` (at most [`LIST_LIMIT_MAX`]) dead events, of `sink` or of every sink,
    /// newest first.
    pub async fn dead_events(
        &self,
        sink: Option<String>,
        limit: usize,
    ) -> Result<Vec<DeadEvent>, LedgerError> {
        let limit = i64::try_from(limit.clamp(1, LIST_LIMIT_MAX)).unwrap_or(1);
        self.run(move |db| async move {
            let backend = db.get_database_backend();
            let (condition, mut values) = sink_filter(backend, 1, &sink);
            let sql = format!(
                "SELECT id, sink, event, entity_id, attempts, last_error, created_ms, \
                 next_attempt_ms FROM outbox_events WHERE status = 'dead'{condition} \
                 ORDER BY id DESC LIMIT {}",
                placeholder(backend, values.len() + 1)
            );
            values.push(limit.into());
            let rows = db
                .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
                .await?;
            Ok(rows.iter().map(dead_of).collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Makes the chosen dead events (of `sink`, when given) pending again, due now, with
    /// their attempts reset; their last error is kept until they are delivered. Returns how
    /// many were. Events of other statuses are left alone.
    pub async fn redrive_events(
        &self,
        which: Redrive,
        sink: Option<String>,
    ) -> Result<u64, LedgerError> {
        self.run(move |db| async move {
            let backend = db.get_database_backend();
            let mut total = 0;
            // Two sets of statements: by id in chunks; all, a chunk of rows at a time (one
            // huge UPDATE would hold its locks and grow the WAL at once).
            let set = "UPDATE outbox_events SET status = 'pending', attempts = 0, \
                       leased_until_ms = NULL, next_attempt_ms = ";
            match which {
                Redrive::Ids(ids) => {
                    for chunk in ids.chunks(REDRIVE_CHUNK) {
                        let mut values: Vec<Value> = vec![now_ms().into()];
                        let list: Vec<String> = (0..chunk.len())
                            .map(|i| placeholder(backend, i + 2))
                            .collect();
                        values.extend(chunk.iter().map(|id| Value::from(*id)));
                        let (condition, sink_values) = sink_filter(backend, chunk.len() + 2, &sink);
                        values.extend(sink_values);
                        let sql = format!(
                            "{set}{} WHERE status = 'dead' AND id IN ({}){condition}",
                            placeholder(backend, 1),
                            list.join(", ")
                        );
                        total += db
                            .execute_raw(Statement::from_sql_and_values(backend, sql, values))
                            .await?
                            .rows_affected();
                    }
                }
                Redrive::All => loop {
                    let (condition, sink_values) = sink_filter(backend, 2, &sink);
                    let limit = placeholder(backend, sink_values.len() + 2);
                    let mut values: Vec<Value> = vec![now_ms().into()];
                    values.extend(sink_values);
                    values.push(i64::try_from(REDRIVE_CHUNK).unwrap_or(1).into());
                    let sql = format!(
                        "{set}{} WHERE id IN (SELECT id FROM outbox_events \
                         WHERE status = 'dead'{condition} ORDER BY id LIMIT {limit})",
                        placeholder(backend, 1),
                    );
                    let changed = db
                        .execute_raw(Statement::from_sql_and_values(backend, sql, values))
                        .await?
                        .rows_affected();
                    total += changed;
                    if changed == 0 {
                        break;
                    }
                },
            }
            Ok(total)
        })
        .await
    }

    /// Pending, dead and delivered (not pruned yet) events by sink, in sink order. The
    /// delivered rows are counted only when `with_delivered` (that count reads every kept
    /// row; the pending and dead ones use their partial indexes).
    pub async fn outbox_sink_stats(
        &self,
        with_delivered: bool,
    ) -> Result<Vec<SinkStats>, LedgerError> {
        self.run(move |db| async move {
            let backend = db.get_database_backend();
            let statuses = if with_delivered {
                "status IN ('pending', 'dead', 'delivered')"
            } else {
                "status IN ('pending', 'dead')"
            };
            let sql = format!(
                "SELECT sink, status, COUNT(*) AS n, MIN(created_ms) AS oldest \
                 FROM outbox_events WHERE {statuses} GROUP BY sink, status ORDER BY sink"
            );
            let rows = db
                .query_all_raw(Statement::from_string(backend, sql))
                .await?;
            let mut stats: Vec<SinkStats> = Vec::new();
            for row in rows {
                let sink: String = row.try_get("", "sink")?;
                let status: String = row.try_get("", "status")?;
                let count: i64 = row.try_get("", "n")?;
                let oldest: Option<i64> = row.try_get("", "oldest")?;
                if stats.last().is_none_or(|s| s.sink != sink) {
                    stats.push(SinkStats {
                        sink,
                        ..SinkStats::default()
                    });
                }
                let Some(entry) = stats.last_mut() else {
                    continue;
                };
                let count = u64::try_from(count).unwrap_or(0);
                match status.as_str() {
                    "pending" => {
                        entry.pending = count;
                        entry.oldest_pending_ms = oldest;
                    }
                    "dead" => entry.dead = count,
                    _ => entry.delivered = count,
                }
            }
            Ok(stats)
        })
        .await
    }
}

/// The outbox as the workers' health check judges it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutboxHealth {
    pub healthy: bool,
    pub pending: u64,
    pub dead: u64,
    /// Age of the oldest pending event, over every sink.
    pub lag_ms: u64,
    /// What is wrong, said for an operator (empty when healthy).
    pub problems: Vec<String>,
    pub sinks: Vec<SinkHealth>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SinkHealth {
    pub sink: String,
    pub pending: u64,
    pub dead: u64,
    pub lag_ms: u64,
}

/// Judges `stats` at `now_ms`: unhealthy when the oldest pending event is older than
/// `lag_max_ms` (0: not checked) or more than `dead_max` events are dead (`None`: not
/// checked).
pub fn outbox_health(
    stats: &[SinkStats],
    now_ms: i64,
    lag_max_ms: u64,
    dead_max: Option<u64>,
) -> OutboxHealth {
    let sinks: Vec<SinkHealth> = stats
        .iter()
        .map(|s| SinkHealth {
            sink: s.sink.clone(),
            pending: s.pending,
            dead: s.dead,
            lag_ms: s.lag_ms(now_ms),
        })
        .collect();
    let pending = sinks.iter().map(|s| s.pending).sum();
    let dead = sinks.iter().map(|s| s.dead).sum();
    let lag_ms = sinks.iter().map(|s| s.lag_ms).max().unwrap_or(0);
    let mut problems = Vec::new();
    if lag_max_ms > 0 && lag_ms > lag_max_ms {
        let late: Vec<&str> = sinks
            .iter()
            .filter(|s| s.lag_ms > lag_max_ms)
            .map(|s| s.sink.as_str())
            .collect();
        problems.push(format!(
            "the oldest pending event is {lag_ms} ms old, more than {lag_max_ms} ms (sinks: {})",
            late.join(", ")
        ));
    }
    if let Some(max) = dead_max {
        if dead > max {
            problems.push(format!("{dead} events are dead, more than {max}"));
        }
    }
    OutboxHealth {
        healthy: problems.is_empty(),
        pending,
        dead,
        lag_ms,
        problems,
        sinks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(sink: &str, pending: u64, dead: u64, oldest: Option<i64>) -> SinkStats {
        SinkStats {
            sink: sink.into(),
            pending,
            dead,
            delivered: 0,
            oldest_pending_ms: oldest,
        }
    }

    #[test]
    fn health_fails_on_an_old_pending_event_or_too_many_dead_ones() {
        let now = 100_000;
        let all = [
            stats("webhook", 3, 1, Some(now - 5_000)),
            stats("hook:h1", 1, 2, Some(now - 50_000)),
        ];
        let fine = outbox_health(&all, now, 60_000, Some(3));
        assert!(fine.healthy, "{fine:?}");
        assert_eq!((fine.pending, fine.dead, fine.lag_ms), (4, 3, 50_000));
        let late = outbox_health(&all, now, 10_000, None);
        assert!(!late.healthy);
        assert!(late.problems[0].contains("(sinks: hook:h1)"), "{late:?}");
        let dead = outbox_health(&all, now, 0, Some(2));
        assert_eq!(dead.problems, ["3 events are dead, more than 2"]);
        assert!(
            outbox_health(&[], now, 1, Some(0)).healthy,
            "an empty outbox"
        );
    }
}
