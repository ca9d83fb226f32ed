//! Redis Streams queue: one stream per shard (`<prefix>coffer:transactions:<n>`), one
//! consumer group, `XREADGROUP` to receive, `XACK` + `XDEL` after the child row is committed,
//! `XAUTOCLAIM` to take over a dead consumer's entries.

use super::{Delivery, TransactionQueue};
use crate::LedgerError;
use bb8_redis::RedisConnectionManager;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use redis::streams::{StreamAutoClaimReply, StreamReadReply};
use std::time::Duration;

const GROUP: &str = "coffer-workers";
const FIELD: &str = "transaction_id";
/// Optional second field: the W3C trace context of the request (see `crate::telemetry`).
const TRACE_FIELD: &str = "traceparent";
/// Longest `BLOCK` of one read: the connection's response timeout is 500 ms.
const BLOCK_MS_MAX: u64 = 300;

#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    /// Prepended to every key (tests give each run its own).
    pub key_prefix: String,
    pub shard_count: u32,
    pub pool_size_max: u32,
    pub connect_timeout_ms: u64,
}

pub struct RedisQueue {
    pool: bb8::Pool<RedisConnectionManager>,
    settings: RedisSettings,
}

fn queue_error(error: impl std::fmt::Display) -> LedgerError {
    LedgerError::Queue(error.to_string())
}

impl RedisQueue {
    /// Connects and makes sure every shard's stream and consumer group exist.
    pub async fn connect(settings: RedisSettings) -> Result<Self, LedgerError> {
        assert!(settings.shard_count > 0);
        // redis-rs leaves Nagle on by default: a batch's pipelined XADDs can exceed the send
        // buffer and then wait ~40 ms on the server's delayed ACK.
        let info = redis::IntoConnectionInfo::into_connection_info(settings.url.as_str())
            .map_err(queue_error)?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let manager = RedisConnectionManager::new(info).map_err(queue_error)?;
        let pool = bb8::Pool::builder()
            .max_size(settings.pool_size_max)
            .connection_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .build(manager)
            .await
            .map_err(queue_error)?;
        let queue = Self { pool, settings };
        let mut conn = queue.pool.get().await.map_err(queue_error)?;
        for shard in 0..queue.settings.shard_count {
            let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(queue.stream(shard))
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut *conn)
                .await;
            match created {
                Err(error) if !error.to_string().contains("BUSYGROUP") => {
                    return Err(queue_error(error))
                }
                _ => {}
            }
        }
        drop(conn);
        Ok(queue)
    }

    fn stream(&self, shard: u32) -> String {
        format!("{}coffer:transactions:{shard}", self.settings.key_prefix)
    }

    fn shard_of_stream(&self, key: &str) -> Option<u32> {
        key.rsplit(':').next()?.parse().ok()
    }

    fn deliveries(&self, key: &str, ids: Vec<redis::streams::StreamId>) -> Vec<Delivery> {
        let Some(shard) = self.shard_of_stream(key) else {
            return Vec::new();
        };
        ids.into_iter()
            .filter_map(|entry| {
                let transaction_id = entry.get::<String>(FIELD)?;
                let traceparent = entry.get::<String>(TRACE_FIELD);
                Some(Delivery {
                    shard,
                    entry_id: entry.id,
                    transaction_id,
                    traceparent,
                })
            })
            .collect()
    }
}

impl TransactionQueue for RedisQueue {
    fn shard_count(&self) -> u32 {
        self.settings.shard_count
    }

    fn enqueue<'a>(
        &'a self,
        shard: u32,
        transaction_id: &'a str,
    ) -> BoxFuture<'a, Result<(), LedgerError>> {
        async move {
            let mut conn = self.pool.get().await.map_err(queue_error)?;
            let mut command = redis::cmd("XADD");
            command
                .arg(self.stream(shard))
                .arg("*")
                .arg(FIELD)
                .arg(transaction_id);
            if let Some(traceparent) = crate::telemetry::traceparent_for(transaction_id) {
                command.arg(TRACE_FIELD).arg(traceparent);
            }
            let _: String = command.query_async(&mut *conn).await.map_err(queue_error)?;
            Ok(())
        }
        .boxed()
    }

    fn enqueue_many<'a>(
        &'a self,
        entries: &'a [(u32, String)],
    ) -> BoxFuture<'a, Result<(), LedgerError>> {
        async move {
            if entries.is_empty() {
                return Ok(());
            }
            let mut conn = self.pool.get().await.map_err(queue_error)?;
            let mut pipe = redis::pipe();
            for (shard, id) in entries {
                let command = pipe.cmd("XADD");
                command.arg(self.stream(*shard)).arg("*").arg(FIELD).arg(id);
                if let Some(traceparent) = crate::telemetry::traceparent_for(id) {
                    command.arg(TRACE_FIELD).arg(traceparent);
                }
                command.ignore();
            }
            let _: () = pipe.query_async(&mut *conn).await.map_err(queue_error)?;
            Ok(())
        }
        .boxed()
    }

    fn receive<'a>(
        &'a self,
        consumer: &'a str,
        shards: &'a [u32],
        count_max: usize,
        wait_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, LedgerError>> {
        async move {
            if shards.is_empty() {
                return Ok(Vec::new());
            }
            let mut conn = self.pool.get().await.map_err(queue_error)?;
            let mut command = redis::cmd("XREADGROUP");
            command
                .arg("GROUP")
                .arg(GROUP)
                .arg(consumer)
                .arg("COUNT")
                .arg(count_max);
            command
                .arg("BLOCK")
                .arg(wait_ms.min(BLOCK_MS_MAX))
                .arg("STREAMS");
            for &shard in shards {
                command.arg(self.stream(shard));
            }
            for _ in shards {
                command.arg(">");
            }
            let reply: Option<StreamReadReply> =
                command.query_async(&mut *conn).await.map_err(queue_error)?;
            let Some(reply) = reply else {
                return Ok(Vec::new());
            };
            Ok(reply
                .keys
                .into_iter()
                .flat_map(|key| self.deliveries(&key.key, key.ids))
                .collect())
        }
        .boxed()
    }

    fn ack<'a>(&'a self, deliveries: &'a [Delivery]) -> BoxFuture<'a, Result<(), LedgerError>> {
        async move {
            if deliveries.is_empty() {
                return Ok(());
            }
            let mut conn = self.pool.get().await.map_err(queue_error)?;
            let mut pipe = redis::pipe();
            for delivery in deliveries {
                let stream = self.stream(delivery.shard);
                pipe.cmd("XACK")
                    .arg(&stream)
                    .arg(GROUP)
                    .arg(&delivery.entry_id)
                    .ignore();
                pipe.cmd("XDEL")
                    .arg(&stream)
                    .arg(&delivery.entry_id)
                    .ignore();
            }
            let _: () = pipe.query_async(&mut *conn).await.map_err(queue_error)?;
            Ok(())
        }
        .boxed()
    }

    fn claim_stale<'a>(
        &'a self,
        consumer: &'a str,
        shards: &'a [u32],
        idle_ms: u64,
        count_max: usize,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, LedgerError>> {
        async move {
            let mut conn = self.pool.get().await.map_err(queue_error)?;
            let mut claimed = Vec::new();
            for &shard in shards {
                let stream = self.stream(shard);
                let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                    .arg(&stream)
                    .arg(GROUP)
                    .arg(consumer)
                    .arg(idle_ms)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(count_max)
                    .query_async(&mut *conn)
                    .await
                    .map_err(queue_error)?;
                claimed.extend(self.deliveries(&stream, reply.claimed));
            }
            Ok(claimed)
        }
        .boxed()
    }

    fn depth(&self) -> BoxFuture<'_, Result<u64, LedgerError>> {
        async move {
            let mut conn = self.pool.get().await.map_err(queue_error)?;
            let mut pipe = redis::pipe();
            for shard in 0..self.settings.shard_count {
                pipe.cmd("XLEN").arg(self.stream(shard));
            }
            let lengths: Vec<u64> = pipe.query_async(&mut *conn).await.map_err(queue_error)?;
            Ok(lengths.iter().sum())
        }
        .boxed()
    }
}
