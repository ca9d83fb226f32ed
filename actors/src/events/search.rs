//! The search index (Blnk's Typesense sync, 2.7): the [`SearchRoute`] writes the events the
//! index needs for the `search` sink, and the [`SearchSink`] indexes a claimed batch with
//! **one import call per collection** (`documents/import?action=upsert`, JSONL),
//! dependencies first: ledgers, identities, then balances, then transactions. A
//! transaction's event re-indexes its source and destination balances too, read from their
//! current committed rows, so the index shows the amounts a transfer left them with (the
//! event's own payload is the transaction, not its balances). So do `balance.created`,
//! `balance.reconstructed`, `account.created` (its balance) and `metadata.updated` (the
//! entity's current row).
//!
//! Typesense down, not ready or out of memory: the batch is deferred (no attempt counted,
//! tried again after `retry_interval_ms`), so the outbox keeps the events until Typesense
//! is back and nothing is lost or dead. A document Typesense refuses is a failure of its
//! events, retried and eventually dead like any sink's.
//!
//! # Layout
//! - [`documents`]: the collections' schemas and the payload → document mapping.
//! - [`typesense`]: the client (collections, import, delete, search, multi-search).
//! - [`store`]: the sink's and the reindex's queries, and the reindex's progress row.
//! - [`reindex`]: the actor (in the workers) that rebuilds the index from the database.
//! - [`api`]: what the HTTP handlers call (search, multi-search, reindex requests).

pub mod api;
pub mod documents;
pub mod reindex;
pub mod store;
pub mod typesense;

use self::documents::Collection;
use self::typesense::{Typesense, TypesenseError};
use super::outbox::{now_ms, NewEvent};
use super::routing::Route;
use super::{Event, Outcome, Payloads, Sink, SinkError};
use crate::store::Store;
use futures_util::future::LocalBoxFuture;
use secrecy::SecretString;
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// The sink of the search index.
pub const SEARCH_SINK: &str = "search";

/// Where and how the index is kept (Blnk's `typesense.dns`, `type_sense_key`, plus Coffer's
/// limits).
#[derive(Clone)]
pub struct SearchConfig {
    /// Typesense's base URL (`http://typesense:8108`).
    pub url: String,
    pub api_key: SecretString,
    /// Put before each collection's name (several deployments, or tests, share a server).
    pub collection_prefix: String,
    /// Timeout of one Typesense call.
    pub timeout: Duration,
    /// How long a batch waits when Typesense cannot take it (down, not ready, out of memory).
    pub retry_interval_ms: u64,
    /// Records per reindex page (the default of `POST /search/reindex`'s `batch_size`).
    pub reindex_batch_size: u32,
}

/// Names the `search` sink for the events the index needs.
pub struct SearchRoute;

/// Whether the index wants an event of this name.
pub fn is_indexed(name: &str) -> bool {
    matches!(
        name,
        "ledger.created"
            | "balance.created"
            | "identity.created"
            | "identity.updated"
            | "identity.deleted"
            | "account.created"
            | "metadata.updated"
            | "balance.reconstructed"
    ) || name.starts_with("transaction.")
}

impl Route for SearchRoute {
    fn sinks(&self, event: &NewEvent, sinks: &mut Vec<String>) {
        if is_indexed(event.name) {
            sinks.push(SEARCH_SINK.to_owned());
        }
    }
}

/// Indexes claimed batches. Runs on its dispatcher's thread.
pub struct SearchSink {
    typesense: Typesense,
    store: Store,
    payloads: Arc<dyn Payloads>,
    retry_interval_ms: u64,
    /// The collections were made (or found) since this sink started; cleared when an
    /// import finds one missing (dropped by a reindex or by hand).
    ready: Cell<bool>,
}

/// A document to import, and the events (batch positions) it stands for.
struct Pending {
    id: String,
    json: String,
    events: Vec<usize>,
}

/// The documents of one collection, in first-seen order; a later version of a document
/// (an identity updated twice) replaces the earlier one, standing for both events.
#[derive(Default)]
struct Documents {
    list: Vec<Pending>,
    position: HashMap<String, usize>,
}

impl Documents {
    fn put(&mut self, id: &str, json: String, event: usize) {
        match self.position.get(id) {
            Some(&at) => {
                self.list[at].json = json;
                self.list[at].events.push(event);
            }
            None => {
                self.position.insert(id.to_owned(), self.list.len());
                self.list.push(Pending {
                    id: id.to_owned(),
                    json,
                    events: vec![event],
                });
            }
        }
    }
}

impl SearchSink {
    pub fn new(config: &SearchConfig, store: Store, payloads: Arc<dyn Payloads>) -> Self {
        Self {
            typesense: Typesense::new(config),
            store,
            payloads,
            retry_interval_ms: config.retry_interval_ms,
            ready: Cell::new(false),
        }
    }

    fn deferred(&self, why: &str) -> Outcome {
        Outcome::Deferred {
            until_ms: now_ms()
                .saturating_add(i64::try_from(self.retry_interval_ms).unwrap_or(i64::MAX)),
            why: why.to_owned(),
        }
    }

    fn failure(&self, error: &TypesenseError) -> Outcome {
        if error.is_transient() {
            self.deferred(&error.to_string())
        } else {
            if matches!(error, TypesenseError::Status { status: 404, .. }) {
                self.ready.set(false);
            }
            Outcome::Failed(SinkError(error.to_string()))
        }
    }

    /// The current document source of a ledger, identity or transaction (`None`: another
    /// kind of entity, or gone).
    async fn current(&self, id: &str) -> Result<Option<(Collection, String)>, crate::LedgerError> {
        use crate::LedgerError as E;
        let found = if id.starts_with("ldg_") {
            self.store
                .ledger(id)
                .await
                .map(|m| (Collection::Ledgers, self.payloads.ledger(&m)))
        } else if id.starts_with("idt_") {
            self.store
                .identity(id)
                .await
                .map(|m| (Collection::Identities, self.payloads.identity(&m)))
        } else if id.starts_with("txn_") {
            self.store
                .transaction(id)
                .await
                .map(|r| (Collection::Transactions, self.payloads.transaction(&r)))
        } else {
            return Ok(None);
        };
        match found {
            Ok(found) => Ok(Some(found)),
            Err(E::LedgerNotFound(_) | E::IdentityNotFound(_) | E::TransactionNotFound(_)) => {
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    async fn deliver_all(&self, events: &[Event]) -> Vec<Outcome> {
        if !self.ready.get() {
            match self.typesense.ensure_collections().await {
                Ok(_) => self.ready.set(true),
                Err(error) => {
                    let outcome = self.failure(&error);
                    return events.iter().map(|_| outcome.clone()).collect();
                }
            }
        }
        let mut outcomes: Vec<Option<Outcome>> = vec![None; events.len()];
        let mut documents: BTreeMap<Collection, Documents> = BTreeMap::new();
        // Balance id → the events that re-index it.
        let mut balances: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut deletes: Vec<usize> = Vec::new();
        for (index, event) in events.iter().enumerate() {
            let collection = match event.name.as_str() {
                "ledger.created" => Collection::Ledgers,
                "identity.created" | "identity.updated" => Collection::Identities,
                "identity.deleted" => {
                    deletes.push(index);
                    continue;
                }
                "balance.created" | "balance.reconstructed" => {
                    balances
                        .entry(event.entity_id.clone())
                        .or_default()
                        .push(index);
                    continue;
                }
                // An account opens a balance: index it.
                "account.created" => {
                    #[derive(serde::Deserialize)]
                    struct Opened {
                        balance_id: String,
                    }
                    match serde_json::from_str::<Opened>(&event.payload) {
                        Ok(opened) => balances.entry(opened.balance_id).or_default().push(index),
                        Err(_) => outcomes[index] = Some(Outcome::Delivered),
                    }
                    continue;
                }
                // New metadata: the entity's current row, read back.
                "metadata.updated" => {
                    let id = event.entity_id.as_str();
                    if id.starts_with("bln_") {
                        balances.entry(id.to_owned()).or_default().push(index);
                    } else {
                        match self.current(id).await {
                            Ok(Some((collection, payload))) => {
                                match documents::document(collection, id, &payload) {
                                    Ok(json) => documents
                                        .entry(collection)
                                        .or_default()
                                        .put(id, json, index),
                                    Err(error) => {
                                        outcomes[index] =
                                            Some(Outcome::Failed(SinkError(error.to_string())))
                                    }
                                }
                            }
                            Ok(None) => outcomes[index] = Some(Outcome::Delivered),
                            Err(error) => {
                                outcomes[index] =
                                    Some(self.deferred(&format!("{id} not read: {error}")))
                            }
                        }
                    }
                    continue;
                }
                name if name.starts_with("transaction.") => {
                    for key in event.keys() {
                        balances.entry(key.to_owned()).or_default().push(index);
                    }
                    Collection::Transactions
                }
                // Not an indexed event (routed here by an older writer): nothing to do.
                _ => {
                    outcomes[index] = Some(Outcome::Delivered);
                    continue;
                }
            };
            match documents::document(collection, &event.entity_id, &event.payload) {
                Ok(json) => {
                    documents
                        .entry(collection)
                        .or_default()
                        .put(&event.entity_id, json, index)
                }
                Err(error) => outcomes[index] = Some(Outcome::Failed(SinkError(error.to_string()))),
            }
        }
        if !balances.is_empty() {
            match self
                .store
                .balances_by_ids(balances.keys().cloned().collect())
                .await
            {
                Ok(rows) => {
                    let target = documents.entry(Collection::Balances).or_default();
                    for row in rows {
                        let Some(waiting) = balances.get(&row.balance_id) else {
                            continue;
                        };
                        let payload = self.payloads.balance(&row);
                        match documents::document(Collection::Balances, &row.balance_id, &payload) {
                            Ok(json) => {
                                for &index in waiting {
                                    target.put(&row.balance_id, json.clone(), index);
                                }
                            }
                            Err(error) => {
                                for &index in waiting {
                                    outcomes[index] =
                                        Some(Outcome::Failed(SinkError(error.to_string())));
                                }
                            }
                        }
                    }
                }
                Err(error) => {
                    let outcome = self.deferred(&format!("balances not read: {error}"));
                    for index in balances.values().flatten() {
                        outcomes[*index] = Some(outcome.clone());
                    }
                }
            }
        }
        // Dependencies first (the map's order): ledgers, identities, balances, transactions.
        for (collection, docs) in &documents {
            let lines: Vec<String> = docs.list.iter().map(|d| d.json.clone()).collect();
            match self.typesense.import(*collection, &lines).await {
                Ok(results) => {
                    for (doc, result) in docs.list.iter().zip(results) {
                        if let Err(why) = result {
                            tracing::debug!(collection = collection.name(), id = %doc.id,
                                %why, "document refused by Typesense");
                            for &index in &doc.events {
                                outcomes[index].get_or_insert(Outcome::Failed(SinkError(format!(
                                    "{} {}: {why}",
                                    collection.name(),
                                    doc.id
                                ))));
                            }
                        }
                    }
                }
                Err(error) => {
                    let outcome = self.failure(&error);
                    let transient = error.is_transient();
                    for doc in &docs.list {
                        for &index in &doc.events {
                            outcomes[index].get_or_insert(outcome.clone());
                        }
                    }
                    if transient {
                        // Typesense cannot take writes: the rest waits with this.
                        for slot in outcomes.iter_mut() {
                            slot.get_or_insert(outcome.clone());
                        }
                        break;
                    }
                }
            }
        }
        for index in deletes {
            if outcomes[index].is_some() {
                continue;
            }
            let result = self
                .typesense
                .delete(Collection::Identities, &events[index].entity_id)
                .await;
            outcomes[index] = Some(match result {
                Ok(()) => Outcome::Delivered,
                Err(error) => self.failure(&error),
            });
        }
        held_back(events, outcomes)
    }
}

/// The final outcomes: unsettled ones delivered, but an event after a failed or deferred
/// one sharing a key is [`Outcome::Skipped`] (its documents were sent, and are sent again
/// with it: upserts of current state, so that is harmless), keeping the sink's contract.
fn held_back(events: &[Event], outcomes: Vec<Option<Outcome>>) -> Vec<Outcome> {
    let mut blocked: HashSet<&str> = HashSet::new();
    events
        .iter()
        .zip(outcomes)
        .map(|(event, outcome)| {
            let outcome = outcome.unwrap_or(Outcome::Delivered);
            match outcome {
                Outcome::Delivered if event.keys().any(|key| blocked.contains(key)) => {
                    Outcome::Skipped
                }
                Outcome::Failed(_) | Outcome::Deferred { .. } => {
                    blocked.extend(event.keys());
                    outcome
                }
                other => other,
            }
        })
        .collect()
}

impl Sink for SearchSink {
    fn deliver<'a>(&'a self, events: &'a [Event]) -> LocalBoxFuture<'a, Vec<Outcome>> {
        Box::pin(self.deliver_all(events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64, name: &str, a: &str, b: Option<&str>) -> Event {
        Event {
            id,
            sink: SEARCH_SINK.into(),
            name: name.into(),
            entity_id: format!("e{id}"),
            key_a: a.into(),
            key_b: b.map(str::to_owned),
            payload: "{}".into(),
            attempts: 0,
        }
    }

    #[test]
    fn the_route_takes_the_indexed_events_only() {
        let mut sinks = Vec::new();
        for name in ["ledger.created", "transaction.applied", "identity.deleted"] {
            SearchRoute.sinks(&NewEvent::of(name, "x", "{}".into()), &mut sinks);
        }
        SearchRoute.sinks(
            &NewEvent::of("balance_monitor.created", "x", "{}".into()),
            &mut sinks,
        );
        assert_eq!(sinks, ["search", "search", "search"]);
    }

    #[test]
    fn events_after_a_failure_of_their_key_are_skipped() {
        let events = [
            event(1, "transaction.applied", "a", Some("b")),
            event(2, "transaction.applied", "b", Some("c")),
            event(3, "transaction.applied", "d", None),
        ];
        let outcomes = held_back(
            &events,
            vec![Some(Outcome::Failed(SinkError("no".into()))), None, None],
        );
        assert_eq!(outcomes[1], Outcome::Skipped);
        assert_eq!(outcomes[2], Outcome::Delivered);
    }
}
