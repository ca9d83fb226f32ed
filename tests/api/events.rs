//! Events and the global webhook (Blnk 2.8): every change writes its event in its own
//! transaction, and the dispatcher POSTs it to a real HTTP receiver in this process, signed;
//! a receiver's 500 is retried; a refused batch sends nothing; one balance's events arrive
//! in commit order.

use crate::helpers::{self, signing_secret, spawn_with, test_settings, wait_for, Backend, TestApp};
use crate::on_both_backends;
use crate::receiver::{self, Answer, Receiver, Request};
use reqwest::StatusCode;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);
/// The secret the webhook servers sign with (outside the secure suite, whose master key
/// signs instead).
const SECRET: &str = "webhook-test-secret";

/// A webhook receiver: answers 500 to the first `fail_first` requests whose body contains
/// `failing`, 200 to the rest (the accepted ones, in arrival order).
fn start_receiver(fail_first: usize, failing: &'static str) -> Receiver {
    let failures_left = AtomicUsize::new(fail_first);
    Receiver::answering(move |request| {
        let fail = request.body.contains(failing)
            && failures_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        Answer::status(if fail { 500 } else { 200 })
    })
}

/// The accepted events named `name` whose `data.<field>` is `value`.
fn matching(receiver: &Receiver, name: &str, field: &str, value: &str) -> Vec<Request> {
    receiver
        .accepted()
        .into_iter()
        .filter(|r| r.json["event"] == name && r.json["data"][field] == value)
        .collect()
}

/// Waits for the event named `name` whose `data.<field>` is `value`.
async fn wait_event(receiver: &Receiver, name: &str, field: &str, value: &str) -> Request {
    wait_for(WAIT, &format!("{name} of {value}"), || async {
        matching(receiver, name, field, value).into_iter().next()
    })
    .await
}

/// A server whose webhook is `receiver`, with fast polls and retries; and its signing key.
async fn app_with_webhook(backend: Backend, receiver: &Receiver) -> (TestApp, String) {
    let mut settings = test_settings(backend).await;
    settings.webhook_url = Some(receiver.url("/hooks"));
    settings.webhook_headers = vec![("X-Custom".into(), "static-value".to_owned().into())];
    let secret = signing_secret(&mut settings, SECRET);
    settings.outbox.poll_interval_ms = 20;
    settings.outbox.backoff_base_ms = 50;
    settings.outbox.backoff_cap_ms = 200;
    settings.webhook_timeout_ms = 5_000;
    (spawn_with(settings).await, secret)
}

fn assert_signed(received: &Request, secret: &str) {
    receiver::assert_signed(received, secret);
    assert_eq!(received.header("x-custom"), Some("static-value"));
}

/// `(status, attempts)` of the outbox rows of `event`.
async fn outbox_rows(app: &TestApp, event: &str) -> Vec<(String, i32)> {
    helpers::outbox_rows(app, Some(("event", event)))
        .await
        .into_iter()
        .map(|(status, attempts, _)| (status, attempts))
        .collect()
}

async fn every_change_sends_its_event_signed(backend: Backend) {
    let receiver = start_receiver(0, "");
    let (app, secret) = app_with_webhook(backend, &receiver).await;

    let ledger = app.create_ledger("events").await;
    let reply = app
        .post(
            "/balances",
            json!({ "ledger_id": ledger, "currency": "USD", "precision": 100 }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let balance = reply.json["balance_id"].as_str().unwrap().to_owned();
    let identity = app.create_identity("Ada").await;
    // 40 digits: the payload carries the exact integer, as the API serves it.
    let big = "1234567890123456789012345678901234567890";
    let body = format!(
        r#"{{"precise_amount": {big}, "precision": 100, "currency": "USD",
            "reference": "evt-big", "description": "big", "source": "@World",
            "destination": "{balance}", "allow_overdraft": true, "skip_queue": true}}"#
    );
    let reply = app.post_raw("/transactions", &body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let transaction = reply.json["transaction_id"].as_str().unwrap().to_owned();
    let queued = app
        .post(
            "/transactions",
            json!({ "precise_amount": 5, "currency": "USD", "precision": 100,
                    "reference": "evt-queued", "description": "queued",
                    "source": balance, "destination": "@Elsewhere" }),
        )
        .await;
    assert_eq!(queued.status, StatusCode::CREATED, "{}", queued.text);
    let queued_id = queued.json["transaction_id"].as_str().unwrap().to_owned();

    let event = wait_event(&receiver, "ledger.created", "ledger_id", &ledger).await;
    assert_eq!(event.json["data"]["name"], "events");
    assert_signed(&event, &secret);
    let event = wait_event(&receiver, "balance.created", "balance_id", &balance).await;
    assert_eq!(event.json["data"]["currency"], "USD");
    assert_eq!(event.json["data"]["precision"], 100);
    assert_signed(&event, &secret);
    let event = wait_event(&receiver, "identity.created", "identity_id", &identity).await;
    assert_eq!(event.json["data"]["first_name"], "Ada");
    assert_signed(&event, &secret);
    let event = wait_event(
        &receiver,
        "transaction.applied",
        "transaction_id",
        &transaction,
    )
    .await;
    assert!(
        event.body.contains(&format!("\"precise_amount\":{big}")),
        "exact amount in {}",
        event.body
    );
    assert_eq!(event.json["data"]["status"], "APPLIED");
    assert_eq!(event.json["data"]["reference"], "evt-big");
    assert_signed(&event, &secret);
    // The queued transfer: its QUEUED row, then the worker's APPLIED child.
    let event = wait_event(
        &receiver,
        "transaction.queued",
        "transaction_id",
        &queued_id,
    )
    .await;
    assert_eq!(event.json["data"]["status"], "QUEUED");
    let child = wait_event(
        &receiver,
        "transaction.applied",
        "reference",
        "evt-queued_q",
    )
    .await;
    assert_eq!(child.json["data"]["parent_transaction"], queued_id.as_str());
}
on_both_backends!(every_change_sends_its_event_signed);

async fn a_receiver_answering_500_gets_the_event_once_after_a_retry(backend: Backend) {
    let receiver = start_receiver(2, "ledger.created");
    let (app, _) = app_with_webhook(backend, &receiver).await;

    let ledger = app.create_ledger("retried").await;
    wait_event(&receiver, "ledger.created", "ledger_id", &ledger).await;
    assert_eq!(receiver.refused(), 2, "two 500s first");
    let rows = wait_for(WAIT, "the event marked delivered", || async {
        let rows = outbox_rows(&app, "ledger.created").await;
        (rows.iter().all(|(status, _)| status == "delivered")).then_some(rows)
    })
    .await;
    assert_eq!(
        rows,
        [("delivered".to_owned(), 2)],
        "two failed attempts kept"
    );
    // Marked delivered: never sent again.
    let other = app.create_ledger("after").await;
    wait_event(&receiver, "ledger.created", "ledger_id", &other).await;
    assert_eq!(
        matching(&receiver, "ledger.created", "ledger_id", &ledger).len(),
        1
    );
}
on_both_backends!(a_receiver_answering_500_gets_the_event_once_after_a_retry);

async fn a_refused_transfer_sends_no_event(backend: Backend) {
    let receiver = start_receiver(0, "");
    let (app, _) = app_with_webhook(backend, &receiver).await;
    let balances = app.balances("USD", 2).await;

    // No funds, skip_queue: refused, nothing stored, the batch wrote no event.
    let mut refused = app.transfer(&balances[0], &balances[1], 100, true);
    refused["reference"] = json!("evt-refused");
    let reply = app.post("/transactions", refused).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    let mut marker = app.transfer("@World", &balances[1], 100, true);
    marker["reference"] = json!("evt-marker");
    marker["allow_overdraft"] = json!(true);
    let reply = app.post("/transactions", marker).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);

    wait_event(&receiver, "transaction.applied", "reference", "evt-marker").await;
    assert!(
        receiver
            .accepted()
            .iter()
            .all(|r| !r.body.contains("evt-refused")),
        "no event of the refused transfer"
    );
    assert_eq!(outbox_rows(&app, "transaction.rejected").await, []);
}
on_both_backends!(a_refused_transfer_sends_no_event);

async fn one_balances_events_arrive_in_commit_order(backend: Backend) {
    // The first two transaction deliveries fail: later events of the balance wait for them.
    let receiver = start_receiver(2, "transaction.applied");
    let (app, _) = app_with_webhook(backend, &receiver).await;
    let balances = app.balances("USD", 2).await;
    app.fund(&balances[0], "USD", 1_000).await;
    let references: Vec<String> = (0..15).map(|i| format!("evt-order-{i}")).collect();
    for reference in &references {
        let mut transfer = app.transfer(&balances[0], &balances[1], 10, true);
        transfer["reference"] = json!(reference);
        let reply = app.post("/transactions", transfer).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    }

    let last = references.last().unwrap();
    wait_event(&receiver, "transaction.applied", "reference", last).await;
    let arrived: Vec<String> = receiver
        .accepted()
        .iter()
        .filter(|r| r.json["event"] == "transaction.applied")
        .filter(|r| r.json["data"]["destination"] == balances[1].as_str())
        .map(|r| r.json["data"]["reference"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(arrived, references, "in commit order, each once");
    assert_eq!(receiver.refused(), 2);
}
on_both_backends!(one_balances_events_arrive_in_commit_order);
