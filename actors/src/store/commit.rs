//! The group commit: a whole batch of transfers in one database transaction.
//!
//! 1. duplicate references (inside the batch and already stored) are refused;
//! 2. every touched balance is locked and read, in balance-id order (no deadlocks);
//! 3. the batch is admitted against those rows ([`admit_batch`]): the database state, not any
//!    process's cache, decides, so replicas can never overdraw a balance;
//! 4. one guarded update per touched balance (its net change for the whole batch);
//! 5. set-based inserts of the transaction rows; commit.
//!
//! A lost race with another process (a version moved, a reference inserted meanwhile) rolls
//! the attempt back and retries it from the start.

use super::balances::BalanceRow;
use super::transactions::active_model;
use super::Store;
use crate::domain::balance::{BalanceDelta, Floor, GuardedChange};
use crate::domain::batch::admit_batch;
use crate::domain::{TransactionRecord, TransactionStatus};
use crate::entity::{balance, transaction, Money};
use crate::LedgerError;
use bigdecimal::num_bigint::BigInt;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

/// Attempts of one batch before its items get a storage error.
const COMMIT_ATTEMPTS_MAX: u32 = 8;
/// Rows per multi-row INSERT (22 columns: well under PostgreSQL's and SQLite's bind limits).
const INSERT_ROWS_MAX: usize = 500;
/// Values per `IN (…)` list.
const IN_LIST_MAX: usize = 1000;

/// What to do with a transfer the balances cannot fund.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Store nothing; the caller gets the error (the `skip_queue` path).
    Fail,
    /// Store the row as REJECTED with the reason (the queued path's child row).
    StoreRejected,
}

#[derive(Debug, Clone)]
pub struct BatchItem {
    pub record: TransactionRecord,
    pub changes: Vec<(String, GuardedChange)>,
    pub refusal: Refusal,
}

/// Refusals are the rare case; boxing the common one would cost an allocation per item.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ItemOutcome {
    /// The row as stored (REJECTED when refused with [`Refusal::StoreRejected`]).
    Stored(TransactionRecord),
    Refused(LedgerError),
}

#[derive(Debug, Clone)]
pub struct BatchOutcome {
    pub items: Vec<ItemOutcome>,
    /// The new state of every balance the batch changed.
    pub balances: Vec<BalanceRow>,
}

enum AttemptError {
    Retry(LedgerError),
    Fatal(LedgerError),
}

impl From<sea_orm::DbErr> for AttemptError {
    fn from(error: sea_orm::DbErr) -> Self {
        // Unique violations and serialization/busy errors are races with another writer.
        let text = error.to_string().to_ascii_lowercase();
        let race = [
            "unique",
            "duplicate",
            "serializ",
            "deadlock",
            "database is locked",
            "busy",
        ]
        .iter()
        .any(|word| text.contains(word));
        if race {
            AttemptError::Retry(LedgerError::Storage(error.to_string()))
        } else {
            AttemptError::Fatal(LedgerError::Storage(error.to_string()))
        }
    }
}

/// Commits a batch; an `Err` means nothing of it was stored.
pub async fn commit_batch(
    store: &Store,
    items: Vec<BatchItem>,
) -> Result<BatchOutcome, LedgerError> {
    store
        .run(|db| async move {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let txn = db.begin().await?;
                match attempt_commit(&txn, &items).await {
                    Ok(outcome) => {
                        txn.commit().await?;
                        return Ok(outcome);
                    }
                    Err(error) => {
                        txn.rollback().await.ok();
                        match error {
                            AttemptError::Retry(error) if attempt >= COMMIT_ATTEMPTS_MAX => {
                                return Err(error)
                            }
                            AttemptError::Retry(error) => {
                                tracing::debug!(attempt, %error, "commit lost a race; retrying");
                                tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 2))
                                    .await;
                            }
                            AttemptError::Fatal(error) => return Err(error),
                        }
                    }
                }
            }
        })
        .await
}

async fn attempt_commit(
    txn: &DatabaseTransaction,
    items: &[BatchItem],
) -> Result<BatchOutcome, AttemptError> {
    let mut outcomes: Vec<Option<ItemOutcome>> = vec![None; items.len()];
    refuse_duplicate_references(txn, items, &mut outcomes).await?;

    let touched: Vec<String> = items
        .iter()
        .zip(&outcomes)
        .filter(|(_, outcome)| outcome.is_none())
        .flat_map(|(item, _)| item.changes.iter().map(|(id, _)| id.clone()))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let rows = lock_balances(txn, touched).await?;
    for (item, outcome) in items.iter().zip(outcomes.iter_mut()) {
        if outcome.is_none() {
            if let Some((missing, _)) = item.changes.iter().find(|(id, _)| !rows.contains_key(id)) {
                *outcome = Some(ItemOutcome::Refused(LedgerError::BalanceNotFound(
                    missing.clone(),
                )));
            }
        }
    }

    let available: HashMap<String, BigInt> = rows
        .iter()
        .map(|(id, row)| (id.clone(), row.amounts.available()))
        .collect();
    let excluded: Vec<bool> = outcomes.iter().map(Option::is_some).collect();
    let admission = admit_batch(
        &available,
        items.iter().map(|i| i.changes.as_slice()),
        &excluded,
    );

    let mut net: BTreeMap<String, BalanceDelta> = BTreeMap::new();
    let mut to_insert = Vec::new();
    for (index, item) in items.iter().enumerate() {
        if outcomes[index].is_some() {
            continue;
        }
        match admission[index] {
            None => {
                for (balance_id, change) in &item.changes {
                    net.entry(balance_id.clone())
                        .or_default()
                        .add(&change.delta);
                }
                let stored = as_stored(&item.record);
                to_insert.push(stored.clone());
                outcomes[index] = Some(ItemOutcome::Stored(stored));
            }
            Some(position) => {
                let (balance_id, change) = &item.changes[position];
                let error = refusal_for(balance_id, change.floor.as_ref());
                outcomes[index] = Some(match item.refusal {
                    Refusal::Fail => ItemOutcome::Refused(error),
                    Refusal::StoreRejected => {
                        let rejected =
                            as_stored(&item.record).with_rejection(&error.rejection_reason());
                        to_insert.push(rejected.clone());
                        ItemOutcome::Stored(rejected)
                    }
                });
            }
        }
    }
    assert_double_entry(&net);

    let mut balances = Vec::with_capacity(net.len());
    for (balance_id, delta) in &net {
        let row = &rows[balance_id];
        let mut updated = row.clone();
        updated.amounts.apply(delta);
        updated.version += 1;
        write_balance(txn, row.version, &updated).await?;
        balances.push(updated);
    }
    for chunk in to_insert.chunks(INSERT_ROWS_MAX) {
        transaction::Entity::insert_many(chunk.iter().map(active_model))
            .exec_without_returning(txn)
            .await?;
    }
    let items = outcomes
        .into_iter()
        .map(|o| o.expect("every item decided"))
        .collect();
    Ok(BatchOutcome { items, balances })
}

/// The record at the database's time resolution (PostgreSQL keeps microseconds), so that
/// what a request is answered equals what is read back later.
fn as_stored(record: &TransactionRecord) -> TransactionRecord {
    use chrono::SubsecRound;
    let micros = |time: &mut Option<chrono::DateTime<chrono::Utc>>| {
        *time = time.map(|t| t.trunc_subsecs(6));
    };
    let mut stored = record.clone();
    stored.created_at = stored.created_at.trunc_subsecs(6);
    micros(&mut stored.effective_date);
    micros(&mut stored.scheduled_for);
    micros(&mut stored.inflight_expiry_date);
    micros(&mut stored.inflight_commit_date);
    stored
}

pub fn refusal_for(balance_id: &str, floor: Option<&Floor>) -> LedgerError {
    match floor {
        Some(floor) if floor.is_overdraft_limit() => {
            LedgerError::OverdraftLimitExceeded(balance_id.to_owned())
        }
        _ => LedgerError::InsufficientFunds(balance_id.to_owned()),
    }
}

/// Σ credits = Σ debits (and the same for inflight) over the whole batch.
fn assert_double_entry(net: &BTreeMap<String, BalanceDelta>) {
    let mut total = BalanceDelta::default();
    for delta in net.values() {
        total.add(delta);
    }
    assert_eq!(
        total.credit, total.debit,
        "batch is not balanced: {total:?}"
    );
    assert_eq!(
        total.inflight_credit, total.inflight_debit,
        "batch inflight is not balanced"
    );
}

async fn refuse_duplicate_references(
    txn: &DatabaseTransaction,
    items: &[BatchItem],
    outcomes: &mut [Option<ItemOutcome>],
) -> Result<(), AttemptError> {
    let mut seen = HashSet::new();
    for (item, outcome) in items.iter().zip(outcomes.iter_mut()) {
        if !seen.insert(item.record.reference.as_str()) {
            *outcome = Some(ItemOutcome::Refused(LedgerError::DuplicateReference(
                item.record.reference.clone(),
            )));
        }
    }
    let references: Vec<String> = items.iter().map(|i| i.record.reference.clone()).collect();
    let mut stored = HashSet::new();
    for chunk in references.chunks(IN_LIST_MAX) {
        let found: Vec<String> = transaction::Entity::find()
            .select_only()
            .column(transaction::Column::Reference)
            .filter(transaction::Column::Reference.is_in(chunk.to_vec()))
            .into_tuple()
            .all(txn)
            .await?;
        stored.extend(found);
    }
    for (item, outcome) in items.iter().zip(outcomes.iter_mut()) {
        if outcome.is_none() && stored.contains(&item.record.reference) {
            *outcome = Some(ItemOutcome::Refused(LedgerError::DuplicateReference(
                item.record.reference.clone(),
            )));
        }
    }
    Ok(())
}

/// Reads the balances, locking their rows on PostgreSQL (SQLite's write lock covers it).
async fn lock_balances(
    txn: &DatabaseTransaction,
    mut ids: Vec<String>,
) -> Result<HashMap<String, BalanceRow>, AttemptError> {
    ids.sort();
    let mut rows = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(IN_LIST_MAX) {
        let mut select = balance::Entity::find()
            .filter(balance::Column::BalanceId.is_in(chunk.to_vec()))
            .order_by_asc(balance::Column::BalanceId);
        if txn.get_database_backend() == DbBackend::Postgres {
            select = select.lock_exclusive();
        }
        for model in select.all(txn).await? {
            rows.insert(model.balance_id.clone(), BalanceRow::from(&model));
        }
    }
    Ok(rows)
}

/// Writes a balance's new amounts, guarded by the version it was read at.
async fn write_balance(
    txn: &DatabaseTransaction,
    read_version: i64,
    row: &BalanceRow,
) -> Result<(), AttemptError> {
    let amounts = &row.amounts;
    let money = |value: BigInt| Expr::val(Money(value));
    let result = balance::Entity::update_many()
        .col_expr(
            balance::Column::CreditBalance,
            money(amounts.credit.clone()),
        )
        .col_expr(balance::Column::DebitBalance, money(amounts.debit.clone()))
        .col_expr(balance::Column::Balance, money(amounts.balance()))
        .col_expr(
            balance::Column::InflightCreditBalance,
            money(amounts.inflight_credit.clone()),
        )
        .col_expr(
            balance::Column::InflightDebitBalance,
            money(amounts.inflight_debit.clone()),
        )
        .col_expr(
            balance::Column::InflightBalance,
            money(amounts.inflight_balance()),
        )
        .col_expr(balance::Column::Version, Expr::val(row.version))
        .filter(balance::Column::BalanceId.eq(row.balance_id.clone()))
        .filter(Expr::col(balance::Column::Version).eq(read_version))
        .exec(txn)
        .await?;
    if result.rows_affected != 1 {
        return Err(AttemptError::Retry(LedgerError::Storage(format!(
            "balance {} changed while it was being written",
            row.balance_id
        ))));
    }
    Ok(())
}

impl ItemOutcome {
    pub fn status(&self) -> Option<TransactionStatus> {
        match self {
            ItemOutcome::Stored(record) => Some(record.status),
            ItemOutcome::Refused(_) => None,
        }
    }
}
