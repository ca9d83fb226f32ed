//! Finds or starts the actor of a balance. Actors are spread over a fixed set of arbiters
//! (threads) by balance id, started on first use, stopped when idle, and bounded in number:
//! a full registry retires its least recently used actors to make room.

use super::balance_actor::{BalanceActor, Retire};
use super::batcher::Batcher;
use crate::domain::balance::check_precision;
use crate::domain::ids::shard_of;
use crate::domain::Precision;
use crate::store::{BalanceRow, Store};
use crate::LedgerError;
use actix::{Addr, Arbiter, ArbiterHandle, Supervisor};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A live actor and its balance's precision: fixed when the balance is created, so a
/// transfer's precision is checked here, without a message to the actor.
struct Live {
    addr: Addr<BalanceActor>,
    precision: Option<Precision>,
    /// When a lookup last handed this actor out: a full registry retires the oldest.
    looked_up: Instant,
}

impl Live {
    /// The actor, if it is still running, marked as just used.
    fn hand_out(&mut self) -> Option<&Addr<BalanceActor>> {
        if !self.addr.connected() {
            return None;
        }
        self.looked_up = Instant::now();
        Some(&self.addr)
    }

    /// [`Self::hand_out`] for a transfer that gives the balance `precision`: `None` when the
    /// actor is not running, else the actor or the precision refusal.
    fn hand_out_taking(
        &mut self,
        balance_id: &str,
        precision: &Precision,
    ) -> Option<Result<Addr<BalanceActor>, LedgerError>> {
        let addr = self.hand_out()?.clone();
        Some(check_precision(balance_id, self.precision.as_ref(), precision).map(|()| addr))
    }
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
            .get_mut(balance_id)
            .and_then(Live::hand_out)
            .cloned()
    }

    /// The live actor of a balance that takes `precision`; `None` when none is live.
    fn get_taking(
        &self,
        balance_id: &str,
        precision: &Precision,
    ) -> Option<Result<Addr<BalanceActor>, LedgerError>> {
        self.lock()
            .get_mut(balance_id)?
            .hand_out_taking(balance_id, precision)
    }

    /// See [`BalanceRegistry::check_live`].
    fn check_live(
        &self,
        balances: &mut HashMap<&str, &Precision>,
    ) -> Result<Vec<(String, Addr<BalanceActor>)>, LedgerError> {
        let mut map = self.lock();
        let mut live_actors = Vec::new();
        let mut refused = None;
        balances.retain(|balance_id, precision| {
            if refused.is_some() {
                return true;
            }
            let checked = map
                .get_mut(*balance_id)
                .and_then(|live| live.hand_out_taking(balance_id, precision));
            match checked {
                None => true,
                Some(Ok(addr)) => {
                    live_actors.push(((*balance_id).to_owned(), addr));
                    false
                }
                Some(Err(error)) => {
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
        balances: &mut HashMap<&str, &Precision>,
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
    /// created), unless it is live.
    pub fn seed(&self, row: BalanceRow) {
        self.start(row);
    }

    fn start(&self, row: BalanceRow) -> Addr<BalanceActor> {
        let mut map = self.map.lock();
        if let Some(addr) = map.get_mut(&row.balance_id).and_then(Live::hand_out) {
            return addr.clone();
        }
        if map.len() >= self.settings.actors_max {
            self.make_room(&mut map);
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
        let live = Live {
            addr: addr.clone(),
            precision,
            looked_up: Instant::now(),
        };
        map.insert(balance_id, live);
        addr
    }

    /// Makes room in a full map: forgets stopped actors, then retires the least recently
    /// used eighth of the bound at once (so the walk over the map is paid once every
    /// `actors_max / 8` starts, not on each). A retired actor leaves the map now and stops
    /// once it holds no reservation; a later use of its balance starts a new one.
    ///
    /// Without it, a workload that keeps creating balances (every transfer between new
    /// `@indicator`s) filled the map within seconds and then ran every new balance on actors
    /// outside it, each lookup loading the row again and starting another actor (seen:
    /// `fresh` at 3,293/s over 40 s, 4,396/s with an unbounded map).
    fn make_room(&self, map: &mut HashMap<String, Live>) {
        map.retain(|_, live| live.addr.connected());
        let excess = (map.len() + 1).saturating_sub(self.settings.actors_max);
        if excess == 0 {
            return;
        }
        let count = excess.max(self.settings.actors_max / 8).min(map.len());
        if count == 0 {
            // An empty map (a bound of zero): nothing to retire.
            return;
        }
        let mut ages: Vec<Instant> = map.values().map(|live| live.looked_up).collect();
        let (_, cutoff, _) = ages.select_nth_unstable(count - 1);
        let cutoff = *cutoff;
        let mut retired = 0;
        map.retain(|_, live| {
            if retired == count || live.looked_up > cutoff {
                return true;
            }
            retired += 1;
            live.addr.do_send(Retire);
            false
        });
        self.store.metrics().observe_actors_retired(retired);
        tracing::debug!(retired, live = map.len(), "balance actor bound reached");
    }
}

impl Drop for BalanceRegistry {
    fn drop(&mut self) {
        for arbiter in &self._owned {
            arbiter.stop();
        }
    }
}
