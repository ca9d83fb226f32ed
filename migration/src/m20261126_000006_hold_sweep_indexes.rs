use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Indexes for the two sweeps over `inflight_holds`, which keeps every hold ever made, so
/// that each run reads only the holds it acts on:
/// - the holds with a commit or void in progress (`pending_action` set), finished after a
///   crash: a partial index of those few (both backends); before, every run read the table;
/// - the holds due to expire or auto-commit: the time indexes cover only holds still
///   inflight with no action pending (PostgreSQL), so committed and voided holds whose time
///   has passed are not read again every second. The sweep names the state as a value, and
///   PostgreSQL plans it with that value (the generic plan, unable to use a partial index,
///   costs more), so the predicate matches. SQLite plans a bound value without looking at
///   it, so there the time indexes stay whole.
const UP: [&str; 1] = ["CREATE INDEX IF NOT EXISTS idx_inflight_holds_pending \
                        ON inflight_holds (hold_id) WHERE pending_action IS NOT NULL"];

const UP_POSTGRES: [&str; 4] = [
    "DROP INDEX IF EXISTS idx_inflight_holds_expires",
    "CREATE INDEX idx_inflight_holds_expires ON inflight_holds (expires_at) \
     WHERE state = 'INFLIGHT' AND pending_action IS NULL",
    "DROP INDEX IF EXISTS idx_inflight_holds_commit",
    "CREATE INDEX idx_inflight_holds_commit ON inflight_holds (commit_at) \
     WHERE state = 'INFLIGHT' AND pending_action IS NULL",
];

const DOWN: [&str; 1] = ["DROP INDEX IF EXISTS idx_inflight_holds_pending"];

const DOWN_POSTGRES: [&str; 4] = [
    "DROP INDEX IF EXISTS idx_inflight_holds_expires",
    "CREATE INDEX idx_inflight_holds_expires ON inflight_holds (expires_at)",
    "DROP INDEX IF EXISTS idx_inflight_holds_commit",
    "CREATE INDEX idx_inflight_holds_commit ON inflight_holds (commit_at)",
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
