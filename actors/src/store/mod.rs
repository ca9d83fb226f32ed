//! Every database query of Coffer. PostgreSQL in production, SQLite (WAL) embedded.
//!
//! All queries run on one dedicated multi-thread tokio runtime owned by the [`Store`]: sqlx
//! connections stay bound to the runtime that opened them, and actix arbiters and HTTP
//! workers come and go, so no connection is ever opened on (and orphaned by) one of them.

mod accounts;
mod api_keys;
mod backup;
mod balances;
pub(crate) mod changes;
mod commit;
pub mod filter;
pub mod history;
mod holds;
mod hooks;
mod identities;
mod ledgers;
mod metadata;
mod monitors;
mod pg_arrays;
pub mod relay;
mod transactions;

pub use accounts::{AccountBalance, AccountContext, NewAccount};
pub use api_keys::{NewApiKey, API_KEYS_LISTED_MAX};
pub use balances::{
    BalanceRow, BalanceState, IndicatorBalance, NewBalance, NewIndicator, QueuedTotals,
};
pub use changes::Change;
pub use commit::{
    bulk_failed_event, commit_batch, refusal_for, BatchItem, BatchOutcome, BatchUnit, BulkEvent,
    HoldActionRequest, ItemOutcome, Refusal, GROUP_KEY,
};
pub use filter::{FieldFilter, FilterError, FilterOp, ListQuery};
pub use history::{
    BalancePass, HistoricalBalance, PastRead, Reconstruction, SnapshotLimits, SnapshotPass,
};
pub use hooks::HOOKS_MAX;
pub use identities::fields_of as identity_fields;
pub use ledgers::NewLedger;
pub use monitors::MonitorSpec;

use crate::LedgerError;
use migration::MigratorTrait;
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Limits of the connection pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub connections_max: u32,
    pub connections_min: u32,
    pub acquire_timeout_ms: u64,
    /// Threads of the runtime that drives the database I/O.
    pub runtime_threads: usize,
    /// Carry PostgreSQL TCP connections through [`relay::NodelayRelay`] (see there why).
    pub tcp_nodelay_relay: bool,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            connections_max: 20,
            connections_min: 1,
            acquire_timeout_ms: 5_000,
            runtime_threads: 2,
            tcp_nodelay_relay: true,
        }
    }
}

/// Owns the database runtime; shuts it down without blocking when the last store is dropped
/// (dropping a runtime inside another runtime would panic).
struct DbRuntime(Option<tokio::runtime::Runtime>);

impl Drop for DbRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Keeps an in-memory copy of a table up to date: on `runtime`, every `every` (the first time
/// at once when `now`), runs `load` and hands its result, with the time the read started, to
/// `apply` on `target`; ends once `target` is dropped. Shared by the transaction hooks'
/// directory and the set of monitored balances (rows other processes write reach this one's
/// write path within `every`).
pub(crate) fn reload_every<T, V, L, Fut>(
    runtime: &tokio::runtime::Handle,
    db: DatabaseConnection,
    target: std::sync::Weak<T>,
    every: std::time::Duration,
    now: bool,
    load: L,
    apply: fn(&T, Result<V, sea_orm::DbErr>, std::time::Instant),
) where
    T: Send + Sync + 'static,
    V: Send + 'static,
    L: Fn(DatabaseConnection) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<V, sea_orm::DbErr>> + Send,
{
    runtime.spawn(async move {
        let mut first = now;
        loop {
            if !first {
                tokio::time::sleep(every).await;
            }
            first = false;
            let started = std::time::Instant::now();
            let loaded = load(db.clone()).await;
            let Some(target) = target.upgrade() else {
                return;
            };
            apply(&target, loaded, started);
        }
    });
}

#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    runtime: Arc<DbRuntime>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Lives as long as the pool whose connections it carries.
    relay: Option<Arc<relay::NodelayRelay>>,
    /// Set: every change writes its events to the outbox (see [`crate::events`]).
    events: Option<Arc<crate::events::routing::EventWriter>>,
    /// The transaction hooks, cached for the write path's routing (see [`hooks`]).
    hooks: Arc<crate::events::hooks::HookDirectory>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .finish()
    }
}

impl Store {
    /// Connects (creating a SQLite file if needed) and optionally applies migrations.
    pub async fn connect(
        url: &str,
        settings: &PoolSettings,
        migrate: bool,
    ) -> Result<Self, LedgerError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(settings.runtime_threads.max(1))
            .thread_name("coffer-db")
            .enable_all()
            .build()
            .map_err(|e| LedgerError::Internal(format!("database runtime: {e}")))?;
        let runtime = Arc::new(DbRuntime(Some(runtime)));
        let handle = runtime
            .0
            .as_ref()
            .expect("runtime present until drop")
            .handle()
            .clone();
        let url = url.to_owned();
        let settings = settings.clone();
        let (db, relay) = handle
            .spawn(async move { open(&url, &settings, migrate).await })
            .await
            .map_err(|e| LedgerError::Internal(e.to_string()))??;
        Ok(Self {
            db,
            runtime,
            metrics: Arc::default(),
            relay: relay.map(Arc::new),
            events: None,
            hooks: Arc::default(),
        })
    }

    /// From now on, every change this store writes also writes its events, with `writer`
    /// (call before the store is shared: clones made earlier write none). A writer without
    /// routes writes nothing: no event is written for nobody.
    ///
    /// The transaction hooks' route is always added: hooks may be created at any time, and
    /// it wants no event while there is no active hook.
    pub fn write_events(&mut self, writer: crate::events::routing::EventWriter) {
        let hooks = crate::events::hooks::HooksRoute::new(self.hooks.clone());
        let writer = writer.route(Arc::new(hooks));
        if let (true, Some(balances)) = (writer.has_routes(), writer.monitored_balances()) {
            if let Some(runtime) = self.runtime.0.as_ref() {
                balances.start_refresh(runtime.handle(), self.db.clone());
            }
        }
        self.events = writer.has_routes().then(|| Arc::new(writer));
    }

    /// Whether changes write events.
    pub fn writes_events(&self) -> bool {
        self.events.is_some()
    }

    /// The writer, while some route may want events (no hook and no other sink: none, and
    /// the write path serializes no payload).
    pub(crate) fn events(&self) -> Option<Arc<crate::events::routing::EventWriter>> {
        self.events.clone().filter(|writer| writer.wants_events())
    }

    /// The metrics of this store's ledger (one set per store; see [`crate::metrics`]).
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// What the `TCP_NODELAY` relay did (`None`: not in use).
    pub fn relay_stats(&self) -> Option<&Arc<relay::RelayStats>> {
        self.relay.as_ref().map(|relay| relay.stats())
    }

    /// The embedded SQLite store has one connection: its statements run one at a time.
    pub fn has_one_connection(&self) -> bool {
        self.backend() == DbBackend::Sqlite
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Runs a query future on the database runtime.
    pub(crate) async fn run<T, F, Fut>(&self, query: F) -> Result<T, LedgerError>
    where
        F: FnOnce(DatabaseConnection) -> Fut,
        Fut: Future<Output = Result<T, LedgerError>> + Send + 'static,
        T: Send + 'static,
    {
        let handle = self
            .runtime
            .0
            .as_ref()
            .expect("runtime present until drop")
            .handle();
        handle
            .spawn(query(self.db.clone()))
            .await
            .map_err(|e| LedgerError::Internal(format!("database task failed: {e}")))?
    }

    /// `SELECT 1` within `timeout_ms`.
    pub async fn ping(&self, timeout_ms: u64) -> Result<(), LedgerError> {
        let ping = self.run(|db| async move { db.ping().await.map_err(LedgerError::from) });
        tokio::time::timeout(Duration::from_millis(timeout_ms), ping)
            .await
            .map_err(|_| LedgerError::Storage("database ping timed out".into()))?
    }

    pub async fn migrate_up(&self) -> Result<(), LedgerError> {
        self.run(|db| async move { migration::Migrator::up(&db, None).await.map_err(Into::into) })
            .await
    }

    pub async fn migrate_down(&self, steps: Option<u32>) -> Result<(), LedgerError> {
        self.run(move |db| async move {
            migration::Migrator::down(&db, steps)
                .await
                .map_err(Into::into)
        })
        .await
    }

    /// `(name, applied)` for every known migration.
    pub async fn migration_status(&self) -> Result<Vec<(String, bool)>, LedgerError> {
        self.run(|db| async move {
            let applied = migration::Migrator::get_applied_migrations(&db).await?;
            let applied: Vec<String> = applied.iter().map(|m| m.name().to_owned()).collect();
            Ok(migration::Migrator::migrations()
                .iter()
                .map(|m| {
                    let name = m.name().to_owned();
                    let done = applied.contains(&name);
                    (name, done)
                })
                .collect())
        })
        .await
    }
}

async fn open(
    url: &str,
    settings: &PoolSettings,
    migrate: bool,
) -> Result<(DatabaseConnection, Option<relay::NodelayRelay>), LedgerError> {
    let is_sqlite = url.starts_with("sqlite:");
    let url = if is_sqlite && !url.contains("mode=") {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}mode=rwc")
    } else {
        url.to_owned()
    };
    let mut options = ConnectOptions::new(url.clone());
    // SQLite has one writer. With several connections, a group commit that read its rows
    // and then writes can lose the lock to another writer (SQLITE_BUSY_SNAPSHOT, which no
    // busy timeout waits out); one connection makes every statement take its turn.
    let connections_max = if is_sqlite {
        1
    } else {
        settings.connections_max
    };
    options
        .max_connections(connections_max)
        .min_connections(settings.connections_min.min(connections_max))
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .connect_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .sqlx_logging(false);
    if is_sqlite {
        options.map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
        });
    }
    let relay = if !is_sqlite && settings.tcp_nodelay_relay {
        start_relay(&url)?
    } else {
        None
    };
    if !is_sqlite {
        let socket = relay.as_ref().map(|r| r.socket_directory().to_owned());
        options.map_sqlx_postgres_opts(move |opts| {
            // Coffer looks rows up by key: a batch of keys is a nested loop of index
            // probes, never a pass over a whole table. These settings leave the planner no
            // other choice where an index applies (a table without a usable one is still
            // scanned). PostgreSQL caches a generic plan per statement; built while a table
            // was small or after it was analyzed small, a sequential scan or a hash join over
            // the whole table would otherwise be reused on every later batch however large
            // the table grew (seen here: `fresh` 3x slower as the tables grew). With them the
            // cached plans are safe, so statements are not replanned per batch (replanning,
            // `plan_cache_mode = force_custom_plan`, took a third of the statements' time).
            //
            // A statement that must scan anyway then carries the planner's penalty for a
            // disabled step in its cost, which would make it look large enough for JIT
            // compilation (tens of ms each time, seen on the hold-action lookup): JIT is off,
            // as it never pays for short statements.
            let opts = opts.options([
                ("enable_seqscan", "off"),
                ("enable_hashjoin", "off"),
                ("enable_mergejoin", "off"),
                ("jit", "off"),
            ]);
            match &socket {
                Some(socket) => opts.socket(socket),
                None => opts,
            }
        });
    }
    let db = Database::connect(options).await?;
    if migrate {
        migrate_exclusively(&db).await?;
    }
    Ok((db, relay))
}

/// Starts the relay for a TCP PostgreSQL URL (`None` when the URL names a Unix socket,
/// which has no Nagle delay to avoid).
fn start_relay(url: &str) -> Result<Option<relay::NodelayRelay>, LedgerError> {
    use sea_orm::sqlx::postgres::PgConnectOptions;
    use std::str::FromStr;
    let target = PgConnectOptions::from_str(url)
        .map_err(|e| LedgerError::Storage(format!("database url: {e}")))?;
    if target.get_socket().is_some() || target.get_host().starts_with('/') {
        return Ok(None);
    }
    relay::NodelayRelay::start(target.get_host().to_owned(), target.get_port())
        .map(Some)
        .map_err(|e| LedgerError::Storage(format!("database relay: {e}")))
}

/// Key of the PostgreSQL advisory lock that serializes migrations across processes.
const MIGRATION_LOCK_KEY: i64 = 0x00C0_FFE5;

/// Applies pending migrations; on PostgreSQL under an advisory lock, so an API server and a
/// worker starting together do not both try to create the schema.
async fn migrate_exclusively(db: &DatabaseConnection) -> Result<(), LedgerError> {
    use sea_orm::{ConnectionTrait, Statement, TransactionTrait};
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(migration::Migrator::up(db, None).await?);
    }
    let lock = db.begin().await?;
    lock.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_advisory_xact_lock($1)",
        [MIGRATION_LOCK_KEY.into()],
    ))
    .await?;
    let result = migration::Migrator::up(db, None).await;
    lock.commit().await?;
    Ok(result?)
}
