//! [`Ordered`]: a [`Sink`] made of a per-event [`Sender`] (an HTTP POST per event, as the
//! webhook and the hooks send them). It delivers a batch in rounds: each round sends, at most
//! `concurrency` at a time, every remaining event none of whose keys belongs to an earlier
//! remaining event, so events sharing a key go one after the other in id order while
//! unrelated ones go side by side. Once an event fails, the later events of its keys are
//! [`Outcome::Skipped`].

use super::{Event, Outcome, Sink, SinkError};
use futures_util::future::LocalBoxFuture;
use futures_util::stream::{self, StreamExt};
use std::collections::HashSet;

/// Sends one event (its own timeout included).
pub trait Sender {
    fn send<'a>(&'a self, event: &'a Event) -> LocalBoxFuture<'a, Result<(), SinkError>>;

    /// See [`Sink::attempts_max`].
    fn attempts_max(&self, _event: &Event) -> Option<u32> {
        None
    }
}

pub struct Ordered<S> {
    sender: S,
    concurrency: usize,
}

impl<S: Sender> Ordered<S> {
    /// `concurrency`: deliveries in flight at once (at least 1).
    pub fn new(sender: S, concurrency: usize) -> Self {
        Self {
            sender,
            concurrency: concurrency.max(1),
        }
    }

    pub fn sender(&self) -> &S {
        &self.sender
    }

    async fn deliver_all(&self, events: &[Event]) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; events.len()];
        // Keys of events that failed: their later events wait.
        let mut blocked: HashSet<&str> = HashSet::new();
        loop {
            // This round: the first remaining event of every key.
            let mut taken: HashSet<&str> = HashSet::new();
            let mut round = Vec::new();
            for (index, event) in events.iter().enumerate() {
                if outcomes[index].is_some() {
                    continue;
                }
                if event.keys().any(|key| blocked.contains(key)) {
                    outcomes[index] = Some(Outcome::Skipped);
                    continue;
                }
                let free = event.keys().all(|key| !taken.contains(key));
                taken.extend(event.keys());
                if free {
                    round.push(index);
                }
            }
            if round.is_empty() {
                break;
            }
            let results: Vec<(usize, Result<(), SinkError>)> = stream::iter(round)
                .map(|index| async move { (index, self.sender.send(&events[index]).await) })
                .buffer_unordered(self.concurrency)
                .collect()
                .await;
            for (index, result) in results {
                outcomes[index] = Some(match result {
                    Ok(()) => Outcome::Delivered,
                    Err(error) => {
                        blocked.extend(events[index].keys());
                        Outcome::Failed(error)
                    }
                });
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
}
