use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Drops the foreign key from `balances.ledger_id` to `ledgers` on PostgreSQL.
///
/// Every balance insert ran its referential check: a per-row trigger querying the ledger
/// row `FOR KEY SHARE`. A `fresh` workload inserts two balances per transfer, nearly all in
/// the one General Ledger, so concurrent group commits kept share-locking that single row
/// (PostgreSQL then builds a multixact for it): ~11% of PostgreSQL's CPU per transfer in
/// alternating runs (BENCHMARKS.md, round 8). The key guarded nothing the code does not:
/// a balance is created only after its ledger was read (`POST /balances` answers 400 for an
/// unknown ledger), indicator balances go to the General Ledger the first migration seeds,
/// and ledgers are never deleted. SQLite keeps its key (dropping one means rebuilding the
/// table there, and its check is a cheap local lookup).
const UP_POSTGRES: [&str; 1] =
    ["ALTER TABLE balances DROP CONSTRAINT IF EXISTS balances_ledger_id_fkey"];

const DOWN_POSTGRES: [&str; 1] = [
    "ALTER TABLE balances ADD CONSTRAINT balances_ledger_id_fkey \
                                   FOREIGN KEY (ledger_id) REFERENCES ledgers (ledger_id)",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_statements(manager, &[], &UP_POSTGRES).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_statements(manager, &[], &DOWN_POSTGRES).await
    }
}
