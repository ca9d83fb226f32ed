//! The committer: collects validated transfers and writes them in group commits.
//!
//! While one commit runs, the mailbox is paused (`ctx.wait`); what arrives meanwhile is the
//! next batch. An idle committer flushes as soon as its mailbox is drained (or after the
//! configured window), and never writes more than `batch_size_max` items at once. Replies
//! go out only after the database commit returned.

use crate::store::{commit_batch, BalanceRow, BatchItem, ItemOutcome, Store};
use crate::LedgerError;
use actix::prelude::*;
use std::time::Duration;
use tokio::sync::oneshot;

/// What a submitter gets back: its outcome and the new state of the balances it touched.
pub type CommitReply = Result<(ItemOutcome, Vec<BalanceRow>), LedgerError>;

#[derive(Debug, Clone)]
pub struct CommitterSettings {
    pub batch_size_max: usize,
    pub flush_window_ms: u64,
    pub mailbox_capacity: usize,
}

pub struct Committer {
    store: Store,
    settings: CommitterSettings,
    pending: Vec<(BatchItem, oneshot::Sender<CommitReply>)>,
    flush_scheduled: bool,
}

impl Committer {
    pub fn new(store: Store, settings: CommitterSettings) -> Self {
        assert!(settings.batch_size_max > 0);
        Self {
            store,
            settings,
            pending: Vec::new(),
            flush_scheduled: false,
        }
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

    fn flush(&mut self, ctx: &mut Context<Self>) {
        let take = self.pending.len().min(self.settings.batch_size_max);
        if take == 0 {
            return;
        }
        let batch: Vec<_> = self.pending.drain(..take).collect();
        let (items, replies): (Vec<BatchItem>, Vec<oneshot::Sender<CommitReply>>) =
            batch.into_iter().unzip();
        let touched: Vec<Vec<String>> = items
            .iter()
            .map(|item| item.changes.iter().map(|(id, _)| id.clone()).collect())
            .collect();
        let store = self.store.clone();
        let size = items.len();
        ctx.wait(
            async move {
                let started = std::time::Instant::now();
                let result = commit_batch(&store, items).await;
                tracing::debug!(
                    size,
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "group commit"
                );
                result
            }
            .into_actor(self)
            .map(move |result, actor, ctx| {
                match result {
                    Ok(outcome) => {
                        let rows: std::collections::HashMap<&str, &BalanceRow> = outcome
                            .balances
                            .iter()
                            .map(|row| (row.balance_id.as_str(), row))
                            .collect();
                        for ((item, reply), ids) in
                            outcome.items.into_iter().zip(replies).zip(touched)
                        {
                            let mine = ids
                                .iter()
                                .filter_map(|id| rows.get(id.as_str()).map(|row| (*row).clone()))
                                .collect();
                            let _ = reply.send(Ok((item, mine)));
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

impl Actor for Committer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.settings.mailbox_capacity);
    }
}

/// Write this item in a coming batch; the answer arrives on `reply` after the commit.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Submit {
    pub item: BatchItem,
    pub reply: oneshot::Sender<CommitReply>,
}

impl Handler<Submit> for Committer {
    type Result = ();

    fn handle(&mut self, message: Submit, ctx: &mut Context<Self>) {
        self.pending.push((message.item, message.reply));
        if self.pending.len() >= self.settings.batch_size_max {
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
