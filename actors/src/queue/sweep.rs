//! The recovery sweep: QUEUED rows older than a threshold with no child row are enqueued
//! again. It makes a lost queue entry (Redis data loss, the in-process queue after a
//! restart, a failed enqueue) a delay, never a loss. Re-delivery is harmless: the child's
//! `<ref>_q` reference is unique.

use crate::domain::ids::shard_of;
use crate::ledger::Ledger;
use crate::LedgerError;
use actix::prelude::*;
use chrono::Utc;
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
    let cutoff = Utc::now() - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::zero());
    let rows = ledger.store().unfinished_queued(cutoff, limit).await?;
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
    Ok(rows.len())
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
}

impl RecoverySweep {
    pub fn new(ledger: Ledger, settings: SweepSettings) -> Self {
        Self {
            ledger,
            settings,
            running: false,
            running_due: false,
            first_run: true,
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
        let (ledger, limit) = (self.ledger.clone(), self.settings.batch_max);
        let run = async move { recover(&ledger, Duration::from_millis(age_ms), limit).await };
        ctx.spawn(run.into_actor(self).map(|result, actor, _| {
            actor.running = false;
            match result {
                Ok(0) => {}
                Ok(count) => {
                    tracing::info!(count, "recovery sweep re-enqueued queued transactions")
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
