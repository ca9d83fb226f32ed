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

pub mod balance_actor;
mod batcher;
pub mod committer;
mod holds;
mod preview;
mod refund;
pub mod registry;
mod transfer;

pub use holds::{HoldCommand, HoldReply, ACTION_ENTRY_PREFIX};
pub use preview::{BalancePreview, LegPreview, Preview, Rejection};
pub use refund::RefundRequest;
pub use transfer::{BulkOutcome, BulkRequest, LegSpec, Legs, Recorded, Side, TransferRequest};

use crate::queue::TransactionQueue;
use crate::store::{BalanceRow, BatchUnit, IndicatorBalance, ItemOutcome, Store};
use crate::LedgerError;
use actix::{Actor, Addr, Arbiter};
use balance_actor::BalanceActor;
use committer::{Committer, CommitterSettings, Submit};
use registry::{BalanceRegistry, RegistrySettings};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

#[derive(Debug, Clone)]
pub struct LedgerSettings {
    pub committer: CommitterSettings,
    pub registry: RegistrySettings,
}

struct Inner {
    store: Store,
    registry: BalanceRegistry,
    committer: Addr<Committer>,
    /// A second committer for units that change no balance (QUEUED and SCHEDULED rows), so
    /// accepting queued work never waits behind the workers' batches.
    intake: Addr<Committer>,
    queue: Arc<dyn TransactionQueue>,
    /// `(indicator, currency)` → balance id; indicator balances are never deleted.
    indicators: Mutex<HashMap<(String, String), String>>,
    /// Creates the indicator balances missing from `indicators`, in batches.
    indicator_resolver: batcher::Batcher<(String, String), IndicatorBalance>,
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

impl Ledger {
    /// Starts the committer and the balance arbiters. Call inside an actix `System`.
    pub fn start(store: Store, queue: Arc<dyn TransactionQueue>, settings: LedgerSettings) -> Self {
        let start_committer = |arbiter: &Arbiter| {
            let (store, queue, settings) =
                (store.clone(), queue.clone(), settings.committer.clone());
            Committer::start_in_arbiter(&arbiter.handle(), move |_| {
                Committer::new(store, queue, settings)
            })
        };
        let (committer_arbiter, intake_arbiter) = (Arbiter::new(), Arbiter::new());
        let committer = start_committer(&committer_arbiter);
        let intake = start_committer(&intake_arbiter);
        let registry = BalanceRegistry::new(store.clone(), settings.registry);
        let indicator_resolver = {
            let store = store.clone();
            batcher::Batcher::start("indicator", move |keys| {
                let store = store.clone();
                async move { store.indicator_balances(keys).await }
            })
        };
        Self {
            inner: Arc::new(Inner {
                store,
                registry,
                committer,
                intake,
                queue,
                indicators: Mutex::new(HashMap::new()),
                indicator_resolver,
                committer_arbiter,
                intake_arbiter,
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn queue(&self) -> &Arc<dyn TransactionQueue> {
        &self.inner.queue
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
        if !missing.is_empty() {
            let ids = self.inner.indicator_resolver.get(missing.clone()).await?;
            let mut created = Vec::new();
            let mut cache = self.lock_indicators();
            if cache.len() + ids.len() > INDICATOR_CACHE_MAX {
                cache.clear();
            }
            let mut missing = missing.into_iter();
            for slot in resolved.iter_mut().filter(|slot| slot.is_none()) {
                let key = missing.next().expect("one key per unresolved identifier");
                let found = ids.get(&key).cloned().ok_or_else(|| {
                    LedgerError::Internal(format!(
                        "indicator balance {} ({}) missing",
                        key.0, key.1
                    ))
                })?;
                let id = found.balance_id;
                if found.created {
                    created.push(BalanceRow::created(id.clone(), key.1.clone()));
                }
                cache.insert(key, id.clone());
                *slot = Some(id);
            }
            drop(cache);
            // Their first use is about to start their actors: hand them the rows they were
            // created with rather than reading those back (a fresh-balance transfer would load
            // two rows). Outside the cache's lock: starting an actor takes the registry's.
            for row in created {
                self.registry().seed(row);
            }
        }
        Ok(resolved
            .into_iter()
            .map(|id| id.expect("every identifier resolved"))
            .collect())
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

    /// Hands a unit to the committer and waits for its commit.
    #[tracing::instrument(name = "ledger.commit", skip_all, fields(items = unit.items.len()))]
    pub(crate) async fn submit(
        &self,
        unit: BatchUnit,
        actors: Vec<(String, Addr<BalanceActor>)>,
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
