//! Finds or starts the actor of a balance. Actors are spread over a fixed set of arbiters
//! (threads) by balance id, started on first use, stopped when idle, and bounded in number.

use super::balance_actor::{check_precision, BalanceActor};
use super::batcher::Batcher;
use crate::domain::ids::shard_of;
use crate::domain::Precision;
use crate::store::{BalanceRow, Store};
use crate::LedgerError;
use actix::{Addr, Arbiter, ArbiterHandle, Supervisor};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A live actor and its balance's precision: fixed when the balance is created, so a
/// transfer's precision is checked here, without a message to the actor.
struct Live {
    addr: Addr<BalanceActor>,
    precision: Option<Precision>,
}

/// The live actors by balance id; shared with the actors so an idle one can leave.
#[derive(Clone, Default)]
pub struct RegistryMap(Arc<Mutex<HashMap<String, Live>>>);

impl RegistryMap {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        // A poisoned map is still a valid map of addresses.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn get(&self, balance_id: &str) -> Option<Addr<BalanceActor>> {
        self.lock()
            .get(balance_id)
            .filter(|live| live.addr.connected())
            .map(|live| live.addr.clone())
    }

    /// The live actor of a balance that takes `precision`; `None` when none is live.
    fn get_taking(
        &self,
        balance_id: &str,
        precision: &Precision,
    ) -> Option<Result<Addr<BalanceActor>, LedgerError>> {
        let map = self.lock();
        let live = map.get(balance_id).filter(|live| live.addr.connected())?;
        Some(
            check_precision(balance_id, live.precision.as_ref(), precision)
                .map(|()| live.addr.clone()),
        )
    }

    /// See [`BalanceRegistry::check_live`].
    fn check_live(
        &self,
        balances: &mut HashMap<String, Precision>,
    ) -> Result<Vec<(String, Addr<BalanceActor>)>, LedgerError> {
        let map = self.lock();
        let mut live_actors = Vec::new();
        let mut refused = None;
        balances.retain(|balance_id, precision| {
            let Some(live) = map
                .get(balance_id.as_str())
                .filter(|live| live.addr.connected() && refused.is_none())
            else {
                return true;
            };
            match check_precision(balance_id, live.precision.as_ref(), precision) {
                Ok(()) => {
                    live_actors.push((balance_id.clone(), live.addr.clone()));
                    false
                }
                Err(error) => {
                    refused = Some(error);
                    true
                }
            }
        });
        refused.map_or(Ok(live_actors), Err)
    }

    /// Removes the entry if it still names this actor.
    pub fn forget(&self, balance_id: &str, addr: &Addr<BalanceActor>) {
        let mut map = self.lock();
        if map.get(balance_id).map(|live| &live.addr) == Some(addr) {
            map.remove(balance_id);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone)]
pub struct RegistrySettings {
    pub arbiters: usize,
    pub actors_max: usize,
    pub mailbox_capacity: usize,
    pub idle_ms: u64,
}

pub struct BalanceRegistry {
    map: RegistryMap,
    arbiters: Vec<ArbiterHandle>,
    /// Kept so the arbiter threads live as long as the registry.
    _owned: Vec<Arbiter>,
    store: Store,
    settings: RegistrySettings,
    /// Loads the rows of balances whose actors are not live, many requests' at once.
    loader: Batcher<String, BalanceRow>,
    /// Actors started while the map was full since it was last pruned (see `start`).
    starts_while_full: AtomicUsize,
}

impl BalanceRegistry {
    pub fn new(store: Store, settings: RegistrySettings) -> Self {
        let owned: Vec<Arbiter> = (0..settings.arbiters.max(1))
            .map(|_| Arbiter::new())
            .collect();
        let arbiters = owned.iter().map(Arbiter::handle).collect();
        let loader = {
            let store = store.clone();
            Batcher::start("balance loader", move |ids| {
                let store = store.clone();
                async move { store.balance_rows(ids).await }
            })
        };
        Self {
            loader,
            map: RegistryMap::default(),
            arbiters,
            _owned: owned,
            store,
            settings,
            starts_while_full: AtomicUsize::new(0),
        }
    }

    pub fn live_actors(&self) -> usize {
        self.map.len()
    }

    /// The balance's actor if it is live (never starts one).
    pub fn live(&self, balance_id: &str) -> Option<Addr<BalanceActor>> {
        self.map.get(balance_id)
    }

    /// Checks the precision of every balance of `balances` (id → the precision a transfer
    /// gives it) whose actor is live, under one lock and without messages, and takes those
    /// out of `balances`; returns their actors. The balances left are not live: the caller
    /// checks them against the database.
    pub fn check_live(
        &self,
        balances: &mut HashMap<String, Precision>,
    ) -> Result<Vec<(String, Addr<BalanceActor>)>, LedgerError> {
        self.map.check_live(balances)
    }

    /// The balance's actor, started (from its stored row) if it is not live.
    pub async fn actor(&self, balance_id: &str) -> Result<Addr<BalanceActor>, LedgerError> {
        if let Some(addr) = self.map.get(balance_id) {
            return Ok(addr);
        }
        let row = self.load(balance_id).await?;
        Ok(self.start(row))
    }

    /// [`Self::actor`] of a balance that must take `precision` (the credited side of a
    /// transfer, or any side of one only stored for later): checked here, no message sent.
    pub async fn actor_taking(
        &self,
        balance_id: &str,
        precision: &Precision,
    ) -> Result<Addr<BalanceActor>, LedgerError> {
        if let Some(checked) = self.map.get_taking(balance_id, precision) {
            return checked;
        }
        let row = self.load(balance_id).await?;
        let checked = check_precision(balance_id, row.precision.as_ref(), precision);
        let addr = self.start(row);
        checked.map(|()| addr)
    }

    async fn load(&self, balance_id: &str) -> Result<BalanceRow, LedgerError> {
        let mut rows = self.loader.get(vec![balance_id.to_owned()]).await?;
        rows.remove(balance_id)
            .ok_or_else(|| LedgerError::BalanceNotFound(balance_id.to_owned()))
    }

    /// Starts the actor of a balance whose row the caller knows to be current (it was just
    /// created), unless it is live or the map is full (an actor outside the map would only
    /// idle until it stops).
    pub fn seed(&self, row: BalanceRow) {
        if self.map.len() < self.settings.actors_max {
            self.start(row);
        }
    }

    fn start(&self, row: BalanceRow) -> Addr<BalanceActor> {
        let mut map = self.map.lock();
        if let Some(live) = map
            .get(&row.balance_id)
            .filter(|live| live.addr.connected())
        {
            return live.addr.clone();
        }
        if map.len() >= self.settings.actors_max {
            // Stopped actors forget themselves; pruning only catches any that could not. It
            // walks the whole map under the lock, so a full map is pruned once every
            // `actors_max / 8` starts, not on each (seen: every new balance of `fresh` walking
            // 100,000 entries, p99 0.1 s → 0.8 s).
            let starts = self.starts_while_full.fetch_add(1, Ordering::Relaxed) + 1;
            if starts >= (self.settings.actors_max / 8).max(1) {
                self.starts_while_full.store(0, Ordering::Relaxed);
                map.retain(|_, live| live.addr.connected());
            }
        }
        if map.len() >= self.settings.actors_max {
            // Over the bound: the new actor is not kept in the map; it serves this request
            // and stops when idle. The database guard keeps this correct.
            tracing::debug!(live = map.len(), "balance actor bound reached");
        }
        let shard = shard_of(&row.balance_id, self.arbiters.len() as u32) as usize;
        let (balance_id, precision) = (row.balance_id.clone(), row.precision.clone());
        let (store, registry) = (self.store.clone(), self.map.clone());
        let (capacity, idle) = (
            self.settings.mailbox_capacity,
            Duration::from_millis(self.settings.idle_ms),
        );
        let addr = Supervisor::start_in_arbiter(&self.arbiters[shard], move |_| {
            BalanceActor::new(row, store, registry, capacity, idle)
        });
        if map.len() < self.settings.actors_max {
            let live = Live {
                addr: addr.clone(),
                precision,
            };
            map.insert(balance_id, live);
        }
        addr
    }
}

impl Drop for BalanceRegistry {
    fn drop(&mut self) {
        for arbiter in &self._owned {
            arbiter.stop();
        }
    }
}
