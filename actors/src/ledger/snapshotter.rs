//! The snapshotter: takes balance snapshots in the background, so that reading a past
//! balance costs a snapshot plus the few transactions between it and the time asked for
//! (see `store::history`).
//!
//! Every process with a ledger runs one. Its committers tell it, after each commit, which
//! balances got APPLIED rows and how many ([`SnapshotFeed::note`]); each tick
//! (`interval_ms`) it walks the balances that have gathered `every` entries since their last
//! snapshot, or whose entries are from an earlier UTC day (a day's last entry gets one),
//! within a time budget per tick (a quarter of it while transfers wait for a commit), so that
//! under a sustained burst it falls behind rather than compete with the write path (reads stay
//! exact either way, only slower): walking costs PostgreSQL about one index entry and one heap
//! row per transaction side. A pass over every
//! balance runs on `POST /balances-snapshots` and, in processes that run the queue workers,
//! once a day after midnight UTC: it also covers balances that changed before a restart or
//! in another process that stopped.

use crate::store::history::{SnapshotLimits, SNAPSHOT_SETTLE};
use crate::store::Store;
use crate::LedgerError;
use actix::prelude::*;
use chrono::{DateTime, NaiveDate, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct SnapshotSettings {
    /// How often the snapshotter looks for balances due a snapshot.
    pub interval_ms: u64,
    /// Entries between two snapshots of a balance.
    pub every: usize,
    /// Entries read per balance and side in one transaction.
    pub entries_per_side_max: u64,
    /// Balances locked and snapshotted in one transaction.
    pub balances_per_transaction: usize,
    /// Work per tick before the rest waits for the next one.
    pub tick_budget_ms: u64,
    /// Balances remembered as due; past it, the rest waits for a full pass.
    pub pending_balances_max: usize,
    /// Run the daily pass over every balance here.
    pub daily_full_pass: bool,
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        Self {
            interval_ms: 1_000,
            every: 32,
            // A transaction holds its balances' rows while it reads their entries (a commit
            // on one of them waits that long): a few balances, a few hundred entries.
            entries_per_side_max: 512,
            balances_per_transaction: 8,
            tick_budget_ms: 200,
            pending_balances_max: 100_000,
            daily_full_pass: false,
        }
    }
}

/// A balance with entries not covered by a snapshot.
#[derive(Debug, Clone, Copy)]
struct Pending {
    entries: u64,
    /// When the first of them was noted (a day boundary after it makes the balance due).
    since: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct FeedState {
    pending: HashMap<String, Pending>,
    /// More balances were noted than `pending_balances_max`: some are only found by a full pass.
    overflowed: bool,
}

/// What the committers tell the snapshotter (shared, cheap to clone).
#[derive(Debug, Clone)]
pub struct SnapshotFeed {
    state: Arc<Mutex<FeedState>>,
    pending_max: usize,
}

impl SnapshotFeed {
    pub fn new(pending_max: usize) -> Self {
        Self {
            state: Arc::default(),
            pending_max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FeedState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `entries` more APPLIED rows of each balance were committed.
    pub fn note<'a>(&self, counts: impl IntoIterator<Item = (&'a str, u64)>) {
        let now = Utc::now();
        let mut state = self.lock();
        for (balance_id, entries) in counts {
            if let Some(pending) = state.pending.get_mut(balance_id) {
                pending.entries += entries;
                continue;
            }
            if state.pending.len() >= self.pending_max {
                state.overflowed = true;
                continue;
            }
            state.pending.insert(
                balance_id.to_owned(),
                Pending {
                    entries,
                    since: now,
                },
            );
        }
    }

    /// Takes the balances due now (sorted): `every` entries or more, or entries from a day
    /// that has ended.
    fn take_due(&self, every: u64, today: NaiveDate) -> Vec<(String, Pending)> {
        let mut state = self.lock();
        let due: Vec<String> = state
            .pending
            .iter()
            .filter(|(_, p)| p.entries >= every || p.since.date_naive() < today)
            .map(|(id, _)| id.clone())
            .collect();
        let mut taken: Vec<(String, Pending)> = due
            .into_iter()
            .filter_map(|id| state.pending.remove(&id).map(|p| (id, p)))
            .collect();
        taken.sort_by(|a, b| a.0.cmp(&b.0));
        taken
    }

    /// Puts a balance back with what is still not covered (added to anything noted since).
    fn put_back(&self, balance_id: String, pending: Pending) {
        let mut state = self.lock();
        match state.pending.get_mut(&balance_id) {
            Some(newer) => {
                newer.entries += pending.entries;
                newer.since = newer.since.min(pending.since);
            }
            None => {
                state.pending.insert(balance_id, pending);
            }
        }
    }

    fn take_overflow(&self) -> bool {
        std::mem::take(&mut self.lock().overflowed)
    }

    pub fn len(&self) -> usize {
        self.lock().pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a pass over every balance stands.
#[derive(Debug, Clone, Default)]
struct FullPass {
    /// The last balance id of the page being done; the next page starts after it.
    after: Option<String>,
    page_size: u64,
    /// Balances of that page not done yet (sorted): a commit held them, or more entries wait
    /// than one transaction reads.
    pending: Vec<String>,
}

pub struct Snapshotter {
    store: Store,
    feed: SnapshotFeed,
    settings: SnapshotSettings,
    running: bool,
    full_pass: Option<FullPass>,
    /// The UTC day of the last daily pass started.
    last_daily: NaiveDate,
}

impl Snapshotter {
    pub fn new(store: Store, feed: SnapshotFeed, settings: SnapshotSettings) -> Self {
        assert!(settings.every > 0 && settings.balances_per_transaction > 0);
        Self {
            store,
            feed,
            settings,
            running: false,
            full_pass: None,
            last_daily: Utc::now().date_naive(),
        }
    }

    fn limits(&self) -> SnapshotLimits {
        SnapshotLimits {
            every: self.settings.every,
            entries_per_side_max: self.settings.entries_per_side_max,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.running {
            return;
        }
        let now = Utc::now();
        // The daily pass waits out the settle time, so the day that ended is complete.
        let settled_day = (now - SNAPSHOT_SETTLE).date_naive();
        if self.settings.daily_full_pass && settled_day > self.last_daily {
            self.last_daily = settled_day;
            self.start_full_pass(1_000);
        }
        if self.feed.take_overflow() && self.full_pass.is_none() {
            tracing::info!("snapshotter: more balances pending than remembered; a full pass runs");
            self.start_full_pass(1_000);
        }
        let due = self.feed.take_due(self.settings.every as u64, settled_day);
        let full_pass = self.full_pass.clone();
        // Whether this walk carries the pass over every balance: only then does its result
        // replace `self.full_pass` (one asked for while a walk without it runs is kept).
        let carries_full_pass = full_pass.is_some();
        if due.is_empty() && full_pass.is_none() {
            self.store
                .metrics()
                .set_snapshot_pending_balances(self.feed.len());
            return;
        }
        self.running = true;
        let (store, feed, limits) = (self.store.clone(), self.feed.clone(), self.limits());
        let chunk = self.settings.balances_per_transaction;
        // While transfers wait for a commit, the write path comes first: a quarter of the
        // budget (the snapshots catch up when the load eases).
        let busy = self.store.metrics().committer_pending() > 0;
        let budget_ms = if busy {
            self.settings.tick_budget_ms.div_ceil(4)
        } else {
            self.settings.tick_budget_ms
        };
        let budget = Duration::from_millis(budget_ms);
        ctx.spawn(
            async move {
                let started = Instant::now();
                let result = walk_due(&store, &feed, due, limits, chunk, started, budget).await;
                let full_pass = match (result, full_pass) {
                    (Ok(()), Some(pass)) if started.elapsed() < budget => {
                        walk_full_pass(&store, pass, limits, chunk, started, budget).await
                    }
                    (Ok(()), pass) => Ok(pass),
                    (Err(error), pass) => Err((error, pass)),
                };
                store.metrics().set_snapshot_pending_balances(feed.len());
                full_pass
            }
            .into_actor(self)
            .map(move |result, actor, _ctx| {
                actor.running = false;
                let pass = match result {
                    Ok(pass) => pass,
                    Err((error, pass)) => {
                        tracing::warn!(%error, "snapshot pass failed; retried next tick");
                        pass
                    }
                };
                if carries_full_pass {
                    actor.full_pass = pass;
                }
            }),
        );
    }

    fn start_full_pass(&mut self, page_size: u64) {
        if self.full_pass.is_none() {
            self.full_pass = Some(FullPass {
                after: None,
                page_size: page_size.clamp(1, 10_000),
                pending: Vec::new(),
            });
        }
    }
}

/// Snapshots the due balances, chunk by chunk, until the budget is spent; what is left (and
/// what a chunk left uncovered) goes back to the feed.
async fn walk_due(
    store: &Store,
    feed: &SnapshotFeed,
    due: Vec<(String, Pending)>,
    limits: SnapshotLimits,
    chunk: usize,
    started: Instant,
    budget: Duration,
) -> Result<(), LedgerError> {
    let mut chunks = due.chunks(chunk);
    for balances in chunks.by_ref() {
        let ids: Vec<String> = balances.iter().map(|(id, _)| id.clone()).collect();
        let cutoff = Utc::now() - SNAPSHOT_SETTLE;
        let pass = match store.take_snapshots(ids, limits, cutoff).await {
            Ok(pass) => pass,
            Err(error) => {
                for (id, pending) in balances {
                    feed.put_back(id.clone(), *pending);
                }
                return Err(error);
            }
        };
        store
            .metrics()
            .observe_snapshot_pass(pass.entries_read, pass.snapshots_written);
        let noted: HashMap<&str, Pending> =
            balances.iter().map(|(id, p)| (id.as_str(), *p)).collect();
        for id in pass.skipped {
            if let Some(pending) = noted.get(id.as_str()) {
                feed.put_back(id, *pending);
            }
        }
        for done in pass.balances {
            let Some(noted) = noted.get(done.balance_id.as_str()) else {
                continue;
            };
            let id = &done.balance_id;
            // Still uncovered: what the pass left after the balance's last snapshot, and the
            // entries noted but newer than the cutoff (not read yet). A pass that stopped
            // at its bound keeps the balance due.
            let unread = noted.entries.saturating_sub(done.read);
            let entries = if done.more {
                (limits.every as u64).max(done.remaining + unread)
            } else {
                done.remaining + unread
            };
            if entries > 0 {
                feed.put_back(
                    id.clone(),
                    Pending {
                        entries,
                        since: cutoff,
                    },
                );
            }
        }
        if started.elapsed() >= budget {
            break;
        }
    }
    for balances in chunks {
        for (id, pending) in balances {
            feed.put_back(id.clone(), *pending);
        }
    }
    Ok(())
}

/// Continues a pass over every balance until the budget is spent; `None` when it is done.
/// Each page's balances are walked until each is covered up to the cutoff (a balance with
/// more entries than one transaction reads, or that a commit held, is walked again).
async fn walk_full_pass(
    store: &Store,
    mut pass: FullPass,
    limits: SnapshotLimits,
    chunk: usize,
    started: Instant,
    budget: Duration,
) -> Result<Option<FullPass>, (LedgerError, Option<FullPass>)> {
    loop {
        if pass.pending.is_empty() {
            let page = store
                .balance_ids_after(pass.after.clone(), pass.page_size)
                .await
                .map_err(|e| (e, Some(pass.clone())))?;
            let Some(last) = page.last().cloned() else {
                store.metrics().observe_snapshot_full_pass();
                tracing::info!("snapshot pass over every balance finished");
                return Ok(None);
            };
            pass.after = Some(last);
            pass.pending = page;
        }
        let mut again = Vec::new();
        let mut chunks = pass.pending.chunks(chunk);
        for ids in chunks.by_ref() {
            let cutoff = Utc::now() - SNAPSHOT_SETTLE;
            let done = store
                .take_snapshots(ids.to_vec(), limits, cutoff)
                .await
                .map_err(|e| (e, Some(pass.clone())))?;
            store
                .metrics()
                .observe_snapshot_pass(done.entries_read, done.snapshots_written);
            again.extend(done.skipped);
            again.extend(
                done.balances
                    .into_iter()
                    .filter(|balance| balance.more)
                    .map(|balance| balance.balance_id),
            );
            if started.elapsed() >= budget {
                break;
            }
        }
        again.extend(chunks.flatten().cloned());
        again.sort();
        pass.pending = again;
        if started.elapsed() >= budget {
            return Ok(Some(pass));
        }
    }
}

impl Actor for Snapshotter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let every = Duration::from_millis(self.settings.interval_ms.max(10));
        ctx.run_interval(every, |actor, ctx| actor.tick(ctx));
    }
}

/// `POST /balances-snapshots`: pass over every balance, `page_size` ids a page.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SnapshotAll {
    pub page_size: u64,
}

impl Handler<SnapshotAll> for Snapshotter {
    type Result = ();

    fn handle(&mut self, message: SnapshotAll, ctx: &mut Context<Self>) {
        self.start_full_pass(message.page_size);
        self.tick(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balances_are_due_after_every_entries_or_a_days_end() {
        let feed = SnapshotFeed::new(10);
        feed.note([("bln_a", 3), ("bln_b", 1)]);
        feed.note([("bln_a", 2)]);
        let today = Utc::now().date_naive();
        let due = feed.take_due(5, today);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, "bln_a");
        assert_eq!(due[0].1.entries, 5);
        let tomorrow = today.succ_opt().unwrap();
        let due = feed.take_due(5, tomorrow);
        assert_eq!(due.len(), 1, "yesterday's entries are due at the day's end");
        assert!(feed.is_empty());
    }

    #[test]
    fn a_full_feed_asks_for_a_full_pass() {
        let feed = SnapshotFeed::new(1);
        feed.note([("bln_a", 1), ("bln_b", 1)]);
        assert_eq!(feed.len(), 1);
        assert!(feed.take_overflow());
        assert!(!feed.take_overflow());
    }
}
