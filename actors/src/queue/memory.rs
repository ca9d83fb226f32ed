//! The in-process queue of the embedded default. Delivered entries are kept until acked, so
//! a failed apply is delivered again; after a restart the recovery sweep refills it from the
//! QUEUED rows.

use super::{Delivery, TransactionQueue};
use crate::LedgerError;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

struct State {
    /// Per shard: (entry id, transaction id, traceparent).
    shards: Vec<VecDeque<(u64, String, Option<String>)>>,
    /// entry id → (delivery, delivered at)
    unacked: HashMap<u64, (Delivery, Instant)>,
    next_entry: u64,
}

pub struct MemoryQueue {
    state: Mutex<State>,
    arrived: Notify,
    capacity: usize,
}

impl MemoryQueue {
    pub fn new(shard_count: u32, capacity: usize) -> Self {
        assert!(shard_count > 0 && capacity > 0);
        Self {
            state: Mutex::new(State {
                shards: (0..shard_count).map(|_| VecDeque::new()).collect(),
                unacked: HashMap::new(),
                next_entry: 0,
            }),
            arrived: Notify::new(),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn take(&self, shards: &[u32], count_max: usize) -> Vec<Delivery> {
        let mut state = self.lock();
        let mut taken = Vec::new();
        'outer: loop {
            let mut any = false;
            for &shard in shards {
                if taken.len() >= count_max {
                    break 'outer;
                }
                if let Some((entry, id, traceparent)) = state.shards[shard as usize].pop_front() {
                    any = true;
                    let delivery = Delivery {
                        shard,
                        entry_id: entry.to_string(),
                        transaction_id: id,
                        traceparent,
                    };
                    state
                        .unacked
                        .insert(entry, (delivery.clone(), Instant::now()));
                    taken.push(delivery);
                }
            }
            if !any {
                break;
            }
        }
        taken
    }
}

impl TransactionQueue for MemoryQueue {
    fn shard_count(&self) -> u32 {
        self.lock().shards.len() as u32
    }

    fn enqueue<'a>(
        &'a self,
        shard: u32,
        transaction_id: &'a str,
    ) -> BoxFuture<'a, Result<(), LedgerError>> {
        let traceparent = crate::telemetry::traceparent_for(transaction_id);
        let result = {
            let mut state = self.lock();
            let waiting: usize = state.shards.iter().map(VecDeque::len).sum();
            if waiting + state.unacked.len() >= self.capacity {
                Err(LedgerError::Overloaded)
            } else {
                let entry = state.next_entry;
                state.next_entry += 1;
                let shard = shard as usize % state.shards.len();
                state.shards[shard].push_back((entry, transaction_id.to_owned(), traceparent));
                Ok(())
            }
        };
        if result.is_ok() {
            self.arrived.notify_waiters();
        }
        futures_util::future::ready(result).boxed()
    }

    fn receive<'a>(
        &'a self,
        _consumer: &'a str,
        shards: &'a [u32],
        count_max: usize,
        wait_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, LedgerError>> {
        async move {
            let deadline = Instant::now() + Duration::from_millis(wait_ms);
            loop {
                let notified = self.arrived.notified();
                let taken = self.take(shards, count_max);
                if !taken.is_empty() || Instant::now() >= deadline {
                    return Ok(taken);
                }
                let _ = tokio::time::timeout_at(deadline.into(), notified).await;
            }
        }
        .boxed()
    }

    fn ack<'a>(&'a self, deliveries: &'a [Delivery]) -> BoxFuture<'a, Result<(), LedgerError>> {
        let mut state = self.lock();
        for delivery in deliveries {
            if let Ok(entry) = delivery.entry_id.parse::<u64>() {
                state.unacked.remove(&entry);
            }
        }
        futures_util::future::ready(Ok(())).boxed()
    }

    fn claim_stale<'a>(
        &'a self,
        _consumer: &'a str,
        shards: &'a [u32],
        idle_ms: u64,
        count_max: usize,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, LedgerError>> {
        let mut state = self.lock();
        let idle = Duration::from_millis(idle_ms);
        let mut claimed = Vec::new();
        for (delivery, delivered_at) in state.unacked.values_mut() {
            if claimed.len() >= count_max {
                break;
            }
            if shards.contains(&delivery.shard) && delivered_at.elapsed() >= idle {
                *delivered_at = Instant::now();
                claimed.push(delivery.clone());
            }
        }
        futures_util::future::ready(Ok(claimed)).boxed()
    }

    fn depth(&self) -> BoxFuture<'_, Result<u64, LedgerError>> {
        let state = self.lock();
        let waiting: usize = state.shards.iter().map(VecDeque::len).sum();
        futures_util::future::ready(Ok((waiting + state.unacked.len()) as u64)).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_stay_until_acked_and_can_be_claimed() {
        let queue = MemoryQueue::new(2, 10);
        queue.enqueue(0, "txn_a").await.unwrap();
        queue.enqueue(1, "txn_b").await.unwrap();
        let got = queue.receive("c", &[0, 1], 10, 0).await.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(queue.depth().await.unwrap(), 2);
        let claimed = queue.claim_stale("c", &[0], 0, 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        queue.ack(&got).await.unwrap();
        assert_eq!(queue.depth().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_refuses() {
        let queue = MemoryQueue::new(1, 1);
        queue.enqueue(0, "a").await.unwrap();
        assert_eq!(queue.enqueue(0, "b").await, Err(LedgerError::Overloaded));
    }
}
