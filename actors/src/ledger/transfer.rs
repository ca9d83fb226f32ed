//! Recording transfers: one transfer, a split over several sources or destinations, an
//! inflight hold, a scheduled transfer; applying queued ones; bulk requests.

use super::balance_actor::{BalanceActor, Reserve, Settle};
use super::{mailbox, Ledger, Proposals};
use crate::domain::balance::{check_precision, BalanceDelta, Floor, GuardedChange};
use crate::domain::batch::UnitMode;
use crate::domain::distribution::{self, Share};
use crate::domain::ids::{self, shard_of};
use crate::domain::inflight::hold_deltas;
use crate::domain::transaction::QUEUED_PARENT_KEY;
use crate::domain::{Amount, Precision, TransactionRecord, TransactionStatus};
use crate::store::{BatchItem, BatchUnit, ItemOutcome, Refusal, GROUP_KEY};
use crate::LedgerError;
use actix::Addr;
use bigdecimal::num_bigint::BigInt;
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};

/// Which side of a split has several balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Sources,
    Destinations,
}

/// One leg of a split, as requested.
#[derive(Debug, Clone)]
pub struct LegSpec {
    /// A balance id or an `@indicator`.
    pub identifier: String,
    pub share: Share,
    /// The request's own `distribution` / `precise_distribution` text, echoed back.
    pub distribution: String,
    pub precise_distribution: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Legs {
    Single {
        source: String,
        destination: String,
    },
    /// `other` is the single balance of the other side.
    Split {
        side: Side,
        other: String,
        legs: Vec<LegSpec>,
    },
}

/// A transfer request, parsed and checked at the boundary.
#[derive(Debug, Clone)]
pub struct TransferRequest {
    pub legs: Legs,
    pub amount: Amount,
    pub precision: Precision,
    pub currency: String,
    pub reference: String,
    pub description: Option<String>,
    pub allow_overdraft: bool,
    /// In minor units.
    pub overdraft_limit: Option<BigInt>,
    pub inflight: bool,
    pub skip_queue: bool,
    pub atomic: bool,
    pub effective_date: Option<DateTime<Utc>>,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub inflight_expiry_date: Option<DateTime<Utc>>,
    pub inflight_commit_date: Option<DateTime<Utc>>,
    pub meta_data: Option<serde_json::Value>,
}

/// Each leg of a split: the requested leg, its amount and its row id.
pub type SplitLegs = (Side, Vec<(LegSpec, BigInt, String)>);

/// What a recorded request looks like: its row (for a split, the request's own id and
/// amount, never stored) and, for a split, each leg's amount and row id.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub record: TransactionRecord,
    pub split: Option<SplitLegs>,
}

/// A bulk request (`POST /transactions/bulk`); item flags are already overridden.
#[derive(Debug, Clone)]
pub struct BulkRequest {
    pub batch_id: String,
    pub items: Vec<TransferRequest>,
    pub atomic: bool,
    pub inflight: bool,
    pub skip_queue: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BulkOutcome {
    pub batch_id: String,
    /// `applied`, `inflight` or `queued`.
    pub status: &'static str,
    pub transaction_count: usize,
}

/// The rows a request becomes, before anything is written.
pub(crate) struct Plan {
    pub records: Vec<TransactionRecord>,
    /// A split's legs and its parent row (never stored: the response shows it); a single
    /// transfer's row is its own parent, `records[0]`.
    pub split: Option<(SplitLegs, TransactionRecord)>,
}

impl TransferRequest {
    fn status(&self) -> TransactionStatus {
        if self.scheduled_for.is_some() {
            TransactionStatus::Scheduled
        } else if !self.skip_queue {
            TransactionStatus::Queued
        } else if self.inflight {
            TransactionStatus::Inflight
        } else {
            TransactionStatus::Applied
        }
    }

    /// The row of this request moving `amount` from `source` to `destination`.
    pub(crate) fn record(
        &self,
        id: String,
        reference: String,
        source: String,
        destination: String,
        amount: &BigInt,
    ) -> TransactionRecord {
        let amount_major = self.precision.to_major(amount);
        let hash = TransactionRecord::content_hash(
            &amount_major,
            &reference,
            &self.currency,
            &source,
            &destination,
        );
        let status = self.status();
        let mut meta = match &self.meta_data {
            Some(serde_json::Value::Object(map)) => map.clone(),
            _ => serde_json::Map::new(),
        };
        if matches!(
            status,
            TransactionStatus::Queued | TransactionStatus::Scheduled
        ) {
            meta.insert(QUEUED_PARENT_KEY.into(), id.clone().into());
        }
        let now = Utc::now();
        TransactionRecord {
            transaction_id: id,
            parent_transaction: None,
            source,
            destination,
            reference,
            precise_amount: amount.clone(),
            precision: self.precision.clone(),
            currency: self.currency.clone(),
            description: self.description.clone(),
            status,
            hash,
            allow_overdraft: self.allow_overdraft,
            overdraft_limit: self.overdraft_limit.clone(),
            inflight: self.inflight,
            skip_queue: self.skip_queue,
            atomic: self.atomic,
            created_at: now,
            effective_date: Some(self.effective_date.unwrap_or(now)),
            scheduled_for: self.scheduled_for,
            inflight_expiry_date: self.inflight_expiry_date,
            inflight_commit_date: self.inflight_commit_date,
            meta_data: (!meta.is_empty()).then_some(serde_json::Value::Object(meta)),
        }
    }
}

/// The balance changes of applying `record` (a transfer or a hold).
pub(crate) fn record_changes(record: &TransactionRecord) -> Vec<(String, GuardedChange)> {
    let amount = &record.precise_amount;
    let floor = Floor::for_debit(record.allow_overdraft, record.overdraft_limit.as_ref());
    let (debit, credit) = if record.inflight {
        hold_deltas(amount)
    } else {
        (BalanceDelta::debit(amount), BalanceDelta::credit(amount))
    };
    vec![
        (
            record.source.clone(),
            GuardedChange {
                delta: debit,
                floor: Some(floor),
            },
        ),
        (
            record.destination.clone(),
            GuardedChange {
                delta: credit,
                floor: None,
            },
        ),
    ]
}

fn set_meta(record: &mut TransactionRecord, key: &str, value: serde_json::Value) {
    let mut meta = match record.meta_data.take() {
        Some(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    meta.insert(key.to_owned(), value);
    record.meta_data = Some(serde_json::Value::Object(meta));
}

impl Ledger {
    /// Turns a request into rows: resolves (and creates) `@indicator` balances, splits the
    /// amount over the legs, names the leg rows. With `proposals`, new indicator balances
    /// are only proposed (see [`Proposals`]).
    pub(crate) async fn plan(
        &self,
        request: &TransferRequest,
        parent_id: Option<String>,
        mut proposals: Option<&mut Proposals>,
    ) -> Result<Plan, LedgerError> {
        let id = ids::new_id(ids::TRANSACTION_PREFIX);
        let amount = request.amount.as_bigint();
        match &request.legs {
            Legs::Single {
                source,
                destination,
            } => {
                if source == destination {
                    return Err(LedgerError::SameSourceAndDestination);
                }
                let resolved = self
                    .resolve_or_propose(
                        &[source, destination],
                        &request.currency,
                        proposals.as_deref_mut(),
                    )
                    .await?;
                let [source, destination]: [String; 2] =
                    resolved.try_into().expect("two identifiers, two ids");
                if source == destination {
                    return Err(LedgerError::SameSourceAndDestination);
                }
                let mut record =
                    request.record(id, request.reference.clone(), source, destination, amount);
                record.parent_transaction = parent_id;
                Ok(Plan {
                    records: vec![record],
                    split: None,
                })
            }
            Legs::Split { side, other, legs } => {
                let shares: Vec<Share> = legs.iter().map(|l| l.share.clone()).collect();
                let amounts = distribution::split(amount, &shares)?;
                let mut identifiers = vec![other.as_str()];
                identifiers.extend(legs.iter().map(|leg| leg.identifier.as_str()));
                let mut resolved = self
                    .resolve_or_propose(&identifiers, &request.currency, proposals)
                    .await?
                    .into_iter();
                let other_id = resolved.next().expect("the other side resolved");
                let mut records = Vec::new();
                let mut results = Vec::new();
                let separator = if request.skip_queue && request.scheduled_for.is_none() {
                    '-'
                } else {
                    '_'
                };
                let group = parent_id.clone().unwrap_or_else(|| id.clone());
                for (index, (leg, leg_amount)) in legs.iter().zip(&amounts).enumerate() {
                    let leg_id = resolved.next().expect("one id per leg");
                    if leg_id == other_id {
                        return Err(LedgerError::SameSourceAndDestination);
                    }
                    let (source, destination) = match side {
                        Side::Sources => (leg_id, other_id.clone()),
                        Side::Destinations => (other_id.clone(), leg_id),
                    };
                    // A leg that gets nothing has no row, so it names none (empty id).
                    let mut leg_row_id = String::new();
                    if leg_amount > &BigInt::default() {
                        leg_row_id = ids::new_id(ids::TRANSACTION_PREFIX);
                        let reference = format!("{}{separator}{}", request.reference, index + 1);
                        let mut record = request.record(
                            leg_row_id.clone(),
                            reference,
                            source,
                            destination,
                            leg_amount,
                        );
                        record.parent_transaction = Some(group.clone());
                        set_meta(&mut record, GROUP_KEY, group.clone().into());
                        records.push(record);
                    }
                    results.push((leg.clone(), leg_amount.clone(), leg_row_id));
                }
                let (source, destination) = match side {
                    Side::Sources => (String::new(), other_id),
                    Side::Destinations => (other_id, String::new()),
                };
                let mut parent =
                    request.record(id, request.reference.clone(), source, destination, amount);
                parent.parent_transaction = parent_id;
                Ok(Plan {
                    records,
                    split: Some(((*side, results), parent)),
                })
            }
        }
    }

    /// Records a transfer: applied now (`skip_queue`), or stored QUEUED (or SCHEDULED) and
    /// enqueued. Errors knowable now are returned now on both paths.
    pub async fn record(&self, request: TransferRequest) -> Result<Recorded, LedgerError> {
        let ledger = self.clone();
        self.detached(async move { ledger.record_now(request).await })
            .await
    }

    #[tracing::instrument(skip_all, fields(reference = %request.reference, skip_queue = request.skip_queue))]
    async fn record_now(&self, request: TransferRequest) -> Result<Recorded, LedgerError> {
        let applied_now = request.skip_queue && request.scheduled_for.is_none();
        let mut proposals = Proposals::default();
        let plan = self
            .plan(&request, None, (!applied_now).then_some(&mut proposals))
            .await?;
        let mode = if request.atomic {
            UnitMode::Atomic
        } else {
            UnitMode::Independent
        };
        let outcomes = if applied_now {
            self.apply_records(plan.records, mode, Refusal::Fail)
                .await?
        } else {
            self.store_queued(plan.records, mode, proposals, None)
                .await?
        };
        let mut first_error = None;
        let mut stored_ids = Vec::new();
        for outcome in outcomes {
            match outcome {
                ItemOutcome::Stored(record) => stored_ids.push(record),
                ItemOutcome::Refused(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        if let Some(error) = first_error {
            if !stored_ids.is_empty() {
                tracing::warn!(%error, applied = stored_ids.len(), "non-atomic split partly applied");
            }
            return Err(error);
        }
        match plan.split {
            None => Ok(Recorded {
                record: stored_ids.remove(0),
                split: None,
            }),
            Some((split, mut parent)) => {
                parent.status = stored_ids
                    .first()
                    .map(|r| r.status)
                    .unwrap_or(parent.status);
                Ok(Recorded {
                    record: parent,
                    split: Some(split),
                })
            }
        }
    }

    /// Applies rows now: reserves each source's debit with its actor, then commits them as
    /// one unit. With `Refusal::StoreRejected`, a refused row is stored REJECTED.
    pub(crate) async fn apply_records(
        &self,
        records: Vec<TransactionRecord>,
        mode: UnitMode,
        refusal: Refusal,
    ) -> Result<Vec<ItemOutcome>, LedgerError> {
        let mut items = Vec::with_capacity(records.len());
        let mut actors = Vec::new();
        let mut reserved: Vec<(Addr<BalanceActor>, BigInt)> = Vec::new();
        let mut early_refusal: Option<LedgerError> = None;
        let mut refused_reference = String::new();
        for record in records {
            let changes = record_changes(&record);
            match self.reserve(&record, &changes[0].1).await {
                Ok((source, destination)) => {
                    reserved.push((source.clone(), record.precise_amount.clone()));
                    actors.push((record.source.clone(), source));
                    actors.push((record.destination.clone(), destination));
                    items.push(BatchItem::transfer(record, changes, refusal));
                }
                Err(error) if error.is_funds_refusal() && refusal == Refusal::StoreRejected => {
                    let rejected = record.with_rejection(&error.rejection_reason());
                    items.push(BatchItem::transfer(rejected, Vec::new(), refusal));
                }
                Err(error) => {
                    refused_reference = record.reference.clone();
                    early_refusal.get_or_insert(error);
                    break;
                }
            }
        }
        if let Some(error) = early_refusal {
            for (actor, amount) in reserved {
                let _ = actor
                    .send(Settle {
                        released: amount,
                        row: None,
                    })
                    .await;
            }
            return Err(self.duplicate_over_refusal(error, &refused_reference).await);
        }
        // The committer settles the actors (releases the reservations, shares new states).
        let outcomes = self.submit(BatchUnit::new(mode, items), actors).await?;
        Ok(outcomes)
    }

    /// A reused reference is reported as such, whatever the funds say now: the retry of a
    /// transfer that emptied its source is a duplicate, not a refusal.
    async fn duplicate_over_refusal(&self, error: LedgerError, reference: &str) -> LedgerError {
        if !error.is_funds_refusal() {
            return error;
        }
        match self.store().transaction_by_reference(reference).await {
            Ok(Some(_)) => LedgerError::DuplicateReference(reference.to_owned()),
            _ => error,
        }
    }

    /// Checks the credited balance's precision (the registry knows it) and reserves the
    /// source's debit with its actor. `debit` is the source's change of `record` (first of
    /// its `record_changes`).
    async fn reserve(
        &self,
        record: &TransactionRecord,
        debit: &GuardedChange,
    ) -> Result<(Addr<BalanceActor>, Addr<BalanceActor>), LedgerError> {
        let registry = self.registry();
        let (source, destination) = futures_util::future::try_join(
            registry.actor(&record.source),
            registry.actor_taking(&record.destination, &record.precision),
        )
        .await?;
        source
            .send(Reserve {
                change: debit.clone(),
                precision: record.precision.clone(),
            })
            .await
            .map_err(mailbox)??;
        Ok((source, destination))
    }

    /// Stores QUEUED (or SCHEDULED) rows after checking their balances, creating the
    /// indicator balances `proposals` names in the same commit; the committer enqueues the
    /// QUEUED ones (the scheduler enqueues SCHEDULED ones when due).
    pub(crate) async fn store_queued(
        &self,
        records: Vec<TransactionRecord>,
        mode: UnitMode,
        proposals: Proposals,
        bulk: Option<crate::store::BulkEvent>,
    ) -> Result<Vec<ItemOutcome>, LedgerError> {
        // Rows stored without balance changes must be waiting ones, or balances and rows
        // would disagree.
        assert!(
            records.iter().all(|r| matches!(
                r.status,
                TransactionStatus::Queued | TransactionStatus::Scheduled
            )),
            "store_queued takes QUEUED or SCHEDULED rows only"
        );
        let new_indicators = proposals.into_new_indicators();
        let proposed: HashSet<&str> = new_indicators
            .iter()
            .map(|new| new.balance_id.as_str())
            .collect();
        self.check_balances(&records, &proposed).await?;
        let named: Vec<(String, String)> = records
            .iter()
            .map(|r| (r.source.clone(), r.destination.clone()))
            .collect();
        let items = records
            .into_iter()
            .map(|r| BatchItem::transfer(r, Vec::new(), Refusal::Fail))
            .collect();
        let mut unit = BatchUnit::new(mode, items);
        unit.new_indicators = new_indicators.clone();
        unit.bulk = bulk;
        let outcomes = self.submit(unit, Vec::new()).await?;
        self.learn_proposals(&new_indicators, &named, &outcomes);
        Ok(outcomes)
    }

    pub(crate) async fn enqueue(&self, source: &str, id: &str) {
        let queue = self.queue();
        if let Err(error) = queue
            .enqueue(shard_of(source, queue.shard_count()), id)
            .await
        {
            // The QUEUED row is durable; the recovery sweep enqueues it again.
            tracing::warn!(%error, id, "enqueue failed");
            let message =
                format!("transaction {id} not enqueued (the recovery sweep retries): {error}");
            self.store()
                .report_system_error("queue.enqueue", &message)
                .await;
        }
    }

    /// Existence of the rows' balances and their precision: through their actors (few), or
    /// the registry for the live ones and one query for the rest (many). Returns the live
    /// actors among them. The `proposed` balances are left out (created by the commit).
    async fn check_balances(
        &self,
        records: &[TransactionRecord],
        proposed: &HashSet<&str>,
    ) -> Result<Vec<(String, Addr<BalanceActor>)>, LedgerError> {
        const THROUGH_ACTORS_MAX: usize = 8;
        let mut balances: HashMap<&str, &Precision> = HashMap::new();
        for record in records {
            for side in [&record.source, &record.destination] {
                if !proposed.contains(side.as_str()) {
                    balances.insert(side, &record.precision);
                }
            }
        }
        if balances.len() <= THROUGH_ACTORS_MAX {
            let checks = balances.into_iter().map(|(id, precision)| async move {
                let actor = self.registry().actor_taking(id, precision).await?;
                Ok::<_, LedgerError>((id.to_owned(), actor))
            });
            return futures_util::future::try_join_all(checks).await;
        }
        // A balance's precision is fixed at creation and balances are never deleted, so a
        // live actor's registry entry answers for it.
        let live = self.registry().check_live(&mut balances)?;
        if balances.is_empty() {
            return Ok(live);
        }
        let rows = self
            .store()
            .balance_rows(balances.keys().map(|id| (*id).to_owned()).collect())
            .await?;
        for (id, precision) in balances {
            let row = rows
                .get(id)
                .ok_or_else(|| LedgerError::BalanceNotFound(id.to_owned()))?;
            check_precision(id, row.precision.as_ref(), precision)?;
        }
        Ok(live)
    }

    /// Applies a QUEUED (or due SCHEDULED) row, a queue worker's job: writes its `<ref>_q`
    /// child, APPLIED, INFLIGHT or REJECTED. `Ok(None)` when there is nothing (more) to do.
    pub async fn apply_queued(
        &self,
        queued: &TransactionRecord,
    ) -> Result<Option<TransactionRecord>, LedgerError> {
        let ledger = self.clone();
        let queued = queued.clone();
        self.detached(async move { ledger.apply_queued_now(&queued).await })
            .await
    }

    #[tracing::instrument(skip_all, fields(transaction_id = %queued.transaction_id))]
    async fn apply_queued_now(
        &self,
        queued: &TransactionRecord,
    ) -> Result<Option<TransactionRecord>, LedgerError> {
        if queued.status == TransactionStatus::Scheduled
            && queued.scheduled_for.is_some_and(|at| at > Utc::now())
        {
            return Ok(None);
        }
        let group = queued
            .meta_data
            .as_ref()
            .and_then(|m| m.get(GROUP_KEY))
            .and_then(|v| v.as_str());
        let rows = match (queued.atomic, group) {
            (true, Some(group)) => self.store().unfinished_group(group).await?,
            _ => vec![queued.clone()],
        };
        // A row that is not (or no longer) among its group's unfinished rows goes alone.
        let rows = if rows
            .iter()
            .any(|r| r.transaction_id == queued.transaction_id)
        {
            rows
        } else {
            vec![queued.clone()]
        };
        let mode = if rows.len() > 1 {
            UnitMode::Atomic
        } else {
            UnitMode::Independent
        };
        let children: Vec<TransactionRecord> = rows
            .iter()
            .map(|row| {
                let status = if row.inflight {
                    TransactionStatus::Inflight
                } else {
                    TransactionStatus::Applied
                };
                row.queued_child(ids::new_id(ids::TRANSACTION_PREFIX), status)
            })
            .collect();
        let outcomes = if mode == UnitMode::Atomic {
            // A group is decided by the database alone: no per-leg reservations to undo.
            let items = children.into_iter().map(|r| {
                let changes = record_changes(&r);
                BatchItem::transfer(r, changes, Refusal::StoreRejected)
            });
            self.submit(BatchUnit::new(mode, items.collect()), Vec::new())
                .await?
        } else {
            self.apply_records(children, mode, Refusal::StoreRejected)
                .await?
        };
        match outcomes.into_iter().next() {
            Some(ItemOutcome::Stored(record)) => Ok(Some(record)),
            Some(ItemOutcome::Refused(LedgerError::DuplicateReference(reference))) => {
                // Found after the 201: the caller never hears of it; the operator does.
                let message = format!(
                    "queued transaction {} not applied: reference {reference} has already been used",
                    queued.transaction_id
                );
                tracing::warn!(transaction_id = %queued.transaction_id, %reference,
                    "queued transaction refused: duplicate reference");
                self.store()
                    .report_system_error("queue.duplicate_reference", &message)
                    .await;
                Ok(None)
            }
            None => Ok(None),
            Some(ItemOutcome::Refused(error)) => Err(error),
        }
    }

    /// A bulk request. Every item is checked before anything is written; an atomic batch is
    /// one unit (all or nothing, one database transaction); a non-atomic one stops at its
    /// first refused item, like Blnk.
    pub async fn record_bulk(
        &self,
        bulk: BulkRequest,
    ) -> Result<BulkOutcome, (LedgerError, String)> {
        let ledger = self.clone();
        let batch_id = bulk.batch_id.clone();
        let result = self
            .detached(async move { Ok(ledger.record_bulk_now(bulk).await) })
            .await
            .map_err(|e| (e, batch_id.clone()))
            .and_then(|result| result);
        if let Err((error, batch_id)) = &result {
            // A refusal decided in the commit wrote its event there; any other failure
            // (invalid item, missing balance, overload) stored nothing: its event alone.
            if !matches!(error, LedgerError::BatchRefused { .. }) {
                let event = crate::store::bulk_failed_event(batch_id, &error.to_string());
                if let Err(write) = self.store().write_event(event).await {
                    tracing::warn!(error = %write, %batch_id, "writing bulk_transaction.failed failed");
                }
            }
        }
        result
    }

    #[tracing::instrument(skip_all, fields(batch_id = %bulk.batch_id, items = bulk.items.len()))]
    async fn record_bulk_now(
        &self,
        mut bulk: BulkRequest,
    ) -> Result<BulkOutcome, (LedgerError, String)> {
        // The batch's flags decide for every item (Blnk's rule), whatever the items say.
        for item in &mut bulk.items {
            item.skip_queue = bulk.skip_queue;
            item.inflight = bulk.inflight;
        }
        let batch_id = bulk.batch_id.clone();
        let fail = |error: LedgerError| (error, batch_id.clone());
        let mut records = Vec::new();
        let mut proposals = Proposals::default();
        for (index, item) in bulk.items.iter().enumerate() {
            let proposing = (!bulk.skip_queue).then_some(&mut proposals);
            let plan = self
                .plan(item, Some(batch_id.clone()), proposing)
                .await
                .map_err(|e| {
                    fail(LedgerError::BulkItemInvalid {
                        index,
                        message: e.to_string(),
                    })
                })?;
            for mut record in plan.records {
                set_meta(&mut record, "sequence", (index + 1).into());
                set_meta(&mut record, GROUP_KEY, batch_id.clone().into());
                record.atomic = bulk.atomic;
                records.push(record);
            }
        }
        let count = records.len();
        let mode = if bulk.atomic {
            UnitMode::Atomic
        } else {
            UnitMode::UntilFirstFailure
        };
        let status = match (bulk.skip_queue, bulk.inflight) {
            (false, _) => "queued",
            (true, true) => "inflight",
            (true, false) => "applied",
        };
        if !bulk.skip_queue {
            let outcomes = self
                .store_queued(
                    records,
                    mode,
                    proposals,
                    Some(crate::store::BulkEvent {
                        batch_id: batch_id.clone(),
                        status: "queued",
                        inflight: bulk.inflight,
                    }),
                )
                .await
                .map_err(fail)?;
            bulk_result(outcomes, bulk.atomic).map_err(fail)?;
            return Ok(BulkOutcome {
                batch_id: batch_id.clone(),
                status,
                transaction_count: count,
            });
        }
        // No per-item reservations: the database check decides; live actors are settled.
        let actors = self
            .check_balances(&records, &HashSet::new())
            .await
            .map_err(fail)?;
        let items = records
            .into_iter()
            .map(|r| {
                let changes = record_changes(&r);
                BatchItem::transfer(r, changes, Refusal::Fail)
            })
            .collect();
        let mut unit = BatchUnit::new(mode, items);
        unit.bulk = Some(crate::store::BulkEvent {
            batch_id: batch_id.clone(),
            status,
            inflight: bulk.inflight,
        });
        let outcomes = self.submit_unreserved(unit, actors).await.map_err(fail)?;
        bulk_result(outcomes, bulk.atomic).map_err(fail)?;
        Ok(BulkOutcome {
            batch_id: batch_id.clone(),
            status,
            transaction_count: count,
        })
    }
}

/// The first refusal of a bulk batch, worded like Blnk's.
fn bulk_result(outcomes: Vec<ItemOutcome>, atomic: bool) -> Result<(), LedgerError> {
    let applied = outcomes
        .iter()
        .filter(|o| matches!(o, ItemOutcome::Stored(_)))
        .count();
    let refused = outcomes
        .into_iter()
        .enumerate()
        .find_map(|(index, outcome)| match outcome {
            ItemOutcome::Refused(LedgerError::UnitRefused(_)) => None,
            ItemOutcome::Refused(error) => Some((index, error)),
            ItemOutcome::Stored(_) => None,
        });
    match refused {
        None => Ok(()),
        Some((index, error)) => {
            let tail = if atomic {
                "No transaction of this batch was applied.".to_owned()
            } else {
                format!("Previous transactions were not rolled back ({applied} applied).")
            };
            let message = format!("transactions[{index}]: {error}. {tail}");
            Err(LedgerError::BatchRefused {
                index,
                message,
                cause: Box::new(error),
            })
        }
    }
}
