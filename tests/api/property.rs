//! Random sequences of transfers, holds, commits, voids, refunds and splits against the real
//! server. A model predicts every outcome and every balance; afterwards Σ balances and
//! Σ inflight balances per currency are 0 and every balance equals the replay of its rows.

use crate::helpers::{spawn_app, Backend, TestApp};
use crate::on_both_backends;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use reqwest::StatusCode;
use serde_json::json;

const BALANCES: usize = 4;
const CASES: u32 = 8;

#[derive(Debug, Clone)]
enum Op {
    /// `overdraft`: None none, Some(0) unlimited, Some(n) a limit of n.
    Transfer {
        source: usize,
        destination: usize,
        amount: i64,
        overdraft: Option<i64>,
        skip_queue: bool,
    },
    Hold {
        source: usize,
        destination: usize,
        amount: i64,
    },
    /// Commit part (or, with None, all) of an earlier hold (index modulo the holds so far).
    Commit {
        hold: usize,
        amount: Option<i64>,
    },
    Void {
        hold: usize,
    },
    /// Refund an earlier applied transfer (index modulo the transfers so far).
    Refund {
        transfer: usize,
    },
    /// 50% and "left" to two destinations, atomic.
    Split {
        source: usize,
        first: usize,
        second: usize,
        amount: i64,
    },
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let balance = || 0..BALANCES;
    let overdraft = prop_oneof![Just(None), Just(Some(0)), (1i64..300).prop_map(Some)];
    let op = prop_oneof![
        3 => (balance(), balance(), 1i64..400, overdraft, any::<bool>()).prop_map(|(source, destination, amount, overdraft, skip_queue)| Op::Transfer { source, destination, amount, overdraft, skip_queue }),
        2 => (balance(), balance(), 1i64..300).prop_map(|(source, destination, amount)| Op::Hold { source, destination, amount }),
        2 => (0usize..8, proptest::option::of(1i64..150)).prop_map(|(hold, amount)| Op::Commit { hold, amount }),
        1 => (0usize..8).prop_map(|hold| Op::Void { hold }),
        1 => (0usize..8).prop_map(|transfer| Op::Refund { transfer }),
        1 => (balance(), balance(), balance(), 1i64..300).prop_map(|(source, first, second, amount)| Op::Split { source, first, second, amount }),
    ];
    proptest::collection::vec(op, 1..40)
}

#[derive(Default, Clone)]
struct Model {
    balance: Vec<i64>,
    inflight_debit: Vec<i64>,
    inflight_credit: Vec<i64>,
    /// (transaction id, remaining, voided)
    holds: Vec<(String, i64, bool)>,
    /// (transaction id, refunded)
    applied: Vec<(String, bool)>,
}

impl Model {
    fn available(&self, index: usize) -> i64 {
        self.balance[index] - self.inflight_debit[index]
    }
}

fn body(
    app: &TestApp,
    ids: &[String],
    source: usize,
    destination: usize,
    amount: i64,
    skip_queue: bool,
) -> serde_json::Value {
    app.transfer(&ids[source], &ids[destination], amount, skip_queue)
}

async fn apply(app: &TestApp, ids: &[String], model: &mut Model, op: &Op) {
    match op.clone() {
        Op::Transfer {
            source,
            destination,
            amount,
            overdraft,
            skip_queue,
        } => {
            let mut request = body(app, ids, source, destination, amount, skip_queue);
            match overdraft {
                Some(0) => request["allow_overdraft"] = json!(true),
                Some(limit) => request["overdraft_limit"] = json!(limit),
                None => {}
            }
            let reference = request["reference"].as_str().unwrap().to_owned();
            let reply = app.post("/transactions", request).await;
            if source == destination {
                assert_eq!(reply.status, StatusCode::BAD_REQUEST);
                return;
            }
            let floor = match overdraft {
                Some(0) => i64::MIN,
                Some(limit) => -limit,
                None => 0,
            };
            let allowed = model.available(source) - amount >= floor;
            let row = if skip_queue {
                (reply.status == StatusCode::CREATED).then(|| reply.json.clone())
            } else {
                assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
                Some(app.queued_outcome(&reference).await).filter(|row| row["status"] == "APPLIED")
            };
            assert_eq!(
                row.is_some(),
                allowed,
                "model and server agree on {op:?} from {}",
                model.available(source)
            );
            if let Some(row) = row {
                model.balance[source] -= amount;
                model.balance[destination] += amount;
                model
                    .applied
                    .push((row["transaction_id"].as_str().unwrap().to_owned(), false));
            }
        }
        Op::Hold {
            source,
            destination,
            amount,
        } => {
            let mut request = body(app, ids, source, destination, amount, true);
            request["inflight"] = json!(true);
            let reply = app.post("/transactions", request).await;
            let allowed = source != destination && model.available(source) >= amount;
            assert_eq!(
                reply.status == StatusCode::CREATED,
                allowed,
                "{op:?}: {}",
                reply.text
            );
            if allowed {
                model.inflight_debit[source] += amount;
                model.inflight_credit[destination] += amount;
                let id = reply.json["transaction_id"].as_str().unwrap().to_owned();
                model
                    .holds
                    .push((format!("{source}:{destination}:{id}"), amount, false));
            }
        }
        Op::Commit { .. } | Op::Void { .. } if model.holds.is_empty() => {}
        Op::Commit { hold, amount } => {
            let index = hold % model.holds.len();
            let (key, remaining, voided) = model.holds[index].clone();
            let mut parts = key.splitn(3, ':');
            let (source, destination, id): (usize, usize, &str) = (
                parts.next().unwrap().parse().unwrap(),
                parts.next().unwrap().parse().unwrap(),
                parts.next().unwrap(),
            );
            let mut request = json!({ "status": "commit", "skip_queue": true });
            if let Some(amount) = amount {
                request["precise_amount"] = json!(amount);
            }
            let reply = app
                .put(&format!("/transactions/inflight/{id}"), request)
                .await;
            let moved = amount.unwrap_or(remaining);
            let expected = if voided || remaining == 0 {
                StatusCode::CONFLICT
            } else if moved > remaining {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            };
            assert_eq!(
                reply.status, expected,
                "{op:?} on {remaining} left: {}",
                reply.text
            );
            if expected == StatusCode::OK {
                model.inflight_debit[source] -= moved;
                model.inflight_credit[destination] -= moved;
                model.balance[source] -= moved;
                model.balance[destination] += moved;
                model.holds[index].1 -= moved;
                model.applied.push((
                    reply.json["transaction_id"].as_str().unwrap().to_owned(),
                    false,
                ));
            }
        }
        Op::Void { hold } => {
            let index = hold % model.holds.len();
            let (key, remaining, voided) = model.holds[index].clone();
            let mut parts = key.splitn(3, ':');
            let (source, destination, id): (usize, usize, &str) = (
                parts.next().unwrap().parse().unwrap(),
                parts.next().unwrap().parse().unwrap(),
                parts.next().unwrap(),
            );
            let reply = app
                .put(
                    &format!("/transactions/inflight/{id}"),
                    json!({ "status": "void", "skip_queue": true }),
                )
                .await;
            let expected = if voided || remaining == 0 {
                StatusCode::CONFLICT
            } else {
                StatusCode::OK
            };
            assert_eq!(reply.status, expected, "{op:?}: {}", reply.text);
            if expected == StatusCode::OK {
                model.inflight_debit[source] -= remaining;
                model.inflight_credit[destination] -= remaining;
                model.holds[index] = (key, 0, true);
            }
        }
        Op::Refund { transfer } => {
            if model.applied.is_empty() {
                return;
            }
            let index = transfer % model.applied.len();
            let (id, refunded) = model.applied[index].clone();
            let reply = app
                .post(
                    &format!("/refund-transaction/{id}"),
                    json!({ "skip_queue": true }),
                )
                .await;
            if refunded {
                assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text);
                return;
            }
            assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
            let find = |key: &str| {
                ids.iter()
                    .position(|b| b == reply.json[key].as_str().unwrap())
                    .unwrap()
            };
            let amount = reply.json["precise_amount"].as_i64().unwrap();
            model.balance[find("source")] -= amount;
            model.balance[find("destination")] += amount;
            model.applied[index].1 = true;
            model.applied.push((
                reply.json["transaction_id"].as_str().unwrap().to_owned(),
                false,
            ));
        }
        Op::Split {
            source,
            first,
            second,
            amount,
        } => {
            let request = json!({
                "precise_amount": amount, "currency": "USD", "reference": format!("split-{}", uuid::Uuid::new_v4()),
                "description": "split", "source": ids[source], "skip_queue": true, "atomic": true,
                "destinations": [
                    { "identifier": ids[first], "distribution": "50%" },
                    { "identifier": ids[second], "distribution": "left" },
                ],
            });
            let reply = app.post("/transactions", request).await;
            if source == first || source == second {
                assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
                return;
            }
            let allowed = model.available(source) >= amount;
            assert_eq!(
                reply.status == StatusCode::CREATED,
                allowed,
                "{op:?}: {}",
                reply.text
            );
            if allowed {
                // 50% rounds half away from zero; "left" takes the rest.
                let half = (amount + 1) / 2;
                model.balance[source] -= amount;
                model.balance[first] += half;
                model.balance[second] += amount - half;
                // A leg that gets nothing (a split of 1) has no row and no id.
                for leg in reply.json["destinations"].as_array().unwrap() {
                    let id = leg["transaction_id"].as_str().unwrap();
                    if !id.is_empty() {
                        model.applied.push((id.to_owned(), false));
                    }
                }
            }
        }
    }
}

async fn random_operation_sequences_match_the_model_and_keep_the_invariants(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        ..Config::default()
    });
    for _ in 0..CASES {
        let steps = ops().new_tree(&mut runner).expect("a case").current();
        let ids = app.balances("USD", BALANCES).await;
        let mut model = Model {
            balance: vec![0; BALANCES],
            inflight_debit: vec![0; BALANCES],
            inflight_credit: vec![0; BALANCES],
            ..Model::default()
        };
        for (index, id) in ids.iter().enumerate() {
            let start = 200 * index as i64;
            if start > 0 {
                app.fund(id, "USD", start).await;
            }
            model.balance[index] = start;
        }
        for step in &steps {
            apply(&app, &ids, &mut model, step).await;
        }
        for (index, id) in ids.iter().enumerate() {
            let balance = app.balance(id).await;
            assert_eq!(
                balance["balance"].as_i64(),
                Some(model.balance[index]),
                "balance {id}"
            );
            assert_eq!(
                balance["inflight_debit_balance"].as_i64(),
                Some(model.inflight_debit[index]),
                "inflight debit {id}"
            );
            assert_eq!(
                balance["inflight_credit_balance"].as_i64(),
                Some(model.inflight_credit[index]),
                "inflight credit {id}"
            );
        }
    }
    app.assert_invariants().await;
}
on_both_backends!(random_operation_sequences_match_the_model_and_keep_the_invariants);

// ---------------------------------------------------------------------------------------
// Balance history
// ---------------------------------------------------------------------------------------
//
// Random histories: transfers between a few balances and @World with random amounts, some
// back-dated to random times of a fixed window, some without an effective date, some queued
// and some skipping the queue, with snapshot passes (waited for) interleaved, while the
// snapshotter also takes snapshots by itself every 2 entries. Then, at many random times in
// and around the window, `GET /balances/{id}/at` (from snapshots and from the source)
// equals a model's replay of the APPLIED transfers up to that time, and every stored
// snapshot equals the replay at its time.

use crate::helpers::{spawn_with, test_settings};
use crate::history::{
    applied, assert_exact_at, assert_snapshots_agree, effective_time, snapshot_everything,
    snapshots, transfer_body, window_start, world_id, Book,
};
use chrono::{DateTime, Duration as Span, Utc};

const HISTORY_CASES: u32 = 6;
const HISTORY_BALANCES: usize = 3;
/// The back-dating window: 36 hours from `window_start()` (two days ago, whole hours).
const WINDOW_MICROS: i64 = 36 * 3_600 * 1_000_000;
/// Reads range from an hour before the window to past now (now is 48 to 49 hours in).
const READS_FROM_MICROS: i64 = -3_600 * 1_000_000;
const READS_TO_MICROS: i64 = 50 * 3_600 * 1_000_000;

#[derive(Debug, Clone)]
enum HistoryOp {
    /// `source` None: from @World (overdraft allowed). `when`: micros into the window.
    Transfer {
        source: Option<usize>,
        destination: usize,
        amount: i64,
        when: Option<i64>,
        skip_queue: bool,
    },
    /// Snapshots of every balance; waits until the pass has finished.
    Snapshot,
}

fn history_ops() -> impl Strategy<Value = Vec<HistoryOp>> {
    let balance = || 0..HISTORY_BALANCES;
    // On a coarse grid (ties between entries are likely) or anywhere, to the microsecond.
    let when = prop_oneof![
        (0i64..40).prop_map(|slot| slot * (WINDOW_MICROS / 40)),
        0i64..WINDOW_MICROS,
    ];
    let op = prop_oneof![
        8 => (
            proptest::option::weighted(0.65, balance()),
            balance(),
            1i64..500,
            proptest::option::weighted(0.7, when),
            any::<bool>(),
        )
            .prop_map(|(source, destination, amount, when, skip_queue)| HistoryOp::Transfer {
                source,
                destination: if source == Some(destination) {
                    (destination + 1) % HISTORY_BALANCES
                } else {
                    destination
                },
                amount,
                when,
                skip_queue,
            }),
        1 => Just(HistoryOp::Snapshot),
    ];
    proptest::collection::vec(op, 1..22)
}

fn reads() -> impl Strategy<Value = Vec<(usize, i64)>> {
    proptest::collection::vec(
        (0..=HISTORY_BALANCES, READS_FROM_MICROS..READS_TO_MICROS),
        40,
    )
}

async fn random_histories_read_back_exactly_at_any_time(backend: Backend) {
    let mut settings = test_settings(backend).await;
    settings.snapshot_every_transactions = 2;
    settings.snapshot_interval_ms = 50;
    let app = spawn_with(settings).await;
    let db = app.direct_db().await;
    let mut runner = TestRunner::new(Config {
        cases: HISTORY_CASES,
        ..Config::default()
    });
    let start = window_start();
    let at = |micros: i64| start + Span::microseconds(micros);
    // One book for every case: @World is shared by them (and exists once first used).
    let mut book = Book::default();
    let seed = app.balances("USD", 1).await.remove(0);
    book.record(&applied(&app, transfer_body("@World", &seed, 1, Some(at(0)), true)).await);
    let world = world_id(&app).await;
    for case in 0..HISTORY_CASES {
        let steps = history_ops()
            .new_tree(&mut runner)
            .expect("a case")
            .current();
        let checks = reads().new_tree(&mut runner).expect("reads").current();
        eprintln!("history case {case}: {steps:?}");
        let mut ids = app.balances("USD", HISTORY_BALANCES).await;
        let mut current = [0i64; HISTORY_BALANCES];
        for step in &steps {
            let HistoryOp::Transfer {
                source,
                destination,
                amount,
                when,
                skip_queue,
            } = step.clone()
            else {
                snapshot_everything(&app).await;
                continue;
            };
            let from = source.map_or("@World", |s| ids[s].as_str());
            let effective = when.map(at);
            let body = transfer_body(from, &ids[destination], amount, effective, skip_queue);
            let allowed = source.is_none_or(|s| current[s] >= amount);
            let row = if allowed {
                Some(applied(&app, body).await)
            } else {
                let reply = app.post("/transactions", body.clone()).await;
                if skip_queue {
                    assert_eq!(
                        reply.status,
                        StatusCode::BAD_REQUEST,
                        "{step:?}: {}",
                        reply.text
                    );
                    assert_eq!(reply.json["error_detail"]["code"], "TXN_INSUFFICIENT_FUNDS");
                } else {
                    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
                    let outcome = app
                        .queued_outcome(body["reference"].as_str().unwrap())
                        .await;
                    assert_eq!(outcome["status"], "REJECTED", "{step:?}: {outcome}");
                }
                None
            };
            if let Some(row) = row {
                if let Some(effective) = effective {
                    assert_eq!(effective_time(&row), effective, "{row}");
                }
                book.record(&row);
                if let Some(s) = source {
                    current[s] -= amount;
                }
                current[destination] += amount;
            }
        }
        ids.push(world.clone());
        // Reads at random times, at every entry's time (and a microsecond either side),
        // and at every snapshot's time.
        let stored = snapshots(&db).await;
        assert_snapshots_agree(&book, &stored);
        let mut times: Vec<(usize, DateTime<Utc>)> =
            checks.iter().map(|(i, micros)| (*i, at(*micros))).collect();
        for t in book.interesting_times() {
            if t >= at(READS_FROM_MICROS) {
                times.push((times.len() % ids.len(), t));
            }
        }
        for snapshot in stored.iter().filter(|s| ids.contains(&s.balance_id)) {
            let index = ids
                .iter()
                .position(|id| id == &snapshot.balance_id)
                .unwrap();
            times.push((index, snapshot.at));
            times.push((index, snapshot.at + Span::microseconds(1)));
        }
        for (index, t) in times {
            assert_exact_at(&app, &book, &ids[index], t).await;
        }
        for (index, id) in ids.iter().take(HISTORY_BALANCES).enumerate() {
            assert_eq!(app.amount(id).await, current[index], "{id}");
        }
    }
    db.close().await.ok();
    app.assert_invariants().await;
}
on_both_backends!(random_histories_read_back_exactly_at_any_time);
