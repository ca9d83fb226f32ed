//! The store's own connection to PostgreSQL: the `TCP_NODELAY` relay (see
//! `coffer_actors::store::relay` for why it exists).

use crate::helpers::fresh_postgres_database;
use coffer_actors::store::{PoolSettings, Store};
use std::sync::atomic::Ordering;

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
