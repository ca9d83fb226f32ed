//! `coffer bench --scenario history`: reads of past balances (`GET /balances/{id}/at`) at
//! random times over balances with a long history, each answer checked exactly.
//!
//! Setup (untimed): `--balances` balances (16 by default), each one side of
//! `--history-transactions` transfers (10,000 by default) between them, after a funding
//! transfer each, written with `POST /transactions/bulk` (1,000 a request). The transfers are
//! dated (`effective_date`) at random times over the last `--history-days` days (30), as a
//! ledger that has run for a month has them, or an import of one; with `--history-days 0`
//! they carry no date (all "now") and the run waits until they are older than the
//! snapshotter's settle time. Then a snapshot pass over every balance
//! (`POST /balances-snapshots`) is waited for (`coffer_snapshot_full_passes_total`).
//!
//! Load (timed): `--concurrency` clients, each asking for a random balance at a random time
//! between a day before the first transfer and now. Every answer is compared with the replay
//! of the transfers the tool wrote; a difference fails the check.

use super::check::{Amounts, BalanceCheck, Counts, Mismatch};
use super::cpu::CpuSample;
use super::http::{Http, Reply};
use super::report::{Latency, RunSettings, ScenarioReport, Status};
use super::scenario::Options;
use anyhow::Context;
use chrono::{DateTime, Duration as TimeDelta, SecondsFormat, Utc};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Transfers a bulk request of the setup.
const SETUP_BATCH: usize = 1_000;
/// How long the setup waits for its snapshot pass.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(600);
/// Mismatches listed in the report.
const MISMATCHES_LISTED_MAX: usize = 20;
/// What each balance is funded with (minor units): far more than its transfers move.
const FUNDING: i64 = 1_000_000_000;

/// The shape of the history.
#[derive(Debug, Clone, Copy)]
pub struct HistoryShape {
    pub transactions_per_balance: usize,
    pub days: u32,
}

/// One balance's history: effective times in order, with the credit and debit totals up to
/// and including each.
#[derive(Default)]
struct Ledger {
    times: Vec<DateTime<Utc>>,
    totals: Vec<(i128, i128)>,
}

impl Ledger {
    fn from_entries(mut entries: Vec<(DateTime<Utc>, i128, i128)>) -> Self {
        entries.sort_by_key(|e| e.0);
        let mut ledger = Ledger::default();
        let (mut credit, mut debit) = (0i128, 0i128);
        for (at, c, d) in entries {
            credit += c;
            debit += d;
            ledger.times.push(at);
            ledger.totals.push((credit, debit));
        }
        ledger
    }

    /// `(credit, debit)` at `t`: every entry at or before it.
    fn at(&self, t: DateTime<Utc>) -> (i128, i128) {
        let after = self.times.partition_point(|at| *at <= t);
        match after {
            0 => (0, 0),
            n => self.totals[n - 1],
        }
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn time_text(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// What the setup made.
struct Setup {
    balances: Vec<String>,
    ledgers: Vec<Ledger>,
    window: (DateTime<Utc>, DateTime<Utc>),
    transfers: usize,
    secs: f64,
}

async fn post_ok(http: &Http, path: &str, body: &Value) -> anyhow::Result<Reply> {
    let reply = http.post(path, body).await?;
    anyhow::ensure!(reply.is_success(), "POST {path}: {}", reply.describe());
    Ok(reply)
}

async fn snapshot_passes(http: &Http) -> anyhow::Result<u64> {
    let reply = http
        .get_text("/metrics")
        .await
        .context("GET /metrics (the bench needs it open: no metrics_bearer_token)")?;
    reply
        .lines()
        .find_map(|line| line.strip_prefix("coffer_snapshot_full_passes_total "))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("/metrics has no coffer_snapshot_full_passes_total"))
}

async fn set_up(
    http: &Http,
    opts: &Options,
    shape: HistoryShape,
    rng: &mut Rng,
) -> anyhow::Result<Setup> {
    let started = Instant::now();
    let run = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let ledger = post_ok(
        http,
        "/ledgers",
        &json!({ "name": format!("bench-history-{run}") }),
    )
    .await?
    .json["ledger_id"]
        .as_str()
        .context("ledger_id")?
        .to_owned();
    let count = opts.balances.unwrap_or(16).max(2);
    let mut balances = Vec::with_capacity(count);
    for _ in 0..count {
        let reply = post_ok(
            http,
            "/balances",
            &json!({ "ledger_id": ledger, "currency": "USD" }),
        )
        .await?;
        balances.push(
            reply.json["balance_id"]
                .as_str()
                .context("balance_id")?
                .to_owned(),
        );
    }
    let now = Utc::now();
    let undated = shape.days == 0;
    let start = if undated {
        now
    } else {
        now - TimeDelta::days(i64::from(shape.days))
    };
    // Dated transfers end a minute ago: older than the snapshotter's settle time.
    let span_micros = (now - TimeDelta::minutes(1) - start)
        .num_microseconds()
        .unwrap_or(0)
        .max(1) as u64;
    let world = format!("@BenchHistory-{run}");
    let mut entries: Vec<Vec<(DateTime<Utc>, i128, i128)>> = vec![Vec::new(); count];
    let mut items = Vec::new();
    let funded_at = start - TimeDelta::hours(1);
    for (index, balance) in balances.iter().enumerate() {
        items.push(json!({
            "precise_amount": FUNDING, "currency": "USD", "description": "history funding",
            "reference": format!("bench-history-{run}-fund-{index}"),
            "source": world, "destination": balance, "allow_overdraft": true,
            "effective_date": (!undated).then(|| time_text(&funded_at)),
        }));
        entries[index].push((funded_at, i128::from(FUNDING), 0));
    }
    // Each transfer is one entry of two balances: this many give each its share.
    let transfers = count * shape.transactions_per_balance / 2;
    for seq in 0..transfers {
        let source = rng.below(count as u64) as usize;
        let mut destination = rng.below(count as u64 - 1) as usize;
        if destination >= source {
            destination += 1;
        }
        let amount = 1 + rng.below(10_000) as i64;
        let at = start + TimeDelta::microseconds(rng.below(span_micros) as i64);
        items.push(json!({
            "precise_amount": amount, "currency": "USD", "description": "history",
            "reference": format!("bench-history-{run}-{seq}"),
            "source": balances[source], "destination": balances[destination],
            "allow_overdraft": true,
            "effective_date": (!undated).then(|| time_text(&at)),
        }));
        entries[source].push((at, 0, i128::from(amount)));
        entries[destination].push((at, i128::from(amount), 0));
    }
    for chunk in items.chunks(SETUP_BATCH) {
        let body = json!({ "transactions": chunk, "atomic": true, "skip_queue": true });
        post_ok(http, "/transactions/bulk", &body).await?;
    }
    let mut window = (funded_at - TimeDelta::days(1), Utc::now());
    if undated {
        // The server stamped them: times unknown to the tool, so read the rows back.
        entries = read_back_entries(http, &balances).await?;
        // Reads over the span the transfers took (and a second before it).
        let first = entries.iter().flatten().map(|e| e.0).min();
        window.0 = first.unwrap_or_else(Utc::now) - TimeDelta::seconds(1);
        // Wait out the snapshotter's settle time, so a pass covers them.
        actix_web::rt::time::sleep(Duration::from_secs(11)).await;
    }
    let before = snapshot_passes(http).await?;
    post_ok(http, "/balances-snapshots?batch_size=1000", &json!({})).await?;
    let deadline = Instant::now() + SNAPSHOT_WAIT;
    while snapshot_passes(http).await? <= before {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the snapshot pass did not finish"
        );
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(Setup {
        balances,
        ledgers: entries.into_iter().map(Ledger::from_entries).collect(),
        window,
        transfers,
        secs: started.elapsed().as_secs_f64(),
    })
}

/// Every APPLIED row of the balances, as entries (undated runs).
async fn read_back_entries(
    http: &Http,
    balances: &[String],
) -> anyhow::Result<Vec<Vec<(DateTime<Utc>, i128, i128)>>> {
    let mut entries = vec![Vec::new(); balances.len()];
    for (index, balance) in balances.iter().enumerate() {
        let mut offset = 0;
        loop {
            let path = format!(
                "/transactions?balance_id_eq={balance}&status_eq=APPLIED&limit=1000&offset={offset}"
            );
            let reply = http.get(&path).await?;
            anyhow::ensure!(reply.is_success(), "GET {path}: {}", reply.describe());
            let rows = reply.json.as_array().cloned().unwrap_or_default();
            for row in &rows {
                let at = DateTime::parse_from_rfc3339(row["created_at"].as_str().unwrap_or(""))?
                    .with_timezone(&Utc);
                let amount = i128::from(row["precise_amount"].as_i64().context("amount")?);
                if row["destination"] == balance.as_str() {
                    entries[index].push((at, amount, 0));
                } else {
                    entries[index].push((at, 0, amount));
                }
            }
            offset += rows.len();
            if rows.len() < 1000 {
                break;
            }
        }
    }
    Ok(entries)
}

/// What the timed part saw.
#[derive(Default)]
struct Reads {
    sent: u64,
    ok: u64,
    latencies: Vec<u32>,
    errors: BTreeMap<String, u64>,
    mismatch_count: u64,
    mismatches: Vec<Mismatch>,
}

async fn reader(
    http: Http,
    setup: Rc<Setup>,
    reads: Rc<RefCell<Reads>>,
    deadline: Instant,
    seed: u64,
) {
    let mut rng = Rng(seed | 1);
    let (from, to) = setup.window;
    let span = (to - from).num_microseconds().unwrap_or(1).max(1) as u64;
    while Instant::now() < deadline {
        let index = rng.below(setup.balances.len() as u64) as usize;
        let t = from + TimeDelta::microseconds(rng.below(span) as i64);
        let path = format!(
            "/balances/{}/at?timestamp={}",
            setup.balances[index],
            time_text(&t)
        );
        let sent = Instant::now();
        let result = http.get(&path).await;
        let micros = sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
        let mut reads = reads.borrow_mut();
        reads.sent += 1;
        match result {
            Ok(reply) if reply.is_success() => {
                reads.ok += 1;
                reads.latencies.push(micros);
                let (credit, debit) = setup.ledgers[index].at(t);
                let got = |field: &str| {
                    reply.json["balance"][field]
                        .as_i64()
                        .map(i128::from)
                        .unwrap_or(i128::MIN)
                };
                let (got_credit, got_debit) = (got("credit_balance"), got("debit_balance"));
                if (got_credit, got_debit) != (credit, debit) || got("balance") != credit - debit {
                    reads.mismatch_count += 1;
                    if reads.mismatches.len() < MISMATCHES_LISTED_MAX {
                        reads.mismatches.push(Mismatch {
                            balance: format!("{} at {}", setup.balances[index], time_text(&t)),
                            expected: Amounts {
                                balance: credit - debit,
                                inflight: 0,
                            },
                            actual: Some(Amounts {
                                balance: got_credit - got_debit,
                                inflight: 0,
                            }),
                        });
                    }
                }
            }
            Ok(reply) => *reads.errors.entry(reply.error_code()).or_default() += 1,
            Err(error) => *reads.errors.entry(error.code.to_owned()).or_default() += 1,
        }
    }
}

/// Runs the scenario (see the module docs).
pub async fn run(http: &Http, opts: &Options, shape: HistoryShape) -> ScenarioReport {
    let mut rng = Rng(opts.seed | 1);
    let mut report = empty_report(http, opts);
    let setup = match set_up(http, opts, shape, &mut rng).await {
        Ok(setup) => Rc::new(setup),
        Err(error) => {
            report.status = Status::Error;
            report.error = Some(format!("setup failed: {error:#}"));
            return report;
        }
    };
    report.settings.balances = setup.balances.len();
    report.setup_secs = setup.secs;
    let reads = Rc::new(RefCell::new(Reads::default()));
    let cpu_start = CpuSample::take(http.port());
    let started = Instant::now();
    let deadline = started + opts.duration;
    let readers: Vec<_> = (0..opts.concurrency)
        .map(|i| {
            actix_web::rt::spawn(reader(
                http.clone(),
                setup.clone(),
                reads.clone(),
                deadline,
                rng.next() ^ i as u64,
            ))
        })
        .collect();
    for handle in readers {
        let _ = handle.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_end = CpuSample::take(http.port());
    let mut reads = reads.take();
    report.elapsed_secs = elapsed;
    report.requests_sent = reads.sent;
    report.requests_ok = reads.ok;
    report.requests_per_sec = if elapsed > 0.0 {
        reads.ok as f64 / elapsed
    } else {
        0.0
    };
    report.latency = Latency::from_micros(&mut reads.latencies);
    report.errors = reads.errors.clone();
    report.cost = match (cpu_start, cpu_end) {
        (Some(start), Some(end)) => Some(start.cost_until(&end, reads.ok)),
        _ => None,
    };
    let mut failures = Vec::new();
    if reads.mismatch_count > 0 {
        failures.push(format!(
            "{} past balance(s) differ from the replay of the transfers written",
            reads.mismatch_count
        ));
    }
    if reads.ok == 0 {
        failures.push("no read was answered".to_owned());
    }
    report.check = Some(BalanceCheck {
        passed: failures.is_empty(),
        balances_checked: reads.ok,
        mismatch_count: reads.mismatch_count,
        mismatches: reads.mismatches,
        sum_balance: 0,
        sum_inflight: 0,
        counts: Counts::default(),
        failures,
    });
    report.status = if report.check.as_ref().is_some_and(|c| c.passed) {
        Status::Passed
    } else {
        Status::CheckFailed
    };
    report.notes.push(format!(
        "{} balances, each one side of about {} transactions ({} transfers written in setup){}; every answer checked against the replay",
        setup.balances.len(),
        shape.transactions_per_balance,
        setup.transfers,
        if shape.days == 0 {
            String::from(", undated")
        } else {
            format!(", dated over the last {} days", shape.days)
        }
    ));
    report
}

fn empty_report(http: &Http, opts: &Options) -> ScenarioReport {
    let settings = RunSettings {
        duration_secs: opts.duration.as_secs_f64(),
        concurrency: opts.concurrency,
        balances: opts.balances.unwrap_or(16),
        batch_size: 1,
        rate: None,
        max_requests: opts.max_requests,
    };
    ScenarioReport::empty(
        "history",
        true,
        http.base_url(),
        settings,
        Status::Error,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_ledger_answers_the_totals_at_or_before_a_time() {
        let t = |s: i64| Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap();
        let ledger = Ledger::from_entries(vec![(t(10), 5, 0), (t(5), 0, 2), (t(10), 1, 0)]);
        assert_eq!(ledger.at(t(0)), (0, 0));
        assert_eq!(ledger.at(t(5)), (0, 2));
        assert_eq!(ledger.at(t(9)), (0, 2));
        assert_eq!(ledger.at(t(10)), (6, 2));
        assert_eq!(ledger.at(t(99)), (6, 2));
    }
}
