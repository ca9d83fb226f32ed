use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Balance history: snapshots, and the indexes that read a balance's transactions in time.
///
/// - `balance_snapshots`: a balance's credit and debit totals as of `snapshot_time` (every
///   APPLIED transaction whose effective time, `COALESCE(effective_date, created_at)`, is at
///   or before it). A past balance is the nearest snapshot plus (or minus) the transactions
///   between it and the time asked for (`store::history`).
/// - The source and destination indexes of `transactions` become `(balance, effective time)`:
///   lookups by balance alone still use them (leading column), and a balance's transactions
///   in a time range are one index range each. Replaced rather than added, so the group
///   commit keeps inserting into the same number of indexes.
const UP: [&str; 5] = [
    "CREATE TABLE balance_snapshots (
        balance_id {id} NOT NULL,
        snapshot_time {time} NOT NULL,
        credit_balance {money} NOT NULL,
        debit_balance {money} NOT NULL,
        balance {money} NOT NULL,
        created_at {time} NOT NULL,
        PRIMARY KEY (balance_id, snapshot_time)
    )",
    "CREATE INDEX idx_transactions_source_time ON transactions \
     (source, (COALESCE(effective_date, created_at)))",
    "DROP INDEX IF EXISTS idx_transactions_source",
    "CREATE INDEX idx_transactions_destination_time ON transactions \
     (destination, (COALESCE(effective_date, created_at)))",
    "DROP INDEX IF EXISTS idx_transactions_destination",
];

const DOWN: [&str; 5] = [
    "CREATE INDEX idx_transactions_destination ON transactions (destination)",
    "DROP INDEX IF EXISTS idx_transactions_destination_time",
    "CREATE INDEX idx_transactions_source ON transactions (source)",
    "DROP INDEX IF EXISTS idx_transactions_source_time",
    "DROP TABLE IF EXISTS balance_snapshots",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_templates(manager, &UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_templates(manager, &DOWN).await
    }
}
