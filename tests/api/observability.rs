//! Operations: Prometheus metrics (parsed from the exposition format), the metrics bearer
//! token, OTLP trace export (spans received and decoded by an in-test collector, one trace
//! from the request through the queue to the worker's commit), `GET /backup`, and graceful
//! shutdown of the server and the workers on SIGTERM.

use crate::helpers::{
    fresh_postgres_database, redis_url, spawn_app, spawn_with, temp_dir, test_settings, wait_for,
    Backend, TestApp,
};
use crate::on_both_backends;
use actix_web::{web, HttpResponse};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// ---------------------------------------------------------------------------------------
// The exposition format
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses Prometheus' text format strictly: every line is a `# HELP`/`# TYPE` comment or a
/// sample of a declared family, names and label values are well formed, and every histogram
/// series has cumulative buckets ending in `+Inf` = `_count`, plus a `_sum`.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name, tail) = (parts.next(), parts.next(), parts.next());
            let name = name.unwrap_or_else(|| panic!("comment without a name: {line}"));
            assert!(valid_name(name), "bad metric name in {line}");
            match kind {
                Some("HELP") => assert!(tail.is_some_and(|t| !t.is_empty()), "{line}"),
                Some("TYPE") => {
                    let kind = tail.unwrap_or_default();
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                        "{line}"
                    );
                    assert!(
                        types.insert(name.to_owned(), kind.to_owned()).is_none(),
                        "TYPE declared twice: {line}"
                    );
                }
                _ => panic!("unknown comment {line}"),
            }
            continue;
        }
        let sample = parse_sample(line);
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = sample.name.strip_suffix(suffix)?;
                (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
            })
            .unwrap_or(&sample.name);
        assert!(
            types.contains_key(family),
            "sample before its TYPE line: {line}"
        );
        samples.push(sample);
    }
    for (name, kind) in &types {
        if kind == "histogram" {
            check_histogram(name, &samples);
        }
    }
    samples
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_sample(line: &str) -> Sample {
    let (name_end, labels, rest) = match line.find('{') {
        Some(open) => {
            let mut labels = BTreeMap::new();
            let mut chars = line[open + 1..].char_indices().peekable();
            let close;
            loop {
                let (start, c) = chars.next().unwrap_or_else(|| panic!("unclosed: {line}"));
                if c == '}' {
                    close = open + 1 + start;
                    break;
                }
                if c == ',' {
                    continue;
                }
                let mut label = String::from(c);
                for (_, c) in chars.by_ref() {
                    if c == '=' {
                        break;
                    }
                    label.push(c);
                }
                assert!(valid_name(&label), "bad label name {label:?} in {line}");
                assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                let mut value = String::new();
                loop {
                    match chars.next().map(|(_, c)| c) {
                        Some('"') => break,
                        Some('\\') => match chars.next().map(|(_, c)| c) {
                            Some('n') => value.push('\n'),
                            Some(c @ ('\\' | '"')) => value.push(c),
                            other => panic!("bad escape {other:?} in {line}"),
                        },
                        Some(c) => value.push(c),
                        None => panic!("unterminated label value in {line}"),
                    }
                }
                assert!(
                    labels.insert(label, value).is_none(),
                    "repeated label in {line}"
                );
            }
            (open, labels, &line[close + 1..])
        }
        None => {
            let space = line.find(' ').unwrap_or_else(|| panic!("no value: {line}"));
            (space, BTreeMap::new(), &line[space..])
        }
    };
    let name = &line[..name_end];
    assert!(valid_name(name), "bad sample name in {line}");
    let value_text = rest
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("no space before the value: {line}"));
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        text => text
            .parse()
            .unwrap_or_else(|_| panic!("bad value {text:?} in {line}")),
    };
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

fn check_histogram(name: &str, samples: &[Sample]) {
    let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
    for sample in samples
        .iter()
        .filter(|s| s.name == format!("{name}_bucket"))
    {
        let mut labels = sample.labels.clone();
        let le = labels.remove("le").expect("bucket has le");
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap()
        };
        series.entry(labels).or_default().push((le, sample.value));
    }
    for (labels, buckets) in series {
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{name}{labels:?}: buckets are not cumulative"
        );
        let (last_le, last_count) = *buckets.last().unwrap();
        assert!(last_le.is_infinite(), "{name}{labels:?}: no +Inf bucket");
        let count = value_of(samples, &format!("{name}_count"), &labels);
        assert_eq!(count, Some(last_count), "{name}{labels:?}: +Inf != _count");
        assert!(value_of(samples, &format!("{name}_sum"), &labels).is_some());
    }
}

fn value_of(samples: &[Sample], name: &str, labels: &BTreeMap<String, String>) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && &s.labels == labels)
        .map(|s| s.value)
}

/// The value of `name{labels}` (exactly these labels), if present.
fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    value_of(samples, name, &labels)
}

async fn scrape(app: &TestApp) -> Vec<Sample> {
    let mut request = app.client.get(format!("{}/metrics", app.address));
    if let Some(token) = &app.metrics_token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    parse_exposition(&response.text().await.unwrap())
}

// ---------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------

async fn metrics_count_requests_transactions_rejections_and_the_queue(backend: Backend) {
    let app = spawn_app(backend).await;
    let balances = app.balances("USD", 2).await;
    let (a, b) = (&balances[0], &balances[1]);
    app.fund(a, "USD", 100).await;
    // Queued, applied by the in-process workers.
    let queued = app.transfer(a, b, 30, false);
    let reply = app.post("/transactions", queued.clone()).await;
    assert_eq!(reply.json["status"], "QUEUED", "{}", reply.text);
    let child = app
        .queued_outcome(queued["reference"].as_str().unwrap())
        .await;
    assert_eq!(child["status"], "APPLIED");
    // Refused at once (skip_queue), and rejected by a worker (queued).
    let refused = app
        .post("/transactions", app.transfer(b, a, 1_000, true))
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text);
    let doomed = app.transfer(b, a, 1_000, false);
    let reply = app.post("/transactions", doomed.clone()).await;
    assert_eq!(reply.json["status"], "QUEUED", "{}", reply.text);
    let child = app
        .queued_outcome(doomed["reference"].as_str().unwrap())
        .await;
    assert_eq!(child["status"], "REJECTED");
    assert_eq!(
        app.get("/no/such/route").await.status,
        StatusCode::NOT_FOUND
    );

    // Metrics are recorded just after the commits the API already shows, and entries leave
    // the queue after their commit: poll until the workers' counts are in.
    let samples = wait_for(Duration::from_secs(10), "the workers' counts", || async {
        let samples = scrape(&app).await;
        let rejected = [("status", "REJECTED"), ("currency", "USD")];
        (metric(&samples, "coffer_queue_depth", &[]) == Some(0.0)
            && metric(&samples, "coffer_transactions_total", &rejected) == Some(1.0)
            && metric(&samples, "coffer_queue_wait_seconds_count", &[]) == Some(2.0))
        .then_some(samples)
    })
    .await;
    let post_transactions = |status: &str| {
        metric(
            &samples,
            "coffer_http_requests_total",
            &[
                ("method", "POST"),
                ("route", "/transactions"),
                ("status", status),
            ],
        )
    };
    assert_eq!(post_transactions("201"), Some(3.0));
    assert_eq!(post_transactions("400"), Some(1.0));
    assert_eq!(
        metric(
            &samples,
            "coffer_http_request_duration_seconds_count",
            &[
                ("method", "POST"),
                ("route", "/transactions"),
                ("status", "201")
            ],
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &samples,
            "coffer_http_requests_total",
            &[("method", "GET"), ("route", "unmatched"), ("status", "404")],
        ),
        Some(1.0),
        "unknown paths share one series"
    );
    assert!(
        metric(
            &samples,
            "coffer_http_requests_total",
            &[
                ("method", "GET"),
                ("route", "/transactions/reference/{reference}"),
                ("status", "200")
            ],
        )
        .is_some(),
        "routes are labelled by pattern"
    );
    let transactions = |status: &str| {
        metric(
            &samples,
            "coffer_transactions_total",
            &[("status", status), ("currency", "USD")],
        )
    };
    assert_eq!(transactions("APPLIED"), Some(2.0));
    assert_eq!(transactions("QUEUED"), Some(2.0));
    assert_eq!(transactions("REJECTED"), Some(1.0));
    assert_eq!(
        metric(
            &samples,
            "coffer_transactions_rejected_total",
            &[("reason", "insufficient_funds")]
        ),
        Some(2.0),
        "one refused on request, one rejected by the worker"
    );
    assert_eq!(
        metric(&samples, "coffer_queue_wait_seconds_count", &[]),
        Some(2.0)
    );
    assert_eq!(metric(&samples, "coffer_committer_pending", &[]), Some(0.0));
    // No sink configured: no outbox series (they are by sink).
    assert_eq!(metric(&samples, "coffer_outbox_lag_seconds", &[]), None);
    assert!(metric(&samples, "coffer_balance_actors_live", &[]).unwrap() >= 2.0);
    assert!(metric(&samples, "coffer_queue_lag_seconds", &[]).unwrap() >= 0.0);
    // Fed by the committer's hook (`Metrics::observe_commit`).
    assert!(metric(&samples, "coffer_commit_batch_size_count", &[]).is_some_and(|n| n >= 1.0));
    assert!(metric(&samples, "coffer_commit_batch_size_sum", &[]).is_some_and(|n| n >= 5.0));
    assert!(metric(&samples, "coffer_commit_duration_seconds_count", &[]).is_some());
    assert!(metric(&samples, "process_start_time_seconds", &[]).unwrap() > 1.7e9);
}
on_both_backends!(metrics_count_requests_transactions_rejections_and_the_queue);

#[actix_web::test]
async fn the_metrics_bearer_token_and_secure_mode_follow_blnk() {
    let mut settings = test_settings(Backend::Sqlite).await;
    settings.metrics_bearer_token = Some("s3cr3t".into());
    let app = spawn_with(settings).await;
    let get = |authorization: Option<&'static str>| {
        let mut request = app.client.get(format!("{}/metrics", app.address));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            let challenge = response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned());
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, body, challenge)
        }
    };
    let (status, body, challenge) = get(None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error_detail"]["code"], "AUTH_METRICS_TOKEN_REQUIRED");
    assert_eq!(body["error"], body["error_detail"]["message"]);
    assert_eq!(challenge.as_deref(), Some("Bearer"));
    let (status, body, _) = get(Some("Basic s3cr3t")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error_detail"]["code"], "AUTH_METRICS_TOKEN_REQUIRED");
    // (Trailing whitespace never reaches the server: HTTP strips it from header values.)
    for wrong in ["Bearer nope", "Bearer  s3cr3t", "Bearer s3cr3tx"] {
        let (status, body, _) = get(Some(wrong)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong}");
        assert_eq!(body["error_detail"]["code"], "AUTH_INVALID_BEARER_TOKEN");
        assert_eq!(body["error"], "Invalid bearer token");
    }
    let (status, _, _) = get(Some("Bearer s3cr3t")).await;
    assert_eq!(status, StatusCode::OK);

    let mut settings = test_settings(Backend::Sqlite).await;
    settings.secure = true;
    settings.metrics_bearer_token = None;
    let locked = spawn_with(settings).await;
    let reply = locked.get("/metrics").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.json["error_detail"]["code"], "AUTH_METRICS_DISABLED");
}

// ---------------------------------------------------------------------------------------
// Backups
// ---------------------------------------------------------------------------------------

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// `<dir>/YYYY-MM-DD/<db>-HHMMSS[-N].<extension>`, private to the owner.
fn assert_backup_path(dir: &Path, file: &Path, db: &str, extension: &str) {
    use std::os::unix::fs::PermissionsExt;
    let relative = file.strip_prefix(dir).unwrap().to_str().unwrap().to_owned();
    let (day, name) = relative.split_once('/').unwrap();
    assert!(
        chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").is_ok(),
        "{relative}"
    );
    let stem = name
        .strip_prefix(&format!("{db}-"))
        .and_then(|rest| rest.strip_suffix(&format!(".{extension}")))
        .unwrap_or_else(|| panic!("unexpected backup name {relative}"));
    let time = stem.split('-').next().unwrap();
    assert!(
        time.len() == 6 && chrono::NaiveTime::parse_from_str(time, "%H%M%S").is_ok(),
        "{relative}"
    );
    let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{relative}");
}

#[actix_web::test]
async fn backup_dumps_postgresql_with_pg_dump() {
    let mut settings = test_settings(Backend::Postgres).await;
    let dir = temp_dir();
    settings.backup_dir = dir.clone();
    let app = spawn_with(settings).await;
    let marker = format!("backup-marker-{}", uuid::Uuid::new_v4().simple());
    app.create_ledger(&marker).await;

    for round in 1..=2 {
        let reply = app.get("/backup").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(reply.json, json!("backup successful"));
        assert_eq!(files_under(&dir).len(), round, "one new file per backup");
    }
    let db = app.database_url().rsplit('/').next().unwrap().to_owned();
    for file in files_under(&dir) {
        assert_backup_path(&dir, &file, &db, "sql");
        let dump = std::fs::read_to_string(&file).unwrap();
        assert!(
            dump.contains("PostgreSQL database dump"),
            "{}",
            file.display()
        );
        assert!(dump.contains("CREATE TABLE public.transactions"));
        assert!(dump.contains(&marker), "the data is in the dump");
    }
}

#[actix_web::test]
async fn backup_copies_the_embedded_sqlite_database() {
    let mut settings = test_settings(Backend::Sqlite).await;
    let dir = temp_dir();
    settings.backup_dir = dir.clone();
    let app = spawn_with(settings).await;
    let marker = format!("backup-marker-{}", uuid::Uuid::new_v4().simple());
    app.create_ledger(&marker).await;
    let reply = app.get("/backup").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json, json!("backup successful"));
    let files = files_under(&dir);
    assert_eq!(files.len(), 1);
    assert_backup_path(&dir, &files[0], "coffer", "db");
    let copy = std::fs::read(&files[0]).unwrap();
    assert!(copy.starts_with(b"SQLite format 3\0"));
    let needle = marker.as_bytes();
    assert!(
        copy.windows(needle.len()).any(|w| w == needle),
        "the data is in the copy"
    );
}

#[actix_web::test]
async fn a_failed_backup_answers_admin_backup_failed_and_leaves_nothing() {
    let mut settings = test_settings(Backend::Postgres).await;
    let dir = temp_dir();
    settings.backup_dir = dir.clone();
    settings.pg_dump = "/nonexistent/pg_dump".into();
    let app = spawn_with(settings).await;
    let reply = app.get("/backup").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    let detail = json!({ "code": "ADMIN_BACKUP_FAILED", "message": "backup failed" });
    assert_eq!(
        reply.json,
        json!({ "error": detail, "error_detail": detail })
    );
    assert!(files_under(&dir).is_empty(), "no partial file is left");
}

#[actix_web::test]
async fn in_secure_mode_backup_requires_the_master_key() {
    let mut settings = test_settings(Backend::Sqlite).await;
    settings.backup_dir = temp_dir();
    settings.secure = true;
    settings.secret_key = Some("master-key".into());
    let app = spawn_with(settings).await;
    let backup = |key: Option<&'static str>| {
        let mut request = app.client.get(format!("{}/backup", app.address));
        if let Some(key) = key {
            request = request.header("X-Blnk-Key", key);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = backup(None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error_detail"]["code"], "AUTH_MISSING_API_KEY");
    let (status, body) = backup(Some("wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error_detail"]["code"], "AUTH_INVALID_API_KEY");
    let (status, body) = backup(Some("master-key")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!("backup successful"));
}

// ---------------------------------------------------------------------------------------
// Real processes: trace export and graceful shutdown
// ---------------------------------------------------------------------------------------

/// A `coffer` process; its stdout lines are kept.
struct Process {
    child: Child,
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// Starts `coffer <command>` and waits for its `<ready> port=N` line.
    fn start(command: &str, environment: &[(&str, String)], ready: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_coffer"))
            .arg(command)
            .env_remove("COFFER_CONFIG")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .envs(environment.iter().map(|(k, v)| (*k, v.as_str())))
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("coffer binary starts");
        let stdout = child.stdout.take().unwrap();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let marker = format!("{ready} port=");
        let kept = lines.clone();
        std::thread::spawn(move || {
            let mut port_tx = Some(port_tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let (Some(tx), Some(at)) = (&port_tx, line.find(&marker)) {
                    let digits: String = line[at + marker.len()..]
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    let _ = tx.send(digits.parse::<u16>().unwrap());
                    port_tx = None;
                }
                if std::env::var("TEST_LOG").is_ok() {
                    println!("{line}");
                }
                kept.lock().unwrap().push(line);
            }
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("coffer {command} reports its port"));
        Self { child, port, lines }
    }

    fn app(&self) -> TestApp {
        TestApp::at(format!("http://127.0.0.1:{}", self.port))
    }

    fn logged(&self, text: &str) -> bool {
        self.lines.lock().unwrap().iter().any(|l| l.contains(text))
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the process to exit; returns whether it exited successfully.
    async fn exited(&mut self, timeout: Duration) -> bool {
        let child = &mut self.child;
        wait_for(timeout, "the process to exit", || {
            let status = child.try_wait().unwrap();
            async move { status.map(|s| s.success()) }
        })
        .await
    }
}

fn environment(database_url: &str, prefix: &str) -> Vec<(&'static str, String)> {
    vec![
        ("BLNK_DATA_SOURCE_DNS", database_url.to_owned()),
        ("BLNK_REDIS_DNS", redis_url()),
        ("BLNK_SERVER_PORT", "0".into()),
        ("BLNK_QUEUE_MONITORING_PORT", "0".into()),
        ("BLNK_QUEUE_NUMBER_OF_QUEUES", "4".into()),
        ("COFFER_HOST", "127.0.0.1".into()),
        ("COFFER_REDIS_KEY_PREFIX", prefix.to_owned()),
        ("COFFER_START_WORKERS", "false".into()),
        ("COFFER_BALANCE_ARBITERS", "1".into()),
        ("COFFER_CLAIM_IDLE_MS", "1000".into()),
        ("RUST_LOG", "info".into()),
    ]
}

/// An OTLP/HTTP collector on a free port: keeps every decoded `POST /v1/traces`.
pub(crate) async fn start_collector() -> (u16, Arc<Mutex<Vec<ExportTraceServiceRequest>>>) {
    let received: Arc<Mutex<Vec<ExportTraceServiceRequest>>> = Arc::default();
    let kept = received.clone();
    let server = actix_web::HttpServer::new(move || {
        let kept = kept.clone();
        actix_web::App::new()
            .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
            .route(
                "/v1/traces",
                web::post().to(move |body: web::Bytes| {
                    let kept = kept.clone();
                    async move {
                        match ExportTraceServiceRequest::decode(body.as_ref()) {
                            Ok(request) => {
                                kept.lock().unwrap().push(request);
                                HttpResponse::Ok()
                                    .content_type("application/x-protobuf")
                                    .body(Vec::new())
                            }
                            Err(_) => HttpResponse::BadRequest().finish(),
                        }
                    }
                }),
            )
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", 0))
    .unwrap();
    let port = server.addrs()[0].port();
    actix_web::rt::spawn(server.run());
    (port, received)
}

#[derive(Debug, Clone)]
struct ReceivedSpan {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

fn spans(received: &[ExportTraceServiceRequest]) -> Vec<ReceivedSpan> {
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut spans = Vec::new();
    for request in received {
        for resource_spans in &request.resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    AnyValue::StringValue(name) => Some(name.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in &resource_spans.scope_spans {
                for span in &scope.spans {
                    spans.push(ReceivedSpan {
                        service: service.clone(),
                        name: span.name.clone(),
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                    });
                }
            }
        }
    }
    spans
}

#[actix_web::test]
async fn one_queued_transfer_is_one_trace_from_the_request_to_the_workers_commit() {
    let (collector, received) = start_collector().await;
    let database_url = fresh_postgres_database().await;
    let prefix = format!("test:{}:", crate::helpers::unique_name());
    let mut api_environment = environment(&database_url, &prefix);
    // Blnk's key, as a bare host:port, for the server...
    api_environment.push(("BLNK_MONITORING_DSN", format!("127.0.0.1:{collector}")));
    api_environment.push(("OTEL_BSP_SCHEDULE_DELAY", "100".into()));
    let mut worker_environment = environment(&database_url, &prefix);
    // ... and the standard variable for the worker.
    worker_environment.push((
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("http://127.0.0.1:{collector}"),
    ));
    worker_environment.push(("OTEL_BSP_SCHEDULE_DELAY", "100".into()));
    let server = Process::start("start", &api_environment, "coffer listening");
    let worker = Process::start("workers", &worker_environment, "coffer workers running");
    assert!(server.logged("exporting traces over OTLP/HTTP"));
    assert!(worker.logged("exporting traces over OTLP/HTTP"));
    let app = server.app();
    let balances = app.balances("USD", 2).await;
    app.fund(&balances[0], "USD", 100).await;

    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let caller_span = &uuid::Uuid::new_v4().simple().to_string()[..16];
    let body = app.transfer(&balances[0], &balances[1], 10, false);
    let mut request = app.client.post(format!("{}/transactions", app.address));
    if let Some(key) = &app.key {
        request = request.header("X-Blnk-Key", key);
    }
    let response = request
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let child = app
        .queued_outcome(body["reference"].as_str().unwrap())
        .await;
    assert_eq!(child["status"], "APPLIED");

    let trace = wait_for(
        Duration::from_secs(30),
        "the request's and the worker's spans",
        || async {
            let trace: Vec<ReceivedSpan> = spans(&received.lock().unwrap())
                .into_iter()
                .filter(|s| s.trace_id == trace_id)
                .collect();
            let has = |service: &str, name: &str| {
                trace.iter().any(|s| s.service == service && s.name == name)
            };
            (has("coffer", "http")
                && has("coffer", "ledger.commit")
                && has("coffer-worker", "queue.apply")
                && has("coffer-worker", "ledger.commit"))
            .then_some(trace)
        },
    )
    .await;
    if std::env::var("TEST_LOG").is_ok() {
        println!("{trace:#?}");
    }
    // The request's span continues the caller's...
    let http = trace.iter().find(|s| s.name == "http").unwrap();
    assert_eq!(http.parent_span_id, caller_span);
    // ... the worker's continues a span of the request...
    let apply = trace.iter().find(|s| s.name == "queue.apply").unwrap();
    let server_spans: HashSet<&str> = trace
        .iter()
        .filter(|s| s.service == "coffer")
        .map(|s| s.span_id.as_str())
        .collect();
    assert!(
        server_spans.contains(apply.parent_span_id.as_str()),
        "queue.apply's parent is one of the request's spans: {trace:#?}"
    );
    // ... and every span of the trace hangs off the caller's span.
    let ids: HashSet<&str> = trace.iter().map(|s| s.span_id.as_str()).collect();
    for span in &trace {
        assert!(
            ids.contains(span.parent_span_id.as_str()) || span.parent_span_id == caller_span,
            "orphan span {span:?}"
        );
    }
}

#[actix_web::test]
async fn the_worker_serves_health_and_metrics_and_on_sigterm_acks_only_what_it_committed() {
    let database_url = fresh_postgres_database().await;
    let prefix = format!("test:{}:", crate::helpers::unique_name());
    let mut environment = environment(&database_url, &prefix);
    environment.push(("BLNK_METRICS_BEARER_TOKEN", "worker-token".into()));
    // No recovery sweep re-enqueues during the test.
    environment.push(("COFFER_RECOVERY_AGE_MS", "600000".into()));
    // One worker taking small batches: it is still busy when the signal comes.
    environment.push(("COFFER_QUEUE_WORKERS", "1".into()));
    environment.push(("COFFER_RECEIVE_BATCH_MAX", "8".into()));
    let server = Process::start("start", &environment, "coffer listening");
    let app = server.app();
    let balances = app.balances("USD", 5).await;
    app.fund(&balances[0], "USD", 1_000_000).await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let total = 1000;
    let bodies: Vec<Value> = (0..total)
        .map(|i| {
            let mut body = app.transfer(&balances[0], &balances[1 + i % 4], 1, false);
            body["reference"] = json!(format!("{run}-{i}"));
            body
        })
        .collect();
    for chunk in bodies.chunks(50) {
        let replies = futures_util::future::join_all(
            chunk.iter().map(|b| app.post("/transactions", b.clone())),
        )
        .await;
        assert!(replies.iter().all(|r| r.status == StatusCode::CREATED));
    }

    let mut worker = Process::start("workers", &environment, "coffer workers running");
    let monitor = worker.app();
    let health = monitor.get("/health").await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.text);
    assert_eq!(health.json["status"], "UP");
    assert_eq!(health.json["service"], "worker");
    assert_eq!(health.json["outbox"]["dead"], 0);
    let live = monitor.get("/health/live").await;
    assert_eq!(live.json, json!({ "status": "UP", "service": "worker" }));
    assert_eq!(
        monitor.get("/metrics").await.status,
        StatusCode::UNAUTHORIZED
    );
    let (app_ref, run_ref) = (&app, run.as_str());
    wait_for(
        Duration::from_secs(60),
        "the worker to apply some",
        || async { (applied_children(app_ref, run_ref).await.len() >= 50).then_some(()) },
    )
    .await;
    let scraped = monitor
        .client
        .get(format!("{}/metrics", monitor.address))
        .bearer_auth("worker-token")
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), StatusCode::OK);
    let samples = parse_exposition(&scraped.text().await.unwrap());
    assert!(metric(&samples, "coffer_queue_wait_seconds_count", &[]).unwrap() >= 1.0);
    assert!(metric(&samples, "coffer_queue_depth", &[]).is_some());
    // Another process committed the rows: this one reads them back.
    let loaded = |from| {
        metric(
            &samples,
            "coffer_queue_rows_loaded_total",
            &[("from", from)],
        )
    };
    assert_eq!(loaded("handoff"), Some(0.0));
    assert!(loaded("database").unwrap() >= 50.0);

    worker.terminate();
    assert!(
        worker.exited(Duration::from_secs(30)).await,
        "the worker exits successfully on SIGTERM"
    );
    assert!(worker.logged("shutting down gracefully"));
    assert!(worker.logged("coffer workers stopped"));

    // Nothing was acknowledged without its commit: every transfer without an applied child
    // still has its entry in the streams.
    let applied = applied_children(&app, &run).await;
    assert!(
        applied.len() < total,
        "stopped before the end: test the interesting case"
    );
    if std::env::var("TEST_LOG").is_ok() {
        println!(
            "{} of {total} applied when the worker stopped",
            applied.len()
        );
    }
    let parents = queued_parents(&app, &run).await;
    assert_eq!(parents.len(), total);
    let waiting: HashSet<String> = stream_entries(&prefix, 4)
        .await
        .into_iter()
        .filter_map(|id| parents.get(&id).cloned())
        .collect();
    let acknowledged_without_commit: Vec<&String> = parents
        .values()
        .filter(|reference| !applied.contains(*reference) && !waiting.contains(*reference))
        .collect();
    assert!(
        acknowledged_without_commit.is_empty(),
        "acknowledged but not committed: {acknowledged_without_commit:?}"
    );

    // A new worker finishes the rest, each exactly once.
    let _worker = Process::start("workers", &environment, "coffer workers running");
    wait_for(
        Duration::from_secs(60),
        "every transfer applied",
        || async { (applied_children(app_ref, run_ref).await.len() == total).then_some(()) },
    )
    .await;
    app.assert_invariants().await;
}

#[actix_web::test]
async fn the_server_stops_gracefully_on_sigterm_and_keeps_what_it_acknowledged() {
    let database_url = fresh_postgres_database().await;
    let prefix = format!("test:{}:", crate::helpers::unique_name());
    let mut environment = environment(&database_url, &prefix);
    environment.retain(|(k, _)| *k != "COFFER_START_WORKERS");
    environment.push(("COFFER_START_WORKERS", "true".into()));
    let mut server = Process::start("start", &environment, "coffer listening");
    let app = server.app();
    let balances = app.balances("USD", 3).await;
    app.fund(&balances[0], "USD", 1_000_000).await;

    let acknowledged: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
    let senders: Vec<_> = (0..6)
        .map(|sender| {
            let (acknowledged, balances) = (acknowledged.clone(), balances.clone());
            let app = TestApp::at(app.address.clone());
            actix_web::rt::spawn(async move {
                for i in 0..5_000 {
                    let skip_queue = (sender + i) % 2 == 0;
                    let body = app.transfer(&balances[0], &balances[1 + i % 2], 1, skip_queue);
                    let reference = body["reference"].as_str().unwrap().to_owned();
                    match app
                        .client
                        .post(format!("{}/transactions", app.address))
                        .json(&body)
                        .send()
                        .await
                    {
                        Ok(r) if r.status() == StatusCode::CREATED => {
                            acknowledged.lock().unwrap().push((reference, skip_queue))
                        }
                        Ok(r) => panic!("unexpected status {}", r.status()),
                        Err(_) => return, // the server has stopped
                    }
                }
            })
        })
        .collect();
    wait_for(Duration::from_secs(60), "traffic", || async {
        (acknowledged.lock().unwrap().len() >= 200).then_some(())
    })
    .await;
    server.terminate();
    assert!(
        server.exited(Duration::from_secs(30)).await,
        "the server exits successfully on SIGTERM"
    );
    futures_util::future::join_all(senders).await;
    assert!(server.logged("shutting down gracefully"));
    assert!(server.logged("coffer stopped"));

    let restarted = Process::start("start", &environment, "coffer listening");
    let app = restarted.app();
    let acknowledged = acknowledged.lock().unwrap().clone();
    for (reference, skip_queue) in acknowledged {
        if skip_queue {
            let reply = app
                .get(&format!("/transactions/reference/{reference}"))
                .await;
            assert_eq!(reply.json["status"], "APPLIED", "{reference}");
        } else {
            assert_eq!(app.queued_outcome(&reference).await["status"], "APPLIED");
        }
    }
    app.assert_invariants().await;
}

/// Rows of this run matching `reference like <pattern>` and `status`, 100 a page.
async fn rows(app: &TestApp, pattern: &str, status: &str) -> Vec<Value> {
    let mut rows = Vec::new();
    loop {
        let reply = app
            .post(
                "/transactions/filter",
                json!({
                    "filters": [
                        { "field": "reference", "operator": "like", "value": pattern },
                        { "field": "status", "operator": "eq", "value": status },
                    ],
                    "limit": 100, "offset": rows.len(),
                    "sort_by": "created_at", "sort_order": "asc",
                }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let page = reply.json.as_array().unwrap().clone();
        let done = page.len() < 100;
        rows.extend(page);
        if done {
            return rows;
        }
    }
}

/// References (without `_q`) of the APPLIED children of this run's transfers.
async fn applied_children(app: &TestApp, run: &str) -> HashSet<String> {
    rows(app, &format!("{run}-%_q"), "APPLIED")
        .await
        .iter()
        .map(|row| {
            let reference = row["reference"].as_str().unwrap();
            reference.trim_end_matches("_q").to_owned()
        })
        .collect()
}

/// transaction id → reference of this run's QUEUED rows.
async fn queued_parents(app: &TestApp, run: &str) -> HashMap<String, String> {
    rows(app, &format!("{run}-%"), "QUEUED")
        .await
        .iter()
        .map(|row| {
            (
                row["transaction_id"].as_str().unwrap().to_owned(),
                row["reference"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The transaction ids whose entries are still in the streams (waiting or unacknowledged).
async fn stream_entries(prefix: &str, shards: u32) -> Vec<String> {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let mut ids = Vec::new();
    for shard in 0..shards {
        let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(format!("{prefix}coffer:transactions:{shard}"))
            .arg("-")
            .arg("+")
            .query_async(&mut connection)
            .await
            .unwrap();
        ids.extend(
            entries
                .ids
                .iter()
                .filter_map(|entry| entry.get::<String>("transaction_id")),
        );
    }
    ids
}
