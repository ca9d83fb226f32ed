//! Which sinks an event is written for. A store that writes events holds one
//! [`EventWriter`]: the [`Payloads`] that make the events' `data`, and the [`Route`]s that
//! name, for each event, the sinks that want it (the webhook, filtered by its subscription;
//! the search index; the monitors; each transaction hook). The event is then written once
//! per sink; an event no route wants is not written at all.

use super::outbox::NewEvent;
use super::Payloads;
use std::collections::HashSet;
use std::sync::Arc;

/// Names the sinks that want an event.
pub trait Route: Send + Sync {
    /// Pushes onto `sinks` the sink of every destination that wants `event` (the outbox
    /// `sink` value, e.g. `webhook`, `hook:hk_…`).
    fn sinks(&self, event: &NewEvent, sinks: &mut Vec<String>);

    /// Whether this route may want any event now (`false`: skip it, and when no route wants
    /// any, write nothing and serialize nothing). A route whose destinations come and go
    /// (the transaction hooks) says so.
    fn wants_events(&self) -> bool {
        true
    }
}

/// The global webhook (`notification.webhook.url`): every event, or only the subscribed
/// names (`notification.webhook.events`, an extension: Blnk's issue #172).
pub struct WebhookRoute {
    /// `None`: every event.
    pub subscribed: Option<HashSet<String>>,
}

/// The sink of the global webhook.
pub const WEBHOOK_SINK: &str = "webhook";

impl Route for WebhookRoute {
    fn sinks(&self, event: &NewEvent, sinks: &mut Vec<String>) {
        let wanted = self
            .subscribed
            .as_ref()
            .is_none_or(|names| names.contains(event.name));
        if wanted {
            sinks.push(WEBHOOK_SINK.to_owned());
        }
    }
}

/// What a store writes its events with.
pub struct EventWriter {
    pub payloads: Arc<dyn Payloads>,
    routes: Vec<Arc<dyn Route>>,
    /// The balances with monitors (when the monitors sink is on): told of monitor writes,
    /// reloaded by the store.
    monitored: Option<Arc<super::monitors::MonitoredBalances>>,
    /// The rate limit of `system.error` events.
    pub(crate) system_errors: super::system::SystemErrors,
}

impl EventWriter {
    pub fn new(payloads: Arc<dyn Payloads>) -> Self {
        Self {
            payloads,
            routes: Vec::new(),
            monitored: None,
            system_errors: Default::default(),
        }
    }

    /// Keeps `balances` up to date (monitor writes of this process, periodic reloads).
    pub fn monitored(mut self, balances: Arc<super::monitors::MonitoredBalances>) -> Self {
        self.monitored = Some(balances);
        self
    }

    pub fn monitored_balances(&self) -> Option<&Arc<super::monitors::MonitoredBalances>> {
        self.monitored.as_ref()
    }

    pub fn route(mut self, route: Arc<dyn Route>) -> Self {
        self.routes.push(route);
        self
    }

    pub fn has_routes(&self) -> bool {
        !self.routes.is_empty()
    }

    /// Whether some route may want an event now.
    pub fn wants_events(&self) -> bool {
        self.routes.iter().any(|route| route.wants_events())
    }

    /// The sinks `event` is written for, in route order.
    pub fn sinks(&self, event: &NewEvent) -> Vec<String> {
        let mut sinks = Vec::new();
        for route in &self.routes {
            route.sinks(event, &mut sinks);
        }
        sinks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_webhook_takes_every_event_or_only_its_subscription() {
        let event = NewEvent::of("ledger.created", "ldg_1", "{}".into());
        let mut sinks = Vec::new();
        WebhookRoute { subscribed: None }.sinks(&event, &mut sinks);
        assert_eq!(sinks, ["webhook"]);
        let only_applied = WebhookRoute {
            subscribed: Some(HashSet::from(["transaction.applied".to_owned()])),
        };
        sinks.clear();
        only_applied.sinks(&event, &mut sinks);
        assert!(sinks.is_empty());
    }
}
