//! The group commit: a whole batch of transfers in one database transaction.
//!
//! 0. the `@indicator` balances that queued requests proposed are inserted (one statement);
//!    where one existed already, its items are written against it (see `NewIndicator`);
//! 1. duplicate references (inside the batch and already stored) are refused (when the
//!    balances are locked first on PostgreSQL, in step 4's statement; a large batch whose
//!    items each claim only their own reference, once, leaves stored ones to the unique
//!    index: a taken one fails its insert in step 3, and the batch is redone checking first);
//! 2. inflight commits and voids are decided against their locked hold rows;
//! 3. on PostgreSQL, without hold actions, the batch is written in one go: the rows of the
//!    items still undecided are inserted, and each touched balance gets one update guarded
//!    by what the batch's debits need of it ([`write_admitting_all`]; a large batch inserts
//!    its rows in a statement of their own first, see `WriteOrder`). If every guard holds,
//!    that is the whole write: no balance was read. If one fails, the attempt is rolled back
//!    and redone deciding first (steps 4-6);
//! 4. every touched balance is locked and read, in balance-id order (no deadlocks);
//! 5. the batch is admitted against those rows ([`admit_units`]): the database state, not any
//!    process's cache, decides, so replicas can never overdraw a balance; a large batch
//!    with hold actions has inserted its rows in step 3, and a refusal rolls it back to be
//!    redone deciding first;
//! 6. one update per touched balance (its net change for the whole batch, guarded by the
//!    version read), with the rows not inserted yet; hold rows written; commit.
//!
//! A lost race with another process (a version moved, a reference inserted meanwhile) rolls
//! the attempt back and retries it from the start.

use super::balances::{self, BalanceRow, BalanceState, NewIndicator};
use super::transactions::active_model;
use super::{pg_arrays, Store};
use crate::domain::balance::{check_precision, BalanceDelta, Floor, GuardedChange};
use crate::domain::batch::{admission_guards, admit_units, Admission, Unit, UnitMode};
use crate::domain::inflight::{self, HoldAction, HoldState};
use crate::domain::transaction::{QUEUED_CHILD_SUFFIX, QUEUED_PARENT_KEY};
use crate::domain::{TransactionRecord, TransactionStatus};
use crate::entity::{balance, inflight_hold, transaction, Money};
use crate::LedgerError;
use bigdecimal::num_bigint::BigInt;
use chrono::Utc;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, SqlErr, TransactionTrait,
};
use std::borrow::Cow;
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

/// A commit or void of an existing hold, decided inside the transaction.
#[derive(Debug, Clone)]
pub struct HoldActionRequest {
    pub hold_id: String,
    pub action: HoldAction,
    /// This action was queued: clear the hold's pending mark, whatever the outcome.
    pub clears_pending: bool,
}

#[derive(Debug, Clone)]
pub struct BatchItem {
    /// The row to store; for a hold action its amount and hash are set in the transaction.
    pub record: TransactionRecord,
    pub changes: Vec<(String, GuardedChange)>,
    pub refusal: Refusal,
    pub hold_action: Option<HoldActionRequest>,
}

impl BatchItem {
    pub fn transfer(
        record: TransactionRecord,
        changes: Vec<(String, GuardedChange)>,
        refusal: Refusal,
    ) -> Self {
        Self {
            record,
            changes,
            refusal,
            hold_action: None,
        }
    }
}

/// Items committed together under one mode (see [`UnitMode`]).
#[derive(Debug, Clone)]
pub struct BatchUnit {
    pub mode: UnitMode,
    pub items: Vec<BatchItem>,
    /// Indicator balances the items name by proposed ids, created in the same commit.
    pub new_indicators: Vec<NewIndicator>,
    /// The unit is a bulk request: its `bulk_transaction.*` event is written with it.
    pub bulk: Option<BulkEvent>,
}

/// The bulk request a unit is (its event: `bulk_transaction.<status>` when every item was
/// stored, `bulk_transaction.failed` with the first refusal otherwise).
#[derive(Debug, Clone)]
pub struct BulkEvent {
    pub batch_id: String,
    /// `applied`, `inflight` (recorded so), or `queued` (stored for the workers).
    pub status: &'static str,
    /// The batch's transfers are holds (`bulk_transaction.inflight`).
    pub inflight: bool,
}

impl BulkEvent {
    /// Blnk's event name for a recorded batch of this status.
    fn name(&self) -> &'static str {
        if self.inflight {
            "bulk_transaction.inflight"
        } else {
            "bulk_transaction.applied"
        }
    }
}

/// Blnk's `data` of a bulk event: `{batch_id, status, timestamp, transaction_count?, error?}`.
pub fn bulk_payload(
    batch_id: &str,
    status: &str,
    transaction_count: Option<usize>,
    error: Option<&str>,
) -> String {
    let mut data = serde_json::json!({
        "batch_id": batch_id,
        "status": status,
        "timestamp": Utc::now().to_rfc3339(),
    });
    if let Some(count) = transaction_count {
        data["transaction_count"] = count.into();
    }
    if let Some(error) = error {
        data["error"] = error.into();
    }
    data.to_string()
}

/// The `bulk_transaction.failed` event of a batch.
pub fn bulk_failed_event(batch_id: &str, error: &str) -> crate::events::outbox::NewEvent {
    crate::events::outbox::NewEvent::of(
        "bulk_transaction.failed",
        batch_id,
        bulk_payload(batch_id, "failed", None, Some(error)),
    )
}

impl BatchUnit {
    pub fn new(mode: UnitMode, items: Vec<BatchItem>) -> Self {
        Self {
            mode,
            items,
            new_indicators: Vec::new(),
            bulk: None,
        }
    }

    pub fn single(item: BatchItem) -> Self {
        Self::new(UnitMode::Independent, vec![item])
    }
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
    /// Per unit, per item.
    pub units: Vec<Vec<ItemOutcome>>,
    /// The new state of every balance the batch changed.
    pub balances: Vec<BalanceState>,
}

enum AttemptError {
    Retry(LedgerError),
    Fatal(LedgerError),
    /// The rows were inserted first and an item was then refused: start over, deciding
    /// before inserting ([`WriteOrder::BalancesFirst`]).
    Reorder,
}

/// When a batch's rows are inserted.
///
/// Inserting a thousand rows is most of a bulk batch's write, and while balances are locked
/// the next batch sharing any of them waits. So on PostgreSQL a large batch inserts the rows
/// of the items left after the reference and hold checks *before* it locks the balances
/// (`RowsFirst`), outside the window in which batches wait for each other; that is right
/// whenever the balances then admit every one of them, the usual case, which one guarded
/// update per balance then confirms without reading them (bulk 23,600 → 28,100 transfers/s,
/// BENCHMARKS.md round 8). If one is refused (its
/// row must not exist, or must be stored REJECTED), the attempt is rolled back and made again
/// `BalancesFirst`: lock, decide, then insert exactly the rows decided, in the statement that
/// updates the balances. A small batch without hold actions goes `Guarded`: after its
/// reference check, one statement inserts its rows and applies one guarded update per
/// balance (a separate insert statement cost more than a shorter lock saved: uniform single
/// transfers, ~30 a batch, were 5-8% slower with `RowsFirst`); a guard that fails rolls it
/// back to `BalancesFirst` the same way. A batch with hold actions, and every batch on
/// SQLite (one writer), goes `BalancesFirst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteOrder {
    RowsFirst,
    Guarded,
    BalancesFirst,
}

impl WriteOrder {
    /// On PostgreSQL: `RowsFirst` for a batch of at least `rows_first_items_min` items,
    /// else `Guarded` unless it has hold actions.
    fn for_batch(
        backend: DbBackend,
        items: usize,
        rows_first_items_min: usize,
        has_hold_actions: bool,
    ) -> Self {
        match backend {
            DbBackend::Postgres if items >= rows_first_items_min => Self::RowsFirst,
            DbBackend::Postgres if !has_hold_actions => Self::Guarded,
            _ => Self::BalancesFirst,
        }
    }
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

/// Commits a batch; an `Err` means nothing of it was stored. A batch of at least
/// `rows_first_items_min` items inserts its rows first (see `WriteOrder`).
pub async fn commit_batch(
    store: &Store,
    mut units: Vec<BatchUnit>,
    rows_first_items_min: usize,
) -> Result<BatchOutcome, LedgerError> {
    let items = units.iter().map(|u| u.items.len()).sum();
    let has_hold_actions = units
        .iter()
        .any(|u| u.items.iter().any(|i| i.hold_action.is_some()));
    let mut order = WriteOrder::for_batch(
        store.backend(),
        items,
        rows_first_items_min,
        has_hold_actions,
    );
    for item in units.iter_mut().flat_map(|u| u.items.iter_mut()) {
        truncate_to_stored(&mut item.record);
    }
    let metrics = store.metrics().clone();
    let events = store.events();
    // The payloads of the rows as submitted, made before the transaction (not while its
    // balances are locked); only rows rewritten inside it are serialized there.
    let prepared: Vec<Vec<String>> = match &events {
        Some(events) => units
            .iter()
            .map(|u| {
                u.items
                    .iter()
                    .map(|i| events.payloads.transaction(&i.record))
                    .collect()
            })
            .collect(),
        None => Vec::new(),
    };
    store
        .run(|db| async move {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let txn = db.begin().await?;
                match attempt_commit(&txn, &units, order).await {
                    Ok(attempt) => {
                        // After the balance updates (their rows locked): see `store::history`.
                        let horizon = Utc::now() - super::history::SNAPSHOT_SETTLE / 2;
                        let late = late_entries(&units, &attempt.decided, horizon);
                        super::history::invalidate_snapshots(&txn, &late).await?;
                        // Last, after every balance row the batch changed is locked: the
                        // events of one balance get ids in the order their batches commit.
                        if let Some(events) = &events {
                            // The indicator balances made here first: their `balance.created`
                            // precedes the transactions on them.
                            let mut batch = created_indicator_events(
                                &txn,
                                &attempt.created_indicators,
                                &*events.payloads,
                            )
                            .await?;
                            batch.extend(transaction_events(
                                &units,
                                &attempt.decided,
                                &prepared,
                                &*events.payloads,
                            ));
                            crate::events::outbox::insert(&txn, events, &batch).await?;
                        }
                        txn.commit().await?;
                        return Ok(BatchOutcome {
                            units: outcomes(units, attempt.decided),
                            balances: attempt.balances,
                        });
                    }
                    Err(error) => {
                        txn.rollback().await.ok();
                        match error {
                            AttemptError::Reorder => {
                                // Not a race: the batch has refusals; write it in the order
                                // that decides first (no pause, not counted).
                                metrics.observe_commit_reorder();
                                attempt -= 1;
                                order = WriteOrder::BalancesFirst;
                            }
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

/// Per balance, the earliest effective time among the batch's APPLIED rows that are older
/// than `horizon` (back-dated, or stamped long before this commit): the snapshots from that
/// time on may miss them (see `store::history`). Usually none.
fn late_entries(
    units: &[BatchUnit],
    decided: &Decisions,
    horizon: chrono::DateTime<Utc>,
) -> Vec<(String, chrono::DateTime<Utc>)> {
    let mut earliest: BTreeMap<&str, chrono::DateTime<Utc>> = BTreeMap::new();
    for (unit, decided) in units.iter().zip(decided) {
        for (item, decision) in unit.items.iter().zip(decided) {
            let record = match decision {
                Some(Decision::Stored) => &item.record,
                Some(Decision::StoredAs(record)) => record,
                Some(Decision::Refused(_)) | None => continue,
            };
            if record.status != TransactionStatus::Applied {
                continue;
            }
            let at = record.effective_date.unwrap_or(record.created_at);
            if at >= horizon {
                continue;
            }
            for balance in [record.source.as_str(), record.destination.as_str()] {
                let entry = earliest.entry(balance).or_insert(at);
                *entry = Ord::min(*entry, at);
            }
        }
    }
    earliest
        .into_iter()
        .map(|(balance, at)| (balance.to_owned(), at))
        .collect()
}

/// `balance.created` of each indicator balance the batch made on first use, read back in
/// one statement per [`IN_LIST_MAX`] (usually none).
pub(super) async fn created_indicator_events<C: ConnectionTrait>(
    txn: &C,
    created: &[String],
    payloads: &dyn crate::events::Payloads,
) -> Result<Vec<crate::events::outbox::NewEvent>, sea_orm::DbErr> {
    let mut events = Vec::with_capacity(created.len());
    for chunk in created.chunks(IN_LIST_MAX) {
        let models = balance::Entity::find()
            .filter(balance::Column::BalanceId.is_in(chunk.iter().cloned()))
            .order_by_asc(balance::Column::BalanceId)
            .all(txn)
            .await?;
        events.extend(models.iter().map(|model| {
            crate::events::outbox::NewEvent::of(
                "balance.created",
                &model.balance_id,
                payloads.balance(model),
            )
        }));
    }
    Ok(events)
}

/// The events of the batch's stored rows (`transaction.applied`, …), in batch order: each
/// keyed by its source and destination balances, its payload the row as the API serves it
/// (`prepared[unit][item]` for a row stored as submitted).
fn transaction_events(
    units: &[BatchUnit],
    decided: &Decisions,
    prepared: &[Vec<String>],
    payloads: &dyn crate::events::Payloads,
) -> Vec<crate::events::outbox::NewEvent> {
    let mut events = Vec::new();
    for (u, (unit, decided)) in units.iter().zip(decided).enumerate() {
        for (i, (item, decision)) in unit.items.iter().zip(decided).enumerate() {
            let (record, payload) = match decision {
                Some(Decision::Stored) => {
                    let payload = prepared.get(u).and_then(|unit| unit.get(i)).cloned();
                    let payload = payload.unwrap_or_else(|| payloads.transaction(&item.record));
                    (&item.record, payload)
                }
                Some(Decision::StoredAs(record)) => (record, payloads.transaction(record)),
                Some(Decision::Refused(_)) | None => continue,
            };
            events.push(crate::events::outbox::NewEvent {
                name: crate::events::transaction_event(record.status),
                entity_id: record.transaction_id.clone(),
                key_a: record.source.clone(),
                key_b: Some(record.destination.clone()),
                payload,
            });
        }
        if let Some(bulk) = &unit.bulk {
            events.push(bulk_event(bulk, unit.mode, decided));
        }
    }
    events
}

/// The event of a bulk unit as decided: recorded with every item, or failed at its first
/// refusal (an atomic unit's other items are refused only because of it), worded as the
/// request's answer is.
fn bulk_event(
    bulk: &BulkEvent,
    mode: UnitMode,
    decided: &[Option<Decision>],
) -> crate::events::outbox::NewEvent {
    let refused = decided.iter().enumerate().find_map(|(index, d)| match d {
        Some(Decision::Refused(LedgerError::UnitRefused(_))) => None,
        Some(Decision::Refused(error)) => Some((index, error)),
        _ => None,
    });
    match refused {
        Some((index, error)) => {
            let tail = if mode == UnitMode::Atomic {
                "No transaction of this batch was applied.".to_owned()
            } else {
                let applied = decided
                    .iter()
                    .filter(|d| matches!(d, Some(Decision::Stored | Decision::StoredAs(_))))
                    .count();
                format!("Previous transactions were not rolled back ({applied} applied).")
            };
            let error = format!("transactions[{index}]: {error}. {tail}");
            bulk_failed_event(&bulk.batch_id, &error)
        }
        None => crate::events::outbox::NewEvent::of(
            bulk.name(),
            &bulk.batch_id,
            bulk_payload(&bulk.batch_id, bulk.status, Some(decided.len()), None),
        ),
    }
}

/// What an attempt decided for an item. An item stored as it is names no record: its own is
/// moved into the [`ItemOutcome`] once the batch has committed (a retry starts over from the
/// same items), so a bulk batch does not copy a thousand rows.
#[allow(clippy::large_enum_variant)]
enum Decision {
    /// Stored as the item's record.
    Stored,
    /// Stored as this record instead (REJECTED, or the item's record in a rewritten copy of
    /// the units).
    StoredAs(TransactionRecord),
    Refused(LedgerError),
}

/// Per unit, per item: `None` while undecided.
type Decisions = Vec<Vec<Option<Decision>>>;

/// A written attempt, not yet committed.
struct Attempt {
    decided: Decisions,
    /// The new state of every balance the batch changed.
    balances: Vec<BalanceState>,
    /// The indicator balances this attempt created (their `balance.created` events).
    created_indicators: Vec<String>,
}

async fn attempt_commit(
    txn: &DatabaseTransaction,
    units: &[BatchUnit],
    order: WriteOrder,
) -> Result<Attempt, AttemptError> {
    let mut decided: Decisions = units
        .iter()
        .map(|u| u.items.iter().map(|_| None).collect())
        .collect();
    // Where another writer created a proposed indicator balance first, the items are
    // rewritten to that balance, on a copy (a retry starts over); usually nothing changes.
    let rewritten: Vec<BatchUnit>;
    let mut copied = false;
    let mut created_indicators = Vec::new();
    let units =
        match create_new_indicators(txn, units, &mut decided, &mut created_indicators).await? {
            Some(copy) => {
                rewritten = copy;
                copied = true;
                rewritten.as_slice()
            }
            None => units,
        };
    let has_hold_actions = units
        .iter()
        .any(|u| u.items.iter().any(|i| i.hold_action.is_some()));
    // A batch that locks before it inserts, and whose balances are known now (no hold
    // actions), checks its references and locks its balances in one statement on
    // PostgreSQL: one round trip less while other batches wait for those balances. It locks
    // the balances of items refused as duplicates too (rare; harmless).
    let mut locked_early = None;
    // A large batch whose items claim only their own references, each once, lets the
    // unique index check them: its insert fails on a taken one, and the batch is made
    // again `BalancesFirst`, which checks them first. So the usual batch, which has no
    // duplicate, skips a statement probing the index once an item.
    let references_left_to_index = order == WriteOrder::RowsFirst
        && !has_hold_actions
        && claims_only_own_references_once(units);
    if references_left_to_index {
        // Checked by the insert below.
    } else if order == WriteOrder::BalancesFirst
        && !has_hold_actions
        && txn.get_database_backend() == DbBackend::Postgres
    {
        let touched = sorted_balance_ids(units.iter().flat_map(|u| u.items.iter()));
        let (stored, rows) =
            pg_arrays::references_and_locked_balances(txn, &claimed_references(units), &touched)
                .await?;
        refuse_duplicates(units, &stored, &mut decided);
        locked_early = Some(rows);
    } else {
        refuse_duplicate_references(txn, units, &mut decided).await?;
    }
    // Hold actions learn their amounts and changes here, on a copy (a retry starts over);
    // a batch without them is only read.
    let with_holds: Vec<BatchUnit>;
    let (units, holds) = if has_hold_actions {
        let mut copy = units.to_vec();
        let holds = decide_hold_actions(txn, &mut copy, &mut decided).await?;
        with_holds = copy;
        copied = true;
        (with_holds.as_slice(), holds)
    } else {
        (units, Holds::new())
    };

    // With `RowsFirst`, the items inserted here must all be admitted below.
    let inserted_first: Option<Vec<Vec<bool>>> = (order == WriteOrder::RowsFirst).then(|| {
        decided
            .iter()
            .map(|unit| unit.iter().map(Option::is_none).collect())
            .collect()
    });
    if inserted_first.is_some() {
        let undecided: Vec<&TransactionRecord> = undecided_items(units, &decided)
            .map(|item| &item.record)
            .collect();
        match pg_arrays::insert_transactions(txn, &undecided).await {
            Err(error)
                if references_left_to_index
                    && matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) =>
            {
                return Err(AttemptError::Reorder);
            }
            result => result?,
        }
    }

    let mut attempt =
        if order == WriteOrder::Guarded || (inserted_first.is_some() && !has_hold_actions) {
            write_admitting_all(txn, units, decided, order == WriteOrder::Guarded).await?
        } else {
            write_deciding_each(txn, units, decided, holds, locked_early, inserted_first).await?
        };
    attempt.created_indicators = created_indicators;
    if copied {
        // The stored rows are the copy's: the outcome cannot take them from the items.
        for (unit, decided) in units.iter().zip(attempt.decided.iter_mut()) {
            for (item, decision) in unit.items.iter().zip(decided.iter_mut()) {
                if matches!(decision, Some(Decision::Stored)) {
                    *decision = Some(Decision::StoredAs(item.record.clone()));
                }
            }
        }
    }
    Ok(attempt)
}

/// The rest of a `BalancesFirst` attempt, or of a `RowsFirst` one with hold actions: locks
/// the balances (unless `locked_early` holds them), admits item by item, and writes what
/// was decided. With `inserted_first`, an item inserted already and now refused rolls the
/// attempt back ([`AttemptError::Reorder`]).
async fn write_deciding_each(
    txn: &DatabaseTransaction,
    units: &[BatchUnit],
    mut decided: Decisions,
    holds: Holds,
    locked_early: Option<HashMap<String, BalanceRow>>,
    inserted_first: Option<Vec<Vec<bool>>>,
) -> Result<Attempt, AttemptError> {
    let rows = match locked_early {
        Some(rows) => rows,
        None => lock_balances(txn, sorted_balance_ids(undecided_items(units, &decided))).await?,
    };
    for (unit, decided) in units.iter().zip(decided.iter_mut()) {
        for (item, decision) in unit.items.iter().zip(decided.iter_mut()) {
            if decision.is_none() {
                if let Some((missing, _)) =
                    item.changes.iter().find(|(id, _)| !rows.contains_key(id))
                {
                    *decision = Some(Decision::Refused(LedgerError::BalanceNotFound(
                        missing.clone(),
                    )));
                }
            }
        }
    }

    let available: HashMap<String, BigInt> = rows
        .iter()
        .map(|(id, row)| (id.clone(), row.amounts.available()))
        .collect();
    let (admission_units, excluded) = admission_input(units, &decided);
    let admission = admit_units(&available, &admission_units, &excluded);
    if let Some(inserted) = &inserted_first {
        let refused_after_insert = inserted
            .iter()
            .zip(&admission)
            .any(|(inserted, admission)| {
                inserted
                    .iter()
                    .zip(admission)
                    .any(|(inserted, admitted)| *inserted && *admitted != Admission::Admitted)
            });
        if refused_after_insert {
            return Err(AttemptError::Reorder);
        }
    }

    let mut net: BTreeMap<String, BalanceDelta> = BTreeMap::new();
    // Admitted rows are inserted as they are; refused ones stored REJECTED are new rows.
    let mut to_insert: Vec<Cow<'_, TransactionRecord>> = Vec::new();
    let mut admitted_actions: Vec<&HoldActionRequest> = Vec::new();
    for ((unit, decided), admission) in units.iter().zip(decided.iter_mut()).zip(&admission) {
        let cause = unit_refusal_cause(unit, decided, admission);
        for ((item, decision), admitted) in unit.items.iter().zip(decided.iter_mut()).zip(admission)
        {
            let error = match admitted {
                Admission::Excluded => continue,
                Admission::Admitted => {
                    for (balance_id, change) in &item.changes {
                        net.entry(balance_id.clone())
                            .or_default()
                            .add(&change.delta);
                    }
                    to_insert.push(Cow::Borrowed(&item.record));
                    admitted_actions.extend(item.hold_action.as_ref());
                    *decision = Some(Decision::Stored);
                    continue;
                }
                Admission::Refused { change } => {
                    let (balance_id, change) = &item.changes[*change];
                    refusal_for(balance_id, change.floor.as_ref())
                }
                Admission::RefusedWithUnit => LedgerError::UnitRefused(cause.clone()),
            };
            *decision = Some(match item.refusal {
                Refusal::Fail => Decision::Refused(error),
                Refusal::StoreRejected => {
                    let rejected = item
                        .record
                        .clone()
                        .with_rejection(&error.rejection_reason());
                    to_insert.push(Cow::Owned(rejected.clone()));
                    Decision::StoredAs(rejected)
                }
            });
        }
    }
    assert_double_entry(net.values());

    let mut balances = Vec::with_capacity(net.len());
    for (balance_id, delta) in &net {
        let mut updated = rows[balance_id].clone();
        updated.amounts.apply(delta);
        updated.version += 1;
        balances.push(updated);
    }
    let to_insert: Vec<&TransactionRecord> = to_insert.iter().map(Cow::as_ref).collect();
    let not_yet_inserted: &[&TransactionRecord] = match inserted_first {
        Some(_) => &[],
        None => &to_insert,
    };
    write_batch(txn, &balances, not_yet_inserted).await?;
    write_holds(txn, units, &to_insert, &admitted_actions, &holds).await?;
    let balances = balances.into_iter().map(BalanceState::from).collect();
    Ok(Attempt {
        decided,
        balances,
        created_indicators: Vec::new(),
    })
}

/// The rest of a `Guarded` attempt, or of a `RowsFirst` one without hold actions (its rows
/// inserted already, so `insert_rows` is false): every undecided item is admitted exactly
/// when each balance meets its guard (see [`admission_guards`]), so one statement applies a
/// guarded update per balance (and inserts the rows), with no locking read of the balances
/// first. If a guard fails (funds short, a balance missing or changed by another writer
/// meanwhile), the attempt is rolled back and written again deciding first.
async fn write_admitting_all(
    txn: &DatabaseTransaction,
    units: &[BatchUnit],
    mut decided: Decisions,
    insert_rows: bool,
) -> Result<Attempt, AttemptError> {
    let (admission_units, excluded) = admission_input(units, &decided);
    let Some(guards) = admission_guards(&admission_units, &excluded) else {
        // Items decided above refuse others of their unit: decide item by item.
        return Err(AttemptError::Reorder);
    };
    assert_double_entry(guards.values().map(|guard| &guard.net));
    let stored: Vec<&TransactionRecord> = undecided_items(units, &decided)
        .map(|item| &item.record)
        .collect();
    let rows: &[&TransactionRecord] = if insert_rows { &stored } else { &[] };
    let balances = pg_arrays::write_guarded(txn, &guards, rows).await?;
    if balances.len() != guards.len() {
        return Err(AttemptError::Reorder);
    }
    for decision in decided.iter_mut().flatten() {
        decision.get_or_insert(Decision::Stored);
    }
    write_holds(txn, units, &stored, &[], &Holds::new()).await?;
    Ok(Attempt {
        decided,
        balances,
        created_indicators: Vec::new(),
    })
}

/// The admission's view of the batch: each unit's changes, and the items already decided.
fn admission_input<'a>(
    units: &'a [BatchUnit],
    decided: &Decisions,
) -> (Vec<Unit<'a>>, Vec<Vec<bool>>) {
    let admission_units = units
        .iter()
        .map(|unit| Unit {
            mode: unit.mode,
            items: unit.items.iter().map(|i| i.changes.as_slice()).collect(),
        })
        .collect();
    let excluded = decided
        .iter()
        .map(|d| d.iter().map(Option::is_some).collect())
        .collect();
    (admission_units, excluded)
}

/// The committed attempt's outcomes: an item stored as it is gives its record.
fn outcomes(units: Vec<BatchUnit>, decided: Decisions) -> Vec<Vec<ItemOutcome>> {
    units
        .into_iter()
        .zip(decided)
        .map(|(unit, decided)| {
            unit.items
                .into_iter()
                .zip(decided)
                .map(
                    |(item, decision)| match decision.expect("every item decided") {
                        Decision::Stored => ItemOutcome::Stored(item.record),
                        Decision::StoredAs(record) => ItemOutcome::Stored(record),
                        Decision::Refused(error) => ItemOutcome::Refused(error),
                    },
                )
                .collect()
        })
        .collect()
}

/// Creates the indicator balances the units proposed (one statement). `None` when every
/// proposal was taken; else a copy of the units naming the balances that exist instead (made
/// by another writer, or by an earlier unit of this batch), where an item whose precision
/// that balance refuses is decided here.
async fn create_new_indicators(
    txn: &DatabaseTransaction,
    units: &[BatchUnit],
    decided: &mut Decisions,
    created: &mut Vec<String>,
) -> Result<Option<Vec<BatchUnit>>, AttemptError> {
    let proposals = units.iter().flat_map(|u| &u.new_indicators);
    let mut first_proposal: HashMap<(&str, &str), &str> = HashMap::new();
    let (mut keys, mut proposed) = (Vec::new(), Vec::new());
    for new in proposals.clone() {
        let key = (new.indicator.as_str(), new.currency.as_str());
        if first_proposal.insert(key, &new.balance_id).is_none() {
            keys.push((new.indicator.clone(), new.currency.clone()));
            proposed.push(new.balance_id.clone());
        }
    }
    if keys.is_empty() {
        return Ok(None);
    }
    let found = balances::create_indicator_balances(txn, &keys, &proposed).await?;
    // The stored id is the proposed one exactly when this insert made the balance.
    created.extend(
        keys.iter()
            .zip(&proposed)
            .filter(|(key, id)| found.get(*key) == Some(*id))
            .map(|(_, id)| id.clone()),
    );
    let mut instead: HashMap<&str, &str> = HashMap::new();
    for new in proposals {
        let key = (new.indicator.clone(), new.currency.clone());
        let stored = found.get(&key).ok_or_else(|| {
            AttemptError::Fatal(LedgerError::Internal(format!(
                "indicator balance {} ({}) missing after its insert",
                new.indicator, new.currency
            )))
        })?;
        if *stored != new.balance_id {
            instead.insert(&new.balance_id, stored);
        }
    }
    if instead.is_empty() {
        return Ok(None);
    }
    // Balances made by another writer may carry a precision (created through the API).
    let proposed: HashSet<&str> = proposed.iter().map(String::as_str).collect();
    let made_elsewhere: Vec<String> = instead
        .values()
        .filter(|id| !proposed.contains(**id))
        .map(|id| (*id).to_owned())
        .collect();
    let rows = balances::balance_rows(txn, &made_elsewhere).await?;
    let mut copy = units.to_vec();
    for (unit, decided) in copy.iter_mut().zip(decided.iter_mut()) {
        for (item, decision) in unit.items.iter_mut().zip(decided.iter_mut()) {
            let record = &mut item.record;
            let mut renamed = false;
            for side in [&mut record.source, &mut record.destination] {
                if let Some(existing) = instead.get(side.as_str()) {
                    *side = (*existing).to_owned();
                    renamed = true;
                }
            }
            if !renamed {
                continue;
            }
            record.rehash();
            for (balance_id, _) in &mut item.changes {
                if let Some(existing) = instead.get(balance_id.as_str()) {
                    *balance_id = (*existing).to_owned();
                }
            }
            for side in [&record.source, &record.destination] {
                let stored = rows.get(side).and_then(|row| row.precision.as_ref());
                if let Err(error) = check_precision(side, stored, &record.precision) {
                    decision.get_or_insert(Decision::Refused(error));
                }
            }
        }
    }
    Ok(Some(copy))
}

/// The balances `items` change, each once, in id order (the order rows are locked in, so
/// two batches never wait for each other in a cycle).
fn sorted_balance_ids<'a>(items: impl Iterator<Item = &'a BatchItem>) -> Vec<String> {
    let ids: std::collections::BTreeSet<&str> = items
        .flat_map(|item| item.changes.iter().map(|(id, _)| id.as_str()))
        .collect();
    ids.into_iter().map(str::to_owned).collect()
}

/// The items no check has decided yet.
/// The items borrow only `units`, so what is collected from them outlives the borrow of
/// `decided`.
fn undecided_items<'a, 'd>(
    units: &'a [BatchUnit],
    decided: &'d Decisions,
) -> impl Iterator<Item = &'a BatchItem> + use<'a, 'd> {
    units
        .iter()
        .zip(decided)
        .flat_map(|(unit, decided)| unit.items.iter().zip(decided))
        .filter(|(_, decision)| decision.is_none())
        .map(|(item, _)| item)
}

/// Why the other items of a unit were refused: the first refusal in it.
fn unit_refusal_cause(
    unit: &BatchUnit,
    decided: &[Option<Decision>],
    admission: &[Admission],
) -> String {
    for (index, (decision, admitted)) in decided.iter().zip(admission).enumerate() {
        if let Some(Decision::Refused(error)) = decision {
            return format!(
                "transaction {} of the batch was refused: {error}",
                index + 1
            );
        }
        if let Admission::Refused { change } = admitted {
            let (balance_id, change) = &unit.items[index].changes[*change];
            let error = refusal_for(balance_id, change.floor.as_ref());
            return format!(
                "transaction {} of the batch was refused: {error}",
                index + 1
            );
        }
    }
    "another transaction of the batch was refused".to_owned()
}

/// Puts the record's times at the database's resolution (PostgreSQL keeps microseconds), so
/// that what a request is answered equals what is read back later.
fn truncate_to_stored(record: &mut TransactionRecord) {
    use chrono::SubsecRound;
    let micros = |time: &mut Option<chrono::DateTime<chrono::Utc>>| {
        *time = time.map(|t| t.trunc_subsecs(6));
    };
    record.created_at = record.created_at.trunc_subsecs(6);
    micros(&mut record.effective_date);
    micros(&mut record.scheduled_for);
    micros(&mut record.inflight_expiry_date);
    micros(&mut record.inflight_commit_date);
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
fn assert_double_entry<'a>(net: impl Iterator<Item = &'a BalanceDelta>) {
    let mut total = BalanceDelta::default();
    for delta in net {
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
    units: &[BatchUnit],
    decided: &mut Decisions,
) -> Result<(), AttemptError> {
    let stored = stored_references(txn, &claimed_references(units)).await?;
    refuse_duplicates(units, &stored, decided);
    Ok(())
}

/// Besides its own reference, a QUEUED row needs its worker's `<ref>_q` to be free, and a
/// client's `<ref>_q` must not be the future child of a queued `<ref>`: an item's own
/// reference first, then those.
fn claims(item: &BatchItem) -> Vec<String> {
    let record = &item.record;
    let mut claims = vec![record.reference.clone()];
    claims.extend(derived_claim(record).map(Cow::into_owned));
    claims
}

/// The reference a record claims besides its own (see [`claims`]), if any.
fn derived_claim(record: &TransactionRecord) -> Option<Cow<'_, str>> {
    if matches!(
        record.status,
        TransactionStatus::Queued | TransactionStatus::Scheduled
    ) {
        return Some(Cow::Owned(format!(
            "{}{QUEUED_CHILD_SUFFIX}",
            record.reference
        )));
    }
    let prefix = record.reference.strip_suffix(QUEUED_CHILD_SUFFIX)?;
    (!is_queued_child(record)).then_some(Cow::Borrowed(prefix))
}

/// Whether every item of the batch claims only its own reference (see [`claims`]) and no
/// two items claim the same one.
fn claims_only_own_references_once(units: &[BatchUnit]) -> bool {
    let mut seen = HashSet::new();
    units.iter().flat_map(|u| &u.items).all(|item| {
        derived_claim(&item.record).is_none() && seen.insert(item.record.reference.as_str())
    })
}

fn claimed_references(units: &[BatchUnit]) -> Vec<String> {
    units
        .iter()
        .flat_map(|u| u.items.iter().flat_map(claims))
        .collect()
}

/// Refuses the items whose claims are taken, by `stored` (`reference → status` of stored
/// rows) or by an earlier item of the batch.
fn refuse_duplicates(
    units: &[BatchUnit],
    stored: &HashMap<String, String>,
    decided: &mut Decisions,
) {
    let mut seen = HashSet::new();
    for (unit, decided) in units.iter().zip(decided.iter_mut()) {
        for (item, decision) in unit.items.iter().zip(decided.iter_mut()) {
            let reference = &item.record.reference;
            let own_taken = !seen.insert(reference.clone()) || stored.contains_key(reference);
            let derived_taken = claims(item)
                .iter()
                .skip(1)
                .any(|claim| match stored.get(claim) {
                    // A client `<x>_q` only collides with a queued `<x>`.
                    Some(status) if item.record.reference.ends_with(QUEUED_CHILD_SUFFIX) => {
                        status == TransactionStatus::Queued.as_str()
                            || status == TransactionStatus::Scheduled.as_str()
                    }
                    Some(_) => true,
                    None => false,
                });
            if own_taken || derived_taken {
                *decision = Some(Decision::Refused(LedgerError::DuplicateReference(
                    reference.clone(),
                )));
            }
        }
    }
}

/// `reference → status` of the stored rows among `references`.
async fn stored_references(
    txn: &DatabaseTransaction,
    references: &[String],
) -> Result<HashMap<String, String>, AttemptError> {
    if txn.get_database_backend() == DbBackend::Postgres {
        return Ok(pg_arrays::stored_references(txn, references).await?);
    }
    let mut stored = HashMap::new();
    for chunk in references.chunks(IN_LIST_MAX) {
        let found: Vec<(String, String)> = transaction::Entity::find()
            .select_only()
            .column(transaction::Column::Reference)
            .column(transaction::Column::Status)
            .filter(transaction::Column::Reference.is_in(chunk.to_vec()))
            .into_tuple()
            .all(txn)
            .await?;
        stored.extend(found);
    }
    Ok(stored)
}

/// A worker's row for a queued transaction (its parent is the queued row itself).
fn is_queued_child(record: &TransactionRecord) -> bool {
    let parent = record
        .meta_data
        .as_ref()
        .and_then(|m| m.get(QUEUED_PARENT_KEY))
        .and_then(|v| v.as_str());
    record.parent_transaction.is_some() && parent == record.parent_transaction.as_deref()
}

/// The holds touched by this batch's actions, as read (and locked) at its start.
type Holds = HashMap<String, inflight_hold::Model>;

/// Decides every commit and void against its locked hold, in batch order: fills in the
/// amount, hash and balance changes of admitted actions, refuses the others.
async fn decide_hold_actions(
    txn: &DatabaseTransaction,
    units: &mut [BatchUnit],
    decided: &mut Decisions,
) -> Result<Holds, AttemptError> {
    let ids: Vec<String> = units
        .iter()
        .flat_map(|u| {
            u.items
                .iter()
                .filter_map(|i| i.hold_action.as_ref().map(|a| a.hold_id.clone()))
        })
        .collect();
    if ids.is_empty() {
        return Ok(Holds::new());
    }
    let mut holds = Holds::new();
    for chunk in ids.chunks(IN_LIST_MAX) {
        let mut select = inflight_hold::Entity::find()
            .filter(inflight_hold::Column::HoldId.is_in(chunk.to_vec()))
            .order_by_asc(inflight_hold::Column::HoldId);
        if txn.get_database_backend() == DbBackend::Postgres {
            select = select.lock_exclusive();
        }
        for hold in select.all(txn).await? {
            holds.insert(hold.hold_id.clone(), hold);
        }
    }
    let mut running: HashMap<String, (HoldState, BigInt)> = holds
        .values()
        .map(|h| {
            (
                h.hold_id.clone(),
                (
                    HoldState::parse(&h.state).unwrap_or(HoldState::Voided),
                    h.remaining.0.clone(),
                ),
            )
        })
        .collect();
    for (unit, decided) in units.iter_mut().zip(decided.iter_mut()) {
        for (item, decision) in unit.items.iter_mut().zip(decided.iter_mut()) {
            let Some(request) = &item.hold_action else {
                continue;
            };
            if decision.is_some() {
                continue;
            }
            let Some((state, remaining)) = running.get_mut(&request.hold_id) else {
                *decision = Some(Decision::Refused(LedgerError::NotInflight(
                    request.hold_id.clone(),
                )));
                continue;
            };
            let hold = &holds[&request.hold_id];
            match inflight::decide(*state, remaining, &request.action) {
                Ok(outcome) => {
                    item.changes = inflight::action_changes(
                        &request.action,
                        &hold.source,
                        &hold.destination,
                        &outcome.amount,
                    );
                    item.record.precise_amount = outcome.amount;
                    item.record.hash = TransactionRecord::content_hash(
                        &item.record.amount_major(),
                        &item.record.reference,
                        &item.record.currency,
                        &item.record.source,
                        &item.record.destination,
                    );
                    *state = outcome.state_after;
                    *remaining = outcome.remaining_after;
                }
                Err(refusal) => {
                    let error = LedgerError::hold_refused(&request.hold_id, refusal);
                    *decision = Some(Decision::Refused(error));
                }
            }
        }
    }
    Ok(holds)
}

/// Opens a hold for every stored INFLIGHT row; applies admitted actions to their holds;
/// clears the pending mark of every queued action that was decided.
async fn write_holds(
    txn: &DatabaseTransaction,
    units: &[BatchUnit],
    stored: &[&TransactionRecord],
    admitted: &[&HoldActionRequest],
    holds: &Holds,
) -> Result<(), AttemptError> {
    let opened: Vec<inflight_hold::ActiveModel> = stored
        .iter()
        .filter(|r| r.status == TransactionStatus::Inflight)
        .map(|record| inflight_hold::ActiveModel {
            hold_id: Set(record.transaction_id.clone()),
            parent_id: Set(record.parent_transaction.clone()),
            grandparent_id: Set(record
                .meta_data
                .as_ref()
                .and_then(|m| m.get(GROUP_KEY))
                .and_then(|v| v.as_str())
                .map(str::to_owned)),
            source: Set(record.source.clone()),
            destination: Set(record.destination.clone()),
            amount: Set(Money(record.precise_amount.clone())),
            remaining: Set(Money(record.precise_amount.clone())),
            state: Set(HoldState::Inflight.as_str().to_owned()),
            expires_at: Set(record.inflight_expiry_date),
            commit_at: Set(record.inflight_commit_date),
            pending_action: Set(None),
            created_at: Set(Utc::now()),
        })
        .collect();
    for chunk in opened.chunks(INSERT_ROWS_MAX / 2) {
        inflight_hold::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(txn)
            .await?;
    }
    // Replay the admitted actions per hold to get each hold's final state.
    let mut finals: BTreeMap<&str, (HoldState, BigInt)> = BTreeMap::new();
    for request in admitted {
        let hold = &holds[&request.hold_id];
        let (state, remaining) = finals.entry(request.hold_id.as_str()).or_insert_with(|| {
            (
                HoldState::parse(&hold.state).unwrap_or(HoldState::Voided),
                hold.remaining.0.clone(),
            )
        });
        if let Ok(outcome) = inflight::decide(*state, remaining, &request.action) {
            *state = outcome.state_after;
            *remaining = outcome.remaining_after;
        }
    }
    for (hold_id, (state, remaining)) in finals {
        inflight_hold::Entity::update_many()
            .col_expr(inflight_hold::Column::State, Expr::val(state.as_str()))
            .col_expr(
                inflight_hold::Column::Remaining,
                Expr::val(Money(remaining)),
            )
            .filter(inflight_hold::Column::HoldId.eq(hold_id))
            .exec(txn)
            .await?;
    }
    let cleared: Vec<String> = units
        .iter()
        .flat_map(|u| u.items.iter())
        .filter_map(|i| {
            i.hold_action
                .as_ref()
                .filter(|a| a.clears_pending)
                .map(|a| a.hold_id.clone())
        })
        .collect();
    if !cleared.is_empty() {
        inflight_hold::Entity::update_many()
            .col_expr(
                inflight_hold::Column::PendingAction,
                Expr::val(Option::<String>::None),
            )
            .filter(inflight_hold::Column::HoldId.is_in(cleared))
            .exec(txn)
            .await?;
    }
    Ok(())
}

/// Metadata key naming the group (split or bulk parent) above a queued leg's parent, so a
/// hold can be found by any of its ancestors.
pub const GROUP_KEY: &str = "BLNK_GROUP_ID";

/// Reads the balances: on PostgreSQL locking their rows, in id order (no deadlocks between
/// replicas); SQLite's single write lock already covers the whole transaction.
async fn lock_balances(
    txn: &DatabaseTransaction,
    ids: Vec<String>,
) -> Result<HashMap<String, BalanceRow>, AttemptError> {
    if ids.is_empty() {
        // Rows that change no balance (QUEUED, SCHEDULED): no round trip.
        return Ok(HashMap::new());
    }
    debug_assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids sorted, each once");
    if txn.get_database_backend() == DbBackend::Postgres {
        return Ok(pg_arrays::lock_balances(txn, &ids).await?);
    }
    let mut rows = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(IN_LIST_MAX) {
        let select = balance::Entity::find()
            .filter(balance::Column::BalanceId.is_in(chunk.to_vec()))
            .order_by_asc(balance::Column::BalanceId);
        for model in select.all(txn).await? {
            rows.insert(model.balance_id.clone(), BalanceRow::from(&model));
        }
    }
    Ok(rows)
}

/// Writes every changed balance, each guarded by the version it was read at (`version - 1`),
/// and inserts the batch's rows. On PostgreSQL that is one statement from arrays; SQLite,
/// local and single-writer, takes one statement per balance and multi-row inserts.
async fn write_batch(
    txn: &DatabaseTransaction,
    balances: &[BalanceRow],
    records: &[&TransactionRecord],
) -> Result<(), AttemptError> {
    if txn.get_database_backend() == DbBackend::Postgres {
        if balances.is_empty() && records.is_empty() {
            return Ok(());
        }
        let updated = pg_arrays::write_batch(txn, balances, records).await?;
        if updated != balances.len() as u64 {
            return Err(AttemptError::Retry(LedgerError::Storage(
                "a balance changed while the batch was being written".into(),
            )));
        }
        return Ok(());
    }
    for row in balances {
        write_balance(txn, row.version - 1, row).await?;
    }
    for chunk in records.chunks(INSERT_ROWS_MAX) {
        transaction::Entity::insert_many(chunk.iter().map(|record| active_model(record)))
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::WriteOrder;
    use sea_orm::DbBackend;

    #[test]
    fn only_large_postgres_batches_insert_their_rows_first() {
        let order = |backend, items, holds| WriteOrder::for_batch(backend, items, 100, holds);
        assert_eq!(
            order(DbBackend::Postgres, 1_000, false),
            WriteOrder::RowsFirst
        );
        assert_eq!(order(DbBackend::Postgres, 100, true), WriteOrder::RowsFirst);
        assert_eq!(order(DbBackend::Postgres, 99, false), WriteOrder::Guarded);
        assert_eq!(
            order(DbBackend::Postgres, 99, true),
            WriteOrder::BalancesFirst
        );
        assert_eq!(
            order(DbBackend::Sqlite, 1_000, false),
            WriteOrder::BalancesFirst
        );
    }
}
