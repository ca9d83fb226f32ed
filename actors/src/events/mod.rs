//! Events: a transactional outbox, delivered at least once.
//!
//! Every committed change with a side effect writes its events into `outbox_events` in the
//! **same database transaction** as the change ([`outbox`]): a group commit writes its
//! batch's transaction events with one multi-row insert, and a rolled-back batch writes
//! none. An event is written once per **sink** that wants it ([`routing`]: the webhook, the
//! search index, the monitors, each transaction hook), and each sink's rows are delivered,
//! retried and ordered on their own, so a dead receiver holds back nobody else.
//!
//! The [`dispatcher`] of a sink claims its due rows in bounded batches, hands them to the
//! [`Sink`] and settles each by its [`Outcome`]: delivered; failed, retried with exponential
//! backoff up to a bounded number of attempts, then kept as `dead` with its last error;
//! deferred (the destination's circuit is open: no attempt counted); skipped.
//!
//! Ordering: events are keyed by the entities they concern (a transaction by its source and
//! destination balances). Within a sink, an event is not delivered while an earlier event
//! sharing one of its keys is waiting for a retry or leased by another dispatcher, so one
//! balance's events arrive in commit order.
//!
//! The core never serializes an entity itself: [`Payloads`] (implemented by the HTTP shell
//! with the serializers it answers with) turns stored rows into Blnk's `data` objects, so an
//! event carries exactly what the API serves (exact integers, no float conversion).
//!
//! # Layout
//! - [`outbox`]: the rows: written inside the change's transaction; claimed, marked,
//!   pruned, counted.
//! - [`routing`]: which sinks an event is written for ([`routing::Route`]), and the
//!   [`routing::EventWriter`] a store writes events with.
//! - [`delivery`]: [`delivery::Ordered`], the [`Sink`] made of a per-event sender: key
//!   order kept within a batch.
//! - [`dispatcher`]: the supervised actor that claims a sink's rows and delivers them.
//! - [`http`]: the client every HTTP sink sends with (timeouts, no redirects).
//! - [`admin`]: dead events listed and redriven, rows counted by sink (the CLI, health).
//! - The sinks, one file each: [`webhook`] (the global webhook), [`hooks`] (the transaction
//!   hooks: their directory, route and sender), [`monitors`] (the balance monitors, evaluated
//!   by the `monitors` sink).
//! - [`system`]: `system.error`, rate-limited per error kind.
//! - [`search`]: the Typesense search index (its sink, route, reindex and search API).

pub mod admin;
pub mod delivery;
pub mod dispatcher;
pub mod hooks;
pub mod http;
pub mod monitors;
pub mod outbox;
pub mod routing;
pub mod search;
pub mod system;
pub mod webhook;

use crate::domain::{TransactionRecord, TransactionStatus};
use crate::entity::{account, balance, balance_monitor, identity, ledger};
use futures_util::future::LocalBoxFuture;

/// Turns stored entities into the JSON text of Blnk's `data` object for their event.
pub trait Payloads: Send + Sync {
    fn transaction(&self, record: &TransactionRecord) -> String;
    fn ledger(&self, model: &ledger::Model) -> String;
    fn balance(&self, model: &balance::Model) -> String;
    fn identity(&self, model: &identity::Model) -> String;
    fn account(&self, model: &account::Model) -> String;
    fn monitor(&self, model: &balance_monitor::Model) -> String;
}

/// Blnk's event name for a stored transaction row (2.3, 2.8). A commit of a hold is stored
/// as an APPLIED row, so it is a `transaction.applied` too.
pub fn transaction_event(status: TransactionStatus) -> &'static str {
    match status {
        TransactionStatus::Queued => "transaction.queued",
        TransactionStatus::Scheduled => "transaction.scheduled",
        TransactionStatus::Applied => "transaction.applied",
        TransactionStatus::Inflight => "transaction.inflight",
        TransactionStatus::Void => "transaction.void",
        TransactionStatus::Rejected => "transaction.rejected",
    }
}

/// An event as claimed for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: i64,
    /// The sink this row is for (`webhook`, `search`, `hook:<id>`, …).
    pub sink: String,
    /// Blnk's event name (`transaction.applied`, …).
    pub name: String,
    pub entity_id: String,
    pub key_a: String,
    pub key_b: Option<String>,
    /// The JSON text of Blnk's `data` object.
    pub payload: String,
    /// Failed deliveries so far.
    pub attempts: u32,
}

impl Event {
    /// Blnk's webhook body: `{"event": <name>, "data": <payload>}`, the payload as stored.
    pub fn body(&self) -> String {
        let name = serde_json::Value::String(self.name.clone()).to_string();
        format!("{{\"event\":{name},\"data\":{}}}", self.payload)
    }

    /// The ordering keys of this event.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.key_a.as_str()).chain(self.key_b.as_deref())
    }
}

/// Blnk's webhook signature: hex HMAC-SHA256 with `secret` over `<timestamp>.<body>`
/// (sent as `X-Blnk-Signature`, the Unix seconds as `X-Blnk-Timestamp`).
pub fn signature(secret: &[u8], timestamp: i64, body: &str) -> String {
    use hmac::digest::KeyInit;
    use hmac::{Hmac, Mac};
    // HMAC takes a key of any length: this never fails.
    let Ok(mut mac) = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Why a delivery failed (it is retried).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// What became of one event handed to a [`Sink`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Counts as an attempt: retried after a backoff, dead when out of attempts.
    Failed(SinkError),
    /// Not attempted, and no attempt counted: try again at `until_ms` (Unix ms), e.g. while
    /// the destination's circuit breaker is open.
    Deferred {
        until_ms: i64,
        why: String,
    },
    /// Not attempted (an earlier event of one of its keys failed in this batch): claimable
    /// again at once, behind that event.
    Skipped,
}

/// Where a sink's events go. Runs on its dispatcher's thread.
pub trait Sink {
    /// Delivers a claimed batch (in id order, every row of this sink); returns one
    /// [`Outcome`] per event, in the same order. An event must not be delivered after an
    /// earlier event of the batch sharing one of its keys failed or was deferred (it is
    /// [`Outcome::Skipped`]): that keeps each entity's events in commit order.
    fn deliver<'a>(&'a self, events: &'a [Event]) -> LocalBoxFuture<'a, Vec<Outcome>>;

    /// Deliveries of `event` before it is dead, when this sink decides it per event (a
    /// transaction hook's `retry_count` + 1); `None`: the dispatcher's `attempts_max`.
    fn attempts_max(&self, _event: &Event) -> Option<u32> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hex_hmac_sha256_over_the_timestamp_dot_body() {
        // python3: hmac.new(b'secret', b'1700000000.' + body, hashlib.sha256).hexdigest()
        let body = r#"{"event":"ledger.created","data":{}}"#;
        assert_eq!(
            signature(b"secret", 1_700_000_000, body),
            "e07e35dd48fb51b5aee036d4ceb6f23dd338561e438724a0a161c145af3a5fcd"
        );
    }

    #[test]
    fn the_body_is_blnks_envelope_with_the_payload_as_stored() {
        let event = Event {
            id: 1,
            sink: "webhook".into(),
            name: "transaction.applied".into(),
            entity_id: "txn_1".into(),
            key_a: "bln_a".into(),
            key_b: Some("bln_b".into()),
            payload: r#"{"precise_amount":1234567890123456789012345678901234567890}"#.into(),
            attempts: 0,
        };
        assert_eq!(
            event.body(),
            r#"{"event":"transaction.applied","data":{"precise_amount":1234567890123456789012345678901234567890}}"#
        );
        assert_eq!(event.keys().collect::<Vec<_>>(), ["bln_a", "bln_b"]);
    }
}
