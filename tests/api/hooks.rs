//! Transaction hooks (Blnk 1.9): CRUD and validation in Blnk's flat error shape, master key
//! only, the URL policy (at create, update and delivery), and delivery through the outbox
//! to a real receiver in this process: PRE and POST calls for queued and skip_queue
//! transfers, signed; retries up to `retry_count`, `{"success": false}` and timeouts as
//! failures; a failing hook holding back neither another hook nor the webhook.

use crate::helpers::{
    outbox_rows, signing_secret, spawn_with, test_settings, wait_for, Backend, TestApp,
};
use crate::on_both_backends;
use crate::receiver::{assert_signed, Answer, Receiver, Request};
use reqwest::{Method, StatusCode};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
const SECRET: &str = "hooks-test-secret";

/// A receiver whose answer depends on the path: `/fail` 500, `/false`
/// `{"success": false}`, `/slow` answers after 3 s, `/true` `{"success": true}`, anything
/// else 200 with an empty body. Every request is kept, in arrival order.
fn start_receiver() -> Receiver {
    Receiver::answering(|request| match request.path.as_str() {
        "/fail" => Answer::status(500),
        "/false" => Answer::json(json!({"success": false, "message": "not today"})),
        "/true" => Answer::json(json!({"success": true})),
        // The receiver's own behaviour under test, not a wait.
        "/slow" => Answer::ok().after(actix_web::rt::time::sleep(Duration::from_secs(3))),
        _ => Answer::ok(),
    })
}

/// Waits for the call to `path` about transaction `id` with `hook_type`.
async fn wait_call(receiver: &Receiver, path: &str, hook_type: &str, id: &str) -> Request {
    wait_for(
        WAIT,
        &format!("{hook_type} call to {path} for {id}"),
        || async {
            receiver
                .requests_to(path)
                .into_iter()
                .find(|c| c.json["transaction_id"] == id && c.json["hook_type"] == hook_type)
        },
    )
    .await
}

/// A server with fast outbox polls and retries, private hook URLs allowed unless
/// `private_refused`, hooks re-read every 200 ms; optionally a webhook.
async fn app(
    backend: Backend,
    private_refused: bool,
    webhook: Option<String>,
) -> (TestApp, String) {
    let mut settings = test_settings(backend).await;
    let secret = signing_secret(&mut settings, SECRET);
    settings.allow_private_hook_urls = !private_refused;
    settings.hooks_refresh_ms = 200;
    settings.webhook_url = webhook;
    settings.outbox.poll_interval_ms = 20;
    settings.outbox.backoff_base_ms = 50;
    settings.outbox.backoff_cap_ms = 200;
    (spawn_with(settings).await, secret)
}

async fn create_hook(app: &TestApp, body: Value) -> Value {
    let reply = app.post("/hooks", body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.json
}

/// Blnk's flat hook error: `{code, message, details, error_detail}`.
fn assert_hook_error(reply: &crate::helpers::Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.text);
    assert_eq!(reply.json["code"], code, "{}", reply.text);
    assert_eq!(reply.json["error_detail"]["code"], code, "{}", reply.text);
    assert!(reply.json["message"].is_string(), "{}", reply.text);
    assert!(reply.json.get("details").is_some(), "{}", reply.text);
    assert_eq!(reply.json["message"], reply.json["error_detail"]["message"]);
}

/// `(status, attempts, last_error)` of the outbox rows of hook `id`.
async fn hook_rows(app: &TestApp, id: &str) -> Vec<(String, i32, Option<String>)> {
    outbox_rows(app, Some(("sink", &format!("hook:{id}")))).await
}

async fn hooks_are_created_read_listed_replaced_and_deleted(backend: Backend) {
    let (app, _) = app(backend, false, None).await;
    // Blnk's defaults: timeout 0 → 30 s, retry_count < 0 → 3.
    let pre = create_hook(
        &app,
        json!({"name": "audit", "url": "http://127.0.0.1:9/pre", "type": "PRE_TRANSACTION",
               "active": true, "timeout": 0, "retry_count": -1}),
    )
    .await;
    let id = pre["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("hook_"), "{pre}");
    assert_eq!(pre["name"], "audit");
    assert_eq!(pre["type"], "PRE_TRANSACTION");
    assert_eq!(pre["active"], true);
    assert_eq!(
        (pre["timeout"].as_u64(), pre["retry_count"].as_u64()),
        (Some(30), Some(3))
    );
    assert_eq!(pre["last_run"], "0001-01-01T00:00:00Z");
    assert_eq!(pre["last_success"], false);
    let post = create_hook(
        &app,
        json!({"name": "ledger-sync", "url": "http://127.0.0.1:9/post", "type": "POST_TRANSACTION",
               "timeout": 5, "retry_count": 0}),
    )
    .await;
    assert_eq!(post["active"], false, "active defaults to false");
    assert_eq!(
        (post["timeout"].as_u64(), post["retry_count"].as_u64()),
        (Some(5), Some(0))
    );

    let reply = app.get(&format!("/hooks/{id}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json, pre);
    let reply = app.get("/hooks").await;
    assert_eq!(
        reply.json.as_array().map(Vec::len),
        Some(2),
        "{}",
        reply.text
    );
    let reply = app.get("/hooks?type=POST_TRANSACTION").await;
    assert_eq!(reply.json, json!([post]));
    assert_hook_error(
        &app.get("/hooks?type=SOMETIMES").await,
        StatusCode::BAD_REQUEST,
        "HOOK_INVALID",
    );

    // PUT replaces everything but the id, creation time and last run.
    let reply = app
        .put(
            &format!("/hooks/{id}"),
            json!({"name": "audit-2", "url": "http://127.0.0.1:9/other", "type": "POST_TRANSACTION",
                   "active": false, "timeout": 12, "retry_count": 10}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["id"], id.as_str());
    assert_eq!(reply.json["created_at"], pre["created_at"]);
    assert_eq!(reply.json["name"], "audit-2");
    assert_eq!(reply.json["type"], "POST_TRANSACTION");
    assert_eq!(
        (
            reply.json["timeout"].as_u64(),
            reply.json["retry_count"].as_u64()
        ),
        (Some(12), Some(10))
    );
    assert_eq!(app.get(&format!("/hooks/{id}")).await.json, reply.json);

    // Validation: every problem, Blnk's HOOK_INVALID in the flat shape.
    for body in [
        json!({"name": "x", "type": "PRE_TRANSACTION"}),
        json!({"url": "http://127.0.0.1:9/", "type": "pre_transaction"}),
        json!({"url": "http://127.0.0.1:9/"}),
        json!({"url": "ftp://127.0.0.1/", "type": "PRE_TRANSACTION"}),
        json!({"url": "http://127.0.0.1:9/", "type": "PRE_TRANSACTION", "retry_count": 11}),
        json!({"url": "http://127.0.0.1:9/", "type": "PRE_TRANSACTION", "timeout": 100000}),
    ] {
        let reply = app.post("/hooks", body.clone()).await;
        assert_hook_error(&reply, StatusCode::BAD_REQUEST, "HOOK_INVALID");
        let reply = app.put(&format!("/hooks/{id}"), body).await;
        assert_hook_error(&reply, StatusCode::BAD_REQUEST, "HOOK_INVALID");
    }
    let reply = app.post_raw("/hooks", "{\"url\":").await;
    assert_hook_error(&reply, StatusCode::BAD_REQUEST, "GEN_MALFORMED_REQUEST");

    let missing = "/hooks/hook_00000000-0000-0000-0000-000000000000";
    assert_hook_error(
        &app.get(missing).await,
        StatusCode::NOT_FOUND,
        "HOOK_NOT_FOUND",
    );
    let valid = json!({"url": "http://127.0.0.1:9/", "type": "PRE_TRANSACTION"});
    assert_hook_error(
        &app.put(missing, valid).await,
        StatusCode::NOT_FOUND,
        "HOOK_NOT_FOUND",
    );
    assert_hook_error(
        &app.delete(missing).await,
        StatusCode::NOT_FOUND,
        "HOOK_NOT_FOUND",
    );

    let reply = app.delete(&format!("/hooks/{id}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json, json!({"message": "hook deleted successfully"}));
    assert_hook_error(
        &app.get(&format!("/hooks/{id}")).await,
        StatusCode::NOT_FOUND,
        "HOOK_NOT_FOUND",
    );
    assert_eq!(app.get("/hooks").await.json, json!([post]));
}
on_both_backends!(hooks_are_created_read_listed_replaced_and_deleted);

async fn private_hook_urls_are_refused_without_the_setting(backend: Backend) {
    let (app, _) = app(backend, true, None).await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://10.0.0.7/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8080/hook",
        "http://[fe80::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://localhost:8080/hook",
    ] {
        let reply = app
            .post(
                "/hooks",
                json!({"url": url, "type": "POST_TRANSACTION", "active": true}),
            )
            .await;
        assert_hook_error(&reply, StatusCode::BAD_REQUEST, "HOOK_INVALID");
        assert!(
            reply.json["message"]
                .as_str()
                .unwrap()
                .contains("allow_private_hook_urls"),
            "{url}: {}",
            reply.text
        );
    }
    // A public address is taken; replacing it with a private one is refused.
    let public = create_hook(
        &app,
        json!({"url": "http://8.8.8.8/hook", "type": "POST_TRANSACTION"}),
    )
    .await;
    let id = public["id"].as_str().unwrap();
    let reply = app
        .put(
            &format!("/hooks/{id}"),
            json!({"url": "http://[::ffff:10.0.0.1]/", "type": "POST_TRANSACTION"}),
        )
        .await;
    assert_hook_error(&reply, StatusCode::BAD_REQUEST, "HOOK_INVALID");

    // At delivery too: a hook that reached the table with a private URL (another replica,
    // or a name that resolved to a public address then) is refused at every call, and the
    // receiver is never reached. The other replica's row reaches this one's directory at
    // its next refresh.
    let receiver = start_receiver();
    let db = app.direct_db().await;
    let backend = db.get_database_backend();
    let sql = match backend {
        sea_orm::DbBackend::Postgres => {
            "INSERT INTO transaction_hooks (id, name, url, hook_type, active, timeout_s, retry_count, created_at) \
             VALUES ($1, 'sneaky', $2, 'POST_TRANSACTION', TRUE, 5, 1, $3)"
        }
        _ => {
            "INSERT INTO transaction_hooks (id, name, url, hook_type, active, timeout_s, retry_count, created_at) \
             VALUES (?, 'sneaky', ?, 'POST_TRANSACTION', TRUE, 5, 1, ?)"
        }
    };
    let sneaky = "hook_11111111-1111-4111-8111-111111111111";
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        sql,
        [
            sneaky.into(),
            receiver.url("/sneaky").into(),
            chrono::Utc::now().into(),
        ],
    ))
    .await
    .expect("the hook row is inserted");
    let balances = app.balances("USD", 1).await;
    // A transfer every 200 ms until one is routed to the hook (after the next refresh).
    let mut tries = 0;
    wait_for(WAIT, "the directory to route to the new hook", || {
        tries += 1;
        let (app, balance, fund) = (&app, &balances[0], tries % 8 == 1);
        async move {
            if fund {
                app.fund(balance, "USD", 100).await;
            }
            (!hook_rows(app, sneaky).await.is_empty()).then_some(())
        }
    })
    .await;
    let rows = wait_for(WAIT, "a refused delivery to go dead", || async {
        let rows = hook_rows(&app, sneaky).await;
        rows.iter()
            .any(|(status, _, _)| status == "dead")
            .then_some(rows)
    })
    .await;
    let (_, attempts, error) = rows.iter().find(|r| r.0 == "dead").unwrap();
    assert_eq!(*attempts, 2, "retry_count 1: two attempts");
    assert!(
        error.as_deref().unwrap_or_default().contains("refused"),
        "{error:?}"
    );
    assert!(
        receiver.requests_to("/sneaky").is_empty(),
        "the private address was called"
    );
}
on_both_backends!(private_hook_urls_are_refused_without_the_setting);

async fn pre_and_post_hooks_are_called_for_queued_and_skip_queue_transfers(backend: Backend) {
    let receiver = start_receiver();
    let (app, secret) = app(backend, false, None).await;
    let pre = create_hook(
        &app,
        json!({"name": "pre", "url": receiver.url("/pre"), "type": "PRE_TRANSACTION", "active": true}),
    )
    .await;
    let post = create_hook(
        &app,
        json!({"name": "post", "url": receiver.url("/true"), "type": "POST_TRANSACTION", "active": true}),
    )
    .await;
    create_hook(
        &app,
        json!({"name": "off", "url": receiver.url("/off"), "type": "POST_TRANSACTION", "active": false}),
    )
    .await;
    let balances = app.balances("USD", 2).await;
    app.fund(&balances[0], "USD", 10_000).await;

    // skip_queue: its only row calls the PRE and the POST hooks.
    let reply = app
        .post(
            "/transactions",
            app.transfer(&balances[0], &balances[1], 700, true),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let direct = reply.json["transaction_id"].as_str().unwrap().to_owned();
    let call = wait_call(&receiver, "/pre", "PRE_TRANSACTION", &direct).await;
    assert_eq!(call.json["data"]["status"], "APPLIED");
    assert_eq!(call.json["data"]["precise_amount"], 700);
    assert!(call.json["timestamp"].is_string());
    assert_eq!(call.header("content-type"), Some("application/json"));
    assert_eq!(call.header("x-hook-id"), pre["id"].as_str());
    assert_eq!(call.header("x-hook-type"), Some("PRE_TRANSACTION"));
    assert_signed(&call, &secret);
    let call = wait_call(&receiver, "/true", "POST_TRANSACTION", &direct).await;
    assert_eq!(call.json["data"]["status"], "APPLIED");
    assert_eq!(call.header("x-hook-id"), post["id"].as_str());
    assert_eq!(call.header("x-hook-type"), Some("POST_TRANSACTION"));
    assert_signed(&call, &secret);

    // Queued: the QUEUED row calls the PRE hook, the worker's APPLIED row the POST hook.
    let body = app.transfer(&balances[0], &balances[1], 300, false);
    let reference = body["reference"].as_str().unwrap().to_owned();
    let reply = app.post("/transactions", body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let queued = reply.json["transaction_id"].as_str().unwrap().to_owned();
    let applied = app.queued_outcome(&reference).await;
    let applied_id = applied["transaction_id"].as_str().unwrap().to_owned();
    let call = wait_call(&receiver, "/pre", "PRE_TRANSACTION", &queued).await;
    assert_eq!(call.json["data"]["status"], "QUEUED");
    let call = wait_call(&receiver, "/true", "POST_TRANSACTION", &applied_id).await;
    assert_eq!(call.json["data"]["status"], "APPLIED");
    assert_eq!(call.json["data"]["parent_transaction"], queued.as_str());
    assert_signed(&call, &secret);

    // Each once: no PRE call for the worker's row, no POST call for the QUEUED row; the
    // inactive hook is never called.
    let calls = |path: &str, id: &str| {
        receiver
            .requests_to(path)
            .into_iter()
            .filter(|c| c.json["transaction_id"] == id)
            .count()
    };
    assert_eq!(calls("/pre", &applied_id), 0);
    assert_eq!(calls("/true", &queued), 0);
    assert_eq!(calls("/pre", &direct), 1);
    assert!(receiver.requests_to("/off").is_empty());

    // Each call is recorded on its hook.
    let id = pre["id"].as_str().unwrap();
    let hook = wait_for(WAIT, "last_run to be recorded", || async {
        let reply = app.get(&format!("/hooks/{id}")).await;
        (reply.json["last_run"] != "0001-01-01T00:00:00Z").then_some(reply.json)
    })
    .await;
    assert_eq!(hook["last_success"], true, "{hook}");
}
on_both_backends!(pre_and_post_hooks_are_called_for_queued_and_skip_queue_transfers);

async fn failing_hooks_are_retried_then_dead_and_hold_back_nobody(backend: Backend) {
    let receiver = start_receiver();
    let (app, _) = app(backend, false, Some(receiver.url("/webhook"))).await;
    let hook = |name: &str, path: &str, timeout: i64, retry_count: i64| {
        json!({"name": name, "url": receiver.url(path), "type": "POST_TRANSACTION",
               "active": true, "timeout": timeout, "retry_count": retry_count})
    };
    let failing = create_hook(&app, hook("fails", "/fail", 5, 2)).await;
    let refusing = create_hook(&app, hook("refuses", "/false", 5, 0)).await;
    let slow = create_hook(&app, hook("slow", "/slow", 1, 0)).await;
    let good = create_hook(&app, hook("good", "/ok", 5, 3)).await;
    let balances = app.balances("USD", 1).await;

    let reply = app
        .post(
            "/transactions",
            json!({"precise_amount": 5, "currency": "USD", "reference": "hooked-1", "description": "d",
                   "source": "@World", "destination": balances[0],
                   "allow_overdraft": true, "skip_queue": true}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let id = reply.json["transaction_id"].as_str().unwrap().to_owned();

    // The good hook and the webhook get theirs, however the others fare.
    wait_call(&receiver, "/ok", "POST_TRANSACTION", &id).await;
    wait_for(WAIT, "the webhook event", || async {
        receiver.requests_to("/webhook").into_iter().find(|c| {
            c.json["event"] == "transaction.applied"
                && c.json["data"]["transaction_id"] == id.as_str()
        })
    })
    .await;

    // 500s: retry_count 2 → three attempts, then dead.
    let failing_id = failing["id"].as_str().unwrap();
    let dead = |hook_id: &str| {
        let (app, hook_id) = (&app, hook_id.to_owned());
        async move {
            wait_for(WAIT, &format!("{hook_id}'s event to go dead"), || async {
                hook_rows(app, &hook_id)
                    .await
                    .into_iter()
                    .find(|(status, _, _)| status == "dead")
            })
            .await
        }
    };
    let (_, attempts, error) = dead(failing_id).await;
    assert_eq!(attempts, 3, "retry_count 2: three attempts");
    assert!(error.unwrap_or_default().contains("HTTP 500"));
    assert_eq!(receiver.requests_to("/fail").len(), 3);

    // {"success": false} is a failure; retry_count 0: one attempt.
    let (_, attempts, error) = dead(refusing["id"].as_str().unwrap()).await;
    assert_eq!(attempts, 1);
    assert!(error.unwrap_or_default().contains("not today"));
    assert_eq!(receiver.requests_to("/false").len(), 1);

    // Slower than its 1 s timeout: a failure.
    let (_, attempts, error) = dead(slow["id"].as_str().unwrap()).await;
    assert_eq!(attempts, 1);
    let error = error.unwrap_or_default();
    assert!(error.contains("did not answer within 1000 ms"), "{error}");

    let reply = app.get(&format!("/hooks/{failing_id}")).await;
    assert_eq!(reply.json["last_success"], false, "{}", reply.text);
    assert_ne!(reply.json["last_run"], "0001-01-01T00:00:00Z");
    let good_id = good["id"].as_str().unwrap();
    let rows = hook_rows(&app, good_id).await;
    assert!(
        rows.iter().all(|(status, _, _)| status == "delivered"),
        "{rows:?}"
    );
}
on_both_backends!(failing_hooks_are_retried_then_dead_and_hold_back_nobody);

async fn a_deactivated_hooks_pending_calls_are_dropped_and_a_deleted_hooks_removed(
    backend: Backend,
) {
    let receiver = start_receiver();
    let (app, _) = app(backend, false, None).await;
    let body = |path: &str| json!({"url": receiver.url(path), "type": "POST_TRANSACTION", "active": true, "retry_count": 10});
    let paused = create_hook(&app, body("/fail")).await;
    let deleted = create_hook(&app, body("/fail")).await;
    let balances = app.balances("USD", 1).await;
    app.fund(&balances[0], "USD", 5).await;
    wait_for(WAIT, "both hooks to fail once", || async {
        let hooks: std::collections::HashSet<String> = receiver
            .requests_to("/fail")
            .iter()
            .filter_map(|c| c.header("x-hook-id").map(str::to_owned))
            .collect();
        (hooks.len() == 2).then_some(())
    })
    .await;

    let paused_id = paused["id"].as_str().unwrap();
    let mut replaced = body("/fail");
    replaced["active"] = json!(false);
    let reply = app.put(&format!("/hooks/{paused_id}"), replaced).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let deleted_id = deleted["id"].as_str().unwrap();
    let reply = app.delete(&format!("/hooks/{deleted_id}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);

    // The paused hook's retry is settled without a call; the deleted hook's rows are gone.
    wait_for(WAIT, "the paused hook's event to be dropped", || async {
        let rows = hook_rows(&app, paused_id).await;
        rows.iter()
            .all(|(status, _, _)| status == "delivered")
            .then_some(())
    })
    .await;
    assert!(hook_rows(&app, deleted_id).await.is_empty());
    let calls = receiver.requests_to("/fail").len();
    // Nothing new is routed to either.
    app.fund(&balances[0], "USD", 5).await;
    assert!(hook_rows(&app, paused_id).await.len() == 1);
    assert!(hook_rows(&app, deleted_id).await.is_empty());
    assert!(
        receiver.requests_to("/fail").len() <= calls + 1,
        "at most one call was in flight"
    );
}
on_both_backends!(a_deactivated_hooks_pending_calls_are_dropped_and_a_deleted_hooks_removed);

/// In secure mode only the master key manages hooks, whatever an API key's scopes.
async fn hooks_need_the_master_key_in_secure_mode(backend: Backend) {
    const MASTER: &str = "hooks-test-master-key";
    let mut settings = test_settings(backend).await;
    settings.secure = true;
    settings.secret_key = Some(MASTER.into());
    settings.allow_private_hook_urls = true;
    let app = spawn_with(settings).await;
    let expires = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let reply = app
        .request_as(
            Some(MASTER),
            Method::POST,
            "/api-keys",
            Some(
                json!({"name": "k", "owner": "alice", "scopes": ["*:*"], "expires_at": expires})
                    .to_string(),
            ),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let key = reply.json["key"].as_str().unwrap().to_owned();
    let body = json!({"url": "http://127.0.0.1:9/", "type": "PRE_TRANSACTION"}).to_string();
    for (method, path, body) in [
        (Method::POST, "/hooks", Some(body.clone())),
        (Method::GET, "/hooks", None),
        (Method::GET, "/hooks/hook_x", None),
        (Method::PUT, "/hooks/hook_x", Some(body.clone())),
        (Method::DELETE, "/hooks/hook_x", None),
    ] {
        let reply = app.request_as(Some(&key), method, path, body).await;
        assert_hook_error(&reply, StatusCode::FORBIDDEN, "AUTH_MASTER_KEY_REQUIRED");
        assert_eq!(reply.json["message"], "hook management requires master key");
    }
    let reply = app
        .request_as(Some(MASTER), Method::POST, "/hooks", Some(body))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let reply = app.request_as(None, Method::GET, "/hooks", None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
}
on_both_backends!(hooks_need_the_master_key_in_secure_mode);
