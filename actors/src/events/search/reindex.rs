//! The reindex (Blnk's `POST /search/reindex`), run in the workers: this actor polls the
//! progress row; when a reindex is asked for and no live worker holds it, it takes the row's
//! lease, drops and recreates the collections, then reads the database in id-ordered pages
//! (ledgers → identities → balances → transactions) and imports each page with one call,
//! recording the progress (and renewing the lease) after every page. A worker that dies
//! leaves the lease to run out; another one starts the reindex again.
//!
//! At start it also makes the collections, and asks for a reindex itself when they are all
//! empty while the database holds balances or transactions (a new or wiped Typesense).

use super::documents::{self, Collection};
use super::store::ReindexProgress;
use super::typesense::{Typesense, TypesenseError};
use super::SearchConfig;
use crate::events::Payloads;
use crate::store::Store;
use actix::prelude::*;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// How often the progress row is looked at.
pub const POLL_MS: u64 = 500;
/// How long a worker holds a reindex without recording progress.
pub const LEASE_MS: u64 = 60_000;
/// Tries of one page's import while Typesense cannot take it, before the reindex fails.
pub const IMPORT_TRIES_MAX: u32 = 30;

pub struct ReindexWorker {
    typesense: Rc<Typesense>,
    store: Store,
    payloads: Arc<dyn Payloads>,
    retry_interval_ms: u64,
    reindex_batch_size: u32,
    running: bool,
    /// The start-up check (collections made, empty index filled) is done.
    started: bool,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Tick;

/// Why a reindex stopped.
#[derive(Debug, thiserror::Error)]
enum ReindexError {
    #[error(transparent)]
    Typesense(#[from] TypesenseError),
    #[error(transparent)]
    Store(#[from] crate::LedgerError),
}

impl ReindexWorker {
    /// Starts the worker on `arbiter` (its Typesense client is made there).
    pub fn start(
        arbiter: &ArbiterHandle,
        config: SearchConfig,
        store: Store,
        payloads: Arc<dyn Payloads>,
    ) -> Addr<Self> {
        Supervisor::start_in_arbiter(arbiter, move |_| Self {
            typesense: Rc::new(Typesense::new(&config)),
            store,
            payloads,
            retry_interval_ms: config.retry_interval_ms,
            reindex_batch_size: config.reindex_batch_size,
            running: false,
            started: false,
        })
    }

    fn run(&mut self, ctx: &mut Context<Self>) {
        if self.running {
            return;
        }
        self.running = true;
        let (typesense, store, payloads) = (
            self.typesense.clone(),
            self.store.clone(),
            self.payloads.clone(),
        );
        let (started, retry_ms, batch) = (
            self.started,
            self.retry_interval_ms,
            self.reindex_batch_size,
        );
        let work = async move {
            let mut ready = started;
            if !started {
                match start_check(&typesense, &store, batch).await {
                    Ok(()) => ready = true,
                    Err(error) => tracing::debug!(%error, "search index start-up check failed"),
                }
            }
            match store.claim_reindex(LEASE_MS).await {
                Ok(Some(progress)) => {
                    tracing::info!(batch_size = progress.batch_size, "search reindex started");
                    let outcome = reindex(&typesense, &store, &*payloads, progress, retry_ms).await;
                    match outcome {
                        Ok(progress) => tracing::info!(
                            records = progress.processed_records,
                            errors = progress.errors.len(),
                            "search reindex completed"
                        ),
                        Err(error) => tracing::warn!(%error, "search reindex failed"),
                    }
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "search reindex: progress not read"),
            }
            ready
        };
        ctx.wait(work.into_actor(self).map(|ready, actor, ctx| {
            actor.running = false;
            actor.started = ready;
            ctx.run_later(Duration::from_millis(POLL_MS), |_, ctx| ctx.notify(Tick));
        }));
    }
}

/// Makes the collections; asks for a reindex if they are empty but the database is not.
async fn start_check(typesense: &Typesense, store: &Store, batch: u32) -> Result<(), ReindexError> {
    // Counted first: what is written after this point reaches the index through the
    // outbox, and must not make a fresh deployment reindex what its sink indexes anyway.
    let [_, _, balances, transactions] = store.searchable_counts().await?;
    let empty = typesense.ensure_collections().await?;
    if empty && balances + transactions > 0 {
        // Another replica may have asked first: then that one runs.
        if store.request_reindex(batch).await?.is_ok() {
            tracing::info!("search index empty while the database is not: reindex asked for");
        }
    }
    Ok(())
}

/// One page of a phase: `(id, payload)` pairs, in id order.
async fn page(
    store: &Store,
    payloads: &dyn Payloads,
    collection: Collection,
    after: &str,
    limit: u64,
) -> Result<Vec<(String, String)>, crate::LedgerError> {
    let after = after.to_owned();
    Ok(match collection {
        Collection::Ledgers => store
            .ledgers_after(after, limit)
            .await?
            .iter()
            .map(|m| (m.ledger_id.clone(), payloads.ledger(m)))
            .collect(),
        Collection::Identities => store
            .identities_after(after, limit)
            .await?
            .iter()
            .map(|m| (m.identity_id.clone(), payloads.identity(m)))
            .collect(),
        Collection::Balances => store
            .balances_after(after, limit)
            .await?
            .iter()
            .map(|m| (m.balance_id.clone(), payloads.balance(m)))
            .collect(),
        Collection::Transactions => store
            .transactions_after(after, limit)
            .await?
            .iter()
            .map(|r| (r.transaction_id.clone(), payloads.transaction(r)))
            .collect(),
        Collection::Reconciliations => Vec::new(),
    })
}

/// Imports one page, waiting while Typesense cannot take it (at most [`IMPORT_TRIES_MAX`]
/// tries); returns the documents' errors.
async fn import_page(
    typesense: &Typesense,
    collection: Collection,
    lines: &[String],
    retry_ms: u64,
) -> Result<Vec<String>, TypesenseError> {
    let mut tries = 0;
    loop {
        match typesense.import(collection, lines).await {
            Ok(results) => {
                return Ok(results
                    .into_iter()
                    .filter_map(Result::err)
                    .map(|why| format!("{}: {why}", collection.name()))
                    .collect())
            }
            Err(error) if error.is_transient() && tries + 1 < IMPORT_TRIES_MAX => {
                tries += 1;
                tracing::debug!(%error, "reindex page waits for Typesense");
                actix::clock::sleep(Duration::from_millis(retry_ms)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

async fn reindex(
    typesense: &Typesense,
    store: &Store,
    payloads: &dyn Payloads,
    mut progress: ReindexProgress,
    retry_ms: u64,
) -> Result<ReindexProgress, ReindexError> {
    let result = reindex_phases(typesense, store, payloads, &mut progress, retry_ms).await;
    match &result {
        Ok(()) => {
            progress.status = "completed".into();
            progress.phase = "completed".into();
        }
        Err(error) => {
            progress.status = "failed".into();
            progress.errors.push(error.to_string());
        }
    }
    store.record_reindex(progress.clone(), LEASE_MS).await?;
    result.map(|()| progress)
}

async fn reindex_phases(
    typesense: &Typesense,
    store: &Store,
    payloads: &dyn Payloads,
    progress: &mut ReindexProgress,
    retry_ms: u64,
) -> Result<(), ReindexError> {
    typesense.drop_collections().await?;
    typesense.ensure_collections().await?;
    let counts = store.searchable_counts().await?;
    progress.total_records = i64::try_from(counts.iter().sum::<u64>()).unwrap_or(i64::MAX);
    progress.processed_records = 0;
    let limit = u64::from(progress.batch_size.max(1));
    for collection in [
        Collection::Ledgers,
        Collection::Identities,
        Collection::Balances,
        Collection::Transactions,
    ] {
        progress.phase = collection.name().into();
        store.record_reindex(progress.clone(), LEASE_MS).await?;
        let mut after = String::new();
        loop {
            let rows = page(store, payloads, collection, &after, limit).await?;
            let Some((last, _)) = rows.last() else {
                break;
            };
            after = last.clone();
            let mut lines = Vec::with_capacity(rows.len());
            for (id, payload) in &rows {
                match documents::document(collection, id, payload) {
                    Ok(line) => lines.push(line),
                    Err(error) => progress.errors.push(error.to_string()),
                }
            }
            let errors = import_page(typesense, collection, &lines, retry_ms).await?;
            progress.errors.extend(errors);
            progress.processed_records = progress
                .processed_records
                .saturating_add(i64::try_from(rows.len()).unwrap_or(i64::MAX));
            store.record_reindex(progress.clone(), LEASE_MS).await?;
        }
    }
    Ok(())
}

impl Actor for ReindexWorker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.notify(Tick);
    }
}

impl Supervised for ReindexWorker {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.running = false;
    }
}

impl Handler<Tick> for ReindexWorker {
    type Result = ();

    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        self.run(ctx);
    }
}
