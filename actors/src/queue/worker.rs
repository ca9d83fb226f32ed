//! Queue workers: actors that drain the queue and apply each QUEUED transaction through the
//! ledger (balance actors and the committer), acking an entry only after its child row is
//! committed.

use super::{Delivery, TransactionQueue};
use crate::domain::TransactionStatus;
use crate::ledger::{Ledger, ACTION_ENTRY_PREFIX};
use actix::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub workers: u32,
    /// Entries taken per read.
    pub receive_batch_max: usize,
    pub receive_wait_ms: u64,
    /// An entry delivered this long ago and never acked is taken over.
    pub claim_idle_ms: u64,
    /// Pause after a queue error before reading again.
    pub error_backoff_ms: u64,
    /// Once requested, each worker finishes the batch in hand (commit, then ack) and stops.
    pub shutdown: crate::shutdown::Shutdown,
}

pub struct QueueWorker {
    ledger: Ledger,
    consumer: String,
    shards: Vec<u32>,
    settings: WorkerSettings,
}

impl QueueWorker {
    /// Starts `settings.workers` workers on their own arbiter; each reads its own shards.
    pub fn start_pool(
        ledger: Ledger,
        process_id: &str,
        settings: WorkerSettings,
    ) -> (Arbiter, Vec<Addr<QueueWorker>>) {
        // From now on the committers keep the QUEUED rows they store for these workers.
        ledger.queued_handoff().enable();
        let arbiter = Arbiter::new();
        let shard_count = ledger.queue().shard_count();
        let workers = settings.workers.clamp(1, shard_count);
        let addrs = (0..workers)
            .map(|index| {
                let shards: Vec<u32> = (0..shard_count).filter(|s| s % workers == index).collect();
                let worker = QueueWorker {
                    ledger: ledger.clone(),
                    consumer: format!("{process_id}-{index}"),
                    shards,
                    settings: settings.clone(),
                };
                QueueWorker::start_in_arbiter(&arbiter.handle(), move |_| worker)
            })
            .collect();
        (arbiter, addrs)
    }
}

impl Actor for QueueWorker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let run = drain(
            self.ledger.clone(),
            self.consumer.clone(),
            self.shards.clone(),
            self.settings.clone(),
        );
        ctx.spawn(run.into_actor(self));
    }
}

async fn drain(ledger: Ledger, consumer: String, shards: Vec<u32>, settings: WorkerSettings) {
    let queue: Arc<dyn TransactionQueue> = ledger.queue().clone();
    let _running = settings.shutdown.running();
    let mut last_claim = Instant::now();
    while !settings.shutdown.is_requested() {
        let received = if last_claim.elapsed() >= Duration::from_millis(settings.claim_idle_ms) {
            last_claim = Instant::now();
            queue
                .claim_stale(
                    &consumer,
                    &shards,
                    settings.claim_idle_ms,
                    settings.receive_batch_max,
                )
                .await
        } else {
            queue
                .receive(
                    &consumer,
                    &shards,
                    settings.receive_batch_max,
                    settings.receive_wait_ms,
                )
                .await
        };
        match received {
            Ok(deliveries) if deliveries.is_empty() => {}
            Ok(deliveries) => process(&ledger, queue.as_ref(), deliveries).await,
            Err(error) => {
                tracing::warn!(%error, %consumer, "queue read failed");
                tokio::time::sleep(Duration::from_millis(settings.error_backoff_ms)).await;
            }
        }
    }
}

/// Applies a batch of deliveries concurrently (so they share group commits) and acks the
/// ones that are done.
#[tracing::instrument(skip_all, fields(count = deliveries.len()))]
async fn process(ledger: &Ledger, queue: &dyn TransactionQueue, deliveries: Vec<Delivery>) {
    let (actions, deliveries): (Vec<Delivery>, Vec<Delivery>) = deliveries
        .into_iter()
        .partition(|d| d.transaction_id.starts_with(ACTION_ENTRY_PREFIX));
    let mut acked = Vec::new();
    for delivery in actions {
        let hold_id = &delivery.transaction_id[ACTION_ENTRY_PREFIX.len()..];
        let span = tracing::info_span!("queue.hold_action", hold_id);
        crate::telemetry::adopt(&span, delivery.traceparent.as_deref());
        match ledger
            .run_pending_hold_action(hold_id)
            .instrument(span)
            .await
        {
            Ok(()) => acked.push(delivery),
            Err(error) => {
                tracing::warn!(%error, hold_id, "hold action failed; will retry");
                let message = format!("queued action on hold {hold_id} failed (retried): {error}");
                ledger
                    .store()
                    .report_system_error("queue.hold_action", &message)
                    .await;
            }
        }
    }
    if let Err(error) = queue.ack(&acked).await {
        tracing::warn!(%error, "ack failed; entries will be delivered again");
    }
    if deliveries.is_empty() {
        return;
    }
    let ids = deliveries
        .iter()
        .map(|d| d.transaction_id.clone())
        .collect();
    let records = match ledger.queued_records(ids).await {
        Ok(records) => records,
        Err(error) => {
            tracing::warn!(%error, "loading queued transactions failed");
            return;
        }
    };
    let by_id: HashMap<&str, _> = records
        .iter()
        .map(|r| (r.transaction_id.as_str(), r))
        .collect();
    let applies = deliveries.iter().map(|delivery| {
        // One queued transfer is one trace: this span continues the request's context.
        let span = tracing::info_span!("queue.apply", transaction_id = %delivery.transaction_id);
        crate::telemetry::adopt(&span, delivery.traceparent.as_deref());
        async {
            let Some(record) = by_id.get(delivery.transaction_id.as_str()) else {
                tracing::warn!(transaction_id = %delivery.transaction_id, "queued transaction not found");
                return true;
            };
            if !matches!(record.status, TransactionStatus::Queued | TransactionStatus::Scheduled) {
                return true;
            }
            match ledger.apply_queued(record).await {
                Ok(written) => {
                    if written.is_some() {
                        ledger.metrics().observe_queue_applied(record);
                    }
                    true
                }
                Err(error) => {
                    tracing::warn!(%error, transaction_id = %record.transaction_id, "apply failed; will retry");
                    let message = format!(
                        "queued transaction {} not recorded (retried): {error}",
                        record.transaction_id
                    );
                    ledger
                        .store()
                        .report_system_error("queue.apply", &message)
                        .await;
                    ledger.metrics().observe_queue_retry();
                    false
                }
            }
        }
        .instrument(span)
    });
    let done = futures_util::future::join_all(applies).await;
    let acked: Vec<Delivery> = deliveries
        .into_iter()
        .zip(done)
        .filter_map(|(delivery, done)| done.then_some(delivery))
        .collect();
    if let Err(error) = queue.ack(&acked).await {
        tracing::warn!(%error, "ack failed; entries will be delivered again");
    }
}
