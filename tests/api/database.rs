//! The store's own connection to PostgreSQL: the `TCP_NODELAY` relay (see
//! `coffer_actors::store::relay` for why it exists), and the plans its statements get.

use crate::helpers::{fresh_postgres_database, spawn_app, wait_for, Backend};
use coffer_actors::store::{PoolSettings, Store};
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn settings(relay: bool) -> PoolSettings {
    PoolSettings {
        connections_max: 2,
        acquire_timeout_ms: 2_000,
        tcp_nodelay_relay: relay,
        ..PoolSettings::default()
    }
}

#[tokio::test]
async fn postgres_connections_go_through_the_nodelay_relay() {
    let url = fresh_postgres_database().await;
    let store = Store::connect(&url, &settings(true), true)
        .await
        .expect("store opens through the relay");
    store.ping(5_000).await.expect("queries pass the relay");
    let stats = store.relay_stats().expect("a TCP URL uses the relay");
    assert!(stats.connections_nodelay.load(Ordering::Relaxed) >= 1);
    assert_eq!(stats.connections_failed.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn the_relay_can_be_turned_off() {
    let url = fresh_postgres_database().await;
    let store = Store::connect(&url, &settings(false), true)
        .await
        .expect("store opens directly");
    store
        .ping(5_000)
        .await
        .expect("queries work without the relay");
    assert!(store.relay_stats().is_none());
}

#[tokio::test]
async fn an_unreachable_server_behind_the_relay_is_an_error_not_a_hang() {
    // Port 1 on loopback: nothing listens, so every relayed connection is refused.
    let result = Store::connect(
        "postgres://postgres@127.0.0.1:1/nothing",
        &settings(true),
        false,
    )
    .await;
    assert!(result.is_err(), "connecting must fail");
}

#[tokio::test]
async fn relay_directories_of_dead_processes_are_removed() {
    // A process killed before its store was dropped leaves its relay directory behind; the
    // next store to start removes it (no process has this pid: it is above Linux's maximum).
    let orphan = std::env::temp_dir().join("coffer-pg-999999999-0");
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::write(orphan.join(".s.PGSQL.5432"), b"").unwrap();
    let url = fresh_postgres_database().await;
    let store = Store::connect(&url, &settings(true), true)
        .await
        .expect("store opens through the relay");
    assert!(!orphan.exists(), "the orphaned relay directory is removed");
    store.ping(5_000).await.expect("queries pass the relay");
}

/// `(sequential scans, index scans)` PostgreSQL has counted on each of `balances`,
/// `transactions` and `inflight_holds`.
async fn scans(db: &DatabaseConnection) -> [(i64, i64); 3] {
    // Statistics are read as of a snapshot taken on first access in a transaction.
    db.execute_unprepared("SELECT pg_stat_clear_snapshot()")
        .await
        .unwrap();
    let mut counts = [(0, 0); 3];
    for (count, table) in counts
        .iter_mut()
        .zip(["balances", "transactions", "inflight_holds"])
    {
        let row = db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT seq_scan, COALESCE(idx_scan, 0) AS idx_scan FROM pg_stat_user_tables \
             WHERE relname = $1",
                [table.into()],
            ))
            .await
            .unwrap()
            .unwrap();
        *count = (
            row.try_get("", "seq_scan").unwrap(),
            row.try_get("", "idx_scan").unwrap(),
        );
    }
    counts
}

/// PostgreSQL caches a generic plan per statement. Built after the tables were analyzed
/// while nearly empty, the group commit's lookups (a thousand keys at once) would become a
/// pass over the whole table on every later batch, however large the table grew. Coffer's
/// connections leave the planner no choice but index probes: after an ANALYZE of the tiny
/// tables, transfers (each a reference check, a balance lock, an update and an insert, more
/// often than PostgreSQL needs to switch to its cached plan) never scan a table, nor do the
/// background sweeps (queued rows, due and pending hold actions) that run meanwhile.
#[actix_web::test]
async fn lookups_stay_index_probes_after_the_tables_were_analyzed_small() {
    let started = Instant::now();
    let app = spawn_app(Backend::Postgres).await;
    let ids = app.balances("USD", 2).await;
    app.fund(&ids[0], "USD", 1_000).await;
    let admin = Database::connect(app.database_url()).await.unwrap();
    admin
        .execute_unprepared("ANALYZE balances, transactions, inflight_holds")
        .await
        .unwrap();
    // Sessions report their counts when idle, within ~10 s; the migrations' index builds
    // count as scans. The baseline is taken once the counts of scans rest for 11 s.
    let mut before = scans(&admin).await;
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_secs(11) {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "scan counts never settled"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = scans(&admin).await;
        if now.map(|(seq, _)| seq) != before.map(|(seq, _)| seq) {
            since = Instant::now();
        }
        before = now;
    }

    const TRANSFERS: i64 = 20;
    for _ in 0..TRANSFERS {
        let reply = app
            .post("/transactions", app.transfer(&ids[0], &ids[1], 1, true))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    }
    // Once the transfers' index probes are counted, a scan of theirs would be counted too.
    let after = wait_for(
        Duration::from_secs(60),
        "the transfers' index probes to be counted",
        || async {
            let now = scans(&admin).await;
            (now[0].1 >= before[0].1 + TRANSFERS && now[1].1 >= before[1].1 + TRANSFERS)
                .then_some(now)
        },
    )
    .await;
    assert_eq!(
        after.map(|(seq, _)| seq),
        before.map(|(seq, _)| seq),
        "sequential scans of balances, transactions and inflight_holds \
         (before: {before:?}, after: {after:?})"
    );
    assert_eq!(app.amount(&ids[1]).await, TRANSFERS);
}
