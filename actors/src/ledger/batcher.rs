//! Coalescing concurrent lookups into one database round trip.
//!
//! Blnk's load shape (every request between two new `@indicator` balances) would otherwise
//! cost each request its own commits and reads before its transfer is even written: creating
//! each indicator balance, then loading each new balance's actor. A [`Batcher`] collects the
//! keys asked for while its previous batch runs and fetches them with one query (one
//! transaction): the committer's group commit, for lookups.

use crate::LedgerError;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use tokio::sync::{mpsc, oneshot};

/// Requests that can wait for the running batch; more wait for room (back-pressure).
const BATCHER_QUEUE_CAPACITY: usize = 4096;
/// Most distinct keys fetched by one batch.
const BATCHER_KEYS_MAX: usize = 1000;

type Answer<K, V> = Result<HashMap<K, V>, LedgerError>;

struct Request<K, V> {
    keys: Vec<K>,
    reply: oneshot::Sender<Answer<K, V>>,
}

/// The handle; the batching loop runs until every handle is dropped.
pub struct Batcher<K, V> {
    name: &'static str,
    sender: mpsc::Sender<Request<K, V>>,
}

impl<K, V> Clone for Batcher<K, V> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            sender: self.sender.clone(),
        }
    }
}

impl<K, V> Batcher<K, V>
where
    K: Clone + Eq + Hash + Send + 'static,
    V: Clone + Send + 'static,
{
    /// Starts the loop on the current actix arbiter. `fetch` gets distinct keys and returns
    /// what it found; a key it does not return is absent from the answers.
    pub fn start<F, Fut>(name: &'static str, fetch: F) -> Self
    where
        F: Fn(Vec<K>) -> Fut + 'static,
        Fut: Future<Output = Answer<K, V>> + 'static,
    {
        let (sender, receiver) = mpsc::channel(BATCHER_QUEUE_CAPACITY);
        actix::spawn(run(receiver, fetch));
        Self { name, sender }
    }

    /// The values found for `keys` (a key without a value is left out).
    pub async fn get(&self, keys: Vec<K>) -> Answer<K, V> {
        let stopped = || LedgerError::Internal(format!("the {} batcher has stopped", self.name));
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Request { keys, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run<K, V, F, Fut>(mut receiver: mpsc::Receiver<Request<K, V>>, fetch: F)
where
    K: Clone + Eq + Hash,
    V: Clone,
    F: Fn(Vec<K>) -> Fut,
    Fut: Future<Output = Answer<K, V>>,
{
    while let Some(first) = receiver.recv().await {
        let mut keys_total = first.keys.len();
        let mut batch = vec![first];
        while keys_total < BATCHER_KEYS_MAX {
            match receiver.try_recv() {
                Ok(next) => {
                    keys_total += next.keys.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let distinct: HashSet<&K> = batch.iter().flat_map(|r| &r.keys).collect();
        let keys: Vec<K> = distinct.into_iter().cloned().collect();
        let fetched = fetch(keys).await;
        for request in batch {
            let answer = match &fetched {
                Ok(values) => Ok(request
                    .keys
                    .iter()
                    .filter_map(|key| values.get(key).map(|v| (key.clone(), v.clone())))
                    .collect()),
                Err(error) => Err(error.clone()),
            };
            // The requester may have gone (its client hung up); nothing to undo.
            request.reply.send(answer).ok();
        }
    }
}
