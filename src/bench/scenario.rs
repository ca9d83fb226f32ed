//! Scenarios: untimed setup, the timed load, waiting for the server to apply, reading the
//! outcome back, and the balance check.

use super::check::{compare, Amounts, BalanceCheck, Counts, Expectation};
use super::cpu::CpuSample;
use super::http::{encode, Http, Reply, TransportError};
use super::report::{Backlog, Latency, RunSettings, ScenarioReport, Status};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::{json, Value};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What each funded balance receives from the run's funding source before the load, in minor
/// units: far more than any bounded run can move, so `allow_overdraft: false` transfers are
/// never refused for funds.
pub const FUNDING: i128 = 1_000_000_000_000;
/// Upper bound on the transfers one scenario run records (bulk requests carry many).
pub const TRANSFERS_MAX: u64 = 2_000_000;
/// Upper bound on the follow-up look-ups made for requests that got no answer.
const RESOLVE_MAX: usize = 10_000;
/// Page sizes of the list endpoints (Coffer's maxima).
const LIST_PAGE: usize = 1_000;
const FILTER_PAGE: usize = 100;
/// How long the applied count may stay still before the tool stops waiting for it.
const SETTLE_QUIET: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Single transfers between random balances.
    Uniform,
    /// Every transfer from one balance to a random other.
    HotSource,
    /// Every transfer from a random balance to one.
    HotDestination,
    /// Every transfer between the same two balances.
    HotPair,
    /// Every transfer between two new `@uuid` indicator balances (Blnk's k6 shape).
    Fresh,
    /// `POST /transactions/bulk`, `batch_size` transfers a request, atomic, skip_queue.
    Bulk,
    /// A hold (`inflight: true`) then `PUT /transactions/inflight/{id}` commit, skip_queue.
    Inflight,
}

impl Scenario {
    pub const ALL: [Scenario; 7] = [
        Scenario::Uniform,
        Scenario::HotSource,
        Scenario::HotDestination,
        Scenario::HotPair,
        Scenario::Fresh,
        Scenario::Bulk,
        Scenario::Inflight,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Uniform => "uniform",
            Scenario::HotSource => "hot-source",
            Scenario::HotDestination => "hot-destination",
            Scenario::HotPair => "hot-pair",
            Scenario::Fresh => "fresh",
            Scenario::Bulk => "bulk",
            Scenario::Inflight => "inflight",
        }
    }

    /// Fresh runs on the queued default path; the others skip the queue unless told.
    pub fn default_skip_queue(self) -> bool {
        self != Scenario::Fresh
    }

    /// Bulk and inflight are defined with `skip_queue: true` only.
    pub fn has_queued_variant(self) -> bool {
        !matches!(self, Scenario::Bulk | Scenario::Inflight)
    }

    pub fn default_balances(self) -> usize {
        match self {
            Scenario::Bulk => 10_000,
            Scenario::Fresh => 0,
            _ => 1_000,
        }
    }
}

/// One scenario in one queue mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub scenario: Scenario,
    pub skip_queue: bool,
}

/// How hard and how long to drive.
#[derive(Debug, Clone)]
pub struct Options {
    pub duration: Duration,
    pub concurrency: usize,
    /// Balances to spread the load over (default: per scenario).
    pub balances: Option<usize>,
    /// Transfers a bulk request.
    pub batch_size: usize,
    /// Pace the load at this many requests/s (default: as fast as the server answers).
    pub rate: Option<f64>,
    /// Upper bound on timed requests.
    pub max_requests: u64,
    /// Transfer amounts are drawn from 1..=amount_max minor units.
    pub amount_max: u32,
    /// How long to wait after the load for the server to apply what it accepted.
    pub drain: Duration,
    /// Show progress bars (on stderr, when it is a terminal).
    pub progress: bool,
    pub seed: u64,
    /// Sent as every transfer's `meta_data` (none by default).
    pub meta_data: Option<Value>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(10),
            concurrency: 64,
            balances: None,
            batch_size: 1_000,
            rate: None,
            max_requests: 1_000_000,
            amount_max: 100,
            drain: Duration::from_secs(60),
            progress: true,
            seed: 0x0c0f_fe4b_e4c4,
            meta_data: None,
        }
    }
}

/// Why a scenario could not be prepared.
#[derive(Debug)]
pub enum PrepareError {
    /// The scenario's endpoint is missing or refuses the request.
    Unavailable(String),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for PrepareError {
    fn from(error: anyhow::Error) -> Self {
        PrepareError::Failed(error)
    }
}

impl std::fmt::Display for PrepareError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrepareError::Unavailable(m) => write!(f, "unavailable: {m}"),
            PrepareError::Failed(e) => write!(f, "{e:#}"),
        }
    }
}

/// What became of one transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Applied when answered (skip_queue), or a hold committed (inflight).
    Applied,
    /// Accepted onto the queue; the worker decides.
    Queued,
    /// A hold that was not committed.
    Held,
    /// Refused; nothing moved.
    Failed,
    /// No answer: the server may or may not have recorded it.
    Unknown,
    /// A hold whose commit got no answer.
    CommitUnknown,
}

/// One transfer of the timed part. Source and destination are indexes into the run's
/// balances (unused in `fresh`, where they derive from `seq`).
#[derive(Debug, Clone, Copy)]
struct Op {
    seq: u64,
    src: u32,
    dst: u32,
    amount: u32,
    outcome: Outcome,
}

#[derive(Default)]
struct WorkerLog {
    ops: Vec<Op>,
    /// Inflight: the hold's transaction id per `seq`.
    holds: Vec<(u64, String)>,
    latencies: Vec<u32>,
    errors: BTreeMap<String, u64>,
    requests_sent: u64,
    requests_ok: u64,
}

impl WorkerLog {
    fn error(&mut self, code: String) {
        *self.errors.entry(code).or_default() += 1;
    }
}

/// Counters the workers share with the progress ticker (one thread: `Cell` suffices).
#[derive(Default)]
struct Shared {
    next: Cell<u64>,
    ok: Cell<u64>,
    failed: Cell<u64>,
    accepted: Cell<u64>,
    done: Cell<bool>,
}

/// What the timed part produced.
#[derive(Default)]
struct Load {
    ops: Vec<Op>,
    holds: HashMap<u64, String>,
    latencies: Vec<u32>,
    errors: BTreeMap<String, u64>,
    requests_sent: u64,
    requests_ok: u64,
    elapsed: Duration,
    backlog_max: u64,
}

/// What the server reported after the load.
#[derive(Default, Clone)]
struct Settled {
    applied: u64,
    rejected: HashSet<u64>,
    rejected_count: u64,
    /// Seconds from the start of the load until the applied count reached its final value.
    applied_at: f64,
    backlog: Option<Backlog>,
    pending: u64,
    notes: Vec<String>,
}

/// splitmix64: enough randomness to pick balances and amounts.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A scenario with its ledger, balances and funding in place, ready to be driven.
pub struct Prepared {
    http: Http,
    plan: Plan,
    opts: Options,
    run_id: String,
    ledger_id: Option<String>,
    balances: Rc<Vec<String>>,
    funding: Option<String>,
    fresh_prefix: Option<String>,
    setup: Expectation,
    setup_secs: f64,
    load: Option<Load>,
    settled: Option<Settled>,
    notes: Vec<String>,
    /// Setup requests retried after a 5xx or no answer.
    setup_retries: Rc<Cell<u64>>,
    /// CPU counters when the load started and when the server had applied it.
    cpu: (Option<CpuSample>, Option<CpuSample>),
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

fn bar(show: bool, len: u64, prefix: &str) -> ProgressBar {
    let bar = if show {
        ProgressBar::new(len)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(style(
        "{prefix:>18} [{bar:30}] {pos}/{len} {elapsed:>4} {msg}",
    ));
    bar.set_prefix(prefix.to_owned());
    bar
}

fn expect_status(reply: &Reply, status: u16, what: &str) -> anyhow::Result<()> {
    if reply.status != status {
        anyhow::bail!("{what} answered {}", reply.describe());
    }
    Ok(())
}

fn string_field(reply: &Reply, field: &str, what: &str) -> anyhow::Result<String> {
    reply.json[field]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("{what}: the answer has no {field}: {}", reply.json))
}

fn integer(value: &Value, what: &str) -> anyhow::Result<i128> {
    if let Some(n) = value.as_i64() {
        return Ok(n.into());
    }
    if let Some(n) = value.as_u64() {
        return Ok(n.into());
    }
    anyhow::bail!("{what} is not an integer within ±2^64: {value}")
}

/// Every balance of the run, as the server lists them, keyed by indicator or id.
fn amounts_of(row: &Value) -> anyhow::Result<(String, Amounts)> {
    let key = match row["indicator"].as_str().filter(|i| !i.is_empty()) {
        Some(indicator) => indicator.to_owned(),
        None => row["balance_id"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("a balance without balance_id: {row}"))?
            .to_owned(),
    };
    let amounts = Amounts {
        balance: integer(&row["balance"], &format!("balance of {key}"))?,
        inflight: integer(
            &row["inflight_balance"],
            &format!("inflight_balance of {key}"),
        )?,
    };
    Ok((key, amounts))
}

/// Runs `count` setup steps on up to `parallel` local tasks; the first error fails the setup.
async fn in_parallel<F, Fut, T>(count: usize, parallel: usize, step: F) -> anyhow::Result<Vec<T>>
where
    F: Fn(usize) -> Fut + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>> + 'static,
    T: 'static,
{
    let next = Rc::new(Cell::new(0usize));
    let step = Rc::new(step);
    let mut tasks = Vec::new();
    for _ in 0..parallel.clamp(1, count.max(1)) {
        let (next, step) = (next.clone(), step.clone());
        tasks.push(actix_web::rt::spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.get();
                if i >= count {
                    return Ok::<_, anyhow::Error>(done);
                }
                next.set(i + 1);
                done.push((i, step(i).await?));
            }
        }));
    }
    let mut results: Vec<Option<T>> = (0..count).map(|_| None).collect();
    for task in futures_util::future::join_all(tasks).await {
        for (i, value) in task.map_err(|e| anyhow::anyhow!("setup task: {e}"))?? {
            results[i] = Some(value);
        }
    }
    Ok(results.into_iter().flatten().collect())
}

/// Prepares a scenario: checks the server, creates a ledger and balances, funds them from the
/// run's own `@indicator`, and probes the scenario's endpoint. None of this is timed.
pub async fn prepare(http: &Http, plan: Plan, opts: Options) -> Result<Prepared, PrepareError> {
    let started = Instant::now();
    let health = http
        .get("/health")
        .await
        .map_err(|e| anyhow::anyhow!("{} does not answer: {e}", http.base_url()))?;
    if health.status != 200 {
        return Err(anyhow::anyhow!("GET /health answered {}", health.describe()).into());
    }
    if opts.concurrency == 0 {
        return Err(anyhow::anyhow!("--concurrency must be at least 1").into());
    }
    let scenario = plan.scenario;
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let mut prepared = Prepared {
        http: http.clone(),
        plan,
        opts: opts.clone(),
        run_id: run_id.clone(),
        ledger_id: None,
        balances: Rc::new(Vec::new()),
        funding: None,
        fresh_prefix: None,
        setup: Expectation::default(),
        setup_secs: 0.0,
        load: None,
        settled: None,
        notes: Vec::new(),
        setup_retries: Rc::new(Cell::new(0)),
        cpu: (None, None),
    };
    if scenario == Scenario::Fresh {
        // uuid-shaped indicators that share the run's first 24 characters, so the check can
        // list them with one `indicator_like` filter.
        let uuid = uuid::Uuid::new_v4().hyphenated().to_string();
        prepared.fresh_prefix = Some(format!("@{}", &uuid[..24]));
    } else {
        let count = opts.balances.unwrap_or(scenario.default_balances());
        if count < 2 {
            return Err(
                anyhow::anyhow!("--balances must be at least 2 for {}", scenario.name()).into(),
            );
        }
        if count > u32::MAX as usize {
            return Err(anyhow::anyhow!("--balances is too large").into());
        }
        let reply = http
            .post(
                "/ledgers",
                &json!({ "name": format!("bench-{}-{run_id}", scenario.name()) }),
            )
            .await
            .map_err(anyhow::Error::from)?;
        expect_status(&reply, 201, "POST /ledgers")?;
        let ledger_id = string_field(&reply, "ledger_id", "POST /ledgers")?;
        let funding = format!("@BenchWorld-{run_id}");
        prepared.ledger_id = Some(ledger_id.clone());
        prepared.funding = Some(funding.clone());
        let progress = bar(opts.progress, count as u64 * 2, "setup");
        progress.set_message(format!("balances, funded from {funding}"));
        // Two balances first, so a missing endpoint is found before thousands are created.
        let mut balances = create_funded(http, &prepared, 2, &progress).await?;
        prepared.balances = Rc::new(balances.clone());
        let probe = match scenario {
            Scenario::Bulk => prepared.probe_bulk().await,
            Scenario::Inflight => prepared.probe_inflight().await,
            _ => Ok(()),
        };
        if let Err(e) = probe {
            progress.finish_and_clear();
            return Err(e);
        }
        balances.extend(create_funded(http, &prepared, count - 2, &progress).await?);
        progress.finish_and_clear();
        for balance in &balances {
            prepared.setup.apply(&funding, balance, FUNDING);
        }
        prepared.balances = Rc::new(balances);
    }
    prepared.setup_secs = started.elapsed().as_secs_f64();
    if prepared.setup_retries.get() > 0 {
        prepared.notes.push(format!(
            "setup retried {} request(s) after a 5xx or no answer",
            prepared.setup_retries.get()
        ));
    }
    Ok(prepared)
}

/// Creates `count` balances in the run's ledger and funds each with [`FUNDING`] from the
/// run's funding source (`allow_overdraft`, `skip_queue`); returns their ids in order.
async fn create_funded(
    http: &Http,
    prepared: &Prepared,
    count: usize,
    progress: &ProgressBar,
) -> anyhow::Result<Vec<String>> {
    let ledger_id = prepared.ledger_id.clone().expect("a ledger");
    let funding = prepared.funding.clone().expect("a funding source");
    let run_id = prepared.run_id.clone();
    let retried = prepared.setup_retries.clone();
    let (http, progress) = (http.clone(), progress.clone());
    in_parallel(count, prepared.opts.concurrency.min(32), move |_| {
        let (http, ledger_id, funding, progress, retried) = (
            http.clone(),
            ledger_id.clone(),
            funding.clone(),
            progress.clone(),
            retried.clone(),
        );
        let run_id = run_id.clone();
        async move {
            let body = json!({ "ledger_id": ledger_id, "currency": "USD" });
            let (reply, _) = setup_post(&http, "/balances", &body, &retried).await?;
            expect_status(&reply, 201, "POST /balances")?;
            let balance = string_field(&reply, "balance_id", "POST /balances")?;
            progress.inc(1);
            let reference = format!("benchfund-{run_id}-{balance}");
            let body = json!({
                "precise_amount": FUNDING as u64, "currency": "USD",
                "reference": reference, "description": "bench funding",
                "source": funding, "destination": balance,
                "allow_overdraft": true, "skip_queue": true,
            });
            let (reply, was_retried) = setup_post(&http, "/transactions", &body, &retried).await?;
            let applied = if reply.status == 409 && was_retried {
                // A retry of a funding whose first answer was lost: it is applied if its
                // reference is.
                let path = format!("/transactions/reference/{}", encode(&reference));
                http.get(&path).await?.json["status"] == "APPLIED"
            } else {
                expect_status(&reply, 201, "funding POST /transactions")?;
                reply.json["status"] == "APPLIED"
            };
            if !applied {
                anyhow::bail!("funding was not applied: {}", reply.json);
            }
            progress.inc(1);
            Ok(balance)
        }
    })
    .await
}

/// Attempts of an untimed setup request that gets a 5xx or no answer.
const SETUP_ATTEMPTS: u32 = 4;

/// A setup request, retried after a 5xx or no answer (setup is not measured, and a lost
/// balance creation only leaves an empty balance, which the check accepts). Counts retries in
/// `retried`; the flag says whether this request was retried.
async fn setup_post(
    http: &Http,
    path: &str,
    body: &Value,
    retried: &Cell<u64>,
) -> anyhow::Result<(Reply, bool)> {
    let mut attempt = 1;
    loop {
        let result = http.post(path, body).await;
        let retry = match &result {
            Ok(reply) => reply.status >= 500,
            Err(_) => true,
        };
        if !retry || attempt >= SETUP_ATTEMPTS {
            return Ok((result?, attempt > 1));
        }
        retried.set(retried.get() + 1);
        actix_web::rt::time::sleep(Duration::from_millis(100 << attempt)).await;
        attempt += 1;
    }
}

impl Prepared {
    pub fn plan(&self) -> Plan {
        self.plan
    }

    /// The run's balance ids (empty for `fresh`).
    pub fn balance_ids(&self) -> &[String] {
        &self.balances
    }

    /// The `@indicator` that funded the run's balances (none for `fresh`).
    pub fn funding_source(&self) -> Option<&str> {
        self.funding.as_deref()
    }

    /// The references of this run's timed transfers start with this.
    pub fn reference_prefix(&self) -> String {
        format!("bench-{}-", self.run_id)
    }

    fn reference(&self, seq: u64) -> String {
        format!("bench-{}-{seq}", self.run_id)
    }

    /// `@indicator` of a fresh transfer's source (side 0) or destination (side 1).
    fn fresh_indicator(prefix: &str, seq: u64, side: u64) -> String {
        format!("{prefix}{:012x}", seq * 2 + side)
    }

    fn key(&self, op: &Op, side: u64) -> String {
        match &self.fresh_prefix {
            Some(prefix) => Self::fresh_indicator(prefix, op.seq, side),
            None => self.balances[if side == 0 { op.src } else { op.dst } as usize].clone(),
        }
    }

    /// A bulk request of two transfers that cancel out, so a missing endpoint is reported
    /// before anything is timed.
    async fn probe_bulk(&mut self) -> Result<(), PrepareError> {
        let (a, b) = (self.balances[0].clone(), self.balances[1].clone());
        let item = |source: &str, destination: &str, n: u32| {
            json!({
                "precise_amount": 1, "currency": "USD",
                "reference": format!("benchprobe-{}-{n}", self.run_id), "description": "bench probe",
                "source": source, "destination": destination,
            })
        };
        let body = json!({
            "transactions": [item(&a, &b, 0), item(&b, &a, 1)],
            "atomic": true, "skip_queue": true,
        });
        match self.http.post("/transactions/bulk", &body).await {
            Ok(reply) if reply.is_success() => Ok(()),
            Ok(reply) => Err(PrepareError::Unavailable(format!(
                "POST /transactions/bulk answered {} (the bulk endpoint is missing or refuses Blnk's body)",
                reply.describe()
            ))),
            Err(e) => Err(PrepareError::Unavailable(format!(
                "POST /transactions/bulk got no answer: {e}"
            ))),
        }
    }

    /// A hold of one unit and its commit, so a missing lifecycle endpoint is reported before
    /// anything is timed.
    async fn probe_inflight(&mut self) -> Result<(), PrepareError> {
        let (a, b) = (self.balances[0].clone(), self.balances[1].clone());
        let body = json!({
            "precise_amount": 1, "currency": "USD",
            "reference": format!("benchprobe-{}-hold", self.run_id), "description": "bench probe",
            "source": a, "destination": b, "inflight": true, "skip_queue": true,
        });
        let hold = match self.http.post("/transactions", &body).await {
            Ok(reply) => reply,
            Err(e) => {
                return Err(PrepareError::Failed(anyhow::anyhow!(
                    "the inflight probe got no answer: {e}"
                )))
            }
        };
        if hold.status != 201 {
            return Err(PrepareError::Unavailable(format!(
                "POST /transactions with inflight: true answered {}",
                hold.describe()
            )));
        }
        match hold.json["status"].as_str() {
            Some("INFLIGHT") => self.setup.hold(&a, &b, 1),
            Some("APPLIED") => {
                self.setup.apply(&a, &b, 1);
                return Err(PrepareError::Unavailable(
                    "the server applied an inflight: true transfer at once (status APPLIED)".into(),
                ));
            }
            other => {
                return Err(PrepareError::Failed(anyhow::anyhow!(
                    "the inflight probe answered status {other:?}: {}",
                    hold.json
                )))
            }
        }
        let id = string_field(&hold, "transaction_id", "inflight probe")?;
        let path = format!("/transactions/inflight/{id}");
        match self
            .http
            .put(&path, &json!({ "status": "commit", "skip_queue": true }))
            .await
        {
            Ok(reply) if reply.is_success() => {
                self.setup.hold(&b, &a, 1);
                self.setup.apply(&a, &b, 1);
                Ok(())
            }
            Ok(reply) => Err(PrepareError::Unavailable(format!(
                "PUT /transactions/inflight/{{id}} answered {} (the inflight commit endpoint is missing or refuses Blnk's body)",
                reply.describe()
            ))),
            Err(e) => Err(PrepareError::Failed(anyhow::anyhow!(
                "the inflight commit probe got no answer: {e}"
            ))),
        }
    }

    fn settings(&self) -> RunSettings {
        RunSettings {
            duration_secs: self.opts.duration.as_secs_f64(),
            concurrency: self.opts.concurrency,
            balances: self.balances.len(),
            batch_size: self.batch_size(),
            rate: self.opts.rate,
            max_requests: self.max_requests(),
        }
    }

    fn batch_size(&self) -> usize {
        if self.plan.scenario == Scenario::Bulk {
            self.opts.batch_size.max(1)
        } else {
            1
        }
    }

    fn max_requests(&self) -> u64 {
        self.opts
            .max_requests
            .min(TRANSFERS_MAX / self.batch_size() as u64)
    }

    /// The timed part: `concurrency` clients, each sending its next request as soon as the
    /// previous one is answered (or at the paced time), until the duration or the request
    /// bound is reached.
    pub async fn drive(&mut self) -> anyhow::Result<()> {
        self.cpu.0 = CpuSample::take(self.http.port());
        let shared = Rc::new(Shared::default());
        let start = Instant::now();
        let deadline = start + self.opts.duration;
        let progress = if self.opts.progress {
            ProgressBar::new(self.opts.duration.as_millis() as u64)
        } else {
            ProgressBar::hidden()
        };
        progress.set_style(style("{prefix:>18} [{bar:30}] {elapsed:>4} {msg}"));
        progress.set_prefix(self.plan_title());
        let context = Rc::new(WorkerContext {
            http: self.http.clone(),
            plan: self.plan,
            balances: self.balances.clone(),
            run_id: self.run_id.clone(),
            fresh_prefix: self.fresh_prefix.clone(),
            meta_data: self.opts.meta_data.clone(),
            batch: self.batch_size(),
            amount_max: self.opts.amount_max.max(1),
            rate: self.opts.rate.filter(|r| *r > 0.0),
            max_requests: self.max_requests(),
            start,
            deadline,
            shared: shared.clone(),
        });
        let mut workers = Vec::new();
        for worker in 0..self.opts.concurrency {
            let context = context.clone();
            let seed = self.opts.seed ^ (worker as u64).wrapping_mul(0x2545_F491_4F6C_DD1D);
            workers.push(actix_web::rt::spawn(async move {
                run_worker(context, Rng(seed)).await
            }));
        }
        let ticker = {
            let (shared, progress, http) = (shared.clone(), progress.clone(), self.http.clone());
            let queued = !self.plan.skip_queue;
            let filters = self.applied_filters();
            actix_web::rt::spawn(async move {
                let mut backlog_max = 0u64;
                let mut last_sample = Instant::now();
                while !shared.done.get() {
                    actix_web::rt::time::sleep(Duration::from_millis(200)).await;
                    let elapsed = start.elapsed();
                    let secs = elapsed.as_secs_f64().max(1e-3);
                    progress.set_position(elapsed.as_millis() as u64);
                    progress.set_message(format!(
                        "{} ok ({:.0}/s), {} failed{}",
                        shared.ok.get(),
                        shared.ok.get() as f64 / secs,
                        shared.failed.get(),
                        if queued {
                            format!(", backlog ≤ {backlog_max}")
                        } else {
                            String::new()
                        }
                    ));
                    if queued && last_sample.elapsed() >= Duration::from_secs(1) {
                        last_sample = Instant::now();
                        let accepted = shared.accepted.get();
                        if let Ok(applied) = count(&http, filters.clone()).await {
                            backlog_max = backlog_max.max(accepted.saturating_sub(applied));
                        }
                    }
                }
                backlog_max
            })
        };
        let mut load = Load::default();
        let mut failure = None;
        for worker in futures_util::future::join_all(workers).await {
            match worker {
                Ok(log) => {
                    load.ops.extend(log.ops);
                    load.holds.extend(log.holds);
                    load.latencies.extend(log.latencies);
                    for (code, n) in log.errors {
                        *load.errors.entry(code).or_default() += n;
                    }
                    load.requests_sent += log.requests_sent;
                    load.requests_ok += log.requests_ok;
                }
                Err(e) => failure = Some(anyhow::anyhow!("a load worker failed: {e}")),
            }
        }
        load.elapsed = start.elapsed();
        shared.done.set(true);
        load.backlog_max = ticker.await.unwrap_or_default();
        progress.finish_and_clear();
        load.ops.sort_by_key(|op| op.seq);
        self.load = Some(load);
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn plan_title(&self) -> String {
        format!(
            "{}{}",
            self.plan.scenario.name(),
            if self.plan.skip_queue { "" } else { " queued" }
        )
    }

    /// Filters for this run's APPLIED transfers (for inflight: counted by parent instead).
    fn applied_filters(&self) -> Value {
        json!([
            { "field": "status", "operator": "eq", "value": "APPLIED" },
            { "field": "reference", "operator": "like", "value": format!("{}%", self.reference_prefix()) },
        ])
    }

    fn rejected_filters(&self) -> Value {
        json!([
            { "field": "status", "operator": "eq", "value": "REJECTED" },
            { "field": "reference", "operator": "like", "value": format!("{}%", self.reference_prefix()) },
        ])
    }

    /// Looks up the requests that got no answer, by reference, and records what the server
    /// holds for them.
    async fn resolve_unknown(&mut self) -> anyhow::Result<()> {
        let Some(mut load) = self.load.take() else {
            return Ok(());
        };
        let batch = self.batch_size() as u64;
        let mut cache: HashMap<u64, Outcome> = HashMap::new();
        let mut looked_up = 0usize;
        for op in load.ops.iter_mut() {
            match op.outcome {
                Outcome::Unknown => {
                    let request = op.seq / batch;
                    if let Some(outcome) = cache.get(&request) {
                        op.outcome = *outcome;
                        continue;
                    }
                    if looked_up >= RESOLVE_MAX {
                        continue;
                    }
                    looked_up += 1;
                    let reference = self.reference(request * batch);
                    let path = format!("/transactions/reference/{}", encode(&reference));
                    let outcome = match self.http.get(&path).await {
                        Ok(reply) if reply.status == 200 => match reply.json["status"].as_str() {
                            Some("APPLIED") => Outcome::Applied,
                            Some("QUEUED") => Outcome::Queued,
                            Some("INFLIGHT") => Outcome::Held,
                            _ => Outcome::Unknown,
                        },
                        Ok(reply) if reply.status == 404 => Outcome::Failed,
                        _ => Outcome::Unknown,
                    };
                    cache.insert(request, outcome);
                    op.outcome = outcome;
                }
                Outcome::CommitUnknown => {
                    if looked_up >= RESOLVE_MAX {
                        continue;
                    }
                    looked_up += 1;
                    let Some(hold) = load.holds.get(&op.seq) else {
                        continue;
                    };
                    let filters = json!([
                        { "field": "parent_transaction", "operator": "eq", "value": hold },
                        { "field": "status", "operator": "eq", "value": "APPLIED" },
                    ]);
                    if let Ok(n) = count(&self.http, filters).await {
                        op.outcome = if n > 0 {
                            Outcome::Applied
                        } else {
                            Outcome::Held
                        };
                    }
                }
                _ => {}
            }
        }
        self.load = Some(load);
        Ok(())
    }

    /// APPLIED transfers of this run on the server now.
    async fn applied_now(&self) -> anyhow::Result<u64> {
        if self.plan.scenario != Scenario::Inflight {
            return count(&self.http, self.applied_filters()).await;
        }
        // Commits are children of the holds: count them by parent, 100 holds a request.
        let load = self.load.as_ref().expect("driven");
        let holds: Vec<&String> = load
            .ops
            .iter()
            .filter(|op| matches!(op.outcome, Outcome::Applied | Outcome::Held))
            .filter_map(|op| load.holds.get(&op.seq))
            .collect();
        let mut total = 0;
        for chunk in holds.chunks(FILTER_PAGE) {
            let filters = json!([
                { "field": "parent_transaction", "operator": "in", "values": chunk },
                { "field": "status", "operator": "eq", "value": "APPLIED" },
            ]);
            total += count(&self.http, filters).await?;
        }
        Ok(total)
    }

    /// After the load: resolves unanswered requests, then reads the applied (and, queued,
    /// rejected) counts back until they account for every accepted transfer, stop growing, or
    /// the drain time runs out.
    pub async fn settle(&mut self) -> anyhow::Result<()> {
        self.resolve_unknown().await?;
        let load = self.load.as_ref().expect("driven");
        let elapsed = load.elapsed.as_secs_f64();
        let queued = load
            .ops
            .iter()
            .filter(|op| op.outcome == Outcome::Queued)
            .count() as u64;
        let immediate = load
            .ops
            .iter()
            .filter(|op| op.outcome == Outcome::Applied)
            .count() as u64;
        let target = queued + immediate;
        let load_end = Instant::now();
        let start = load_end - load.elapsed;
        let deadline = load_end + self.opts.drain;
        let progress = bar(self.opts.progress && queued > 0, target, "applying");
        let mut settled = Settled::default();
        let mut last_applied = u64::MAX;
        let mut last_progress = (u64::MAX, Instant::now());
        let mut first = true;
        let mut at_end = 0;
        loop {
            let applied = self.applied_now().await?;
            let rejected = if queued > 0 {
                count(&self.http, self.rejected_filters()).await?
            } else {
                0
            };
            let now = Instant::now();
            let processed = applied + rejected;
            if first {
                at_end = target.saturating_sub(processed);
            }
            progress.set_position(processed);
            if applied != last_applied {
                last_applied = applied;
                settled.applied_at = if first {
                    elapsed
                } else {
                    (now - start).as_secs_f64()
                };
            }
            if processed != last_progress.0 {
                last_progress = (processed, now);
            }
            settled.applied = applied;
            settled.rejected_count = rejected;
            first = false;
            if processed >= target || now >= deadline || now - last_progress.1 >= SETTLE_QUIET {
                settled.pending = target.saturating_sub(processed);
                if queued > 0 {
                    settled.backlog = Some(Backlog {
                        max: load.backlog_max.max(at_end),
                        at_end,
                        drain_secs: (now - load_end).as_secs_f64(),
                    });
                }
                if settled.pending > 0 {
                    settled.notes.push(format!(
                        "stopped waiting with {} accepted transfer(s) unprocessed after {:.1} s",
                        settled.pending,
                        (now - load_end).as_secs_f64()
                    ));
                }
                break;
            }
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
        progress.finish_and_clear();
        self.cpu.1 = CpuSample::take(self.http.port());
        if settled.rejected_count > 0 {
            settled.rejected = self.rejected_seqs(settled.rejected_count).await?;
        }
        self.settled = Some(settled);
        Ok(())
    }

    /// The `seq` of every transfer of this run the queue worker rejected.
    async fn rejected_seqs(&self, expected: u64) -> anyhow::Result<HashSet<u64>> {
        let prefix = self.reference_prefix();
        let mut seqs = HashSet::new();
        let pages = expected as usize / FILTER_PAGE + 2;
        for page in 0..pages {
            let body = json!({
                "filters": self.rejected_filters(),
                "limit": FILTER_PAGE, "offset": page * FILTER_PAGE,
            });
            let reply = self.http.post("/transactions/filter", &body).await?;
            expect_status(&reply, 200, "POST /transactions/filter")?;
            let rows = reply.json.as_array().cloned().unwrap_or_default();
            for row in &rows {
                let reference = row["reference"].as_str().unwrap_or_default();
                if let Some(seq) = reference
                    .strip_prefix(&prefix)
                    .map(|r| r.trim_end_matches("_q"))
                    .and_then(|r| r.parse().ok())
                {
                    seqs.insert(seq);
                }
            }
            if rows.len() < FILTER_PAGE {
                break;
            }
        }
        Ok(seqs)
    }

    /// What every balance of the run must hold: the setup, plus each transfer as the server
    /// answered it (a queued transfer counts as applied unless the worker rejected it).
    pub fn expectation(&self) -> Expectation {
        let mut expected = self.setup.clone();
        for balance in self.balances.iter() {
            expected.touch(balance);
        }
        let rejected = self.settled.as_ref().map(|s| &s.rejected);
        for op in self.load.iter().flat_map(|l| l.ops.iter()) {
            let amount = op.amount as i128;
            match op.outcome {
                Outcome::Applied => expected.apply(&self.key(op, 0), &self.key(op, 1), amount),
                Outcome::Queued if !rejected.is_some_and(|r| r.contains(&op.seq)) => {
                    expected.apply(&self.key(op, 0), &self.key(op, 1), amount)
                }
                Outcome::Held => expected.hold(&self.key(op, 0), &self.key(op, 1), amount),
                _ => {}
            }
        }
        expected
    }

    fn counts(&self) -> Counts {
        let settled = self.settled.clone().unwrap_or_default();
        let mut counts = Counts {
            applied_read_back: settled.applied,
            rejected_read_back: settled.rejected_count,
            pending: settled.pending,
            ..Counts::default()
        };
        for op in self.load.iter().flat_map(|l| l.ops.iter()) {
            match op.outcome {
                Outcome::Applied => counts.expected_applied += 1,
                Outcome::Queued if !settled.rejected.contains(&op.seq) => {
                    counts.expected_applied += 1
                }
                Outcome::Unknown | Outcome::CommitUnknown => counts.unresolved += 1,
                _ => {}
            }
        }
        counts
    }

    /// Reads every balance of the run (and its funding source) from the server.
    pub async fn observe(&self) -> anyhow::Result<BTreeMap<String, Amounts>> {
        let mut found = BTreeMap::new();
        let mut lists = Vec::new();
        if let Some(ledger) = &self.ledger_id {
            lists.push((
                format!("ledger_id_eq={}", encode(ledger)),
                self.balances.len(),
            ));
        }
        if let Some(prefix) = &self.fresh_prefix {
            let transfers = self.load.as_ref().map_or(0, |l| l.ops.len());
            lists.push((
                format!("indicator_like={}", encode(&format!("{prefix}%"))),
                transfers * 2,
            ));
        }
        for (filter, expected) in lists {
            let pages = expected / LIST_PAGE + 2;
            for page in 0..pages {
                let path = format!(
                    "/balances?{filter}&limit={LIST_PAGE}&offset={}",
                    page * LIST_PAGE
                );
                let reply = self.http.get(&path).await?;
                expect_status(&reply, 200, "GET /balances")?;
                let rows = reply.json.as_array().cloned().unwrap_or_default();
                for row in &rows {
                    let (key, amounts) = amounts_of(row)?;
                    if found.insert(key.clone(), amounts).is_some() {
                        anyhow::bail!("balance {key} listed twice");
                    }
                }
                if rows.len() < LIST_PAGE {
                    break;
                }
            }
        }
        if let Some(funding) = &self.funding {
            let path = format!(
                "/balances/indicator/{}/currency/USD",
                encode(funding).replace("%40", "@")
            );
            let reply = self.http.get(&path).await?;
            if reply.status == 200 {
                let (key, amounts) = amounts_of(&reply.json)?;
                found.insert(key, amounts);
            } else if reply.status != 404 {
                anyhow::bail!("GET {path} answered {}", reply.describe());
            }
        }
        Ok(found)
    }

    /// The balance check against this run's own expectation.
    pub async fn check(&self) -> BalanceCheck {
        self.check_against(&self.expectation()).await
    }

    /// The balance check against a given expectation (tests feed it tampered ones).
    pub async fn check_against(&self, expected: &Expectation) -> BalanceCheck {
        match self.observe().await {
            Ok(actual) => compare(expected, &actual, self.counts()),
            Err(e) => BalanceCheck::failed(format!("could not read the run's balances: {e:#}")),
        }
    }

    /// The report of this run, with the check's verdict.
    pub fn report(&self, check: Option<BalanceCheck>, error: Option<String>) -> ScenarioReport {
        let empty = Load::default();
        let load = self.load.as_ref().unwrap_or(&empty);
        let settled = self.settled.clone().unwrap_or_default();
        let elapsed = load.elapsed.as_secs_f64();
        let per_sec = |n: u64, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let accepted = load
            .ops
            .iter()
            .filter(|op| match self.plan.scenario {
                Scenario::Inflight => op.outcome == Outcome::Applied,
                _ => matches!(op.outcome, Outcome::Applied | Outcome::Queued),
            })
            .count() as u64;
        let mut latencies = load.latencies.clone();
        let mut notes = self.notes.clone();
        notes.extend(settled.notes.iter().cloned());
        if self.plan.scenario == Scenario::Inflight {
            let holds = load
                .ops
                .iter()
                .filter(|op| matches!(op.outcome, Outcome::Applied | Outcome::Held))
                .count();
            notes.push(format!(
                "{holds} holds created, {accepted} committed; each is two requests"
            ));
        }
        if self.plan.scenario == Scenario::Fresh {
            notes.push("every transfer between two new @uuid indicator balances".into());
        }
        let status = match (&check, &error) {
            (_, Some(_)) => Status::Error,
            (Some(c), None) if c.passed => Status::Passed,
            (Some(_), None) => Status::CheckFailed,
            (None, None) => Status::Error,
        };
        ScenarioReport {
            scenario: self.plan.scenario.name().to_owned(),
            skip_queue: self.plan.skip_queue,
            url: self.http.base_url().to_owned(),
            settings: self.settings(),
            status,
            error,
            setup_secs: self.setup_secs,
            elapsed_secs: elapsed,
            requests_sent: load.requests_sent,
            requests_ok: load.requests_ok,
            requests_per_sec: per_sec(load.requests_ok, elapsed),
            transfers_accepted: accepted,
            transfers_accepted_per_sec: per_sec(accepted, elapsed),
            transfers_applied: settled.applied,
            transfers_applied_per_sec: per_sec(settled.applied, settled.applied_at),
            transfers_rejected: settled.rejected_count,
            backlog: settled.backlog.clone(),
            latency: Latency::from_micros(&mut latencies),
            errors: load.errors.clone(),
            check,
            cost: match &self.cpu {
                (Some(start), Some(end)) => Some(start.cost_until(end, settled.applied)),
                _ => None,
            },
            notes,
        }
    }
}

/// `total_count` of `POST /transactions/filter` with these filters.
async fn count(http: &Http, filters: Value) -> anyhow::Result<u64> {
    let body = json!({ "filters": filters, "include_count": true, "limit": 1 });
    let reply = http.post("/transactions/filter", &body).await?;
    expect_status(&reply, 200, "POST /transactions/filter")?;
    reply.json["total_count"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no total_count in {}", reply.json))
}

struct WorkerContext {
    http: Http,
    plan: Plan,
    balances: Rc<Vec<String>>,
    run_id: String,
    fresh_prefix: Option<String>,
    meta_data: Option<Value>,
    batch: usize,
    amount_max: u32,
    rate: Option<f64>,
    max_requests: u64,
    start: Instant,
    deadline: Instant,
    shared: Rc<Shared>,
}

impl WorkerContext {
    fn pick(&self, rng: &mut Rng) -> (u32, u32) {
        let n = self.balances.len() as u64;
        let other = |rng: &mut Rng| 1 + rng.below(n - 1) as u32;
        match self.plan.scenario {
            Scenario::HotSource => (0, other(rng)),
            Scenario::HotDestination => (other(rng), 0),
            Scenario::HotPair => (0, 1),
            Scenario::Fresh => (0, 0),
            Scenario::Uniform | Scenario::Bulk | Scenario::Inflight => {
                let src = rng.below(n);
                let mut dst = rng.below(n - 1);
                if dst >= src {
                    dst += 1;
                }
                (src as u32, dst as u32)
            }
        }
    }

    fn transfer(&self, op: &Op) -> Value {
        let reference = format!("bench-{}-{}", self.run_id, op.seq);
        let mut body = match &self.fresh_prefix {
            Some(prefix) => json!({
                "precise_amount": op.amount, "precision": 100, "currency": "USD",
                "reference": reference, "description": "bench",
                "source": Prepared::fresh_indicator(prefix, op.seq, 0),
                "destination": Prepared::fresh_indicator(prefix, op.seq, 1),
                "skip_queue": self.plan.skip_queue, "allow_overdraft": true,
            }),
            None => json!({
                "precise_amount": op.amount, "currency": "USD",
                "reference": reference, "description": "bench",
                "source": self.balances[op.src as usize],
                "destination": self.balances[op.dst as usize],
                "skip_queue": self.plan.skip_queue, "allow_overdraft": false,
            }),
        };
        if let Some(meta_data) = &self.meta_data {
            body["meta_data"] = meta_data.clone();
        }
        body
    }

    /// Claims the next request number, or `None` when the run is over.
    fn next_request(&self) -> Option<u64> {
        let seq = self.shared.next.get();
        if seq >= self.max_requests || Instant::now() >= self.deadline {
            return None;
        }
        self.shared.next.set(seq + 1);
        Some(seq)
    }
}

fn micros(since: Instant) -> u32 {
    since.elapsed().as_micros().min(u32::MAX as u128) as u32
}

/// Sends one request and books its answer: `Ok(reply)` if 2xx.
async fn timed(
    context: &WorkerContext,
    log: &mut WorkerLog,
    method: awc::http::Method,
    path: &str,
    body: &Value,
) -> Result<Reply, Option<Reply>> {
    let sent = Instant::now();
    log.requests_sent += 1;
    let result: Result<Reply, TransportError> = context
        .http
        .send(method, path, Some(body.to_string()))
        .await;
    match result {
        Ok(reply) if reply.is_success() => {
            log.latencies.push(micros(sent));
            log.requests_ok += 1;
            context.shared.ok.set(context.shared.ok.get() + 1);
            Ok(reply)
        }
        Ok(reply) => {
            log.error(reply.error_code());
            context.shared.failed.set(context.shared.failed.get() + 1);
            Err(Some(reply))
        }
        Err(e) => {
            log.error(e.code.to_owned());
            context.shared.failed.set(context.shared.failed.get() + 1);
            Err(None)
        }
    }
}

/// A refused request moved nothing if it got a 4xx; a 5xx or no answer leaves it unknown.
fn refused(reply: &Option<Reply>) -> Outcome {
    match reply {
        Some(reply) if (400..500).contains(&reply.status) => Outcome::Failed,
        _ => Outcome::Unknown,
    }
}

fn status_outcome(reply: &Reply) -> Outcome {
    match reply.json["status"].as_str() {
        Some("APPLIED") => Outcome::Applied,
        Some("QUEUED") => Outcome::Queued,
        Some("INFLIGHT") => Outcome::Held,
        _ => Outcome::Unknown,
    }
}

async fn run_worker(context: Rc<WorkerContext>, mut rng: Rng) -> WorkerLog {
    use awc::http::Method;
    let mut log = WorkerLog::default();
    while let Some(request) = context.next_request() {
        if let Some(rate) = context.rate {
            let due = context.start + Duration::from_secs_f64(request as f64 / rate);
            if due >= context.deadline {
                break;
            }
            actix_web::rt::time::sleep_until(due.into()).await;
        }
        let shared = &context.shared;
        match context.plan.scenario {
            Scenario::Bulk => {
                let first = log.ops.len();
                for i in 0..context.batch as u64 {
                    let (src, dst) = context.pick(&mut rng);
                    log.ops.push(Op {
                        seq: request * context.batch as u64 + i,
                        src,
                        dst,
                        amount: 1 + rng.below(context.amount_max as u64) as u32,
                        outcome: Outcome::Unknown,
                    });
                }
                let items: Vec<Value> = log.ops[first..]
                    .iter()
                    .map(|op| {
                        let mut item = context.transfer(op);
                        if let Some(map) = item.as_object_mut() {
                            map.remove("skip_queue");
                            map.remove("allow_overdraft");
                        }
                        item
                    })
                    .collect();
                let body = json!({ "transactions": items, "atomic": true, "skip_queue": true });
                let outcome = match timed(
                    &context,
                    &mut log,
                    Method::POST,
                    "/transactions/bulk",
                    &body,
                )
                .await
                {
                    Ok(_) => Outcome::Applied,
                    Err(reply) => refused(&reply),
                };
                for op in &mut log.ops[first..] {
                    op.outcome = outcome;
                }
                if outcome == Outcome::Applied {
                    shared
                        .accepted
                        .set(shared.accepted.get() + context.batch as u64);
                }
            }
            Scenario::Inflight => {
                let (src, dst) = context.pick(&mut rng);
                let mut op = Op {
                    seq: request,
                    src,
                    dst,
                    amount: 1 + rng.below(context.amount_max as u64) as u32,
                    outcome: Outcome::Unknown,
                };
                let mut body = context.transfer(&op);
                body["inflight"] = json!(true);
                body["skip_queue"] = json!(true);
                match timed(&context, &mut log, Method::POST, "/transactions", &body).await {
                    Ok(hold) => {
                        match (status_outcome(&hold), hold.json["transaction_id"].as_str()) {
                            (Outcome::Held, Some(id)) => {
                                log.holds.push((op.seq, id.to_owned()));
                                let path = format!("/transactions/inflight/{}", encode(id));
                                let commit = json!({ "status": "commit", "skip_queue": true });
                                op.outcome =
                                    match timed(&context, &mut log, Method::PUT, &path, &commit)
                                        .await
                                    {
                                        Ok(_) => {
                                            shared.accepted.set(shared.accepted.get() + 1);
                                            Outcome::Applied
                                        }
                                        Err(reply) => match refused(&reply) {
                                            Outcome::Failed => Outcome::Held,
                                            _ => Outcome::CommitUnknown,
                                        },
                                    };
                            }
                            (outcome, _) => op.outcome = outcome,
                        }
                    }
                    Err(reply) => op.outcome = refused(&reply),
                }
                log.ops.push(op);
            }
            _ => {
                let (src, dst) = context.pick(&mut rng);
                let mut op = Op {
                    seq: request,
                    src,
                    dst,
                    amount: 1 + rng.below(context.amount_max as u64) as u32,
                    outcome: Outcome::Unknown,
                };
                let body = context.transfer(&op);
                op.outcome =
                    match timed(&context, &mut log, Method::POST, "/transactions", &body).await {
                        Ok(reply) => {
                            shared.accepted.set(shared.accepted.get() + 1);
                            status_outcome(&reply)
                        }
                        Err(reply) => refused(&reply),
                    };
                log.ops.push(op);
            }
        }
    }
    log
}

/// Prepares, drives, settles and checks one scenario; never panics on a server's answer.
pub async fn run_scenario(http: &Http, plan: Plan, opts: Options) -> ScenarioReport {
    let mut prepared = match prepare(http, plan, opts.clone()).await {
        Ok(prepared) => prepared,
        Err(e) => {
            let balances = if plan.scenario == Scenario::Fresh {
                0
            } else {
                opts.balances.unwrap_or(plan.scenario.default_balances())
            };
            let status = match e {
                PrepareError::Unavailable(_) => Status::Unavailable,
                PrepareError::Failed(_) => Status::Error,
            };
            let message = match e {
                PrepareError::Unavailable(m) => m,
                PrepareError::Failed(e) => format!("setup failed: {e:#}"),
            };
            return unavailable_report(http, plan, &opts, balances, status, message);
        }
    };
    if let Err(e) = prepared.drive().await {
        return prepared.report(None, Some(format!("{e:#}")));
    }
    if let Err(e) = prepared.settle().await {
        return prepared.report(
            None,
            Some(format!("reading the outcome back failed: {e:#}")),
        );
    }
    let check = prepared.check().await;
    prepared.report(Some(check), None)
}

fn unavailable_report(
    http: &Http,
    plan: Plan,
    opts: &Options,
    balances: usize,
    status: Status,
    message: String,
) -> ScenarioReport {
    let batch_size = if plan.scenario == Scenario::Bulk {
        opts.batch_size.max(1)
    } else {
        1
    };
    ScenarioReport::empty(
        plan.scenario.name(),
        plan.skip_queue,
        http.base_url(),
        RunSettings {
            duration_secs: opts.duration.as_secs_f64(),
            concurrency: opts.concurrency,
            balances,
            batch_size,
            rate: opts.rate,
            max_requests: opts.max_requests.min(TRANSFERS_MAX / batch_size as u64),
        },
        status,
        Some(message),
    )
}
