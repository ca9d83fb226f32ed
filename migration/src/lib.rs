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
        ]
    }
}
