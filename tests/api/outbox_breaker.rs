//! The circuit breaker in the real dispatcher: a webhook receiver that is down opens the
//! webhook's circuit after a few failures, its events are then deferred (no call, no
//! attempt used: none goes dead), and once the receiver is back a probe closes the circuit
//! and every event arrives once.

use crate::helpers::{spawn_with, test_settings, wait_for, Backend, TestApp};
use crate::on_both_backends;
use actix_web::{web, HttpResponse};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// Answers 500 while `down`, else 200 and keeps the body.
struct Receiver {
    url: String,
    down: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    kept: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    fn start() -> Self {
        let down = Arc::new(AtomicBool::new(true));
        let calls: Arc<AtomicUsize> = Arc::default();
        let kept: Arc<Mutex<Vec<Value>>> = Arc::default();
        let state = (down.clone(), calls.clone(), kept.clone());
        let server = actix_web::HttpServer::new(move || {
            let state = state.clone();
            actix_web::App::new().default_service(web::to(move |body: web::Bytes| {
                let (down, calls, kept) = state.clone();
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    if down.load(Ordering::SeqCst) {
                        return HttpResponse::InternalServerError().finish();
                    }
                    kept.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                    HttpResponse::Ok().finish()
                }
            }))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .expect("the receiver binds");
        let port = server.addrs()[0].port();
        actix_web::rt::spawn(server.run());
        Self {
            url: format!("http://127.0.0.1:{port}/events"),
            down,
            calls,
            kept,
        }
    }
}

/// `(status, attempts, last_error)` of every outbox row.
async fn rows(app: &TestApp) -> Vec<(String, i32, Option<String>)> {
    let db = app.direct_db().await;
    let backend = db.get_database_backend();
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT status, attempts, last_error FROM outbox_events ORDER BY id",
        ))
        .await
        .expect("outbox_events is readable");
    rows.iter()
        .map(|row| {
            (
                row.try_get("", "status").unwrap(),
                row.try_get("", "attempts").unwrap(),
                row.try_get("", "last_error").unwrap(),
            )
        })
        .collect()
}

async fn an_open_circuit_defers_events_without_using_their_attempts(backend: Backend) {
    let receiver = Receiver::start();
    let mut settings = test_settings(backend).await;
    settings.webhook_url = Some(receiver.url.clone());
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
    let calls_then = receiver.calls.load(Ordering::SeqCst);
    wait_for(WAIT, "a few failed probes", || async {
        (receiver.calls.load(Ordering::SeqCst) >= calls_then + 2).then_some(())
    })
    .await;
    let rows_while_down = rows(&app).await;
    let dead = rows_while_down.iter().filter(|r| r.0 == "dead").count();
    assert!(
        dead <= 1,
        "only the probing event may run out of attempts: {rows_while_down:?}"
    );

    receiver.down.store(false, Ordering::SeqCst);
    wait_for(WAIT, "every live event delivered", || async {
        let rows = rows(&app).await;
        rows.iter().all(|r| r.0 != "pending").then_some(())
    })
    .await;
    let kept = receiver.kept.lock().unwrap().clone();
    let delivered: Vec<&str> = kept
        .iter()
        .filter_map(|e| e["data"]["ledger_id"].as_str())
        .collect();
    let dead_after = rows(&app).await.iter().filter(|r| r.0 == "dead").count();
    assert_eq!(delivered.len() + dead_after, ledgers.len(), "{kept:?}");
    assert!(dead_after <= 1);
}
on_both_backends!(an_open_circuit_defers_events_without_using_their_attempts);
