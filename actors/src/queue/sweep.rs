//! The recovery sweep: QUEUED rows older than a threshold with no child row are enqueued
//! again. It makes a lost queue entry (Redis data loss, the in-process queue after a
//! restart, a failed enqueue) a delay, never a loss. Re-delivery is harmless: the child's
//! `<ref>_q` reference is unique.
//!
//! A QUEUED row stays QUEUED once applied (Blnk's shape: the applied row is its child), so
//! the rows to look at grow with the ledger's history. The sweep therefore remembers where
//! the unfinished ones can start ([`next_since`]) and looks only from there; the first run
//! of each process, and `POST /transactions/recover`, look at everything.

use crate::domain::ids::shard_of;
use crate::ledger::Ledger;
use crate::LedgerError;
use actix::prelude::*;
use chrono::{DateTime, Utc};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct SweepSettings {
    pub interval_ms: u64,
    /// How often due scheduled transactions and hold expiries are looked for.
    pub due_check_ms: u64,
    /// Age threshold of the first run (0 after a restart with the in-process queue, which
    /// starts empty).
    pub first_age_ms: u64,
    /// Rows younger than this are left to the queue.
    pub age_ms: u64,
    /// Rows re-enqueued per run.
    pub batch_max: u64,
}

/// Re-enqueues unfinished QUEUED rows older than `age`; returns how many.
pub async fn recover(ledger: &Ledger, age: Duration, limit: u64) -> Result<usize, LedgerError> {
    Ok(recover_since(ledger, age, None, limit).await?.0)
}

/// Like [`recover`], looking only at rows created at or after `since`; also returns where
/// the next run can start.
pub async fn recover_since(
    ledger: &Ledger,
    age: Duration,
    since: Option<DateTime<Utc>>,
    limit: u64,
) -> Result<(usize, DateTime<Utc>), LedgerError> {
    // An age past chrono's range is as old as anything stored (not zero: that would
    // recover everything).
    let age = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
    let cutoff = before(Utc::now(), age);
    let rows = ledger
        .store()
        .unfinished_queued(cutoff, since, limit)
        .await?;
    let next = next_since(rows.first().map(|row| row.created_at), cutoff, age);
    let queue = ledger.queue();
    for row in &rows {
        queue
            .enqueue(
                shard_of(&row.source, queue.shard_count()),
                &row.transaction_id,
            )
            .await?;
    }
    ledger.requeue_pending_hold_actions(limit).await?;
    Ok((rows.len(), next))
}

/// Where the next run starts: at the oldest row this run found (it was enqueued again, and
/// is looked at again until it is finished); if none, one more `age` before this run's
/// cutoff, because a row is stamped before its commit and one stamped just before the
/// cutoff may have become visible only after this run read.
pub fn next_since(
    oldest_found: Option<DateTime<Utc>>,
    cutoff: DateTime<Utc>,
    age: chrono::Duration,
) -> DateTime<Utc> {
    oldest_found.unwrap_or_else(|| before(cutoff, age))
}

/// `age` before `time`, but no earlier than any stored time: a huge age (`?threshold=
/// 99999999999h`) finds nothing instead of overflowing.
fn before(time: DateTime<Utc>, age: chrono::Duration) -> DateTime<Utc> {
    let earliest = *crate::domain::history::storable_times().start();
    time.checked_sub_signed(age)
        .map_or(earliest, |before| before.max(earliest))
}

/// Enqueues SCHEDULED rows whose time has come and queues due hold expiries and
/// auto-commits. Everything it acts on is in the database, so it survives restarts.
pub async fn run_due(ledger: &Ledger, limit: u64) -> Result<usize, LedgerError> {
    let rows = ledger.store().due_scheduled(Utc::now(), limit).await?;
    for row in &rows {
        ledger.enqueue(&row.source, &row.transaction_id).await;
    }
    Ok(rows.len() + ledger.queue_due_hold_actions(limit).await?)
}

pub struct RecoverySweep {
    ledger: Ledger,
    settings: SweepSettings,
    running: bool,
    running_due: bool,
    first_run: bool,
    /// Unfinished rows older than this were all found by an earlier run (`None`: look at
    /// everything).
    since: Option<DateTime<Utc>>,
}

impl RecoverySweep {
    pub fn new(ledger: Ledger, settings: SweepSettings) -> Self {
        Self {
            ledger,
            settings,
            running: false,
            running_due: false,
            first_run: true,
            since: None,
        }
    }

    fn run_due(&mut self, ctx: &mut Context<Self>) {
        if self.running_due {
            return;
        }
        self.running_due = true;
        let (ledger, limit) = (self.ledger.clone(), self.settings.batch_max);
        ctx.spawn(
            async move { run_due(&ledger, limit).await }
                .into_actor(self)
                .map(|result, actor, _| {
                    actor.running_due = false;
                    if let Err(error) = result {
                        tracing::warn!(%error, "due-work check failed");
                    }
                }),
        );
    }

    fn sweep(&mut self, ctx: &mut Context<Self>) {
        if self.running {
            return;
        }
        self.running = true;
        let age_ms = if std::mem::take(&mut self.first_run) {
            self.settings.first_age_ms
        } else {
            self.settings.age_ms
        };
        let (ledger, limit, since) = (self.ledger.clone(), self.settings.batch_max, self.since);
        let age = Duration::from_millis(age_ms);
        let run = async move { recover_since(&ledger, age, since, limit).await };
        ctx.spawn(run.into_actor(self).map(|result, actor, _| {
            actor.running = false;
            match result {
                Ok((count, next)) => {
                    actor.since = Some(next);
                    if count > 0 {
                        tracing::info!(count, "recovery sweep re-enqueued queued transactions");
                    }
                }
                Err(error) => tracing::warn!(%error, "recovery sweep failed"),
            }
        }));
    }
}

impl Actor for RecoverySweep {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.sweep(ctx);
        ctx.run_interval(
            Duration::from_millis(self.settings.interval_ms),
            |actor, ctx| actor.sweep(ctx),
        );
        ctx.run_interval(
            Duration::from_millis(self.settings.due_check_ms),
            |actor, ctx| actor.run_due(ctx),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::next_since;
    use chrono::{Duration, TimeZone, Utc};

    #[test]
    fn the_next_run_starts_at_the_oldest_row_found_or_one_age_before_the_cutoff() {
        let cutoff = Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap();
        let age = Duration::seconds(30);
        let found = cutoff - Duration::seconds(300);
        assert_eq!(next_since(Some(found), cutoff, age), found);
        assert_eq!(next_since(None, cutoff, age), cutoff - age);
    }

    #[test]
    fn an_age_past_any_stored_time_stops_at_the_earliest_instead_of_overflowing() {
        let earliest = *crate::domain::history::storable_times().start();
        let now = Utc::now();
        for age in [Duration::hours(99_999_999_999), Duration::MAX] {
            assert_eq!(super::before(now, age), earliest);
            assert_eq!(next_since(None, now, age), earliest);
        }
    }
}
