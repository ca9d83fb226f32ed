//! The transaction queue: ids of QUEUED transactions, sharded by source balance.
//!
//! Two implementations of [`TransactionQueue`]: Redis Streams with consumer groups
//! ([`redis::RedisQueue`], at-least-once, acked after the child row is committed, a dead
//! consumer's entries claimed by others) and an in-process queue for the embedded default
//! ([`memory::MemoryQueue`]). Either way the QUEUED row in the database is the truth: the
//! [`sweep`] re-enqueues rows that have no child after a while, so a lost entry only delays.
//! [`handoff`] passes the QUEUED rows a process committed to its own workers, so they need
//! not read them back.

pub mod handoff;
pub mod memory;
pub mod redis;
pub mod sweep;
pub mod worker;

use crate::LedgerError;
use futures_util::future::BoxFuture;

/// One queued transaction handed to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub shard: u32,
    /// The queue's own id of the entry (a stream id on Redis).
    pub entry_id: String,
    pub transaction_id: String,
    /// W3C trace context of the request that enqueued it, when traces are exported.
    pub traceparent: Option<String>,
}

pub trait TransactionQueue: Send + Sync {
    fn shard_count(&self) -> u32;

    fn enqueue<'a>(
        &'a self,
        shard: u32,
        transaction_id: &'a str,
    ) -> BoxFuture<'a, Result<(), LedgerError>>;

    /// Enqueues many entries in one round trip where the queue can (one Redis pipeline).
    fn enqueue_many<'a>(
        &'a self,
        entries: &'a [(u32, String)],
    ) -> BoxFuture<'a, Result<(), LedgerError>> {
        Box::pin(async move {
            for (shard, id) in entries {
                self.enqueue(*shard, id).await?;
            }
            Ok(())
        })
    }

    /// Up to `count_max` entries of these shards, waiting at most `wait_ms` for the first.
    fn receive<'a>(
        &'a self,
        consumer: &'a str,
        shards: &'a [u32],
        count_max: usize,
        wait_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, LedgerError>>;

    /// Marks entries done: they will not be delivered again.
    fn ack<'a>(&'a self, deliveries: &'a [Delivery]) -> BoxFuture<'a, Result<(), LedgerError>>;

    /// Takes over entries delivered to some consumer more than `idle_ms` ago and never acked
    /// (its process died).
    fn claim_stale<'a>(
        &'a self,
        consumer: &'a str,
        shards: &'a [u32],
        idle_ms: u64,
        count_max: usize,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, LedgerError>>;

    /// Entries waiting (not yet delivered or not yet acked), over all shards.
    fn depth(&self) -> BoxFuture<'_, Result<u64, LedgerError>>;
}
