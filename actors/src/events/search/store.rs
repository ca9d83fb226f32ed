//! The search sink's queries: the current rows of balances (a transaction's balances are
//! indexed with their committed amounts), the pages a reindex reads (by id, keyset), and the
//! reindex's progress row (`search_reindex`, migration 16), shared by every replica.

use crate::domain::TransactionRecord;
use crate::entity::{balance, identity, ledger, transaction};
use crate::store::Store;
use crate::LedgerError;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QueryResult, QuerySelect, Statement, Value,
};

/// Ids per `IN (…)` list (well under both backends' bind limits).
const IDS_PER_QUERY: usize = 1_000;

/// A reindex's progress, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReindexProgress {
    /// `in_progress`, `completed` or `failed`.
    pub status: String,
    /// `pending` (not picked up by a worker yet), `ledgers`, `identities`, `balances`,
    /// `transactions`, `done`.
    pub phase: String,
    pub total_records: i64,
    pub processed_records: i64,
    pub errors: Vec<String>,
    pub batch_size: u32,
    pub started_ms: i64,
    pub completed_ms: Option<i64>,
}

impl ReindexProgress {
    pub fn is_running(&self) -> bool {
        self.status == "in_progress"
    }
}

/// Errors kept in the progress row (the first ones: a broken index would otherwise make
/// the row grow without end).
pub const ERRORS_KEPT_MAX: usize = 100;

fn placeholder(backend: DbBackend, n: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => "?".to_owned(),
    }
}

const COLUMNS: &str = "status, phase, total_records, processed_records, errors, batch_size, \
                       started_ms, completed_ms";

fn progress_of(row: &QueryResult) -> Result<ReindexProgress, sea_orm::DbErr> {
    let errors: String = row.try_get("", "errors")?;
    let batch_size: i32 = row.try_get("", "batch_size")?;
    Ok(ReindexProgress {
        status: row.try_get("", "status")?,
        phase: row.try_get("", "phase")?,
        total_records: row.try_get("", "total_records")?,
        processed_records: row.try_get("", "processed_records")?,
        errors: serde_json::from_str(&errors).unwrap_or_default(),
        batch_size: u32::try_from(batch_size).unwrap_or(1),
        started_ms: row.try_get("", "started_ms")?,
        completed_ms: row.try_get("", "completed_ms")?,
    })
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Store {
    /// The current rows of these balances (missing ones are absent).
    pub async fn balances_by_ids(
        &self,
        ids: Vec<String>,
    ) -> Result<Vec<balance::Model>, LedgerError> {
        self.run(|db| async move {
            let mut rows = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(IDS_PER_QUERY) {
                rows.extend(
                    balance::Entity::find()
                        .filter(balance::Column::BalanceId.is_in(chunk.to_vec()))
                        .all(&db)
                        .await?,
                );
            }
            Ok(rows)
        })
        .await
    }

    /// Ledgers with ids after `after`, in id order, at most `limit`.
    pub async fn ledgers_after(
        &self,
        after: String,
        limit: u64,
    ) -> Result<Vec<ledger::Model>, LedgerError> {
        self.run(move |db| async move {
            Ok(ledger::Entity::find()
                .filter(ledger::Column::LedgerId.gt(after))
                .order_by_asc(ledger::Column::LedgerId)
                .limit(limit)
                .all(&db)
                .await?)
        })
        .await
    }

    pub async fn identities_after(
        &self,
        after: String,
        limit: u64,
    ) -> Result<Vec<identity::Model>, LedgerError> {
        self.run(move |db| async move {
            Ok(identity::Entity::find()
                .filter(identity::Column::IdentityId.gt(after))
                .order_by_asc(identity::Column::IdentityId)
                .limit(limit)
                .all(&db)
                .await?)
        })
        .await
    }

    pub async fn balances_after(
        &self,
        after: String,
        limit: u64,
    ) -> Result<Vec<balance::Model>, LedgerError> {
        self.run(move |db| async move {
            Ok(balance::Entity::find()
                .filter(balance::Column::BalanceId.gt(after))
                .order_by_asc(balance::Column::BalanceId)
                .limit(limit)
                .all(&db)
                .await?)
        })
        .await
    }

    pub async fn transactions_after(
        &self,
        after: String,
        limit: u64,
    ) -> Result<Vec<TransactionRecord>, LedgerError> {
        self.run(move |db| async move {
            transaction::Entity::find()
                .filter(transaction::Column::TransactionId.gt(after))
                .order_by_asc(transaction::Column::TransactionId)
                .limit(limit)
                .all(&db)
                .await?
                .into_iter()
                .map(TransactionRecord::try_from)
                .collect()
        })
        .await
    }

    /// Rows a reindex goes through: ledgers, identities, balances, transactions.
    pub async fn searchable_counts(&self) -> Result<[u64; 4], LedgerError> {
        self.run(|db| async move {
            Ok([
                ledger::Entity::find().count(&db).await?,
                identity::Entity::find().count(&db).await?,
                balance::Entity::find().count(&db).await?,
                transaction::Entity::find().count(&db).await?,
            ])
        })
        .await
    }

    /// The reindex's progress; `None` if none was ever asked for.
    pub async fn reindex_progress(&self) -> Result<Option<ReindexProgress>, LedgerError> {
        self.run(|db| async move {
            let sql = format!("SELECT {COLUMNS} FROM search_reindex WHERE id = 1");
            let row = db
                .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
                .await?;
            Ok(row.as_ref().map(progress_of).transpose()?)
        })
        .await
    }

    /// Asks for a reindex: `Ok` with the new progress (`in_progress`, phase `pending`, for a
    /// worker to pick up), or `Err` with the progress of the one already running. One
    /// conditional statement decides, so two replicas never both start one.
    pub async fn request_reindex(
        &self,
        batch_size: u32,
    ) -> Result<Result<ReindexProgress, ReindexProgress>, LedgerError> {
        self.run(move |db| async move {
            let backend = db.get_database_backend();
            let p = |n| placeholder(backend, n);
            let now = now_ms();
            let batch = i32::try_from(batch_size).unwrap_or(i32::MAX);
            let sql = format!(
                "INSERT INTO search_reindex (id, status, phase, total_records, processed_records, \
                   errors, batch_size, started_ms, completed_ms, leased_until_ms) \
                 VALUES (1, 'in_progress', 'pending', 0, 0, '[]', {}, {}, NULL, NULL) \
                 ON CONFLICT (id) DO UPDATE SET status = 'in_progress', phase = 'pending', \
                   total_records = 0, processed_records = 0, errors = '[]', \
                   batch_size = excluded.batch_size, started_ms = excluded.started_ms, \
                   completed_ms = NULL, leased_until_ms = NULL \
                 WHERE search_reindex.status <> 'in_progress' \
                 RETURNING {COLUMNS}",
                p(1),
                p(2)
            );
            let values: Vec<Value> = vec![batch.into(), now.into()];
            let started = db
                .query_one_raw(Statement::from_sql_and_values(backend, sql, values))
                .await?;
            if let Some(row) = started {
                return Ok(Ok(progress_of(&row)?));
            }
            let sql = format!("SELECT {COLUMNS} FROM search_reindex WHERE id = 1");
            let running = db
                .query_one_raw(Statement::from_string(backend, sql))
                .await?
                .ok_or_else(|| sea_orm::DbErr::RecordNotFound("search_reindex".into()))?;
            Ok(Err(progress_of(&running)?))
        })
        .await
    }

    /// Takes the running reindex for `lease_ms`, if nobody holds it: its progress, or `None`.
    pub async fn claim_reindex(
        &self,
        lease_ms: u64,
    ) -> Result<Option<ReindexProgress>, LedgerError> {
        self.run(move |db| async move {
            let backend = db.get_database_backend();
            let p = |n| placeholder(backend, n);
            let now = now_ms();
            let until = now.saturating_add(i64::try_from(lease_ms).unwrap_or(i64::MAX));
            let sql = format!(
                "UPDATE search_reindex SET leased_until_ms = {} \
                 WHERE id = 1 AND status = 'in_progress' \
                   AND (leased_until_ms IS NULL OR leased_until_ms < {}) \
                 RETURNING {COLUMNS}",
                p(1),
                p(2)
            );
            let values: Vec<Value> = vec![until.into(), now.into()];
            let row = db
                .query_one_raw(Statement::from_sql_and_values(backend, sql, values))
                .await?;
            Ok(row.as_ref().map(progress_of).transpose()?)
        })
        .await
    }

    /// Records a held reindex's progress and renews its lease; with `status` not
    /// `in_progress`, finishes it (and releases the lease).
    pub async fn record_reindex(
        &self,
        progress: ReindexProgress,
        lease_ms: u64,
    ) -> Result<(), LedgerError> {
        self.run(move |db| async move {
            let backend = db.get_database_backend();
            let p = |n| placeholder(backend, n);
            let now = now_ms();
            let finished = !progress.is_running();
            let lease = (!finished)
                .then(|| now.saturating_add(i64::try_from(lease_ms).unwrap_or(i64::MAX)));
            let completed = finished.then_some(now);
            let errors: Vec<&String> = progress.errors.iter().take(ERRORS_KEPT_MAX).collect();
            let sql = format!(
                "UPDATE search_reindex SET status = {}, phase = {}, total_records = {}, \
                   processed_records = {}, errors = {}, completed_ms = {}, leased_until_ms = {} \
                 WHERE id = 1",
                p(1),
                p(2),
                p(3),
                p(4),
                p(5),
                p(6),
                p(7)
            );
            let values: Vec<Value> = vec![
                progress.status.into(),
                progress.phase.into(),
                progress.total_records.into(),
                progress.processed_records.into(),
                serde_json::to_string(&errors)
                    .unwrap_or_else(|_| "[]".into())
                    .into(),
                completed.into(),
                lease.into(),
            ];
            db.execute_raw(Statement::from_sql_and_values(backend, sql, values))
                .await?;
            Ok(())
        })
        .await
    }
}
