//! The `outbox_events` rows: written inside the transaction of the change they tell of
//! ([`insert`]), then claimed, marked, pruned and counted by the dispatcher.

use super::routing::EventWriter;
use super::{Event, Outcome};
use crate::store::Store;
use crate::LedgerError;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, QueryResult, Statement, TransactionTrait, Value};
use std::collections::{HashMap, HashSet};

/// Rows per multi-row INSERT (7 values a row: well under PostgreSQL's and SQLite's bind
/// limits; the same chunk as the transaction rows').
pub const INSERT_ROWS_MAX: usize = 500;

/// Key of the PostgreSQL advisory lock that serializes claims across processes, so that two
/// dispatchers never claim events of one key at once (ordering; see [`Store::claim_events`]).
const CLAIM_LOCK_KEY: i64 = 0x00C0_FFE6;

/// An event to write.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub name: &'static str,
    pub entity_id: String,
    pub key_a: String,
    pub key_b: Option<String>,
    pub payload: String,
}

impl NewEvent {
    /// An event of one entity, ordered by that entity.
    pub fn of(name: &'static str, entity_id: &str, payload: String) -> Self {
        Self {
            name,
            entity_id: entity_id.to_owned(),
            key_a: entity_id.to_owned(),
            key_b: None,
            payload,
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `$n` on PostgreSQL, `?` on SQLite.
fn placeholder(backend: DbBackend, n: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => "?".to_owned(),
    }
}

/// `(p1, p2, …)` for `count` values starting at `first`.
fn placeholders(backend: DbBackend, first: usize, count: usize) -> String {
    let list: Vec<String> = (first..first + count)
        .map(|n| placeholder(backend, n))
        .collect();
    format!("({})", list.join(", "))
}

/// Writes `events` on `db` as it is (inside the caller's transaction), once for every sink
/// `writer` routes each to. One statement per [`INSERT_ROWS_MAX`] rows; nothing at all when
/// no sink wants any of them.
pub(crate) async fn insert<C: ConnectionTrait>(
    db: &C,
    writer: &EventWriter,
    events: &[NewEvent],
) -> Result<(), DbErr> {
    let mut rows: Vec<(String, &NewEvent)> = Vec::with_capacity(events.len());
    for event in events {
        for sink in writer.sinks(event) {
            rows.push((sink, event));
        }
    }
    insert_rows(db, &rows).await
}

/// Writes one row per `(sink, event)`.
pub(crate) async fn insert_rows<C: ConnectionTrait>(
    db: &C,
    rows: &[(String, &NewEvent)],
) -> Result<(), DbErr> {
    const COLUMNS: usize = 8;
    let backend = db.get_database_backend();
    let now = now_ms();
    for chunk in rows.chunks(INSERT_ROWS_MAX) {
        let mut sql = String::with_capacity(160 + chunk.len() * 36);
        sql.push_str(
            "INSERT INTO outbox_events \
             (sink, event, entity_id, key_a, key_b, payload, created_ms, next_attempt_ms) VALUES ",
        );
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * COLUMNS);
        for (row, (sink, event)) in chunk.iter().enumerate() {
            if row > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&placeholders(backend, row * COLUMNS + 1, COLUMNS));
            values.push(sink.clone().into());
            values.push(event.name.into());
            values.push(event.entity_id.clone().into());
            values.push(event.key_a.clone().into());
            values.push(event.key_b.clone().into());
            values.push(event.payload.clone().into());
            values.push(now.into());
            values.push(now.into());
        }
        db.execute_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
    }
    Ok(())
}

/// Which rows a dispatcher claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSelector {
    /// The rows of this sink (`webhook`, `search`, `monitors`).
    Exact(String),
    /// The rows of every sink starting with this (`hook:`: every transaction hook).
    Prefix(String),
}

impl SinkSelector {
    /// The SQL condition on `alias.sink` with its values, placeholders from `first`. A prefix
    /// is a range (`sink >= 'hook:' AND sink < 'hook;'`): an index on `sink` serves it under
    /// any collation, where `LIKE` would need one.
    fn condition(&self, backend: DbBackend, alias: &str, first: usize) -> (String, Vec<Value>) {
        let p = |n| placeholder(backend, n);
        match self {
            Self::Exact(sink) => (
                format!("{alias}.sink = {}", p(first)),
                vec![sink.clone().into()],
            ),
            Self::Prefix(prefix) => {
                let mut end = prefix.clone();
                // The first string after every string starting with `prefix`.
                let last = end.pop().map_or('\u{1}', |c| {
                    char::from_u32(u32::from(c) + 1).unwrap_or(char::MAX)
                });
                end.push(last);
                (
                    format!(
                        "{alias}.sink >= {} AND {alias}.sink < {}",
                        p(first),
                        p(first + 1)
                    ),
                    vec![prefix.clone().into(), end.into()],
                )
            }
        }
    }

    pub fn label(&self) -> &str {
        match self {
            Self::Exact(sink) | Self::Prefix(sink) => sink.trim_end_matches(':'),
        }
    }
}

/// What became of a claimed batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Settled {
    pub delivered: Vec<i64>,
    /// `(id, attempts so far including this one, when to try again, why)`; `None` for the
    /// time: no attempts left, the event is dead.
    pub failed: Vec<(i64, u32, Option<i64>, String)>,
    /// Not attempted (an earlier event of a key failed): claimable again at once.
    pub released: Vec<i64>,
    /// `(id, not before, why)`: not attempted, no attempt counted (an open circuit).
    pub deferred: Vec<(i64, i64, String)>,
}

impl Settled {
    /// Settles `events` by their sink's `outcomes` (one each, in order): a failure is retried
    /// after `backoff(attempts so far)` ms from `now_ms`, or dead after `attempts_max`.
    pub fn from_outcomes(
        events: &[Event],
        outcomes: Vec<Outcome>,
        attempts_max: u32,
        now_ms: i64,
        backoff: impl Fn(u32) -> u64,
    ) -> Self {
        Self::from_outcomes_each(events, outcomes, |_| attempts_max, now_ms, backoff)
    }

    /// [`Settled::from_outcomes`] with each event's own `attempts_max(event)`.
    pub fn from_outcomes_each(
        events: &[Event],
        outcomes: Vec<Outcome>,
        attempts_max: impl Fn(&Event) -> u32,
        now_ms: i64,
        backoff: impl Fn(u32) -> u64,
    ) -> Self {
        let mut settled = Self::default();
        let mut outcomes = outcomes.into_iter();
        for event in events {
            match outcomes.next().unwrap_or(Outcome::Skipped) {
                Outcome::Delivered => settled.delivered.push(event.id),
                Outcome::Skipped => settled.released.push(event.id),
                Outcome::Deferred { until_ms, why } => {
                    settled.deferred.push((event.id, until_ms, why))
                }
                Outcome::Failed(error) => {
                    let attempts = event.attempts.saturating_add(1);
                    let next = (attempts < attempts_max(event)).then(|| {
                        let wait = i64::try_from(backoff(attempts)).unwrap_or(i64::MAX);
                        now_ms.saturating_add(wait)
                    });
                    if next.is_none() {
                        tracing::warn!(id = event.id, sink = %event.sink, event = %event.name,
                            %error, "event dead");
                    } else {
                        tracing::debug!(id = event.id, sink = %event.sink, event = %event.name,
                            %error, "delivery failed");
                    }
                    settled.failed.push((event.id, attempts, next, error.0));
                }
            }
        }
        settled
    }
}

/// What the outbox holds, for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OutboxStats {
    pub pending: u64,
    pub dead: u64,
    /// Creation time (Unix ms) of the oldest pending event.
    pub oldest_pending_ms: Option<i64>,
}

fn event_of(row: &QueryResult) -> Result<Event, DbErr> {
    let attempts: i32 = row.try_get("", "attempts")?;
    Ok(Event {
        id: row.try_get("", "id")?,
        sink: row.try_get("", "sink")?,
        name: row.try_get("", "event")?,
        entity_id: row.try_get("", "entity_id")?,
        key_a: row.try_get("", "key_a")?,
        key_b: row.try_get("", "key_b")?,
        payload: row.try_get("", "payload")?,
        attempts: u32::try_from(attempts).unwrap_or(0),
    })
}

/// How many due pending rows a claim looks at, per event it may claim: enough to see past
/// the rows other dispatchers hold (each holds at most one batch).
const CLAIM_WINDOW_FACTOR: usize = 4;

/// A due pending row as the claim first sees it.
struct Candidate {
    id: i64,
    sink: String,
    key_a: String,
    key_b: Option<String>,
    leased: bool,
}

/// Which of the window's rows to claim, in id order: not leased by another dispatcher, and
/// none of whose keys (within its sink) has an earlier row that is leased, waiting for a
/// retry (`holding`: the lowest such id per sink and key), or itself held back; at most
/// `limit`. Pure, so the rule is unit-tested.
fn choose(
    window: &[Candidate],
    holding: &HashMap<(String, String), i64>,
    limit: usize,
) -> Vec<i64> {
    let mut blocked: HashSet<(&str, &str)> = HashSet::new();
    let mut chosen = Vec::new();
    for row in window {
        let keys = std::iter::once(row.key_a.as_str()).chain(row.key_b.as_deref());
        let keys: Vec<&str> = keys.collect();
        let held = row.leased
            || chosen.len() >= limit
            || keys.iter().any(|key| {
                blocked.contains(&(row.sink.as_str(), *key))
                    || holding
                        .get(&(row.sink.clone(), (*key).to_owned()))
                        .is_some_and(|first| *first < row.id)
            });
        if held {
            blocked.extend(keys.iter().map(|key| (row.sink.as_str(), *key)));
        } else {
            chosen.push(row.id);
        }
    }
    chosen
}

/// Per sink and key of the window's rows, the lowest id of a pending row of that key waiting
/// for a retry or a closed circuit (`next_attempt_ms > created_ms`, the predicate of the
/// `idx_outbox_holding_*` indexes). Usually no row waits: one probe of the index says so.
async fn holding_rows<C: ConnectionTrait>(
    db: &C,
    selector: &SinkSelector,
    window: &[Candidate],
) -> Result<HashMap<(String, String), i64>, DbErr> {
    let backend = db.get_database_backend();
    let mut holding = HashMap::new();
    let (sink_condition, values) = selector.condition(backend, "b", 1);
    let any_sql = format!(
        "SELECT b.id FROM outbox_events b WHERE b.status = 'pending' \
         AND b.next_attempt_ms > b.created_ms AND {sink_condition} LIMIT 1"
    );
    let any = db
        .query_one_raw(Statement::from_sql_and_values(backend, any_sql, values))
        .await?;
    if any.is_none() {
        return Ok(holding);
    }
    let mut keys: Vec<&str> = window
        .iter()
        .flat_map(|row| std::iter::once(row.key_a.as_str()).chain(row.key_b.as_deref()))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    // Bind limits: PostgreSQL takes 65,535 values, SQLite 32,766.
    for chunk in keys.chunks(10_000) {
        for column in ["key_a", "key_b"] {
            let (sink_condition, mut values) = selector.condition(backend, "b", 1);
            let first = values.len() + 1;
            let list = placeholders(backend, first, chunk.len());
            values.extend(chunk.iter().map(|key| Value::from((*key).to_owned())));
            let sql = format!(
                "SELECT b.sink, b.{column} AS k, MIN(b.id) AS first FROM outbox_events b \
                 WHERE b.status = 'pending' AND b.next_attempt_ms > b.created_ms \
                 AND {sink_condition} AND b.{column} IN {list} GROUP BY b.sink, b.{column}"
            );
            let rows = db
                .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
                .await?;
            for row in rows {
                let sink: String = row.try_get("", "sink")?;
                let key: String = row.try_get("", "k")?;
                let first: i64 = row.try_get("", "first")?;
                let entry = holding.entry((sink, key)).or_insert(first);
                *entry = (*entry).min(first);
            }
        }
    }
    Ok(holding)
}

fn id_list(backend: DbBackend, first: usize, ids: &[i64]) -> (String, Vec<Value>) {
    (
        placeholders(backend, first, ids.len()),
        ids.iter().map(|id| Value::from(*id)).collect(),
    )
}

impl Store {
    /// Claims up to `limit` due events of the `selector`'s sinks, leased for `lease_ms`
    /// (another dispatcher takes them over if this one dies before settling them: at least
    /// once), in id order, keeping each key's order (see [`choose`]).
    ///
    /// Three statements under the claim lock: the first due pending rows by id (a window of
    /// [`CLAIM_WINDOW_FACTOR`]·`limit`, keys and lease only); the lowest waiting row of their
    /// keys (only when any row waits: the `idx_outbox_holding_*` indexes hold just those);
    /// the lease of the chosen rows, returning them whole. The lease column is in no index
    /// and no index predicate, so leasing a row is a HOT update: no index entry is written.
    pub async fn claim_events(
        &self,
        selector: &SinkSelector,
        limit: usize,
        lease_ms: u64,
    ) -> Result<Vec<Event>, LedgerError> {
        let selector = selector.clone();
        self.run(move |db| async move {
            let backend = db.get_database_backend();
            let now = now_ms();
            let lease = now.saturating_add(i64::try_from(lease_ms).unwrap_or(i64::MAX));
            let limit = limit.max(1);
            let window_rows =
                i64::try_from(limit.saturating_mul(CLAIM_WINDOW_FACTOR)).unwrap_or(i64::MAX);
            let txn = db.begin().await?;
            if backend == DbBackend::Postgres {
                txn.execute_raw(Statement::from_sql_and_values(
                    backend,
                    "SELECT pg_advisory_xact_lock($1)",
                    [CLAIM_LOCK_KEY.into()],
                ))
                .await?;
            }
            let p = |n| placeholder(backend, n);
            let (sink_condition, mut values) = selector.condition(backend, "e", 1);
            let next = values.len() + 1;
            values.extend([now.into(), window_rows.into()]);
            let window_sql = format!(
                "SELECT e.id, e.sink, e.key_a, e.key_b, e.leased_until_ms FROM outbox_events e \
                 WHERE e.status = 'pending' AND {sink_condition} AND e.next_attempt_ms <= {} \
                 ORDER BY e.id LIMIT {}",
                p(next),
                p(next + 1)
            );
            let rows = txn
                .query_all_raw(Statement::from_sql_and_values(backend, window_sql, values))
                .await?;
            let mut window = rows
                .iter()
                .map(|row| {
                    let leased: Option<i64> = row.try_get("", "leased_until_ms")?;
                    Ok(Candidate {
                        id: row.try_get("", "id")?,
                        sink: row.try_get("", "sink")?,
                        key_a: row.try_get("", "key_a")?,
                        key_b: row.try_get("", "key_b")?,
                        leased: leased.is_some_and(|until| until >= now),
                    })
                })
                .collect::<Result<Vec<_>, DbErr>>()?;
            window.sort_by_key(|row| row.id);
            if window.is_empty() {
                txn.commit().await?;
                return Ok(Vec::new());
            }
            let holding = holding_rows(&txn, &selector, &window).await?;
            let chosen = choose(&window, &holding, limit);
            if chosen.is_empty() {
                txn.commit().await?;
                return Ok(Vec::new());
            }
            let (list, mut values) = id_list(backend, 2, &chosen);
            values.insert(0, lease.into());
            let sql = format!(
                "UPDATE outbox_events SET leased_until_ms = {} WHERE id IN {list} \
                 RETURNING id, sink, event, entity_id, key_a, key_b, payload, attempts",
                p(1)
            );
            let rows = txn
                .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
                .await?;
            txn.commit().await?;
            let mut events = rows.iter().map(event_of).collect::<Result<Vec<_>, _>>()?;
            events.sort_by_key(|e| e.id);
            Ok(events)
        })
        .await
    }

    /// Records what became of a claimed batch, in one transaction.
    /// Delivered events are kept (`delivered`, pruned after the retention) when
    /// `keep_delivered`, else deleted at once (a retention of zero: the cheapest).
    pub async fn settle_events(
        &self,
        settled: Settled,
        keep_delivered: bool,
    ) -> Result<(), LedgerError> {
        if settled == Settled::default() {
            return Ok(());
        }
        self.run(move |db| async move {
            let backend = db.get_database_backend();
            let txn = db.begin().await?;
            if !settled.delivered.is_empty() && keep_delivered {
                let (list, mut values) = id_list(backend, 2, &settled.delivered);
                values.insert(0, now_ms().into());
                let sql = format!(
                    "UPDATE outbox_events SET status = 'delivered', delivered_ms = {}, \
                     leased_until_ms = NULL, last_error = NULL WHERE id IN {list}",
                    placeholder(backend, 1)
                );
                txn.execute_raw(Statement::from_sql_and_values(backend, sql, values))
                    .await?;
            } else if !settled.delivered.is_empty() {
                let (list, values) = id_list(backend, 1, &settled.delivered);
                let sql = format!("DELETE FROM outbox_events WHERE id IN {list}");
                txn.execute_raw(Statement::from_sql_and_values(backend, sql, values))
                    .await?;
            }
            if !settled.released.is_empty() {
                let (list, values) = id_list(backend, 1, &settled.released);
                let sql =
                    format!("UPDATE outbox_events SET leased_until_ms = NULL WHERE id IN {list}");
                txn.execute_raw(Statement::from_sql_and_values(backend, sql, values))
                    .await?;
            }
            let p = |n| placeholder(backend, n);
            let deferred_sql = format!(
                "UPDATE outbox_events SET next_attempt_ms = {}, last_error = {}, \
                 leased_until_ms = NULL WHERE id = {}",
                p(1),
                p(2),
                p(3)
            );
            for (id, until, why) in settled.deferred {
                let values: Vec<Value> = vec![until.into(), why.into(), id.into()];
                txn.execute_raw(Statement::from_sql_and_values(
                    backend,
                    deferred_sql.clone(),
                    values,
                ))
                .await?;
            }
            let failed_sql = format!(
                "UPDATE outbox_events SET status = {}, attempts = {}, next_attempt_ms = {}, \
                 last_error = {}, leased_until_ms = NULL WHERE id = {}",
                p(1),
                p(2),
                p(3),
                p(4),
                p(5)
            );
            for (id, attempts, next, error) in settled.failed {
                let status = if next.is_some() { "pending" } else { "dead" };
                let attempts = i32::try_from(attempts).unwrap_or(i32::MAX);
                let values: Vec<Value> = vec![
                    status.into(),
                    attempts.into(),
                    next.unwrap_or_else(now_ms).into(),
                    error.into(),
                    id.into(),
                ];
                txn.execute_raw(Statement::from_sql_and_values(
                    backend,
                    failed_sql.clone(),
                    values,
                ))
                .await?;
            }
            txn.commit().await?;
            Ok(())
        })
        .await
    }

    /// Deletes up to `limit` events delivered before `before_ms`; returns how many.
    pub async fn prune_events(&self, before_ms: i64, limit: usize) -> Result<u64, LedgerError> {
        self.run(move |db| async move {
            let backend = db.get_database_backend();
            let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
            let sql = format!(
                "DELETE FROM outbox_events WHERE id IN (SELECT id FROM outbox_events \
                 WHERE status = 'delivered' AND delivered_ms < {} LIMIT {})",
                placeholder(backend, 1),
                placeholder(backend, 2)
            );
            let result = db
                .execute_raw(Statement::from_sql_and_values(
                    backend,
                    sql,
                    [before_ms.into(), limit.into()],
                ))
                .await?;
            Ok(result.rows_affected())
        })
        .await
    }

    /// Pending and dead events, and the age of the oldest pending one.
    pub async fn outbox_stats(&self) -> Result<OutboxStats, LedgerError> {
        self.run(|db| async move {
            let backend = db.get_database_backend();
            let sql = "SELECT \
                 (SELECT COUNT(*) FROM outbox_events WHERE status = 'pending') AS pending, \
                 (SELECT COUNT(*) FROM outbox_events WHERE status = 'dead') AS dead, \
                 (SELECT MIN(created_ms) FROM outbox_events WHERE status = 'pending') AS oldest";
            let row = db
                .query_one_raw(Statement::from_string(backend, sql))
                .await?
                .ok_or_else(|| DbErr::RecordNotFound("outbox stats".into()))?;
            let count = |name: &str| -> Result<u64, DbErr> {
                let value: i64 = row.try_get("", name)?;
                Ok(u64::try_from(value).unwrap_or(0))
            };
            Ok(OutboxStats {
                pending: count("pending")?,
                dead: count("dead")?,
                oldest_pending_ms: row.try_get("", "oldest")?,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_backend() {
        assert_eq!(placeholders(DbBackend::Postgres, 8, 3), "($8, $9, $10)");
        assert_eq!(placeholders(DbBackend::Sqlite, 8, 3), "(?, ?, ?)");
        let (sql, values) =
            SinkSelector::Prefix("hook:".into()).condition(DbBackend::Postgres, "e", 2);
        assert_eq!(sql, "e.sink >= $2 AND e.sink < $3");
        assert_eq!(
            values,
            [
                Value::from("hook:".to_owned()),
                Value::from("hook;".to_owned())
            ]
        );
    }

    fn row(id: i64, sink: &str, a: &str, b: Option<&str>, leased: bool) -> Candidate {
        Candidate {
            id,
            sink: sink.into(),
            key_a: a.into(),
            key_b: b.map(str::to_owned),
            leased,
        }
    }

    #[test]
    fn a_claim_skips_what_is_held_and_everything_behind_it_per_sink_and_key() {
        let window = [
            row(1, "webhook", "a", Some("b"), true),
            row(2, "webhook", "c", None, false),
            row(3, "webhook", "b", Some("d"), false),
            row(4, "webhook", "d", None, false),
            row(5, "search", "a", None, false),
            row(6, "webhook", "e", Some("f"), false),
            row(7, "webhook", "f", None, false),
            row(8, "webhook", "g", None, false),
        ];
        // Row 2 leased elsewhere blocks b (so 3, then d, so 4); another sink's a is free; a
        // retry of f waits at id 6, so 7 waits, but 6 itself is the retry and goes.
        let holding = HashMap::from([(("webhook".to_owned(), "f".to_owned()), 6)]);
        assert_eq!(choose(&window, &holding, 10), [2, 5, 6, 8]);
        assert_eq!(choose(&window, &holding, 2), [2, 5]);
    }
}
