//! The circuit breaker in the real dispatcher: a webhook receiver that is down opens the
//! webhook's circuit after a few failures, its events are then deferred (no call, no
//! attempt used: none goes dead), and once the receiver is back a probe closes the circuit
//! and every event arrives once.

use crate::helpers::{outbox_rows, spawn_with, test_settings, wait_for, Backend, TestApp};
use crate::on_both_backends;
use crate::receiver::{Answer, Receiver};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// `(status, attempts, last_error)` of every outbox row.
async fn rows(app: &TestApp) -> Vec<(String, i32, Option<String>)> {
    outbox_rows(app, None).await
}

async fn an_open_circuit_defers_events_without_using_their_attempts(backend: Backend) {
    // Answers 500 while `down`, else 200 and keeps the body.
    let down = Arc::new(AtomicBool::new(true));
    let receiver = Receiver::answering({
        let down = down.clone();
        move |_| {
            Answer::status(if down.load(Ordering::SeqCst) {
                500
            } else {
                200
            })
        }
    });
    let mut settings = test_settings(backend).await;
    settings.webhook_url = Some(receiver.url("/events"));
    settings.outbox.poll_interval_ms = 20;
    settings.outbox.backoff_base_ms = 20;
    settings.outbox.backoff_cap_ms = 20;
    // Without the breaker, three quick failures would make every event dead.
    settings.outbox.attempts_max = 3;
    settings.outbox_breaker.failures_max = 2;
    settings.outbox_breaker.cooldown_ms = 300;
    settings.outbox_breaker.cooldown_cap_ms = 300;
    let app = spawn_with(settings).await;
    let mut ledgers = Vec::new();
    for i in 0..5 {
        ledgers.push(app.create_ledger(&format!("breaker-{i}")).await);
    }
    wait_for(WAIT, "events deferred by the open circuit", || async {
        let rows = rows(&app).await;
        rows.iter()
            .any(|(_, _, error)| {
                error
                    .as_deref()
                    .is_some_and(|e| e == "the circuit of webhook is open")
            })
            .then_some(())
    })
    .await;
    // Several cool-downs long: the probes use attempts, the deferred events do not.
    let calls_then = receiver.requests().len();
    wait_for(WAIT, "a few failed probes", || async {
        (receiver.requests().len() >= calls_then + 2).then_some(())
    })
    .await;
    let rows_while_down = rows(&app).await;
    let dead = rows_while_down.iter().filter(|r| r.0 == "dead").count();
    assert!(
        dead <= 1,
        "only the probing event may run out of attempts: {rows_while_down:?}"
    );

    down.store(false, Ordering::SeqCst);
    wait_for(WAIT, "every live event delivered", || async {
        let rows = rows(&app).await;
        rows.iter().all(|r| r.0 != "pending").then_some(())
    })
    .await;
    let kept = receiver.accepted_json();
    let delivered: Vec<&str> = kept
        .iter()
        .filter_map(|e| e["data"]["ledger_id"].as_str())
        .collect();
    let dead_after = rows(&app).await.iter().filter(|r| r.0 == "dead").count();
    assert_eq!(delivered.len() + dead_after, ledgers.len(), "{kept:?}");
    assert!(dead_after <= 1);
}
on_both_backends!(an_open_circuit_defers_events_without_using_their_attempts);
