//! Coffer's schema, as `sea-orm-migration` migrations shared by PostgreSQL and SQLite.
//!
//! # Layout
//! - `m20261126_000001_create_ledger_tables`: ledgers, balances and transactions, with the
//!   seeded General Ledger (`general_ledger_id`).
//! - `m20261126_000002_create_inflight_holds`: the mutable state of inflight holds.
//! - `m20261126_000003_balances_fillfactor`: room in `balances` pages for in-place (HOT)
//!   updates (PostgreSQL only).
//! - `m20261126_000004_partial_transaction_indexes`: the parent and status indexes of
//!   `transactions` cover only the rows looked up through them.
//! - `m20261126_000005_byte_order_keys`: ids, references and indicators compare byte by byte
//!   (PostgreSQL only).
//! - `m20261126_000006_hold_sweep_indexes`: the hold sweeps read only the holds they act on
//!   (pending actions; due holds still inflight), not every hold ever made.
//! - `m20261126_000007_balances_without_ledger_fkey`: no per-row foreign-key check on
//!   balance inserts (PostgreSQL only; the code checks the ledger, ledgers are never deleted).
//! - `m20261202_000008_identities_accounts_monitors`: identities, accounts, balance monitors.
//! - `m20261202_000009_balance_history`: balance snapshots; the source and destination
//!   indexes of `transactions` ordered by effective time.
//! - `m20261202_000010_immutable_transactions`: transaction rows refuse updates (but of
//!   `meta_data`) and deletes.
//! - `m20261202_000011_api_keys`: API keys (hashed, found by prefix, listed by owner).
//! - `m20261203_000012_outbox_events`: the transactional outbox of events (webhooks).
//! - `m20261203_000013_outbox_sinks`: one outbox row per event and sink (webhook, search,
//!   monitors, each hook), each sink ordered and retried on its own.
//! - `m20261203_000014_transaction_hooks`: Blnk's transaction hooks (PRE/POST URLs).
//! - `m20261203_000016_search_reindex`: the search reindex's progress, shared by replicas.
//!
//! Money columns are `NUMERIC` on PostgreSQL and `TEXT` on SQLite: sea-orm decodes SQLite
//! decimals through `f64`, which corrupts large integers, so SQLite keeps the exact digits.
#![forbid(unsafe_code)]

pub use sea_orm_migration::prelude::*;

mod m20261126_000001_create_ledger_tables;
mod m20261126_000002_create_inflight_holds;
mod m20261126_000003_balances_fillfactor;
mod m20261126_000004_partial_transaction_indexes;
mod m20261126_000005_byte_order_keys;
mod m20261126_000006_hold_sweep_indexes;
mod m20261126_000007_balances_without_ledger_fkey;
mod m20261202_000008_identities_accounts_monitors;
mod m20261202_000009_balance_history;
mod m20261202_000010_immutable_transactions;
mod m20261202_000011_api_keys;
mod m20261203_000012_outbox_events;
mod m20261203_000013_outbox_sinks;
mod m20261203_000014_transaction_hooks;
mod m20261203_000015_monitor_states;
mod m20261203_000016_search_reindex;

pub struct Migrator;

/// Runs `all` on every backend, then `postgres_only` on PostgreSQL.
async fn execute_statements(
    manager: &SchemaManager<'_>,
    all: &[&str],
    postgres_only: &[&str],
) -> Result<(), DbErr> {
    let on_postgres =
        manager.get_database_backend() == sea_orm_migration::sea_orm::DbBackend::Postgres;
    for sql in all
        .iter()
        .chain(postgres_only.iter().filter(|_| on_postgres))
    {
        manager.get_connection().execute_unprepared(sql).await?;
    }
    Ok(())
}

fn on_postgres(manager: &SchemaManager<'_>) -> bool {
    manager.get_database_backend() == sea_orm_migration::sea_orm::DbBackend::Postgres
}

/// Runs SQL templates whose column types differ by backend: `{id}` (a key: byte-ordered
/// text on PostgreSQL, see migration 5), `{money}` (exact integers: `NUMERIC`, or `TEXT` on
/// SQLite), `{time}` and `{json}` (the types sea-query gives the existing tables).
async fn execute_templates(manager: &SchemaManager<'_>, templates: &[&str]) -> Result<(), DbErr> {
    let types: [(&str, &str); 4] = if on_postgres(manager) {
        [
            ("{id}", "TEXT COLLATE \"C\""),
            ("{money}", "NUMERIC"),
            ("{time}", "TIMESTAMPTZ"),
            ("{json}", "JSONB"),
        ]
    } else {
        [
            ("{id}", "TEXT"),
            ("{money}", "TEXT"),
            ("{time}", "timestamp_with_timezone_text"),
            ("{json}", "jsonb_text"),
        ]
    };
    for template in templates {
        let sql = types
            .iter()
            .fold((*template).to_owned(), |sql, (name, ty)| {
                sql.replace(name, ty)
            });
        manager.get_connection().execute_unprepared(&sql).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261126_000001_create_ledger_tables::Migration),
            Box::new(m20261126_000002_create_inflight_holds::Migration),
            Box::new(m20261126_000003_balances_fillfactor::Migration),
            Box::new(m20261126_000004_partial_transaction_indexes::Migration),
            Box::new(m20261126_000005_byte_order_keys::Migration),
            Box::new(m20261126_000006_hold_sweep_indexes::Migration),
            Box::new(m20261126_000007_balances_without_ledger_fkey::Migration),
            Box::new(m20261202_000008_identities_accounts_monitors::Migration),
            Box::new(m20261202_000009_balance_history::Migration),
            Box::new(m20261202_000010_immutable_transactions::Migration),
            Box::new(m20261202_000011_api_keys::Migration),
            Box::new(m20261203_000012_outbox_events::Migration),
            Box::new(m20261203_000013_outbox_sinks::Migration),
            Box::new(m20261203_000014_transaction_hooks::Migration),
            Box::new(m20261203_000015_monitor_states::Migration),
            Box::new(m20261203_000016_search_reindex::Migration),
        ]
    }
}
