//! The actors of the write path and the [`Ledger`] handle the HTTP shell and the queue
//! workers call.
//!
//! A transfer: the source's actor reserves the debit (funds and overdraft checked against
//! its state), the destination's actor checks the precision, the committer writes the
//! transfer in a group commit (the database re-checks funds), then both actors take the
//! committed state. A refused reservation releases nothing else: no other balance was
//! touched.

pub mod balance_actor;
pub mod committer;
pub mod registry;

use crate::domain::balance::{BalanceDelta, Floor, GuardedChange};
use crate::domain::ids::{self, is_indicator};
use crate::domain::transaction::QUEUED_PARENT_KEY;
use crate::domain::{Amount, Precision, TransactionRecord, TransactionStatus};
use crate::queue::TransactionQueue;
use crate::store::{BalanceRow, BatchItem, ItemOutcome, Refusal, Store};
use crate::LedgerError;
use actix::{Actor, Addr, Arbiter};
use balance_actor::{BalanceActor, Reserve, Settle, Touch};
use bigdecimal::num_bigint::BigInt;
use chrono::{DateTime, Utc};
use committer::{Committer, CommitterSettings, Submit};
use registry::{BalanceRegistry, RegistrySettings};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// A transfer request, parsed and checked at the boundary.
#[derive(Debug, Clone)]
pub struct TransferRequest {
    /// A balance id or an `@indicator`.
    pub source: String,
    pub destination: String,
    pub amount: Amount,
    pub precision: Precision,
    pub currency: String,
    pub reference: String,
    pub description: Option<String>,
    pub allow_overdraft: bool,
    /// In minor units.
    pub overdraft_limit: Option<BigInt>,
    pub skip_queue: bool,
    pub atomic: bool,
    pub effective_date: Option<DateTime<Utc>>,
    pub meta_data: Option<serde_json::Value>,
}

#[derive(Debug, Clone)]
pub struct LedgerSettings {
    pub committer: CommitterSettings,
    pub registry: RegistrySettings,
}

struct Inner {
    store: Store,
    registry: BalanceRegistry,
    committer: Addr<Committer>,
    queue: Arc<dyn TransactionQueue>,
    /// `(indicator, currency)` → balance id; indicator balances are never deleted.
    indicators: Mutex<HashMap<(String, String), String>>,
    _committer_arbiter: Arbiter,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self._committer_arbiter.stop();
    }
}

/// The ledger core's entry point. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

/// Most cached indicator ids (each is one small entry; the cache is cleared when full).
const INDICATOR_CACHE_MAX: usize = 100_000;

impl Ledger {
    /// Starts the committer and the balance arbiters. Call inside an actix `System`.
    pub fn start(store: Store, queue: Arc<dyn TransactionQueue>, settings: LedgerSettings) -> Self {
        let committer_arbiter = Arbiter::new();
        let committer_store = store.clone();
        let committer_settings = settings.committer.clone();
        let committer = Committer::start_in_arbiter(&committer_arbiter.handle(), move |_| {
            Committer::new(committer_store, committer_settings)
        });
        let registry = BalanceRegistry::new(store.clone(), settings.registry);
        Self {
            inner: Arc::new(Inner {
                store,
                registry,
                committer,
                queue,
                indicators: Mutex::new(HashMap::new()),
                _committer_arbiter: committer_arbiter,
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn queue(&self) -> &Arc<dyn TransactionQueue> {
        &self.inner.queue
    }

    pub fn live_balance_actors(&self) -> usize {
        self.inner.registry.live_actors()
    }

    /// Resolves an `@indicator` (creating its balance on first use) or passes an id through.
    pub async fn resolve_balance(
        &self,
        identifier: &str,
        currency: &str,
    ) -> Result<String, LedgerError> {
        if !is_indicator(identifier) {
            return Ok(identifier.to_owned());
        }
        let key = (identifier.to_owned(), currency.to_owned());
        if let Some(id) = self.lock_indicators().get(&key) {
            return Ok(id.clone());
        }
        let model = self
            .inner
            .store
            .indicator_balance(identifier, currency)
            .await?;
        let mut cache = self.lock_indicators();
        if cache.len() >= INDICATOR_CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, model.balance_id.clone());
        Ok(model.balance_id)
    }

    fn lock_indicators(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), String>> {
        self.inner
            .indicators
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a transfer: applied now (`skip_queue`) or stored QUEUED and enqueued.
    ///
    /// Runs as its own task: a client that hangs up must not cancel a transfer between its
    /// reservation and its commit (the reservation would never be released).
    pub async fn record(&self, request: TransferRequest) -> Result<TransactionRecord, LedgerError> {
        let ledger = self.clone();
        let span = tracing::Span::current();
        actix::spawn(tracing::Instrument::instrument(
            async move { ledger.record_now(request).await },
            span,
        ))
        .await
        .map_err(|e| LedgerError::Internal(format!("transfer task failed: {e}")))?
    }

    #[tracing::instrument(skip_all, fields(reference = %request.reference, skip_queue = request.skip_queue))]
    async fn record_now(&self, request: TransferRequest) -> Result<TransactionRecord, LedgerError> {
        if request.source == request.destination {
            return Err(LedgerError::SameSourceAndDestination);
        }
        let source = self
            .resolve_balance(&request.source, &request.currency)
            .await?;
        let destination = self
            .resolve_balance(&request.destination, &request.currency)
            .await?;
        if source == destination {
            return Err(LedgerError::SameSourceAndDestination);
        }
        let status = if request.skip_queue {
            TransactionStatus::Applied
        } else {
            TransactionStatus::Queued
        };
        let record = new_record(&request, source, destination, status);
        if request.skip_queue {
            let reference = record.reference.clone();
            return match self.transfer(record, Refusal::Fail).await {
                Ok((stored, _)) => Ok(stored),
                // A reused reference is reported as such, whatever the funds say now: the
                // retry of a transfer that emptied its source is a duplicate, not a refusal.
                Err(error) if error.is_funds_refusal() => {
                    match self
                        .inner
                        .store
                        .transaction_by_reference(&reference)
                        .await?
                    {
                        Some(_) => Err(LedgerError::DuplicateReference(reference)),
                        None => Err(error),
                    }
                }
                Err(error) => Err(error),
            };
        }
        // Queued: everything knowable now is checked now; funds are checked by the worker.
        let precision = record.precision.clone();
        let (source_actor, destination_actor) = futures_util::future::try_join(
            self.inner.registry.actor(&record.source),
            self.inner.registry.actor(&record.destination),
        )
        .await?;
        let touch = |actor: Addr<BalanceActor>| {
            let precision = precision.clone();
            async move { actor.send(Touch { precision }).await.map_err(mailbox)? }
        };
        futures_util::future::try_join(touch(source_actor), touch(destination_actor)).await?;
        let (outcome, _) = self
            .submit(BatchItem {
                record,
                changes: Vec::new(),
                refusal: Refusal::Fail,
            })
            .await?;
        let stored = stored_or_refused(outcome)?;
        let shard = ids::shard_of(&stored.source, self.inner.queue.shard_count());
        if let Err(error) = self
            .inner
            .queue
            .enqueue(shard, &stored.transaction_id)
            .await
        {
            // The QUEUED row is durable; the recovery sweep enqueues it again.
            tracing::warn!(%error, transaction_id = %stored.transaction_id, "enqueue failed");
        }
        Ok(stored)
    }

    /// Applies a QUEUED transaction (a queue worker's job): writes its `<ref>_q` child row,
    /// APPLIED or REJECTED. A child that already exists means it was done before: `Ok(None)`.
    #[tracing::instrument(skip_all, fields(transaction_id = %queued.transaction_id))]
    pub async fn apply_queued(
        &self,
        queued: &TransactionRecord,
    ) -> Result<Option<TransactionRecord>, LedgerError> {
        let child = queued.queued_child(
            ids::new_id(ids::TRANSACTION_PREFIX),
            TransactionStatus::Applied,
        );
        match self.transfer(child, Refusal::StoreRejected).await {
            Ok((stored, _)) => Ok(Some(stored)),
            Err(LedgerError::DuplicateReference(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Reserves, commits and settles one transfer of `record.precise_amount`.
    async fn transfer(
        &self,
        record: TransactionRecord,
        refusal: Refusal,
    ) -> Result<(TransactionRecord, Vec<BalanceRow>), LedgerError> {
        let amount = record.precise_amount.clone();
        let floor = Floor::for_debit(record.allow_overdraft, record.overdraft_limit.as_ref());
        let debit = GuardedChange {
            delta: BalanceDelta::debit(&amount),
            floor: Some(floor),
        };
        let credit = GuardedChange {
            delta: BalanceDelta::credit(&amount),
            floor: None,
        };
        let registry = &self.inner.registry;
        let (source_actor, destination_actor) = futures_util::future::try_join(
            registry.actor(&record.source),
            registry.actor(&record.destination),
        )
        .await?;
        let precision = record.precision.clone();
        let reserve = source_actor.send(Reserve {
            change: debit.clone(),
            precision: precision.clone(),
        });
        let touch = destination_actor.send(Touch { precision });
        let (reserved, touched) = futures_util::future::join(reserve, touch).await;
        let reserved = reserved.map_err(mailbox)?;
        if let Err(error) = touched.map_err(mailbox).and_then(|r| r) {
            if reserved.is_ok() {
                let _ = source_actor
                    .send(Settle {
                        released: amount,
                        row: None,
                    })
                    .await;
            }
            return Err(error);
        }
        let (item, actors) = match reserved {
            Ok(()) => {
                let item = BatchItem {
                    changes: vec![
                        (record.source.clone(), debit),
                        (record.destination.clone(), credit),
                    ],
                    record,
                    refusal,
                };
                let actors = vec![
                    (item.record.source.clone(), source_actor),
                    (item.record.destination.clone(), destination_actor),
                ];
                (item, actors)
            }
            Err(error) if error.is_funds_refusal() && refusal == Refusal::StoreRejected => {
                let rejected = record.with_rejection(&error.rejection_reason());
                (
                    BatchItem {
                        record: rejected,
                        changes: Vec::new(),
                        refusal,
                    },
                    Vec::new(),
                )
            }
            Err(error) => return Err(error),
        };
        // The committer settles the actors (releases the reservation, shares the new state).
        let (outcome, rows) = self.submit_with(item, actors).await?;
        Ok((stored_or_refused(outcome)?, rows))
    }

    async fn submit(&self, item: BatchItem) -> Result<(ItemOutcome, Vec<BalanceRow>), LedgerError> {
        self.submit_with(item, Vec::new()).await
    }

    async fn submit_with(
        &self,
        item: BatchItem,
        actors: Vec<(String, Addr<BalanceActor>)>,
    ) -> Result<(ItemOutcome, Vec<BalanceRow>), LedgerError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .committer
            .send(Submit {
                item,
                reply,
                actors,
            })
            .await
            .map_err(mailbox)?;
        answer
            .await
            .map_err(|_| LedgerError::Internal("committer dropped the reply".into()))?
    }
}

fn stored_or_refused(outcome: ItemOutcome) -> Result<TransactionRecord, LedgerError> {
    match outcome {
        ItemOutcome::Stored(record) => Ok(record),
        ItemOutcome::Refused(error) => Err(error),
    }
}

fn mailbox(error: actix::MailboxError) -> LedgerError {
    LedgerError::Internal(format!("actor unavailable: {error}"))
}

fn new_record(
    request: &TransferRequest,
    source: String,
    destination: String,
    status: TransactionStatus,
) -> TransactionRecord {
    let transaction_id = ids::new_id(ids::TRANSACTION_PREFIX);
    let amount_major = request.precision.to_major(request.amount.as_bigint());
    let hash = TransactionRecord::content_hash(
        &amount_major,
        &request.reference,
        &request.currency,
        &source,
        &destination,
    );
    let mut meta = match &request.meta_data {
        Some(serde_json::Value::Object(map)) => map.clone(),
        _ => serde_json::Map::new(),
    };
    if status == TransactionStatus::Queued {
        meta.insert(QUEUED_PARENT_KEY.into(), transaction_id.clone().into());
    }
    let now = Utc::now();
    TransactionRecord {
        transaction_id,
        parent_transaction: None,
        source,
        destination,
        reference: request.reference.clone(),
        precise_amount: request.amount.as_bigint().clone(),
        precision: request.precision.clone(),
        currency: request.currency.clone(),
        description: request.description.clone(),
        status,
        hash,
        allow_overdraft: request.allow_overdraft,
        overdraft_limit: request.overdraft_limit.clone(),
        inflight: false,
        skip_queue: request.skip_queue,
        atomic: request.atomic,
        created_at: now,
        effective_date: Some(request.effective_date.unwrap_or(now)),
        scheduled_for: None,
        inflight_expiry_date: None,
        inflight_commit_date: None,
        meta_data: (!meta.is_empty()).then_some(serde_json::Value::Object(meta)),
    }
}
