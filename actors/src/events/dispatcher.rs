//! The dispatcher: a supervised actor that claims due events of its sink in bounded
//! batches, hands them to its [`Sink`] and settles them by their outcomes (delivered;
//! failed, to be retried after a backoff or dead; deferred; released). Several dispatchers,
//! in several processes, share one outbox: a claim leases its events, and claims are
//! serialized on PostgreSQL.

use super::outbox::{now_ms, Settled, SinkSelector};
use super::Sink;
use crate::metrics::Metrics;
use crate::store::Store;
use actix::prelude::*;
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
    /// Delivered events are kept this long, then pruned; 0: deleted when delivered.
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

pub struct Dispatcher {
    store: Store,
    selector: SinkSelector,
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
    pub fn new(
        store: Store,
        selector: SinkSelector,
        sink: Rc<dyn Sink>,
        settings: DispatcherSettings,
    ) -> Self {
        let metrics = store.metrics().clone();
        metrics.register_outbox_sink(crate::metrics::sink_label(selector.label()));
        Self {
            metrics,
            store,
            selector,
            sink,
            settings,
            running: false,
            last_prune_ms: 0,
        }
    }

    /// Starts a supervised dispatcher of the `selector`'s rows on `arbiter`; `sink` is made
    /// there (an HTTP client belongs to its thread).
    pub fn start(
        arbiter: &ArbiterHandle,
        store: Store,
        selector: SinkSelector,
        sink: impl FnOnce() -> Rc<dyn Sink> + Send + 'static,
        settings: DispatcherSettings,
    ) -> Addr<Self> {
        Supervisor::start_in_arbiter(arbiter, move |_| {
            Self::new(store, selector, sink(), settings)
        })
    }

    fn run(&mut self, ctx: &mut Context<Self>) {
        if self.running {
            return;
        }
        self.running = true;
        let (store, sink, settings, selector) = (
            self.store.clone(),
            self.sink.clone(),
            self.settings.clone(),
            self.selector.clone(),
        );
        let prune_due = now_ms().saturating_sub(self.last_prune_ms)
            >= i64::try_from(settings.prune_interval_ms).unwrap_or(i64::MAX);
        if prune_due {
            self.last_prune_ms = now_ms();
        }
        let metrics = self.metrics.clone();
        let label = crate::metrics::sink_label(self.selector.label()).to_owned();
        let work = async move {
            if prune_due && settings.retention_ms > 0 {
                let retention = i64::try_from(settings.retention_ms).unwrap_or(i64::MAX);
                let before = now_ms().saturating_sub(retention);
                match store.prune_events(before, settings.prune_batch).await {
                    Ok(0) => {}
                    Ok(pruned) => tracing::debug!(pruned, "delivered events pruned"),
                    Err(error) => tracing::warn!(%error, "pruning delivered events failed"),
                }
            }
            let events = store
                .claim_events(&selector, settings.batch_size, settings.lease_ms)
                .await?;
            if events.is_empty() {
                return Ok(0);
            }
            let outcomes = sink.deliver(&events).await;
            let settled = Settled::from_outcomes_each(
                &events,
                outcomes,
                |event| sink.attempts_max(event).unwrap_or(settings.attempts_max),
                now_ms(),
                |n| backoff_ms(n, settings.backoff_base_ms, settings.backoff_cap_ms),
            );
            metrics.observe_deliveries(&label, &settled);
            store
                .settle_events(settled, settings.retention_ms > 0)
                .await?;
            Ok::<usize, crate::LedgerError>(events.len())
        };
        ctx.wait(work.into_actor(self).map(|result, actor, ctx| {
            actor.running = false;
            let pause = match result {
                Ok(claimed) if claimed >= actor.settings.batch_size => 0,
                Ok(_) => actor.settings.poll_interval_ms,
                Err(error) => {
                    tracing::warn!(%error, sink = actor.selector.label(), "event dispatch failed");
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
    use std::collections::HashSet;

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap_without_overflow() {
        assert_eq!(backoff_ms(1, 100, 10_000), 100);
        assert_eq!(backoff_ms(2, 100, 10_000), 200);
        assert_eq!(backoff_ms(5, 100, 10_000), 1_600);
        assert_eq!(backoff_ms(8, 100, 10_000), 10_000);
        assert_eq!(backoff_ms(u32::MAX, u64::MAX / 2, u64::MAX), u64::MAX);
        assert_eq!(backoff_ms(0, 100, 10_000), 100);
    }

    use crate::events::delivery::{Ordered, Sender};
    use crate::events::{Event, Outcome};

    struct Failing(HashSet<i64>);

    impl Sender for Failing {
        fn send<'a>(&'a self, event: &'a Event) -> LocalBoxFuture<'a, Result<(), SinkError>> {
            let failed = self.0.contains(&event.id);
            Box::pin(async move {
                if failed {
                    Err(SinkError("HTTP 500".into()))
                } else {
                    Ok(())
                }
            })
        }
    }

    fn event(id: i64, a: &str, attempts: u32) -> Event {
        Event {
            id,
            sink: "webhook".into(),
            name: "transaction.applied".into(),
            entity_id: format!("txn_{id}"),
            key_a: a.into(),
            key_b: None,
            payload: "{}".into(),
            attempts,
        }
    }

    #[actix::test]
    async fn failures_back_off_and_the_last_attempt_makes_an_event_dead() {
        let sink = Ordered::new(Failing(HashSet::from([2, 7])), 4);
        let events = [event(2, "a", 0), event(3, "a", 0), event(7, "b", 2)];
        let outcomes = sink.deliver(&events).await;
        assert_eq!(outcomes[1], Outcome::Skipped);
        let settled =
            Settled::from_outcomes(&events, outcomes, 3, 1_000, |n| backoff_ms(n, 100, 1_000));
        assert_eq!(
            settled.failed,
            [
                (2, 1, Some(1_100), "HTTP 500".to_owned()),
                (7, 3, None, "HTTP 500".to_owned())
            ]
        );
        assert_eq!(settled.released, [3]);
    }

    #[test]
    fn each_event_can_have_its_own_attempts() {
        let events = [event(1, "a", 0), event(2, "b", 0)];
        let failed = || Outcome::Failed(SinkError("HTTP 500".into()));
        // Event 1's sink allows one attempt (a hook with retry_count 0), event 2 the default.
        let settled = Settled::from_outcomes_each(
            &events,
            vec![failed(), failed()],
            |e| if e.id == 1 { 1 } else { 10 },
            0,
            |_| 5,
        );
        assert_eq!(
            settled.failed,
            [
                (1, 1, None, "HTTP 500".to_owned()),
                (2, 1, Some(5), "HTTP 500".to_owned())
            ]
        );
    }

    #[test]
    fn a_deferred_event_keeps_its_attempts() {
        let events = [event(1, "a", 4)];
        let outcomes = vec![Outcome::Deferred {
            until_ms: 5_000,
            why: "circuit open".into(),
        }];
        let settled = Settled::from_outcomes(&events, outcomes, 10, 0, |_| 0);
        assert_eq!(settled.deferred, [(1, 5_000, "circuit open".to_owned())]);
        assert!(settled.failed.is_empty());
    }
}
