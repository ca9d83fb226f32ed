//! The bench tool's own correctness check, against a real server started in-process on port 0:
//! short runs pass it with consistent counts, and it fails when the data does not match.
//! No figure is asserted here (figures come from `coffer bench` only).

use coffer::bench::{self, Http, Options, Plan, Scenario, ScenarioReport, Status};
use coffer::configuration::Settings;
use coffer::startup::Application;
use serde_json::json;
use std::time::Duration;

// The API tests' helpers (fresh databases, key prefixes, temp dirs); this binary uses a few.
#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;
use helpers::{fresh_postgres_database, redis_url, temp_dir, unique_name};

/// Fast queue recovery, as in the API tests: a queued transfer whose first apply failed (e.g.
/// SQLite's "database is locked" under concurrent writers) is retried within about 2.5 s,
/// well inside the tool's 5 s wait for a count that stopped growing. With the defaults the
/// retry can take a minute, and the check rightly reports those transfers as unprocessed.
fn fast_recovery(settings: Settings) -> Settings {
    Settings {
        recovery_interval_ms: 500,
        recovery_age_ms: 2_000,
        claim_idle_ms: 2_000,
        ..settings
    }
}

/// The embedded default (SQLite file, in-process queue) on port 0; returns its base URL.
async fn spawn_sqlite() -> String {
    spawn(fast_recovery(Settings {
        host: "127.0.0.1".into(),
        port: 0,
        data_dir: temp_dir(),
        ..Settings::default()
    }))
    .await
}

/// PostgreSQL (a fresh database) and Redis (its own key prefix), workers in the server.
async fn spawn_postgres() -> String {
    spawn(fast_recovery(Settings {
        host: "127.0.0.1".into(),
        port: 0,
        database_url: Some(fresh_postgres_database().await),
        redis_url: Some(redis_url()),
        redis_key_prefix: format!("bench-test:{}:", unique_name()),
        start_workers: true,
        data_dir: temp_dir(),
        ..Settings::default()
    }))
    .await
}

async fn spawn(settings: Settings) -> String {
    if std::env::var("TEST_LOG").is_ok() {
        coffer::telemetry::init("info");
    }
    let application = Application::build(settings)
        .await
        .expect("application builds");
    let address = format!("http://127.0.0.1:{}", application.port());
    actix_web::rt::spawn(application.run_until_stopped());
    address
}

/// A short, small run: about a second, a few clients, a dozen balances.
fn quick() -> Options {
    Options {
        duration: Duration::from_millis(1200),
        concurrency: 4,
        balances: Some(12),
        batch_size: 25,
        rate: None,
        max_requests: 5_000,
        amount_max: 100,
        drain: Duration::from_secs(30),
        progress: false,
        seed: 7,
        meta_data: None,
    }
}

fn plan(scenario: Scenario, skip_queue: bool) -> Plan {
    Plan {
        scenario,
        skip_queue,
    }
}

/// A report whose check passed, with counts that agree with each other.
fn assert_consistent(report: &ScenarioReport) {
    assert_eq!(report.status, Status::Passed, "{}", report.to_text());
    let check = report.check.as_ref().expect("a check");
    assert!(check.passed);
    assert_eq!(check.sum_balance, 0);
    assert_eq!(check.sum_inflight, 0);
    assert!(report.requests_ok > 0, "{}", report.to_text());
    assert!(report.transfers_accepted > 0);
    let errors: u64 = report.errors.values().sum();
    assert_eq!(report.requests_sent, report.requests_ok + errors);
    assert_eq!(report.latency.count, report.requests_ok);
    assert!(report.latency.p50_ms <= report.latency.p99_ms);
    assert!(report.latency.p99_ms <= report.latency.max_ms);
    // Everything accepted was applied (nothing here can be refused for funds) and the server's
    // own count, read back, says so.
    assert_eq!(check.counts.pending, 0);
    assert_eq!(check.counts.unresolved, 0);
    assert_eq!(check.counts.rejected_read_back, 0);
    assert_eq!(
        check.counts.applied_read_back,
        check.counts.expected_applied
    );
    assert_eq!(report.transfers_applied, report.transfers_accepted);
    assert!(report.transfers_applied_per_sec > 0.0);
    // Every balance of the run was compared: its balances, and its funding source if any.
    let funded = report.settings.balances as u64 + u64::from(report.settings.balances > 0);
    assert!(check.balances_checked >= funded);
    // The JSON form carries the same figures.
    let value = serde_json::to_value(report).unwrap();
    assert_eq!(value["check"]["passed"], true);
    assert_eq!(value["transfers_applied"], report.transfers_applied);
    assert_eq!(value["status"], "passed");
}

#[actix_web::test]
async fn uniform_passes_its_check_on_both_queue_paths() {
    let http = Http::new(&spawn_sqlite().await, 16).unwrap();
    let report = bench::run_scenario(&http, plan(Scenario::Uniform, true), quick()).await;
    assert_consistent(&report);
    assert!(report.backlog.is_none());

    let report = bench::run_scenario(&http, plan(Scenario::Uniform, false), quick()).await;
    assert_consistent(&report);
    let backlog = report
        .backlog
        .as_ref()
        .expect("queued runs report the backlog");
    assert!(backlog.max >= backlog.at_end);
}

#[actix_web::test]
async fn hot_scenarios_pass_their_check() {
    let http = Http::new(&spawn_sqlite().await, 16).unwrap();
    for scenario in [
        Scenario::HotSource,
        Scenario::HotDestination,
        Scenario::HotPair,
    ] {
        let report = bench::run_scenario(&http, plan(scenario, true), quick()).await;
        assert_consistent(&report);
    }
}

#[actix_web::test]
async fn fresh_queued_passes_its_check() {
    let http = Http::new(&spawn_sqlite().await, 16).unwrap();
    let report = bench::run_scenario(&http, plan(Scenario::Fresh, false), quick()).await;
    assert_consistent(&report);
    // Two new @indicator balances per accepted transfer, all found and checked.
    let check = report.check.as_ref().unwrap();
    assert!(check.balances_checked >= 2 * report.transfers_accepted);
}

#[actix_web::test]
async fn uniform_queued_passes_its_check_on_postgres() {
    let http = Http::new(&spawn_postgres().await, 16).unwrap();
    let report = bench::run_scenario(&http, plan(Scenario::Uniform, false), quick()).await;
    assert_consistent(&report);
    let report = bench::run_scenario(&http, plan(Scenario::HotSource, true), quick()).await;
    assert_consistent(&report);
}

/// Prepares, drives and settles a short uniform run whose check passes.
async fn settled_run(http: &Http) -> bench::Prepared {
    let mut prepared = bench::prepare(http, plan(Scenario::Uniform, true), quick())
        .await
        .unwrap_or_else(|e| panic!("setup: {e}"));
    prepared.drive().await.unwrap();
    prepared.settle().await.unwrap();
    let check = prepared.check().await;
    assert!(check.passed, "{:?}", check.failures);
    prepared
}

async fn transfer(http: &Http, source: &str, destination: &str, amount: u64) {
    let reply = http
        .post(
            "/transactions",
            &json!({
                "precise_amount": amount, "currency": "USD",
                "reference": format!("outside-{}", uuid::Uuid::new_v4()), "description": "behind the tool's back",
                "source": source, "destination": destination,
                "skip_queue": true, "allow_overdraft": true,
            }),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 201, "{:?}", reply.json);
}

#[actix_web::test]
async fn check_fails_when_money_moves_behind_the_tools_back() {
    let http = Http::new(&spawn_sqlite().await, 16).unwrap();
    let prepared = settled_run(&http).await;
    let ids = prepared.balance_ids().to_vec();

    // Between two of the run's balances: both differ, the sum still holds.
    transfer(&http, &ids[0], &ids[1], 7).await;
    let check = prepared.check().await;
    assert!(!check.passed);
    assert_eq!(check.mismatch_count, 2);
    let named: Vec<&str> = check
        .mismatches
        .iter()
        .map(|m| m.balance.as_str())
        .collect();
    assert!(named.contains(&ids[0].as_str()) && named.contains(&ids[1].as_str()));
    let moved = check
        .mismatches
        .iter()
        .find(|m| m.balance == ids[1])
        .unwrap();
    assert_eq!(moved.actual.unwrap().balance - moved.expected.balance, 7);
    assert_eq!(check.sum_balance, 0);

    // Out of the run: the sum no longer holds either.
    transfer(&http, &ids[2], "@Elsewhere", 5).await;
    let check = prepared.check().await;
    assert!(!check.passed);
    assert_eq!(check.mismatch_count, 3);
    assert_eq!(check.sum_balance, -5);
    assert!(check.failures.iter().any(|f| f.contains("sum to zero")));
}

#[actix_web::test]
async fn check_fails_on_a_tampered_expectation() {
    let http = Http::new(&spawn_sqlite().await, 16).unwrap();
    let prepared = settled_run(&http).await;
    let honest = prepared.expectation();
    assert!(prepared.check_against(&honest).await.passed);

    // One unit more on one balance than the transfers imply.
    let mut tampered = honest.clone();
    let id = prepared.balance_ids()[3].clone();
    tampered.balances.get_mut(&id).unwrap().balance += 1;
    let check = prepared.check_against(&tampered).await;
    assert!(!check.passed);
    assert_eq!(check.mismatch_count, 1);
    assert_eq!(check.mismatches[0].balance, id);
    assert_eq!(check.sum_balance, 0, "the server's data still sums to zero");

    // A balance the tool expects that the server does not have.
    let mut tampered = honest.clone();
    tampered.apply("bln_not_there", &id, 1);
    let check = prepared.check_against(&tampered).await;
    assert!(!check.passed);
    assert!(check
        .mismatches
        .iter()
        .any(|m| m.balance == "bln_not_there" && m.actual.is_none()));

    // An expected hold that the server never recorded.
    let mut tampered = honest;
    let other = prepared.balance_ids()[4].clone();
    tampered.hold(&id, &other, 3);
    assert!(!prepared.check_against(&tampered).await.passed);
}

#[actix_web::test]
async fn bulk_and_inflight_pass_their_check() {
    let http = Http::new(&spawn_sqlite().await, 16).unwrap();
    for scenario in [Scenario::Bulk, Scenario::Inflight] {
        let report = bench::run_scenario(&http, plan(scenario, true), quick()).await;
        assert_consistent(&report);
    }
    let report = bench::run_scenario(&http, plan(Scenario::Bulk, true), quick()).await;
    // Every request carries `batch_size` transfers.
    assert_eq!(report.transfers_accepted, report.requests_ok * 25);
    let report = bench::run_scenario(&http, plan(Scenario::Inflight, true), quick()).await;
    // A hold and its commit per transfer.
    assert_eq!(report.requests_ok, 2 * report.transfers_accepted);
}

/// A stand-in for a server without the lifecycle endpoints: ledgers, balances and plain
/// transfers work; `inflight: true` is refused as unsupported; any other route is a 404.
async fn spawn_server_without_lifecycle() -> String {
    use actix_web::{web, App, HttpResponse, HttpServer};
    async fn transfer(body: web::Json<serde_json::Value>) -> HttpResponse {
        if body["inflight"] == true {
            return HttpResponse::BadRequest().json(json!({
                "error": "inflight: not supported by this Coffer version yet.",
                "error_detail": { "code": "TXN_VALIDATION_ERROR" },
            }));
        }
        HttpResponse::Created().json(json!({ "status": "APPLIED" }))
    }
    let server = HttpServer::new(|| {
        App::new()
            .route(
                "/health",
                web::get().to(|| async { HttpResponse::Ok().json(json!({ "status": "UP" })) }),
            )
            .route(
                "/ledgers",
                web::post().to(|| async {
                    HttpResponse::Created().json(json!({ "ledger_id": "ldg_stub" }))
                }),
            )
            .route(
                "/balances",
                web::post().to(|| async {
                    HttpResponse::Created()
                        .json(json!({ "balance_id": format!("bln_{}", uuid::Uuid::new_v4()) }))
                }),
            )
            .route("/transactions", web::post().to(transfer))
            .default_service(web::to(|| async {
                HttpResponse::NotFound().json(json!({
                    "error": "route not found",
                    "error_detail": { "code": "GEN_NOT_FOUND" },
                }))
            }))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let address = format!("http://{}", server.addrs()[0]);
    actix_web::rt::spawn(server.run());
    address
}

#[actix_web::test]
async fn a_missing_lifecycle_endpoint_is_reported_not_timed() {
    let http = Http::new(&spawn_server_without_lifecycle().await, 16).unwrap();
    for (scenario, path) in [
        (
            Scenario::Bulk,
            "POST /transactions/bulk answered 404 GEN_NOT_FOUND",
        ),
        (
            Scenario::Inflight,
            "inflight: true answered 400 TXN_VALIDATION_ERROR",
        ),
    ] {
        let report = bench::run_scenario(&http, plan(scenario, true), quick()).await;
        assert_eq!(report.status, Status::Unavailable, "{}", report.to_text());
        let error = report.error.as_deref().unwrap_or_default();
        assert!(error.contains(path), "{error}");
        assert_eq!(report.requests_sent, 0, "nothing is timed");
        assert!(report.check.is_none());
        assert!(report.to_text().contains("UNAVAILABLE"));
        assert_eq!(
            serde_json::to_value(&report).unwrap()["status"],
            "unavailable"
        );
    }
}

#[actix_web::test]
async fn a_server_that_is_down_is_an_error_not_a_panic() {
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let http = Http::new(&format!("http://127.0.0.1:{port}"), 4).unwrap();
    let report = bench::run_scenario(&http, plan(Scenario::Uniform, true), quick()).await;
    assert_eq!(report.status, Status::Error);
    assert!(report.error.unwrap().contains("does not answer"));
}

#[test]
fn only_local_servers_are_driven() {
    assert!(Http::new("http://192.168.1.10:5001", 4).is_err());
    assert!(Http::new("http://example.com:5001", 4).is_err());
}

/// The history scenario reads past balances and checks every answer; a short run passes on
/// both backends, and its cost is measured (the server is this process, listening on the port).
#[actix_web::test]
async fn history_reads_pass_their_check_on_both_backends() {
    let shape = bench::history::HistoryShape {
        transactions_per_balance: 300,
        days: 3,
    };
    for url in [spawn_sqlite().await, spawn_postgres().await] {
        let http = Http::new(&url, 16).unwrap();
        let options = Options {
            balances: Some(4),
            ..quick()
        };
        let report = bench::history::run(&http, &options, shape).await;
        assert_eq!(report.status, Status::Passed, "{}", report.to_text());
        let check = report.check.as_ref().expect("a check");
        assert_eq!(check.mismatch_count, 0);
        assert_eq!(check.balances_checked, report.requests_ok);
        assert!(report.requests_ok > 0, "{}", report.to_text());
        let cost = report.cost.as_ref().expect("the cost of a local server");
        assert!(cost.server_pids.contains(&std::process::id()));
    }
}
