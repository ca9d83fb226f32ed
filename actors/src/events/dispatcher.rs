//! The dispatcher: a supervised actor that claims due events in bounded batches, delivers
//! them to its [`Sink`] in id order and settles them (delivered; failed, to be retried after
//! a backoff or dead; released). Several dispatchers, in several processes, share one
//! outbox: a claim leases its events, and claims are serialized on PostgreSQL.

use super::outbox::{now_ms, Settled};
use super::{Event, Sink};
use crate::metrics::Metrics;
use crate::store::Store;
use actix::prelude::*;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Every limit of a dispatcher, explicit.
#[derive(Debug, Clone)]
pub struct DispatcherSettings {
    /// Events claimed at once.
    pub batch_size: usize,
    /// Pause between claims when the last one found less than a full batch.
    pub poll_interval_ms: u64,
    /// The first retry waits this long; each further one twice as long as the one before…
    pub backoff_base_ms: u64,
    /// … but never longer than this.
    pub backoff_cap_ms: u64,
    /// Deliveries of an event before it is dead (kept with its last error, not retried).
    pub attempts_max: u32,
    /// How long a claim is leased: a dispatcher that dies before settling its batch leaves
    /// the events to another one after this (so delivery is at least once).
    pub lease_ms: u64,
    /// Delivered events are kept this long, then pruned.
    pub retention_ms: u64,
    /// How often pruning runs, and how much it deletes at a time.
    pub prune_interval_ms: u64,
    pub prune_batch: usize,
    /// Pause after a database error.
    pub error_backoff_ms: u64,
}

impl Default for DispatcherSettings {
    fn default() -> Self {
        Self {
            batch_size: 256,
            poll_interval_ms: 200,
            backoff_base_ms: 1_000,
            backoff_cap_ms: 300_000,
            attempts_max: 10,
            lease_ms: 60_000,
            retention_ms: 7 * 24 * 3_600_000,
            prune_interval_ms: 60_000,
            prune_batch: 10_000,
            error_backoff_ms: 1_000,
        }
    }
}

/// The wait before retry number `attempt` (1 = the first retry): `base · 2^(attempt-1)`,
/// at most `cap`, without overflow.
pub fn backoff_ms(attempt: u32, base_ms: u64, cap_ms: u64) -> u64 {
    let doublings = attempt.saturating_sub(1).min(63);
    base_ms.saturating_mul(1u64 << doublings).min(cap_ms)
}

/// Delivers a claimed batch in id order. An event is not attempted once an earlier event of
/// the batch sharing a key failed (it is released, and the failed one, now waiting for its
/// retry, holds back every later event of its keys).
pub async fn deliver_batch(
    sink: &dyn Sink,
    events: &[Event],
    settings: &DispatcherSettings,
    at_ms: impl Fn() -> i64,
) -> Settled {
    let mut settled = Settled::default();
    let mut blocked: HashSet<&str> = HashSet::new();
    for event in events {
        if event.keys().any(|key| blocked.contains(key)) {
            settled.released.push(event.id);
            continue;
        }
        match sink.deliver(event).await {
            Ok(()) => settled.delivered.push(event.id),
            Err(error) => {
                let attempts = event.attempts.saturating_add(1);
                let next = (attempts < settings.attempts_max).then(|| {
                    let wait =
                        backoff_ms(attempts, settings.backoff_base_ms, settings.backoff_cap_ms);
                    at_ms().saturating_add(i64::try_from(wait).unwrap_or(i64::MAX))
                });
                if next.is_none() {
                    tracing::warn!(id = event.id, event = %event.name, %error, "event dead");
                } else {
                    tracing::debug!(id = event.id, event = %event.name, %error, "delivery failed");
                }
                settled.failed.push((event.id, attempts, next, error.0));
                blocked.extend(event.keys());
            }
        }
    }
    settled
}

pub struct Dispatcher {
    store: Store,
    sink: Rc<dyn Sink>,
    metrics: Arc<Metrics>,
    settings: DispatcherSettings,
    running: bool,
    last_prune_ms: i64,
}

/// Claim and deliver now.
#[derive(Message)]
#[rtype(result = "()")]
struct Tick;

impl Dispatcher {
    pub fn new(store: Store, sink: Rc<dyn Sink>, settings: DispatcherSettings) -> Self {
        Self {
            metrics: store.metrics().clone(),
            store,
            sink,
            settings,
            running: false,
            last_prune_ms: 0,
        }
    }

    /// Starts a supervised dispatcher on `arbiter`; `sink` is made there (an HTTP client
    /// belongs to its thread).
    pub fn start(
        arbiter: &ArbiterHandle,
        store: Store,
        sink: impl FnOnce() -> Rc<dyn Sink> + Send + 'static,
        settings: DispatcherSettings,
    ) -> Addr<Self> {
        Supervisor::start_in_arbiter(arbiter, move |_| Self::new(store, sink(), settings))
    }

    fn run(&mut self, ctx: &mut Context<Self>) {
        if self.running {
            return;
        }
        self.running = true;
        let (store, sink, settings) =
            (self.store.clone(), self.sink.clone(), self.settings.clone());
        let prune_due = now_ms().saturating_sub(self.last_prune_ms)
            >= i64::try_from(settings.prune_interval_ms).unwrap_or(i64::MAX);
        if prune_due {
            self.last_prune_ms = now_ms();
        }
        let metrics = self.metrics.clone();
        let work = async move {
            if prune_due {
                let retention = i64::try_from(settings.retention_ms).unwrap_or(i64::MAX);
                let before = now_ms().saturating_sub(retention);
                match store.prune_events(before, settings.prune_batch).await {
                    Ok(0) => {}
                    Ok(pruned) => tracing::debug!(pruned, "delivered events pruned"),
                    Err(error) => tracing::warn!(%error, "pruning delivered events failed"),
                }
            }
            let events = store
                .claim_events(settings.batch_size, settings.lease_ms)
                .await?;
            let settled = deliver_batch(sink.as_ref(), &events, &settings, now_ms).await;
            metrics.observe_deliveries(&settled);
            store.settle_events(settled).await?;
            Ok::<usize, crate::LedgerError>(events.len())
        };
        ctx.wait(work.into_actor(self).map(|result, actor, ctx| {
            actor.running = false;
            let pause = match result {
                Ok(claimed) if claimed >= actor.settings.batch_size => 0,
                Ok(_) => actor.settings.poll_interval_ms,
                Err(error) => {
                    tracing::warn!(%error, "event dispatch failed");
                    actor.settings.error_backoff_ms
                }
            };
            ctx.run_later(Duration::from_millis(pause), |_, ctx| ctx.notify(Tick));
        }));
    }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.notify(Tick);
    }
}

impl Supervised for Dispatcher {
    fn restarting(&mut self, _: &mut Context<Self>) {
        // The running batch's future was dropped with the context; its lease expires.
        self.running = false;
    }
}

impl Handler<Tick> for Dispatcher {
    type Result = ();

    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        self.run(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::SinkError;
    use futures_util::future::LocalBoxFuture;
    use std::cell::RefCell;

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap_without_overflow() {
        assert_eq!(backoff_ms(1, 100, 10_000), 100);
        assert_eq!(backoff_ms(2, 100, 10_000), 200);
        assert_eq!(backoff_ms(5, 100, 10_000), 1_600);
        assert_eq!(backoff_ms(8, 100, 10_000), 10_000);
        assert_eq!(backoff_ms(u32::MAX, u64::MAX / 2, u64::MAX), u64::MAX);
        assert_eq!(backoff_ms(0, 100, 10_000), 100);
    }

    /// Fails the events whose ids it was told to, records the others.
    struct Recording {
        failing: HashSet<i64>,
        seen: RefCell<Vec<i64>>,
    }

    impl Sink for Recording {
        fn deliver<'a>(&'a self, event: &'a Event) -> LocalBoxFuture<'a, Result<(), SinkError>> {
            self.seen.borrow_mut().push(event.id);
            let failed = self.failing.contains(&event.id);
            Box::pin(async move {
                if failed {
                    Err(SinkError("HTTP 500".into()))
                } else {
                    Ok(())
                }
            })
        }
    }

    fn event(id: i64, a: &str, b: Option<&str>, attempts: u32) -> Event {
        Event {
            id,
            name: "transaction.applied".into(),
            entity_id: format!("txn_{id}"),
            key_a: a.into(),
            key_b: b.map(str::to_owned),
            payload: "{}".into(),
            attempts,
        }
    }

    #[actix::test]
    async fn a_failure_holds_back_the_later_events_of_its_keys_only() {
        let sink = Recording {
            failing: HashSet::from([2]),
            seen: RefCell::default(),
        };
        let settings = DispatcherSettings {
            backoff_base_ms: 100,
            backoff_cap_ms: 1_000,
            attempts_max: 3,
            ..DispatcherSettings::default()
        };
        let events = [
            event(1, "a", Some("b"), 0),
            event(2, "b", Some("c"), 0),
            event(3, "c", None, 0),
            event(4, "d", Some("a"), 0),
            event(5, "e", Some("b"), 0),
        ];
        let settled = deliver_batch(&sink, &events, &settings, || 1_000).await;
        assert_eq!(settled.delivered, [1, 4]);
        assert_eq!(settled.failed, [(2, 1, Some(1_100), "HTTP 500".to_owned())]);
        assert_eq!(settled.released, [3, 5]);
        assert_eq!(*sink.seen.borrow(), [1, 2, 4]);
    }

    #[actix::test]
    async fn the_last_attempt_makes_an_event_dead() {
        let sink = Recording {
            failing: HashSet::from([7]),
            seen: RefCell::default(),
        };
        let settings = DispatcherSettings {
            attempts_max: 3,
            ..DispatcherSettings::default()
        };
        let settled = deliver_batch(&sink, &[event(7, "a", None, 2)], &settings, || 0).await;
        assert_eq!(settled.failed, [(7, 3, None, "HTTP 500".to_owned())]);
    }
}
