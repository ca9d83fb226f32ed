//! Balance monitors fire: the `monitors` sink evaluates the monitors of the balances that
//! committed transactions changed, off the request path, and writes a `balance.monitor`
//! event (data: the monitor as the API serves it) when one crosses into its condition.
//!
//! - [`MonitorsRoute`] writes a row for sink `monitors` for each `transaction.applied`,
//!   `transaction.inflight` and `transaction.void` (a commit of a hold is an applied row) whose
//!   source or destination has a monitor. Which balances have one is kept in memory
//!   ([`MonitoredBalances`]): updated at once on monitor writes in this process, and reloaded
//!   from the database every `coffer.monitors_refresh_ms` (monitors made by other processes);
//!   a superset is harmless (the sink finds no monitor and is done).
//! - [`MonitorsSink`] takes a claimed batch as a whole: the distinct balances it names, their
//!   committed rows now, their monitors and the monitors' last states, all in one database
//!   transaction. Each monitor is evaluated exactly ([`crate::domain::monitor::evaluate`]: a
//!   crossing from false to true fires; see that module for the semantics) and a changed
//!   state is written guarded by the state read, with the batch's `balance.monitor` events,
//!   in that transaction: a state is never recorded without its event, nor an event written
//!   twice for one crossing. A lost race (another evaluator wrote the state meanwhile) fails
//!   the batch, which is retried.
//! - Ordering: the `balance.monitor` event is keyed by its balance and written after the
//!   transaction events that led to it were committed, so the webhook receives it after them.
//! - Many transactions of one hot balance in one batch are one evaluation of its state: a
//!   monitor fires once per crossing observed, not once per transaction.

use super::outbox::{self, NewEvent};
use super::routing::Route;
use super::{Event, Outcome, Sink, SinkError};
use crate::domain::monitor::MonitorState;
use crate::domain::monitor::{evaluate, is_met_by, Evaluation, MonitorField, MonitorOperator};
use crate::entity::{balance, balance_monitor};
use crate::store::{BalanceRow, Store};
use crate::LedgerError;
use futures_util::future::LocalBoxFuture;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter,
    Statement, TransactionTrait, Value,
};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// The sink of monitor evaluation.
pub const MONITORS_SINK: &str = "monitors";

/// The event a crossing writes.
pub const MONITOR_EVENT: &str = "balance.monitor";

/// Values per `IN (…)` list.
const IN_LIST_MAX: usize = 500;

/// The transaction events that change a balance's amounts.
const EVALUATED_EVENTS: [&str; 3] = [
    "transaction.applied",
    "transaction.inflight",
    "transaction.void",
];

/// The balances that have at least one monitor, as this process knows them.
#[derive(Debug)]
pub struct MonitoredBalances {
    ids: RwLock<HashSet<String>>,
    /// Added in this process, with when: a reload that started before an addition keeps it.
    added: Mutex<HashMap<String, Instant>>,
    refresh_ms: u64,
}

impl MonitoredBalances {
    /// Reloaded from the database every `refresh_ms` (at least 10 ms).
    pub fn new(refresh_ms: u64) -> Arc<Self> {
        Arc::new(Self {
            ids: RwLock::default(),
            added: Mutex::default(),
            refresh_ms: refresh_ms.max(10),
        })
    }

    pub fn contains(&self, balance_id: &str) -> bool {
        self.ids
            .read()
            .map(|ids| ids.contains(balance_id))
            .unwrap_or(true)
    }

    /// A monitor was written for `balance_id` in this process.
    pub fn insert(&self, balance_id: &str) {
        if let Ok(mut added) = self.added.lock() {
            added.insert(balance_id.to_owned(), Instant::now());
        }
        if let Ok(mut ids) = self.ids.write() {
            ids.insert(balance_id.to_owned());
        }
    }

    /// The database's set, read by a query that started at `started`; additions made since
    /// are kept (the query may not have seen them).
    fn replace(&self, mut loaded: HashSet<String>, started: Instant) {
        if let Ok(mut added) = self.added.lock() {
            added.retain(|_, at| *at >= started);
            loaded.extend(added.keys().cloned());
        }
        if let Ok(mut ids) = self.ids.write() {
            *ids = loaded;
        }
    }

    /// Reloads the set on `runtime` now and every `refresh_ms`, as long as the set is alive.
    pub(crate) fn start_refresh(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        db: DatabaseConnection,
    ) {
        crate::store::reload_every(
            runtime,
            db,
            Arc::downgrade(self),
            Duration::from_millis(self.refresh_ms),
            true,
            |db| async move { monitored_balance_ids(&db).await },
            |balances: &Self, loaded, started| match loaded {
                Ok(ids) => balances.replace(ids, started),
                Err(error) => tracing::warn!(%error, "reloading the monitored balances failed"),
            },
        );
    }
}

async fn monitored_balance_ids(db: &DatabaseConnection) -> Result<HashSet<String>, sea_orm::DbErr> {
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT DISTINCT balance_id FROM balance_monitors",
        ))
        .await?;
    rows.iter()
        .map(|row| row.try_get::<String>("", "balance_id"))
        .collect()
}

/// Routes the balance-changing transaction events of monitored balances to [`MONITORS_SINK`].
pub struct MonitorsRoute {
    pub balances: Arc<MonitoredBalances>,
}

impl Route for MonitorsRoute {
    fn sinks(&self, event: &NewEvent, sinks: &mut Vec<String>) {
        if !EVALUATED_EVENTS.contains(&event.name) {
            return;
        }
        let monitored = self.balances.contains(&event.key_a)
            || event
                .key_b
                .as_deref()
                .is_some_and(|key| self.balances.contains(key));
        if monitored {
            sinks.push(MONITORS_SINK.to_owned());
        }
    }
}

/// Evaluates the monitors of a batch's balances (see the module docs).
pub struct MonitorsSink {
    store: Store,
}

impl MonitorsSink {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    async fn evaluate_all(&self, events: &[Event]) -> Vec<Outcome> {
        let balance_ids: BTreeSet<String> = events
            .iter()
            .flat_map(|event| event.keys())
            .map(str::to_owned)
            .collect();
        match self
            .store
            .evaluate_monitors(balance_ids.into_iter().collect())
            .await
        {
            Ok(fired) => {
                if fired > 0 {
                    tracing::debug!(fired, "balance monitors fired");
                }
                vec![Outcome::Delivered; events.len()]
            }
            Err(error) => {
                let error = SinkError(format!("evaluating the balance monitors: {error}"));
                vec![Outcome::Failed(error); events.len()]
            }
        }
    }
}

impl Sink for MonitorsSink {
    fn deliver<'a>(&'a self, events: &'a [Event]) -> LocalBoxFuture<'a, Vec<Outcome>> {
        Box::pin(self.evaluate_all(events))
    }
}

/// `$n` on PostgreSQL, `?` on SQLite.
fn placeholder(backend: DbBackend, n: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => "?".to_owned(),
    }
}

fn placeholder_list(backend: DbBackend, count: usize) -> String {
    let list: Vec<String> = (1..=count).map(|n| placeholder(backend, n)).collect();
    list.join(", ")
}

/// The last states of `monitor_ids`.
async fn monitor_states<C: ConnectionTrait>(
    db: &C,
    monitor_ids: &[String],
) -> Result<HashMap<String, MonitorState>, sea_orm::DbErr> {
    let backend = db.get_database_backend();
    let mut states = HashMap::with_capacity(monitor_ids.len());
    for chunk in monitor_ids.chunks(IN_LIST_MAX) {
        let sql = format!(
            "SELECT monitor_id, met, balance_version FROM monitor_states \
             WHERE monitor_id IN ({})",
            placeholder_list(backend, chunk.len())
        );
        let values: Vec<Value> = chunk.iter().map(|id| id.clone().into()).collect();
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
        for row in rows {
            let monitor_id: String = row.try_get("", "monitor_id")?;
            states.insert(
                monitor_id,
                MonitorState {
                    met: row.try_get("", "met")?,
                    balance_version: row.try_get("", "balance_version")?,
                },
            );
        }
    }
    Ok(states)
}

/// Records `met` at `balance_version` for a monitor whose state was `previous`; `false` when
/// another evaluator changed it meanwhile.
async fn record_state<C: ConnectionTrait>(
    db: &C,
    monitor: &balance_monitor::Model,
    previous: Option<MonitorState>,
    met: bool,
    balance_version: i64,
) -> Result<bool, sea_orm::DbErr> {
    let backend = db.get_database_backend();
    let p = |n| placeholder(backend, n);
    let now = outbox::now_ms();
    let (sql, values): (String, Vec<Value>) = match previous {
        None => (
            format!(
                "INSERT INTO monitor_states (monitor_id, balance_id, met, balance_version, \
                 changed_ms) VALUES ({}, {}, {}, {}, {}) ON CONFLICT (monitor_id) DO NOTHING",
                p(1),
                p(2),
                p(3),
                p(4),
                p(5)
            ),
            vec![
                monitor.monitor_id.clone().into(),
                monitor.balance_id.clone().into(),
                met.into(),
                balance_version.into(),
                now.into(),
            ],
        ),
        Some(state) => (
            format!(
                "UPDATE monitor_states SET met = {}, balance_version = {}, changed_ms = {} \
                 WHERE monitor_id = {} AND balance_version = {}",
                p(1),
                p(2),
                p(3),
                p(4),
                p(5)
            ),
            vec![
                met.into(),
                balance_version.into(),
                now.into(),
                monitor.monitor_id.clone().into(),
                state.balance_version.into(),
            ],
        ),
    };
    let result = db
        .execute_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    Ok(result.rows_affected() == 1)
}

/// Forgets a monitor's last state (its condition or balance changed, or it is gone): it is
/// evaluated afresh, as never met.
pub(crate) async fn forget_state<C: ConnectionTrait>(
    db: &C,
    monitor_id: &str,
) -> Result<(), sea_orm::DbErr> {
    let backend = db.get_database_backend();
    let sql = format!(
        "DELETE FROM monitor_states WHERE monitor_id = {}",
        placeholder(backend, 1)
    );
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        sql,
        [monitor_id.to_owned().into()],
    ))
    .await?;
    Ok(())
}

impl Store {
    /// Evaluates every monitor of `balance_ids` against the balances' committed rows, records
    /// the changed states and writes the `balance.monitor` event of each crossing, in one
    /// transaction; returns how many fired.
    pub async fn evaluate_monitors(&self, balance_ids: Vec<String>) -> Result<usize, LedgerError> {
        let events = self.events();
        self.run(move |db| async move {
            let txn = db.begin().await?;
            let mut monitors = Vec::new();
            for chunk in balance_ids.chunks(IN_LIST_MAX) {
                monitors.extend(
                    balance_monitor::Entity::find()
                        .filter(balance_monitor::Column::BalanceId.is_in(chunk.iter().cloned()))
                        .all(&txn)
                        .await?,
                );
            }
            if monitors.is_empty() {
                return Ok(0);
            }
            let watched: Vec<String> = monitors
                .iter()
                .map(|m| m.balance_id.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let mut rows: HashMap<String, BalanceRow> = HashMap::with_capacity(watched.len());
            for chunk in watched.chunks(IN_LIST_MAX) {
                let models = balance::Entity::find()
                    .filter(balance::Column::BalanceId.is_in(chunk.iter().cloned()))
                    .all(&txn)
                    .await?;
                rows.extend(models.iter().map(|m| (m.balance_id.clone(), BalanceRow::from(m))));
            }
            let monitor_ids: Vec<String> = monitors.iter().map(|m| m.monitor_id.clone()).collect();
            let states = monitor_states(&txn, &monitor_ids).await?;
            let mut fired = Vec::new();
            for monitor in &monitors {
                let Some(row) = rows.get(&monitor.balance_id) else {
                    continue;
                };
                let (Some(field), Some(operator)) = (
                    MonitorField::parse(&monitor.field),
                    MonitorOperator::parse(&monitor.operator),
                ) else {
                    // Checked when written: a stored condition always parses.
                    tracing::warn!(monitor_id = %monitor.monitor_id, "unreadable monitor condition");
                    continue;
                };
                let met = is_met_by(field, operator, &monitor.precise_value.0, &row.amounts);
                let previous = states.get(&monitor.monitor_id).copied();
                let Evaluation::Changed { met, fires } = evaluate(previous, met, row.version)
                else {
                    continue;
                };
                if !record_state(&txn, monitor, previous, met, row.version).await? {
                    return Err(LedgerError::Storage(format!(
                        "the state of monitor {} changed meanwhile",
                        monitor.monitor_id
                    )));
                }
                if fires {
                    if let Some(writer) = &events {
                        fired.push(NewEvent {
                            name: MONITOR_EVENT,
                            entity_id: monitor.monitor_id.clone(),
                            key_a: monitor.balance_id.clone(),
                            key_b: None,
                            payload: writer.payloads.monitor(monitor),
                        });
                    }
                }
            }
            if let Some(writer) = &events {
                outbox::insert(&txn, writer, &fired).await?;
            }
            txn.commit().await?;
            Ok(fired.len())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_balance_changing_events_of_monitored_balances_are_routed() {
        let balances = MonitoredBalances::new(1_000);
        balances.insert("bln_watched");
        let route = MonitorsRoute {
            balances: balances.clone(),
        };
        let event = |name, a: &str, b: &str| NewEvent {
            name,
            entity_id: "txn_1".into(),
            key_a: a.into(),
            key_b: Some(b.into()),
            payload: "{}".into(),
        };
        let mut sinks = Vec::new();
        route.sinks(
            &event("transaction.applied", "bln_x", "bln_watched"),
            &mut sinks,
        );
        assert_eq!(sinks, [MONITORS_SINK]);
        sinks.clear();
        route.sinks(
            &event("transaction.queued", "bln_x", "bln_watched"),
            &mut sinks,
        );
        route.sinks(&event("transaction.applied", "bln_x", "bln_y"), &mut sinks);
        assert!(sinks.is_empty());
    }

    #[test]
    fn a_reload_keeps_what_was_added_after_it_started() {
        let balances = MonitoredBalances::new(1_000);
        balances.insert("bln_old");
        let started = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        balances.insert("bln_new");
        balances.replace(HashSet::from(["bln_db".to_owned()]), started);
        assert!(balances.contains("bln_db") && balances.contains("bln_new"));
        assert!(!balances.contains("bln_old"));
    }
}
