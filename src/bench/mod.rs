//! `coffer bench`: drives a running server over HTTP and reports, per scenario, requests/s
//! accepted, transfers/s applied (read back from the server), latency p50/p99/max, errors by
//! `error_detail.code`, and a final balance check: every balance the run created holds what
//! the accepted and applied transfers imply, and the run's balances plus its funding source sum
//! to zero.
//!
//! Each scenario runs in four steps, of which only the second is timed:
//! 1. setup ([`scenario::prepare`]): a ledger, balances, funding from the run's own
//!    `@BenchWorld-<run>` indicator (`allow_overdraft`, `skip_queue`), and a probe of the
//!    scenario's endpoint (bulk, inflight), so a missing endpoint is reported, not timed;
//! 2. the load ([`scenario::Prepared::drive`]): `concurrency` clients, bounded by duration and
//!    by a request count;
//! 3. settling ([`scenario::Prepared::settle`]): the server's count of this run's APPLIED
//!    (and REJECTED) transfers, by reference prefix, polled until it accounts for everything
//!    accepted, stops growing, or the drain time runs out;
//! 4. the check ([`scenario::Prepared::check`], [`check::compare`]).
//!
//! Only servers on this machine are driven (`127.0.0.1`, `localhost`, `[::1]`).
//!
//! [`receiver`]: `coffer bench-receiver`, the webhook receiver the events benchmark
//! delivers to.

pub mod check;
pub mod cpu;
pub mod history;
pub mod http;
pub mod receiver;
pub mod report;
pub mod scenario;

pub use check::{Amounts, BalanceCheck, Expectation};
pub use http::Http;
pub use report::{ScenarioReport, Status};
pub use scenario::{prepare, run_scenario, Options, Plan, Prepared, Scenario};

use std::time::Duration;

/// Which scenarios to run: one of [`Scenario`] (same names), `history` (past-balance reads,
/// [`history`]), or `all` (every transfer scenario, then `history`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScenarioArg {
    One(Scenario),
    History,
    All,
}

impl ScenarioArg {
    fn scenarios(self) -> Vec<Scenario> {
        match self {
            ScenarioArg::One(scenario) => vec![scenario],
            ScenarioArg::History => Vec::new(),
            ScenarioArg::All => Scenario::ALL.to_vec(),
        }
    }

    fn runs_history(self) -> bool {
        matches!(self, ScenarioArg::History | ScenarioArg::All)
    }
}

impl clap::ValueEnum for ScenarioArg {
    fn value_variants<'a>() -> &'a [Self] {
        const VARIANTS: [ScenarioArg; Scenario::ALL.len() + 2] = {
            let mut variants = [ScenarioArg::All; Scenario::ALL.len() + 2];
            let mut index = 0;
            while index < Scenario::ALL.len() {
                variants[index] = ScenarioArg::One(Scenario::ALL[index]);
                index += 1;
            }
            variants[index] = ScenarioArg::History;
            variants
        };
        &VARIANTS
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        match self {
            ScenarioArg::One(scenario) => scenario.to_possible_value(),
            ScenarioArg::History => Some(clap::builder::PossibleValue::new("history")),
            ScenarioArg::All => Some(clap::builder::PossibleValue::new("all")),
        }
    }
}

/// `coffer bench` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Base URL of the server under test (this machine only).
    #[arg(long, default_value = "http://127.0.0.1:5001")]
    pub url: String,
    /// Scenario to run. `uniform` runs its skip_queue and queued variants unless
    /// --skip-queue or --queued picks one; `fresh` is queued by default, the rest skip the
    /// queue; `bulk` and `inflight` always skip it.
    #[arg(long, value_enum, default_value = "uniform")]
    pub scenario: ScenarioArg,
    /// Length of the timed part of each scenario.
    #[arg(long, default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Concurrent clients (each sends its next request when the previous one is answered).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Balances the load is spread over (default 1,000; 10,000 for bulk; fresh makes its own).
    #[arg(long)]
    pub balances: Option<usize>,
    /// Transfers per bulk request.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Send every transfer with skip_queue: true.
    #[arg(long, conflicts_with = "queued")]
    pub skip_queue: bool,
    /// Send every transfer through the queue (skip_queue: false).
    #[arg(long)]
    pub queued: bool,
    /// Pace the load at this many requests/s in total (default: as fast as answered).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Upper bound on the timed requests of a scenario.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_requests: u64,
    /// Transfer amounts are drawn from 1..=amount-max minor units.
    #[arg(long, default_value_t = 100)]
    pub amount_max: u32,
    /// How long to wait after the load for queued transfers to be applied.
    #[arg(long, default_value_t = 60.0)]
    pub drain_secs: f64,
    /// Print one JSON document with every scenario's result instead of text.
    #[arg(long)]
    pub json: bool,
    /// No progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// Seed of the balance and amount choices.
    #[arg(long)]
    pub seed: Option<u64>,
    /// history: transactions each balance is one side of.
    #[arg(long, default_value_t = 10_000)]
    pub history_transactions: usize,
    /// history: the days the transactions are dated over (0: undated, all now).
    #[arg(long, default_value_t = 30)]
    pub history_days: u32,
    /// Sent as `X-Blnk-Key` on every request: a secure server's master key or an API key
    /// (with the scopes the scenario needs, e.g. `ledgers:*`, `balances:*`, `transactions:*`).
    #[arg(long)]
    pub api_key: Option<String>,
    /// A JSON object sent as every transfer's `meta_data` (e.g. what a key's stamp adds,
    /// to tell the cost of authenticating from the cost of storing the stamp).
    #[arg(long)]
    pub meta_data: Option<String>,
}

impl BenchArgs {
    /// The scenario runs these flags ask for, in order.
    pub fn plans(&self) -> Vec<Plan> {
        let mut plans = Vec::new();
        for scenario in self.scenario.scenarios() {
            let modes: Vec<bool> = if !scenario.has_queued_variant() || self.skip_queue {
                vec![true]
            } else if self.queued {
                vec![false]
            } else if scenario == Scenario::Uniform {
                vec![true, false]
            } else {
                vec![scenario.default_skip_queue()]
            };
            plans.extend(modes.into_iter().map(|skip_queue| Plan {
                scenario,
                skip_queue,
            }));
        }
        plans
    }

    /// The run options, checked.
    pub fn options(&self) -> anyhow::Result<Options> {
        if !(self.duration_secs > 0.0 && self.duration_secs <= 3600.0) {
            anyhow::bail!("--duration-secs must be in (0, 3600]");
        }
        if !(1..=4096).contains(&self.concurrency) {
            anyhow::bail!("--concurrency must be 1 to 4096");
        }
        if !(1..=10_000).contains(&self.batch_size) {
            anyhow::bail!("--batch-size must be 1 to 10000");
        }
        if self.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            anyhow::bail!("--rate must be positive");
        }
        if !(0.0..=3600.0).contains(&self.drain_secs) {
            anyhow::bail!("--drain-secs must be in [0, 3600]");
        }
        if self.amount_max == 0 {
            anyhow::bail!("--amount-max must be at least 1");
        }
        Ok(Options {
            duration: Duration::from_secs_f64(self.duration_secs),
            concurrency: self.concurrency,
            balances: self.balances,
            batch_size: self.batch_size,
            rate: self.rate,
            max_requests: self.max_requests,
            amount_max: self.amount_max,
            drain: Duration::from_secs_f64(self.drain_secs),
            progress: !self.no_progress && !self.json,
            seed: self
                .seed
                .unwrap_or_else(|| uuid::Uuid::new_v4().as_u64_pair().0),
            meta_data: self
                .meta_data
                .as_deref()
                .map(
                    |text| match serde_json::from_str::<serde_json::Value>(text) {
                        Ok(object @ serde_json::Value::Object(_)) => Ok(object),
                        _ => Err(anyhow::anyhow!("--meta-data must be a JSON object")),
                    },
                )
                .transpose()?,
        })
    }
}

/// `coffer bench`: runs the chosen scenarios one after the other and prints their reports.
/// After printing, exits with status 1 if a check failed or a scenario could not run, 2 if
/// the only problem is a scenario whose endpoint is missing.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let options = args.options()?;
    let http = Http::with_key(&args.url, args.concurrency + 8, args.api_key.as_deref())?;
    let mut reports = Vec::new();
    for plan in args.plans() {
        let report = run_scenario(&http, plan, options.clone()).await;
        if !args.json {
            println!("{}", report.to_text());
        }
        reports.push(report);
    }
    if args.scenario.runs_history() {
        let shape = history::HistoryShape {
            transactions_per_balance: args.history_transactions.clamp(1, 1_000_000),
            days: args.history_days.min(36_500),
        };
        let report = history::run(&http, &options, shape).await;
        if !args.json {
            println!("{}", report.to_text());
        }
        reports.push(report);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "scenarios": reports }))?
        );
    }
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| r.status != Status::Passed)
        .map(|r| {
            format!(
                "{}: {}",
                r.title(),
                match r.status {
                    Status::CheckFailed => "balance check FAILED",
                    Status::Unavailable => "unavailable",
                    _ => "error",
                }
            )
        })
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    // A plain message and a distinct status, not an error with a backtrace: 2 when every
    // problem is a scenario whose endpoint is missing, 1 otherwise.
    eprintln!("coffer bench: {}", failed.join("; "));
    let only_unavailable = reports
        .iter()
        .all(|r| matches!(r.status, Status::Passed | Status::Unavailable));
    std::process::exit(if only_unavailable { 2 } else { 1 });
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn plans(argv: &[&str]) -> Vec<(Scenario, bool)> {
        let cli = Cli::parse_from(std::iter::once("bench").chain(argv.iter().copied()));
        cli.args
            .plans()
            .into_iter()
            .map(|p| (p.scenario, p.skip_queue))
            .collect()
    }

    #[test]
    fn scenario_selection() {
        assert_eq!(
            plans(&[]),
            vec![(Scenario::Uniform, true), (Scenario::Uniform, false)]
        );
        assert_eq!(
            plans(&["--scenario", "uniform", "--queued"]),
            vec![(Scenario::Uniform, false)]
        );
        assert_eq!(
            plans(&["--scenario", "fresh"]),
            vec![(Scenario::Fresh, false)]
        );
        assert_eq!(
            plans(&["--scenario", "bulk", "--queued"]),
            vec![(Scenario::Bulk, true)]
        );
        assert_eq!(plans(&["--scenario", "all"]).len(), 8);
        assert_eq!(
            plans(&["--scenario", "hot-source"]),
            vec![(Scenario::HotSource, true)]
        );
    }
}
