use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// What each balance monitor's condition was when last evaluated (`coffer_actors::events::
/// monitors`): a monitor fires when a committed change makes its condition true after it was
/// false, so the last answer is kept per monitor.
///
/// - `met`: the condition held at `balance_version` (the balance row's version evaluated);
///   a monitor without a row has not been found met yet.
/// - `balance_version` only grows: a write guarded by the version read loses to a newer
///   evaluation instead of overwriting it.
/// - `changed_ms`: Unix milliseconds of the last change (for operators).
const TABLE: &str = "CREATE TABLE monitor_states (
    monitor_id TEXT NOT NULL PRIMARY KEY,
    balance_id TEXT NOT NULL,
    met BOOLEAN NOT NULL,
    balance_version BIGINT NOT NULL,
    changed_ms BIGINT NOT NULL
)";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let connection = manager.get_connection();
        connection.execute_unprepared(TABLE).await?;
        connection
            .execute_unprepared(
                "CREATE INDEX idx_monitor_states_balance ON monitor_states (balance_id)",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE IF EXISTS monitor_states")
            .await?;
        Ok(())
    }
}
