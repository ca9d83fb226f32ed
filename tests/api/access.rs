//! Access control: secure mode, API keys and scopes, the authorization matrix over every
//! route, rate limits, security headers, and keys kept out of logs and traces.

use crate::helpers::{assert_error, spawn_with, temp_dir, test_settings, Backend, Reply, TestApp};
use crate::on_both_backends;
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

const MASTER: &str = "access-test-master-key";
const OWNER: &str = "alice";
const OTHER_OWNER: &str = "mallory";

async fn secure_app(backend: Backend) -> TestApp {
    let mut settings = test_settings(backend).await;
    settings.secure = true;
    settings.secret_key = Some(MASTER.into());
    settings.metrics_bearer_token = None;
    settings.backup_dir = temp_dir();
    spawn_with(settings).await
}

fn in_a_day() -> String {
    (Utc::now() + chrono::Duration::days(1)).to_rfc3339()
}

/// Creates a key with the master key; returns (api_key_id, plaintext).
async fn new_key(
    app: &TestApp,
    owner: &str,
    scopes: &[String],
    expires_at: &str,
) -> (String, String) {
    let body =
        json!({ "name": "test key", "owner": owner, "scopes": scopes, "expires_at": expires_at });
    let reply = app
        .request_as(
            Some(MASTER),
            Method::POST,
            "/api-keys",
            Some(body.to_string()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let id = reply.json["api_key_id"].as_str().unwrap().to_owned();
    let key = reply.json["key"].as_str().unwrap().to_owned();
    (id, key)
}

async fn key_with(app: &TestApp, scopes: &[&str]) -> (String, String) {
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    new_key(app, OWNER, &scopes, &in_a_day()).await
}

async fn as_key(
    app: &TestApp,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Reply {
    app.request_as(Some(key), method, path, body.map(|b| b.to_string()))
        .await
}

// ---------------------------------------------------------------------------------------
// The authorization matrix
// ---------------------------------------------------------------------------------------

/// Paths anyone may call in secure mode (`/metrics` has its own bearer rules).
const OPEN: [&str; 4] = ["/", "/health", "/metrics", "/openapi.json"];

/// The scope resource each route needs: this test's own statement of the map README.md
/// documents (Blnk's first-segment rule, its aliases, and Coffer's fixes), so a route the
/// map does not know fails here rather than going untested.
fn expected_resource(pattern: &str) -> &'static str {
    let first = pattern.trim_start_matches('/').split('/').next().unwrap();
    match first {
        "transactions" | "refund-transaction" => "transactions",
        "balances" | "balances-snapshots" => "balances",
        "ledgers" => "ledgers",
        "balance-monitors" => "balance-monitors",
        "identities" => "identities",
        "accounts" | "mocked-account" => "accounts",
        "api-keys" => "api-keys",
        "backup" => "backup",
        "hooks" => "hooks",
        "search" | "multi-search" => "search",
        "{id}" if pattern == "/{id}/metadata" => "metadata",
        _ => panic!(
            "route {pattern}: no expected scope resource in the authorization matrix; add it"
        ),
    }
}

fn action_of(method: &Method) -> &'static str {
    match *method {
        Method::GET | Method::HEAD => "read",
        Method::POST | Method::PUT | Method::PATCH => "write",
        Method::DELETE => "delete",
        _ => panic!("no action for {method}"),
    }
}

/// A request that reaches the route: placeholders filled (the victim key for `/api-keys/{id}`),
/// the owner named for the API-key routes, a body for writes.
fn concrete(method: &Method, pattern: &str, victim_key_id: &str) -> (String, Option<Value>) {
    let mut path = pattern
        .split('/')
        .map(|segment| match segment {
            "{id}" if pattern.starts_with("/api-keys") => victim_key_id.to_owned(),
            "{id}" if pattern == "/{id}/metadata" => {
                "ldg_00000000-0000-0000-0000-000000000000".into()
            }
            s if s.starts_with('{') => "missing".into(),
            s => s.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/");
    if path.is_empty() {
        path = "/".into();
    }
    if pattern.starts_with("/api-keys") {
        path.push_str(&format!("?owner={OWNER}"));
    }
    let body = match (method, pattern) {
        (&Method::POST, "/api-keys") => Some(json!({
            "name": "made by a key", "owner": OWNER, "scopes": ["api-keys:write"], "expires_at": in_a_day()
        })),
        (&Method::POST | &Method::PUT, _) => Some(json!({})),
        _ => None,
    };
    (path, body)
}

/// The route answered the request itself: no 401, and no 403 of the access rules (a route's
/// own 403, e.g. tokenization disabled, is the route's answer).
fn assert_reached(reply: &Reply, what: &str) {
    let code = reply.json["error_detail"]["code"].as_str().unwrap_or("");
    assert!(
        reply.status != StatusCode::UNAUTHORIZED && !code.starts_with("AUTH_"),
        "{what}: refused by access control: {} {}",
        reply.status,
        reply.text
    );
    assert!(!reply.status.is_server_error(), "{what}: {}", reply.text);
}

async fn every_route_enforces_its_scope_for_every_kind_of_caller(backend: Backend) {
    let app = secure_app(backend).await;
    let routes = coffer::routes::route_table();
    assert!(routes.len() > 40, "the route table lists every route");

    // Keys that stop working: one that expires in a moment, one revoked after a first use.
    let expires_soon = (Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339();
    let (_, expired) = new_key(&app, OWNER, &["*:*".into()], &expires_soon).await;
    let (revoked_id, revoked) = key_with(&app, &["*:*"]).await;
    let reply = as_key(&app, &revoked, Method::GET, "/ledgers", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let reply = app
        .request_as(
            Some(MASTER),
            Method::DELETE,
            &format!("/api-keys/{revoked_id}?owner={OWNER}"),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);

    let expiry: DateTime<Utc> = expires_soon.parse().unwrap();
    crate::helpers::wait_for(
        Duration::from_secs(10),
        "the short key to expire",
        || async { (Utc::now() > expiry).then_some(()) },
    )
    .await;

    let mut keys: HashMap<(String, bool), String> = HashMap::new();
    for (method, pattern) in routes {
        let method = Method::from_bytes(method.as_str().as_bytes()).unwrap();
        let what = format!("{method} {pattern}");
        let victim_id = if pattern.starts_with("/api-keys") {
            key_with(&app, &["ledgers:read"]).await.0
        } else {
            String::new()
        };
        let (path, body) = concrete(&method, pattern, &victim_id);
        let send = |key: Option<String>| {
            let (app, method, path, body) = (&app, method.clone(), path.clone(), body.clone());
            async move {
                app.request_as(key.as_deref(), method, &path, body.map(|b| b.to_string()))
                    .await
            }
        };
        if OPEN.contains(&pattern) {
            for key in [None, Some("not-a-key".to_owned())] {
                let reply = send(key).await;
                let code = reply.json["error_detail"]["code"].as_str().unwrap_or("");
                assert!(
                    !matches!(code, "AUTH_MISSING_API_KEY" | "AUTH_INVALID_API_KEY"),
                    "{what} is open: {}",
                    reply.text
                );
            }
            continue;
        }
        let resource = expected_resource(pattern);
        let action = action_of(&method);

        assert_error(
            &send(None).await,
            StatusCode::UNAUTHORIZED,
            "AUTH_MISSING_API_KEY",
        );
        assert_error(
            &send(Some("not-a-key-at-all-but-long-enough-for-a-prefix".into())).await,
            StatusCode::UNAUTHORIZED,
            "AUTH_INVALID_API_KEY",
        );
        assert_error(
            &send(Some(expired.clone())).await,
            StatusCode::UNAUTHORIZED,
            "AUTH_EXPIRED_API_KEY",
        );
        assert_error(
            &send(Some(revoked.clone())).await,
            StatusCode::UNAUTHORIZED,
            "AUTH_EXPIRED_API_KEY",
        );

        // Another resource's every action, and this resource's other actions: 403.
        let other_resource = if resource == "ledgers" {
            "balances"
        } else {
            "ledgers"
        };
        let other_actions: Vec<String> = ["read", "write", "delete"]
            .into_iter()
            .filter(|a| *a != action)
            .map(|a| format!("{resource}:{a}"))
            .collect();
        for scopes in [vec![format!("{other_resource}:*")], other_actions] {
            let entry = (scopes.join(" "), false);
            if !keys.contains_key(&entry) {
                let (_, key) = new_key(&app, OWNER, &scopes, &in_a_day()).await;
                keys.insert(entry.clone(), key);
            }
            let reply = send(keys.get(&entry).cloned()).await;
            assert_refusal_named(&reply, "AUTH_INSUFFICIENT_PERMISSIONS", &what, &scopes);
        }

        // The exact scope, held by another owner: the API-key routes refuse it; elsewhere an
        // owner does not matter.
        let exact = vec![format!("{resource}:{action}")];
        let entry = (exact.join(" "), true);
        if !keys.contains_key(&entry) {
            let (_, key) = new_key(&app, OTHER_OWNER, &exact, &in_a_day()).await;
            keys.insert(entry.clone(), key);
        }
        let reply = send(keys.get(&entry).cloned()).await;
        if resource == "api-keys" {
            assert_error(&reply, StatusCode::FORBIDDEN, "AUTH_CROSS_OWNER_ACCESS");
        } else if resource == "hooks" {
            // Hook management is the master's alone, whatever a key's scopes.
            assert_master_required(&reply, &what);
        } else {
            assert_reached(&reply, &format!("{what} by another owner"));
        }

        // The exact scope, and the master key: the route answers.
        let entry = (exact.join(" "), false);
        if !keys.contains_key(&entry) {
            let (_, key) = new_key(&app, OWNER, &exact, &in_a_day()).await;
            keys.insert(entry.clone(), key);
        }
        let reply = send(keys.get(&entry).cloned()).await;
        if resource == "hooks" {
            assert_master_required(&reply, &what);
        } else {
            assert_reached(&reply, &format!("{what} with {exact:?}"));
        }
        assert_reached(
            &send(Some(MASTER.into())).await,
            &format!("{what} with the master key"),
        );
    }

    // A path no resource owns: a key gets Blnk's 403, the master the route-not-found 404.
    let (_, key) = key_with(&app, &["*:*"]).await;
    let reply = as_key(&app, &key, Method::GET, "/no-such-thing", None).await;
    assert_error(&reply, StatusCode::FORBIDDEN, "AUTH_UNKNOWN_RESOURCE");
    let reply = as_key(&app, MASTER, Method::GET, "/no-such-thing", None).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text);
}
on_both_backends!(every_route_enforces_its_scope_for_every_kind_of_caller);

/// Hook routes answer in Blnk's flat hook shape (`code` and `error_detail`, no `error`).
fn assert_master_required(reply: &Reply, what: &str) {
    assert_eq!(
        reply.status,
        StatusCode::FORBIDDEN,
        "{what}: {}",
        reply.text
    );
    assert_eq!(
        reply.json["code"], "AUTH_MASTER_KEY_REQUIRED",
        "{what}: {}",
        reply.text
    );
    assert_eq!(
        reply.json["error_detail"]["code"], "AUTH_MASTER_KEY_REQUIRED",
        "{what}: {}",
        reply.text
    );
}

fn assert_refusal_named(reply: &Reply, code: &str, what: &str, scopes: &[String]) {
    assert_eq!(
        reply.status,
        StatusCode::FORBIDDEN,
        "{what} with {scopes:?}: {}",
        reply.text
    );
    assert_eq!(
        reply.json["error_detail"]["code"], code,
        "{what} with {scopes:?}: {}",
        reply.text
    );
    assert!(
        reply.json["error"]
            .as_str()
            .unwrap()
            .starts_with("Insufficient permissions for "),
        "{}",
        reply.text
    );
}

// ---------------------------------------------------------------------------------------
// API keys
// ---------------------------------------------------------------------------------------

async fn api_keys_are_created_listed_used_and_revoked(backend: Backend) {
    let app = secure_app(backend).await;
    let (id, key) = key_with(&app, &["ledgers:*", "api-keys:*"]).await;
    assert!(id.starts_with("api_key_"), "{id}");
    assert!(key.len() >= 40, "a long random key: {key}");

    // The listing never shows a key or its hash.
    let listed = app
        .request_as(
            Some(MASTER),
            Method::GET,
            &format!("/api-keys?owner={OWNER}"),
            None,
        )
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    let entry = listed
        .json
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["api_key_id"] == id)
        .unwrap()
        .clone();
    assert!(entry.get("key").is_none(), "{entry}");
    assert!(!listed.text.contains("argon2"), "{}", listed.text);
    assert_eq!(entry["owner_id"], OWNER);
    assert_eq!(entry["scopes"], json!(["ledgers:*", "api-keys:*"]));
    assert_eq!(entry["is_revoked"], false);
    let unused = entry["last_used_at"].clone();

    // A key's POST is stamped with its id; the rest of the body is kept.
    let reply = as_key(&app, &key, Method::POST, "/ledgers", Some(json!({ "name": "by key", "meta_data": { "team": "ops", "n": 12345678901234567890u64 } }))).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.json["meta_data"]["BLNK_GENERATED_BY"], id.as_str());
    assert_eq!(reply.json["meta_data"]["team"], "ops");
    assert!(
        reply.text.contains("12345678901234567890"),
        "{}",
        reply.text
    );
    let reply = as_key(
        &app,
        &key,
        Method::POST,
        "/ledgers",
        Some(json!({ "name": "no meta" })),
    )
    .await;
    assert_eq!(
        reply.json["meta_data"]["BLNK_GENERATED_BY"],
        id.as_str(),
        "{}",
        reply.text
    );
    // The master's POSTs are not stamped.
    let reply = app
        .request_as(
            Some(MASTER),
            Method::POST,
            "/ledgers",
            Some(json!({ "name": "by master" }).to_string()),
        )
        .await;
    assert!(
        reply.json["meta_data"].get("BLNK_GENERATED_BY").is_none(),
        "{}",
        reply.text
    );
    // A body that is not JSON still gets the handler's own refusal.
    let reply = app
        .request_as(
            Some(&key),
            Method::POST,
            "/ledgers",
            Some("{not json".into()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);

    // last_used_at is written off the request path, soon after.
    let (app_ref, id_ref, unused) = (&app, id.as_str(), &unused);
    crate::helpers::wait_for(
        Duration::from_secs(20),
        "last_used_at to be recorded",
        || async move {
            let listed = app_ref
                .request_as(
                    Some(MASTER),
                    Method::GET,
                    &format!("/api-keys?owner={OWNER}"),
                    None,
                )
                .await;
            let entry = listed
                .json
                .as_array()?
                .iter()
                .find(|k| k["api_key_id"] == id_ref)?
                .clone();
            (entry["last_used_at"] != *unused).then_some(())
        },
    )
    .await;

    // Revoked: refused at once by this process, 204 once, 404 after.
    let path = format!("/api-keys/{id}?owner={OWNER}");
    let reply = app
        .request_as(Some(MASTER), Method::DELETE, &path, None)
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    assert!(reply.text.is_empty());
    let reply = as_key(&app, &key, Method::GET, "/ledgers", None).await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, "AUTH_EXPIRED_API_KEY");
    let reply = app
        .request_as(
            Some(MASTER),
            Method::DELETE,
            "/api-keys/api_key_nope?owner=alice",
            None,
        )
        .await;
    assert_error(&reply, StatusCode::NOT_FOUND, "APIKEY_NOT_FOUND");
    let listed = app
        .request_as(
            Some(MASTER),
            Method::GET,
            &format!("/api-keys?owner={OWNER}"),
            None,
        )
        .await;
    let entry = listed
        .json
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["api_key_id"] == id)
        .unwrap()
        .clone();
    assert_eq!(entry["is_revoked"], true);
    assert!(entry["revoked_at"].is_string(), "{entry}");
}
on_both_backends!(api_keys_are_created_listed_used_and_revoked);

async fn keys_cannot_escalate_or_act_for_another_owner(backend: Backend) {
    let app = secure_app(backend).await;
    let (_, manager) = key_with(&app, &["api-keys:*", "ledgers:read"]).await;
    let create = |body: Value| as_key(&app, &manager, Method::POST, "/api-keys", Some(body));

    // Owner forced: a key's new key belongs to its owner.
    let reply =
        create(json!({ "name": "child", "scopes": ["ledgers:read"], "expires_at": in_a_day() }))
            .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.json["owner_id"], OWNER);
    let reply = create(json!({ "name": "child", "owner": OWNER, "scopes": ["api-keys:read"], "expires_at": in_a_day() })).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);

    // Escalation (GHSA-wcr3-9x4c-f5gj): scopes beyond the caller's are refused, named.
    for scopes in [
        json!(["ledgers:write"]),
        json!(["*:*"]),
        json!(["ledgers:*"]),
        json!(["balances:read"]),
    ] {
        let reply =
            create(json!({ "name": "up", "scopes": scopes, "expires_at": in_a_day() })).await;
        assert_error(&reply, StatusCode::FORBIDDEN, "AUTH_SCOPE_ESCALATION");
    }

    // Another owner's keys: not created, listed nor revoked.
    let reply = create(json!({ "name": "x", "owner": OTHER_OWNER, "scopes": ["ledgers:read"], "expires_at": in_a_day() })).await;
    assert_error(&reply, StatusCode::FORBIDDEN, "AUTH_CROSS_OWNER_ACCESS");
    let (victim, _) = new_key(&app, OTHER_OWNER, &["ledgers:read".into()], &in_a_day()).await;
    let reply = as_key(
        &app,
        &manager,
        Method::GET,
        &format!("/api-keys?owner={OTHER_OWNER}"),
        None,
    )
    .await;
    assert_error(&reply, StatusCode::FORBIDDEN, "AUTH_CROSS_OWNER_ACCESS");
    let reply = as_key(
        &app,
        &manager,
        Method::DELETE,
        &format!("/api-keys/{victim}?owner={OTHER_OWNER}"),
        None,
    )
    .await;
    assert_error(&reply, StatusCode::FORBIDDEN, "AUTH_CROSS_OWNER_ACCESS");
    let reply = as_key(
        &app,
        &manager,
        Method::DELETE,
        &format!("/api-keys/{victim}"),
        None,
    )
    .await;
    assert_error(&reply, StatusCode::NOT_FOUND, "APIKEY_NOT_FOUND");
    // Its own owner's list: only its owner's keys.
    let reply = as_key(&app, &manager, Method::GET, "/api-keys", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let owners: Vec<&Value> = reply
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["owner_id"])
        .collect();
    assert!(
        owners.len() >= 3 && owners.iter().all(|o| *o == OWNER),
        "{owners:?}"
    );

    // Bad requests, also from the master.
    let master = |body: Value| {
        app.request_as(
            Some(MASTER),
            Method::POST,
            "/api-keys",
            Some(body.to_string()),
        )
    };
    let reply =
        master(json!({ "name": "x", "scopes": ["ledgers:read"], "expires_at": in_a_day() })).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "APIKEY_OWNER_REQUIRED");
    let reply = app
        .request_as(Some(MASTER), Method::GET, "/api-keys", None)
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "APIKEY_OWNER_REQUIRED");
    let past = (Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    for body in [
        json!({ "name": "x", "owner": OWNER, "scopes": ["wallets:read"], "expires_at": in_a_day() }),
        json!({ "name": "x", "owner": OWNER, "scopes": ["ledgers:fly"], "expires_at": in_a_day() }),
        json!({ "name": "x", "owner": OWNER, "scopes": ["ledgers"], "expires_at": in_a_day() }),
        json!({ "name": "x", "owner": OWNER, "scopes": [], "expires_at": in_a_day() }),
        json!({ "name": "", "owner": OWNER, "scopes": ["ledgers:read"], "expires_at": in_a_day() }),
        json!({ "name": "x", "owner": OWNER, "scopes": ["ledgers:read"], "expires_at": past }),
        json!({ "name": "x", "owner": OWNER, "scopes": ["ledgers:read"], "expires_at": "tomorrow" }),
        json!({ "name": "x", "owner": OWNER, "scopes": ["ledgers:read"] }),
    ] {
        let reply = master(body.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.text
        );
        assert!(
            reply.json["error_detail"]["code"].is_string(),
            "{}",
            reply.text
        );
    }
    let reply = app
        .request_as(Some(MASTER), Method::POST, "/api-keys", Some("[1".into()))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
}
on_both_backends!(keys_cannot_escalate_or_act_for_another_owner);

#[actix_web::test]
async fn open_mode_serves_everyone_as_the_master_and_api_keys_still_work() {
    let mut settings = test_settings(Backend::Sqlite).await;
    settings.secure = false;
    settings.secret_key = None;
    let app = spawn_with(settings).await;
    let reply = app.request_as(None, Method::GET, "/ledgers", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let body = json!({ "name": "k", "owner": OWNER, "scopes": ["ledgers:read"], "expires_at": in_a_day() });
    let reply = app
        .request_as(None, Method::POST, "/api-keys", Some(body.to_string()))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let key = reply.json["key"].as_str().unwrap().to_owned();
    let reply = app
        .request_as(None, Method::GET, &format!("/api-keys?owner={OWNER}"), None)
        .await;
    assert_eq!(reply.json.as_array().unwrap().len(), 1, "{}", reply.text);
    // A key sent in open mode changes nothing: the caller is the master.
    let reply = as_key(
        &app,
        &key,
        Method::POST,
        "/ledgers",
        Some(json!({ "name": "open" })),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert!(
        reply.json["meta_data"].get("BLNK_GENERATED_BY").is_none(),
        "{}",
        reply.text
    );
}

#[actix_web::test]
async fn secure_mode_without_a_master_key_accepts_api_keys_only() {
    let mut settings = test_settings(Backend::Sqlite).await;
    settings.secure = true;
    settings.secret_key = None;
    let app = spawn_with(settings).await;
    let reply = app
        .request_as(Some(""), Method::GET, "/ledgers", None)
        .await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, "AUTH_MISSING_API_KEY");
    let reply = app
        .request_as(Some(MASTER), Method::GET, "/ledgers", None)
        .await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, "AUTH_INVALID_API_KEY");
    let reply = app.request_as(None, Method::GET, "/health", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}

// ---------------------------------------------------------------------------------------
// Rate limits and security headers
// ---------------------------------------------------------------------------------------

async fn limited_app(trusted_proxies: &[&str]) -> TestApp {
    let mut settings = test_settings(Backend::Sqlite).await;
    settings.rate_limit_per_second = Some(1);
    settings.rate_limit_burst = Some(3);
    settings.trusted_proxies = trusted_proxies.iter().map(|p| p.parse().unwrap()).collect();
    spawn_with(settings).await
}

async fn get_from(app: &TestApp, forwarded_for: Option<&str>) -> reqwest::Response {
    let mut request = app.client.get(format!("{}/ledgers", app.address));
    if let Some(key) = &app.key {
        request = request.header("X-Blnk-Key", key);
    }
    if let Some(client) = forwarded_for {
        request = request.header("X-Forwarded-For", client);
    }
    request.send().await.unwrap()
}

/// How many requests in a row pass before the first 429 (at most `tries`).
async fn passed_before_limit(app: &TestApp, forwarded_for: Option<&str>, tries: usize) -> usize {
    for passed in 0..tries {
        let response = get_from(app, forwarded_for).await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error_detail"]["code"], "GEN_RATE_LIMITED", "{body}");
            assert!(body["error"].is_string(), "{body}");
            return passed;
        }
        assert_eq!(response.status(), StatusCode::OK);
    }
    tries
}

#[actix_web::test]
async fn a_client_past_its_burst_gets_429_and_forwarded_for_counts_only_from_trusted_proxies() {
    // Untrusted peer: X-Forwarded-For is ignored, every request is the peer's.
    let app = limited_app(&[]).await;
    let passed = passed_before_limit(&app, Some("1.1.1.1"), 10).await;
    assert!(
        (3..=4).contains(&passed),
        "burst 3 (+1 if a second passed): {passed}"
    );
    let response = get_from(&app, Some("2.2.2.2")).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");

    // Trusted proxy: each forwarded client has its own bucket.
    let app = limited_app(&["127.0.0.1/32"]).await;
    let passed = passed_before_limit(&app, Some("1.1.1.1"), 10).await;
    assert!((3..=4).contains(&passed), "{passed}");
    let passed = passed_before_limit(&app, Some("9.9.9.9, 2.2.2.2"), 10).await;
    assert!(
        (3..=4).contains(&passed),
        "another client, its own burst: {passed}"
    );
}

#[actix_web::test]
async fn every_response_carries_the_security_headers_and_hsts_only_behind_tls() {
    let app = secure_app(Backend::Sqlite).await;
    let cases: [(&str, Option<&str>, StatusCode); 4] = [
        ("/health", None, StatusCode::OK),
        ("/ledgers", Some(MASTER), StatusCode::OK),
        ("/ledgers", None, StatusCode::UNAUTHORIZED),
        ("/nowhere", Some(MASTER), StatusCode::NOT_FOUND),
    ];
    for (path, key, status) in cases {
        for over_tls in [false, true] {
            let mut request = app.client.get(format!("{}{path}", app.address));
            if let Some(key) = key {
                request = request.header("X-Blnk-Key", key);
            }
            if over_tls {
                request = request.header("X-Forwarded-Proto", "https");
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), status, "{path}");
            let headers = response.headers();
            assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
            assert_eq!(headers["x-frame-options"], "DENY");
            assert_eq!(
                headers["referrer-policy"],
                "strict-origin-when-cross-origin"
            );
            assert_eq!(
                headers["content-security-policy"],
                "default-src 'none'; frame-ancestors 'none'"
            );
            assert_eq!(headers["cache-control"], "no-store");
            assert_eq!(
                headers.get("strict-transport-security").is_some(),
                over_tls,
                "{path}: HSTS only over TLS"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Keys never reach logs or traces
// ---------------------------------------------------------------------------------------

#[actix_web::test]
async fn keys_are_never_logged_or_traced() {
    let (collector, received) = crate::observability::start_collector().await;
    let data_dir = temp_dir();
    let log_path = data_dir.join("run.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
        .arg("start")
        .env_remove("COFFER_CONFIG")
        .env("COFFER_DATA_DIR", &data_dir)
        .env("BLNK_SERVER_PORT", "0")
        .env("COFFER_HOST", "127.0.0.1")
        .env("BLNK_SERVER_SECURE", "true")
        .env("BLNK_SERVER_SECRET_KEY", MASTER)
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{collector}"),
        )
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("RUST_LOG", "debug")
        .env("NO_COLOR", "1")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("coffer starts");
    let port = crate::helpers::wait_for(Duration::from_secs(60), "coffer to listen", || {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        async move {
            let at = text.find("coffer listening")?;
            let rest = &text[at..];
            let digits: String = rest[rest.find("port=")? + 5..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse::<u16>().ok()
        }
    })
    .await;
    let app = TestApp::at(format!("http://127.0.0.1:{port}"));
    let (id, key) = new_key(&app, OWNER, &["ledgers:*".into()], &in_a_day()).await;
    let reply = as_key(
        &app,
        &key,
        Method::POST,
        "/ledgers",
        Some(json!({ "name": "logged?" })),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let wrong = format!("{}x", &key[..key.len() - 1]);
    let reply = as_key(&app, &wrong, Method::GET, "/ledgers", None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = as_key(&app, &key, Method::GET, "/balances", None).await;
    assert_error(
        &reply,
        StatusCode::FORBIDDEN,
        "AUTH_INSUFFICIENT_PERMISSIONS",
    );
    let reply = app
        .request_as(
            Some(MASTER),
            Method::DELETE,
            &format!("/api-keys/{id}?owner={OWNER}"),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let reply = as_key(&app, &key, Method::GET, "/ledgers", None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    // One `http` span a request (six above, the key's creation included); the exporter may
    // send them in one batch or several.
    crate::helpers::wait_for(Duration::from_secs(30), "spans of the requests", || async {
        let spans: usize = received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|export| &export.resource_spans)
            .flat_map(|resource| &resource.scope_spans)
            .map(|scope| scope.spans.len())
            .sum();
        (spans >= 6).then_some(())
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.contains("coffer listening"),
        "the run's logs were captured"
    );
    assert!(logs.lines().count() > 10, "debug logs were captured");
    let traces = format!("{:?}", received.lock().unwrap());
    assert!(traces.contains("/ledgers"), "the requests were traced");
    for secret in [key.as_str(), wrong.as_str(), MASTER, &key[16..]] {
        assert!(!logs.contains(secret), "a key is in the logs");
        assert!(!traces.contains(secret), "a key is in the traces");
    }
}

// ---------------------------------------------------------------------------------------
// The optional TLS listener
// ---------------------------------------------------------------------------------------

#[actix_web::test]
async fn with_a_certificate_the_api_serves_https_only_and_sends_hsts() {
    use rustls::pki_types::pem::PemObject;
    let dir = temp_dir();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        // An end-entity certificate: openssl's default self-signed one says CA:TRUE, which
        // webpki refuses as a server's certificate.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl makes the test certificate (apt-get install openssl)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let mut half = test_settings(Backend::Sqlite).await;
    half.tls_cert_path = Some(cert.clone());
    let refused = coffer::startup::Application::build(half).await;
    assert!(
        refused.is_err(),
        "a certificate without its key is refused at start"
    );
    let mut settings = test_settings(Backend::Sqlite).await;
    settings.tls_cert_path = Some(cert.clone());
    settings.tls_key_path = Some(key);
    let app = spawn_with(settings).await;
    let port = app.address.rsplit(':').next().unwrap().to_owned();

    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls::pki_types::CertificateDer::pem_file_iter(&cert).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let client = awc::Client::builder()
        .connector(awc::Connector::new().rustls_0_23(std::sync::Arc::new(config)))
        .finish();
    let mut request = client.get(format!("https://localhost:{port}/ledgers"));
    if let Some(key) = &app.key {
        request = request.insert_header(("X-Blnk-Key", key.as_str()));
    }
    let response = request.send().await.expect("an HTTPS answer");
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers().contains_key("strict-transport-security"));
    assert_eq!(response.headers().get("x-frame-options").unwrap(), "DENY");

    let plain = app
        .client
        .get(format!("{}/health", app.address))
        .send()
        .await;
    assert!(
        plain.map_or(true, |r| !r.status().is_success()),
        "plain HTTP is not served on a TLS port"
    );
}
