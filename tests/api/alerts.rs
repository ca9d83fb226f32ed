//! Alerts and the remaining Blnk events (2.8), received by a real HTTP receiver in this
//! process: balance monitors fire on every field and operator (`=` too), once per crossing,
//! after the transaction event that caused them, and exactly per crossing on a hot balance;
//! the webhook subscription filters; `bulk_transaction.*`, `balance.created` of indicator
//! balances made on first use, and `system.error`.

use crate::helpers::{spawn_with, test_settings, wait_for, Backend, TestApp};
use crate::on_both_backends;
use crate::receiver::Receiver;
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// The events named `name` whose `data.<field>` is `value`.
fn matching(receiver: &Receiver, name: &str, field: &str, value: &str) -> Vec<Value> {
    receiver
        .accepted_json()
        .into_iter()
        .filter(|e| e["event"] == name && e["data"][field] == value)
        .collect()
}

/// Where in the arrival order the first event named `name` with `data.<field> = value` is.
fn position(receiver: &Receiver, name: &str, field: &str, value: &str) -> Option<usize> {
    receiver
        .accepted_json()
        .iter()
        .position(|e| e["event"] == name && e["data"][field] == value)
}

async fn wait_event(receiver: &Receiver, name: &str, field: &str, value: &str) -> Value {
    wait_for(WAIT, &format!("{name} of {value}"), || async {
        matching(receiver, name, field, value).into_iter().next()
    })
    .await
}

fn fired(receiver: &Receiver, monitor_id: &str) -> usize {
    matching(receiver, "balance.monitor", "monitor_id", monitor_id).len()
}

/// A server whose webhook is `receiver` (only `events`, when given), with fast polls.
async fn app_with(backend: Backend, receiver: &Receiver, events: &[&str]) -> TestApp {
    let mut settings = test_settings(backend).await;
    settings.webhook_url = Some(receiver.url("/hooks"));
    settings.webhook_events = events.iter().map(|e| (*e).to_owned()).collect();
    settings.outbox.poll_interval_ms = 20;
    settings.outbox.backoff_base_ms = 50;
    settings.outbox.backoff_cap_ms = 200;
    settings.monitors_refresh_ms = 500;
    spawn_with(settings).await
}

/// Waits until no event of any sink is pending: every monitor evaluated, every event sent.
async fn outbox_idle(app: &TestApp) {
    let db = app.direct_db().await;
    let backend = db.get_database_backend();
    wait_for(WAIT, "an idle outbox", || async {
        let row = db
            .query_one_raw(Statement::from_string(
                backend,
                "SELECT COUNT(*) AS pending FROM outbox_events WHERE status <> 'delivered'",
            ))
            .await
            .expect("outbox_events is readable")?;
        let pending: i64 = row.try_get("", "pending").ok()?;
        (pending == 0).then_some(())
    })
    .await;
}

async fn monitor(app: &TestApp, balance: &str, field: &str, operator: &str, value: &str) -> String {
    let body = format!(
        r#"{{"balance_id": "{balance}", "description": "{field} {operator} {value}",
            "condition": {{"field": "{field}", "operator": "{operator}", "value": {value},
                           "precision": 100}}}}"#
    );
    let reply = app.post_raw("/balance-monitors", &body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.json["monitor_id"].as_str().unwrap().to_owned()
}

/// Records a transfer of `precise_amount` (precision 100), applied or inflight; its id.
async fn transfer(
    app: &TestApp,
    source: &str,
    destination: &str,
    precise_amount: i64,
    inflight: bool,
) -> String {
    let reply = app
        .post(
            "/transactions",
            json!({
                "precise_amount": precise_amount, "currency": "USD", "precision": 100,
                "reference": format!("ref-{}", uuid::Uuid::new_v4()), "description": "alert",
                "source": source, "destination": destination, "allow_overdraft": true,
                "skip_queue": true, "inflight": inflight,
            }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.json["transaction_id"].as_str().unwrap().to_owned()
}

const OPERATORS: [(&str, &str); 6] = [
    (">", "14"),
    (">=", "15"),
    ("=", "15"),
    ("<", "16"),
    ("<=", "15"),
    ("!=", "14"),
];

async fn every_field_and_operator_fires(backend: Backend) {
    let receiver = Receiver::start();
    let app = app_with(backend, &receiver, &[]).await;
    let ledger = app.create_ledger("alerts").await;
    // Each balance's move makes the named fields 1500 minor units (15.00).
    let moves = [
        (true, false, &["credit_balance", "balance"][..]),
        (false, false, &["debit_balance"][..]),
        (
            true,
            true,
            &["inflight_credit_balance", "inflight_balance"][..],
        ),
        (false, true, &["inflight_debit_balance"][..]),
    ];
    let mut expected = Vec::new();
    let mut silent = Vec::new();
    let mut caused = Vec::new();
    for (incoming, inflight, fields) in moves {
        let balance = app.create_balance(&ledger, "USD").await;
        for field in fields {
            for (operator, value) in OPERATORS {
                let id = monitor(&app, &balance, field, operator, value).await;
                expected.push((id, format!("{field} {operator} {value}")));
            }
            // Not met at 15.00: never fires.
            silent.push(monitor(&app, &balance, field, ">", "15").await);
            silent.push(monitor(&app, &balance, field, "=", "15.01").await);
        }
        let (source, destination) = if incoming {
            ("@World", balance.as_str())
        } else {
            (balance.as_str(), "@World")
        };
        let transaction = transfer(&app, source, destination, 1500, inflight).await;
        caused.push((transaction, inflight, balance.clone()));
    }
    for (id, what) in &expected {
        let event = wait_event(&receiver, "balance.monitor", "monitor_id", id).await;
        assert_eq!(event["data"]["description"], what.as_str(), "{event}");
        // The monitor as the API serves it.
        let served = app.get(&format!("/balance-monitors/{id}")).await;
        assert_eq!(event["data"], served.json, "{what}");
    }
    outbox_idle(&app).await;
    for (id, what) in &expected {
        assert_eq!(fired(&receiver, id), 1, "{what} fired once");
    }
    for id in &silent {
        assert_eq!(fired(&receiver, id), 0, "{id} is not met");
    }
    // Each alert arrived after the transaction event that caused it.
    for (transaction, inflight, balance) in &caused {
        let name = if *inflight {
            "transaction.inflight"
        } else {
            "transaction.applied"
        };
        let caused_at = position(&receiver, name, "transaction_id", transaction)
            .expect("the transaction event arrived");
        let alerted_at = position(&receiver, "balance.monitor", "balance_id", balance)
            .expect("an alert arrived");
        assert!(caused_at < alerted_at, "{name} {transaction} came first");
    }
}
on_both_backends!(every_field_and_operator_fires);

async fn a_crossing_fires_once_and_again_only_after_going_false(backend: Backend) {
    let receiver = Receiver::start();
    let app = app_with(backend, &receiver, &[]).await;
    let ledger = app.create_ledger("crossings").await;
    let balance = app.create_balance(&ledger, "USD").await;
    let id = monitor(&app, &balance, "balance", ">", "10").await;
    let fired_after = |amount: i64, incoming: bool| {
        let (app, receiver, balance, id) = (&app, &receiver, balance.clone(), id.clone());
        async move {
            let (source, destination) = if incoming {
                ("@World", balance.as_str())
            } else {
                (balance.as_str(), "@World")
            };
            transfer(app, source, destination, amount, false).await;
            outbox_idle(app).await;
            fired(receiver, &id)
        }
    };
    assert_eq!(fired_after(500, true).await, 0, "5.00: not met");
    assert_eq!(fired_after(1000, true).await, 1, "15.00: crossed");
    assert_eq!(
        fired_after(100, true).await,
        1,
        "16.00: still met, no new alert"
    );
    assert_eq!(fired_after(1000, false).await, 1, "6.00: no longer met");
    assert_eq!(fired_after(1000, true).await, 2, "16.00: crossed again");
    // Replacing the condition evaluates it afresh.
    let reply = app
        .put(
            &format!("/balance-monitors/{id}"),
            json!({ "balance_id": balance, "description": "replaced",
                    "condition": { "field": "credit_balance", "operator": ">=", "value": 1,
                                   "precision": 100 } }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(fired_after(1, true).await, 3, "the new condition is met");
}
on_both_backends!(a_crossing_fires_once_and_again_only_after_going_false);

async fn a_hot_balance_fires_exactly_per_crossing(backend: Backend) {
    let receiver = Receiver::start();
    let app = app_with(backend, &receiver, &[]).await;
    let ledger = app.create_ledger("hot").await;
    let hot = app.create_balance(&ledger, "USD").await;
    // 200 concurrent transfers of 1.00 in: 100.00 is crossed once, 150.00 once.
    let at_100 = monitor(&app, &hot, "credit_balance", ">=", "100").await;
    let above_150 = monitor(&app, &hot, "balance", ">", "150").await;
    let never = monitor(&app, &hot, "balance", ">", "200").await;
    let posts = (0..200).map(|_| transfer(&app, "@World", &hot, 100, false));
    futures_util::future::join_all(posts).await;
    assert_eq!(app.amount(&hot).await, 20_000);
    wait_event(&receiver, "balance.monitor", "monitor_id", &at_100).await;
    wait_event(&receiver, "balance.monitor", "monitor_id", &above_150).await;
    outbox_idle(&app).await;
    assert_eq!(fired(&receiver, &at_100), 1);
    assert_eq!(fired(&receiver, &above_150), 1);
    assert_eq!(fired(&receiver, &never), 0);
}
on_both_backends!(a_hot_balance_fires_exactly_per_crossing);

async fn the_webhook_subscription_filters_events(backend: Backend) {
    let receiver = Receiver::start();
    let app = app_with(backend, &receiver, &["balance.monitor"]).await;
    let ledger = app.create_ledger("filtered").await;
    let balance = app.create_balance(&ledger, "USD").await;
    let id = monitor(&app, &balance, "balance", ">=", "1").await;
    transfer(&app, "@World", &balance, 100, false).await;
    wait_event(&receiver, "balance.monitor", "monitor_id", &id).await;
    outbox_idle(&app).await;
    let names: Vec<Value> = receiver
        .accepted_json()
        .iter()
        .map(|e| e["event"].clone())
        .collect();
    assert_eq!(
        names,
        [json!("balance.monitor")],
        "only the subscribed event"
    );
}
on_both_backends!(the_webhook_subscription_filters_events);

/// `POST /transactions/bulk` of `items` with `flags`; the reply.
async fn bulk(app: &TestApp, items: Vec<Value>, flags: Value) -> crate::helpers::Reply {
    let mut body = flags;
    body["transactions"] = Value::Array(items);
    app.post("/transactions/bulk", body).await
}

fn item(source: &str, destination: &str, precise_amount: i64, overdraft: bool) -> Value {
    json!({
        "precise_amount": precise_amount, "currency": "USD", "precision": 100,
        "reference": format!("bulk-{}", uuid::Uuid::new_v4()), "description": "bulk item",
        "source": source, "destination": destination, "allow_overdraft": overdraft,
    })
}

async fn bulk_requests_send_their_outcome(backend: Backend) {
    let receiver = Receiver::start();
    let app = app_with(backend, &receiver, &[]).await;
    let ledger = app.create_ledger("bulk").await;
    let (a, b) = (
        app.create_balance(&ledger, "USD").await,
        app.create_balance(&ledger, "USD").await,
    );
    let two = || vec![item("@World", &a, 100, true), item("@World", &b, 200, true)];
    // Synchronous, applied and inflight.
    for (inflight, name) in [
        (false, "bulk_transaction.applied"),
        (true, "bulk_transaction.inflight"),
    ] {
        let reply = bulk(
            &app,
            two(),
            json!({ "skip_queue": true, "inflight": inflight }),
        )
        .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        let batch = reply.json["batch_id"].as_str().unwrap();
        let event = wait_event(&receiver, name, "batch_id", batch).await;
        let status = if inflight { "inflight" } else { "applied" };
        assert_eq!(event["data"]["status"], status, "{event}");
        assert_eq!(event["data"]["transaction_count"], 2, "{event}");
        assert!(event["data"]["timestamp"].as_str().is_some(), "{event}");
    }
    // Asynchronous: sent once the batch is recorded for the workers.
    let reply = bulk(&app, two(), json!({ "run_async": true })).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let batch = reply.json["batch_id"].as_str().unwrap();
    let event = wait_event(&receiver, "bulk_transaction.applied", "batch_id", batch).await;
    assert_eq!(event["data"]["status"], "queued", "{event}");
    assert_eq!(event["data"]["transaction_count"], 2, "{event}");
    // Atomic, refused in the commit (b cannot fund 1,000,000): failed, nothing applied.
    let empty = app.create_balance(&ledger, "USD").await;
    let items = vec![
        item("@World", &a, 100, true),
        item(&empty, &b, 1_000_000, false),
    ];
    let reply = bulk(&app, items, json!({ "skip_queue": true, "atomic": true })).await;
    assert!(reply.status.is_client_error(), "{}", reply.text);
    let batch = reply.json["batch_id"].as_str().unwrap();
    let event = wait_event(&receiver, "bulk_transaction.failed", "batch_id", batch).await;
    assert_eq!(event["data"]["status"], "failed", "{event}");
    let error = event["data"]["error"].as_str().unwrap();
    assert!(error.starts_with("transactions[1]"), "{error}");
    assert_eq!(error, reply.json["error"], "worded as the answer");
    // Not atomic: the rows before the refusal stay, and the batch failed.
    let first = item("@World", &a, 100, true);
    let first_reference = first["reference"].as_str().unwrap().to_owned();
    let items = vec![
        first,
        item(&empty, &b, 1_000_000, false),
        item("@World", &b, 100, true),
    ];
    let reply = bulk(&app, items, json!({ "skip_queue": true })).await;
    assert!(reply.status.is_client_error(), "{}", reply.text);
    let batch = reply.json["batch_id"].as_str().unwrap();
    let event = wait_event(&receiver, "bulk_transaction.failed", "batch_id", batch).await;
    let error = event["data"]["error"].as_str().unwrap();
    assert!(error.starts_with("transactions[1]"), "{error}");
    assert_eq!(error, reply.json["error"], "worded as the answer");
    wait_event(
        &receiver,
        "transaction.applied",
        "reference",
        &first_reference,
    )
    .await;
    // Refused before anything was written (an unknown balance): failed too.
    let items = vec![item("@World", "bln_missing", 100, true)];
    let reply = bulk(&app, items, json!({ "skip_queue": true })).await;
    assert!(reply.status.is_client_error(), "{}", reply.text);
    let batch = reply.json["batch_id"].as_str().unwrap();
    wait_event(&receiver, "bulk_transaction.failed", "batch_id", batch).await;
    outbox_idle(&app).await;
    assert_eq!(
        matching(&receiver, "bulk_transaction.failed", "batch_id", batch).len(),
        1
    );
}
on_both_backends!(bulk_requests_send_their_outcome);

async fn indicator_balances_made_on_first_use_are_created_events(backend: Backend) {
    let receiver = Receiver::start();
    let app = app_with(backend, &receiver, &[]).await;
    let unique = uuid::Uuid::new_v4().simple().to_string();
    for skip_queue in [true, false] {
        let indicator = format!("@Made{skip_queue}{unique}");
        let reply = app
            .post(
                "/transactions",
                json!({
                    "precise_amount": 100, "currency": "USD", "precision": 100,
                    "reference": format!("ind-{skip_queue}-{unique}"), "description": "first use",
                    "source": "@World", "destination": indicator, "allow_overdraft": true,
                    "skip_queue": skip_queue,
                }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        let event = wait_event(&receiver, "balance.created", "indicator", &indicator).await;
        assert_eq!(event["data"]["currency"], "USD", "{event}");
        let id = event["data"]["balance_id"].as_str().unwrap().to_owned();
        // Before the transaction that made it.
        let created_at = position(&receiver, "balance.created", "balance_id", &id).unwrap();
        let applied = wait_event(&receiver, "transaction.applied", "destination", &id).await;
        let applied_at = position(
            &receiver,
            "transaction.applied",
            "transaction_id",
            applied["data"]["transaction_id"].as_str().unwrap(),
        )
        .unwrap();
        assert!(created_at < applied_at, "balance.created first");
    }
    outbox_idle(&app).await;
    // `@World` was made on first use too, once.
    assert_eq!(
        matching(&receiver, "balance.created", "indicator", "@World").len(),
        1
    );
}
on_both_backends!(indicator_balances_made_on_first_use_are_created_events);

/// The columns of `transactions`, in table order.
async fn transaction_columns(db: &sea_orm::DatabaseConnection) -> Vec<String> {
    let backend = db.get_database_backend();
    let sql = match backend {
        sea_orm::DbBackend::Postgres => {
            "SELECT column_name AS name FROM information_schema.columns \
             WHERE table_name = 'transactions' AND table_schema = current_schema() \
             ORDER BY ordinal_position"
        }
        _ => "SELECT name FROM pragma_table_info('transactions') ORDER BY cid",
    };
    db.query_all_raw(Statement::from_string(backend, sql))
        .await
        .expect("the columns are readable")
        .iter()
        .map(|row| row.try_get::<String>("", "name").unwrap())
        .collect()
}

async fn a_duplicate_found_by_the_workers_is_a_system_error(backend: Backend) {
    let receiver = Receiver::start();
    let app = app_with(backend, &receiver, &["system.error"]).await;
    let ledger = app.create_ledger("system").await;
    let balance = app.create_balance(&ledger, "USD").await;
    let seed = transfer(&app, "@World", &balance, 100, false).await;
    // Scheduled a few seconds ahead; meanwhile another writer (here: SQL) takes the
    // reference its applied row will claim, so the worker finds the duplicate.
    let reference = format!("sched-{}", uuid::Uuid::new_v4());
    let at = (chrono::Utc::now() + chrono::Duration::seconds(3)).to_rfc3339();
    let reply = app
        .post(
            "/transactions",
            json!({
                "precise_amount": 100, "currency": "USD", "precision": 100,
                "reference": reference, "description": "scheduled", "source": "@World",
                "destination": balance, "allow_overdraft": true, "scheduled_for": at,
            }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let db = app.direct_db().await;
    let backend = db.get_database_backend();
    let columns = transaction_columns(&db).await;
    let (id_value, reference_value, seed_value) = match backend {
        sea_orm::DbBackend::Postgres => ("$1", "$2", "$3"),
        _ => ("?", "?", "?"),
    };
    let selected: Vec<String> = columns
        .iter()
        .map(|c| match c.as_str() {
            "transaction_id" => id_value.to_owned(),
            "reference" => reference_value.to_owned(),
            other => other.to_owned(),
        })
        .collect();
    let sql = format!(
        "INSERT INTO transactions ({}) SELECT {} FROM transactions WHERE transaction_id = {seed_value}",
        columns.join(", "),
        selected.join(", ")
    );
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        sql,
        [
            format!("txn_{}", uuid::Uuid::new_v4()).into(),
            format!("{reference}_q").into(),
            seed.into(),
        ],
    ))
    .await
    .expect("the copy is inserted");
    let event = wait_for(WAIT, "a system.error", || async {
        receiver
            .accepted_json()
            .into_iter()
            .find(|e| e["event"] == "system.error")
    })
    .await;
    let error = event["data"]["error"].as_str().unwrap();
    assert!(error.contains(&reference), "{error}");
    assert!(event["data"]["time"].as_str().is_some(), "{event}");
}
on_both_backends!(a_duplicate_found_by_the_workers_is_a_system_error);

async fn thresholds_beyond_64_bits_compare_exactly(backend: Backend) {
    let receiver = Receiver::start();
    let app = app_with(backend, &receiver, &[]).await;
    let ledger = app.create_ledger("big").await;
    let balance = app.create_balance(&ledger, "USD").await;
    // Thresholds one minor unit either side of a 40-digit amount.
    let below = monitor(
        &app,
        &balance,
        "balance",
        ">",
        "12345678901234567890123456789012345678.89",
    )
    .await;
    let exact = monitor(
        &app,
        &balance,
        "balance",
        "=",
        "12345678901234567890123456789012345678.90",
    )
    .await;
    let above = monitor(
        &app,
        &balance,
        "balance",
        ">",
        "12345678901234567890123456789012345678.90",
    )
    .await;
    let body = format!(
        r#"{{"precise_amount": 1234567890123456789012345678901234567890, "precision": 100,
            "currency": "USD", "reference": "big-{}", "description": "big", "source": "@World",
            "destination": "{balance}", "allow_overdraft": true, "skip_queue": true}}"#,
        uuid::Uuid::new_v4()
    );
    let reply = app.post_raw("/transactions", &body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    wait_event(&receiver, "balance.monitor", "monitor_id", &below).await;
    wait_event(&receiver, "balance.monitor", "monitor_id", &exact).await;
    outbox_idle(&app).await;
    assert_eq!(fired(&receiver, &above), 0, "one minor unit short");
}
on_both_backends!(thresholds_beyond_64_bits_compare_exactly);

async fn monitors_written_by_another_process_are_found_by_the_reload(backend: Backend) {
    let receiver = Receiver::start();
    let app = app_with(backend, &receiver, &[]).await;
    let ledger = app.create_ledger("reload").await;
    let (known, other) = (
        app.create_balance(&ledger, "USD").await,
        app.create_balance(&ledger, "USD").await,
    );
    let template = monitor(&app, &known, "credit_balance", ">=", "0.01").await;
    // Another process's monitor on `other`: a row this server did not write.
    let db = app.direct_db().await;
    let backend = db.get_database_backend();
    let (p1, p2, p3) = match backend {
        sea_orm::DbBackend::Postgres => ("$1", "$2", "$3"),
        _ => ("?", "?", "?"),
    };
    let copied = format!("mon_{}", uuid::Uuid::new_v4());
    let sql = format!(
        "INSERT INTO balance_monitors (monitor_id, balance_id, field, operator, value, precision, \
         precise_value, description, call_back_url, created_at, meta_data) \
         SELECT {p1}, {p2}, field, operator, value, precision, precise_value, description, \
         call_back_url, created_at, meta_data FROM balance_monitors WHERE monitor_id = {p3}"
    );
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        sql,
        [copied.clone().into(), other.clone().into(), template.into()],
    ))
    .await
    .expect("the monitor is inserted");
    // Transfers into `other` are evaluated once the reload (500 ms here) has found it.
    wait_for(WAIT, "the reloaded monitor fires", || async {
        transfer(&app, "@World", &other, 1, false).await;
        (fired(&receiver, &copied) > 0).then_some(())
    })
    .await;
    outbox_idle(&app).await;
    assert_eq!(fired(&receiver, &copied), 1, "once, however many transfers");
}
on_both_backends!(monitors_written_by_another_process_are_found_by_the_reload);
