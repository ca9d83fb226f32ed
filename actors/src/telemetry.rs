//! Trace-context propagation across the queue, without OpenTelemetry in the core.
//!
//! The HTTP shell installs two functions when it exports traces: one renders the current
//! span's context as a W3C `traceparent`, the other makes a span a child of a `traceparent`.
//!
//! A QUEUED row is enqueued by the committer after its commit, outside the request's span,
//! so [`crate::ledger::Ledger`]'s submit remembers the request's `traceparent` per QUEUED
//! transaction id ([`remember_queued`]) and the queue takes it when it writes the entry
//! ([`traceparent_for`]): a stream field next to the id on Redis, a field of the entry in
//! memory. The worker's `queue.apply` span adopts it, so one queued transfer is one trace from
//! the request to the worker's commit. Stored rows are not touched. Without an exporter
//! nothing is installed and every call here returns at once.

use crate::domain::{TransactionRecord, TransactionStatus};
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, OnceLock};

/// Longest `traceparent` carried (the W3C form is 55 characters).
pub const TRACEPARENT_CHARS_MAX: usize = 128;
/// Most remembered contexts; beyond it the oldest are forgotten (those traces split in two).
/// Contexts of rows never enqueued (a failed commit, the later rows of an atomic group) stay
/// until pushed out.
const REMEMBERED_MAX: usize = 65_536;

pub struct Propagation {
    /// The current span's context as a `traceparent`, if it is sampled.
    pub current: fn() -> Option<String>,
    /// Makes `span` (not yet entered) a child of the remote context `traceparent`.
    pub adopt: fn(&tracing::Span, &str),
}

static PROPAGATION: OnceLock<Propagation> = OnceLock::new();
/// transaction id → `traceparent` of the request that stored it, until it is enqueued.
static REMEMBERED: OnceLock<Mutex<Remembered>> = OnceLock::new();

#[derive(Default)]
struct Remembered {
    contexts: HashMap<String, String>,
    /// Insertion order, for forgetting the oldest.
    order: VecDeque<String>,
}

/// Installs the propagation functions; the first call wins.
pub fn install(propagation: Propagation) {
    let _ = PROPAGATION.set(propagation);
}

/// The current span's `traceparent`, if tracing export is on.
pub fn current_traceparent() -> Option<String> {
    let propagation = PROPAGATION.get()?;
    (propagation.current)().filter(|t| t.len() <= TRACEPARENT_CHARS_MAX)
}

/// Makes `span` a child of `traceparent` (no-op without one, or without tracing export).
pub fn adopt(span: &tracing::Span, traceparent: Option<&str>) {
    if let (Some(propagation), Some(traceparent)) = (PROPAGATION.get(), traceparent) {
        if traceparent.len() <= TRACEPARENT_CHARS_MAX {
            (propagation.adopt)(span, traceparent);
        }
    }
}

/// Remembers the current `traceparent` for the QUEUED rows among `records`, for the queue to
/// find when the committer enqueues them.
pub fn remember_queued<'a>(records: impl Iterator<Item = &'a TransactionRecord>) {
    if PROPAGATION.get().is_none() {
        return;
    }
    let mut queued = records
        .filter(|r| r.status == TransactionStatus::Queued)
        .peekable();
    if queued.peek().is_none() {
        return;
    }
    let Some(traceparent) = current_traceparent() else {
        return;
    };
    let mut remembered = remembered();
    for record in queued {
        while remembered.order.len() >= REMEMBERED_MAX {
            if let Some(oldest) = remembered.order.pop_front() {
                remembered.contexts.remove(&oldest);
            }
        }
        remembered.order.push_back(record.transaction_id.clone());
        remembered
            .contexts
            .insert(record.transaction_id.clone(), traceparent.clone());
    }
}

/// The `traceparent` to store with a queue entry: the one remembered for this transaction,
/// else the current span's (an enqueue inside a request).
pub fn traceparent_for(transaction_id: &str) -> Option<String> {
    PROPAGATION.get()?;
    // The id stays in `order` until pushed out; removing it there would cost a scan.
    let taken = remembered().contexts.remove(transaction_id);
    taken.or_else(current_traceparent)
}

fn remembered() -> std::sync::MutexGuard<'static, Remembered> {
    REMEMBERED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
