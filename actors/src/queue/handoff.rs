//! The QUEUED rows this process just committed, handed to its own queue workers.
//!
//! A queue entry carries only a transaction id, so a worker used to read every row it was
//! handed back from the database (one statement per received batch, and decoding every row),
//! although the row had been committed by this very process a few milliseconds before. When
//! the process runs queue workers ([`QueuedHandoff::enable`]), the intake committer keeps
//! each committed QUEUED row here, and the worker takes it instead of reading it; a row it
//! does not find (entered by another process, delivered again, claimed from a dead consumer,
//! re-enqueued by the sweep, or already evicted) is read as before.
//!
//! Safe because a transaction row never changes after its insert (Coffer updates no column
//! of it), so the kept copy is the stored row; the database stays the arbiter of whether it
//! was applied (the child's unique `<ref>_q`). Blnk's workers likewise take the transaction
//! from the queued message. Bounded by [`HANDOFF_RECORDS_MAX`]: the oldest rows go first.

use crate::domain::TransactionRecord;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Most rows kept (about 1 KB each). Workers take rows within milliseconds of their commit;
/// a backlog larger than this is read from the database as before.
pub const HANDOFF_RECORDS_MAX: usize = 16_384;

#[derive(Debug, Default)]
pub struct QueuedHandoff {
    enabled: AtomicBool,
    kept: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    records: HashMap<String, TransactionRecord>,
    /// Ids in the order they were kept; may name rows already taken (bounded below).
    order: VecDeque<String>,
}

impl QueuedHandoff {
    /// Start keeping rows: this process runs queue workers.
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Keeps committed QUEUED rows for this process's workers (nothing while disabled).
    pub fn keep<'a>(&self, records: impl IntoIterator<Item = &'a TransactionRecord>) {
        if !self.is_enabled() {
            return;
        }
        let mut kept = self.kept.lock().expect("handoff lock");
        for record in records {
            kept.order.push_back(record.transaction_id.clone());
            kept.records
                .insert(record.transaction_id.clone(), record.clone());
        }
        // Taken rows leave stale ids in `order`; bounding it too bounds the memory.
        while kept.records.len() > HANDOFF_RECORDS_MAX || kept.order.len() > 2 * HANDOFF_RECORDS_MAX
        {
            let Some(oldest) = kept.order.pop_front() else {
                break;
            };
            kept.records.remove(&oldest);
        }
    }

    /// Takes the kept rows among `ids`; returns them and the ids not found.
    pub fn take(&self, ids: Vec<String>) -> (Vec<TransactionRecord>, Vec<String>) {
        if !self.is_enabled() {
            return (Vec::new(), ids);
        }
        let mut kept = self.kept.lock().expect("handoff lock");
        let mut found = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        for id in ids {
            match kept.records.remove(&id) {
                Some(record) => found.push(record),
                None => missing.push(id),
            }
        }
        if kept.records.is_empty() {
            kept.order.clear();
        }
        (found, missing)
    }

    /// Rows kept now.
    pub fn len(&self) -> usize {
        self.kept.lock().expect("handoff lock").records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TransactionRecord;

    fn record(id: &str) -> TransactionRecord {
        let mut record = TransactionRecord::sample_for_tests();
        record.transaction_id = id.to_owned();
        record
    }

    #[test]
    fn keeps_nothing_until_enabled() {
        let handoff = QueuedHandoff::default();
        handoff.keep([&record("txn_a")]);
        assert!(handoff.is_empty());
        let (found, missing) = handoff.take(vec!["txn_a".into()]);
        assert!(found.is_empty());
        assert_eq!(missing, ["txn_a"]);
    }

    #[test]
    fn a_kept_row_is_taken_once() {
        let handoff = QueuedHandoff::default();
        handoff.enable();
        handoff.keep([&record("txn_a"), &record("txn_b")]);
        let (found, missing) = handoff.take(vec!["txn_a".into(), "txn_c".into()]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].transaction_id, "txn_a");
        assert_eq!(missing, ["txn_c"]);
        let (found, missing) = handoff.take(vec!["txn_a".into()]);
        assert!(found.is_empty());
        assert_eq!(missing, ["txn_a"]);
        assert_eq!(handoff.len(), 1);
    }

    #[test]
    fn the_oldest_rows_go_first_and_the_bound_holds() {
        let handoff = QueuedHandoff::default();
        handoff.enable();
        let records: Vec<TransactionRecord> = (0..HANDOFF_RECORDS_MAX + 10)
            .map(|i| record(&format!("txn_{i}")))
            .collect();
        handoff.keep(&records);
        assert_eq!(handoff.len(), HANDOFF_RECORDS_MAX);
        let (found, _) = handoff.take(vec!["txn_0".into(), "txn_9".into(), "txn_10".into()]);
        assert_eq!(found.len(), 1, "the ten oldest were evicted");
        // Taking and keeping many times over leaves the id list bounded too.
        for round in 0..5 {
            let ids: Vec<String> = (0..HANDOFF_RECORDS_MAX)
                .map(|i| format!("r{round}_{i}"))
                .collect();
            let batch: Vec<TransactionRecord> = ids.iter().map(|id| record(id)).collect();
            handoff.keep(&batch);
            handoff.take(ids);
        }
        let kept = handoff.kept.lock().unwrap();
        assert!(kept.order.len() <= 2 * HANDOFF_RECORDS_MAX);
        assert!(kept.records.len() <= HANDOFF_RECORDS_MAX);
    }
}
