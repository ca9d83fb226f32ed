//! What a scenario run reports, as text and as JSON.

use super::check::BalanceCheck;
use super::cpu::Cost;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Latency of the timed requests answered 2xx (refusals are counted under `errors`, not
/// here), in milliseconds. In `inflight`, holds and commits are both requests.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// From per-request latencies in microseconds (sorted in place).
    pub fn from_micros(samples: &mut [u32]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            // Nearest rank: the smallest sample with at least q of the samples at or below it.
            let rank = (q * samples.len() as f64).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1] as f64 / 1000.0
        };
        Self {
            count: samples.len() as u64,
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: *samples.last().expect("not empty") as f64 / 1000.0,
        }
    }
}

/// The settings a scenario ran with.
#[derive(Debug, Clone, Serialize)]
pub struct RunSettings {
    pub duration_secs: f64,
    pub concurrency: usize,
    pub balances: usize,
    /// Transfers per request (bulk), 1 otherwise.
    pub batch_size: usize,
    /// Requests/s the load was paced at, if any.
    pub rate: Option<f64>,
    pub max_requests: u64,
}

/// How the queued backlog behaved (queued scenarios).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Backlog {
    /// Largest accepted − processed seen while the load ran (sampled about once a second).
    pub max: u64,
    /// Accepted − processed when the load stopped.
    pub at_end: u64,
    /// Seconds from the end of the load until every accepted transfer was processed (or the
    /// tool stopped waiting).
    pub drain_secs: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The load ran and the balance check passed.
    Passed,
    /// The load ran and the balance check failed.
    CheckFailed,
    /// The scenario's endpoint is missing or refuses the request (nothing was timed).
    Unavailable,
    /// Setup or the run could not be completed.
    Error,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub scenario: String,
    /// `skip_queue` of the timed requests.
    pub skip_queue: bool,
    pub url: String,
    pub settings: RunSettings,
    pub status: Status,
    /// For `unavailable` and `error`: what went wrong.
    pub error: Option<String>,
    /// Untimed setup (ledger, balances, funding, probe).
    pub setup_secs: f64,
    /// The timed part: from the first request to the last answer.
    pub elapsed_secs: f64,
    pub requests_sent: u64,
    /// Requests answered 2xx.
    pub requests_ok: u64,
    pub requests_per_sec: f64,
    /// Transfers accepted by the server (2xx; one request carries `batch_size` in bulk; a
    /// committed hold in inflight).
    pub transfers_accepted: u64,
    pub transfers_accepted_per_sec: f64,
    /// APPLIED transfers of this run, read back from the server.
    pub transfers_applied: u64,
    /// `transfers_applied` over the time until the server's count reached it.
    pub transfers_applied_per_sec: f64,
    /// Transfers the queue worker rejected (queued path).
    pub transfers_rejected: u64,
    pub backlog: Option<Backlog>,
    pub latency: Latency,
    /// Failed requests by `error_detail.code` (`HTTP_<status>` without one; `CLIENT_*` for
    /// requests that got no answer).
    pub errors: BTreeMap<String, u64>,
    pub check: Option<BalanceCheck>,
    /// CPU of the server and of PostgreSQL from the start of the load until the server
    /// had applied it, per operation; `None` when `/proc` shows no process on the port.
    pub cost: Option<Cost>,
    pub notes: Vec<String>,
}

impl ScenarioReport {
    /// A report of nothing run yet: `status` with `error`, every figure zero.
    pub fn empty(
        scenario: &str,
        skip_queue: bool,
        url: &str,
        settings: RunSettings,
        status: Status,
        error: Option<String>,
    ) -> Self {
        Self {
            scenario: scenario.to_owned(),
            skip_queue,
            url: url.to_owned(),
            settings,
            status,
            error,
            setup_secs: 0.0,
            elapsed_secs: 0.0,
            requests_sent: 0,
            requests_ok: 0,
            requests_per_sec: 0.0,
            transfers_accepted: 0,
            transfers_accepted_per_sec: 0.0,
            transfers_applied: 0,
            transfers_applied_per_sec: 0.0,
            transfers_rejected: 0,
            backlog: None,
            latency: Latency::default(),
            errors: BTreeMap::new(),
            check: None,
            cost: None,
            notes: Vec::new(),
        }
    }

    /// The scenario's name with its queue mode, e.g. `uniform (skip_queue)`.
    pub fn title(&self) -> String {
        if self.scenario == "history" {
            return "history (reads)".to_owned();
        }
        format!(
            "{} ({})",
            self.scenario,
            if self.skip_queue {
                "skip_queue"
            } else {
                "queued"
            }
        )
    }

    /// A few lines for a terminal.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let s = &self.settings;
        let balances = if s.balances == 0 && self.scenario == "fresh" {
            "2 new @uuid balances a transfer".to_owned()
        } else {
            format!("{} balances", s.balances)
        };
        let _ = writeln!(
            out,
            "{}: {balances}, concurrency {}, {:.1} s{}{}",
            self.title(),
            s.concurrency,
            s.duration_secs,
            if s.batch_size > 1 {
                format!(", {} transfers a request", s.batch_size)
            } else {
                String::new()
            },
            s.rate
                .map(|r| format!(", paced at {r:.0} req/s"))
                .unwrap_or_default()
        );
        match self.status {
            Status::Unavailable => {
                let _ = writeln!(
                    out,
                    "  UNAVAILABLE  {}",
                    self.error.as_deref().unwrap_or("")
                );
                return out;
            }
            Status::Error if self.requests_sent == 0 => {
                let _ = writeln!(out, "  ERROR  {}", self.error.as_deref().unwrap_or(""));
                return out;
            }
            _ => {}
        }
        let _ = writeln!(
            out,
            "  requests   {} sent, {} ok in {:.2} s: {:.0} req/s accepted (setup {:.1} s, untimed)",
            self.requests_sent,
            self.requests_ok,
            self.elapsed_secs,
            self.requests_per_sec,
            self.setup_secs
        );
        let reads = self.scenario == "history";
        if !reads {
            self.transfers_text(&mut out);
        }
        let l = &self.latency;
        let _ = writeln!(
            out,
            "  latency    p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            l.p50_ms, l.p99_ms, l.max_ms
        );
        self.details_text(&mut out, reads);
        out
    }

    fn transfers_text(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "  transfers  {} accepted ({:.0}/s); {} applied, read back ({:.0}/s){}",
            self.transfers_accepted,
            self.transfers_accepted_per_sec,
            self.transfers_applied,
            self.transfers_applied_per_sec,
            if self.transfers_rejected > 0 {
                format!("; {} rejected", self.transfers_rejected)
            } else {
                String::new()
            }
        );
    }

    fn details_text(&self, out: &mut String, reads: bool) {
        if let Some(b) = &self.backlog {
            let _ = writeln!(
                out,
                "  backlog    max {} while loading, {} at the end, drained in {:.2} s",
                b.max, b.at_end, b.drain_secs
            );
        }
        if let Some(cost) = &self.cost {
            let _ = writeln!(
                out,
                "  cost       server {} ms CPU ({} µs an operation), PostgreSQL {} ms ({} µs); server RSS peak {} MiB",
                cost.server_cpu_ms,
                cost.server_us_per_op,
                cost.postgres_cpu_ms,
                cost.postgres_us_per_op,
                cost.server_rss_peak_mib
            );
        }
        if self.errors.is_empty() {
            let _ = writeln!(out, "  errors     none");
        } else {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(code, n)| format!("{code} {n}"))
                .collect();
            let _ = writeln!(out, "  errors     {}", list.join(", "));
        }
        match &self.check {
            Some(check) if check.passed && reads => {
                let _ = writeln!(
                    out,
                    "  check      PASS: {} past balances read, each equal to the replay of the transfers written",
                    check.balances_checked
                );
            }
            Some(check) if check.passed => {
                let _ = writeln!(
                    out,
                    "  check      PASS: {} balances equal what the run implies; Σ = 0; {} applied = {} expected",
                    check.balances_checked,
                    check.counts.applied_read_back,
                    check.counts.expected_applied
                );
            }
            Some(check) => {
                let _ = writeln!(out, "  check      FAIL: {}", check.failures.join("; "));
                for m in &check.mismatches {
                    let actual = m
                        .actual
                        .map(|a| format!("balance {} inflight {}", a.balance, a.inflight))
                        .unwrap_or_else(|| "missing".to_owned());
                    let _ = writeln!(
                        out,
                        "             {}: expected balance {} inflight {}, server has {actual}",
                        m.balance, m.expected.balance, m.expected.inflight
                    );
                }
            }
            None => {
                let _ = writeln!(
                    out,
                    "  check      not run: {}",
                    self.error.as_deref().unwrap_or("")
                );
            }
        }
        if let (Some(error), Some(_)) = (&self.error, &self.check) {
            let _ = writeln!(out, "  error      {error}");
        }
        for note in &self.notes {
            let _ = writeln!(out, "  note       {note}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut samples: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        let l = Latency::from_micros(&mut samples);
        assert_eq!(
            (l.count, l.p50_ms, l.p99_ms, l.max_ms),
            (100, 50.0, 99.0, 100.0)
        );
        let mut one = vec![1500];
        let l = Latency::from_micros(&mut one);
        assert_eq!((l.p50_ms, l.p99_ms, l.max_ms), (1.5, 1.5, 1.5));
        assert_eq!(Latency::from_micros(&mut []).count, 0);
    }
}
