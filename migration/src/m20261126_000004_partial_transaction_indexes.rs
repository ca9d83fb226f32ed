use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Narrows two indexes of `transactions` to the rows that are looked up through them, so most
/// inserted rows skip them (every index entry is work in the group commit):
/// - by parent: only rows that have one (children of queued, split, bulk and inflight
///   parents); a lookup `parent_transaction = x` implies `IS NOT NULL`, so it still applies;
/// - by status and time: only QUEUED and SCHEDULED rows, the ones the recovery and schedule
///   sweeps look for (an APPLIED row, the common case, never enters it). The sweeps name the
///   status as a value; Coffer's PostgreSQL connections plan with the actual values
///   (a custom plan: PostgreSQL keeps planning them so while the generic plan, which cannot
///   use the partial index, costs more), so the planner can match the index predicate.
///   SQLite plans a bound value without looking at it, so there the index stays whole.
const UP: [&str; 2] = [
    "DROP INDEX IF EXISTS idx_transactions_parent",
    "CREATE INDEX idx_transactions_parent ON transactions (parent_transaction) \
     WHERE parent_transaction IS NOT NULL",
];

const UP_POSTGRES: [&str; 2] = [
    "DROP INDEX IF EXISTS idx_transactions_status_created",
    "CREATE INDEX idx_transactions_status_created ON transactions (status, created_at) \
     WHERE status IN ('QUEUED', 'SCHEDULED')",
];

const DOWN: [&str; 2] = [
    "DROP INDEX IF EXISTS idx_transactions_parent",
    "CREATE INDEX idx_transactions_parent ON transactions (parent_transaction)",
];

const DOWN_POSTGRES: [&str; 2] = [
    "DROP INDEX IF EXISTS idx_transactions_status_created",
    "CREATE INDEX idx_transactions_status_created ON transactions (status, created_at)",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_statements(manager, &UP, &UP_POSTGRES).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_statements(manager, &DOWN, &DOWN_POSTGRES).await
    }
}
