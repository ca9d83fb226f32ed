//! The outbox across real `coffer` processes on one PostgreSQL database: an API server
//! (`coffer start` without workers) writes the events, `coffer workers` processes deliver
//! them to a webhook receiver in this test. A workers process killed with SIGKILL between
//! delivering a batch and settling it loses no event (the restart delivers it again); two
//! workers processes share the outbox, keep each balance's order and send no duplicate; dead
//! events turn the workers' `/health` to 503 and `coffer events` lists and redrives them.

use crate::helpers::{fresh_postgres_database, unique_name, wait_for, TestApp};
use crate::processes::{environment, spawn_coffer};
use crate::receiver::{Answer, Receiver};
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// A `coffer` process, killed (SIGKILL) when dropped.
struct Process {
    child: Child,
    port: u16,
}

impl Process {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The webhook receiver: keeps every POST's JSON in arrival order. With `hold_first`, it
/// does not answer the first POST until [`Webhook::release`] (the test kills the workers
/// meanwhile); with `failing` set, it answers 500 (and keeps nothing).
struct Webhook {
    receiver: Receiver,
    held: Arc<AtomicBool>,
    release: tokio::sync::watch::Sender<bool>,
    failing: Arc<AtomicBool>,
}

impl Webhook {
    fn start(hold_first: bool) -> Self {
        let held = Arc::new(AtomicBool::new(!hold_first));
        let failing: Arc<AtomicBool> = Arc::default();
        let (release, released) = tokio::sync::watch::channel(false);
        let state = (held.clone(), released, failing.clone());
        let receiver = Receiver::answering(move |_| {
            let (held, mut released, failing) = state.clone();
            if failing.load(Ordering::SeqCst) {
                return Answer::status(500);
            }
            Answer::ok().after(async move {
                // The first POST waits for the test: the batch is delivered, not settled.
                if !held.swap(true, Ordering::SeqCst) {
                    let _ = released.wait_for(|released| *released).await;
                }
            })
        });
        Self {
            receiver,
            held,
            release,
            failing,
        }
    }

    fn release(&self) {
        let _ = self.release.send(true);
    }

    fn all(&self) -> Vec<Value> {
        self.receiver.accepted_json()
    }

    /// How often each event arrived, by [`key`].
    fn counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for event in self.all() {
            *counts.entry(key(&event)).or_default() += 1;
        }
        counts
    }
}

/// An event's identity: its name and its entity's id.
fn key(event: &Value) -> String {
    let data = &event["data"];
    let id = [
        "transaction_id",
        "balance_id",
        "ledger_id",
        "identity_id",
        "account_id",
    ]
    .iter()
    .find_map(|field| data[field].as_str())
    .unwrap_or("?");
    format!("{} {id}", event["event"].as_str().unwrap_or("?"))
}

/// The environment of the server and workers of one test: the webhook, fast polls, and
/// the API server without workers (only `coffer workers` delivers).
fn outbox_environment(database_url: &str, receiver: &Webhook) -> Vec<(&'static str, String)> {
    let mut env = environment(database_url, &format!("test:{}:", unique_name()));
    env.retain(|(name, _)| *name != "COFFER_START_WORKERS");
    env.extend([
        ("COFFER_START_WORKERS", "false".to_owned()),
        ("BLNK_WEBHOOK_URL", receiver.receiver.url("/events")),
        ("BLNK_QUEUE_MONITORING_PORT", "0".to_owned()),
        ("COFFER_OUTBOX_POLL_INTERVAL_MS", "20".to_owned()),
        ("COFFER_OUTBOX_BACKOFF_BASE_MS", "50".to_owned()),
        ("COFFER_OUTBOX_BACKOFF_CAP_MS", "200".to_owned()),
        ("COFFER_WEBHOOK_TIMEOUT_MS", "30000".to_owned()),
    ]);
    env
}

fn with(
    env: &[(&'static str, String)],
    more: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    let mut env = env.to_vec();
    for (name, value) in more {
        env.retain(|(n, _)| n != name);
        env.push((name, (*value).to_owned()));
    }
    env
}

fn server(env: &[(&'static str, String)]) -> (Process, TestApp) {
    let (child, port) = spawn_coffer("start", env, "coffer listening port=");
    let process = Process { child, port };
    let app = TestApp::at(process.address());
    (process, app)
}

fn workers(env: &[(&'static str, String)]) -> Process {
    let (child, port) = spawn_coffer("workers", env, "coffer workers running port=");
    Process { child, port }
}

/// `n` transfers of 1 from `source` to `destination`, one after the other (so their commit
/// order is this order); their transaction ids.
async fn transfer_chain(app: &TestApp, source: &str, destination: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let reply = app
            .post("/transactions", app.transfer(source, destination, 1, true))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        ids.push(reply.json["transaction_id"].as_str().unwrap().to_owned());
    }
    ids
}

async fn wait_for_all(receiver: &Webhook, transactions: &[String]) {
    wait_for(WAIT, "every transaction's event", || async {
        let counts = receiver.counts();
        transactions
            .iter()
            .all(|id| counts.contains_key(&format!("transaction.applied {id}")))
            .then_some(())
    })
    .await;
}

#[actix_web::test]
async fn a_workers_process_killed_before_settling_its_batch_loses_no_event() {
    let database_url = fresh_postgres_database().await;
    let receiver = Webhook::start(true);
    // A short lease: the restarted process takes the killed one's batch over quickly.
    let env = with(
        &outbox_environment(&database_url, &receiver),
        &[("COFFER_OUTBOX_LEASE_MS", "1000")],
    );
    let (_server, app) = server(&env);
    let balances = app.balances("USD", 2).await;
    app.fund(&balances[0], "USD", 1_000).await;
    let transactions = transfer_chain(&app, &balances[0], &balances[1], 30).await;

    let mut first = workers(&env);
    wait_for(WAIT, "the first delivery", || async {
        receiver.held.load(Ordering::SeqCst).then_some(())
    })
    .await;
    // The receiver has the first event but has not answered: the batch is not settled.
    let held = key(&receiver.all()[0]);
    first.kill();
    receiver.release();

    let _restarted = workers(&env);
    wait_for_all(&receiver, &transactions).await;
    wait_for(WAIT, "the unsettled event again", || async {
        (receiver.counts().get(&held).copied().unwrap_or(0) >= 2).then_some(())
    })
    .await;
    let counts = receiver.counts();
    for id in &balances {
        assert!(
            counts.contains_key(&format!("balance.created {id}")),
            "{id}"
        );
    }
}

#[actix_web::test]
async fn two_workers_processes_share_the_outbox_in_order_without_duplicates() {
    let database_url = fresh_postgres_database().await;
    let receiver = Webhook::start(false);
    // Small batches, so both processes claim.
    let env = with(
        &outbox_environment(&database_url, &receiver),
        &[("COFFER_OUTBOX_BATCH_SIZE", "4")],
    );
    let (_server, app) = server(&env);
    let workers = [workers(&env), workers(&env)];
    let balances = app.balances("USD", 8).await;
    for source in balances.iter().step_by(2) {
        app.fund(source, "USD", 1_000).await;
    }
    // Four chains side by side, each in commit order.
    let chains: Vec<Vec<String>> = join_all(
        balances
            .chunks(2)
            .map(|pair| transfer_chain(&app, &pair[0], &pair[1], 25)),
    )
    .await;
    let transactions: Vec<String> = chains.iter().flatten().cloned().collect();
    wait_for_all(&receiver, &transactions).await;

    let received = receiver.all();
    for (pair, chain) in balances.chunks(2).zip(&chains) {
        let arrived: Vec<&str> = received
            .iter()
            .filter(|e| e["event"] == "transaction.applied" && e["data"]["source"] == pair[0])
            .filter_map(|e| e["data"]["transaction_id"].as_str())
            .collect();
        let committed: Vec<&str> = chain.iter().map(String::as_str).collect();
        assert_eq!(arrived, committed, "{}'s events in commit order", pair[0]);
    }
    let duplicates: Vec<_> = receiver
        .counts()
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert_eq!(duplicates, [], "no duplicate within the lease");
    // Both processes' counters together: every delivery, once.
    let mut delivered = 0.0;
    for process in &workers {
        let text = reqwest::get(format!("{}/metrics", process.address()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        delivered += text
            .lines()
            .find(|l| {
                l.starts_with("coffer_event_deliveries_total{")
                    && l.contains("sink=\"webhook\"")
                    && l.contains("outcome=\"delivered\"")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0);
    }
    assert_eq!(delivered as usize, received.len());
}

/// `coffer events …` against the test's database; its stdout.
fn events_cli(database_url: &str, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .arg("events")
        .args(args)
        .env_remove("COFFER_CONFIG")
        .env("BLNK_DATA_SOURCE_DNS", database_url)
        .env("NO_COLOR", "1")
        .output()
        .expect("coffer runs");
    assert!(
        output.status.success(),
        "coffer events {args:?} failed: {output:?}"
    );
    String::from_utf8(output.stdout).unwrap()
}

async fn health(process: &Process) -> (StatusCode, Value) {
    let response = reqwest::get(format!("{}/health", process.address()))
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[actix_web::test]
async fn dead_events_fail_the_workers_health_and_the_cli_lists_and_redrives_them() {
    let database_url = fresh_postgres_database().await;
    let receiver = Webhook::start(false);
    receiver.failing.store(true, Ordering::SeqCst);
    // One attempt, no circuit breaker: every failure is a dead event at once.
    let env = with(
        &outbox_environment(&database_url, &receiver),
        &[
            ("COFFER_OUTBOX_ATTEMPTS_MAX", "1"),
            ("COFFER_OUTBOX_BREAKER_FAILURES", "0"),
            ("COFFER_OUTBOX_HEALTH_DEAD_MAX", "0"),
        ],
    );
    let (_server, app) = server(&env);
    let workers = workers(&env);
    let (status, body) = health(&workers).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let live = reqwest::get(format!("{}/health/live", workers.address()))
        .await
        .unwrap();
    assert_eq!(live.status(), StatusCode::OK);

    let ledger = app.create_ledger("dead-letters").await;
    let dead = wait_for(WAIT, "the ledger's event dead", || async {
        let listed: Value =
            serde_json::from_str(&events_cli(&database_url, &["dead", "--json"])).unwrap();
        let list = listed.as_array().cloned().unwrap_or_default();
        (!list.is_empty()).then_some(list)
    })
    .await;
    assert_eq!(dead[0]["sink"], "webhook");
    assert_eq!(dead[0]["event"], "ledger.created");
    assert_eq!(dead[0]["entity_id"], ledger.as_str());
    assert_eq!(dead[0]["attempts"], 1);
    assert_eq!(dead[0]["last_error"], "the webhook answered HTTP 500");
    let table = events_cli(&database_url, &["dead", "--sink", "webhook"]);
    assert!(
        table.contains("ledger.created") && table.contains("HTTP 500"),
        "{table}"
    );
    assert!(events_cli(&database_url, &["dead", "--sink", "search"]).contains("no dead events"));

    let (status, body) = health(&workers).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "DOWN");
    assert_eq!(body["outbox"]["dead"], 1);
    assert_eq!(body["outbox"]["sinks"][0]["sink"], "webhook");
    let metrics = reqwest::get(format!("{}/metrics", workers.address()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "coffer_outbox_dead{sink=\"webhook\"} 1",
        "coffer_event_deliveries_total{sink=\"webhook\",outcome=\"dead\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
    let stats: Value =
        serde_json::from_str(&events_cli(&database_url, &["stats", "--json"])).unwrap();
    assert_eq!(stats[0]["sink"], "webhook");
    assert_eq!(stats[0]["dead"], 1);

    // The receiver is back: the redriven event is delivered, and the workers are healthy.
    receiver.failing.store(false, Ordering::SeqCst);
    let id = dead[0]["id"].to_string();
    assert!(events_cli(&database_url, &["redrive", "--id", &id])
        .starts_with("1 dead events made pending again"));
    wait_for(WAIT, "the redriven event", || async {
        receiver
            .counts()
            .contains_key(&format!("ledger.created {ledger}"))
            .then_some(())
    })
    .await;
    wait_for(WAIT, "healthy workers", || async {
        (health(&workers).await.0 == StatusCode::OK).then_some(())
    })
    .await;
    assert!(events_cli(&database_url, &["dead"]).contains("no dead events"));
    assert!(events_cli(&database_url, &["redrive", "--all"]).starts_with("0 dead events"));
    assert!(receiver.receiver.refused() >= 1);
}
