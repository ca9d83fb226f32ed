//! The actors of the write path and the [`Ledger`] handle the HTTP shell and the queue
//! workers call.
//!
//! A transfer: the source's actor reserves the debit (funds and overdraft checked against
//! its state), the destination's actor checks the precision, the committer writes the
//! transfer in a group commit (the database re-checks funds), then both actors take the
//! committed state. Bulk requests skip the per-transfer reservations (the database check
//! alone decides) but still settle the live actors.
//!
//! # Layout
//! - [`balance_actor`], [`registry`], [`committer`]: the actors.
//! - `transfer`: recording transfers (single, split, inflight, scheduled), applying queued
//!   ones, bulk requests.
//! - `holds`: inflight commits and voids.
//! - `refund`: refunds.
//! - `preview`: dry runs.
//! - `metadata`: metadata updates, and balance reconstruction through the balance's actor.
//! - [`snapshotter`]: the background actor that takes balance snapshots.

pub mod balance_actor;
mod batcher;
pub mod committer;
mod holds;
mod metadata;
mod preview;
mod refund;
pub mod registry;
pub mod snapshotter;
mod transfer;

pub use holds::{HoldCommand, HoldReply, ACTION_ENTRY_PREFIX};
pub use preview::{BalancePreview, LegPreview, Preview, Rejection};
pub use refund::RefundRequest;
pub use transfer::{BulkOutcome, BulkRequest, LegSpec, Legs, Recorded, Side, TransferRequest};

use crate::queue::handoff::QueuedHandoff;
use crate::queue::TransactionQueue;
use crate::store::{
    BalanceRow, BatchUnit, HistoricalBalance, IndicatorBalance, ItemOutcome, NewIndicator,
    PastRead, Store,
};
use crate::LedgerError;
use actix::{Actor, Addr, Arbiter};
use balance_actor::BalanceActor;
use committer::{Committer, CommitterSettings, Submit};
use registry::{BalanceRegistry, RegistrySettings};
use snapshotter::{SnapshotAll, SnapshotFeed, SnapshotSettings, Snapshotter};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

#[derive(Debug, Clone)]
pub struct LedgerSettings {
    pub committer: CommitterSettings,
    pub registry: RegistrySettings,
    pub snapshots: SnapshotSettings,
}

struct Inner {
    store: Store,
    registry: BalanceRegistry,
    committer: Addr<Committer>,
    /// A second committer for units that change no balance (QUEUED and SCHEDULED rows), so
    /// accepting queued work never waits behind the workers' batches.
    intake: Addr<Committer>,
    queue: Arc<dyn TransactionQueue>,
    /// The QUEUED rows the committers just stored, for this process's workers.
    handoff: Arc<QueuedHandoff>,
    /// `(indicator, currency)` → balance id; indicator balances are never deleted.
    indicators: Mutex<HashMap<(String, String), String>>,
    /// Creates the indicator balances missing from `indicators`, in batches.
    indicator_resolver: batcher::Batcher<(String, String), IndicatorBalance>,
    /// Reads past balances, the reads that arrive together in one statement.
    history: batcher::Batcher<PastRead, HistoricalBalance>,
    snapshotter: Addr<Snapshotter>,
    committer_arbiter: Arbiter,
    intake_arbiter: Arbiter,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.committer_arbiter.stop();
        self.intake_arbiter.stop();
    }
}

/// The ledger core's entry point. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

/// Most cached indicator ids (each is one small entry; the cache is cleared when full).
const INDICATOR_CACHE_MAX: usize = 100_000;

/// The indicator balances one queued request creates in the commit that stores it, each
/// named by an id proposed here (one per indicator, however often the request names it).
///
/// Each proposed balance's actor starts now, with the row it will be created with: nothing
/// can change that balance before the commit (no one else knows its id), so the state is
/// exact, and the precision checks and the worker's apply find it live. If another writer
/// creates the indicator first, the commit names that balance instead and the proposed
/// id's actor idles out unused.
#[derive(Debug, Default)]
pub(crate) struct Proposals(HashMap<(String, String), String>);

impl Proposals {
    fn propose(&mut self, ledger: &Ledger, key: &(String, String)) -> String {
        if let Some(id) = self.0.get(key) {
            return id.clone();
        }
        let id = crate::domain::ids::new_id(crate::domain::ids::BALANCE_PREFIX);
        ledger
            .registry()
            .seed(BalanceRow::created(id.clone(), key.1.clone()));
        self.0.insert(key.clone(), id.clone());
        id
    }

    pub(crate) fn into_new_indicators(self) -> Vec<NewIndicator> {
        self.0
            .into_iter()
            .map(|((indicator, currency), balance_id)| NewIndicator {
                indicator,
                currency,
                balance_id,
            })
            .collect()
    }
}

impl Ledger {
    /// Starts the committer and the balance arbiters. Call inside an actix `System`.
    pub fn start(store: Store, queue: Arc<dyn TransactionQueue>, settings: LedgerSettings) -> Self {
        let handoff = Arc::new(QueuedHandoff::default());
        let feed = SnapshotFeed::new(settings.snapshots.pending_balances_max);
        let start_committer = |arbiter: &Arbiter| {
            let (store, queue, handoff, feed, settings) = (
                store.clone(),
                queue.clone(),
                handoff.clone(),
                feed.clone(),
                settings.committer.clone(),
            );
            Committer::start_in_arbiter(&arbiter.handle(), move |_| {
                Committer::new(store, queue, handoff, feed, settings)
            })
        };
        let (committer_arbiter, intake_arbiter) = (Arbiter::new(), Arbiter::new());
        let committer = start_committer(&committer_arbiter);
        let intake = start_committer(&intake_arbiter);
        // Beside the intake committer: it only waits on the database.
        let snapshotter = {
            let (store, settings) = (store.clone(), settings.snapshots.clone());
            Snapshotter::start_in_arbiter(&intake_arbiter.handle(), move |_| {
                Snapshotter::new(store, feed, settings)
            })
        };
        let registry = BalanceRegistry::new(store.clone(), settings.registry);
        let indicator_resolver = {
            let store = store.clone();
            batcher::Batcher::start("indicator", move |keys| {
                let store = store.clone();
                async move { store.indicator_balances(keys).await }
            })
        };
        let history = {
            let store = store.clone();
            batcher::Batcher::start("history", move |reads| {
                let store = store.clone();
                async move { store.balances_at(reads).await }
            })
        };
        Self {
            inner: Arc::new(Inner {
                store,
                registry,
                committer,
                intake,
                queue,
                handoff,
                indicators: Mutex::new(HashMap::new()),
                indicator_resolver,
                history,
                snapshotter,
                committer_arbiter,
                intake_arbiter,
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The balance at time `at` (see `store::history`); reads that arrive together are made
    /// in one statement.
    pub async fn balance_at(
        &self,
        balance_id: &str,
        at: chrono::DateTime<chrono::Utc>,
        from_source: bool,
    ) -> Result<HistoricalBalance, LedgerError> {
        let read = PastRead {
            balance_id: balance_id.to_owned(),
            at,
            from_source,
        };
        self.inner
            .history
            .get(vec![read.clone()])
            .await?
            .remove(&read)
            .ok_or_else(|| LedgerError::BalanceNotFound(balance_id.to_owned()))
    }

    /// Starts a snapshot pass over every balance, `page_size` balances a page (Blnk's
    /// `POST /balances-snapshots?batch_size=`); it runs in the background.
    pub fn snapshot_all_balances(&self, page_size: u64) {
        // A full mailbox already holds a request for the same pass.
        let _ = self.inner.snapshotter.try_send(SnapshotAll { page_size });
    }

    pub fn queue(&self) -> &Arc<dyn TransactionQueue> {
        &self.inner.queue
    }

    /// The QUEUED rows committed here, kept for this process's workers once it runs any.
    pub fn queued_handoff(&self) -> &QueuedHandoff {
        &self.inner.handoff
    }

    /// The rows with these ids, for a queue worker: those this process just committed from
    /// the handoff, the others from the database (missing ids are simply absent).
    pub async fn queued_records(
        &self,
        ids: Vec<String>,
    ) -> Result<Vec<crate::domain::TransactionRecord>, LedgerError> {
        let (mut records, missing) = self.inner.handoff.take(ids);
        let handed_off = records.len();
        if !missing.is_empty() {
            records.extend(self.inner.store.transactions_by_ids(missing).await?);
        }
        self.metrics()
            .observe_queued_rows_loaded(handed_off, records.len() - handed_off);
        Ok(records)
    }

    /// This ledger's metrics (see [`crate::metrics`]).
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        self.inner.store.metrics()
    }

    pub fn live_balance_actors(&self) -> usize {
        self.inner.registry.live_actors()
    }

    pub(crate) fn registry(&self) -> &BalanceRegistry {
        &self.inner.registry
    }

    /// Resolves an `@indicator` (creating its balance on first use) or passes an id through.
    pub async fn resolve_balance(
        &self,
        identifier: &str,
        currency: &str,
    ) -> Result<String, LedgerError> {
        let mut ids = self.resolve_balances(&[identifier], currency).await?;
        Ok(ids.remove(0))
    }

    /// [`Self::resolve_balance`] for several identifiers at once: the indicators not yet
    /// known go to the resolver together (one batch, not one commit each).
    pub async fn resolve_balances(
        &self,
        identifiers: &[&str],
        currency: &str,
    ) -> Result<Vec<String>, LedgerError> {
        self.resolve_or_propose(identifiers, currency, None).await
    }

    /// [`Self::resolve_balances`]; with `proposals`, an indicator not known yet is not
    /// created here but named by a proposed id, which the commit storing the request creates
    /// (queued requests: one commit less before the answer).
    pub(crate) async fn resolve_or_propose(
        &self,
        identifiers: &[&str],
        currency: &str,
        proposals: Option<&mut Proposals>,
    ) -> Result<Vec<String>, LedgerError> {
        let mut resolved: Vec<Option<String>> = {
            let cache = self.lock_indicators();
            identifiers
                .iter()
                .map(|identifier| {
                    if crate::domain::ids::is_indicator(identifier) {
                        cache
                            .get(&(identifier.to_string(), currency.to_owned()))
                            .cloned()
                    } else {
                        Some(identifier.to_string())
                    }
                })
                .collect()
        };
        let missing: Vec<(String, String)> = identifiers
            .iter()
            .zip(&resolved)
            .filter(|(_, id)| id.is_none())
            .map(|(identifier, _)| (identifier.to_string(), currency.to_owned()))
            .collect();
        if missing.is_empty() {
            return Ok(resolved.into_iter().flatten().collect());
        }
        let found: HashMap<(String, String), String> = match proposals {
            Some(proposals) => missing
                .iter()
                .map(|key| (key.clone(), proposals.propose(self, key)))
                .collect(),
            None => {
                let found = self.inner.indicator_resolver.get(missing.clone()).await?;
                self.remember_indicators(found.iter());
                found
                    .into_iter()
                    .map(|(key, balance)| (key, balance.balance_id))
                    .collect()
            }
        };
        let mut missing = missing.into_iter();
        for slot in resolved.iter_mut().filter(|slot| slot.is_none()) {
            let key = missing.next().expect("one key per unresolved identifier");
            // A key may be named more than once (split legs): read, not take.
            let found = found.get(&key).ok_or_else(|| {
                LedgerError::Internal(format!("indicator balance {} ({}) missing", key.0, key.1))
            })?;
            *slot = Some(found.clone());
        }
        Ok(resolved
            .into_iter()
            .map(|id| id.expect("every identifier resolved"))
            .collect())
    }

    /// Caches the balance ids of indicators, and starts the actors of the balances just
    /// created with the rows they were created with (their first use is about to start them;
    /// a fresh-balance transfer would otherwise read two rows back).
    fn remember_indicators<'a>(
        &self,
        found: impl Iterator<Item = (&'a (String, String), &'a IndicatorBalance)>,
    ) {
        let mut created = Vec::new();
        let mut cache = self.lock_indicators();
        for (key, balance) in found {
            if cache.len() >= INDICATOR_CACHE_MAX {
                cache.clear();
            }
            if balance.created {
                created.push(BalanceRow::created(
                    balance.balance_id.clone(),
                    key.1.clone(),
                ));
            }
            cache.insert(key.clone(), balance.balance_id.clone());
        }
        drop(cache);
        // Outside the cache's lock: starting an actor takes the registry's.
        for row in created {
            self.registry().seed(row);
        }
    }

    /// After the commit that stored a queued request: caches the balances its proposals
    /// became, read off its stored rows (`named[i]` are the source and destination item `i`
    /// was submitted with). A proposal whose items were all refused is left out.
    pub(crate) fn learn_proposals(
        &self,
        proposals: &[NewIndicator],
        named: &[(String, String)],
        outcomes: &[ItemOutcome],
    ) {
        if proposals.is_empty() {
            return;
        }
        let by_id: HashMap<&str, &NewIndicator> = proposals
            .iter()
            .map(|new| (new.balance_id.as_str(), new))
            .collect();
        let mut learned: HashMap<(String, String), IndicatorBalance> = HashMap::new();
        for ((source, destination), outcome) in named.iter().zip(outcomes) {
            let ItemOutcome::Stored(record) = outcome else {
                continue;
            };
            for (proposed, stored) in [(source, &record.source), (destination, &record.destination)]
            {
                if let Some(new) = by_id.get(proposed.as_str()) {
                    learned.insert(
                        (new.indicator.clone(), new.currency.clone()),
                        IndicatorBalance {
                            balance_id: stored.clone(),
                            // Its actor was started before the commit (see `Proposals`).
                            created: false,
                        },
                    );
                }
            }
        }
        self.remember_indicators(learned.iter());
    }

    /// The id of an indicator's balance if it exists (dry runs must not create it).
    pub(crate) async fn existing_indicator(
        &self,
        identifier: &str,
        currency: &str,
    ) -> Result<Option<String>, LedgerError> {
        let key = (identifier.to_owned(), currency.to_owned());
        if let Some(id) = self.lock_indicators().get(&key) {
            return Ok(Some(id.clone()));
        }
        match self
            .inner
            .store
            .balance_by_indicator(identifier, currency)
            .await
        {
            Ok(model) => Ok(Some(model.balance_id)),
            Err(LedgerError::BalanceNotFound(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn lock_indicators(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), String>> {
        self.inner
            .indicators
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `work` as its own task: a client that hangs up must not cancel a transfer
    /// between its reservation and its commit (the reservation would never be released).
    pub(crate) async fn detached<T, F>(&self, work: F) -> Result<T, LedgerError>
    where
        F: std::future::Future<Output = Result<T, LedgerError>> + 'static,
        T: 'static,
    {
        let span = tracing::Span::current();
        actix::spawn(tracing::Instrument::instrument(work, span))
            .await
            .map_err(|e| LedgerError::Internal(format!("ledger task failed: {e}")))?
    }

    /// Commits a unit whose floored debits `actors` reserved (settling releases them).
    pub(crate) async fn submit(
        &self,
        unit: BatchUnit,
        actors: Vec<(String, Addr<BalanceActor>)>,
    ) -> Result<Vec<ItemOutcome>, LedgerError> {
        self.submit_to_committer(unit, actors, true).await
    }

    /// Commits a unit no actor reserved anything for (a bulk request: the database decides);
    /// its live `actors` only learn the new rows.
    pub(crate) async fn submit_unreserved(
        &self,
        unit: BatchUnit,
        actors: Vec<(String, Addr<BalanceActor>)>,
    ) -> Result<Vec<ItemOutcome>, LedgerError> {
        self.submit_to_committer(unit, actors, false).await
    }

    /// Hands a unit to the committer and waits for its commit.
    #[tracing::instrument(name = "ledger.commit", skip_all, fields(items = unit.items.len()))]
    async fn submit_to_committer(
        &self,
        unit: BatchUnit,
        actors: Vec<(String, Addr<BalanceActor>)>,
        reserved: bool,
    ) -> Result<Vec<ItemOutcome>, LedgerError> {
        let _pending = self.metrics().pending_guard();
        crate::telemetry::remember_queued(unit.items.iter().map(|item| &item.record));
        let (reply, answer) = oneshot::channel();
        let moves_money = unit
            .items
            .iter()
            .any(|i| !i.changes.is_empty() || i.hold_action.is_some());
        let lane = if moves_money {
            &self.inner.committer
        } else {
            &self.inner.intake
        };
        lane.send(Submit {
            unit,
            reply,
            actors,
            reserved,
        })
        .await
        .map_err(mailbox)?;
        let reply = answer
            .await
            .map_err(|_| LedgerError::Internal("committer dropped the reply".into()))?;
        if let Ok(outcomes) = &reply {
            self.metrics().observe_stored(outcomes);
        }
        reply
    }
}

pub(crate) fn mailbox(error: actix::MailboxError) -> LedgerError {
    LedgerError::Internal(format!("actor unavailable: {error}"))
}

pub(crate) fn stored_or_refused(
    outcome: ItemOutcome,
) -> Result<crate::domain::TransactionRecord, LedgerError> {
    match outcome {
        ItemOutcome::Stored(record) => Ok(record),
        ItemOutcome::Refused(error) => Err(error),
    }
}
