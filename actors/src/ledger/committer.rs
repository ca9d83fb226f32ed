//! The committer: collects validated transfers and writes them in group commits.
//!
//! Up to `commits_in_flight_max` batches are written at once (one on SQLite, whose single
//! connection would serialize them anyway); what arrives meanwhile gathers into the next
//! batch. Two batches in flight overlap one's round trips and WAL flush with the other's;
//! where they share a balance, PostgreSQL's row lock makes the later one wait for the
//! earlier one's commit and then check its guards against (or read) its result, so admission
//! stays exact. An idle committer flushes as soon as its mailbox is drained (or after the
//! configured window), and writes at most `batch_size_max` items at once (a unit is never
//! split: an atomic bulk request is one unit). Replies go out only after the database commit returned, and the
//! balance actors are settled before that (each keeps the newest version it is told of, so
//! the order in which two batches' settlements arrive does not matter).

use super::balance_actor::{BalanceActor, Settle};
use super::snapshotter::SnapshotFeed;
use crate::domain::ids::shard_of;
use crate::domain::{TransactionRecord, TransactionStatus};
use crate::queue::handoff::QueuedHandoff;
use crate::queue::TransactionQueue;
use crate::store::{commit_batch, BalanceState, BatchUnit, ItemOutcome, Store, GROUP_KEY};
use crate::LedgerError;
use actix::prelude::*;
use bigdecimal::num_bigint::BigInt;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// What a submitter gets back: the outcome of each item of its unit. (The balances' new
/// states go to their actors, not to the submitter.)
pub type CommitReply = Result<Vec<ItemOutcome>, LedgerError>;

#[derive(Debug, Clone)]
pub struct CommitterSettings {
    pub batch_size_max: usize,
    pub flush_window_ms: u64,
    pub mailbox_capacity: usize,
    /// Batches being written at once (1: strictly one after another).
    pub commits_in_flight_max: usize,
    /// Batches being written at once when the next one is large (at least
    /// `rows_first_items_min` items). Such a batch spends most of its time inserting rows,
    /// which waits for no other batch; a third in flight for every batch made small ones
    /// wait longer for each other's balances (BENCHMARKS.md, round 8, item 5).
    pub large_commits_in_flight_max: usize,
    /// Items waiting for a batch beyond which new submissions are refused as overloaded.
    pub pending_items_max: usize,
    /// Batches of at least this many items insert their rows before locking their balances
    /// (PostgreSQL; see [`crate::store::commit_batch`]).
    pub rows_first_items_min: usize,
}

pub struct Committer {
    store: Store,
    /// Told which balances each commit gave APPLIED rows, for their snapshots.
    snapshots: SnapshotFeed,
    /// QUEUED rows are enqueued here right after their commit, one pipeline per batch.
    queue: Arc<dyn TransactionQueue>,
    /// Committed QUEUED rows are kept here for this process's workers (when it runs any).
    handoff: Arc<QueuedHandoff>,
    settings: CommitterSettings,
    pending: Vec<Submit>,
    flush_scheduled: bool,
    commits_in_flight: usize,
}

/// Write this unit in a coming batch; the answer arrives on `reply` after the commit.
/// `actors` are the actors of the unit's balances: they are settled after the commit (the
/// debits of changes with a floor were reserved by them).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Submit {
    pub unit: BatchUnit,
    pub reply: oneshot::Sender<CommitReply>,
    pub actors: Vec<(String, Addr<BalanceActor>)>,
    /// The actors reserved the unit's floored debits (a bulk request's did not), so the
    /// settlement releases them.
    pub reserved: bool,
}

impl Committer {
    pub fn new(
        store: Store,
        queue: Arc<dyn TransactionQueue>,
        handoff: Arc<QueuedHandoff>,
        snapshots: SnapshotFeed,
        settings: CommitterSettings,
    ) -> Self {
        assert!(settings.batch_size_max > 0);
        assert!(settings.commits_in_flight_max > 0);
        assert!(settings.large_commits_in_flight_max > 0);
        Self {
            store,
            snapshots,
            queue,
            handoff,
            settings,
            pending: Vec::new(),
            flush_scheduled: false,
            commits_in_flight: 0,
        }
    }

    fn pending_items(&self) -> usize {
        self.pending.iter().map(|s| s.unit.items.len()).sum()
    }

    fn schedule_flush(&mut self, ctx: &mut Context<Self>) {
        if self.flush_scheduled {
            return;
        }
        self.flush_scheduled = true;
        if self.settings.flush_window_ms == 0 {
            // Runs after the mailbox is drained: everything already queued joins this batch.
            ctx.notify(Flush);
        } else {
            ctx.notify_later(Flush, Duration::from_millis(self.settings.flush_window_ms));
        }
    }

    /// How many batches may be in flight when the first `take` pending submissions start.
    fn in_flight_max(&self, take: usize) -> usize {
        let items: usize = self.pending[..take]
            .iter()
            .map(|s| s.unit.items.len())
            .sum();
        if items >= self.settings.rows_first_items_min {
            self.settings.large_commits_in_flight_max
        } else {
            self.settings.commits_in_flight_max
        }
    }

    /// How many pending submissions fit in one batch (at least one).
    fn batch_len(&self) -> usize {
        let mut items = 0;
        let mut take = 0;
        for submit in &self.pending {
            items += submit.unit.items.len();
            if take > 0 && items > self.settings.batch_size_max {
                break;
            }
            take += 1;
        }
        take
    }

    #[tracing::instrument(level = "debug", name = "committer.flush", skip_all, fields(pending = self.pending.len()))]
    fn flush(&mut self, ctx: &mut Context<Self>) {
        loop {
            let take = self.batch_len();
            if take == 0 || self.commits_in_flight >= self.in_flight_max(take) {
                return;
            }
            self.commit(take, ctx);
        }
    }

    /// Writes the first `take` pending submissions as one batch.
    fn commit(&mut self, take: usize, ctx: &mut Context<Self>) {
        let mut batch: Vec<Submit> = self.pending.drain(..take).collect();
        let settlements = Settlements::of(&mut batch);
        let (units, replies): (Vec<BatchUnit>, Vec<oneshot::Sender<CommitReply>>) =
            batch.into_iter().map(|s| (s.unit, s.reply)).unzip();
        let (store, queue, handoff, snapshots) = (
            self.store.clone(),
            self.queue.clone(),
            self.handoff.clone(),
            self.snapshots.clone(),
        );
        let size: usize = units.iter().map(|u| u.items.len()).sum();
        let rows_first_items_min = self.settings.rows_first_items_min;
        self.commits_in_flight += 1;
        ctx.spawn(
            async move {
                let started = std::time::Instant::now();
                let result = commit_batch(&store, units, rows_first_items_min).await;
                store.metrics().observe_commit(size, started.elapsed(), result.is_ok());
                if let Ok(outcome) = &result {
                    snapshots.note(applied_counts(&outcome.units));
                    let entered = entered_rows(&outcome.units);
                    // Kept before the entries exist, so this process's worker finds each.
                    handoff.keep(entered.iter().copied());
                    let entries: Vec<(u32, String)> = entered
                        .iter()
                        .map(|record| {
                            let shard = shard_of(&record.source, queue.shard_count());
                            (shard, record.transaction_id.clone())
                        })
                        .collect();
                    if let Err(error) = queue.enqueue_many(&entries).await {
                        // The QUEUED rows are durable; the recovery sweep enqueues them again.
                        tracing::warn!(%error, count = entries.len(), "enqueue after commit failed");
                    }
                }
                tracing::debug!(
                    size,
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "group commit"
                );
                result
            }
            .into_actor(self)
            .map(move |mut result, actor, ctx| {
                actor.commits_in_flight -= 1;
                // Settle the balance actors before anyone hears of the outcome: each actor
                // learns of every commit in commit order, with its reservations released in
                // the same message, so its cached state is exact. The rows move to them.
                let committed = result
                    .as_mut()
                    .ok()
                    .map(|outcome| std::mem::take(&mut outcome.balances));
                settlements.send(committed);
                match result {
                    Ok(outcome) => {
                        for (items, reply) in outcome.units.into_iter().zip(replies) {
                            let _ = reply.send(Ok(items));
                        }
                    }
                    Err(error) => {
                        tracing::error!(%error, size, "group commit failed");
                        for reply in replies {
                            let _ = reply.send(Err(error.clone()));
                        }
                    }
                }
                if !actor.pending.is_empty() {
                    actor.schedule_flush(ctx);
                }
            }),
        );
    }
}

/// The rows of a committed batch that go on the queue: every stored QUEUED row, except that
/// an atomic group (split or bulk) is entered once, by its first row: the worker applies it
/// whole.
fn entered_rows(units: &[Vec<ItemOutcome>]) -> Vec<&TransactionRecord> {
    let mut groups = HashSet::new();
    let mut entered = Vec::new();
    for record in units.iter().flatten().filter_map(|outcome| match outcome {
        ItemOutcome::Stored(record) if record.status == TransactionStatus::Queued => Some(record),
        _ => None,
    }) {
        let group = record
            .meta_data
            .as_ref()
            .and_then(|m| m.get(GROUP_KEY))
            .and_then(|g| g.as_str());
        if let (true, Some(group)) = (record.atomic, group) {
            if !groups.insert(group.to_owned()) {
                continue;
            }
        }
        entered.push(record);
    }
    entered
}

/// Per balance, the APPLIED rows of a committed batch that name it.
fn applied_counts(units: &[Vec<ItemOutcome>]) -> HashMap<&str, u64> {
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for outcome in units.iter().flatten() {
        if let ItemOutcome::Stored(record) = outcome {
            if record.status == TransactionStatus::Applied {
                *counts.entry(record.source.as_str()).or_default() += 1;
                *counts.entry(record.destination.as_str()).or_default() += 1;
            }
        }
    }
    counts
}

/// Per balance of a batch: its actor and the reserved debits the batch releases.
struct Settlements(BTreeMap<String, (Addr<BalanceActor>, BigInt)>);

impl Settlements {
    /// Takes the submissions' actors (they are not needed after this).
    fn of(batch: &mut [Submit]) -> Self {
        let mut map: BTreeMap<String, (Addr<BalanceActor>, BigInt)> = BTreeMap::new();
        for submit in batch {
            for (balance_id, addr) in std::mem::take(&mut submit.actors) {
                map.entry(balance_id)
                    .or_insert_with(|| (addr, BigInt::default()));
            }
            if !submit.reserved {
                continue;
            }
            for (balance_id, released) in reserved_debits(&submit.unit) {
                if let Some((_, total)) = map.get_mut(balance_id) {
                    *total += released;
                }
            }
        }
        Self(map)
    }

    fn send(self, committed: Option<Vec<BalanceState>>) {
        let mut rows = committed.unwrap_or_default();
        // Both sides in balance-id order: matched in one pass, no map of the rows.
        rows.sort_unstable_by(|a, b| a.balance_id.cmp(&b.balance_id));
        let mut rows = rows.into_iter().peekable();
        for (balance_id, (addr, released)) in self.0 {
            while rows.next_if(|row| row.balance_id < balance_id).is_some() {}
            let row = rows.next_if(|row| row.balance_id == balance_id);
            // `do_send` on purpose: it enqueues now, so each actor sees commits in order;
            // the count is bounded by the balances of one batch.
            addr.do_send(Settle { released, row });
        }
    }
}

impl Actor for Committer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.settings.mailbox_capacity);
    }
}

impl Handler<Submit> for Committer {
    type Result = ();

    fn handle(&mut self, mut message: Submit, ctx: &mut Context<Self>) {
        if self.pending_items() + message.unit.items.len() > self.settings.pending_items_max
            && !self.pending.is_empty()
        {
            // The reservations this unit's actors made are released like a failed commit's.
            Settlements::of(std::slice::from_mut(&mut message)).send(None);
            let _ = message.reply.send(Err(LedgerError::Overloaded));
            return;
        }
        self.pending.push(message);
        if self.pending_items() >= self.settings.batch_size_max {
            self.flush_scheduled = false;
            self.flush(ctx);
        } else {
            self.schedule_flush(ctx);
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Flush;

impl Handler<Flush> for Committer {
    type Result = ();

    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) {
        self.flush_scheduled = false;
        self.flush(ctx);
    }
}

/// Per balance, the floored debits of a unit: what its actors reserved for it.
fn reserved_debits(unit: &BatchUnit) -> impl Iterator<Item = (&str, BigInt)> {
    unit.items
        .iter()
        .flat_map(|item| item.changes.iter())
        .filter(|(_, change)| change.floor.is_some())
        .map(|(balance_id, change)| (balance_id.as_str(), -change.delta.available_change()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::balance::{BalanceDelta, Floor, GuardedChange};
    use crate::domain::batch::UnitMode;
    use crate::domain::TransactionRecord;
    use crate::store::{BatchItem, Refusal};

    #[test]
    fn a_unit_releases_its_floored_debits_only() {
        let amount = BigInt::from(7);
        let changes = vec![
            (
                "bln_a".to_owned(),
                GuardedChange {
                    delta: BalanceDelta::debit(&amount),
                    floor: Some(Floor::AtLeast(BigInt::default())),
                },
            ),
            (
                "bln_b".to_owned(),
                GuardedChange {
                    delta: BalanceDelta::credit(&amount),
                    floor: None,
                },
            ),
        ];
        let item = BatchItem::transfer(
            TransactionRecord::sample_for_tests(),
            changes,
            Refusal::Fail,
        );
        let unit = BatchUnit::new(UnitMode::Independent, vec![item.clone(), item]);
        let released: Vec<(&str, BigInt)> = reserved_debits(&unit).collect();
        assert_eq!(
            released,
            [("bln_a", amount.clone()), ("bln_a", amount.clone())]
        );
    }
}
