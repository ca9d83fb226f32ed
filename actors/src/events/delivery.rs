//! [`Ordered`]: a [`Sink`] made of a per-event [`Sender`] (an HTTP POST per event, as the
//! webhook and the hooks send them). It delivers a batch in rounds: each round sends, at most
//! `concurrency` at a time, every remaining event none of whose keys belongs to an earlier
//! remaining event, so events sharing a key go one after the other in id order while
//! unrelated ones go side by side. Once an event fails, the later events of its keys are
//! [`Outcome::Skipped`].
//!
//! A circuit breaker per destination ([`Sender::destination`]: the webhook is one, each hook
//! another): after [`BreakerSettings::failures_max`] consecutive failures the destination's
//! circuit opens for a cool-down, and its events are [`Outcome::Deferred`] until then (no
//! HTTP call, no attempt counted), so a receiver that is down does not burn every event's
//! attempts and end them dead. When the cool-down is over, one event is sent as a probe
//! (half-open): success closes the circuit; failure opens it again for twice as long, up to
//! a cap. The state lives in this process (each worker process learns on its own).

use super::{Event, Outcome, Sink, SinkError};
use futures_util::future::LocalBoxFuture;
use futures_util::stream::{self, StreamExt};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

/// Sends one event (its own timeout included).
pub trait Sender {
    fn send<'a>(&'a self, event: &'a Event) -> LocalBoxFuture<'a, Result<(), SinkError>>;

    /// Where `event` goes, for the circuit breaker: events of one destination share a
    /// circuit. The default, the event's sink, fits a sink per receiver (`webhook`,
    /// `hook:<id>`).
    fn destination<'a>(&'a self, event: &'a Event) -> &'a str {
        &event.sink
    }

    /// See [`Sink::attempts_max`].
    fn attempts_max(&self, _event: &Event) -> Option<u32> {
        None
    }
}

/// The circuit breaker's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failures of a destination that open its circuit; 0: never opens.
    pub failures_max: u32,
    /// The first cool-down; each failed probe doubles it …
    pub cooldown_ms: u64,
    /// … up to this.
    pub cooldown_cap_ms: u64,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failures_max: 5,
            cooldown_ms: 5_000,
            cooldown_cap_ms: 300_000,
        }
    }
}

/// One destination's circuit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Circuit {
    /// Failures since the last success.
    failures: u32,
    /// Open until this (Unix ms); half-open once it has passed.
    open_until_ms: Option<i64>,
    /// Times opened since the last success: the cool-down doubles with each.
    openings: u32,
}

/// What the breaker says about sending an event now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    Send,
    /// Half-open: this event is the one probe.
    Probe,
    /// Open until then: defer.
    Open(i64),
}

/// Destinations with a circuit kept: the oldest state is dropped beyond this (a hook
/// deleted long ago must not be kept for ever).
const CIRCUITS_MAX: usize = 10_000;

/// The circuits of one [`Ordered`] sink, by destination.
struct Breaker {
    settings: BreakerSettings,
    circuits: RefCell<HashMap<String, Circuit>>,
    clock: Box<dyn Fn() -> i64>,
}

impl Breaker {
    fn gate(&self, destination: &str) -> Gate {
        let circuits = self.circuits.borrow();
        match circuits.get(destination).and_then(|c| c.open_until_ms) {
            None => Gate::Send,
            Some(until) if (self.clock)() < until => Gate::Open(until),
            Some(_) => Gate::Probe,
        }
    }

    /// Records a delivery's result; returns the time the circuit opened until, if it did.
    fn record(&self, destination: &str, ok: bool) -> Option<i64> {
        let mut circuits = self.circuits.borrow_mut();
        if ok {
            circuits.remove(destination);
            return None;
        }
        if self.settings.failures_max == 0 {
            return None;
        }
        if circuits.len() >= CIRCUITS_MAX && !circuits.contains_key(destination) {
            // Closed circuits with a few failures are the cheapest to forget.
            if let Some(key) = circuits
                .iter()
                .find(|(_, c)| c.open_until_ms.is_none())
                .map(|(k, _)| k.clone())
            {
                circuits.remove(&key);
            }
        }
        let circuit = circuits.entry(destination.to_owned()).or_default();
        circuit.failures = circuit.failures.saturating_add(1);
        let now = (self.clock)();
        let reopen = match circuit.open_until_ms {
            // Already open (a delivery that was in flight when it opened).
            Some(until) if now < until => false,
            // The half-open probe failed.
            Some(_) => true,
            None => circuit.failures >= self.settings.failures_max,
        };
        if reopen {
            circuit.openings = circuit.openings.saturating_add(1);
            let doublings = (circuit.openings - 1).min(63);
            let cooldown = self
                .settings
                .cooldown_ms
                .saturating_mul(1u64 << doublings)
                .min(self.settings.cooldown_cap_ms);
            let until = now.saturating_add(i64::try_from(cooldown).unwrap_or(i64::MAX));
            circuit.open_until_ms = Some(until);
            tracing::warn!(
                destination,
                failures = circuit.failures,
                cooldown_ms = cooldown,
                "destination circuit open: its events wait"
            );
            return Some(until);
        }
        None
    }
}

pub struct Ordered<S> {
    sender: S,
    concurrency: usize,
    breaker: Breaker,
}

impl<S: Sender> Ordered<S> {
    /// `concurrency`: deliveries in flight at once (at least 1). The circuit breaker has
    /// its default limits ([`Ordered::with_breaker`] sets them).
    pub fn new(sender: S, concurrency: usize) -> Self {
        Self {
            sender,
            concurrency: concurrency.max(1),
            breaker: Breaker {
                settings: BreakerSettings::default(),
                circuits: RefCell::default(),
                clock: Box::new(super::outbox::now_ms),
            },
        }
    }

    pub fn with_breaker(mut self, settings: BreakerSettings) -> Self {
        self.breaker.settings = settings;
        self
    }

    /// The breaker's clock (Unix ms), for tests.
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + 'static) -> Self {
        self.breaker.clock = Box::new(clock);
        self
    }

    pub fn sender(&self) -> &S {
        &self.sender
    }

    async fn deliver_all(&self, events: &[Event]) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; events.len()];
        // Keys of events that failed or were deferred: their later events wait.
        let mut blocked: HashSet<&str> = HashSet::new();
        // A bound on rounds that send nothing (a guard: each one decides an event).
        let mut rounds_left = events.len().saturating_add(1);
        loop {
            // This round: the first remaining event of every key, but one probe at most per
            // half-open destination.
            let mut taken: HashSet<&str> = HashSet::new();
            let mut probing: HashSet<&str> = HashSet::new();
            let mut round = Vec::new();
            for (index, event) in events.iter().enumerate() {
                if outcomes[index].is_some() {
                    continue;
                }
                if event.keys().any(|key| blocked.contains(key)) {
                    outcomes[index] = Some(Outcome::Skipped);
                    continue;
                }
                let destination = self.sender.destination(event);
                let free = event.keys().all(|key| !taken.contains(key));
                taken.extend(event.keys());
                if !free {
                    continue;
                }
                match self.breaker.gate(destination) {
                    Gate::Send => round.push(index),
                    Gate::Probe if probing.insert(destination) => round.push(index),
                    // Behind this round's probe: the next round knows how it went.
                    Gate::Probe => {}
                    Gate::Open(until_ms) => {
                        blocked.extend(event.keys());
                        outcomes[index] = Some(Outcome::Deferred {
                            until_ms,
                            why: format!("the circuit of {destination} is open"),
                        });
                    }
                }
            }
            if round.is_empty() {
                // Every round decides at least its first remaining event, so this ends;
                // events left behind a deferred one are skipped by the next round.
                if outcomes.iter().all(Option::is_some) || rounds_left == 0 {
                    break;
                }
                rounds_left -= 1;
                continue;
            }
            // The gate is asked again just before each call: a circuit that opens while a
            // round is in flight stops that round's later calls too.
            let results: Vec<(usize, Outcome)> = stream::iter(round)
                .map(|index| async move {
                    let event = &events[index];
                    let destination = self.sender.destination(event);
                    if let Gate::Open(until_ms) = self.breaker.gate(destination) {
                        let why = format!("the circuit of {destination} is open");
                        return (index, Outcome::Deferred { until_ms, why });
                    }
                    let result = self.sender.send(event).await;
                    self.breaker.record(destination, result.is_ok());
                    let outcome = match result {
                        Ok(()) => Outcome::Delivered,
                        Err(error) => Outcome::Failed(error),
                    };
                    (index, outcome)
                })
                .buffer_unordered(self.concurrency)
                .collect()
                .await;
            for (index, outcome) in results {
                if !matches!(outcome, Outcome::Delivered) {
                    blocked.extend(events[index].keys());
                }
                outcomes[index] = Some(outcome);
            }
        }
        outcomes
            .into_iter()
            .map(|outcome| outcome.unwrap_or(Outcome::Skipped))
            .collect()
    }
}

impl<S: Sender> Sink for Ordered<S> {
    fn deliver<'a>(&'a self, events: &'a [Event]) -> LocalBoxFuture<'a, Vec<Outcome>> {
        Box::pin(self.deliver_all(events))
    }

    fn attempts_max(&self, event: &Event) -> Option<u32> {
        self.sender.attempts_max(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Fails the events whose ids it was told to, records the order it saw them in.
    struct Recording {
        failing: HashSet<i64>,
        seen: RefCell<Vec<i64>>,
    }

    impl Sender for Recording {
        fn send<'a>(&'a self, event: &'a Event) -> LocalBoxFuture<'a, Result<(), SinkError>> {
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

    pub(crate) fn event(id: i64, a: &str, b: Option<&str>, attempts: u32) -> Event {
        Event {
            id,
            sink: "webhook".into(),
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
        let sink = Ordered::new(
            Recording {
                failing: HashSet::from([2]),
                seen: RefCell::default(),
            },
            1,
        );
        let events = [
            event(1, "a", Some("b"), 0),
            event(2, "b", Some("c"), 0),
            event(3, "c", None, 0),
            event(4, "d", Some("a"), 0),
            event(5, "e", Some("b"), 0),
        ];
        let outcomes = sink.deliver(&events).await;
        assert_eq!(
            outcomes,
            [
                Outcome::Delivered,
                Outcome::Failed(SinkError("HTTP 500".into())),
                Outcome::Skipped,
                Outcome::Delivered,
                Outcome::Skipped,
            ]
        );
        // Round one: 1 (a, b) and the first of d; round two: 2 (b, c), then 4 (d, a) once 1
        // is done. 3 and 5 wait behind 2.
        assert_eq!(*sink.sender().seen.borrow(), [1, 2, 4]);
    }

    #[actix::test]
    async fn events_of_one_key_go_in_id_order_and_unrelated_ones_in_one_round() {
        let sink = Ordered::new(
            Recording {
                failing: HashSet::new(),
                seen: RefCell::default(),
            },
            8,
        );
        let events = [
            event(1, "hot", Some("x"), 0),
            event(2, "hot", Some("y"), 0),
            event(3, "z", None, 0),
            event(4, "hot", None, 0),
        ];
        let outcomes = sink.deliver(&events).await;
        assert!(outcomes.iter().all(|o| *o == Outcome::Delivered));
        let seen = sink.sender().seen.borrow().clone();
        let position = |id| seen.iter().position(|s| *s == id).unwrap();
        assert!(position(1) < position(2) && position(2) < position(4));
        assert_eq!(seen.len(), 4);
    }

    /// Fails while `down` is set; counts the calls per sink.
    struct Switchable {
        down: Rc<Cell<bool>>,
        calls: RefCell<Vec<i64>>,
    }

    impl Sender for Switchable {
        fn send<'a>(&'a self, event: &'a Event) -> LocalBoxFuture<'a, Result<(), SinkError>> {
            self.calls.borrow_mut().push(event.id);
            let down = self.down.get();
            Box::pin(async move {
                if down {
                    Err(SinkError("HTTP 503".into()))
                } else {
                    Ok(())
                }
            })
        }
    }

    use std::cell::Cell;
    use std::rc::Rc;

    fn breaker_sink(down: Rc<Cell<bool>>, clock: Rc<Cell<i64>>) -> Ordered<Switchable> {
        Ordered::new(
            Switchable {
                down,
                calls: RefCell::default(),
            },
            4,
        )
        .with_breaker(BreakerSettings {
            failures_max: 3,
            cooldown_ms: 1_000,
            cooldown_cap_ms: 3_000,
        })
        .with_clock(move || clock.get())
    }

    fn on(sink: &str, id: i64, key: &str) -> Event {
        Event {
            sink: sink.into(),
            ..event(id, key, None, 0)
        }
    }

    #[actix::test]
    async fn consecutive_failures_open_the_circuit_and_its_events_are_deferred_unsent() {
        let (down, clock) = (Rc::new(Cell::new(true)), Rc::new(Cell::new(10_000)));
        let sink = breaker_sink(down.clone(), clock.clone());
        // Three independent events fail (one round): the circuit opens for 1 s.
        let failing = [
            on("webhook", 1, "a"),
            on("webhook", 2, "b"),
            on("webhook", 3, "c"),
        ];
        let outcomes = sink.deliver(&failing).await;
        assert!(outcomes.iter().all(|o| matches!(o, Outcome::Failed(_))));
        // Now nothing is sent: deferred until the cool-down ends, behind them their keys'
        // later events are skipped; another destination is not affected.
        let batch = [
            on("webhook", 4, "d"),
            on("webhook", 5, "d"),
            on("hook:h1", 6, "d2"),
        ];
        down.set(false);
        let outcomes = sink.deliver(&batch).await;
        assert_eq!(
            outcomes,
            [
                Outcome::Deferred {
                    until_ms: 11_000,
                    why: "the circuit of webhook is open".into()
                },
                Outcome::Skipped,
                Outcome::Delivered,
            ]
        );
        assert_eq!(*sink.sender().calls.borrow(), [1, 2, 3, 6]);
    }

    #[actix::test]
    async fn a_half_open_probe_goes_alone_and_its_success_closes_the_circuit() {
        let (down, clock) = (Rc::new(Cell::new(true)), Rc::new(Cell::new(0)));
        let sink = breaker_sink(down.clone(), clock.clone());
        let failing = [
            on("webhook", 1, "a"),
            on("webhook", 2, "b"),
            on("webhook", 3, "c"),
        ];
        sink.deliver(&failing).await;
        clock.set(1_000);
        down.set(false);
        // Half-open: 4 is the probe; 5 and 6 wait for the next round, then go.
        let batch = [
            on("webhook", 4, "x"),
            on("webhook", 5, "y"),
            on("webhook", 6, "z"),
        ];
        let outcomes = sink.deliver(&batch).await;
        assert!(outcomes.iter().all(|o| *o == Outcome::Delivered));
        assert_eq!(sink.sender().calls.borrow()[3], 4);
        assert_eq!(sink.breaker.gate("webhook"), Gate::Send);
    }

    #[actix::test]
    async fn a_failed_probe_doubles_the_cool_down_up_to_the_cap() {
        let (down, clock) = (Rc::new(Cell::new(true)), Rc::new(Cell::new(0)));
        let sink = breaker_sink(down.clone(), clock.clone());
        let failing = [
            on("webhook", 1, "a"),
            on("webhook", 2, "b"),
            on("webhook", 3, "c"),
        ];
        sink.deliver(&failing).await;
        assert_eq!(sink.breaker.gate("webhook"), Gate::Open(1_000));
        let mut expected_until = 1_000;
        for cooldown in [2_000, 3_000, 3_000] {
            clock.set(expected_until);
            // The probe fails; the events behind it are deferred to the new end.
            let batch = [on("webhook", 10, "p"), on("webhook", 11, "q")];
            let outcomes = sink.deliver(&batch).await;
            expected_until += cooldown;
            assert!(matches!(outcomes[0], Outcome::Failed(_)));
            assert_eq!(
                outcomes[1],
                Outcome::Deferred {
                    until_ms: expected_until,
                    why: "the circuit of webhook is open".into()
                }
            );
        }
        // One call per probe, none for the deferred events.
        assert_eq!(sink.sender().calls.borrow().len(), 3 + 3);
    }

    #[actix::test]
    async fn a_success_resets_the_count_and_zero_failures_max_never_opens() {
        let (down, clock) = (Rc::new(Cell::new(true)), Rc::new(Cell::new(0)));
        let sink = breaker_sink(down.clone(), clock.clone());
        sink.deliver(&[on("webhook", 1, "a"), on("webhook", 2, "b")])
            .await;
        down.set(false);
        sink.deliver(&[on("webhook", 3, "c")]).await;
        down.set(true);
        sink.deliver(&[on("webhook", 4, "d"), on("webhook", 5, "e")])
            .await;
        assert_eq!(
            sink.breaker.gate("webhook"),
            Gate::Send,
            "2 + 2, not 4 in a row"
        );
        let never = breaker_sink(down, clock).with_breaker(BreakerSettings {
            failures_max: 0,
            ..BreakerSettings::default()
        });
        let many: Vec<Event> = (0..20)
            .map(|i| on("webhook", i, &format!("k{i}")))
            .collect();
        never.deliver(&many).await;
        assert_eq!(never.breaker.gate("webhook"), Gate::Send);
    }

    #[actix::test]
    async fn a_circuit_that_opens_mid_round_stops_the_rest_of_the_round() {
        let (down, clock) = (Rc::new(Cell::new(true)), Rc::new(Cell::new(0)));
        // One call at a time: the third failure opens the circuit, the rest are deferred.
        let sink = Ordered::new(
            Switchable {
                down,
                calls: RefCell::default(),
            },
            1,
        )
        .with_breaker(BreakerSettings {
            failures_max: 3,
            cooldown_ms: 1_000,
            cooldown_cap_ms: 1_000,
        })
        .with_clock(move || clock.get());
        let events: Vec<Event> = (1..=10)
            .map(|i| on("webhook", i, &format!("k{i}")))
            .collect();
        let outcomes = sink.deliver(&events).await;
        assert_eq!(sink.sender().calls.borrow().len(), 3);
        let deferred = outcomes
            .iter()
            .filter(|o| {
                matches!(
                    o,
                    Outcome::Deferred {
                        until_ms: 1_000,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(deferred, 7);
    }
}
