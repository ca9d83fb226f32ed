//! Real `coffer` processes: two servers on one PostgreSQL database cannot overdraw a balance
//! or lose an update, and a server killed with SIGKILL mid-traffic loses nothing it
//! acknowledged.

use crate::helpers::{fresh_postgres_database, redis_url, wait_for, Reply, TestApp};
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One `coffer start` process and a client for it.
struct ServerProcess {
    child: Child,
    app: TestApp,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Environment shared by the processes of one test: one database, one Redis prefix.
pub(crate) fn environment(database_url: &str, prefix: &str) -> Vec<(&'static str, String)> {
    vec![
        ("BLNK_DATA_SOURCE_DNS", database_url.to_owned()),
        ("BLNK_REDIS_DNS", redis_url()),
        ("BLNK_SERVER_PORT", "0".into()),
        ("BLNK_QUEUE_NUMBER_OF_QUEUES", "4".into()),
        ("COFFER_HOST", "127.0.0.1".into()),
        ("COFFER_REDIS_KEY_PREFIX", prefix.to_owned()),
        ("COFFER_START_WORKERS", "true".into()),
        ("COFFER_RECOVERY_AGE_MS", "500".into()),
        ("COFFER_RECOVERY_INTERVAL_MS", "300".into()),
        ("COFFER_CLAIM_IDLE_MS", "1000".into()),
        ("COFFER_BALANCE_ARBITERS", "1".into()),
        ("RUST_LOG", "info".into()),
    ]
}

/// Starts the binary and waits for its "coffer listening port=N" line.
fn start(environment: &[(&'static str, String)]) -> ServerProcess {
    let (child, port) = spawn_coffer("start", environment, "coffer listening port=");
    let app = TestApp::at(format!("http://127.0.0.1:{port}"));
    ServerProcess { child, app }
}

/// Starts `coffer <command>` and waits for the log line with `marker` followed by the port
/// it listens on ("coffer listening port=", "coffer workers running port=").
pub(crate) fn spawn_coffer(
    command: &str,
    environment: &[(&'static str, String)],
    marker: &'static str,
) -> (Child, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .arg(command)
        .env_remove("COFFER_CONFIG")
        .envs(environment.iter().map(|(k, v)| (*k, v.as_str())))
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("coffer binary starts");
    let stdout = child.stdout.take().unwrap();
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut port_tx = Some(port_tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let (Some(tx), Some(at)) = (&port_tx, line.find(marker)) {
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
        }
    });
    let port = port_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("coffer reports its port");
    (child, port)
}

async fn transfer_all(apps: &[&TestApp], bodies: Vec<serde_json::Value>) -> Vec<Reply> {
    join_all(
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| apps[i % apps.len()].post("/transactions", body)),
    )
    .await
}

#[actix_web::test]
async fn two_servers_on_one_database_never_overdraw_or_lose_an_update() {
    let database_url = fresh_postgres_database().await;
    let environment = environment(
        &database_url,
        &format!("test:{}:", crate::helpers::unique_name()),
    );
    let first = start(&environment);
    let second = start(&environment);
    let (a, b) = (&first.app, &second.app);
    let balances = a.balances("USD", 3).await;
    let (source, hot, other) = (&balances[0], &balances[1], &balances[2]);

    // Both paths, both servers: 1,000 funds exactly 100 transfers of 10.
    for skip_queue in [true, false] {
        a.fund(source, "USD", 1_000).await;
        let prefix = format!("two-{}-", uuid::Uuid::new_v4().simple());
        let bodies: Vec<_> = (0..200)
            .map(|i| {
                let mut body = a.transfer(source, hot, 10, skip_queue);
                body["reference"] = json!(format!("{prefix}{i}"));
                body
            })
            .collect();
        let replies = transfer_all(&[a, b], bodies).await;
        if skip_queue {
            let applied = replies
                .iter()
                .filter(|r| r.status == StatusCode::CREATED)
                .count();
            assert_eq!(applied, 100, "exactly the funded transfers are applied");
        } else {
            assert!(replies.iter().all(|r| r.status == StatusCode::CREATED));
            let filter = json!({
                "filters": [{ "field": "reference", "operator": "like", "value": format!("{prefix}%_q") }],
                "include_count": true, "limit": 1,
            });
            wait_for(
                Duration::from_secs(60),
                "queued transfers on both servers",
                || async {
                    let reply = a.post("/transactions/filter", filter.clone()).await;
                    (reply.json["total_count"] == 200).then_some(())
                },
            )
            .await;
        }
        assert_eq!(a.amount(source).await, 0, "never overdrawn");
    }
    // Bulk requests large enough to be written rows first and confirmed by guarded balance
    // updates (no locking read): eight atomic ones of 120 race on both servers for a source
    // that funds exactly three.
    a.fund(source, "USD", 3 * 120).await;
    let bulks = (0..8).map(|i| {
        let transactions: Vec<_> = (0..120)
            .map(|j| a.transfer(source, if j % 2 == 0 { hot } else { other }, 1, true))
            .collect();
        let body = json!({ "transactions": transactions, "atomic": true, "skip_queue": true });
        [a, b][i % 2].post("/transactions/bulk", body)
    });
    let replies = join_all(bulks).await;
    let applied = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .count();
    assert_eq!(applied, 3, "exactly the funded bulk requests are applied");
    assert_eq!(b.amount(source).await, 0, "never overdrawn");
    assert_eq!(a.amount(hot).await + a.amount(other).await, 2_000 + 3 * 120);
    // Credits from both servers into one balance: none is lost.
    for source in [source, other] {
        a.fund(source, "USD", 1_000).await;
    }
    let bodies: Vec<_> = (0..200)
        .map(|i| a.transfer(if i % 2 == 0 { source } else { other }, hot, 10, true))
        .collect();
    let replies = transfer_all(&[a, b], bodies).await;
    assert!(replies.iter().all(|r| r.status == StatusCode::CREATED));
    assert_eq!(b.amount(hot).await, 2_000 + 180 + 2_000);
    a.assert_invariants().await;
}

#[actix_web::test]
async fn a_server_killed_mid_traffic_keeps_every_acknowledged_transfer_exactly_once() {
    let database_url = fresh_postgres_database().await;
    let environment = environment(
        &database_url,
        &format!("test:{}:", crate::helpers::unique_name()),
    );
    let mut server = start(&environment);
    let balances = server.app.balances("USD", 6).await;
    server.app.fund(&balances[0], "USD", 1_000_000).await;

    // Eight senders, each alternating the two paths, until the server dies.
    let acknowledged: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
    let address = server.app.address.clone();
    let senders: Vec<_> = (0..8)
        .map(|sender| {
            let acknowledged = acknowledged.clone();
            let (address, balances) = (address.clone(), balances.clone());
            actix_web::rt::spawn(async move {
                let app = TestApp::at(address);
                for i in 0..2_000 {
                    let skip_queue = i % 2 == 0;
                    let destination = &balances[1 + (sender + i) % 5];
                    let body =
                        app.transfer(&balances[0], destination, 1 + (i % 7) as i64, skip_queue);
                    let reference = body["reference"].as_str().unwrap().to_owned();
                    let response = app
                        .client
                        .post(format!("{}/transactions", app.address))
                        .json(&body)
                        .send()
                        .await;
                    match response {
                        Ok(r) if r.status() == StatusCode::CREATED => {
                            acknowledged.lock().unwrap().push((reference, skip_queue))
                        }
                        Ok(r) => panic!("unexpected status {}", r.status()),
                        Err(_) => return, // the server is gone
                    }
                }
            })
        })
        .collect();
    wait_for(
        Duration::from_secs(60),
        "some acknowledged transfers",
        || async { (acknowledged.lock().unwrap().len() >= 300).then_some(()) },
    )
    .await;
    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();
    join_all(senders).await;
    let acknowledged = acknowledged.lock().unwrap().clone();

    let restarted = start(&environment);
    let app = &restarted.app;
    for (reference, skip_queue) in &acknowledged {
        if *skip_queue {
            let reply = app
                .get(&format!("/transactions/reference/{reference}"))
                .await;
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "acknowledged {reference} survived"
            );
            assert_eq!(reply.json["status"], "APPLIED");
        } else {
            let child = app.queued_outcome(reference).await;
            assert_eq!(
                child["status"], "APPLIED",
                "acknowledged {reference} was applied"
            );
        }
    }
    app.assert_invariants().await;
}

#[actix_web::test]
async fn the_migrate_command_applies_lists_and_reverts_the_schema() {
    let database_url = fresh_postgres_database().await;
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_coffer"))
            .args(args)
            .env_remove("COFFER_CONFIG")
            .env("BLNK_DATA_SOURCE_DNS", &database_url)
            .env("RUST_LOG", "warn")
            .output()
            .expect("coffer runs");
        assert!(
            output.status.success(),
            "coffer {args:?} failed: {output:?}"
        );
        String::from_utf8(output.stdout).unwrap()
    };
    assert!(run(&["migrate", "status"]).contains("pending m20261126_000001_create_ledger_tables"));
    run(&["migrate", "up"]);
    assert!(run(&["migrate", "status"]).contains("applied m20261126_000001_create_ledger_tables"));
    run(&["migrate", "down"]);
    assert!(run(&["migrate", "status"]).contains("pending"));
}

#[actix_web::test]
async fn scheduled_transfers_and_expiring_holds_survive_a_restart() {
    let database_url = fresh_postgres_database().await;
    let mut environment = environment(
        &database_url,
        &format!("test:{}:", crate::helpers::unique_name()),
    );
    environment.push(("COFFER_DUE_CHECK_MS", "100".into()));
    let mut server = start(&environment);
    let app = &server.app;
    let balances = app.balances("USD", 2).await;
    app.fund(&balances[0], "USD", 1_000).await;
    let due = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let mut scheduled = app.transfer(&balances[0], &balances[1], 100, false);
    scheduled["scheduled_for"] = json!(due);
    let reference = scheduled["reference"].as_str().unwrap().to_owned();
    let reply = app.post("/transactions", scheduled).await;
    assert_eq!(reply.json["status"], "SCHEDULED", "{}", reply.text);
    let mut hold = app.transfer(&balances[0], &balances[1], 300, true);
    hold["inflight"] = json!(true);
    hold["inflight_expiry_date"] = json!(due);
    let hold = app.post("/transactions", hold).await;
    assert_eq!(hold.json["status"], "INFLIGHT", "{}", hold.text);
    assert_eq!(
        app.balance(&balances[0]).await["inflight_debit_balance"],
        300
    );

    // Down before anything is due; up again.
    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();
    let restarted = start(&environment);
    let app = &restarted.app;
    let child = app.queued_outcome(&reference).await;
    assert_eq!(child["status"], "APPLIED");
    wait_for(Duration::from_secs(30), "the hold to expire", || async {
        let balance = app.balance(&balances[0]).await;
        (balance["inflight_debit_balance"] == 0).then_some(())
    })
    .await;
    assert_eq!(app.amount(&balances[0]).await, 900);
    assert_eq!(app.amount(&balances[1]).await, 100);
    app.assert_invariants().await;
}
