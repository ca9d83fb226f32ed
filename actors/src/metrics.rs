//! Prometheus metrics, written by hand: atomic counters and fixed-bucket histograms, rendered
//! in the text exposition format (version 0.0.4).
//!
//! One [`Metrics`] per [`crate::store::Store`], so per [`Ledger`]: several servers in one
//! process (the tests) each count their own. Recording is a few relaxed atomic adds; labelled
//! series are looked up under a read lock and created once. Label values that come from users
//! (currencies) are capped per family ([`SERIES_MAX`]); later values fold into `_other`.
//!
//! What records what:
//! - the HTTP middleware: requests and latency by method, route and status; refused
//!   transaction requests by reason;
//! - [`Ledger`]'s submit: rows stored, by status and currency (REJECTED rows of the queued
//!   path also count as rejections); units waiting for the committer;
//! - the committer: batch sizes and commit latency ([`Metrics::observe_commit`]);
//! - the queue workers: how long a QUEUED row waited until it was applied;
//! - the event dispatchers: deliveries by sink and outcome.
//!
//! Gauges read at scrape time: live balance actors, queue depth, outbox depth, dead events
//! and lag by sink (every transaction hook under one `sink="hook"`, so the series stay few).

use crate::domain::transaction::REJECTION_REASON_KEY;
use crate::domain::{TransactionRecord, TransactionStatus};
use crate::ledger::Ledger;
use crate::store::ItemOutcome;
use crate::LedgerError;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds: HTTP requests and group commits.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Items per group commit.
pub const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];
/// Seconds a queued transaction waited: from its QUEUED row to its applied child.
pub const QUEUE_WAIT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];
/// Most series per labelled family; more fold into one series labelled `_other`.
pub const SERIES_MAX: usize = 2000;
/// How long a scrape waits for the queue depth.
const QUEUE_DEPTH_TIMEOUT: Duration = Duration::from_millis(1000);

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket, not cumulative (cumulated when rendered).
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    /// An `f64`, as bits.
    sum: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    pub fn observe(&self, value: f64) {
        let index = self
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(self.bounds.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn sum(&self) -> f64 {
        f64::from_bits(self.sum.load(Ordering::Relaxed))
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let separator = if labels.is_empty() { "" } else { "," };
        for (index, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = match self.bounds.get(index) {
                Some(bound) => format_float(*bound),
                None => "+Inf".to_owned(),
            };
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{separator}le=\"{le}\"}} {cumulative}"
            );
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", format_float(self.sum()));
        let _ = writeln!(out, "{name}_count{braces} {}", self.count());
    }
}

/// Series of one metric keyed by their rendered labels (`a="x",b="y"`).
struct Family<T> {
    names: &'static [&'static str],
    series: RwLock<HashMap<String, Arc<T>>>,
    make: fn() -> T,
}

impl<T> Family<T> {
    fn new(names: &'static [&'static str], make: fn() -> T) -> Self {
        Self {
            names,
            series: RwLock::new(HashMap::new()),
            make,
        }
    }

    fn get(&self, values: &[&str]) -> Arc<T> {
        debug_assert_eq!(values.len(), self.names.len());
        let key = render_labels(self.names, values);
        if let Some(series) = self.read().get(&key) {
            return series.clone();
        }
        let mut series = self.series.write().unwrap_or_else(|p| p.into_inner());
        let key = if series.len() >= SERIES_MAX && !series.contains_key(&key) {
            render_labels(self.names, &vec!["_other"; self.names.len()])
        } else {
            key
        };
        series
            .entry(key)
            .or_insert_with(|| Arc::new((self.make)()))
            .clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<T>>> {
        self.series.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The series sorted by labels, for a stable exposition.
    fn sorted(&self) -> Vec<(String, Arc<T>)> {
        let mut series: Vec<_> = self
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        series.sort_by(|a, b| a.0.cmp(&b.0));
        series
    }
}

/// Counts units handed to the committer and not yet answered while alive.
pub struct PendingGuard(Arc<Metrics>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.committer_pending.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct Metrics {
    started: SystemTime,
    http_requests: Family<Counter>,
    http_duration: Family<Histogram>,
    transactions: Family<Counter>,
    rejections: Family<Counter>,
    commit_batch_size: Histogram,
    commit_duration: Histogram,
    commit_failures: Counter,
    commit_reorders: Counter,
    balance_actors_retired: Counter,
    committer_pending: AtomicI64,
    queue_wait: Histogram,
    /// Milliseconds the most recently applied queued transaction waited.
    queue_lag_ms: AtomicU64,
    queue_retries: Counter,
    /// QUEUED rows workers took from this process's handoff / read from the database.
    queue_rows_handed_off: Counter,
    queue_rows_read_back: Counter,
    snapshots_written: Counter,
    snapshot_entries_read: Counter,
    snapshot_full_passes: Counter,
    /// Balances the snapshotter knows have entries not covered by a snapshot yet.
    snapshot_pending_balances: AtomicI64,
    /// Event deliveries by sink label and outcome: delivered, failed (to be retried),
    /// dead, deferred (open circuit), skipped (behind a failed event of a key).
    event_deliveries: Family<Counter>,
    /// Sink labels of this process's dispatchers: their outbox gauges are rendered even
    /// when they have no rows (0, not a vanished series).
    outbox_sinks: RwLock<std::collections::BTreeSet<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            started: SystemTime::now(),
            http_requests: Family::new(&["method", "route", "status"], Counter::default),
            http_duration: Family::new(&["method", "route", "status"], || {
                Histogram::new(LATENCY_BUCKETS)
            }),
            transactions: Family::new(&["status", "currency"], Counter::default),
            rejections: Family::new(&["reason"], Counter::default),
            commit_batch_size: Histogram::new(BATCH_BUCKETS),
            commit_duration: Histogram::new(LATENCY_BUCKETS),
            commit_failures: Counter::default(),
            commit_reorders: Counter::default(),
            balance_actors_retired: Counter::default(),
            committer_pending: AtomicI64::new(0),
            queue_wait: Histogram::new(QUEUE_WAIT_BUCKETS),
            queue_lag_ms: AtomicU64::new(0),
            queue_retries: Counter::default(),
            queue_rows_handed_off: Counter::default(),
            queue_rows_read_back: Counter::default(),
            snapshots_written: Counter::default(),
            snapshot_entries_read: Counter::default(),
            snapshot_full_passes: Counter::default(),
            snapshot_pending_balances: AtomicI64::new(0),
            event_deliveries: Family::new(&["sink", "outcome"], Counter::default),
            outbox_sinks: RwLock::default(),
        }
    }
}

impl Metrics {
    /// One HTTP request. `route` is the matched pattern (`/transactions/{id}`), never the raw
    /// path, so the series stay few.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let status = status.to_string();
        let labels = [method, route, status.as_str()];
        self.http_requests.get(&labels).inc();
        self.http_duration
            .get(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// A transaction refused or rejected, by a short reason (see [`reason_label`]).
    pub fn observe_rejection(&self, reason: &str) {
        self.rejections.get(&[reason]).inc();
    }

    /// One group commit of `items` items (the committer's hook).
    pub fn observe_commit(&self, items: usize, elapsed: Duration, committed: bool) {
        self.commit_batch_size.observe(items as f64);
        self.commit_duration.observe(elapsed.as_secs_f64());
        if !committed {
            self.commit_failures.inc();
        }
    }

    /// A group commit that inserted its rows first and then met a refusal, so it was
    /// written again deciding first (see `store::commit`).
    pub fn observe_commit_reorder(&self) {
        self.commit_reorders.inc();
    }

    /// Balance actors the full registry retired (least recently used first) to make room.
    pub fn observe_actors_retired(&self, count: usize) {
        self.balance_actors_retired.add(count as u64);
    }

    /// The outcomes of one submitted unit: every stored row by status and currency.
    pub fn observe_stored(&self, outcomes: &[ItemOutcome]) {
        for outcome in outcomes {
            if let ItemOutcome::Stored(record) = outcome {
                self.transactions
                    .get(&[record.status.as_str(), record.currency.as_str()])
                    .inc();
                if record.status == TransactionStatus::Rejected {
                    self.observe_rejection(stored_rejection_reason(record));
                }
            }
        }
    }

    /// Call before handing a unit to the committer; the guard counts it until dropped.
    pub fn pending_guard(self: &Arc<Self>) -> PendingGuard {
        self.committer_pending.fetch_add(1, Ordering::Relaxed);
        PendingGuard(self.clone())
    }

    /// Units handed to the committer and not yet answered (its mailbox and running batch).
    pub fn committer_pending(&self) -> i64 {
        self.committer_pending.load(Ordering::Relaxed)
    }

    /// A queue worker applied this QUEUED (or due SCHEDULED) row.
    pub fn observe_queue_applied(&self, queued: &TransactionRecord) {
        let since = queued
            .scheduled_for
            .filter(|at| *at > queued.created_at)
            .unwrap_or(queued.created_at);
        let waited = (chrono::Utc::now() - since)
            .to_std()
            .unwrap_or(Duration::ZERO);
        self.queue_wait.observe(waited.as_secs_f64());
        self.queue_lag_ms
            .store(waited.as_millis() as u64, Ordering::Relaxed);
    }

    /// A queue worker failed to apply an entry; it will be delivered again.
    pub fn observe_queue_retry(&self) {
        self.queue_retries.inc();
    }

    /// A worker loaded the rows of its entries: `handed_off` from the committer's handoff,
    /// `read_back` from the database (see `queue::handoff`).
    pub fn observe_queued_rows_loaded(&self, handed_off: usize, read_back: usize) {
        self.queue_rows_handed_off.add(handed_off as u64);
        self.queue_rows_read_back.add(read_back as u64);
    }

    /// How many requests of this method, route and status were counted (tests, tooling).
    pub fn requests(&self, method: &str, route: &str, status: u16) -> u64 {
        let key = render_labels(
            self.http_requests.names,
            &[method, route, &status.to_string()],
        );
        self.http_requests.read().get(&key).map_or(0, |c| c.get())
    }

    /// One pass of the snapshotter over some balances.
    pub fn observe_snapshot_pass(&self, entries_read: u64, snapshots_written: u64) {
        self.snapshot_entries_read.add(entries_read);
        self.snapshots_written.add(snapshots_written);
    }

    /// A pass over every balance finished (`POST /balances-snapshots`, or the daily one).
    pub fn observe_snapshot_full_pass(&self) {
        self.snapshot_full_passes.inc();
    }

    pub fn set_snapshot_pending_balances(&self, count: usize) {
        self.snapshot_pending_balances
            .store(count as i64, Ordering::Relaxed);
    }

    pub fn snapshot_full_passes(&self) -> u64 {
        self.snapshot_full_passes.get()
    }

    /// Everything recorded so far, in the text exposition format.
    pub fn render(&self, out: &mut String) {
        self.render_snapshots(out);
        self.render_events(out);
        header(
            out,
            "coffer_http_requests_total",
            "counter",
            "HTTP requests by method, matched route and status.",
        );
        for (labels, counter) in self.http_requests.sorted() {
            let _ = writeln!(
                out,
                "coffer_http_requests_total{{{labels}}} {}",
                counter.get()
            );
        }
        header(
            out,
            "coffer_http_request_duration_seconds",
            "histogram",
            "HTTP request latency by method, matched route and status.",
        );
        for (labels, histogram) in self.http_duration.sorted() {
            histogram.render(out, "coffer_http_request_duration_seconds", &labels);
        }
        header(
            out,
            "coffer_transactions_total",
            "counter",
            "Transaction rows stored, by status and currency.",
        );
        for (labels, counter) in self.transactions.sorted() {
            let _ = writeln!(
                out,
                "coffer_transactions_total{{{labels}}} {}",
                counter.get()
            );
        }
        header(
            out,
            "coffer_transactions_rejected_total",
            "counter",
            "Transactions refused on request or stored REJECTED by a worker, by reason.",
        );
        for (labels, counter) in self.rejections.sorted() {
            let _ = writeln!(
                out,
                "coffer_transactions_rejected_total{{{labels}}} {}",
                counter.get()
            );
        }
        header(
            out,
            "coffer_commit_batch_size",
            "histogram",
            "Items written per group commit.",
        );
        self.commit_batch_size
            .render(out, "coffer_commit_batch_size", "");
        header(
            out,
            "coffer_commit_duration_seconds",
            "histogram",
            "Duration of a group commit's database transaction.",
        );
        self.commit_duration
            .render(out, "coffer_commit_duration_seconds", "");
        header(
            out,
            "coffer_commit_failures_total",
            "counter",
            "Group commits that failed (every item of the batch got the error).",
        );
        let _ = writeln!(
            out,
            "coffer_commit_failures_total {}",
            self.commit_failures.get()
        );
        header(
            out,
            "coffer_commit_reorders_total",
            "counter",
            "Group commits written again, deciding before inserting, after a refusal.",
        );
        let _ = writeln!(
            out,
            "coffer_commit_reorders_total {}",
            self.commit_reorders.get()
        );
        header(
            out,
            "coffer_balance_actors_retired_total",
            "counter",
            "Balance actors stopped to keep the registry within coffer.balance_actors_max.",
        );
        let _ = writeln!(
            out,
            "coffer_balance_actors_retired_total {}",
            self.balance_actors_retired.get()
        );
        header(
            out,
            "coffer_committer_pending",
            "gauge",
            "Units handed to the committer and not yet answered: its mailbox plus the running batch.",
        );
        let _ = writeln!(out, "coffer_committer_pending {}", self.committer_pending());
        header(
            out,
            "coffer_queue_wait_seconds",
            "histogram",
            "Time from a QUEUED row (or its scheduled time) until a worker applied it.",
        );
        self.queue_wait.render(out, "coffer_queue_wait_seconds", "");
        header(
            out,
            "coffer_queue_lag_seconds",
            "gauge",
            "How long the most recently applied queued transaction waited.",
        );
        let _ = writeln!(
            out,
            "coffer_queue_lag_seconds {}",
            format_float(self.queue_lag_ms.load(Ordering::Relaxed) as f64 / 1000.0)
        );
        header(
            out,
            "coffer_queue_retries_total",
            "counter",
            "Queue entries a worker failed to apply; they are delivered again.",
        );
        let _ = writeln!(
            out,
            "coffer_queue_retries_total {}",
            self.queue_retries.get()
        );
        header(
            out,
            "coffer_queue_rows_loaded_total",
            "counter",
            "QUEUED rows workers loaded: handed off by this process's committer, or read back.",
        );
        for (from, counter) in [
            ("handoff", &self.queue_rows_handed_off),
            ("database", &self.queue_rows_read_back),
        ] {
            let _ = writeln!(
                out,
                "coffer_queue_rows_loaded_total{{from=\"{from}\"}} {}",
                counter.get()
            );
        }
        header(
            out,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch.",
        );
        let started = self
            .started
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let _ = writeln!(
            out,
            "process_start_time_seconds {}",
            format_float(started.floor())
        );
    }
}

/// The sink label of a metric: every transaction hook (`hook:<id>`) is `hook`.
pub fn sink_label(sink: &str) -> &str {
    if sink.starts_with("hook:") {
        "hook"
    } else {
        sink
    }
}

/// The outbox gauges by sink label: every label in `known` (0 when it has no rows) and
/// every label with rows.
fn render_outbox(
    out: &mut String,
    stats: &[crate::events::admin::SinkStats],
    known: &std::collections::BTreeSet<String>,
) {
    use std::collections::BTreeMap;
    let mut by_label: BTreeMap<&str, (u64, u64, Option<i64>)> =
        known.iter().map(|k| (k.as_str(), (0, 0, None))).collect();
    for sink in stats {
        let entry = by_label.entry(sink_label(&sink.sink)).or_default();
        entry.0 += sink.pending;
        entry.1 += sink.dead;
        entry.2 = match (entry.2, sink.oldest_pending_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    let now = chrono::Utc::now().timestamp_millis();
    header(
        out,
        "coffer_outbox_lag_seconds",
        "gauge",
        "Age of the oldest undelivered (pending) outbox event of a sink; 0 when none is.",
    );
    for (label, (_, _, oldest)) in &by_label {
        let lag_ms = oldest.map_or(0, |oldest| (now - oldest).max(0));
        let _ = writeln!(
            out,
            "coffer_outbox_lag_seconds{{{}}} {}",
            render_labels(&["sink"], &[label]),
            format_float(lag_ms as f64 / 1000.0)
        );
    }
    header(
        out,
        "coffer_outbox_depth",
        "gauge",
        "Outbox events of a sink not delivered yet (pending, retries included).",
    );
    for (label, (pending, _, _)) in &by_label {
        let _ = writeln!(
            out,
            "coffer_outbox_depth{{{}}} {pending}",
            render_labels(&["sink"], &[label])
        );
    }
    header(
        out,
        "coffer_outbox_dead",
        "gauge",
        "Outbox events of a sink out of attempts, kept with their last error.",
    );
    for (label, (_, dead, _)) in &by_label {
        let _ = writeln!(
            out,
            "coffer_outbox_dead{{{}}} {dead}",
            render_labels(&["sink"], &[label])
        );
    }
}

/// The full exposition of a ledger: its recorded metrics and the gauges read now.
pub async fn exposition(ledger: &Ledger) -> String {
    let mut out = String::with_capacity(16 * 1024);
    ledger.metrics().render(&mut out);
    header(
        &mut out,
        "coffer_balance_actors_live",
        "gauge",
        "Balance actors currently live in this process.",
    );
    let _ = writeln!(
        out,
        "coffer_balance_actors_live {}",
        ledger.live_balance_actors()
    );
    header(
        &mut out,
        "coffer_queue_depth",
        "gauge",
        "Queue entries waiting or delivered and not yet acknowledged, over all shards.",
    );
    match tokio::time::timeout(QUEUE_DEPTH_TIMEOUT, ledger.queue().depth()).await {
        Ok(Ok(depth)) => {
            let _ = writeln!(out, "coffer_queue_depth {depth}");
        }
        Ok(Err(error)) => tracing::debug!(%error, "queue depth unavailable"),
        Err(_) => tracing::debug!("queue depth timed out"),
    }
    let known = ledger.metrics().outbox_sinks();
    if ledger.store().writes_events() || !known.is_empty() {
        let stats = ledger.store().outbox_sink_stats(false);
        match tokio::time::timeout(QUEUE_DEPTH_TIMEOUT, stats).await {
            Ok(Ok(stats)) => render_outbox(&mut out, &stats, &known),
            Ok(Err(error)) => tracing::debug!(%error, "outbox stats unavailable"),
            Err(_) => tracing::debug!("outbox stats timed out"),
        }
    } else {
        render_outbox(&mut out, &[], &known);
    }
    header(
        &mut out,
        "coffer_build_info",
        "gauge",
        "Always 1; the version label is the running build.",
    );
    let _ = writeln!(
        out,
        "coffer_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    out
}

impl Metrics {
    /// A dispatcher of the sink labelled `label` runs in this process.
    pub fn register_outbox_sink(&self, label: &str) {
        let mut sinks = self.outbox_sinks.write().unwrap_or_else(|p| p.into_inner());
        sinks.insert(label.to_owned());
    }

    fn outbox_sinks(&self) -> std::collections::BTreeSet<String> {
        self.outbox_sinks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// What the dispatcher of the sink labelled `label` did with a claimed batch.
    pub fn observe_deliveries(&self, label: &str, settled: &crate::events::outbox::Settled) {
        let count = |outcome: &str, n: usize| {
            if n > 0 {
                self.event_deliveries.get(&[label, outcome]).add(n as u64);
            }
        };
        count("delivered", settled.delivered.len());
        let dead = settled
            .failed
            .iter()
            .filter(|(_, _, next, _)| next.is_none())
            .count();
        count("failed", settled.failed.len() - dead);
        count("dead", dead);
        count("deferred", settled.deferred.len());
        count("skipped", settled.released.len());
    }

    /// Deliveries of the sink labelled `label` with `outcome` so far (for tests).
    pub fn event_deliveries(&self, label: &str, outcome: &str) -> u64 {
        self.event_deliveries.get(&[label, outcome]).get()
    }

    fn render_events(&self, out: &mut String) {
        header(
            out,
            "coffer_event_deliveries_total",
            "counter",
            "Event deliveries by this process, by sink and outcome: delivered, failed (retried later), dead (out of attempts), deferred (the destination's circuit is open), skipped (behind a failed event of the same key).",
        );
        for (labels, counter) in self.event_deliveries.sorted() {
            let _ = writeln!(
                out,
                "coffer_event_deliveries_total{{{labels}}} {}",
                counter.get()
            );
        }
    }

    fn render_snapshots(&self, out: &mut String) {
        let values = [
            (
                "coffer_snapshots_written_total",
                "counter",
                "Balance snapshots written.",
                self.snapshots_written.get() as i64,
            ),
            (
                "coffer_snapshot_entries_read_total",
                "counter",
                "Transactions the snapshotter read to take snapshots.",
                self.snapshot_entries_read.get() as i64,
            ),
            (
                "coffer_snapshot_full_passes_total",
                "counter",
                "Snapshot passes over every balance that finished.",
                self.snapshot_full_passes.get() as i64,
            ),
            (
                "coffer_snapshot_pending_balances",
                "gauge",
                "Balances with transactions not covered by a snapshot yet, as this process knows.",
                self.snapshot_pending_balances.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, value) in values {
            header(out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
    }
}

/// A short, stable reason for a refusal: the label of `coffer_transactions_rejected_total`.
pub fn reason_label(error: &LedgerError) -> &'static str {
    match error {
        LedgerError::LedgerValidation(_)
        | LedgerError::BalanceValidation(_)
        | LedgerError::TransactionValidation(_)
        | LedgerError::InvalidFilter(_)
        | LedgerError::BulkItemInvalid { .. }
        | LedgerError::UnitRefused(_) => "validation",
        LedgerError::InvalidAmount(_) => "invalid_amount",
        LedgerError::InvalidDistribution(_) => "invalid_distribution",
        LedgerError::BulkEmpty | LedgerError::BulkLimitExceeded(_) => "invalid_bulk",
        LedgerError::InvalidStatusAction(_) => "invalid_status_action",
        LedgerError::SameSourceAndDestination => "same_source_and_destination",
        LedgerError::LedgerNotFound(_) => "ledger_not_found",
        LedgerError::BalanceNotFound(_) => "balance_not_found",
        LedgerError::TransactionNotFound(_) => "transaction_not_found",
        LedgerError::PrecisionMismatch { .. } => "precision_mismatch",
        LedgerError::NotInflight(_) => "not_inflight",
        LedgerError::AlreadyCommitted(_) => "already_committed",
        LedgerError::AlreadyVoided(_) => "already_voided",
        LedgerError::CommitAmountExceeded { .. } => "commit_amount_exceeded",
        LedgerError::ActionAlreadyQueued(_) => "action_already_queued",
        LedgerError::NotRefundable { .. } => "not_refundable",
        LedgerError::AlreadyRefunded(_) => "already_refunded",
        LedgerError::DuplicateReference(_) => "duplicate_reference",
        LedgerError::DuplicateBalance { .. } => "duplicate_balance",
        LedgerError::InsufficientFunds(_) => "insufficient_funds",
        LedgerError::OverdraftLimitExceeded(_) => "overdraft_limit_exceeded",
        LedgerError::BatchRefused { cause, .. } => reason_label(cause),
        LedgerError::Overloaded => "overloaded",
        // Not refusals of transfers; labelled for completeness.
        LedgerError::IdentityValidation(_)
        | LedgerError::AccountValidation(_)
        | LedgerError::MonitorValidation(_)
        | LedgerError::HookValidation(_)
        | LedgerError::InvalidTimestamp
        | LedgerError::InvalidEntityId(_)
        | LedgerError::FieldNotTokenizable(_)
        | LedgerError::FieldNotTokenized(_) => "validation",
        LedgerError::IdentityNotFound(_)
        | LedgerError::AccountNotFound(_)
        | LedgerError::MonitorNotFound(_)
        | LedgerError::HookNotFound(_)
        | LedgerError::EntityNotFound(_) => "not_found",
        LedgerError::TokenizationDisabled
        | LedgerError::DuplicateIdentity(_)
        | LedgerError::DuplicateAccount(_)
        | LedgerError::FieldAlreadyTokenized(_)
        | LedgerError::IdentityInUse { .. }
        | LedgerError::AccountNumberGeneration(_) => "other",
        LedgerError::Storage(_) | LedgerError::Queue(_) | LedgerError::Internal(_) => "internal",
    }
}

/// The reason of a REJECTED row, from the words `with_rejection` stored.
fn stored_rejection_reason(record: &TransactionRecord) -> &'static str {
    let text = record
        .meta_data
        .as_ref()
        .and_then(|m| m.get(REJECTION_REASON_KEY))
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let funds = LedgerError::InsufficientFunds(String::new()).to_string();
    let overdraft = LedgerError::OverdraftLimitExceeded(String::new()).to_string();
    let stem = |message: &str| message.split('\'').next().unwrap_or_default().to_owned();
    if text.starts_with(&stem(&funds)) {
        "insufficient_funds"
    } else if text.starts_with(&stem(&overdraft)) {
        "overdraft_limit_exceeded"
    } else {
        "other"
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn render_labels(names: &[&str], values: &[&str]) -> String {
    let mut out = String::new();
    for (index, (name, value)) in names.iter().zip(values).enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out
}

fn format_float(value: f64) -> String {
    if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if value.is_nan() {
        "NaN".to_owned()
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let histogram = Histogram::new(&[1.0, 5.0]);
        for value in [0.5, 1.0, 3.0, 7.0] {
            histogram.observe(value);
        }
        let mut out = String::new();
        histogram.render(&mut out, "x", "a=\"b\"");
        assert_eq!(
            out,
            "x_bucket{a=\"b\",le=\"1\"} 2\nx_bucket{a=\"b\",le=\"5\"} 3\n\
             x_bucket{a=\"b\",le=\"+Inf\"} 4\nx_sum{a=\"b\"} 11.5\nx_count{a=\"b\"} 4\n"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            render_labels(&["a", "b"], &["x\"y", "back\\slash\nline"]),
            "a=\"x\\\"y\",b=\"back\\\\slash\\nline\""
        );
    }

    #[test]
    fn families_fold_extra_series_into_other() {
        let family: Family<Counter> = Family::new(&["currency"], Counter::default);
        for i in 0..SERIES_MAX + 10 {
            family.get(&[&format!("C{i}")]).inc();
        }
        let series = family.sorted();
        assert_eq!(series.len(), SERIES_MAX + 1);
        let other = series
            .iter()
            .find(|(labels, _)| labels == "currency=\"_other\"")
            .unwrap();
        assert_eq!(other.1.get(), 10);
    }

    #[test]
    fn commits_and_stored_rows_are_counted() {
        let metrics = Arc::new(Metrics::default());
        metrics.observe_commit(3, Duration::from_millis(2), true);
        metrics.observe_commit(1, Duration::from_millis(1), false);
        metrics.observe_commit_reorder();
        metrics.observe_actors_retired(3);
        {
            let _pending = metrics.pending_guard();
            assert_eq!(metrics.committer_pending(), 1);
        }
        assert_eq!(metrics.committer_pending(), 0);
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(out.contains("coffer_commit_batch_size_count 2\n"), "{out}");
        assert!(out.contains("coffer_commit_batch_size_sum 4\n"), "{out}");
        assert!(out.contains("coffer_commit_failures_total 1\n"), "{out}");
        assert!(out.contains("coffer_commit_reorders_total 1\n"), "{out}");
        assert!(
            out.contains("coffer_balance_actors_retired_total 3\n"),
            "{out}"
        );
    }

    #[test]
    fn rejected_rows_are_classified_by_their_stored_reason() {
        let reason = LedgerError::InsufficientFunds("bln_x".into()).rejection_reason();
        let meta = serde_json::json!({ REJECTION_REASON_KEY: reason });
        let mut record = sample_record();
        record.meta_data = Some(meta);
        assert_eq!(stored_rejection_reason(&record), "insufficient_funds");
        let reason = LedgerError::OverdraftLimitExceeded("bln_x".into()).rejection_reason();
        record.meta_data = Some(serde_json::json!({ REJECTION_REASON_KEY: reason }));
        assert_eq!(stored_rejection_reason(&record), "overdraft_limit_exceeded");
    }

    fn sample_record() -> TransactionRecord {
        let mut record = TransactionRecord::sample_for_tests();
        record.status = TransactionStatus::Rejected;
        record
    }
}
