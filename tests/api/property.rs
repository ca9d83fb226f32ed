//! Random sequences of transfers against the real server. A model predicts every outcome
//! (applied or refused) and every balance; afterwards Σ balances per currency is 0 and every
//! balance equals the replay of its applied transactions.

use crate::helpers::{spawn_app, Backend, TestApp};
use crate::on_both_backends;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use reqwest::StatusCode;
use serde_json::json;

const BALANCES: usize = 4;
const CASES: u32 = 6;

#[derive(Debug, Clone)]
struct Move {
    source: usize,
    destination: usize,
    amount: i64,
    /// None: no overdraft; Some(0): unlimited; Some(n): limit n.
    overdraft: Option<i64>,
    skip_queue: bool,
}

fn moves() -> impl Strategy<Value = Vec<Move>> {
    let one = (
        0..BALANCES,
        0..BALANCES,
        1i64..500,
        prop_oneof![Just(None), Just(Some(0)), (1i64..300).prop_map(Some)],
        any::<bool>(),
    )
        .prop_map(
            |(source, destination, amount, overdraft, skip_queue)| Move {
                source,
                destination,
                amount,
                overdraft,
                skip_queue,
            },
        );
    proptest::collection::vec(one, 1..25)
}

/// Applies one move through the API and checks the outcome the model predicts.
async fn apply(app: &TestApp, ids: &[String], model: &mut [i64], step: &Move) {
    let mut body = app.transfer(
        &ids[step.source],
        &ids[step.destination],
        step.amount,
        step.skip_queue,
    );
    match step.overdraft {
        Some(0) => body["allow_overdraft"] = json!(true),
        Some(limit) => body["overdraft_limit"] = json!(limit),
        None => {}
    }
    let reference = body["reference"].as_str().unwrap().to_owned();
    let reply = app.post("/transactions", body).await;
    if step.source == step.destination {
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        return;
    }
    let floor = match step.overdraft {
        Some(0) => i64::MIN,
        Some(limit) => -limit,
        None => 0,
    };
    let allowed = model[step.source] - step.amount >= floor;
    let applied = if step.skip_queue {
        reply.status == StatusCode::CREATED
    } else {
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        app.queued_outcome(&reference).await["status"] == "APPLIED"
    };
    assert_eq!(
        applied, allowed,
        "model and server agree on {step:?} from {}",
        model[step.source]
    );
    if applied {
        model[step.source] -= step.amount;
        model[step.destination] += step.amount;
    }
}

async fn random_transfer_sequences_match_the_model_and_keep_the_invariants(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        ..Config::default()
    });
    for _ in 0..CASES {
        let steps = moves().new_tree(&mut runner).expect("a case").current();
        let ids = app.balances("USD", BALANCES).await;
        let mut model = vec![0i64; BALANCES];
        for (index, id) in ids.iter().enumerate() {
            let start = 200 * index as i64;
            if start > 0 {
                app.fund(id, "USD", start).await;
            }
            model[index] = start;
        }
        for step in &steps {
            apply(&app, &ids, &mut model, step).await;
        }
        for (id, expected) in ids.iter().zip(&model) {
            assert_eq!(
                app.amount(id).await,
                *expected,
                "balance {id} matches the model"
            );
        }
    }
    app.assert_invariants().await;
}
on_both_backends!(random_transfer_sequences_match_the_model_and_keep_the_invariants);
