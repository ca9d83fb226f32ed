//! `spawn_app`: the real server on port 0 against a fresh database (a new PostgreSQL
//! database, or a new SQLite file), with its own Redis key prefix.

use coffer::configuration::Settings;
use coffer::startup::Application;
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Database};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL and Redis: the production setup.
    Postgres,
    /// The embedded default: a SQLite file and the in-process queue.
    Sqlite,
}

pub fn postgres_base_url() -> String {
    std::env::var("COFFER_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

pub fn redis_url() -> String {
    std::env::var("COFFER_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A new name part for a test's database or Redis key prefix: `<run>_<uuid>`, where `<run>`
/// is `COFFER_TEST_RUN` (set by scripts/test.sh, which removes the run's databases and keys
/// when it ends), or just the uuid.
pub fn unique_name() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    match std::env::var("COFFER_TEST_RUN") {
        Ok(run)
            if !run.is_empty()
                && run
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) =>
        {
            format!("{run}_{id}")
        }
        _ => id,
    }
}

/// Creates an empty PostgreSQL database and returns its URL.
pub async fn fresh_postgres_database() -> String {
    let name = format!("coffer_test_{}", unique_name());
    let base = postgres_base_url();
    let admin = Database::connect(format!("{base}/postgres"))
        .await
        .expect("PostgreSQL answers");
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create test database");
    admin.close().await.ok();
    format!("{base}/{name}")
}

pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("coffer-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The master key and metrics token of every test server when the suite runs in secure mode.
pub const SUITE_MASTER_KEY: &str = "suite-master-key";
pub const SUITE_METRICS_TOKEN: &str = "suite-metrics-token";

/// `COFFER_TEST_SECURE=1` runs the whole suite in secure mode: every server from
/// [`test_settings`] requires a key, and every request of [`TestApp::request`] sends the
/// master key.
pub fn secure_suite() -> bool {
    std::env::var("COFFER_TEST_SECURE").is_ok_and(|v| v == "1")
}

/// Settings for a test server of this backend (port 0, small pools, fast sweeps).
pub async fn test_settings(backend: Backend) -> Settings {
    let mut settings = Settings {
        host: "127.0.0.1".into(),
        port: 0,
        http_workers: 2,
        balance_arbiters: 1,
        db_connections_max: 8,
        queue_shards: 4,
        queue_workers: 2,
        recovery_interval_ms: 500,
        recovery_age_ms: 2_000,
        claim_idle_ms: 2_000,
        start_workers: true,
        ..Settings::default()
    };
    if secure_suite() {
        settings.secure = true;
        settings.secret_key = Some(SUITE_MASTER_KEY.into());
        settings.metrics_bearer_token = Some(SUITE_METRICS_TOKEN.into());
    }
    match backend {
        Backend::Postgres => {
            settings.database_url = Some(fresh_postgres_database().await);
            settings.redis_url = Some(redis_url());
            settings.redis_key_prefix = format!("test:{}:", unique_name());
        }
        Backend::Sqlite => settings.data_dir = temp_dir(),
    }
    settings
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    /// The PostgreSQL database of this server, if it has one.
    pub database_url: Option<String>,
    /// The SQLite file of an embedded server, if it is one.
    pub sqlite_path: Option<PathBuf>,
    /// Sent as `X-Blnk-Key` by [`TestApp::request`]: the master key of a secure server.
    pub key: Option<String>,
    /// The bearer token `/metrics` wants, if any.
    pub metrics_token: Option<String>,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_with(test_settings(backend).await).await
}

pub async fn spawn_with(settings: Settings) -> TestApp {
    if std::env::var("TEST_LOG").is_ok() {
        coffer::telemetry::init("info");
    }
    let database_url = settings.database_url.clone();
    let key = settings
        .secret_key
        .as_ref()
        .filter(|_| settings.secure)
        .map(|k| k.expose_secret().to_owned());
    let metrics_token = settings.metrics_bearer_token.clone();
    let sqlite_path = database_url
        .is_none()
        .then(|| settings.data_dir.join("coffer.db"));
    let application = Application::build(settings)
        .await
        .expect("application builds");
    let address = format!("http://127.0.0.1:{}", application.port());
    actix_web::rt::spawn(application.run_until_stopped());
    TestApp {
        address,
        client: client(),
        database_url,
        sqlite_path,
        key,
        metrics_token,
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Polls `check` until it returns `Some`, or panics after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A response: status, parsed JSON (Null if none) and the raw text.
pub struct Reply {
    pub status: StatusCode,
    pub json: Value,
    pub text: String,
}

impl TestApp {
    /// A client of a server started some other way (a `coffer` process).
    pub fn at(address: String) -> Self {
        Self {
            address,
            client: client(),
            database_url: None,
            sqlite_path: None,
            key: None,
            metrics_token: None,
        }
    }

    pub fn database_url(&self) -> &str {
        self.database_url
            .as_deref()
            .expect("a PostgreSQL-backed app")
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
    ) -> Reply {
        self.request_as(self.key.as_deref(), method, path, body)
            .await
    }

    /// A request with this `X-Blnk-Key` (or none).
    pub async fn request_as(
        &self,
        key: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
    ) -> Reply {
        let mut request = self
            .client
            .request(method, format!("{}{}", self.address, path))
            .header("content-type", "application/json");
        if let Some(key) = key {
            request = request.header("X-Blnk-Key", key);
        }
        if let Some(token) = self
            .metrics_token
            .as_ref()
            .filter(|_| path.starts_with("/metrics"))
        {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, json, text }
    }

    /// A connection of the test's own to this server's database (PostgreSQL, or the SQLite
    /// file), for changing rows behind the server's back.
    pub async fn direct_db(&self) -> sea_orm::DatabaseConnection {
        let url = match (&self.database_url, &self.sqlite_path) {
            (Some(url), _) => url.clone(),
            (None, Some(path)) => format!("sqlite://{}", path.display()),
            (None, None) => panic!("a server started outside spawn_with has no database here"),
        };
        Database::connect(url)
            .await
            .expect("the test database answers")
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.request(reqwest::Method::DELETE, path, None).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.request(reqwest::Method::POST, path, Some(body.to_string()))
            .await
    }

    pub async fn post_raw(&self, path: &str, body: &str) -> Reply {
        self.request(reqwest::Method::POST, path, Some(body.to_owned()))
            .await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.request(reqwest::Method::PUT, path, Some(body.to_string()))
            .await
    }

    pub async fn create_ledger(&self, name: &str) -> String {
        let reply = self.post("/ledgers", json!({ "name": name })).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        reply.json["ledger_id"].as_str().unwrap().to_owned()
    }

    pub async fn create_balance(&self, ledger_id: &str, currency: &str) -> String {
        let reply = self
            .post(
                "/balances",
                json!({ "ledger_id": ledger_id, "currency": currency }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        reply.json["balance_id"].as_str().unwrap().to_owned()
    }

    /// A new individual identity; returns its id.
    pub async fn create_identity(&self, first_name: &str) -> String {
        let reply = self
            .post(
                "/identities",
                json!({ "identity_type": "individual", "first_name": first_name, "last_name": "Test" }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        reply.json["identity_id"].as_str().unwrap().to_owned()
    }

    /// A new ledger and `count` balances in it.
    pub async fn balances(&self, currency: &str, count: usize) -> Vec<String> {
        let ledger = self.create_ledger("test").await;
        let mut ids = Vec::new();
        for _ in 0..count {
            ids.push(self.create_balance(&ledger, currency).await);
        }
        ids
    }

    /// Moves `precise_amount` minor units from `@World` (overdraft allowed), applied now.
    pub async fn fund(&self, balance_id: &str, currency: &str, precise_amount: i64) {
        let reply = self
            .post(
                "/transactions",
                json!({
                    "precise_amount": precise_amount, "currency": currency,
                    "reference": format!("fund-{}", uuid::Uuid::new_v4()), "description": "funding",
                    "source": "@World", "destination": balance_id,
                    "allow_overdraft": true, "skip_queue": true,
                }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    }

    /// A transfer body between two balances.
    pub fn transfer(
        &self,
        source: &str,
        destination: &str,
        precise_amount: i64,
        skip_queue: bool,
    ) -> Value {
        json!({
            "precise_amount": precise_amount, "currency": "USD",
            "reference": format!("ref-{}", uuid::Uuid::new_v4()), "description": "transfer",
            "source": source, "destination": destination, "skip_queue": skip_queue,
        })
    }

    pub async fn balance(&self, balance_id: &str) -> Value {
        let reply = self.get(&format!("/balances/{balance_id}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        reply.json
    }

    /// `balance` field as i64 (tests keep amounts small).
    pub async fn amount(&self, balance_id: &str) -> i64 {
        self.balance(balance_id).await["balance"]
            .as_i64()
            .expect("small integer balance")
    }

    /// Waits until the queued transaction has its `<ref>_q` child; returns the child.
    pub async fn queued_outcome(&self, reference: &str) -> Value {
        let path = format!("/transactions/reference/{reference}_q");
        wait_for(
            Duration::from_secs(30),
            "the queued transaction to be processed",
            || async {
                let reply = self.get(&path).await;
                (reply.status == StatusCode::OK).then_some(reply.json)
            },
        )
        .await
    }

    /// Every row of a list endpoint (`/transactions`, `/balances`), page by page.
    async fn all_rows(&self, path: &str) -> Vec<Value> {
        const PAGE: usize = 1000;
        let mut rows = Vec::new();
        loop {
            let reply = self
                .get(&format!("{path}?limit={PAGE}&offset={}", rows.len()))
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
            let page = reply.json.as_array().unwrap().clone();
            let done = page.len() < PAGE;
            rows.extend(page);
            if done {
                return rows;
            }
        }
    }

    /// Every transaction row (any status).
    pub async fn all_transactions(&self) -> Vec<Value> {
        self.all_rows("/transactions").await
    }

    /// Every balance.
    pub async fn all_balances(&self) -> Vec<Value> {
        self.all_rows("/balances").await
    }

    /// The ledger's invariants: per currency Σ balances = 0, and every balance equals the
    /// replay of its APPLIED transactions.
    pub async fn assert_invariants(&self) {
        assert_invariants_of(&self.all_balances().await, &self.all_transactions().await);
    }
}

/// Per balance, what its rows say it holds: (credit, debit, inflight credit, inflight debit).
#[derive(Default, Clone, Copy)]
struct Replay {
    credit: i128,
    debit: i128,
    inflight_credit: i128,
    inflight_debit: i128,
}

pub fn assert_invariants_of(balances: &[Value], transactions: &[Value]) {
    use std::collections::{HashMap, HashSet};
    let amount = |row: &Value| row["precise_amount"].as_i64().expect("small amount") as i128;
    let holds: HashSet<&str> = transactions
        .iter()
        .filter(|t| t["status"] == "INFLIGHT")
        .map(|t| t["transaction_id"].as_str().unwrap())
        .collect();
    let mut replay: HashMap<String, Replay> = HashMap::new();
    for row in transactions {
        let (source, destination) = (
            row["source"].as_str().unwrap(),
            row["destination"].as_str().unwrap(),
        );
        let closes_hold = holds.contains(row["parent_transaction"].as_str().unwrap_or_default());
        let status = row["status"].as_str().unwrap();
        if status == "APPLIED" {
            replay.entry(source.into()).or_default().debit += amount(row);
            replay.entry(destination.into()).or_default().credit += amount(row);
        }
        if status == "INFLIGHT" {
            replay.entry(source.into()).or_default().inflight_debit += amount(row);
            replay
                .entry(destination.into())
                .or_default()
                .inflight_credit += amount(row);
        }
        // A commit (APPLIED) or void (VOID) of a hold takes its amount out of inflight.
        if closes_hold && (status == "APPLIED" || status == "VOID") {
            replay.entry(source.into()).or_default().inflight_debit -= amount(row);
            replay
                .entry(destination.into())
                .or_default()
                .inflight_credit -= amount(row);
        }
    }
    let mut per_currency: HashMap<String, (i128, i128)> = HashMap::new();
    for balance in balances {
        let id = balance["balance_id"].as_str().unwrap();
        let expected = replay.get(id).copied().unwrap_or_default();
        let stored = |field: &str| balance[field].as_i64().expect("small amount") as i128;
        assert_eq!(
            stored("credit_balance"),
            expected.credit,
            "credit of {id} equals its replay"
        );
        assert_eq!(
            stored("debit_balance"),
            expected.debit,
            "debit of {id} equals its replay"
        );
        assert_eq!(
            stored("balance"),
            expected.credit - expected.debit,
            "balance of {id} = credit - debit"
        );
        assert_eq!(
            stored("inflight_credit_balance"),
            expected.inflight_credit,
            "inflight credit of {id}"
        );
        assert_eq!(
            stored("inflight_debit_balance"),
            expected.inflight_debit,
            "inflight debit of {id}"
        );
        assert_eq!(
            stored("inflight_balance"),
            expected.inflight_credit - expected.inflight_debit,
            "inflight balance of {id}"
        );
        let sums = per_currency
            .entry(balance["currency"].as_str().unwrap().into())
            .or_default();
        sums.0 += stored("balance");
        sums.1 += stored("inflight_balance");
    }
    for (currency, (sum, inflight_sum)) in per_currency {
        assert_eq!(sum, 0, "sum of {currency} balances is zero");
        assert_eq!(
            inflight_sum, 0,
            "sum of {currency} inflight balances is zero"
        );
    }
}

/// A refusal: `status`, Blnk's error shape (`error` and `error_detail.message` the same words,
/// `error_detail.code` = `code`), and no 5xx unless one is asked for; `what` names the request
/// in a failure.
pub fn assert_refusal(reply: &Reply, status: StatusCode, code: &str, what: &str) {
    if !status.is_server_error() {
        assert!(
            !reply.status.is_server_error(),
            "{what}: a 5xx: {}",
            reply.text
        );
    }
    assert_eq!(reply.status, status, "{what}: {}", reply.text);
    assert_eq!(
        reply.json["error_detail"]["code"], code,
        "{what}: {}",
        reply.text
    );
    assert!(
        reply.json["error"].is_string(),
        "{what}: no error string in {}",
        reply.text
    );
    assert_eq!(
        reply.json["error_detail"]["message"], reply.json["error"],
        "{what}: {}",
        reply.text
    );
}

/// [`assert_refusal`] of a request its answer names well enough.
pub fn assert_error(reply: &Reply, status: StatusCode, code: &str) {
    assert_refusal(reply, status, code, "");
}

/// The values of `field` in a JSON array answer (the ids of a list).
pub fn field_values(reply: &Reply, field: &str) -> std::collections::BTreeSet<String> {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply
        .json
        .as_array()
        .unwrap_or_else(|| panic!("a JSON array: {}", reply.text))
        .iter()
        .map(|row| row[field].as_str().unwrap().to_owned())
        .collect()
}

/// Runs one async test body against both backends.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            use $crate::helpers::Backend;
            #[actix_web::test]
            async fn on_postgres() {
                super::$name(Backend::Postgres).await
            }
            #[actix_web::test]
            async fn on_sqlite() {
                super::$name(Backend::Sqlite).await
            }
        }
    };
}

/// `(status, attempts, last_error)` of the outbox rows, in id order: every row, or with
/// `filter = Some((column, value))` those whose `column` is `value`.
pub async fn outbox_rows(
    app: &TestApp,
    filter: Option<(&str, &str)>,
) -> Vec<(String, i32, Option<String>)> {
    let db = app.direct_db().await;
    let backend = db.get_database_backend();
    let columns = "SELECT status, attempts, last_error FROM outbox_events";
    let statement = match filter {
        None => sea_orm::Statement::from_string(backend, format!("{columns} ORDER BY id")),
        Some((column, value)) => {
            let placeholder = match backend {
                sea_orm::DbBackend::Postgres => "$1",
                _ => "?",
            };
            sea_orm::Statement::from_sql_and_values(
                backend,
                format!("{columns} WHERE {column} = {placeholder} ORDER BY id"),
                [value.into()],
            )
        }
    };
    let rows = db
        .query_all_raw(statement)
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

/// The key the server of `settings` signs with: its own, or `fallback` set as its own.
pub fn signing_secret(settings: &mut Settings, fallback: &str) -> String {
    if settings.secret_key.is_none() {
        settings.secret_key = Some(fallback.to_owned().into());
    }
    settings
        .secret_key
        .as_ref()
        .map(|k| k.expose_secret().to_owned())
        .unwrap_or_default()
}
