use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// An index of the holds with a commit or void in progress (`pending_action` set), for the
/// sweep that finishes them after a crash. Without it every run of that sweep read the whole
/// `inflight_holds` table, which keeps every hold ever made; the pending ones are a handful,
/// so the partial index stays small.
const UP: &str = "CREATE INDEX IF NOT EXISTS idx_inflight_holds_pending \
                  ON inflight_holds (hold_id) WHERE pending_action IS NOT NULL";
const DOWN: &str = "DROP INDEX IF EXISTS idx_inflight_holds_pending";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(UP).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(DOWN).await?;
        Ok(())
    }
}
